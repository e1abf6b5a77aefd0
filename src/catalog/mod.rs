//! Sensor kinds, metrics and rules.
pub mod spec;
