//! The embedded SQLite store: readings, alerts with their history, dead letters and the
//! sensor registry, in one file in WAL mode.
//!
//! One [`SqliteStore`] writes; every batch goes in as one [`Commit`], a single transaction, so a
//! crash leaves either all of a batch or none of it. Any number of [`SqliteReader`]s read at
//! the same time: WAL mode lets readers see the last committed state while the writer writes.
//! Both are blocking; call them from `spawn_blocking` or a dedicated thread in async code.
//!
//! Durability: WAL with `synchronous = NORMAL`. A committed batch survives a process crash
//! (`kill -9`); a power loss can roll back the commits since the last WAL checkpoint, never
//! corrupting the file. The trade-off is argued in `schema::open_writer`.
//!
//! Numbers: readings and alert values must be finite (the pipeline rejects NaN and ±Inf
//! before they get here); a commit that breaks this is refused whole with
//! [`StoreError::InvalidInput`]. Dead letters keep any value, NaN included.

mod decode;
mod error;
mod query;
mod schema;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use compact_str::CompactString;
use serde::Serialize;

use crate::model::{Alert, AlertEvent, DeadLetter, Quality, Reading, TimestampMs, TsSource};

pub use error::StoreError;
pub use query::SqliteReader;
pub(crate) use write::write_dead_letters;

/// A second writing connection to the store's file, for a sink's outbox cursor and dead
/// letters (SQLite serializes it with the main writer's commits).
pub fn open_side_writer(
    path: &std::path::Path,
    fsync: crate::outbox::Fsync,
) -> Result<rusqlite::Connection, StoreError> {
    let conn = schema::open_writer(path)?;
    conn.pragma_update(None, "synchronous", fsync.pragma())
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(conn)
}
pub use write::SqliteStore;

/// Everything one batch changes, written in one transaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Commit<'a> {
    /// Accepted readings; their `kind` is already resolved by the pipeline.
    pub readings: &'a [Reading],
    pub dead_letters: &'a [DeadLetter],
    /// The current state of alerts, upserted by id.
    pub alerts: &'a [Arc<Alert>],
    /// Alert history, appended in order.
    pub events: &'a [AlertEvent],
    /// Sensor registry upserts.
    pub sensors: &'a [SensorRecord],
    /// Dead-letter raw payloads are cut to this many bytes.
    pub raw_max: usize,
    /// The batch's line protocol for the remote sinks, appended to the outbox in the same
    /// transaction.
    pub outbox: Option<&'a crate::outbox::Append>,
}

impl Commit<'_> {
    /// Nothing to write: no rows and no outbox entry.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.dead_letters.is_empty()
            && self.alerts.is_empty()
            && self.events.is_empty()
            && self.sensors.is_empty()
            && self.outbox.is_none()
    }
}

/// A sensor as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SensorRecord {
    pub id: CompactString,
    pub kind: CompactString,
    /// Sorted by key, as in [`crate::model::Tags`].
    pub tags: Vec<(String, String)>,
    pub last_seen: TimestampMs,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub readings_inserted: usize,
    /// Readings ignored because the store already had a point for that sensor, metric and
    /// time (a replay, or the same point twice in one batch).
    pub duplicates: usize,
    pub dead_letters: usize,
    /// The oldest dead letters deleted to stay within `sqlite.max_dead_letters`.
    pub dead_letters_dropped: usize,
    pub alerts: usize,
    pub events: usize,
    /// The outbox entry's sequence number, when one was appended.
    pub outbox_seq: Option<i64>,
    /// The sequence number (`alert_events.seq`) of the last alert event written. The commit's
    /// events have the consecutive numbers `last - events + 1 ..= last`, in their order: the
    /// writer is the only one inserting into `alert_events`, inside one transaction.
    pub last_event_seq: Option<i64>,
}

/// An alert event with its place in the store's history (`alert_events.seq`), which orders
/// every alert output and is the SSE event id.
#[derive(Clone, Debug, PartialEq)]
pub struct SequencedEvent {
    pub seq: i64,
    pub event: AlertEvent,
}

/// What a prune removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub readings: usize,
    pub dead_letters: usize,
    /// Dead letters past `sqlite.max_dead_letters` (written by the sinks or alert outputs
    /// since the store's last commit of dead letters).
    pub dead_letters_over_cap: usize,
    pub alerts: usize,
    pub alert_events: usize,
}

/// Default number of rows a query returns when it names no limit.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest limit a query may ask for; larger ones are cut to it.
pub const MAX_LIMIT: usize = 100_000;

/// The order readings come back in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Latest first: with a limit, "the last N points", what an operator looks at.
    #[default]
    NewestFirst,
    /// Earliest first: for charts and exports that page forward in time.
    OldestFirst,
}

/// A readings query. Every filter is optional; the time range is `from <= ts < to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadingQuery {
    pub sensor: Option<String>,
    pub metric: Option<String>,
    pub from: Option<TimestampMs>,
    pub to: Option<TimestampMs>,
    /// Defaults to [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`].
    pub limit: Option<usize>,
    /// Ties on `ts` (several sensors at the same time) are broken by sensor, then metric.
    pub order: Order,
}

/// A reading as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredReading {
    pub sensor: CompactString,
    pub kind: CompactString,
    pub metric: CompactString,
    pub value: f64,
    pub ts: TimestampMs,
    pub quality: Quality,
    pub ts_source: TsSource,
}

/// Which alerts a query returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlertFilter {
    Active,
    Resolved,
    #[default]
    All,
}

/// An alerts query; alerts come back newest first (by `started_at`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertQuery {
    pub state: AlertFilter,
    /// Only this severity.
    pub severity: Option<crate::model::Severity>,
    /// Only this sensor kind.
    pub kind: Option<String>,
    /// Only this sensor.
    pub sensor: Option<String>,
    /// Only alerts of these sensors (e.g. every sensor of a district, from the board).
    pub sensors_in: Option<Vec<String>>,
    /// Defaults to [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`].
    pub limit: Option<usize>,
}

/// A dead-letters query; they come back newest first (by `received_at`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterQuery {
    pub reason: Option<String>,
    /// Defaults to [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`].
    pub limit: Option<usize>,
}

/// A dead letter as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredDeadLetter {
    pub id: i64,
    pub received_at: TimestampMs,
    pub source: String,
    pub reason: String,
    pub detail: String,
    pub sensor: Option<String>,
    pub metric: Option<String>,
    pub value: Option<f64>,
    pub ts: Option<TimestampMs>,
    /// The stored (possibly truncated) payload as text; invalid UTF-8 becomes U+FFFD.
    pub raw: String,
    /// The payload's length in bytes before truncation.
    pub raw_len: usize,
    /// Whether the stored payload was cut short.
    pub raw_truncated: bool,
}

/// Rows per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    pub readings: u64,
    pub alerts: u64,
    pub active_alerts: u64,
    pub alert_events: u64,
    pub dead_letters: u64,
    pub sensors: u64,
}

fn effective_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT)
}
