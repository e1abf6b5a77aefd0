//! The MQTT source: broker connections (rumqttc), topic routes, at-least-once delivery.
//!
//! See `source.rs` for the delivery design (manual acks after commit, in order, across
//! reconnects), `route.rs` for topic patterns, `v4.rs`/`v5.rs` for the protocol glue.

mod backoff;
pub mod config;
mod route;
mod source;
mod status;
mod tls;
mod v4;
mod v5;

use std::collections::BTreeSet;

use crate::config::ConfigProblem;
use config::MqttConfig;

pub use route::{check_filter, Captures, Pattern, PatternError, Resolved, Router};
pub use source::{start, MqttError, MqttSource};
pub use status::{SourceStatus, StatusSnapshot};

/// Checks `[[mqtt]]` beyond what serde checks. CONTRACT: filled in by the MQTT source work.
pub fn check_config(
    _mqtt: &[(usize, MqttConfig)],
    _kinds: &BTreeSet<String>,
) -> Vec<ConfigProblem> {
    Vec::new()
}
