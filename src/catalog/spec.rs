//! The catalog as written in config: sensor kinds, their metrics and their default rules.
//!
//! The built-in catalog lives in `config/catalog/<kind>.toml`, each file holding the tables
//! under `[catalog.<kind>]`. A user's config file can change any of it under the same keys
//! (tables merge; arrays such as `rules` replace, so move one threshold with
//! `[catalog.<kind>.overrides.<rule>]`), and per-sensor overrides live under `sensors.<id>`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::config::Dur;
use crate::model::Severity;

/// A name to show to people, in English and Simplified Chinese.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayName {
    /// English name.
    pub en: String,
    /// Simplified Chinese name (简体中文).
    #[serde(default)]
    pub zh: String,
}

/// One sensor kind: what it measures and what is wrong for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindSpec {
    /// Display name of the kind.
    pub name: DisplayName,
    /// The standard or source the default limits come from, e.g. "GB 3838-2002 class III".
    #[serde(default)]
    pub standard: String,
    /// No reading for this long raises an `offline` alert (deadman); cleared by the next
    /// reading. Unset: no deadman for this kind.
    #[serde(default)]
    pub offline_after: Option<Dur>,
    /// The metrics of this kind, by name.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricSpec>,
    /// The default threshold rules of this kind, evaluated in order.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Named sets of rule overrides, e.g. the GB 3838 water-quality classes `I`..`V`.
    /// A sensor picks one with `profile = "II"`.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSpec>,
    /// The profile used by sensors that name none.
    #[serde(default)]
    pub default_profile: Option<String>,
    /// Kind-wide changes to default rules by rule name, so that a config file can move one
    /// threshold without restating the whole `rules` array (arrays replace, tables merge).
    #[serde(default)]
    pub overrides: BTreeMap<String, RuleOverride>,
}

/// One metric of a kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Display name of the metric.
    pub name: DisplayName,
    /// The canonical unit, e.g. "mg/L", "m³/s", "°C". Empty for dimensionless metrics.
    #[serde(default)]
    pub unit: String,
    /// Other spellings of the unit accepted in payloads (SenML "Cel" for "°C", ...).
    #[serde(default)]
    pub unit_aliases: Vec<String>,
    /// Lowest plausible value; below it a reading is rejected as `out_of_range`.
    pub min: f64,
    /// Highest plausible value; above it a reading is rejected as `out_of_range`.
    pub max: f64,
    /// The fastest the physical process can change, in units per hour. A faster change marks
    /// the reading suspect (`spike`). Unset: no spike check.
    #[serde(default)]
    pub max_rate_per_hour: Option<f64>,
    /// A monotonic counter (energy, volume): a decrease is rejected as `counter_backwards`
    /// unless it is a declared rollover.
    #[serde(default)]
    pub counter: bool,
    /// For counters: the value at which the register wraps to zero. A decrease from near this
    /// value is a rollover, not an error.
    #[serde(default)]
    pub rollover: Option<f64>,
    /// Whether the flat-line (stuck sensor) check applies. Off for metrics that legitimately
    /// sit at one value for hours (rainfall 0, LEL 0, counters at night).
    #[serde(default = "yes")]
    pub flatline: bool,
}

fn yes() -> bool {
    true
}

/// How a rule reduces readings to the value it compares with its thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Sum,
    Mean,
    Max,
    Min,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Sum => "sum",
            Aggregate::Mean => "mean",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
        }
    }
}

/// A threshold rule. The compared value is the reading itself, or its rolling-window aggregate
/// (`window` + `aggregate`), or its rate of change (`rate_per`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique within the kind; also the key for per-sensor and profile overrides.
    pub name: String,
    /// The metric the rule watches.
    pub metric: String,
    /// Breach when the value is above these levels. A bare number is a warning level.
    #[serde(default)]
    pub above: Option<Levels>,
    /// Breach when the value is below these levels. A bare number is a warning level.
    #[serde(default)]
    pub below: Option<Levels>,
    /// Deadband: an alert clears only once the value is back past the threshold by this much.
    #[serde(default)]
    pub hysteresis: f64,
    /// The breach must last this long (in reading time) before the alert is raised.
    #[serde(default, rename = "for")]
    pub for_duration: Option<Dur>,
    /// Rolling window the aggregate is computed over.
    #[serde(default)]
    pub window: Option<Dur>,
    /// The aggregate over `window`: sum, mean, max or min.
    #[serde(default)]
    pub aggregate: Option<Aggregate>,
    /// Compare the rate of change per this duration instead of the value (e.g. "1h": m/h).
    #[serde(default)]
    pub rate_per: Option<Dur>,
    /// Time-of-day thresholds, in the gateway's time zone; they replace `above`/`below`
    /// while their span is current.
    #[serde(default)]
    pub schedule: Vec<ScheduleSpec>,
    /// A human message; `{value}`, `{threshold}`, `{metric}`, `{sensor}` and `{unit}` are filled in.
    #[serde(default)]
    pub message: Option<String>,
    /// A disabled rule is not evaluated (handy in overrides).
    #[serde(default)]
    pub disabled: bool,
}

/// Thresholds of a time-of-day span, e.g. the noise limit by day and by night.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Local start time, "HH:MM".
    pub from: String,
    /// Local end time, "HH:MM" (exclusive); a span may cross midnight ("22:00" to "06:00").
    pub to: String,
    /// Above-thresholds during this span.
    #[serde(default)]
    pub above: Option<Levels>,
    /// Below-thresholds during this span.
    #[serde(default)]
    pub below: Option<Levels>,
}

/// Rule overrides by rule name, from a profile or a sensor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Display name, e.g. "GB 3838 class II".
    #[serde(default)]
    pub name: Option<String>,
    /// Overrides keyed by rule name.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleOverride>,
}

/// The parts of a rule a profile or a sensor may change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    /// Replaces the rule's above-levels.
    #[serde(default)]
    pub above: Option<Levels>,
    /// Replaces the rule's below-levels.
    #[serde(default)]
    pub below: Option<Levels>,
    /// Replaces the deadband.
    #[serde(default)]
    pub hysteresis: Option<f64>,
    /// Replaces the `for` duration.
    #[serde(default, rename = "for")]
    pub for_duration: Option<Dur>,
    /// Replaces the whole time-of-day schedule (all spans), e.g. the day and night limits of
    /// a GB 3096 noise class. An empty list removes the schedule.
    #[serde(default)]
    pub schedule: Option<Vec<ScheduleSpec>>,
    /// Turns the rule off (true) or back on (false).
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// Threshold levels by severity; any subset may be given. For `above` the levels must rise
/// with severity, for `below` they must fall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Levels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
}

impl Levels {
    /// The levels that are set, lowest severity first.
    pub fn iter(&self) -> impl Iterator<Item = (Severity, f64)> + '_ {
        [
            (Severity::Info, self.info),
            (Severity::Warning, self.warning),
            (Severity::Major, self.major),
            (Severity::Critical, self.critical),
        ]
        .into_iter()
        .filter_map(|(s, v)| v.map(|v| (s, v)))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// `Levels` is written either as a bare number (a warning level) or as a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelsTable {
    #[serde(default)]
    info: Option<f64>,
    #[serde(default)]
    warning: Option<f64>,
    #[serde(default)]
    major: Option<f64>,
    #[serde(default)]
    critical: Option<f64>,
}

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Levels;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a table of levels like { warning = 1.0, critical = 2.0 }")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Levels, E> {
                Ok(Levels {
                    warning: Some(v),
                    ..Levels::default()
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Levels, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Levels, E> {
                self.visit_f64(v as f64)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Levels, A::Error> {
                let t = LevelsTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Levels {
                    info: t.info,
                    warning: t.warning,
                    major: t.major,
                    critical: t.critical,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a local time of day "HH:MM" into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}
