//! Typed configuration.
//!
//! Three layers, later ones winning: the built-in defaults (`config/citygate.toml` and
//! `config/catalog/*.toml`, embedded in the binary), a file given with `-c`, and environment
//! variables `CITYGATE__SECTION__KEY`. Every struct denies unknown fields and documents each
//! field; [`load`] reports every problem at once, each with its key path.

mod duration;
mod load;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use duration::Dur;
pub use load::{load, load_with_env, ConfigError, ConfigProblem, Source, BUILTIN_CATALOG};

use crate::catalog::spec::{KindSpec, RuleOverride};
use crate::sources::mqtt::config::{BrokerConfig, MqttConfig};

/// The whole gateway configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    pub gateway: GatewayConfig,
    /// The HTTP API.
    pub http: HttpConfig,
    /// The embedded SQLite store.
    pub sqlite: SqliteConfig,
    /// Checks every reading goes through before rules see it.
    pub validation: ValidationConfig,
    /// How alerts are shown.
    pub alerts: AlertsConfig,
    /// Sensor kinds, metrics and default rules, by kind name.
    #[serde(default)]
    pub catalog: BTreeMap<String, KindSpec>,
    /// Known sensors and their per-sensor settings, by sensor id.
    #[serde(default)]
    pub sensors: BTreeMap<String, SensorSpec>,
    /// The embedded MQTT broker.
    pub broker: BrokerConfig,
    /// MQTT broker connections to consume readings from.
    #[serde(default)]
    pub mqtt: Vec<MqttConfig>,
    /// Modbus TCP/RTU devices to poll.
    #[serde(default)]
    pub modbus: crate::sources::modbus::ModbusConfig,
    /// The durable outbox between the pipeline and the remote sinks.
    pub outbox: crate::outbox::OutboxConfig,
    /// Remote stores (InfluxDB), each drained from the outbox.
    #[serde(default)]
    pub sinks: crate::sinks::SinksConfig,
}

/// Process-wide settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Directory for the SQLite store and other local state; created if missing.
    pub data_dir: PathBuf,
    /// IANA time zone for time-of-day rule schedules, e.g. "Asia/Shanghai".
    pub timezone: String,
    /// Readings per batch handed from sources to the pipeline.
    pub batch_max: usize,
    /// Capacity, in batches, of the bounded channels between stages.
    pub channel_capacity: usize,
    /// How often the deadman check runs against the wall clock.
    pub deadman_interval: Dur,
    /// On SIGTERM or Ctrl-C, how long the gateway may take to stop taking input and commit
    /// what it took; after this it exits anyway and logs what was left (uncommitted input is
    /// not acknowledged, so a QoS 1 publisher or a retrying HTTP client sends it again).
    /// Keep it below the service manager's own stop timeout (systemd's unit allows 30 s).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Dur,
    /// Threads of the async runtime under `citygate run` (sources, pipeline, sinks, HTTP; the
    /// SQLite store has its own; `citygate demo` keeps the default). 0 means one per CPU core,
    /// or `TOKIO_WORKER_THREADS` when that is set; at most 1024. 1 suits a small machine whose
    /// cores are shared with the broker: the tasks that hand a batch on then wake each other on
    /// the same thread, without a context switch. On 2 cores shared with mosquitto and the publisher, 1 cut the
    /// gateway's CPU per QoS 1 message by about a tenth (medians of six runs); it also caps the
    /// async work at one core, so it is not the default.
    #[serde(default)]
    pub worker_threads: usize,
}

fn default_shutdown_timeout() -> Dur {
    Dur::secs(20)
}

/// The HTTP API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Bearer-token auth for the API.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Most clients on the SSE alert stream at once; one more is answered 503.
    #[serde(default = "default_max_sse_clients")]
    pub max_sse_clients: usize,
    /// Most HTTP connections open at once (SSE streams included). One more is answered 503
    /// and closed (over TLS, closed), and counted as `too_many_connections`. Keep it under
    /// the process's file-descriptor limit, less what MQTT, Modbus and SQLite need.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Ingest requests per second each remote IP address (IPv6: each /64) may make,
    /// sustained; over it, 429 with `Retry-After`. 0 turns the limit off.
    #[serde(default = "default_ingest_rate_per_ip")]
    pub ingest_rate_per_ip: f64,
    /// Ingest requests a remote IP address that was quiet may make at once, above the rate.
    #[serde(default = "default_ingest_burst_per_ip")]
    pub ingest_burst_per_ip: u32,
    /// Serve HTTPS instead of plain HTTP (rustls, PEM files). Plain HTTP is then refused.
    #[serde(default)]
    pub tls: Option<HttpTlsConfig>,
    /// A client must send a request's whole header (and, over TLS, finish the handshake)
    /// within this time, or the connection is closed: a slow-header (slowloris) client cannot
    /// hold a connection open.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Dur,
    /// A request must be answered (its body read and the handler done) within this time, or
    /// it gets 408. The SSE stream's open-ended body does not count once it has started.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// A keep-alive connection with no request in flight and no bytes moving for this long is
    /// closed. The header-read clock runs while a connection waits for its next request too,
    /// so an idle connection is closed after the shorter of the two.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
}

fn default_max_sse_clients() -> usize {
    100
}
fn default_max_connections() -> usize {
    512
}
fn default_ingest_rate_per_ip() -> f64 {
    50.0
}
fn default_ingest_burst_per_ip() -> u32 {
    200
}

/// `[http.tls]`: the API over HTTPS.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// The server certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

fn default_header_read_timeout() -> Dur {
    Dur::secs(10)
}

fn default_request_timeout() -> Dur {
    Dur::secs(30)
}

fn default_idle_timeout() -> Dur {
    Dur::secs(10)
}

/// `[http.auth]`: with a token set, every changing call (POST: ingest, alert ack) needs
/// `Authorization: Bearer <token>`; without it, 401, and with a wrong one, 403. Reads are
/// open unless `protect_reads`. `/health`, `/ready`, the OpenAPI document and the console's
/// page itself stay open (the page asks for the token).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Name of the environment variable that holds the API token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File that holds the API token (a trailing newline is ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Reads (GET, the SSE stream, /metrics) need the token too.
    #[serde(default)]
    pub protect_reads: bool,
}

impl AuthConfig {
    pub fn token_source(&self) -> crate::secret::SecretSource<'_> {
        crate::secret::SecretSource {
            name: "token",
            env: self.token_env.as_deref(),
            file: self.token_file.as_deref(),
        }
    }
}

/// The embedded SQLite store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Database file, relative to `gateway.data_dir` unless absolute.
    pub path: PathBuf,
    /// Readings, dead letters and resolved alerts older than this are pruned.
    pub retention: Dur,
    /// How often retention pruning runs.
    pub prune_interval: Dur,
    /// Raw payloads kept with dead letters are cut to this many bytes.
    pub dead_letter_raw_max: usize,
    /// Most dead letters kept. Past it the oldest are deleted as new ones are written (and at
    /// each prune), and counted in `citygate_dead_letters_dropped_total`: a flood of bad
    /// input cannot fill the disk before `retention` ages it out. 0 keeps them all until
    /// `retention`.
    pub max_dead_letters: u64,
    /// Write readings to SQLite. Off, readings are validated and drive rules but are not
    /// stored (a null sink, for benchmarks); alerts and dead letters are still stored.
    pub store_readings: bool,
}

/// What to do with a reading from a sensor or metric the gateway does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownPolicy {
    /// Take it (a new sensor needs its kind in the payload or route).
    Accept,
    /// Dead-letter it.
    Reject,
}

/// What to do with suspect readings (spikes, flat lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspectPolicy {
    /// Store them, keep them away from threshold rules, raise a "sensor fault" info alert.
    Store,
    /// Store them and let them drive rules too (still raising the sensor-fault alert).
    StoreAndEvaluate,
    /// Dead-letter them.
    Reject,
}

/// Checks every reading goes through before rules see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// A device timestamp further than this in the future is rejected.
    pub max_future_skew: Dur,
    /// A device timestamp older than this is rejected as stale.
    pub max_age: Dur,
    /// Readings from sensors not listed under `sensors`.
    pub unknown_sensor: UnknownPolicy,
    /// Readings of metrics the sensor's kind does not define.
    pub unknown_metric: UnknownPolicy,
    /// What happens to suspect readings.
    pub suspect: SuspectPolicy,
    /// A flat line is this many identical consecutive values (at most 1,073,741,823)...
    pub flatline_count: u32,
    /// ...spanning at least this long (at most 49 days).
    pub flatline_duration: Dur,
    /// Most distinct sensors the gateway keeps state for, configured ones included. With
    /// `unknown_sensor = "accept"`, a new sensor id past it is a dead letter
    /// (`too_many_sensors`) and leaves no state behind; known sensors carry on.
    #[serde(default = "default_max_sensors")]
    pub max_sensors: usize,
    /// Longest sensor id, in bytes, a new sensor may have (`sensor_id_too_long`).
    #[serde(default = "default_max_sensor_id_len")]
    pub max_sensor_id_len: usize,
    /// Readings per second each sensor may send over MQTT, sustained; past it (and its
    /// burst) readings are dead letters (`rate_limited`). 0 turns the limit off. HTTP ingest
    /// is limited per client address instead (`http.ingest_rate_per_ip`).
    #[serde(default = "default_sensor_rate")]
    pub sensor_rate: f64,
    /// Readings a sensor that was quiet may send over MQTT at once, above `sensor_rate`:
    /// room for a device's backlog after an outage.
    #[serde(default = "default_sensor_burst")]
    pub sensor_burst: u32,
}

fn default_max_sensors() -> usize {
    200_000
}
fn default_max_sensor_id_len() -> usize {
    128
}
fn default_sensor_rate() -> f64 {
    100.0
}
fn default_sensor_burst() -> u32 {
    20_000
}

/// How alerts are shown and where they are delivered.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Print every alert event on the console.
    pub console: bool,
    /// Suspect readings raise a `sensor_fault` info alert.
    pub sensor_fault_alerts: bool,
    /// Alert events published over MQTT, with the active set retained.
    #[serde(default)]
    pub mqtt: crate::alerts::mqtt::AlertMqttConfig,
    /// Alert events POSTed, signed, to HTTP receivers.
    #[serde(default)]
    pub webhooks: Vec<crate::alerts::webhook::WebhookConfig>,
}

/// A known sensor and its own settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSpec {
    /// The sensor's kind, a key of `catalog`.
    pub kind: String,
    /// Tags stored with its readings, e.g. district and site.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// A profile of its kind, e.g. the GB 3838 class "II" for a river section.
    #[serde(default)]
    pub profile: Option<String>,
    /// Rule overrides by rule name, e.g. this station's warning and guaranteed water levels.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleOverride>,
    /// Metric range overrides by metric name.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricOverride>,
    /// Overrides the kind's deadman time.
    #[serde(default)]
    pub offline_after: Option<Dur>,
}

/// The parts of a metric a sensor may change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricOverride {
    /// Replaces the plausible minimum.
    #[serde(default)]
    pub min: Option<f64>,
    /// Replaces the plausible maximum.
    #[serde(default)]
    pub max: Option<f64>,
    /// Replaces the maximum rate of change per hour.
    #[serde(default)]
    pub max_rate_per_hour: Option<f64>,
}

impl Config {
    /// The SQLite file path, resolved against the data directory.
    pub fn sqlite_path(&self) -> PathBuf {
        if self.sqlite.path.is_absolute() {
            self.sqlite.path.clone()
        } else {
            self.gateway.data_dir.join(&self.sqlite.path)
        }
    }
}
