//! [`round_trips`]: a bare tokio-modbus client reading one unit back to back over one TCP
//! connection, the round-trip limit a poller of that same socket can be measured against.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_modbus::client::{tcp, Reader};
use tokio_modbus::Slave;

/// What to read, and for how long.
#[derive(Clone, Debug)]
pub struct RttOptions {
    pub addr: SocketAddr,
    pub unit: u8,
    /// First holding register read.
    pub address: u16,
    /// Holding registers per request.
    pub count: u16,
    pub duration: Duration,
}

/// Requests answered in the measured time.
#[derive(Clone, Debug, PartialEq)]
pub struct RttReport {
    /// Requests answered with the registers asked for.
    pub requests: u64,
    pub seconds: f64,
}

impl RttReport {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The mean round trip in microseconds.
    pub fn mean_rtt_us(&self) -> f64 {
        if self.requests > 0 {
            self.seconds * 1e6 / self.requests as f64
        } else {
            0.0
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RttError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("request {request} failed: {reason}")]
    Transport { request: u64, reason: String },
    #[error("request {request}: unit {unit} answered exception {code:?}")]
    Exception {
        request: u64,
        unit: u8,
        code: tokio_modbus::ExceptionCode,
    },
    #[error("request {request}: asked for {asked} registers, got {got}")]
    Short {
        request: u64,
        asked: u16,
        got: usize,
    },
}

/// Reads `count` holding registers of `unit` back to back, each request sent as soon as the
/// last answer arrived, for `duration`. Any failed request ends the run: a limit measured
/// over errors would not be a limit.
pub async fn round_trips(opts: &RttOptions) -> Result<RttReport, RttError> {
    let mut ctx = tcp::connect_slave(opts.addr, Slave(opts.unit))
        .await
        .map_err(|source| RttError::Connect {
            addr: opts.addr,
            source,
        })?;
    let started = Instant::now();
    let mut requests = 0u64;
    while started.elapsed() < opts.duration {
        let words = ctx
            .read_holding_registers(opts.address, opts.count)
            .await
            .map_err(|e| RttError::Transport {
                request: requests,
                reason: e.to_string(),
            })?
            .map_err(|code| RttError::Exception {
                request: requests,
                unit: opts.unit,
                code,
            })?;
        if words.len() < usize::from(opts.count) {
            return Err(RttError::Short {
                request: requests,
                asked: opts.count,
                got: words.len(),
            });
        }
        requests += 1;
    }
    Ok(RttReport {
        requests,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{serve_tcp, Bank, Sim};

    async fn server_with(unit: u8, bank: Bank) -> (Sim, crate::modbus::ServerHandle, SocketAddr) {
        let sim = Sim::new();
        sim.add_unit(unit, bank);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = serve_tcp(listener, sim.clone());
        (sim, server, addr)
    }

    #[tokio::test]
    async fn every_counted_request_reached_the_unit() {
        let (sim, _server, addr) = server_with(9, Bank::counting(20)).await;
        let report = round_trips(&RttOptions {
            addr,
            unit: 9,
            address: 0,
            count: 20,
            duration: Duration::from_millis(50),
        })
        .await
        .expect("round trips");
        assert!(report.requests > 0);
        let log = sim.requests(9);
        assert_eq!(log.len() as u64, report.requests);
        assert!(log
            .iter()
            .all(|r| r.function == 3 && r.address == 0 && r.count == 20));
    }

    #[tokio::test]
    async fn an_exception_ends_the_run_with_its_code() {
        // Registers 0..20 asked of a unit that only has 0..10 is fine (gaps read as 0), so
        // ask past the protocol's limit instead.
        let (_sim, _server, addr) = server_with(3, Bank::counting(10)).await;
        let err = round_trips(&RttOptions {
            addr,
            unit: 3,
            address: 0,
            count: 126,
            duration: Duration::from_millis(50),
        })
        .await
        .expect_err("126 registers is more than one read may ask");
        assert!(
            matches!(
                err,
                RttError::Exception {
                    request: 0,
                    unit: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_unit_is_reported_not_counted() {
        let (_sim, _server, addr) = server_with(3, Bank::counting(10)).await;
        let err = round_trips(&RttOptions {
            addr,
            unit: 4,
            address: 0,
            count: 2,
            duration: Duration::from_millis(50),
        })
        .await
        .expect_err("unit 4 is not served");
        assert!(
            matches!(
                err,
                RttError::Exception {
                    code: tokio_modbus::ExceptionCode::GatewayTargetDevice,
                    ..
                }
            ),
            "{err}"
        );
    }
}
