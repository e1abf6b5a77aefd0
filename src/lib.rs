//! citygate: a smart-city sensor ingestion gateway.
//!
//! Field devices' readings come in (over HTTP, MQTT, or polled over Modbus TCP/RTU), are
//! decoded, validated, checked against threshold rules, stored, and raise alerts for operators.
//!
//! # Layout
//! - [`config`]: typed config in three layers (defaults, file, env), validated all at once.
//! - [`model`]: `Reading`, `Batch`, `Alert` and friends: the data that flows.
//! - [`catalog`]: sensor kinds, metrics, units, ranges and default rules, compiled for lookup.
//! - [`codec`]: payload decoders (JSON, SenML, line protocol, bare values) and Modbus register
//!   decoding, each with its own errors.
//! - [`sources`]: MQTT connections and Modbus polling, each feeding batches to the pipeline.
//! - [`pipeline`]: pure synchronous validation, rules and the alert lifecycle; no I/O.
//! - [`sinks`]: where readings, alerts and dead letters are committed (SQLite, InfluxDB).
//! - [`alerts`]: alert delivery: the hub that the outputs (MQTT, webhook, SSE) follow, and
//!   the one JSON shape they all send.
//! - [`board`]: the live state of every known sensor (latest values, status) for the API.
//! - [`http`]: the axum API: ingest, queries, sensors, alerts and their SSE stream, health,
//!   metrics, and the web console.
//! - [`broker`]: the embedded MQTT broker (rumqttd), feature `embedded-broker`.
//! - [`app`]: wiring: sources → pipeline → store, with bounded channels and commit acks.
//! - [`demo`]: the default run with a simulated fleet.
//! - [`backoff`], [`secret`]: retry delays with jitter; secrets from env vars or files.
//! - [`limits`]: the token bucket behind the ingest rate limits.

pub mod alerts;
pub mod app;
pub mod backoff;
pub mod board;
pub mod broker;
pub mod catalog;
pub mod codec;
pub mod config;
pub mod demo;
pub mod http;
pub mod id_map;
pub mod limits;
pub mod model;
pub mod outbox;
pub mod pipeline;
pub mod secret;
pub mod security;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub(crate) mod text;
