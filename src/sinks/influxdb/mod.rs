//! The InfluxDB sink: readings and alert events as line protocol, written over HTTP to the
//! v2 API (`/api/v2/write`: InfluxDB 2/3, VictoriaMetrics, QuestDB, GreptimeDB) or the v1 API
//! (`/write`: InfluxDB 1.x).
//!
//! - [`config`]: `[[sinks.influxdb]]` and its validation.
//! - [`line`]: the line-protocol encoder and the schema.
//! - [`client`]: one HTTP write, its outcome classified for the drain loop, and the startup
//!   check.
//! - [`drain`]: the task per sink that drains the outbox through the client.

pub mod client;
pub mod config;
pub mod drain;
pub mod line;
