//! The alert lifecycle: one active alert per sensor and rule, raised, escalated or
//! de-escalated, updated by repeated breaches, resolved, acknowledged. Every transition is an
//! [`AlertEvent`]; plain updates only change the stored state.

use std::sync::Arc;

use compact_str::CompactString;
use rustc_hash::FxHashMap;

use crate::catalog::spec::Aggregate;
use crate::catalog::{breached, Direction, Metric, Rule, SensorProfile, ValueSource};
use crate::model::{Ack, Alert, AlertEvent, AlertEventKind, AlertState, Reading, Severity};

use super::validate::round3;
use super::window::Series;
use super::{LocalTime, Output, RuleState};

/// The rule name of deadman alerts.
pub const OFFLINE_RULE: &str = "offline";
/// The rule name of sensor-fault alerts (suspect readings, counters going backwards).
pub const FAULT_RULE: &str = "sensor_fault";
/// The rule name of alerts for a polled device that stopped answering (Modbus).
pub const DEVICE_RULE: &str = "device_offline";
/// Rule names the gateway's own alerts use; a catalog rule may not take them.
pub const RESERVED_RULES: [&str; 3] = [OFFLINE_RULE, FAULT_RULE, DEVICE_RULE];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    #[error("no active alert with that id")]
    NotActive,
}

/// Where an active alert lives in a sensor's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Rule(u16),
    Fault(u16),
    Offline,
    Device,
}

#[derive(Clone, Debug)]
pub(super) struct AlertRef {
    pub sensor: CompactString,
    pub slot: Slot,
}

pub(super) struct ActiveAlert {
    /// Shared with the outputs that carried it to the store thread, the alert hub and the
    /// board: one copy of each active alert for all of them. An update copies it first
    /// (`Arc::make_mut`) only while someone else still holds the old state.
    pub alert: Arc<Alert>,
    /// Changed since it was last put in an output.
    pub dirty: bool,
    /// Which way the value breached, for the peak.
    direction: Direction,
}

impl ActiveAlert {
    pub fn restored(alert: Alert, direction: Direction) -> ActiveAlert {
        ActiveAlert {
            alert: Arc::new(alert),
            dirty: false,
            direction,
        }
    }
}

/// One sensor's alert state: its active alerts (rule, fault, offline, device) and the raises
/// waiting for their rule's `for`. Most sensors have none of these, so it is one word until
/// there is something to keep: slots inline in every rule and metric cost about 40 bytes per
/// rule and metric of every sensor (BENCHMARKS.md, "Memory at 100,000 sensors").
#[derive(Default)]
pub(super) struct SensorAlerts(Option<Box<Slots>>);

#[derive(Default)]
struct Slots {
    active: Vec<(Slot, ActiveAlert)>,
    /// Rule index, and since when (reading time) its raise or escalation has waited.
    pending: Vec<(u16, i64)>,
}

impl SensorAlerts {
    pub fn get(&self, slot: Slot) -> Option<&ActiveAlert> {
        let slots = self.0.as_deref()?;
        slots
            .active
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, a)| a)
    }

    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut ActiveAlert> {
        let slots = self.0.as_deref_mut()?;
        slots
            .active
            .iter_mut()
            .find(|(s, _)| *s == slot)
            .map(|(_, a)| a)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ActiveAlert> {
        self.0.iter().flat_map(|s| s.active.iter().map(|(_, a)| a))
    }

    /// Puts an alert in an empty slot (a restored one).
    pub fn put(&mut self, slot: Slot, alert: ActiveAlert) {
        let slots = self.0.get_or_insert_with(Default::default);
        slots.active.retain(|(s, _)| *s != slot);
        slots.active.push((slot, alert));
    }

    /// [`drive`]s one slot.
    pub fn drive(
        &mut self,
        slot: Slot,
        target: Option<(Severity, f64, Direction)>,
        ts: i64,
        info: &Info,
        ctx: &mut Ctx,
    ) {
        let Some(slots) = self.0.as_deref_mut() else {
            if target.is_some() {
                let mut place = None;
                drive(&mut place, slot, target, ts, info, ctx);
                if let Some(a) = place {
                    self.put(slot, a);
                }
            }
            return;
        };
        let at = slots.active.iter().position(|(s, _)| *s == slot);
        let mut place = at.map(|i| slots.active.swap_remove(i).1);
        drive(&mut place, slot, target, ts, info, ctx);
        match place {
            Some(a) => slots.active.push((slot, a)),
            None => self.tidy(),
        }
    }

    /// Since when rule `rule`'s raise has waited, from `ts` if it was not waiting.
    pub fn pending_since(&mut self, rule: u16, ts: i64) -> i64 {
        let slots = self.0.get_or_insert_with(Default::default);
        match slots.pending.iter().find(|(r, _)| *r == rule) {
            Some(&(_, since)) => since,
            None => {
                slots.pending.push((rule, ts));
                ts
            }
        }
    }

    pub fn clear_pending(&mut self, rule: u16) {
        if let Some(slots) = self.0.as_deref_mut() {
            if let Some(i) = slots.pending.iter().position(|(r, _)| *r == rule) {
                slots.pending.swap_remove(i);
                self.tidy();
            }
        }
    }

    /// Lets the box go once nothing is left in it.
    fn tidy(&mut self) {
        if self
            .0
            .as_deref()
            .is_some_and(|s| s.active.is_empty() && s.pending.is_empty())
        {
            self.0 = None;
        }
    }
}

/// The mutable surroundings of a transition.
pub(super) struct Ctx<'a> {
    pub index: &'a mut FxHashMap<CompactString, AlertRef>,
    pub dirty: &'a mut Vec<AlertRef>,
    pub seq: &'a mut u64,
    pub out: &'a mut Output,
}

/// What an alert is about, and how to word it.
pub(super) struct Info<'a> {
    sensor: &'a CompactString,
    kind: &'a CompactString,
    rule: &'a str,
    metric: &'a str,
    unit: &'a str,
    value: f64,
    target: Option<(Severity, f64, Direction)>,
    message: Message<'a>,
}

enum Message<'a> {
    Rule { rule: &'a Rule },
    Fault { detail: &'a str },
    Offline { silent_ms: i64, after_ms: i64 },
    Device { failures: u32, detail: &'a str },
}

impl<'a> Info<'a> {
    pub fn fault(
        r: &'a Reading,
        profile: &'a SensorProfile,
        metric: &'a Metric,
        detail: &'a str,
        threshold: f64,
    ) -> Info<'a> {
        Info {
            sensor: &r.sensor,
            kind: &profile.kind.name,
            rule: FAULT_RULE,
            metric: &metric.name,
            unit: &metric.unit,
            value: r.value,
            target: Some((Severity::Info, threshold, Direction::Above)),
            message: Message::Fault { detail },
        }
    }

    pub fn offline(
        sensor: &'a CompactString,
        profile: &'a SensorProfile,
        silent_ms: i64,
        after_ms: i64,
    ) -> Info<'a> {
        Info {
            sensor,
            kind: &profile.kind.name,
            rule: OFFLINE_RULE,
            metric: "",
            unit: "s",
            value: (silent_ms / 1000) as f64,
            target: Some((
                Severity::Warning,
                (after_ms / 1000) as f64,
                Direction::Above,
            )),
            message: Message::Offline {
                silent_ms,
                after_ms,
            },
        }
    }

    /// A polled device that failed `failures` polls in a row (`down`), or answers again.
    pub fn device(
        sensor: &'a CompactString,
        profile: &'a SensorProfile,
        failures: u32,
        detail: &'a str,
    ) -> Info<'a> {
        Info {
            sensor,
            kind: &profile.kind.name,
            rule: DEVICE_RULE,
            metric: "",
            unit: "",
            value: f64::from(failures),
            target: Some((Severity::Warning, f64::from(failures), Direction::Above)),
            message: Message::Device { failures, detail },
        }
    }

    pub fn target(&self) -> Option<(Severity, f64, Direction)> {
        self.target
    }

    fn render(&self, sev: Severity, threshold: f64, dir: Direction) -> String {
        let sensor = self.sensor;
        match &self.message {
            Message::Fault { detail } => {
                format!("{sensor}: suspect {} readings: {detail}", self.metric)
            }
            Message::Offline {
                silent_ms,
                after_ms,
            } => format!(
                "{sensor}: no reading for {} (offline after {})",
                humantime::format_duration(std::time::Duration::from_secs(
                    (*silent_ms / 1000).max(0) as u64
                )),
                humantime::format_duration(std::time::Duration::from_secs(
                    (*after_ms / 1000).max(0) as u64
                )),
            ),
            Message::Device { failures, detail } => {
                format!(
                    "{sensor}: device not answering ({failures} polls failed in a row): {detail}"
                )
            }
            Message::Rule { rule } => {
                let value = round3(self.value);
                let threshold = round3(threshold);
                if let Some(t) = &rule.message {
                    return t
                        .replace("{value}", &value.to_string())
                        .replace("{threshold}", &threshold.to_string())
                        .replace("{metric}", self.metric)
                        .replace("{sensor}", sensor)
                        .replace("{unit}", self.unit)
                        .replace("{severity}", sev.as_str())
                        .replace("{rule}", self.rule);
                }
                let what = match rule.source {
                    ValueSource::Instant => self.metric.to_string(),
                    ValueSource::Window { ms, aggregate } => format!(
                        "{} {} {}",
                        self.metric,
                        humantime::format_duration(std::time::Duration::from_millis(
                            ms.max(0) as u64
                        )),
                        aggregate.as_str()
                    ),
                    ValueSource::Rate { per_ms } => format!(
                        "{} rate per {}",
                        self.metric,
                        humantime::format_duration(std::time::Duration::from_millis(
                            per_ms.max(0) as u64
                        ))
                    ),
                };
                let cmp = match dir {
                    Direction::Above => "≥",
                    Direction::Below => "≤",
                };
                let unit = if self.unit.is_empty() {
                    String::new()
                } else {
                    format!(" {}", self.unit)
                };
                format!("{sensor}: {what} {value}{unit} {cmp} {sev} level {threshold}{unit}")
            }
        }
    }
}

/// An id from what the alert is, when it started and a sequence number that is unique to
/// this raise even across restarts (FNV-1a, 64 bits).
fn alert_id(sensor: &str, rule: &str, metric: &str, started: i64, seq: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(sensor.as_bytes());
    eat(&[0xff]);
    eat(rule.as_bytes());
    eat(&[0xff]);
    eat(metric.as_bytes());
    eat(&[0xff]);
    eat(&started.to_le_bytes());
    eat(&seq.to_le_bytes());
    format!("{h:016x}")
}

fn mark_dirty(a: &mut ActiveAlert, r: AlertRef, ctx: &mut Ctx) {
    if !a.dirty {
        a.dirty = true;
        ctx.dirty.push(r);
    }
}

/// Moves an alert slot to `target`: raise, update, escalate, de-escalate or resolve.
fn drive(
    slot: &mut Option<ActiveAlert>,
    slot_id: Slot,
    target: Option<(Severity, f64, Direction)>,
    ts: i64,
    info: &Info,
    ctx: &mut Ctx,
) {
    let here = || AlertRef {
        sensor: info.sensor.clone(),
        slot: slot_id,
    };
    match (slot.as_mut(), target) {
        (None, None) => {}
        (None, Some((sev, threshold, dir))) => {
            let alert = Alert {
                id: {
                    *ctx.seq += 1;
                    alert_id(info.sensor, info.rule, info.metric, ts, *ctx.seq)
                },
                rule: info.rule.into(),
                sensor: info.sensor.clone(),
                kind: info.kind.clone(),
                metric: info.metric.into(),
                severity: sev,
                state: AlertState::Active,
                value: info.value,
                threshold,
                peak: info.value,
                count: 1,
                started_at: ts,
                updated_at: ts,
                resolved_at: None,
                ack: None,
                message: info.render(sev, threshold, dir),
            };
            ctx.out.events.push(AlertEvent {
                event: AlertEventKind::Raised,
                at: ts,
                alert: alert.clone(),
            });
            ctx.index.insert(alert.id.as_str().into(), here());
            let mut active = ActiveAlert {
                alert: Arc::new(alert),
                dirty: false,
                direction: dir,
            };
            mark_dirty(&mut active, here(), ctx);
            *slot = Some(active);
        }
        (Some(a), Some((sev, threshold, dir))) => {
            let v = info.value;
            let al = Arc::make_mut(&mut a.alert);
            al.value = v;
            al.count += 1;
            al.updated_at = al.updated_at.max(ts);
            al.threshold = threshold;
            if dir != a.direction {
                a.direction = dir;
                al.peak = v;
            } else if dir == Direction::Above {
                al.peak = al.peak.max(v);
            } else {
                al.peak = al.peak.min(v);
            }
            if sev != al.severity {
                let event = if sev > al.severity {
                    // Worse than what the operator acknowledged: it needs their eyes again.
                    al.ack = None;
                    AlertEventKind::Escalated
                } else {
                    AlertEventKind::Deescalated
                };
                al.severity = sev;
                al.message = info.render(sev, threshold, dir);
                ctx.out.events.push(AlertEvent {
                    event,
                    at: ts,
                    alert: al.clone(),
                });
            }
            mark_dirty(a, here(), ctx);
        }
        (Some(_), None) => {
            let Some(a) = slot.take() else { return };
            let mut alert = Arc::unwrap_or_clone(a.alert);
            alert.state = AlertState::Resolved;
            alert.resolved_at = Some(ts);
            alert.updated_at = alert.updated_at.max(ts);
            ctx.index.remove(alert.id.as_str());
            ctx.out.events.push(AlertEvent {
                event: AlertEventKind::Resolved,
                at: ts,
                alert: alert.clone(),
            });
            ctx.out.alerts.push(Arc::new(alert));
        }
    }
}

/// Raises or updates (`Some((detail, limit))`) or resolves (`None`) a series' sensor-fault alert.
pub(super) fn fault(
    alerts: &mut SensorAlerts,
    metric_index: usize,
    r: &Reading,
    profile: &SensorProfile,
    fault: Option<(&str, f64)>,
    ctx: &mut Ctx,
) {
    let metric = &profile.metrics[metric_index];
    let (detail, limit) = fault.unwrap_or(("", 0.0));
    let info = Info::fault(r, profile, metric, detail, limit);
    let target = fault.and(info.target());
    alerts.drive(Slot::Fault(metric_index as u16), target, r.ts, &info, ctx);
}

/// Runs one rule on an accepted reading of its metric.
/// `index` is the rule's place in `profile.rules`; `series` holds the samples of its metric
/// when it has windowed rules, already with `r` pushed.
#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate_rule(
    index: usize,
    rs: RuleState,
    alerts: &mut SensorAlerts,
    series: Option<&Series>,
    r: &Reading,
    profile: &SensorProfile,
    local: &mut LocalTime,
    ctx: &mut Ctx,
) {
    let rule = &profile.rules[index];
    let x = match rule.source {
        ValueSource::Instant => r.value,
        ValueSource::Window { ms, aggregate } => match series {
            // SensorState::new makes a series for every metric a windowed rule reads, and a
            // window for every such rule; candidates for those that are max or min.
            Some(s) => {
                let Some(window) = rs.window else { return };
                let mut none = None;
                window.push(s, ms, aggregate, rs.aux.unwrap_or(&mut none))
            }
            None => return,
        },
        ValueSource::Rate { per_ms } => {
            let Some(aux) = rs.aux else { return };
            let history = aux.get_or_insert_with(Default::default);
            match rate_over_span(history, r.ts, r.value, per_ms) {
                Some(rate) => rate,
                // not yet a long enough span to tell a rate from noise
                None => return,
            }
        }
    };
    let (above, below) = if rule.schedule.is_empty() {
        (&rule.above, &rule.below)
    } else {
        let minute = local.minute_of_day(r.ts);
        rule.schedule
            .iter()
            .find(|s| s.contains(minute))
            .map_or((&rule.above, &rule.below), |s| (&s.above, &s.below))
    };
    let slot = Slot::Rule(index as u16);
    let current = alerts
        .get(slot)
        .map(|a| (a.alert.severity, a.alert.threshold, a.direction));
    let mut target = breached(x, above, below, current.map(|c| c.0), rule.hysteresis);
    let rising = match (target, current) {
        (Some((t, ..)), Some((c, ..))) => t > c,
        (Some(_), None) => true,
        _ => false,
    };
    if rising && rule.for_ms > 0 {
        let since = alerts.pending_since(index as u16, r.ts);
        if r.ts - since < rule.for_ms {
            target = current;
        } else {
            alerts.clear_pending(index as u16);
        }
    } else if !rising {
        alerts.clear_pending(index as u16);
    }
    if let ValueSource::Window { ms, aggregate } = rule.source {
        // A mean or a minimum of a few readings says little about the whole window (HJ 633
        // wants 20 of 24 hours for a daily mean): raise or escalate on them only once the
        // window has seen most of its span. A partial sum or maximum is a lower bound, so a
        // breach by it is a breach.
        let partial_is_a_bound = matches!(aggregate, Aggregate::Sum | Aggregate::Max);
        if rising && !partial_is_a_bound && !series.is_some_and(|s| s.is_warm(r.ts, ms / 6 * 5)) {
            target = current;
        }
        // After a restart the window holds only part of its span: do not let an incomplete
        // sum clear or lower an alert that the full window would still hold.
        let falling = match (target, current) {
            (None, Some(_)) => true,
            (Some((t, ..)), Some((c, ..))) => t < c,
            _ => false,
        };
        if falling && !series.is_some_and(|s| s.is_warm(r.ts, ms)) {
            target = current;
        }
    }
    let metric = &profile.metrics[rule.metric];
    let info = Info {
        sensor: &r.sensor,
        kind: &profile.kind.name,
        rule: &rule.name,
        metric: &metric.name,
        unit: &metric.unit,
        value: x,
        target,
        message: Message::Rule { rule },
    };
    alerts.drive(slot, target, r.ts, &info, ctx);
}

/// The rate of change per `per_ms` over the readings of the last `per_ms`: from the oldest
/// kept reading to this one. A span shorter than a quarter of `per_ms` gives no rate, so
/// that a centimetre of noise between two readings a minute apart is not read as a flood.
fn rate_over_span(
    history: &mut std::collections::VecDeque<(i64, f64)>,
    ts: i64,
    value: f64,
    per_ms: i64,
) -> Option<f64> {
    if history.back().is_some_and(|&(t, _)| ts <= t) {
        return None; // not newer than the last kept reading
    }
    while history.front().is_some_and(|&(t, _)| t < ts - per_ms) {
        history.pop_front();
    }
    let rate = history.front().and_then(|&(t0, v0)| {
        let span = ts - t0;
        (span >= per_ms / 4 && span > 0).then(|| (value - v0) / span as f64 * per_ms as f64)
    });
    // Keep at most ~240 readings per span, whatever the reporting rate.
    if history.back().is_none_or(|&(t, _)| ts - t >= per_ms / 240) {
        history.push_back((ts, value));
    }
    rate
}

/// Which way a restored alert's rule was breached, from which of its levels is the
/// alert's threshold.
pub(super) fn direction_of(profile: &SensorProfile, slot: Slot, alert: &Alert) -> Direction {
    let Slot::Rule(i) = slot else {
        return Direction::Above;
    };
    let Some(rule) = profile.rules.get(i as usize) else {
        return Direction::Above;
    };
    let in_levels =
        |levels: &crate::catalog::spec::Levels| levels.iter().any(|(_, t)| t == alert.threshold);
    let below = in_levels(&rule.below) || rule.schedule.iter().any(|s| in_levels(&s.below));
    let above = in_levels(&rule.above) || rule.schedule.iter().any(|s| in_levels(&s.above));
    if below && !above {
        Direction::Below
    } else {
        Direction::Above
    }
}

/// Records an operator's acknowledgement.
pub(super) fn acknowledge(
    a: &mut ActiveAlert,
    by: &str,
    comment: &str,
    now: i64,
    out: &mut Output,
) {
    Arc::make_mut(&mut a.alert).ack = Some(Ack {
        by: by.to_string(),
        at: now,
        comment: comment.to_string(),
    });
    out.events.push(AlertEvent {
        event: AlertEventKind::Acknowledged,
        at: now,
        alert: (*a.alert).clone(),
    });
    out.alerts.push(a.alert.clone());
}

impl super::Pipeline {
    /// The active alerts themselves (not copies), in no particular order: for the alert hub
    /// and the board to start from, so that each active alert is kept once.
    pub fn shared_active_alerts(&self) -> Vec<Arc<Alert>> {
        self.sensors
            .iter()
            .flat_map(|s| s.alerts.iter().map(|a| a.alert.clone()))
            .collect()
    }
}

/// Where a stored active alert belongs in a sensor's state.
pub(super) fn slot_for(profile: &SensorProfile, alert: &Alert) -> Option<Slot> {
    match alert.rule.as_str() {
        OFFLINE_RULE => Some(Slot::Offline),
        DEVICE_RULE => Some(Slot::Device),
        FAULT_RULE => {
            let m = profile
                .metrics
                .iter()
                .position(|m| m.name == alert.metric)?;
            Some(Slot::Fault(m as u16))
        }
        name => profile
            .rules
            .iter()
            .position(|r| r.name == name && profile.metrics[r.metric].name == alert.metric)
            .map(|i| Slot::Rule(i as u16)),
    }
}

/// Resolves a stored alert that has no place any more (its rule or sensor left the config).
pub(super) fn resolve_orphan(mut alert: Alert, now: i64, out: &mut Output) {
    alert.state = AlertState::Resolved;
    alert.resolved_at = Some(now);
    alert.updated_at = alert.updated_at.max(now);
    alert.message = format!(
        "{} (resolved at startup: its rule or sensor is no longer configured)",
        alert.message
    );
    out.events.push(AlertEvent {
        event: AlertEventKind::Resolved,
        at: now,
        alert: alert.clone(),
    });
    out.alerts.push(Arc::new(alert));
}
