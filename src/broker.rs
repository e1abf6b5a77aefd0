//! The embedded MQTT broker: rumqttd on its own threads, so that the default run needs no
//! external broker (cargo feature `embedded-broker`, on by default).
//!
//! rumqttd serves one protocol per listener, so MQTT 3.1.1 is served on `broker.listen`
//! (the standard port, what most devices and `mosquitto_pub` speak by default) and MQTT 5,
//! if wanted, on `broker.listen_v5`. Everything it holds is in memory: sessions,
//! subscriptions and queued messages are lost when the process stops (see
//! docs/mqtt-broker.md).

use std::net::SocketAddr;

use crate::config::Config;
use crate::sources::mqtt::config::{BrokerConfig, MqttConfig};

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot listen on {addr}: address in use — is another broker running? \
         set broker.{key} or broker.enabled = false"
    )]
    AddrInUse { addr: SocketAddr, key: &'static str },
    #[error("cannot listen on {addr} (broker.{key}): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("invalid [broker] setting: {0}")]
    Config(String),
    #[error("the embedded broker did not start: {0}")]
    Start(String),
    #[error(
        "broker.enabled = true, but this citygate was built without the embedded broker \
         (cargo feature `embedded-broker`): set broker.enabled = false and point [[mqtt]] at \
         an external broker"
    )]
    NotBuilt,
}

/// A running embedded broker. rumqttd has no shutdown: its threads serve until the process
/// exits, and dropping this handle does not stop them.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    addr_v5: Option<SocketAddr>,
}

impl EmbeddedBroker {
    /// Starts the broker and returns once every listener has answered an MQTT CONNECT.
    /// Port 0 picks a free port; [`EmbeddedBroker::addr`] tells which.
    pub fn start(cfg: &BrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
        imp::start(cfg)
    }

    /// Where MQTT 3.1.1 is served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where MQTT 5 is served, if `broker.listen_v5` is set.
    pub fn addr_v5(&self) -> Option<SocketAddr> {
        self.addr_v5
    }
}

/// Starts the embedded broker if `[broker] enabled`, and points every `[[mqtt]]` connection
/// that names a configured listen address at the address actually bound (they differ when
/// the port is 0). Runs before the MQTT sources start.
pub fn start_configured(config: &mut Config) -> Result<Option<EmbeddedBroker>, BrokerError> {
    if !config.broker.enabled {
        return Ok(None);
    }
    let broker = EmbeddedBroker::start(&config.broker)?;
    retarget(&mut config.mqtt, config.broker.listen, broker.addr());
    if let (Some(from), Some(to)) = (config.broker.listen_v5, broker.addr_v5()) {
        retarget(&mut config.mqtt, from, to);
    }
    config.broker.listen = broker.addr();
    config.broker.listen_v5 = broker.addr_v5();
    Ok(Some(broker))
}

/// Rewrites the address of every plain `mqtt://` connection that points at `from` so that it
/// points at `to`; returns how many were rewritten. A connection to `127.0.0.1`/`localhost`
/// also counts as pointing at an unspecified `from` (`0.0.0.0:port`).
pub fn retarget(mqtt: &mut [MqttConfig], from: SocketAddr, to: SocketAddr) -> usize {
    let mut n = 0;
    for conn in mqtt.iter_mut() {
        let Some(rest) = conn.url.strip_prefix("mqtt://") else {
            continue;
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !names_addr(authority, from) {
            continue;
        }
        let host = if to.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            to.ip().to_string()
        };
        let host = if to.is_ipv6() && !to.ip().is_unspecified() {
            format!("[{host}]")
        } else {
            host
        };
        conn.url = format!("mqtt://{host}:{}{tail}", to.port());
        n += 1;
    }
    n
}

/// Whether `authority` (`host:port`, an IPv6 host in brackets) names the listener at `addr`.
/// `localhost` and the loopback address name an unspecified listener (`0.0.0.0` takes IPv4
/// loopback only; `[::]` takes both on Linux).
pub(crate) fn names_addr(authority: &str, addr: SocketAddr) -> bool {
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    if port.parse::<u16>().ok() != Some(addr.port()) {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return addr.ip().is_loopback() || addr.ip().is_unspecified();
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip == addr.ip()
                || (addr.ip().is_unspecified()
                    && ip.is_loopback()
                    && (addr.is_ipv6() || ip.is_ipv4()))
        }
        Err(_) => false,
    }
}

fn check(cfg: &BrokerConfig) -> Result<(), BrokerError> {
    // rumqttd panics on a segment under 1 KiB or a log of no segments.
    if cfg.max_segment_size < 1024 {
        return Err(BrokerError::Config(format!(
            "max_segment_size = {} is below 1024 bytes",
            cfg.max_segment_size
        )));
    }
    if cfg.max_segment_count == 0 {
        return Err(BrokerError::Config(
            "max_segment_count must be at least 1".into(),
        ));
    }
    if cfg.max_connections == 0 {
        return Err(BrokerError::Config(
            "max_connections must be at least 1".into(),
        ));
    }
    if cfg.max_payload_size == 0 {
        return Err(BrokerError::Config(
            "max_payload_size must be at least 1".into(),
        ));
    }
    if cfg
        .listen_v5
        .is_some_and(|v5| v5 == cfg.listen && v5.port() != 0)
    {
        return Err(BrokerError::Config(format!(
            "listen and listen_v5 are both {}: rumqttd serves one protocol per port",
            cfg.listen
        )));
    }
    Ok(())
}

#[cfg(feature = "embedded-broker")]
mod imp {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use tracing::info;

    use super::{check, BrokerError, EmbeddedBroker};
    use crate::sources::mqtt::config::BrokerConfig;

    /// How long the listeners get to come up.
    const READY_TIMEOUT: Duration = Duration::from_secs(10);
    /// Time a new TCP connection gets to send its CONNECT before rumqttd drops it.
    const CONNECT_TIMEOUT_MS: u16 = 10_000;
    /// Most messages the router hands a connection per read for QoS 0 subscriptions.
    const MAX_OUTGOING_PACKET_COUNT: u64 = 200;

    pub(super) fn start(cfg: &BrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
        check(cfg)?;
        let addr = reserve(cfg.listen, "listen")?;
        let addr_v5 = match cfg.listen_v5 {
            Some(v5) => Some(reserve(v5, "listen_v5")?),
            None => None,
        };
        let config = rumqttd_config(cfg, addr, addr_v5);
        let thread = std::thread::Builder::new()
            .name("citygate-broker".into())
            .spawn(move || {
                // `start` blocks while the listeners run; it returns only if all of them
                // failed (for example, the port was taken after `reserve`).
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "the embedded MQTT broker stopped");
                }
            })
            .map_err(|e| BrokerError::Start(format!("cannot start its thread: {e}")))?;
        wait_ready(addr, 4, &thread)?;
        if let Some(v5) = addr_v5 {
            wait_ready(v5, 5, &thread)?;
        }
        info!(mqtt311 = %addr, mqtt5 = ?addr_v5, "embedded MQTT broker listening");
        Ok(EmbeddedBroker { addr, addr_v5 })
    }

    /// Binds `addr` once to find out whether it is free and, for port 0, which port to use.
    /// The socket is closed again for rumqttd to bind: another process could take the port in
    /// between, which the readiness check then reports.
    fn reserve(addr: SocketAddr, key: &'static str) -> Result<SocketAddr, BrokerError> {
        let listener = TcpListener::bind(addr).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                BrokerError::AddrInUse { addr, key }
            } else {
                BrokerError::Bind { addr, key, source }
            }
        })?;
        listener
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr, key, source })
    }

    fn rumqttd_config(
        cfg: &BrokerConfig,
        addr: SocketAddr,
        addr_v5: Option<SocketAddr>,
    ) -> rumqttd::Config {
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: CONNECT_TIMEOUT_MS,
            max_payload_size: cfg.max_payload_size,
            max_inflight_count: usize::from(cfg.max_inflight),
            auth: None,
            external_auth: None,
            // A publish to a topic nobody subscribes to is dropped either way in rumqttd
            // 0.20; with `false` a future version could disconnect such a device instead.
            dynamic_filters: true,
        };
        let server = |name: &str, listen: SocketAddr| {
            HashMap::from([(
                "1".to_string(),
                rumqttd::ServerSettings {
                    name: name.to_string(),
                    listen,
                    tls: None,
                    next_connection_delay_ms: 0,
                    connections: connections.clone(),
                },
            )])
        };
        rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: cfg.max_connections,
                max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
                max_segment_size: cfg.max_segment_size,
                max_segment_count: cfg.max_segment_count,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(server("mqtt311", addr)),
            v5: addr_v5.map(|a| server("mqtt5", a)),
            ..Default::default()
        }
    }

    /// Waits until `addr` answers a CONNECT with a CONNACK: the listener is bound and the
    /// router runs.
    fn wait_ready(
        addr: SocketAddr,
        protocol_level: u8,
        thread: &JoinHandle<()>,
    ) -> Result<(), BrokerError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let probe_addr = if addr.ip().is_unspecified() {
            let ip = if addr.is_ipv4() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            };
            SocketAddr::new(ip, addr.port())
        } else {
            addr
        };
        loop {
            if thread.is_finished() {
                return Err(BrokerError::Start(format!(
                    "it stopped while starting on {addr} (see the log above)"
                )));
            }
            let last = match probe(probe_addr, protocol_level) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(BrokerError::Start(format!(
                    "{addr} did not answer an MQTT CONNECT within {}s: {last}",
                    READY_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One MQTT handshake: CONNECT (clean session), CONNACK, DISCONNECT.
    fn probe(addr: SocketAddr, protocol_level: u8) -> Result<(), String> {
        let timeout = Duration::from_millis(500);
        let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        s.write_all(&connect_packet(protocol_level, "citygate-broker-probe"))
            .map_err(|e| e.to_string())?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).map_err(|e| e.to_string())?;
        // v3.1.1: 20 02 flags rc; v5: 20 len flags reason ...; both: rc/reason at [3].
        if ack[0] != 0x20 || ack[3] != 0 {
            return Err(format!("unexpected answer {ack:02x?}"));
        }
        // Wait for the broker to close the connection after the DISCONNECT, so that the
        // probe's session is gone before anyone else connects (rumqttd logs an error if the
        // socket closes first).
        let _ = s.write_all(&[0xE0, 0x00]);
        let mut rest = [0u8; 64];
        while matches!(s.read(&mut rest), Ok(n) if n > 0) {}
        Ok(())
    }

    fn connect_packet(protocol_level: u8, client_id: &str) -> Vec<u8> {
        let mut var = vec![
            0x00,
            0x04,
            b'M',
            b'Q',
            b'T',
            b'T',
            protocol_level,
            0x02,
            0x00,
            0x0A,
        ];
        if protocol_level == 5 {
            var.push(0x00); // no properties
        }
        var.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        var.extend_from_slice(client_id.as_bytes());
        let mut packet = vec![0x10, var.len() as u8];
        packet.extend(var);
        packet
    }
}

#[cfg(not(feature = "embedded-broker"))]
mod imp {
    use super::{check, BrokerError, EmbeddedBroker};
    use crate::sources::mqtt::config::BrokerConfig;

    pub(super) fn start(cfg: &BrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
        check(cfg)?;
        Err(BrokerError::NotBuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(url: &str) -> MqttConfig {
        match serde_json::from_value(serde_json::json!({ "name": "x", "url": url })) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        match s.parse() {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn retarget_rewrites_only_connections_to_the_configured_address() {
        let mut mqtt = vec![
            conn("mqtt://127.0.0.1:1883"),
            conn("mqtt://localhost:1883?client_id=a"),
            conn("mqtt://10.0.0.5:1883"),
            conn("mqtts://127.0.0.1:1883"),
            conn("mqtt://127.0.0.1:1884"),
        ];
        let n = retarget(&mut mqtt, addr("127.0.0.1:1883"), addr("127.0.0.1:40001"));
        let urls: Vec<&str> = mqtt.iter().map(|c| c.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "mqtt://127.0.0.1:40001",
                "mqtt://127.0.0.1:40001?client_id=a",
                "mqtt://10.0.0.5:1883",
                "mqtts://127.0.0.1:1883",
                "mqtt://127.0.0.1:1884",
            ]
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn a_broker_on_all_interfaces_is_reached_over_loopback() {
        let mut mqtt = vec![conn("mqtt://127.0.0.1:0")];
        retarget(&mut mqtt, addr("0.0.0.0:0"), addr("0.0.0.0:40002"));
        assert_eq!(mqtt[0].url, "mqtt://127.0.0.1:40002");
    }

    #[test]
    fn segment_limits_that_would_panic_rumqttd_are_rejected() {
        let cfg = BrokerConfig {
            enabled: true,
            listen: addr("127.0.0.1:0"),
            listen_v5: None,
            max_connections: 10,
            max_payload_size: 1024,
            max_inflight: 10,
            max_segment_size: 512,
            max_segment_count: 1,
        };
        let err = EmbeddedBroker::start(&cfg)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("invalid [broker] setting: max_segment_size = 512 is below 1024 bytes".into())
        );
    }

    #[cfg(feature = "embedded-broker")]
    #[test]
    fn a_taken_address_is_a_clear_error_and_port_0_picks_a_free_port() {
        let cfg = BrokerConfig {
            enabled: true,
            listen: addr("127.0.0.1:0"),
            listen_v5: Some(addr("127.0.0.1:0")),
            max_connections: 10,
            max_payload_size: 1024,
            max_inflight: 10,
            max_segment_size: 1 << 20,
            max_segment_count: 2,
        };
        let broker = match EmbeddedBroker::start(&cfg) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_ne!(broker.addr().port(), 0);
        let v5 = broker.addr_v5().map(|a| a.port());
        assert!(v5.is_some_and(|p| p != 0 && p != broker.addr().port()));

        let again = BrokerConfig {
            listen: broker.addr(),
            listen_v5: None,
            ..cfg
        };
        let err = EmbeddedBroker::start(&again)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err(format!(
                "cannot listen on {}: address in use — is another broker running? \
                 set broker.listen or broker.enabled = false",
                broker.addr()
            ))
        );
    }
}
