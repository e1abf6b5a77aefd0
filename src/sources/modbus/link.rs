//! The transport to a device: a TCP connection or a serial line, opened on demand, with a
//! timeout on everything, and dropped after any timeout or transport error.
//!
//! tokio-modbus has no timeouts of its own, and a reply that arrives after we gave up would be
//! read as the answer to the next request; so a link that timed out is never reused.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_modbus::client::{Client, Context};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use super::config::{Parity, SerialConfig, Table};
use super::plan::ReadRequest;

/// Where a link goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(String),
    Rtu(String),
}

impl Endpoint {
    /// Parses `tcp://host:port` or `rtu:///dev/ttyUSB0`.
    pub fn parse(address: &str) -> Result<Endpoint, String> {
        if let Some(rest) = address.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let Some((host, port)) = rest.rsplit_once(':') else {
                return Err("expected tcp://host:port (Modbus TCP's usual port is 502)".into());
            };
            if host.is_empty() {
                return Err("the host is empty".into());
            }
            if port.parse::<u16>().is_err() {
                return Err(format!("port {port:?} is not a number from 0 to 65535"));
            }
            return Ok(Endpoint::Tcp(rest.to_string()));
        }
        if let Some(path) = address.strip_prefix("rtu://") {
            if path.is_empty() {
                return Err("expected rtu:///dev/ttyUSB0 (the serial device's path)".into());
            }
            return Ok(Endpoint::Rtu(path.to_string()));
        }
        Err("expected tcp://host:port or rtu:///dev/ttyUSB0".into())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Rtu(p) => write!(f, "rtu://{p}"),
        }
    }
}

/// Why a call produced no registers.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The device answered with a Modbus exception: it is alive, the request was refused.
    #[error("exception {code:#04x} ({name})")]
    Exception { code: u8, name: &'static str },
    /// No answer in time; the link has been dropped.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, writing or reading failed; the link has been dropped.
    #[error("{0}")]
    Transport(String),
    /// The answer did not fit the request (too few registers, a different function).
    #[error("bad response: {0}")]
    BadResponse(String),
}

impl CallError {
    /// Whether the device itself answered (so the poll does not count as failed).
    pub fn device_answered(&self) -> bool {
        matches!(
            self,
            CallError::Exception { .. } | CallError::BadResponse(_)
        )
    }

    /// A short stable code for metrics and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Exception { .. } => "modbus_exception",
            CallError::Timeout(_) => "modbus_timeout",
            CallError::Transport(_) => "modbus_transport",
            CallError::BadResponse(_) => "modbus_bad_response",
        }
    }
}

/// The standard's names of the exception codes.
pub fn exception_name(code: ExceptionCode) -> &'static str {
    match code {
        ExceptionCode::IllegalFunction => "illegal function",
        ExceptionCode::IllegalDataAddress => "illegal data address",
        ExceptionCode::IllegalDataValue => "illegal data value",
        ExceptionCode::ServerDeviceFailure => "server device failure",
        ExceptionCode::Acknowledge => "acknowledge",
        ExceptionCode::ServerDeviceBusy => "server device busy",
        ExceptionCode::MemoryParityError => "memory parity error",
        ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway target device failed to respond",
        ExceptionCode::Custom(_) => "non-standard exception",
    }
}

/// What one read returned.
pub enum Words {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// A transport to one endpoint, connected lazily.
pub struct Link {
    endpoint: Endpoint,
    serial: SerialConfig,
    ctx: Option<Context>,
    /// Connections made, the first included.
    pub connects: u64,
}

impl Link {
    pub fn new(endpoint: Endpoint, serial: SerialConfig) -> Link {
        Link {
            endpoint,
            serial,
            ctx: None,
            connects: 0,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The silence to keep between two exchanges on this link (RTU only).
    pub fn frame_delay(&self) -> Option<Duration> {
        match self.endpoint {
            Endpoint::Rtu(_) => Some(self.serial.frame_delay()),
            Endpoint::Tcp(_) => None,
        }
    }

    /// Drops the connection; the next call makes a new one.
    pub fn reset(&mut self) {
        self.ctx = None;
    }

    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    async fn connect(&mut self, timeout: Duration) -> Result<&mut Context, CallError> {
        if self.ctx.is_none() {
            let ctx = match &self.endpoint {
                Endpoint::Tcp(addr) => {
                    let connect = async {
                        let addrs: Vec<SocketAddr> =
                            tokio::net::lookup_host(addr.as_str()).await?.collect();
                        let mut last = std::io::Error::other("the host name has no address");
                        for a in addrs {
                            match tokio::net::TcpStream::connect(a).await {
                                Ok(stream) => {
                                    // Requests are tiny and latency-bound.
                                    let _ = stream.set_nodelay(true);
                                    return Ok(tokio_modbus::client::tcp::attach(stream));
                                }
                                Err(e) => last = e,
                            }
                        }
                        Err(last)
                    };
                    match tokio::time::timeout(timeout, connect).await {
                        Err(_) => return Err(CallError::Timeout(timeout)),
                        Ok(Err(e)) => {
                            return Err(CallError::Transport(format!("connect to {addr}: {e}")))
                        }
                        Ok(Ok(ctx)) => ctx,
                    }
                }
                Endpoint::Rtu(path) => {
                    let stream = open_serial(path, &self.serial)
                        .map_err(|e| CallError::Transport(format!("open {path}: {e}")))?;
                    tokio_modbus::client::rtu::attach(stream)
                }
            };
            self.connects += 1;
            self.ctx = Some(ctx);
        }
        self.ctx
            .as_mut()
            .ok_or_else(|| CallError::Transport("not connected".into()))
    }

    /// Runs one read request against `unit`, within `timeout` (connecting included). Any
    /// failure but an exception drops the connection.
    pub async fn read(
        &mut self,
        unit: u8,
        req: &ReadRequest,
        timeout: Duration,
    ) -> Result<Words, CallError> {
        let result = self.read_inner(unit, req, timeout).await;
        if let Err(e) = &result {
            if !matches!(e, CallError::Exception { .. }) {
                self.reset();
            }
        }
        result
    }

    async fn read_inner(
        &mut self,
        unit: u8,
        req: &ReadRequest,
        timeout: Duration,
    ) -> Result<Words, CallError> {
        let ReadRequest {
            table,
            address,
            count,
            ..
        } = *req;
        let started = tokio::time::Instant::now();
        let ctx = self.connect(timeout).await?;
        ctx.set_slave(Slave(unit));
        let request = match table {
            Table::Coil => Request::ReadCoils(address, count),
            Table::DiscreteInput => Request::ReadDiscreteInputs(address, count),
            Table::Input => Request::ReadInputRegisters(address, count),
            Table::Holding => Request::ReadHoldingRegisters(address, count),
        };
        let left = timeout.saturating_sub(started.elapsed());
        let response = match tokio::time::timeout(left, ctx.call(request)).await {
            Err(_) => return Err(CallError::Timeout(timeout)),
            Ok(Err(e)) => return Err(CallError::Transport(e.to_string())),
            Ok(Ok(Err(code))) => {
                return Err(CallError::Exception {
                    code: code.into(),
                    name: exception_name(code),
                })
            }
            Ok(Ok(Ok(r))) => r,
        };
        let n = usize::from(count);
        match (table, response) {
            (Table::Coil, Response::ReadCoils(bits))
            | (Table::DiscreteInput, Response::ReadDiscreteInputs(bits)) => {
                // Bits come padded to whole bytes.
                if bits.len() < n {
                    return Err(short(n, bits.len(), "bits"));
                }
                Ok(Words::Bits(bits))
            }
            (Table::Input, Response::ReadInputRegisters(words))
            | (Table::Holding, Response::ReadHoldingRegisters(words)) => {
                if words.len() < n {
                    return Err(short(n, words.len(), "registers"));
                }
                Ok(Words::Registers(words))
            }
            (_, other) => Err(CallError::BadResponse(format!(
                "asked for {}, got a {:?} response",
                table.as_str(),
                other.function_code()
            ))),
        }
    }
}

fn short(asked: usize, got: usize, what: &str) -> CallError {
    CallError::BadResponse(format!("asked for {asked} {what}, got {got}"))
}

fn open_serial(path: &str, s: &SerialConfig) -> std::io::Result<tokio_serial::SerialStream> {
    use tokio_serial::{DataBits, StopBits};
    let builder = tokio_serial::new(path, s.baud)
        .data_bits(match s.data_bits {
            5 => DataBits::Five,
            6 => DataBits::Six,
            7 => DataBits::Seven,
            _ => DataBits::Eight,
        })
        .parity(match s.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(if s.stop_bits == 2 {
            StopBits::Two
        } else {
            StopBits::One
        });
    tokio_serial::SerialStream::open(&builder).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_clear_errors() {
        assert_eq!(
            Endpoint::parse("tcp://10.0.0.5:502"),
            Ok(Endpoint::Tcp("10.0.0.5:502".into()))
        );
        assert_eq!(
            Endpoint::parse("rtu:///dev/ttyUSB0"),
            Ok(Endpoint::Rtu("/dev/ttyUSB0".into()))
        );
        assert!(Endpoint::parse("tcp://host").is_err());
        assert!(Endpoint::parse("tcp://host:99999").is_err());
        assert!(Endpoint::parse("modbus://x:1").is_err());
        assert!(Endpoint::parse("rtu://").is_err());
    }

    #[test]
    fn frame_delay_is_three_and_a_half_characters() {
        let s = SerialConfig {
            baud: 9600,
            ..SerialConfig::default()
        };
        // 3.5 × 11 bits / 9600 bit/s = 4.0104 ms
        assert_eq!(s.frame_delay(), Duration::from_micros(4011));
        let fast = SerialConfig {
            baud: 115_200,
            ..SerialConfig::default()
        };
        assert_eq!(fast.frame_delay(), Duration::from_micros(1750));
    }
}
