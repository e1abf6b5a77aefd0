//! `[[mqtt]]`: broker connections and their routes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Dur;

/// MQTT protocol version of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1.
    #[serde(rename = "v311")]
    V311,
    /// MQTT 5.
    #[serde(rename = "v5")]
    V5,
}

/// Payload format of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteFormat {
    Json,
    Senml,
    Line,
    Value,
}

impl RouteFormat {
    pub fn codec(self) -> crate::codec::Format {
        match self {
            RouteFormat::Json => crate::codec::Format::Json,
            RouteFormat::Senml => crate::codec::Format::Senml,
            RouteFormat::Line => crate::codec::Format::Line,
            RouteFormat::Value => crate::codec::Format::Value,
        }
    }
}

/// One broker connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// A short name for logs, metrics and /health.
    pub name: String,
    /// Broker address: `mqtt://host:port` or, with TLS, `mqtts://host:port`.
    pub url: String,
    /// `v5` or `v311`.
    #[serde(default = "default_protocol")]
    pub protocol: MqttProtocol,
    /// Client id. Keep it stable: the broker keeps the persistent session under it.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Keepalive interval.
    #[serde(default = "default_keepalive")]
    pub keepalive: Dur,
    /// Largest payload accepted; a larger message is a dead letter (`payload_too_large`).
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Longest topic accepted, in bytes; a message on a longer one is a dead letter
    /// (`topic_too_long`) and is not routed.
    #[serde(default = "default_max_topic_len")]
    pub max_topic_len: usize,
    /// Start a fresh session instead of resuming the persistent one (loses what the broker
    /// kept while the gateway was away).
    #[serde(default)]
    pub clean_start: bool,
    /// MQTT 5: how long the broker keeps the session after a disconnect.
    #[serde(default = "default_session_expiry")]
    pub session_expiry: Dur,
    /// Most unacknowledged QoS 1 messages in flight from the broker (MQTT 5 receive maximum).
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File that holds the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS settings; required for `mqtts://`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// First reconnect delay; it doubles, with jitter, up to `reconnect_max`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min: Dur,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: Dur,
    /// Topic routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// TLS to the broker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s), PEM, to verify the broker. Unset: the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate, PEM, for brokers that want one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key, PEM.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Skip verifying the broker's certificate. Insecure; logged loudly.
    #[serde(default)]
    pub insecure: bool,
}

/// Maps a topic pattern to a sensor kind and payload format.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Topic pattern. Whole levels may be placeholders: `{sensor}`, `{kind}` and `{metric}`
    /// fill the reading; any other `{name}` becomes a tag. `+` and `#` match without capture.
    /// Example: `city/{district}/water_quality/{sensor}`.
    pub topic: String,
    /// Subscription filter; default: the pattern with every placeholder as `+`. May be a
    /// shared subscription, `$share/<group>/<filter>`, so that gateways split the load.
    #[serde(default)]
    pub subscribe: Option<String>,
    /// Sensor kind for payloads that name none.
    #[serde(default)]
    pub kind: Option<String>,
    /// Payload format: json, senml, line or value.
    #[serde(default = "default_format")]
    pub format: RouteFormat,
    /// Fixed tags added to every reading of this route.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_protocol() -> MqttProtocol {
    MqttProtocol::V5
}
fn default_client_id() -> String {
    "citygate".into()
}
fn default_keepalive() -> Dur {
    Dur::secs(30)
}
fn default_max_packet_size() -> usize {
    256 * 1024
}
fn default_max_topic_len() -> usize {
    256
}
fn default_session_expiry() -> Dur {
    Dur::secs(7 * 24 * 3600)
}
fn default_inflight() -> u16 {
    100
}
fn default_reconnect_min() -> Dur {
    Dur(std::time::Duration::from_millis(500))
}
fn default_reconnect_max() -> Dur {
    Dur::secs(30)
}
fn default_format() -> RouteFormat {
    RouteFormat::Json
}

/// `[broker]`: the embedded MQTT broker (cargo feature `embedded-broker`, on by default).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Run the embedded broker. Turn it off when an external broker is used.
    pub enabled: bool,
    /// Address the embedded broker serves MQTT 3.1.1 on. Port 0 picks a free port.
    pub listen: std::net::SocketAddr,
    /// Address it serves MQTT 5 on; unset: no MQTT 5 listener. rumqttd serves one protocol
    /// per port, so this must differ from `listen`.
    #[serde(default)]
    pub listen_v5: Option<std::net::SocketAddr>,
    /// Most client connections.
    pub max_connections: usize,
    /// Largest packet the embedded broker accepts from a client, in bytes.
    pub max_payload_size: usize,
    /// Most unacknowledged messages in flight per client.
    pub max_inflight: u16,
    /// Memory bound of the broker's router: each subscription filter keeps its messages in a
    /// log of at most `max_segment_count` segments of `max_segment_size` bytes (payload and
    /// topic; at least 1024), dropping the oldest segment when full. A subscriber that falls
    /// further behind than that skips what was dropped.
    pub max_segment_size: usize,
    /// How many segments each filter's log keeps (at least 1).
    pub max_segment_count: usize,
}
