//! Sensor kinds, metrics and rules.
pub mod spec;
pub mod table;
