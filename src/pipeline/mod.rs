//! The pipeline: validation, threshold rules and the alert lifecycle.
//!
//! Plain synchronous code with no I/O and no clock of its own: every call takes `now`, and
//! rules run on reading timestamps, so a replay of the same readings raises the same alerts.
//! It owns all per-sensor state (last values for spike and flat-line checks, rolling windows,
//! active alerts) and is driven by one task, so the hot path takes no locks.
//!
//! [`Pipeline::process`] turns a [`Batch`] into an [`Output`]: the accepted readings (with
//! their quality and resolved kind), the dead letters with their reasons, the alert events,
//! and the alerts whose stored state changed. The caller commits the output to the store and
//! only then acknowledges the input.

mod alerts;
mod validate;
pub mod window;

use std::sync::Arc;

use bytes::Bytes;
use compact_str::CompactString;
use rustc_hash::FxHashMap;

use crate::catalog::spec::Aggregate;
use crate::catalog::{Catalog, Rule, SensorProfile, ValueSource};
use crate::config::{Config, SuspectPolicy, UnknownPolicy};
use crate::id_map::{IdMap, Keyed};
use crate::limits::{LazyBucket, Rate};
use crate::model::{
    Alert, AlertState, Batch, DeadLetter, DeviceHealth, Reading, Tags, TimestampMs,
};

pub use alerts::{AckError, DEVICE_RULE, FAULT_RULE, OFFLINE_RULE, RESERVED_RULES};
use alerts::{ActiveAlert, AlertRef, SensorAlerts, Slot};
pub use validate::fmt_ts as fmt_time;
use validate::{MetricState, Verdict};
pub use validate::{MAX_RUN, MAX_RUN_SPAN_MS};
use window::{Candidates, Series, WindowAgg};

/// Validation and alert settings, resolved from config to plain numbers.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_future_skew_ms: i64,
    pub max_age_ms: i64,
    pub unknown_sensor: UnknownPolicy,
    pub unknown_metric: UnknownPolicy,
    pub suspect: SuspectPolicy,
    pub flatline_count: u32,
    pub flatline_ms: i64,
    pub fault_alerts: bool,
    /// Most sensors with state; a new one past it is rejected (`too_many_sensors`).
    pub max_sensors: usize,
    /// Longest id a new sensor may have, in bytes.
    pub max_sensor_id_len: usize,
    /// Each sensor's limit on readings that came over MQTT; `None`: no limit.
    pub sensor_rate: Option<Rate>,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let v = &c.validation;
        Settings {
            max_future_skew_ms: v.max_future_skew.as_millis(),
            max_age_ms: v.max_age.as_millis(),
            unknown_sensor: v.unknown_sensor,
            unknown_metric: v.unknown_metric,
            suspect: v.suspect,
            flatline_count: v.flatline_count,
            flatline_ms: v.flatline_duration.as_millis(),
            fault_alerts: c.alerts.sensor_fault_alerts,
            max_sensors: v.max_sensors,
            max_sensor_id_len: v.max_sensor_id_len,
            sensor_rate: Rate::new(v.sensor_rate, v.sensor_burst),
        }
    }
}

/// A sensor first seen in this output, for the store's sensor registry.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSensor {
    pub id: CompactString,
    pub kind: CompactString,
    pub tags: Option<Tags>,
    pub first_seen: TimestampMs,
}

/// Counts for the metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub received: u64,
    pub accepted: u64,
    pub suspect: u64,
    /// Of the accepted, how many were exact repeats of a reading already taken (redeliveries).
    pub replayed: u64,
    /// Rejections by reason (a handful of distinct reasons, so a small vector).
    pub rejected: Vec<(&'static str, u64)>,
}

impl Stats {
    fn reject(&mut self, reason: &'static str) {
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((reason, 1)),
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }
}

/// What one call into the pipeline produced; commit it as one unit.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub accepted: Vec<Reading>,
    pub dead_letters: Vec<DeadLetter>,
    pub events: Vec<crate::model::AlertEvent>,
    /// Alerts whose stored state changed (raised, updated, escalated, resolved, acked),
    /// shared with the pipeline's own state.
    pub alerts: Vec<Arc<Alert>>,
    pub new_sensors: Vec<NewSensor>,
    pub stats: Stats,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty()
            && self.dead_letters.is_empty()
            && self.events.is_empty()
            && self.alerts.is_empty()
            && self.new_sensors.is_empty()
    }
}

/// Whether a rule keeps a list of readings (in [`SensorState::aux`]): a max or min window's
/// candidates, or a rate rule's recent readings (thinned to a few hundred per span).
fn needs_aux(rule: &Rule) -> bool {
    match rule.source {
        ValueSource::Window { aggregate, .. } => {
            matches!(aggregate, Aggregate::Max | Aggregate::Min)
        }
        ValueSource::Rate { .. } => true,
        ValueSource::Instant => false,
    }
}

/// What one rule of one sensor keeps between readings, where it keeps anything: its alert and
/// `for` wait are in the sensor's [`SensorAlerts`], and an instant rule needs nothing else.
pub(super) struct RuleState<'a> {
    pub window: Option<&'a mut WindowAgg>,
    pub aux: Option<&'a mut Candidates>,
}

struct SensorState {
    /// Its id: the sensors' map finds a state by the id it holds ([`IdMap`]).
    id: CompactString,
    profile: Arc<SensorProfile>,
    /// When (gateway time) the last accepted reading arrived: the deadman's clock. Arrival,
    /// not reading time, so that a device with a slow clock or a logger uploading an hour of
    /// readings at once is not taken for silent.
    last_seen: TimestampMs,
    // Boxed slices, not Vecs: fixed once made, and a word each less per sensor.
    metrics: Box<[MetricState]>,
    /// One per windowed rule, those of each series together (from its
    /// [`Series::first_window`], in rule order): where its window starts in its metric's
    /// series, and its running aggregate.
    windows: Box<[WindowAgg]>,
    /// One per rule that [`needs_aux`], in rule order, made on first use; the list too, so
    /// that the many sensors with no such rule pay one word for it, not a slice's two.
    aux: Option<Box<AuxList>>,
    /// The samples of each metric that has windowed rules, shared by them.
    series: Box<[Series]>,
    /// Active alerts, including `offline` and `device_offline` (a polled device that stopped
    /// answering; while it is active the deadman stays quiet, since the cause is known).
    alerts: SensorAlerts,
    /// The sensor's MQTT rate limit, made on its first reading over MQTT.
    bucket: LazyBucket,
}

/// [`SensorState::aux`]'s list, behind one thin pointer.
struct AuxList(Box<[Candidates]>);

impl Keyed for SensorState {
    fn key(&self) -> &str {
        &self.id
    }
}

impl SensorState {
    fn new(id: CompactString, profile: Arc<SensorProfile>, now: TimestampMs) -> Self {
        let metrics: Box<[MetricState]> = (0..profile.metrics.len())
            .map(|_| MetricState::default())
            .collect();
        // A series per metric that a window rule reads (the profile's `series_by_metric`, in
        // metric order), each with its rules' windows together.
        let mut series: Vec<Series> = Vec::new();
        let mut windows = 0;
        for (m, at) in profile.series_by_metric.iter().enumerate() {
            if at.is_some() {
                // Config validation caps a kind's metrics and rules at u16::MAX
                // (`MAX_PER_KIND` in src/config/validate.rs).
                series.push(Series::new(windows as u16));
                let of_metric = profile.rules_by_metric.get(m);
                let of_metric = of_metric.map(|rules| rules.as_slice()).unwrap_or_default();
                windows += of_metric
                    .iter()
                    .filter(|&&i| profile.rules[i].is_windowed())
                    .count();
            }
        }
        SensorState {
            metrics,
            windows: (0..windows).map(|_| WindowAgg::default()).collect(),
            aux: None,
            series: series.into_boxed_slice(),
            id,
            profile,
            last_seen: now,
            alerts: SensorAlerts::default(),
            bucket: LazyBucket::default(),
        }
    }

    /// Whether this sensor has such a slot.
    fn has_slot(&self, slot: Slot) -> bool {
        match slot {
            Slot::Rule(i) => usize::from(i) < self.profile.rules.len(),
            Slot::Fault(i) => usize::from(i) < self.metrics.len(),
            Slot::Offline | Slot::Device => true,
        }
    }
}

/// Local time-of-day lookups, cached per quarter hour (zone offsets change on such bounds).
struct LocalTime {
    tz: chrono_tz::Tz,
    key: i64,
    offset_s: i64,
}

impl LocalTime {
    fn minute_of_day(&mut self, ts: TimestampMs) -> u32 {
        use chrono::{Offset, TimeZone};
        let key = ts.div_euclid(900_000);
        if key != self.key {
            if let Some(utc) = chrono::DateTime::from_timestamp_millis(ts) {
                self.offset_s = i64::from(
                    self.tz
                        .offset_from_utc_datetime(&utc.naive_utc())
                        .fix()
                        .local_minus_utc(),
                );
                self.key = key;
            }
        }
        ((ts.div_euclid(1000) + self.offset_s).rem_euclid(86_400) / 60) as u32
    }
}

/// The pipeline. See the module docs.
pub struct Pipeline {
    catalog: Arc<Catalog>,
    settings: Settings,
    sensors: IdMap<SensorState>,
    /// Where each active alert lives, for acks. Keyed by a `CompactString`: an id (16 hex
    /// digits) fits inline, so no allocation per active alert.
    alert_index: FxHashMap<CompactString, AlertRef>,
    /// Active alerts changed since the last output.
    dirty: Vec<AlertRef>,
    /// Makes alert ids unique across restarts (a replayed reading must not reopen an old,
    /// resolved alert under the same id): starts at the creation time, counts raises.
    raise_seq: u64,
    local: LocalTime,
    /// Profiles of unlisted sensors by kind and tags, so that the sensors whose payloads
    /// bring the same tags (a district, say) share one instead of each holding a copy
    /// (~100 bytes per sensor). At most [`SHARED_PROFILES`]; past it, a new combination gets
    /// a profile of its own, as every sensor did before.
    shared_profiles: FxHashMap<(CompactString, Tags), Arc<SensorProfile>>,
}

/// Most distinct (kind, tags) profiles kept for sharing: tags that differ for every sensor
/// (a street address) would otherwise fill the map with profiles nobody shares.
const SHARED_PROFILES: usize = 4096;

impl Pipeline {
    /// A pipeline knowing the configured sensors; their deadman clocks start at `now`.
    pub fn new(catalog: Arc<Catalog>, settings: Settings, now: TimestampMs) -> Pipeline {
        let mut sensors = IdMap::default();
        for (id, profile) in catalog.sensors() {
            sensors.insert(SensorState::new(id.clone(), profile.clone(), now));
        }
        let tz = catalog.timezone;
        Pipeline {
            catalog,
            settings,
            sensors,
            alert_index: FxHashMap::default(),
            dirty: Vec::new(),
            raise_seq: now.max(0) as u64,
            local: LocalTime {
                tz,
                key: i64::MIN,
                offset_s: 0,
            },
            shared_profiles: FxHashMap::default(),
        }
    }

    /// [`Catalog::unlisted`], shared with the earlier sensors of the same kind and tags.
    fn unlisted_profile(&mut self, kind: &str, tags: Option<Tags>) -> Option<Arc<SensorProfile>> {
        let Some(tags) = tags else {
            return self.catalog.unlisted(kind, None);
        };
        let key = (CompactString::from(kind), tags);
        if let Some(p) = self.shared_profiles.get(&key) {
            return Some(p.clone());
        }
        self.catalog.unlisted(kind, Some(key.1))
    }

    /// Offers the profile of `sensor`, just accepted as new, for sharing. Only a sensor that
    /// is kept adds to the map: a new id whose first reading is rejected (past
    /// `max_sensors`, say) must not leave its tags behind.
    fn share_profile(&mut self, sensor: &str) {
        if self.shared_profiles.len() >= SHARED_PROFILES {
            return;
        }
        let Some(profile) = self.sensors.get(sensor).map(|s| s.profile.clone()) else {
            return;
        };
        let Some(tags) = profile.tags.clone() else {
            return;
        };
        let key = (CompactString::from(profile.kind.name.as_str()), tags);
        self.shared_profiles.entry(key).or_insert(profile);
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn sensor_count(&self) -> usize {
        self.sensors.len()
    }

    /// The active alerts, in no particular order.
    pub fn active_alerts(&self) -> Vec<Alert> {
        let mut out = Vec::new();
        for s in self.sensors.iter() {
            for a in s.alerts.iter() {
                out.push((*a.alert).clone());
            }
        }
        out
    }

    /// Registers a sensor the store remembers from an earlier run (one the config does not
    /// list but that was accepted before), so that its deadman and alerts carry on.
    pub fn restore_sensor(&mut self, id: &str, kind: &str, tags: Option<Tags>, now: TimestampMs) {
        // Under `unknown_sensor = "reject"` a sensor the config does not list is not welcome,
        // whatever an earlier run with another policy accepted; past a lowered `max_sensors`,
        // the ones restored first keep their place and the rest are rejected when they report.
        if self.sensors.contains_key(id)
            || self.settings.unknown_sensor == UnknownPolicy::Reject
            || self.sensors.len() >= self.settings.max_sensors
        {
            return;
        }
        if let Some(profile) = self.unlisted_profile(kind, tags) {
            self.sensors
                .insert(SensorState::new(id.into(), profile, now));
        }
    }

    /// Puts the active alerts of an earlier run back in place, so that a breach that goes on
    /// updates them instead of raising new ones. An alert whose rule or sensor no longer
    /// exists is resolved, and that is in the output.
    pub fn restore_alerts(&mut self, alerts: Vec<Alert>, now: TimestampMs) -> Output {
        let mut out = Output::default();
        for alert in alerts {
            if alert.state != AlertState::Active {
                continue;
            }
            if !self.sensors.contains_key(alert.sensor.as_str()) {
                if let Some(profile) = self.catalog.unlisted(&alert.kind, None) {
                    self.sensors
                        .insert(SensorState::new(alert.sensor.clone(), profile, now));
                }
            }
            let placed = self
                .sensors
                .get_mut(alert.sensor.as_str())
                .and_then(|state| {
                    let slot = alerts::slot_for(&state.profile, &alert)?;
                    let direction = alerts::direction_of(&state.profile, slot, &alert);
                    if !state.has_slot(slot) || state.alerts.get(slot).is_some() {
                        return None;
                    }
                    Some((slot, direction, &mut state.alerts))
                });
            match placed {
                Some((slot, direction, place)) => {
                    self.alert_index.insert(
                        alert.id.as_str().into(),
                        AlertRef {
                            sensor: alert.sensor.clone(),
                            slot,
                        },
                    );
                    place.put(slot, ActiveAlert::restored(alert, direction));
                }
                None => alerts::resolve_orphan(alert, now, &mut out),
            }
        }
        out
    }

    /// Validates a batch, runs the rules, and says what to commit.
    pub fn process(&mut self, batch: Batch, now: TimestampMs) -> Output {
        let Batch {
            source,
            received_at,
            readings,
            payloads,
            dead_letters,
            devices,
        } = batch;
        let mut out = Output {
            accepted: Vec::with_capacity(readings.len()),
            ..Output::default()
        };
        for d in &dead_letters {
            out.stats.reject(d.reason);
        }
        out.dead_letters = dead_letters;
        // A payload's raw bytes go with its first rejection only: a megabyte of line protocol
        // whose every line is rejected must not be stored once per line.
        let mut raw_kept = vec![false; payloads.len()];
        // The gateway cannot tell MQTT publishers apart, so over MQTT each sensor is limited;
        // HTTP is limited per client address before it gets here, and Modbus is polled at the
        // gateway's own pace.
        let rate = self
            .settings
            .sensor_rate
            .filter(|_| source.starts_with("mqtt:"));
        for reading in readings {
            out.stats.received += 1;
            match self.check(reading, now, rate.as_ref(), &mut out) {
                Ok(r) => {
                    out.stats.accepted += 1;
                    if r.quality == crate::model::Quality::Suspect {
                        out.stats.suspect += 1;
                    }
                    out.accepted.push(r);
                }
                Err((r, reason, detail)) => {
                    out.stats.reject(reason);
                    out.dead_letters.push(DeadLetter {
                        received_at,
                        source: source.clone(),
                        reason,
                        detail,
                        raw: match raw_kept.get_mut(r.payload as usize) {
                            Some(kept) if !*kept => {
                                *kept = true;
                                payloads[r.payload as usize].clone()
                            }
                            _ => Bytes::new(),
                        },
                        sensor: Some(r.sensor),
                        metric: Some(r.metric),
                        value: Some(r.value),
                        ts: Some(r.ts),
                    });
                }
            }
        }
        for health in devices {
            self.device_health(health, &mut out);
        }
        self.flush_dirty(&mut out);
        out
    }

    /// Raises `device_offline` for a device its source gave up on, and resolves it when the
    /// device answers again. A device the pipeline does not know (its kind left the catalog)
    /// is ignored: its readings are dead letters anyway.
    fn device_health(&mut self, h: DeviceHealth, out: &mut Output) {
        let Some(state) = self.sensors.get_mut(h.sensor.as_str()) else {
            return;
        };
        let profile = state.profile.clone();
        let detail = h.down.as_deref().unwrap_or("");
        let info = alerts::Info::device(&h.sensor, &profile, h.failures, detail);
        let target = if h.down.is_some() {
            info.target()
        } else {
            None
        };
        let mut ctx = alerts::Ctx {
            index: &mut self.alert_index,
            dirty: &mut self.dirty,
            seq: &mut self.raise_seq,
            out,
        };
        state
            .alerts
            .drive(Slot::Device, target, h.at, &info, &mut ctx);
    }

    /// The deadman: raises `offline` for every sensor silent for longer than its
    /// `offline_after`, judged against `now`.
    pub fn tick(&mut self, now: TimestampMs) -> Output {
        let mut out = Output::default();
        for state in self.sensors.iter_mut() {
            let Some(after) = state.profile.offline_after_ms else {
                continue;
            };
            let silent = now - state.last_seen;
            let quiet = state.alerts.get(Slot::Offline).is_none()
                && state.alerts.get(Slot::Device).is_none();
            if silent >= after && quiet {
                let info = alerts::Info::offline(&state.id, &state.profile, silent, after);
                let mut ctx = alerts::Ctx {
                    index: &mut self.alert_index,
                    dirty: &mut self.dirty,
                    seq: &mut self.raise_seq,
                    out: &mut out,
                };
                state
                    .alerts
                    .drive(Slot::Offline, info.target(), now, &info, &mut ctx);
            }
        }
        self.flush_dirty(&mut out);
        out
    }

    /// An operator acknowledges an active alert.
    pub fn ack(
        &mut self,
        id: &str,
        by: &str,
        comment: &str,
        now: TimestampMs,
    ) -> Result<Output, AckError> {
        let r = self
            .alert_index
            .get(id)
            .cloned()
            .ok_or(AckError::NotActive)?;
        let mut out = Output::default();
        let slot = self
            .sensors
            .get_mut(r.sensor.as_str())
            .and_then(|s| s.alerts.get_mut(r.slot))
            .ok_or(AckError::NotActive)?;
        alerts::acknowledge(slot, by, comment, now, &mut out);
        Ok(out)
    }

    fn flush_dirty(&mut self, out: &mut Output) {
        for r in self.dirty.drain(..) {
            let active = self
                .sensors
                .get_mut(r.sensor.as_str())
                .and_then(|s| s.alerts.get_mut(r.slot));
            if let Some(a) = active {
                if a.dirty {
                    a.dirty = false;
                    out.alerts.push(a.alert.clone());
                }
            }
        }
    }

    /// Validates one reading and, when it is accepted, runs its rules. A sensor the config
    /// does not list is registered only if its first reading passes, so that rejected input
    /// leaves no state behind.
    #[allow(clippy::result_large_err)]
    fn check(
        &mut self,
        mut r: Reading,
        now: TimestampMs,
        rate: Option<&Rate>,
        out: &mut Output,
    ) -> Result<Reading, (Reading, &'static str, String)> {
        let fresh = !self.sensors.contains_key(r.sensor.as_str());
        if fresh {
            if let Err((reason, detail)) = self.register(&r, now, out) {
                if reason == "sensor_id_too_long" {
                    // The dead letter keeps the id's start; the detail says how long it was.
                    r.sensor = CompactString::from(crate::text::prefix_at_char(
                        &r.sensor,
                        self.settings.max_sensor_id_len,
                    ));
                }
                return Err((r, reason, detail));
            }
        }
        let result = self.check_known(r, now, rate, out);
        if fresh {
            match &result {
                Ok(r) => self.share_profile(r.sensor.as_str()),
                Err((r, _, _)) => {
                    // It was added last, by `register` above.
                    self.sensors.remove_last(r.sensor.as_str());
                    out.new_sensors.pop();
                }
            }
        }
        result
    }

    #[allow(clippy::result_large_err)]
    fn check_known(
        &mut self,
        mut r: Reading,
        now: TimestampMs,
        rate: Option<&Rate>,
        out: &mut Output,
    ) -> Result<Reading, (Reading, &'static str, String)> {
        let Some(state) = self.sensors.get_mut(r.sensor.as_str()) else {
            return Err((r, "unknown_sensor", "sensor could not be registered".into()));
        };
        // The sensor's MQTT rate limit, spent before anything else is checked.
        if let Some(rate) = rate {
            let bucket = state.bucket.get_or_full(rate, now);
            if let Err(wait_ms) = bucket.take(rate, now) {
                let detail = format!(
                    "sensor {} sends more than validation.sensor_rate ({} readings/s, burst {}); \
                     the next reading is taken in {wait_ms} ms",
                    r.sensor, rate.per_second, rate.burst
                );
                return Err((r, "rate_limited", detail));
            }
        }
        let profile = state.profile.clone();
        if !r.kind.is_empty() && r.kind != profile.kind.name {
            let detail = format!(
                "sensor {} is a {} sensor, but the payload says {}",
                r.sensor, profile.kind.name, r.kind
            );
            return Err((r, "kind_mismatch", detail));
        }
        r.kind = profile.kind.name.clone();
        // The sensor's registered tags (config, or its first payload) go with every accepted
        // reading: the remote stores key their series by them, so they must not change with
        // each payload's route.
        r.tags = profile.tags.clone();

        let Some(m) = profile.kind.metric_index(&r.metric) else {
            return match self.settings.unknown_metric {
                UnknownPolicy::Reject => {
                    let known: Vec<&str> =
                        profile.metrics.iter().map(|m| m.name.as_str()).collect();
                    let detail = format!(
                        "{} has no metric {:?} (known: {})",
                        profile.kind.name,
                        r.metric,
                        known.join(", ")
                    );
                    Err((r, "unknown_metric", detail))
                }
                UnknownPolicy::Accept if !r.value.is_finite() => {
                    let detail = format!("{} = {} is not a finite number", r.metric, r.value);
                    Err((r, "not_finite", detail))
                }
                UnknownPolicy::Accept => {
                    state.last_seen = now;
                    Ok(r)
                }
            };
        };
        let metric = &profile.metrics[m];
        let mut ctx = alerts::Ctx {
            index: &mut self.alert_index,
            dirty: &mut self.dirty,
            seq: &mut self.raise_seq,
            out,
        };
        let faults = self.settings.fault_alerts;
        match validate::check(&r, metric, &mut state.metrics[m], &self.settings, now) {
            Verdict::Reject {
                reason,
                detail,
                fault,
            } => {
                if let Some(limit) = fault.filter(|_| faults) {
                    let slots = &mut state.alerts;
                    alerts::fault(slots, m, &r, &profile, Some((&detail, limit)), &mut ctx);
                }
                return Err((r, reason, detail));
            }
            Verdict::OutOfOrder => {
                state.last_seen = now;
                return Ok(r);
            }
            Verdict::Replay => {
                ctx.out.stats.replayed += 1;
                state.last_seen = now;
                return Ok(r);
            }
            Verdict::Suspect {
                reason,
                detail,
                threshold,
            } => {
                if self.settings.suspect == SuspectPolicy::Reject {
                    return Err((r, reason, detail));
                }
                if faults {
                    let slots = &mut state.alerts;
                    alerts::fault(slots, m, &r, &profile, Some((&detail, threshold)), &mut ctx);
                }
                r.quality = crate::model::Quality::Suspect;
            }
            Verdict::Good => {
                if state.alerts.get(Slot::Fault(m as u16)).is_some() {
                    alerts::fault(&mut state.alerts, m, &r, &profile, None, &mut ctx);
                }
            }
        }
        state.last_seen = now;
        if state.alerts.get(Slot::Offline).is_some() {
            // The deadman runs on arrival time, so its alert clears at arrival time too.
            let info = alerts::Info::offline(&r.sensor, &profile, 0, 0);
            state
                .alerts
                .drive(Slot::Offline, None, now, &info, &mut ctx);
        }
        let evaluate = r.quality == crate::model::Quality::Good
            || self.settings.suspect == SuspectPolicy::StoreAndEvaluate;
        if evaluate {
            run_rules(state, &profile, m, &r, &mut self.local, &mut ctx);
        }
        Ok(r)
    }

    /// Runs only the threshold rules on readings that have already been through
    /// [`Pipeline::process`] (as in [`Output::accepted`]: kind resolved, quality set), and
    /// nothing else: no validation, no registration, no deadman. It exists so that benchmarks
    /// and profiles can take the cost of the rules apart from validation; the gateway itself
    /// always goes through `process`. Readings of unknown sensors or metrics are skipped.
    #[doc(hidden)]
    pub fn evaluate_rules_only(&mut self, readings: &[Reading]) -> Output {
        let mut out = Output::default();
        let evaluate_suspect = self.settings.suspect == SuspectPolicy::StoreAndEvaluate;
        for r in readings {
            let Some(state) = self.sensors.get_mut(r.sensor.as_str()) else {
                continue;
            };
            let profile = state.profile.clone();
            let Some(m) = profile.kind.metric_index(&r.metric) else {
                continue;
            };
            if r.quality != crate::model::Quality::Good && !evaluate_suspect {
                continue;
            }
            let mut ctx = alerts::Ctx {
                index: &mut self.alert_index,
                dirty: &mut self.dirty,
                seq: &mut self.raise_seq,
                out: &mut out,
            };
            run_rules(state, &profile, m, r, &mut self.local, &mut ctx);
        }
        self.flush_dirty(&mut out);
        out
    }

    /// Registers a sensor the config does not list, if the policy and the payload allow.
    fn register(
        &mut self,
        r: &Reading,
        now: TimestampMs,
        out: &mut Output,
    ) -> Result<(), (&'static str, String)> {
        if self.settings.unknown_sensor == UnknownPolicy::Reject {
            return Err((
                "unknown_sensor",
                format!(
                    "sensor {} is not configured and validation.unknown_sensor = \"reject\"",
                    r.sensor
                ),
            ));
        }
        if r.sensor.len() > self.settings.max_sensor_id_len {
            return Err((
                "sensor_id_too_long",
                format!(
                    "a sensor id of {} bytes is longer than validation.max_sensor_id_len ({})",
                    r.sensor.len(),
                    self.settings.max_sensor_id_len
                ),
            ));
        }
        if r.kind.is_empty() {
            return Err((
                "unknown_sensor",
                format!(
                    "sensor {} is not configured and the payload names no kind",
                    r.sensor
                ),
            ));
        }
        let Some(profile) = self.unlisted_profile(&r.kind, r.tags.clone()) else {
            let mut kinds: Vec<&str> = self.catalog.kinds().map(|k| k.name.as_str()).collect();
            kinds.sort_unstable();
            return Err((
                "unknown_kind",
                format!(
                    "unknown sensor kind {:?} (known kinds: {})",
                    r.kind,
                    kinds.join(", ")
                ),
            ));
        };
        // Checked last, so that a reading that would be rejected anyway says its own reason.
        if self.sensors.len() >= self.settings.max_sensors {
            return Err((
                "too_many_sensors",
                format!(
                    "sensor {} is new, and the gateway already keeps state for {} sensors \
                     (validation.max_sensors)",
                    r.sensor,
                    self.sensors.len()
                ),
            ));
        }
        out.new_sensors.push(NewSensor {
            id: r.sensor.clone(),
            kind: profile.kind.name.clone(),
            tags: profile.tags.clone(),
            first_seen: r.ts,
        });
        self.sensors
            .insert(SensorState::new(r.sensor.clone(), profile, now.min(r.ts)));
        Ok(())
    }
}

/// Evaluates the rules that watch metric `m` of a sensor, for one accepted reading.
fn run_rules(
    state: &mut SensorState,
    profile: &SensorProfile,
    m: usize,
    r: &Reading,
    local: &mut LocalTime,
    ctx: &mut alerts::Ctx,
) {
    let at = profile.series_by_metric.get(m).copied().flatten();
    let mut series = at.and_then(|i| state.series.get_mut(usize::from(i)));
    if let Some(s) = series.as_deref_mut() {
        s.push(r.ts, r.value);
    }
    let mut keep_ms = 0;
    // The metric's windowed rules have their windows together, from the series' first.
    let mut next_window = series.as_deref().map_or(0, Series::first_window);
    for &i in &profile.rules_by_metric[m] {
        let rule = &profile.rules[i];
        let mut window = None;
        if let ValueSource::Window { ms, .. } = rule.source {
            keep_ms = keep_ms.max(ms);
            window = state.windows.get_mut(next_window);
            next_window += 1;
        }
        // Rare (rate rules, max and min windows), so counted here rather than kept.
        let aux = needs_aux(rule)
            .then(|| {
                let list = state.aux.get_or_insert_with(|| {
                    let n = profile.rules.iter().filter(|r| needs_aux(r)).count();
                    Box::new(AuxList((0..n).map(|_| None).collect()))
                });
                let before = profile.rules.get(..i).unwrap_or_default();
                list.0
                    .get_mut(before.iter().filter(|r| needs_aux(r)).count())
            })
            .flatten();
        let rs = RuleState { window, aux };
        let slots = &mut state.alerts;
        alerts::evaluate_rule(i, rs, slots, series.as_deref(), r, profile, local, ctx);
    }
    // Only now: every windowed rule of the metric has passed what falls out.
    if let Some(s) = series {
        s.trim(r.ts, keep_ms);
    }
}

#[cfg(test)]
mod tests;
