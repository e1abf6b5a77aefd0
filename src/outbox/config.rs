//! `[outbox]`: the size limit, what happens when it is reached, and the fsync policy.

use serde::{Deserialize, Serialize};

/// The durable outbox between the pipeline and the remote sinks (`[[sinks.influxdb]]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most bytes of compressed line protocol the outbox may hold before `when_full` applies.
    /// It counts the entries' bodies; SQLite adds its pages and WAL on top (a few percent), so
    /// leave the disk some room beyond it. A store outage of hours needs room for hours of
    /// readings: about 12 bytes each (BENCHMARKS.md).
    pub max_bytes: u64,
    /// What happens when the outbox is full: `"block"` pushes back on the sources (MQTT stops
    /// acknowledging and pulling, so the broker keeps the messages; Modbus polls wait), and
    /// nothing is lost; `"drop_oldest"` deletes the oldest entries to make room, counted in
    /// `citygate_outbox_dropped_points_total` and logged.
    pub when_full: WhenFull,
    /// `"always"`: every commit is fsynced before sources are told it is safe, so it survives
    /// a power loss. `"checkpoint"`: fsync only when SQLite checkpoints its WAL; a commit
    /// survives a process crash (`kill -9`), but a power loss can lose the last commits.
    /// Applies to the whole SQLite file: readings, alert state, dead letters and the outbox.
    pub fsync: Fsync,
}

/// What happens when the outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    Block,
    DropOldest,
}

/// When commits reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    Always,
    Checkpoint,
}

impl Fsync {
    /// SQLite's `synchronous` setting for this policy (WAL mode).
    pub fn pragma(self) -> &'static str {
        match self {
            Fsync::Always => "FULL",
            Fsync::Checkpoint => "NORMAL",
        }
    }
}

impl WhenFull {
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropOldest => "drop_oldest",
        }
    }
}
