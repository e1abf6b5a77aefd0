//! Turning rows back into model types. A value that does not decode (an unknown enum name,
//! bad JSON, a NULL where one cannot be) becomes a `rusqlite` conversion error naming the
//! column, never a panic; the caller wraps it with the operation and the path.

use rusqlite::types::{Type, ValueRef};
use rusqlite::Row;

use crate::model::{
    Ack, Alert, AlertEvent, AlertEventKind, AlertState, Quality, Severity, TsSource,
};

use super::{SensorRecord, StoredDeadLetter, StoredReading};

/// The `alerts` columns in the order [`alert`] reads them.
pub(crate) const ALERT_COLUMNS: &str = "id, rule, sensor, kind, metric, severity, state, value, \
     threshold, peak, count, started_at, updated_at, resolved_at, ack_by, ack_at, ack_comment, message";

/// A stored value that is not one this build writes.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {problem}")]
pub(crate) struct BadValue {
    column: &'static str,
    problem: String,
}

fn bad(idx: usize, ty: Type, column: &'static str, problem: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, Box::new(BadValue { column, problem }))
}

fn named<T>(
    row: &Row<'_>,
    idx: usize,
    column: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| bad(idx, Type::Text, column, format!("unknown value {text:?}")))
}

fn quality(s: &str) -> Option<Quality> {
    [Quality::Good, Quality::Suspect]
        .into_iter()
        .find(|q| q.as_str() == s)
}

fn ts_source(s: &str) -> Option<TsSource> {
    [TsSource::Device, TsSource::Received]
        .into_iter()
        .find(|t| t.as_str() == s)
}

fn event_kind(s: &str) -> Option<AlertEventKind> {
    [
        AlertEventKind::Raised,
        AlertEventKind::Escalated,
        AlertEventKind::Deescalated,
        AlertEventKind::Resolved,
        AlertEventKind::Acknowledged,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
}

fn non_negative<T: TryFrom<i64>>(
    row: &Row<'_>,
    idx: usize,
    column: &'static str,
) -> rusqlite::Result<T> {
    let v: i64 = row.get(idx)?;
    T::try_from(v).map_err(|_| bad(idx, Type::Integer, column, format!("{v} is out of range")))
}

/// Columns: sensor, metric, ts, kind, value, quality, ts_source.
pub(crate) fn reading(row: &Row<'_>) -> rusqlite::Result<StoredReading> {
    Ok(StoredReading {
        sensor: row.get::<_, String>(0)?.into(),
        metric: row.get::<_, String>(1)?.into(),
        ts: row.get(2)?,
        kind: row.get::<_, String>(3)?.into(),
        value: row.get(4)?,
        quality: named(row, 5, "quality", quality)?,
        ts_source: named(row, 6, "ts_source", ts_source)?,
    })
}

/// Columns: [`ALERT_COLUMNS`].
pub(crate) fn alert(row: &Row<'_>) -> rusqlite::Result<Alert> {
    let ack_by: Option<String> = row.get(14)?;
    let ack_at: Option<i64> = row.get(15)?;
    let ack_comment: Option<String> = row.get(16)?;
    let ack = match (ack_by, ack_at, ack_comment) {
        (Some(by), Some(at), Some(comment)) => Some(Ack { by, at, comment }),
        (None, None, None) => None,
        _ => {
            return Err(bad(
                15,
                Type::Integer,
                "ack_*",
                "ack_by, ack_at and ack_comment must be all set or all NULL".into(),
            ))
        }
    };
    Ok(Alert {
        id: row.get(0)?,
        rule: row.get::<_, String>(1)?.into(),
        sensor: row.get::<_, String>(2)?.into(),
        kind: row.get::<_, String>(3)?.into(),
        metric: row.get::<_, String>(4)?.into(),
        severity: named(row, 5, "severity", Severity::parse)?,
        state: named(row, 6, "state", AlertState::parse)?,
        value: row.get(7)?,
        threshold: row.get(8)?,
        peak: row.get(9)?,
        count: non_negative(row, 10, "count")?,
        started_at: row.get(11)?,
        updated_at: row.get(12)?,
        resolved_at: row.get(13)?,
        ack,
        message: row.get(17)?,
    })
}

/// Columns: event, at, alert (JSON).
pub(crate) fn alert_event(row: &Row<'_>) -> rusqlite::Result<AlertEvent> {
    let json: String = row.get(2)?;
    let alert: Alert = serde_json::from_str(&json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(e)))?;
    Ok(AlertEvent {
        event: named(row, 0, "event", event_kind)?,
        at: row.get(1)?,
        alert,
    })
}

/// Columns: id, received_at, source, reason, detail, sensor, metric, value, ts, raw, raw_len.
pub(crate) fn dead_letter(row: &Row<'_>) -> rusqlite::Result<StoredDeadLetter> {
    let raw = row.get_ref(9)?.as_blob()?;
    let raw_len: usize = non_negative(row, 10, "raw_len")?;
    Ok(StoredDeadLetter {
        id: row.get(0)?,
        received_at: row.get(1)?,
        source: row.get(2)?,
        reason: row.get(3)?,
        detail: row.get(4)?,
        sensor: row.get(5)?,
        metric: row.get(6)?,
        value: dead_letter_value(row, 7)?,
        ts: row.get(8)?,
        raw_truncated: raw.len() < raw_len,
        raw: String::from_utf8_lossy(raw).into_owned(),
        raw_len,
    })
}

/// Dead-letter values are REAL, NULL, or the text `NaN` (see the schema).
fn dead_letter_value(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<f64>> {
    match row.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        ValueRef::Real(v) => Ok(Some(v)),
        // The column has no affinity, so this build only ever writes REALs there; an INTEGER
        // came from another tool and is still a number.
        ValueRef::Integer(v) => Ok(Some(v as f64)),
        ValueRef::Text(b"NaN") => Ok(Some(f64::NAN)),
        other => Err(bad(
            idx,
            other.data_type(),
            "value",
            "expected a number, NULL or 'NaN'".into(),
        )),
    }
}

/// Columns: id, kind, tags (JSON), last_seen.
pub(crate) fn sensor(row: &Row<'_>) -> rusqlite::Result<SensorRecord> {
    let json: String = row.get(2)?;
    let tags: Vec<(String, String)> = serde_json::from_str(&json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(e)))?;
    Ok(SensorRecord {
        id: row.get::<_, String>(0)?.into(),
        kind: row.get::<_, String>(1)?.into(),
        tags,
        last_seen: row.get(3)?,
    })
}
