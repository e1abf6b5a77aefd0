//! The MQTT source: broker connections (rumqttc), topic routes, at-least-once delivery.

pub mod config;

use std::collections::BTreeSet;

use crate::config::ConfigProblem;
use config::MqttConfig;

/// Checks `[[mqtt]]` beyond what serde checks. CONTRACT: filled in by the MQTT source work.
pub fn check_config(
    _mqtt: &[(usize, MqttConfig)],
    _kinds: &BTreeSet<String>,
) -> Vec<ConfigProblem> {
    Vec::new()
}
