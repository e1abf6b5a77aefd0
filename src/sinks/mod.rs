//! Where readings, alerts and dead letters are committed.
pub mod influxdb;
pub mod sqlite;
