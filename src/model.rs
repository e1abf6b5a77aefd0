//! The data that flows through the gateway: readings in batches, their quality, and alerts.
//!
//! A [`Reading`] is one value of one metric of one sensor at one time. Payloads that carry
//! several metrics (a JSON object, a line-protocol line) decode into several readings. Strings
//! are [`CompactString`]s: sensor ids and metric names are short, so they live inline and a
//! reading costs no heap allocation on the hot path.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. Every timestamp in the gateway uses this unit.
pub type TimestampMs = i64;

/// Tags (district, site, route placeholders...) attached to a sensor, sorted by key.
pub type Tags = Arc<[(CompactString, CompactString)]>;

/// Where a reading's timestamp came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsSource {
    /// The device stamped the reading.
    Device,
    /// The payload carried no time; the gateway stamped it on receipt.
    Received,
}

impl TsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TsSource::Device => "device",
            TsSource::Received => "received",
        }
    }
}

/// The quality of an accepted reading. Rejected readings never get this far: they are dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Good,
    /// Plausible but doubtful (a spike faster than the process allows, a flat line). Stored,
    /// and by default kept away from threshold rules.
    Suspect,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Suspect => "suspect",
        }
    }
}

/// One value of one metric of one sensor at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub sensor: CompactString,
    /// The sensor kind as the payload or route named it; empty when the source did not say,
    /// in which case the pipeline takes it from the sensor registry.
    pub kind: CompactString,
    pub metric: CompactString,
    pub value: f64,
    pub ts: TimestampMs,
    pub ts_source: TsSource,
    /// The unit the payload declared (SenML `u`/`bu`), checked against the catalog.
    pub unit: Option<CompactString>,
    /// Tags the payload carried; they register a new sensor's tags.
    pub tags: Option<Tags>,
    /// Set by validation.
    pub quality: Quality,
    /// Index of the raw payload in [`Batch::payloads`], kept for dead letters.
    pub payload: u32,
}

impl Reading {
    /// A good reading with a device timestamp and no unit, tags or payload; handy in tests.
    pub fn new(sensor: &str, kind: &str, metric: &str, value: f64, ts: TimestampMs) -> Self {
        Reading {
            sensor: sensor.into(),
            kind: kind.into(),
            metric: metric.into(),
            value,
            ts,
            ts_source: TsSource::Device,
            unit: None,
            tags: None,
            quality: Quality::Good,
            payload: 0,
        }
    }
}

/// An input that could not become a reading: undecodable payload, failed validation, a topic
/// with no route. Kept in the dead-letter table with its reason and the raw input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    pub received_at: TimestampMs,
    pub source: CompactString,
    /// A short stable code, also the metrics label: `out_of_range`, `invalid_json`, ...
    pub reason: &'static str,
    /// The human explanation: what was wrong and where.
    pub detail: String,
    pub sensor: Option<CompactString>,
    pub metric: Option<CompactString>,
    pub value: Option<f64>,
    pub ts: Option<TimestampMs>,
    /// The raw payload it came from (possibly truncated by the store).
    #[serde(skip)]
    pub raw: Bytes,
}

impl DeadLetter {
    /// A payload that could not be decoded at all, or one item of it.
    pub fn undecodable(
        source: &str,
        received_at: TimestampMs,
        reason: &'static str,
        detail: String,
        raw: Bytes,
    ) -> Self {
        DeadLetter {
            received_at,
            source: source.into(),
            reason,
            detail,
            sensor: None,
            metric: None,
            value: None,
            ts: None,
            raw,
        }
    }
}

/// A unit of work: the readings from one or more payloads, moved together through bounded
/// channels so that per-message overhead is paid once per batch.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Which source produced it: `http`, `demo`, `mqtt:<name>`...
    pub source: CompactString,
    pub received_at: TimestampMs,
    pub readings: Vec<Reading>,
    /// Raw payloads, referenced by [`Reading::payload`].
    pub payloads: Vec<Bytes>,
    /// Inputs rejected before the pipeline (decode errors), carried along so that they are
    /// committed together with the batch's readings.
    pub dead_letters: Vec<DeadLetter>,
    /// Changes in the health of polled devices (Modbus), driving `device_offline` alerts.
    pub devices: Vec<DeviceHealth>,
}

/// A polled device's health as its source sees it, sent when it changes.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceHealth {
    /// The device's sensor id.
    pub sensor: CompactString,
    /// `Some(why)`: the device failed `failures` polls in a row and counts as offline.
    /// `None`: it answered a poll.
    pub down: Option<String>,
    pub failures: u32,
    /// When (gateway time) this was seen.
    pub at: TimestampMs,
}

/// Alert severity, lowest first. `Info` is for sensor faults; the others are threshold levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Major,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Major,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Active,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Active => "active",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "active" => Some(AlertState::Active),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// An operator's acknowledgement of an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at: TimestampMs,
    pub comment: String,
}

/// One alert: at most one is active per sensor and rule. Repeated breaches update it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub rule: CompactString,
    pub sensor: CompactString,
    pub kind: CompactString,
    pub metric: CompactString,
    pub severity: Severity,
    pub state: AlertState,
    /// The last value that drove the rule (the aggregate or rate for window and rate rules).
    pub value: f64,
    /// The threshold of the current severity.
    pub threshold: f64,
    /// The worst value seen while active.
    pub peak: f64,
    /// How many breaching evaluations it has absorbed.
    pub count: u64,
    pub started_at: TimestampMs,
    pub updated_at: TimestampMs,
    pub resolved_at: Option<TimestampMs>,
    pub ack: Option<Ack>,
    pub message: String,
}

/// A transition of an alert's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEventKind {
    Raised,
    Escalated,
    Deescalated,
    Resolved,
    Acknowledged,
}

impl AlertEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEventKind::Raised => "raised",
            AlertEventKind::Escalated => "escalated",
            AlertEventKind::Deescalated => "deescalated",
            AlertEventKind::Resolved => "resolved",
            AlertEventKind::Acknowledged => "acknowledged",
        }
    }
}

/// A lifecycle transition with the alert as it stands after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub event: AlertEventKind,
    pub at: TimestampMs,
    pub alert: Alert,
}
