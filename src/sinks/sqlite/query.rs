//! Read-only access for the HTTP API and tests.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use crate::model::{Alert, AlertEvent, AlertState};

use super::{
    decode, effective_limit, schema, AlertFilter, AlertQuery, DeadLetterQuery, Order, ReadingQuery,
    SensorRecord, SequencedEvent, StoreCounts, StoreError, StoredDeadLetter, StoredReading,
};

/// Connections kept open between queries. More are opened when more queries run at once;
/// the extra ones are closed when they finish.
const MAX_IDLE: usize = 4;

/// Read-only connections to the store. WAL mode lets them read the last committed state while
/// the writer writes. `Sync`: share one behind an `Arc`. Blocking: call it from
/// `spawn_blocking` in async code.
#[derive(Debug)]
pub struct SqliteReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    /// Opens a reader on a store that a [`super::SqliteStore`] has created; fails if the file
    /// is missing or its schema version is not this build's.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let first = schema::open_reader(path)?;
        Ok(SqliteReader {
            path: path.to_path_buf(),
            idle: Mutex::new(vec![first]),
        })
    }

    /// Readings matching the query, newest first unless it asks otherwise.
    pub fn readings(&self, q: &ReadingQuery) -> Result<Vec<StoredReading>, StoreError> {
        let mut sql = String::from(
            "SELECT sensor, metric, ts, kind, value, quality, ts_source FROM readings",
        );
        let mut args: Vec<Value> = Vec::new();
        let mut conditions: Vec<&str> = Vec::new();
        if let Some(sensor) = &q.sensor {
            conditions.push("sensor = ?");
            args.push(Value::Text(sensor.clone()));
        }
        if let Some(metric) = &q.metric {
            conditions.push("metric = ?");
            args.push(Value::Text(metric.clone()));
        }
        if let Some(from) = q.from {
            conditions.push("ts >= ?");
            args.push(Value::Integer(from));
        }
        if let Some(to) = q.to {
            conditions.push("ts < ?");
            args.push(Value::Integer(to));
        }
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(match q.order {
            Order::NewestFirst => " ORDER BY ts DESC, sensor DESC, metric DESC",
            Order::OldestFirst => " ORDER BY ts, sensor, metric",
        });
        sql.push_str(" LIMIT ?");
        args.push(Value::Integer(limit_arg(q.limit)));
        self.with_conn("query readings", |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), decode::reading)?;
            rows.collect()
        })
    }

    /// Alerts matching every filter given, newest first.
    pub fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        let state = match q.state {
            AlertFilter::Active => Some(AlertState::Active),
            AlertFilter::Resolved => Some(AlertState::Resolved),
            AlertFilter::All => None,
        };
        let mut conditions: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        let mut text = |cond: &'static str, v: &str| {
            conditions.push(cond);
            args.push(Value::Text(v.to_string()));
        };
        if let Some(state) = state {
            text("state = ?", state.as_str());
        }
        if let Some(severity) = q.severity {
            text("severity = ?", severity.as_str());
        }
        if let Some(kind) = &q.kind {
            text("kind = ?", kind);
        }
        if let Some(sensor) = &q.sensor {
            text("sensor = ?", sensor);
        }
        if let Some(ids) = &q.sensors_in {
            // One JSON array parameter however many sensors: no limit on bound variables.
            let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
            text("sensor IN (SELECT value FROM json_each(?))", &ids);
        }
        let mut sql = format!("SELECT {} FROM alerts", decode::ALERT_COLUMNS);
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY started_at DESC, id DESC LIMIT ?");
        args.push(Value::Integer(limit_arg(q.limit)));
        self.with_conn("query alerts", |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), decode::alert)?;
            rows.collect()
        })
    }

    pub fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let sql = format!("SELECT {} FROM alerts WHERE id = ?1", decode::ALERT_COLUMNS);
        self.with_conn("read alert", |conn| {
            conn.prepare_cached(&sql)?
                .query_row([id], decode::alert)
                .optional()
        })
    }

    /// The alert's lifecycle, oldest event first.
    pub fn alert_events(&self, alert_id: &str) -> Result<Vec<AlertEvent>, StoreError> {
        self.with_conn("read alert events", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT event, at, alert FROM alert_events WHERE alert_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([alert_id], decode::alert_event)?;
            rows.collect()
        })
    }

    /// Up to `limit` alert events after `seq`, in order: what an alert output or an SSE client
    /// resuming from `seq` has not seen yet.
    pub fn alert_events_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<SequencedEvent>, StoreError> {
        self.with_conn("read alert events", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT event, at, alert, seq FROM alert_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![seq, limit_arg(Some(limit))], |row| {
                Ok(SequencedEvent {
                    event: decode::alert_event(row)?,
                    seq: row.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The sequence number of the last alert event ever written (0 before the first).
    pub fn alert_event_head(&self) -> Result<i64, StoreError> {
        self.with_conn("read the alert event head", |conn| {
            // AUTOINCREMENT keeps the last number in sqlite_sequence even when pruning emptied
            // the table, so the head never goes back.
            Ok(conn
                .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'alert_events'")?
                .query_row([], |row| row.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    /// Whether every alert event in `(after, through]` is still stored. Sequence numbers are
    /// consecutive (one writer; a rolled-back transaction gives its numbers back), so any gap
    /// is retention pruning, which deletes by alert: not only the oldest events.
    pub fn alert_events_complete(&self, after: i64, through: i64) -> Result<bool, StoreError> {
        if through <= after {
            return Ok(true);
        }
        self.with_conn("count alert events", |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM alert_events WHERE seq > ?1 AND seq <= ?2")?
                .query_row(params![after, through], |row| row.get(0))?;
            Ok(n == through - after)
        })
    }

    /// Dead letters, newest first, optionally of one reason.
    pub fn dead_letters(&self, q: &DeadLetterQuery) -> Result<Vec<StoredDeadLetter>, StoreError> {
        const COLUMNS: &str = "SELECT id, received_at, source, reason, detail, sensor, metric, \
             value, ts, raw, raw_len FROM dead_letters";
        let limit = limit_arg(q.limit);
        self.with_conn("query dead letters", |conn| match &q.reason {
            Some(reason) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "{COLUMNS} WHERE reason = ?1 ORDER BY received_at DESC, id DESC LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![reason, limit], decode::dead_letter)?;
                rows.collect()
            }
            None => {
                let mut stmt = conn.prepare_cached(&format!(
                    "{COLUMNS} ORDER BY received_at DESC, id DESC LIMIT ?1"
                ))?;
                let rows = stmt.query_map([limit], decode::dead_letter)?;
                rows.collect()
            }
        })
    }

    /// Rows per table, read in one statement so that they come from one snapshot.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.with_conn("count rows", |conn| {
            conn.prepare_cached(
                "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM alerts), \
                 (SELECT count(*) FROM alerts WHERE state = ?1), \
                 (SELECT count(*) FROM alert_events), (SELECT count(*) FROM dead_letters), \
                 (SELECT count(*) FROM sensors)",
            )?
            .query_row([AlertState::Active.as_str()], |row| {
                // count(*) is never negative.
                let n = |i| row.get::<_, i64>(i).map(|v| v.unsigned_abs());
                Ok(StoreCounts {
                    readings: n(0)?,
                    alerts: n(1)?,
                    active_alerts: n(2)?,
                    alert_events: n(3)?,
                    dead_letters: n(4)?,
                    sensors: n(5)?,
                })
            })
        })
    }

    /// The sensor registry, by id.
    pub fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError> {
        self.with_conn("read sensors", |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, kind, tags, last_seen FROM sensors ORDER BY id")?;
            let rows = stmt.query_map([], decode::sensor)?;
            rows.collect()
        })
    }

    fn with_conn<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = match self.idle_conns().pop() {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = f(&conn);
        let mut idle = self.idle_conns();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        result.map_err(|source| StoreError::Sqlite {
            op,
            path: self.path.clone(),
            source,
        })
    }

    fn idle_conns(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The list is only pushed to and popped from; a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still good to use.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn limit_arg(limit: Option<usize>) -> i64 {
    // effective_limit is at most MAX_LIMIT, far below i64::MAX.
    i64::try_from(effective_limit(limit)).unwrap_or(i64::MAX)
}
