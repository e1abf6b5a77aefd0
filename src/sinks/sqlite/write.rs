//! The single writer: commits batches and prunes old rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::model::{Alert, AlertEvent, AlertState, DeadLetter, Reading, TimestampMs};

use super::{decode, schema, Commit, CommitStats, PruneStats, SensorRecord, StoreError};

/// Only a duplicate point is ignored (counted as a duplicate). `INSERT OR IGNORE` would also
/// swallow a NOT NULL violation and count a broken row as a duplicate; the targeted
/// `ON CONFLICT ... DO NOTHING` keeps every other failure an error.
const INSERT_READING: &str =
    "INSERT INTO readings (sensor, metric, ts, kind, value, quality, ts_source) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (sensor, metric, ts) DO NOTHING";

const UPSERT_ALERT: &str = "INSERT INTO alerts (id, rule, sensor, kind, metric, severity, state, value, \
     threshold, peak, count, started_at, updated_at, resolved_at, ack_by, ack_at, ack_comment, message) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
     ON CONFLICT (id) DO UPDATE SET rule = excluded.rule, sensor = excluded.sensor, \
     kind = excluded.kind, metric = excluded.metric, severity = excluded.severity, \
     state = excluded.state, value = excluded.value, threshold = excluded.threshold, \
     peak = excluded.peak, count = excluded.count, started_at = excluded.started_at, \
     updated_at = excluded.updated_at, resolved_at = excluded.resolved_at, \
     ack_by = excluded.ack_by, ack_at = excluded.ack_at, ack_comment = excluded.ack_comment, \
     message = excluded.message";

const INSERT_EVENT: &str =
    "INSERT INTO alert_events (alert_id, event, at, alert) VALUES (?1, ?2, ?3, ?4)";

const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters (received_at, source, reason, detail, \
     sensor, metric, value, ts, raw, raw_len) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Records arrive from several sources out of order: an older record (a late batch, a
/// replay) must not roll back the kind, tags or last_seen of a newer one. An empty kind means
/// "not known here" and never erases a known one. (In an UPDATE every `sensors.x` is the
/// value before the update.)
const UPSERT_SENSOR: &str =
    "INSERT INTO sensors (id, kind, tags, last_seen) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (id) DO UPDATE SET \
     kind = CASE WHEN excluded.last_seen >= sensors.last_seen AND excluded.kind <> '' \
                 THEN excluded.kind ELSE sensors.kind END, \
     tags = CASE WHEN excluded.last_seen >= sensors.last_seen \
                 THEN excluded.tags ELSE sensors.tags END, \
     last_seen = max(sensors.last_seen, excluded.last_seen)";

/// The store's only writer. Blocking: run it on its own thread or in `spawn_blocking`.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Most dead letters kept (`sqlite.max_dead_letters`); 0, no cap.
    max_dead_letters: u64,
}

/// Keeps the newest `?1` dead letters. Ids only grow (an `INTEGER PRIMARY KEY` takes the
/// largest id plus one), so the newest rows are one id range: the delete is a range on the
/// primary key, and `max(id)` one step down its b-tree, cheap when nothing is over the cap.
/// Rows written by other writers (the sinks' and alert outputs' dead letters) count too.
/// Where the newest ids have gaps (rows pruned by age out of id order, after the clock was
/// set back), fewer than the cap are kept, never more: counting down the index instead
/// (`ORDER BY id DESC LIMIT 1 OFFSET cap`) would walk a million rows on every commit.
const CAP_DEAD_LETTERS: &str =
    "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?1";

impl SqliteStore {
    /// Opens the store, creating its directory and file and migrating the schema as needed.
    /// See `schema::open_writer` for the durability settings (WAL, `synchronous = NORMAL`).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = schema::open_writer(path)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            max_dead_letters: 0,
        })
    }

    /// Caps the dead letters kept (`sqlite.max_dead_letters`; 0, the default, keeps them
    /// all until retention): past it, each commit that writes dead letters, and each prune,
    /// deletes the oldest.
    pub fn set_max_dead_letters(&mut self, max: u64) {
        self.max_dead_letters = max;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets when commits reach the disk (`[outbox] fsync`; see `schema::open_writer`).
    pub fn set_fsync(&self, fsync: crate::outbox::Fsync) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "synchronous", fsync.pragma())
            .map_err(sql_err(&self.path, "set synchronous"))
    }

    /// The writer's connection, for the outbox's startup reconciliation.
    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Writes a batch in one transaction: all of it is stored or, on error, none of it.
    pub fn commit(&mut self, c: &Commit<'_>) -> Result<CommitStats, StoreError> {
        check_commit(c)?;
        // Into the null sink most batches leave nothing to write. An empty transaction would
        // still take and release the write lock (a `BEGIN IMMEDIATE` and a `COMMIT`, per group
        // of batches), and wait up to the busy timeout behind another writer, for nothing.
        if c.is_empty() {
            return Ok(CommitStats::default());
        }
        // Encode JSON before the transaction so a failure cannot leave it half done.
        let events = c
            .events
            .iter()
            .map(|e| serde_json::to_string(&e.alert).map(|json| (e, json)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| self.json_err("an alert event", source))?;
        let sensors = c
            .sensors
            .iter()
            .map(|s| serde_json::to_string(&s.tags).map(|json| (s, json)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| self.json_err("sensor tags", source))?;

        let path = &self.path;
        let err = |op| sql_err(path, op);
        // IMMEDIATE takes the write lock up front: a deferred transaction that upgrades later
        // can fail with SQLITE_BUSY halfway when another process holds a read transaction.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin commit"))?;
        let mut stats = CommitStats::default();
        write_sensors(&tx, &sensors).map_err(err("upsert sensors"))?;
        stats.readings_inserted =
            write_readings(&tx, c.readings).map_err(err("insert readings"))?;
        stats.duplicates = c.readings.len() - stats.readings_inserted;
        stats.dead_letters = write_dead_letters(&tx, c.dead_letters, c.raw_max)
            .map_err(err("insert dead letters"))?;
        if stats.dead_letters > 0 {
            stats.dead_letters_dropped = cap_dead_letters(&tx, self.max_dead_letters)
                .map_err(err("delete dead letters over the cap"))?;
        }
        stats.alerts = write_alerts(&tx, c.alerts).map_err(err("upsert alerts"))?;
        stats.events = write_events(&tx, &events).map_err(err("insert alert events"))?;
        if !events.is_empty() {
            // One writer and one transaction: the events got consecutive sequence numbers
            // ending at this one (see `CommitStats::last_event_seq`).
            stats.last_event_seq = Some(tx.last_insert_rowid());
        }
        if let Some(entry) = c.outbox {
            stats.outbox_seq =
                Some(crate::outbox::db::append(&tx, entry).map_err(err("append to the outbox"))?);
        }
        tx.commit().map_err(err("commit"))?;
        Ok(stats)
    }

    /// Deletes readings and dead letters older than the cutoff, and resolved alerts whose last
    /// change (`updated_at`) is older than it, with their events. Active alerts stay
    /// whatever their age: they are live state, not history. The sensor registry is kept.
    /// An event some alert output has not delivered yet (`seq` after the lowest cursor in
    /// `alert_output_cursors`) is kept whatever its age: the output still has to send it.
    pub fn prune(&mut self, older_than_ms: TimestampMs) -> Result<PruneStats, StoreError> {
        let path = &self.path;
        let err = |op| sql_err(path, op);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin prune"))?;
        let resolved = AlertState::Resolved.as_str();
        let delivered_by_all: i64 = tx
            .query_row(
                "SELECT coalesce(min(seq), ?1) FROM alert_output_cursors",
                [i64::MAX],
                |r| r.get(0),
            )
            .map_err(err("read the alert output cursors"))?;
        let stats = PruneStats {
            readings: tx
                .execute("DELETE FROM readings WHERE ts < ?1", [older_than_ms])
                .map_err(err("prune readings"))?,
            dead_letters: tx
                .execute(
                    "DELETE FROM dead_letters WHERE received_at < ?1",
                    [older_than_ms],
                )
                .map_err(err("prune dead letters"))?,
            // Rows other writers added since the last commit that wrote any.
            dead_letters_over_cap: cap_dead_letters(&tx, self.max_dead_letters)
                .map_err(err("delete dead letters over the cap"))?,
            alert_events: tx
                .execute(
                    "DELETE FROM alert_events WHERE alert_id IN \
                     (SELECT id FROM alerts WHERE state = ?1 AND updated_at < ?2) \
                     AND seq <= ?3",
                    params![resolved, older_than_ms, delivered_by_all],
                )
                .map_err(err("prune alert events"))?
                // Events whose alert row was never written (or is gone) age out on their own.
                + tx
                    .execute(
                        "DELETE FROM alert_events WHERE at < ?1 \
                         AND alert_id NOT IN (SELECT id FROM alerts) AND seq <= ?2",
                        [older_than_ms, delivered_by_all],
                    )
                    .map_err(err("prune orphan alert events"))?,
            alerts: tx
                .execute(
                    "DELETE FROM alerts WHERE state = ?1 AND updated_at < ?2",
                    params![resolved, older_than_ms],
                )
                .map_err(err("prune alerts"))?,
        };
        tx.commit().map_err(err("commit prune"))?;
        // Large deletes shift the statistics the planner relies on; this is cheap when
        // nothing needs doing.
        self.conn
            .execute_batch("PRAGMA optimize")
            .map_err(err("optimize after prune"))?;
        Ok(stats)
    }

    /// The alerts that are still active, oldest first, to restore the pipeline's alert state
    /// at startup.
    pub fn active_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let sql = format!(
            "SELECT {} FROM alerts WHERE state = ?1 ORDER BY started_at, id",
            decode::ALERT_COLUMNS
        );
        let read = || -> rusqlite::Result<Vec<Alert>> {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([AlertState::Active.as_str()], decode::alert)?;
            rows.collect()
        };
        read().map_err(|source| StoreError::Sqlite {
            op: "read active alerts",
            path: self.path.clone(),
            source,
        })
    }

    fn json_err(&self, what: &'static str, source: serde_json::Error) -> StoreError {
        StoreError::Json {
            what,
            path: self.path.clone(),
            source,
        }
    }
}

/// Refuses, before anything is written, what SQLite would silently alter: it stores a NaN as
/// NULL, and JSON has no NaN or infinity for the alert history.
fn check_commit(c: &Commit<'_>) -> Result<(), StoreError> {
    if let Some(r) = c.readings.iter().find(|r| !r.value.is_finite()) {
        return Err(StoreError::InvalidInput(format!(
            "reading {}/{} at {} has the non-finite value {}",
            r.sensor, r.metric, r.ts, r.value
        )));
    }
    for a in c
        .alerts
        .iter()
        .map(|a| &**a)
        .chain(c.events.iter().map(|e| &e.alert))
    {
        check_alert(a)?;
    }
    Ok(())
}

fn check_alert(a: &Alert) -> Result<(), StoreError> {
    for (name, v) in [
        ("value", a.value),
        ("threshold", a.threshold),
        ("peak", a.peak),
    ] {
        if !v.is_finite() {
            return Err(StoreError::InvalidInput(format!(
                "alert {} has the non-finite {name} {v}",
                a.id
            )));
        }
    }
    if i64::try_from(a.count).is_err() {
        return Err(StoreError::InvalidInput(format!(
            "alert {} has a count of {}, beyond what SQLite stores",
            a.id, a.count
        )));
    }
    Ok(())
}

fn write_sensors(
    tx: &Transaction<'_>,
    sensors: &[(&SensorRecord, String)],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(UPSERT_SENSOR)?;
    for (s, tags) in sensors {
        stmt.execute(params![s.id.as_str(), s.kind.as_str(), tags, s.last_seen])?;
    }
    Ok(())
}

fn write_readings(tx: &Transaction<'_>, readings: &[Reading]) -> rusqlite::Result<usize> {
    let mut stmt = tx.prepare_cached(INSERT_READING)?;
    let mut inserted = 0;
    for r in readings {
        inserted += stmt.execute(params![
            r.sensor.as_str(),
            r.metric.as_str(),
            r.ts,
            r.kind.as_str(),
            r.value,
            r.quality.as_str(),
            r.ts_source.as_str(),
        ])?;
    }
    Ok(inserted)
}

pub(crate) fn write_dead_letters(
    tx: &Transaction<'_>,
    letters: &[DeadLetter],
    raw_max: usize,
) -> rusqlite::Result<usize> {
    let mut stmt = tx.prepare_cached(INSERT_DEAD_LETTER)?;
    for d in letters {
        let raw = &d.raw[..d.raw.len().min(raw_max)];
        let raw_len = i64::try_from(d.raw.len()).unwrap_or(i64::MAX);
        stmt.execute(params![
            d.received_at,
            d.source.as_str(),
            d.reason,
            d.detail,
            d.sensor.as_deref(),
            d.metric.as_deref(),
            dead_letter_value(d.value),
            d.ts,
            raw,
            raw_len,
        ])?;
    }
    Ok(letters.len())
}

/// Deletes the oldest dead letters past `max` (0: no cap), returning how many.
fn cap_dead_letters(tx: &Transaction<'_>, max: u64) -> rusqlite::Result<usize> {
    if max == 0 {
        return Ok(0);
    }
    tx.prepare_cached(CAP_DEAD_LETTERS)?
        .execute([i64::try_from(max).unwrap_or(i64::MAX)])
}

/// SQLite binds a NaN as NULL; a NaN reading is a reason for a dead letter, so it is kept as
/// the text `NaN` (the column has no affinity, so the text stays text).
fn dead_letter_value(v: Option<f64>) -> Value {
    match v {
        None => Value::Null,
        Some(v) if v.is_nan() => Value::Text("NaN".into()),
        Some(v) => Value::Real(v),
    }
}

fn write_alerts(tx: &Transaction<'_>, alerts: &[Arc<Alert>]) -> rusqlite::Result<usize> {
    let mut stmt = tx.prepare_cached(UPSERT_ALERT)?;
    for a in alerts {
        // check_alert has bounded the count.
        let count = i64::try_from(a.count).unwrap_or(i64::MAX);
        stmt.execute(params![
            a.id,
            a.rule.as_str(),
            a.sensor.as_str(),
            a.kind.as_str(),
            a.metric.as_str(),
            a.severity.as_str(),
            a.state.as_str(),
            a.value,
            a.threshold,
            a.peak,
            count,
            a.started_at,
            a.updated_at,
            a.resolved_at,
            a.ack.as_ref().map(|k| k.by.as_str()),
            a.ack.as_ref().map(|k| k.at),
            a.ack.as_ref().map(|k| k.comment.as_str()),
            a.message,
        ])?;
    }
    Ok(alerts.len())
}

fn write_events(tx: &Transaction<'_>, events: &[(&AlertEvent, String)]) -> rusqlite::Result<usize> {
    let mut stmt = tx.prepare_cached(INSERT_EVENT)?;
    for (e, json) in events {
        stmt.execute(params![e.alert.id, e.event.as_str(), e.at, json])?;
    }
    Ok(events.len())
}

/// Wraps a rusqlite error with the operation and the file, for `map_err`.
fn sql_err<'a>(
    path: &'a std::path::Path,
    op: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sqlite {
        op,
        path: path.to_path_buf(),
        source,
    }
}
