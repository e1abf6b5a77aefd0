//! Where readings, alerts and dead letters are committed: the embedded SQLite store, and the
//! remote stores drained from the outbox (`crate::outbox`).
pub mod influxdb;
pub mod sqlite;

use serde::{Deserialize, Serialize};

/// `[sinks]`: the remote stores, each drained from the outbox with its own cursor.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// InfluxDB stores (the v2 write API, or `api = "v1"`), as `[[sinks.influxdb]]`.
    #[serde(default)]
    pub influxdb: Vec<influxdb::config::InfluxConfig>,
}
