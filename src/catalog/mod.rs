//! Sensor kinds, metrics and rules, compiled from config for fast lookup on the hot path.
//!
//! [`spec`] is the catalog as written; [`Catalog`] is what the pipeline uses: per kind an
//! indexed metric table and its rules, per sensor a [`SensorProfile`] with the profile and
//! per-sensor overrides already applied. Sensors without overrides share their kind's default
//! profile, so 100,000 sensors do not mean 100,000 copies of the rules.

pub mod spec;
pub mod table;

use std::str::FromStr;
use std::sync::Arc;

use chrono_tz::Tz;
use compact_str::CompactString;
use rustc_hash::FxHashMap;

use crate::config::{Config, MetricOverride, SensorSpec};
use crate::model::{Severity, Tags};
use spec::{parse_hhmm, Aggregate, KindSpec, Levels, MetricSpec, RuleOverride, RuleSpec};

/// One metric of a kind, ready for validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: CompactString,
    pub unit: CompactString,
    pub unit_aliases: Vec<CompactString>,
    pub min: f64,
    pub max: f64,
    pub max_rate_per_hour: Option<f64>,
    pub counter: bool,
    pub rollover: Option<f64>,
    pub flatline: bool,
}

impl Metric {
    fn from_spec(name: &str, m: &MetricSpec) -> Metric {
        Metric {
            name: name.into(),
            unit: m.unit.as_str().into(),
            unit_aliases: m.unit_aliases.iter().map(|u| u.as_str().into()).collect(),
            min: m.min,
            max: m.max,
            max_rate_per_hour: m.max_rate_per_hour,
            counter: m.counter,
            rollover: m.rollover,
            flatline: m.flatline && !m.counter,
        }
    }

    fn apply(&mut self, o: &MetricOverride) {
        if let Some(v) = o.min {
            self.min = v;
        }
        if let Some(v) = o.max {
            self.max = v;
        }
        if o.max_rate_per_hour.is_some() {
            self.max_rate_per_hour = o.max_rate_per_hour;
        }
    }

    /// Whether a unit written in a payload names this metric's unit.
    pub fn accepts_unit(&self, unit: &str) -> bool {
        self.unit == unit || self.unit_aliases.iter().any(|a| a == unit)
    }
}

/// What a rule compares with its thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueSource {
    /// The reading's value.
    Instant,
    /// An aggregate over a rolling window of reading time.
    Window { ms: i64, aggregate: Aggregate },
    /// The rate of change, scaled to `per_ms` (e.g. metres per hour).
    Rate { per_ms: i64 },
}

/// Thresholds in force during a time-of-day span (local minutes after midnight, `to` exclusive).
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub from_min: u32,
    pub to_min: u32,
    pub above: Levels,
    pub below: Levels,
}

impl Span {
    pub fn contains(&self, minute: u32) -> bool {
        if self.from_min < self.to_min {
            (self.from_min..self.to_min).contains(&minute)
        } else {
            // crosses midnight, e.g. 22:00 → 06:00
            minute >= self.from_min || minute < self.to_min
        }
    }
}

/// A rule ready to evaluate.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: CompactString,
    /// Index of the watched metric in its kind's metric table.
    pub metric: usize,
    pub source: ValueSource,
    pub above: Levels,
    pub below: Levels,
    pub hysteresis: f64,
    pub for_ms: i64,
    pub schedule: Vec<Span>,
    pub message: Option<String>,
}

impl Rule {
    /// Whether the rule reads a window of the metric's readings (and so needs its series).
    pub fn is_windowed(&self) -> bool {
        matches!(self.source, ValueSource::Window { .. })
    }

    fn compile(spec: &RuleSpec, kind: &Kind) -> Option<Rule> {
        let metric = kind.metric_index(&spec.metric)?;
        let source = match (spec.window, spec.aggregate, spec.rate_per) {
            (Some(w), Some(aggregate), _) => ValueSource::Window {
                ms: w.as_millis(),
                aggregate,
            },
            (_, _, Some(per)) => ValueSource::Rate {
                per_ms: per.as_millis(),
            },
            _ => ValueSource::Instant,
        };
        let schedule = compile_schedule(&spec.schedule);
        Some(Rule {
            name: spec.name.as_str().into(),
            metric,
            source,
            above: spec.above.unwrap_or_default(),
            below: spec.below.unwrap_or_default(),
            hysteresis: spec.hysteresis,
            for_ms: spec.for_duration.map_or(0, |d| d.as_millis()),
            schedule,
            message: spec.message.clone(),
        })
    }

    fn apply(&mut self, o: &RuleOverride, disabled: &mut bool) {
        if let Some(a) = o.above {
            self.above = a;
        }
        if let Some(b) = o.below {
            self.below = b;
        }
        if let Some(h) = o.hysteresis {
            self.hysteresis = h;
        }
        if let Some(f) = o.for_duration {
            self.for_ms = f.as_millis();
        }
        if let Some(d) = o.disabled {
            *disabled = d;
        }
        if let Some(s) = &o.schedule {
            self.schedule = compile_schedule(s);
        }
    }

    /// A rule with no thresholds anywhere (a station-specific template) never fires.
    pub fn has_thresholds(&self) -> bool {
        !self.above.is_empty()
            || !self.below.is_empty()
            || self
                .schedule
                .iter()
                .any(|s| !s.above.is_empty() || !s.below.is_empty())
    }
}

fn compile_schedule(spans: &[spec::ScheduleSpec]) -> Vec<Span> {
    spans
        .iter()
        .filter_map(|s| {
            Some(Span {
                from_min: parse_hhmm(&s.from)?,
                to_min: parse_hhmm(&s.to)?,
                above: s.above.unwrap_or_default(),
                below: s.below.unwrap_or_default(),
            })
        })
        .collect()
}

/// A sensor kind, compiled.
#[derive(Debug)]
pub struct Kind {
    pub name: CompactString,
    pub spec: KindSpec,
    pub metrics: Vec<Metric>,
    index: FxHashMap<CompactString, usize>,
}

impl Kind {
    pub fn metric_index(&self, name: &str) -> Option<usize> {
        // Kinds have a handful of metrics: a linear scan beats hashing.
        if self.metrics.len() <= 12 {
            self.metrics.iter().position(|m| m.name == name)
        } else {
            self.index.get(name).copied()
        }
    }
}

/// Everything the pipeline needs to know about one sensor.
#[derive(Debug)]
pub struct SensorProfile {
    pub kind: Arc<Kind>,
    /// The kind's metrics with this sensor's range overrides. Shared (`Arc`) between the
    /// sensors that have no overrides of their own: an unlisted sensor that brought tags gets
    /// a profile of its own for the tags, and copying the tables into each such profile cost
    /// about 2 KiB per sensor (BENCHMARKS.md, "Memory at 100,000 sensors").
    pub metrics: Arc<[Metric]>,
    /// The active rules, with profile and sensor overrides applied.
    pub rules: Arc<[Rule]>,
    /// Rule indices by metric index.
    pub rules_by_metric: Arc<[Vec<usize>]>,
    /// By metric index: where the metric's samples are among a sensor's series, if a window
    /// rule reads it. Series follow metric order. Here, once per profile, rather than in
    /// each sensor's state for each metric.
    pub series_by_metric: Arc<[Option<u16>]>,
    pub offline_after_ms: Option<i64>,
    pub tags: Option<Tags>,
}

/// The compiled catalog and the configured sensors.
#[derive(Debug)]
pub struct Catalog {
    kinds: FxHashMap<CompactString, Arc<Kind>>,
    /// Profiles of kinds for sensors with no overrides, shared.
    defaults: FxHashMap<CompactString, Arc<SensorProfile>>,
    sensors: FxHashMap<CompactString, Arc<SensorProfile>>,
    pub timezone: Tz,
}

impl Catalog {
    /// Compiles a validated config. Validation has already checked every reference, so a
    /// dangling one here is skipped rather than reported.
    pub fn from_config(config: &Config) -> Catalog {
        let mut kinds = FxHashMap::default();
        let mut defaults = FxHashMap::default();
        for (name, spec) in &config.catalog {
            let metrics: Vec<Metric> = spec
                .metrics
                .iter()
                .map(|(n, m)| Metric::from_spec(n, m))
                .collect();
            let index = metrics
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.clone(), i))
                .collect();
            let kind = Arc::new(Kind {
                name: name.as_str().into(),
                spec: spec.clone(),
                metrics,
                index,
            });
            let profile = build_profile(&kind, None, None);
            defaults.insert(kind.name.clone(), Arc::new(profile));
            kinds.insert(kind.name.clone(), kind);
        }
        let mut sensors = FxHashMap::default();
        for (id, sensor) in &config.sensors {
            if let Some(kind) = kinds.get(sensor.kind.as_str()) {
                let tags = tags_of(&sensor.tags);
                let profile = build_profile(kind, Some(sensor), tags);
                sensors.insert(CompactString::from(id.as_str()), Arc::new(profile));
            }
        }
        Catalog {
            kinds,
            defaults,
            sensors,
            timezone: Tz::from_str(&config.gateway.timezone).unwrap_or(chrono_tz::Asia::Shanghai),
        }
    }

    pub fn kind(&self, name: &str) -> Option<&Arc<Kind>> {
        self.kinds.get(name)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<Kind>> {
        self.kinds.values()
    }

    /// A configured sensor's profile.
    pub fn sensor(&self, id: &str) -> Option<&Arc<SensorProfile>> {
        self.sensors.get(id)
    }

    /// Configured sensors, by id.
    pub fn sensors(&self) -> impl Iterator<Item = (&CompactString, &Arc<SensorProfile>)> {
        self.sensors.iter()
    }

    /// The profile for a sensor the config does not list: its kind's defaults, with the tags
    /// the payload brought.
    pub fn unlisted(&self, kind: &str, tags: Option<Tags>) -> Option<Arc<SensorProfile>> {
        let default = self.defaults.get(kind)?;
        match tags {
            None => Some(default.clone()),
            Some(tags) => Some(Arc::new(SensorProfile {
                kind: default.kind.clone(),
                metrics: default.metrics.clone(),
                rules: default.rules.clone(),
                rules_by_metric: default.rules_by_metric.clone(),
                series_by_metric: default.series_by_metric.clone(),
                offline_after_ms: default.offline_after_ms,
                tags: Some(tags),
            })),
        }
    }
}

fn tags_of(map: &std::collections::BTreeMap<String, String>) -> Option<Tags> {
    if map.is_empty() {
        return None;
    }
    Some(
        map.iter()
            .map(|(k, v)| {
                (
                    CompactString::from(k.as_str()),
                    CompactString::from(v.as_str()),
                )
            })
            .collect(),
    )
}

/// Applies, in order of increasing specificity: the kind's rules, its kind-wide overrides,
/// the sensor's profile (or the kind's default profile), then the sensor's own overrides.
fn build_profile(
    kind: &Arc<Kind>,
    sensor: Option<&SensorSpec>,
    tags: Option<Tags>,
) -> SensorProfile {
    let spec = &kind.spec;
    let profile_name = sensor
        .and_then(|s| s.profile.as_ref())
        .or(spec.default_profile.as_ref());
    let profile = profile_name.and_then(|p| spec.profiles.get(p));
    let mut rules = Vec::new();
    for rule_spec in &spec.rules {
        let Some(mut rule) = Rule::compile(rule_spec, kind) else {
            continue;
        };
        let mut disabled = rule_spec.disabled;
        let layers = [
            spec.overrides.get(&rule_spec.name),
            profile.and_then(|p| p.rules.get(&rule_spec.name)),
            sensor.and_then(|s| s.rules.get(&rule_spec.name)),
        ];
        for o in layers.into_iter().flatten() {
            rule.apply(o, &mut disabled);
        }
        if !disabled && rule.has_thresholds() {
            rules.push(rule);
        }
    }
    let mut metrics = kind.metrics.clone();
    if let Some(s) = sensor {
        for m in &mut metrics {
            if let Some(o) = s.metrics.get(m.name.as_str()) {
                m.apply(o);
            }
        }
    }
    let mut rules_by_metric = vec![Vec::new(); metrics.len()];
    for (i, r) in rules.iter().enumerate() {
        rules_by_metric[r.metric].push(i);
    }
    // Config validation caps a kind's metrics at u16::MAX (`MAX_PER_KIND`), so every index fits.
    let mut next_series = 0u16;
    let series_by_metric: Vec<Option<u16>> = rules_by_metric
        .iter()
        .map(|of_metric| {
            let windowed = of_metric.iter().any(|&i| rules[i].is_windowed());
            windowed.then(|| {
                next_series += 1;
                next_series - 1
            })
        })
        .collect();
    let offline_after = sensor
        .and_then(|s| s.offline_after)
        .or(spec.offline_after)
        .map(|d| d.as_millis());
    SensorProfile {
        kind: kind.clone(),
        metrics: metrics.into(),
        rules: rules.into(),
        rules_by_metric: rules_by_metric.into(),
        series_by_metric: series_by_metric.into(),
        offline_after_ms: offline_after,
        tags,
    }
}

/// Which way a threshold was crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

/// The highest severity whose level the value reaches, with its threshold and direction.
/// `above` levels are reached at or above the threshold, `below` levels at or below it (so a
/// CMA "≥ 50 mm" signal and a GB "≤ 20 mg/L" limit both read naturally, erring towards an
/// alert at the exact limit). Levels at or under `current` (an active alert's severity) are
/// relaxed by the deadband so that an alert does not flap at its edge.
pub fn breached(
    value: f64,
    above: &Levels,
    below: &Levels,
    current: Option<Severity>,
    hysteresis: f64,
) -> Option<(Severity, f64, Direction)> {
    let mut best: Option<(Severity, f64, Direction)> = None;
    let held = |sev: Severity| current.is_some_and(|c| sev <= c);
    for (sev, t) in above.iter() {
        let t_eff = if held(sev) { t - hysteresis } else { t };
        if value >= t_eff && best.is_none_or(|(b, _, _)| sev > b) {
            best = Some((sev, t, Direction::Above));
        }
    }
    for (sev, t) in below.iter() {
        let t_eff = if held(sev) { t + hysteresis } else { t };
        if value <= t_eff && best.is_none_or(|(b, _, _)| sev > b) {
            best = Some((sev, t, Direction::Below));
        }
    }
    best
}
