//! The sensor board: what operators see of every known sensor (latest values, last reading,
//! status), kept in memory from committed outputs, for `/api/v1/sensors` and the console.
//!
//! It is fed by the store thread after each commit, so it never shows a reading or an alert
//! the store does not have. Reading it never touches SQLite: with 10,000 sensors a console
//! refresh is a walk over a map, not thousands of queries. It works with `store_readings =
//! false` too, where the store has no readings to ask for.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::alerts::message::TagMap;
use crate::model::{Alert, AlertState, Quality, Severity, Tags, TimestampMs};
use crate::pipeline::Output;
use crate::pipeline::{DEVICE_RULE, OFFLINE_RULE};

/// What operators are told about a sensor, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Silent past its `offline_after`, or its device stopped answering.
    Offline,
    /// An alert other than offline is active.
    Alerting,
    /// The latest reading of some metric is suspect.
    Suspect,
    Ok,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Offline,
        Status::Alerting,
        Status::Suspect,
        Status::Ok,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Offline => "offline",
            Status::Alerting => "alerting",
            Status::Suspect => "suspect",
            Status::Ok => "ok",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(Clone, Debug)]
struct Latest {
    metric: CompactString,
    value: f64,
    ts: TimestampMs,
    quality: Quality,
}

#[derive(Clone, Debug)]
struct ActiveRef {
    id: String,
    rule: CompactString,
    severity: Severity,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    kind: CompactString,
    tags: Option<Tags>,
    last_seen: Option<TimestampMs>,
    latest: Vec<Latest>,
    active: Vec<ActiveRef>,
}

impl Entry {
    fn status(&self) -> Status {
        if self
            .active
            .iter()
            .any(|a| a.rule == OFFLINE_RULE || a.rule == DEVICE_RULE)
        {
            Status::Offline
        } else if !self.active.is_empty() {
            Status::Alerting
        } else if self.latest.iter().any(|l| l.quality == Quality::Suspect) {
            Status::Suspect
        } else {
            Status::Ok
        }
    }

    fn district(&self) -> Option<&str> {
        tag(self.tags.as_ref(), "district")
    }

    fn set_alert(&mut self, a: &Alert) {
        self.active.retain(|r| r.id != a.id);
        if a.state == AlertState::Active {
            self.active.push(ActiveRef {
                id: a.id.clone(),
                rule: a.rule.clone(),
                severity: a.severity,
            });
        }
    }
}

fn tag<'t>(tags: Option<&'t Tags>, key: &str) -> Option<&'t str> {
    tags?
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A sensor as the API shows it.
#[derive(Debug, Serialize)]
pub struct SensorView<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub district: Option<&'a str>,
    pub tags: TagMap<'a>,
    pub last_seen: Option<TimestampMs>,
    pub latest: BTreeMap<&'a str, LatestView>,
    pub status: Status,
    pub active_alerts: usize,
    /// The worst severity among its active alerts.
    pub severity: Option<Severity>,
}

#[derive(Debug, Serialize)]
pub struct LatestView {
    pub value: f64,
    pub ts: TimestampMs,
    pub quality: Quality,
}

fn view<'a>(id: &'a str, e: &'a Entry) -> SensorView<'a> {
    SensorView {
        id,
        kind: &e.kind,
        district: e.district(),
        tags: TagMap(e.tags.as_ref()),
        last_seen: e.last_seen,
        latest: e
            .latest
            .iter()
            .map(|l| {
                (
                    l.metric.as_str(),
                    LatestView {
                        value: l.value,
                        ts: l.ts,
                        quality: l.quality,
                    },
                )
            })
            .collect(),
        status: e.status(),
        active_alerts: e.active.len(),
        severity: e.active.iter().map(|a| a.severity).max(),
    }
}

/// Which sensors a listing shows.
#[derive(Clone, Debug, Default)]
pub struct SensorFilter {
    pub kind: Option<String>,
    pub district: Option<String>,
    pub status: Option<Status>,
    /// A substring of the id.
    pub id_contains: Option<String>,
}

impl SensorFilter {
    fn matches(&self, id: &str, e: &Entry) -> bool {
        self.kind.as_deref().is_none_or(|k| e.kind == k)
            && self
                .district
                .as_deref()
                .is_none_or(|d| e.district() == Some(d))
            && self.status.is_none_or(|s| e.status() == s)
            && self.id_contains.as_deref().is_none_or(|q| id.contains(q))
    }
}

/// Sensors of one kind in one district, counted by status.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Group {
    pub kind: String,
    pub district: Option<String>,
    pub total: usize,
    pub ok: usize,
    pub suspect: usize,
    pub offline: usize,
    pub alerting: usize,
}

#[derive(Default)]
pub struct SensorBoard {
    inner: RwLock<FxHashMap<CompactString, Entry>>,
}

impl SensorBoard {
    pub fn new() -> SensorBoard {
        SensorBoard::default()
    }

    // A panic while holding the lock cannot leave an entry half-updated in a way that
    // matters for display, so a poisoned lock is still used.
    fn read(&self) -> RwLockReadGuard<'_, FxHashMap<CompactString, Entry>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, FxHashMap<CompactString, Entry>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A sensor known before any reading of this run: from the config or the registry.
    pub fn add_sensor(
        &self,
        id: &str,
        kind: &str,
        tags: Option<Tags>,
        last_seen: Option<TimestampMs>,
    ) {
        let mut map = self.write();
        let e = map.entry(id.into()).or_default();
        e.kind = kind.into();
        if tags.is_some() {
            e.tags = tags;
        }
        e.last_seen = e.last_seen.max(last_seen);
    }

    /// Active alerts restored at startup.
    pub fn add_alerts(&self, alerts: &[Alert]) {
        let mut map = self.write();
        for a in alerts {
            if let Some(e) = map.get_mut(a.sensor.as_str()) {
                e.set_alert(a);
            }
        }
    }

    /// Takes in a committed output: new sensors, accepted readings, alert changes.
    pub fn apply(&self, out: &Output) {
        if out.accepted.is_empty() && out.new_sensors.is_empty() && out.alerts.is_empty() {
            return;
        }
        let mut map = self.write();
        for s in &out.new_sensors {
            let e = map.entry(s.id.clone()).or_default();
            e.kind = s.kind.clone();
            if s.tags.is_some() {
                e.tags = s.tags.clone();
            }
        }
        for r in &out.accepted {
            let Some(e) = map.get_mut(r.sensor.as_str()) else {
                continue;
            };
            // Keep the Arc the board holds when the tags are the same (the usual case): the
            // message's own copy is then freed with its batch instead of held per sensor.
            if r.tags.is_some() && r.tags != e.tags {
                e.tags = r.tags.clone();
            }
            e.last_seen = e.last_seen.max(Some(r.ts));
            match e.latest.iter_mut().find(|l| l.metric == r.metric) {
                // A late (older) reading does not replace a newer latest value.
                Some(l) if l.ts > r.ts => {}
                Some(l) => {
                    l.value = r.value;
                    l.ts = r.ts;
                    l.quality = r.quality;
                }
                None => {
                    // Exactly one more: a sensor's metrics are few and fixed, and at
                    // 100,000 sensors the doubling slack was a tenth of the board.
                    e.latest.reserve_exact(1);
                    e.latest.push(Latest {
                        metric: r.metric.clone(),
                        value: r.value,
                        ts: r.ts,
                        quality: r.quality,
                    });
                }
            }
        }
        for a in &out.alerts {
            if let Some(e) = map.get_mut(a.sensor.as_str()) {
                e.set_alert(a);
            }
        }
    }

    /// The ids of the sensors whose `district` tag is this.
    pub fn in_district(&self, district: &str) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, e)| e.district() == Some(district))
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// The sensor's tags, for alert messages.
    pub fn tags(&self, id: &str) -> Option<Tags> {
        self.read().get(id).and_then(|e| e.tags.clone())
    }

    /// Runs `f` on one sensor's view.
    pub fn with_sensor<T>(&self, id: &str, f: impl FnOnce(&SensorView<'_>) -> T) -> Option<T> {
        let map = self.read();
        let (id, e) = map.get_key_value(id)?;
        Some(f(&view(id, e)))
    }

    /// One page of the matching sensors, ordered by kind, district and id, with the number
    /// that match in all; `f` gets the page.
    pub fn page<T>(
        &self,
        filter: &SensorFilter,
        offset: usize,
        limit: usize,
        f: impl FnOnce(usize, &[SensorView<'_>]) -> T,
    ) -> T {
        let map = self.read();
        let mut hits: Vec<(&CompactString, &Entry)> =
            map.iter().filter(|(id, e)| filter.matches(id, e)).collect();
        let total = hits.len();
        hits.sort_unstable_by(|(a_id, a), (b_id, b)| {
            (a.kind.as_str(), a.district(), a_id.as_str()).cmp(&(
                b.kind.as_str(),
                b.district(),
                b_id.as_str(),
            ))
        });
        let views: Vec<SensorView<'_>> = hits
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(id, e)| view(id, e))
            .collect();
        f(total, &views)
    }

    /// Sensors counted by kind and district and by status.
    pub fn summary(&self) -> Vec<Group> {
        let map = self.read();
        let mut groups: BTreeMap<(&str, Option<&str>), Group> = BTreeMap::new();
        for e in map.values() {
            let g = groups
                .entry((e.kind.as_str(), e.district()))
                .or_insert_with(|| Group {
                    kind: e.kind.to_string(),
                    district: e.district().map(str::to_string),
                    total: 0,
                    ok: 0,
                    suspect: 0,
                    offline: 0,
                    alerting: 0,
                });
            g.total += 1;
            *match e.status() {
                Status::Ok => &mut g.ok,
                Status::Suspect => &mut g.suspect,
                Status::Offline => &mut g.offline,
                Status::Alerting => &mut g.alerting,
            } += 1;
        }
        groups.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reading;
    use crate::pipeline::NewSensor;

    fn tags(district: &str) -> Option<Tags> {
        Some(
            vec![(
                CompactString::from("district"),
                CompactString::from(district),
            )]
            .into(),
        )
    }

    fn alert(sensor: &str, rule: &str, severity: Severity, state: AlertState) -> Alert {
        Alert {
            id: format!("{sensor}:{rule}"),
            rule: rule.into(),
            sensor: sensor.into(),
            kind: "water_level".into(),
            metric: "level".into(),
            severity,
            state,
            value: 1.0,
            threshold: 1.0,
            peak: 1.0,
            count: 1,
            started_at: 1,
            updated_at: 1,
            resolved_at: None,
            ack: None,
            message: String::new(),
        }
    }

    fn status_of(board: &SensorBoard, id: &str) -> Status {
        board.with_sensor(id, |v| v.status).expect("known sensor")
    }

    #[test]
    fn status_follows_readings_and_alerts_worst_first() {
        let board = SensorBoard::new();
        let mut out = Output::default();
        out.new_sensors.push(NewSensor {
            id: "wl-1".into(),
            kind: "water_level".into(),
            tags: tags("qingcheng"),
            first_seen: 10,
        });
        let mut r = Reading::new("wl-1", "water_level", "level", 3.5, 10);
        out.accepted.push(r.clone());
        board.apply(&out);
        assert_eq!(status_of(&board, "wl-1"), Status::Ok);
        let (value, ts) = board
            .with_sensor("wl-1", |v| (v.latest["level"].value, v.last_seen))
            .unwrap();
        assert_eq!((value, ts), (3.5, Some(10)));

        r.ts = 20;
        r.value = 9.0;
        r.quality = Quality::Suspect;
        board.apply(&Output {
            accepted: vec![r.clone()],
            ..Default::default()
        });
        assert_eq!(status_of(&board, "wl-1"), Status::Suspect);

        // An older reading arriving late does not replace the latest one.
        let mut late = r.clone();
        late.ts = 15;
        late.value = 1.0;
        late.quality = Quality::Good;
        board.apply(&Output {
            accepted: vec![late],
            ..Default::default()
        });
        assert_eq!(
            board.with_sensor("wl-1", |v| v.latest["level"].value),
            Some(9.0)
        );

        let warn = alert("wl-1", "level_high", Severity::Major, AlertState::Active);
        board.apply(&Output {
            alerts: vec![warn.clone()],
            ..Default::default()
        });
        assert_eq!(status_of(&board, "wl-1"), Status::Alerting);
        let offline = alert("wl-1", OFFLINE_RULE, Severity::Info, AlertState::Active);
        board.apply(&Output {
            alerts: vec![offline.clone()],
            ..Default::default()
        });
        assert_eq!(status_of(&board, "wl-1"), Status::Offline);
        assert_eq!(
            board.with_sensor("wl-1", |v| (v.active_alerts, v.severity)),
            Some((2, Some(Severity::Major)))
        );

        let mut cleared = offline;
        cleared.state = AlertState::Resolved;
        let mut cleared2 = warn;
        cleared2.state = AlertState::Resolved;
        board.apply(&Output {
            alerts: vec![cleared, cleared2],
            ..Default::default()
        });
        assert_eq!(status_of(&board, "wl-1"), Status::Suspect);
    }

    #[test]
    fn pages_are_ordered_by_kind_district_and_id_and_groups_count_statuses() {
        let board = SensorBoard::new();
        for (id, kind, district) in [
            ("b", "water_level", "x"),
            ("a", "water_level", "y"),
            ("c", "water_level", "x"),
            ("d", "air_quality", "y"),
        ] {
            board.add_sensor(id, kind, tags(district), None);
        }
        board.add_alerts(&[alert("c", "r", Severity::Warning, AlertState::Active)]);
        let ids = board.page(&SensorFilter::default(), 1, 2, |total, page| {
            assert_eq!(total, 4);
            page.iter().map(|v| v.id.to_string()).collect::<Vec<_>>()
        });
        assert_eq!(ids, ["b", "c"]);
        let filter = SensorFilter {
            kind: Some("water_level".into()),
            district: Some("x".into()),
            status: Some(Status::Alerting),
            ..Default::default()
        };
        let ids = board.page(&filter, 0, 10, |total, page| {
            assert_eq!(total, 1);
            page.iter().map(|v| v.id.to_string()).collect::<Vec<_>>()
        });
        assert_eq!(ids, ["c"]);
        let groups = board.summary();
        assert_eq!(groups.len(), 3);
        let wx = groups
            .iter()
            .find(|g| g.kind == "water_level" && g.district.as_deref() == Some("x"))
            .unwrap();
        assert_eq!((wx.total, wx.ok, wx.alerting), (2, 1, 1));
    }
}
