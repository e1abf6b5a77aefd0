//! citygate-sim: simulated smart-city sensors for the two Guangdong city plans (Qingyuan and
//! Jieyang), producing citygate JSON payloads.
//!
//! A [`Fleet`] holds `per_kind` sensors of each of the 13 kinds, spread over seven districts.
//! [`Fleet::tick`] takes the time as an argument (no wall clock inside), so a run can go
//! faster than real time, and the same seed and tick times always give the same payloads.
//!
//! Signals are built to look real and to stay quiet under citygate's default rules in normal
//! operation: traffic-driven NO2/PM with rush hours at 08:00 and 18:00 (UTC+8), showers that
//! raise rivers hours later, meters whose counters integrate their rates, GB 3838 class II/III
//! water, GB 3096-compliant noise, structural vibration and creep. All noise is rate limited
//! (see `signals.rs`), so nothing moves faster than its physical process. Scripted
//! [`incidents`] then raise alerts of every severity within the first minute of a demo.
//!
//! # Layout
//! - [`fleet`]: [`Fleet`], [`FleetConfig`], [`SimSensor`], [`SimMessage`]
//! - [`incidents`]: the scripted incidents and their timing
//! - `kinds/`: one generator per kind (water, air and noise, meters, hazards)
//! - `signals`, `weather`, `rng`: diurnal shapes, rate-limited noise, rain, the PRNG
//! - [`catalog`]: kinds, metric names, plausible ranges
//! - [`payload`]: JSON writing and [`bad_payloads`] for tests
//! - [`http`]: a tiny blocking HTTP/1.1 POST client used by the binary
//! - [`influx`]: line-protocol load for InfluxDB-compatible stores and the gateway ingest, for
//!   `scripts/bench-influx`
//! - [`mqtt`]: MQTT load generation and a counting subscriber, for benchmarks
//! - [`latency`]: alert latency under background load (SSE and MQTT), for
//!   `scripts/bench-alerts`
//! - [`modbus`]: Modbus TCP/RTU device simulator (the example meters, sonde and gas detectors),
//!   with fault injection and a request log
//! - [`pty`]: a socat pseudo-terminal pair for serial tests
//! - [`wire`]: the fleet's reports as JSON, SenML or line protocol, and their MQTT topics
//! - [`publish`]: a reconnecting MQTT publisher (QoS 0/1, username/password)
//! - [`scenario`]: scripted incidents over the sensors of `config/examples/city.toml`, each
//!   with the alerts and dead letters it should cause, as data

pub mod ack_ledger;
pub mod catalog;
pub mod fleet;
mod geo;
pub mod http;
pub mod incidents;
pub mod influx;
mod kinds;
pub mod latency;
pub mod modbus;
pub mod mqtt;
pub mod payload;
pub mod pty;
pub mod publish;
mod rng;
pub mod scenario;
mod signals;
mod weather;
pub mod wire;

pub use catalog::{is_counter, metrics, plausible_range, KINDS};
pub use fleet::{Fleet, FleetConfig, SimMessage, SimSensor, StationLevels};
pub use incidents::Incident;
pub use payload::{bad_payloads, bad_payloads_at};
pub use scenario::Scenario;
pub use wire::{FormatChoice, WireFormat};
