//! The sensor board: what operators see of every known sensor (latest values, last reading,
//! status), kept in memory from committed outputs, for `/api/v1/sensors` and the console.
//!
//! It is fed by the store thread after each commit, so it never shows a reading or an alert
//! the store does not have. Reading it never touches SQLite: with 10,000 sensors a console
//! refresh is a walk over a map, not thousands of queries. It works with `store_readings =
//! false` too, where the store has no readings to ask for.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::alerts::message::TagMap;
use crate::id_map::{IdMap, Keyed};
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
    value: f64,
    ts: TimestampMs,
    metric: NameId,
    quality: Quality,
}

/// A kind or metric name, kept once in the board's [`Names`].
type NameId = u32;

/// The kind and metric names, each kept once for the whole board: every sensor has a kind
/// and a few metrics, and 24 bytes per name per sensor was a fifth of the board at 100,000
/// sensors. Names are never let go; there are as many as the catalog has kinds and metrics
/// (plus the unknown metrics `validation.unknown_metric = "accept"` lets in, each of which
/// the sensors' latest values kept anyway).
#[derive(Debug, Default)]
struct Names {
    list: Vec<CompactString>,
    ids: FxHashMap<CompactString, NameId>,
}

impl Names {
    fn id(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = NameId::try_from(self.list.len()).unwrap_or(NameId::MAX);
        self.list.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn find(&self, name: &str) -> Option<NameId> {
        self.ids.get(name).copied()
    }

    fn get(&self, id: NameId) -> &str {
        self.list.get(id as usize).map_or("", |n| n.as_str())
    }
}

/// One sensor. Kept small (one per sensor): names are ids, the lists boxed slices, and
/// `last_seen` an `i64` beside a flag rather than an `Option`.
#[derive(Clone, Debug)]
struct Entry {
    id: CompactString,
    tags: Option<Tags>,
    latest: Box<[Latest]>,
    /// Its active alerts: the alert hub's and the pipeline's own copies, shared.
    active: Box<[Arc<Alert>]>,
    last_seen: TimestampMs,
    kind: NameId,
    seen: bool,
}

impl Entry {
    fn new(id: CompactString, kind: NameId) -> Entry {
        Entry {
            id,
            tags: None,
            latest: Box::default(),
            active: Box::default(),
            last_seen: 0,
            kind,
            seen: false,
        }
    }

    fn last_seen(&self) -> Option<TimestampMs> {
        self.seen.then_some(self.last_seen)
    }

    fn saw(&mut self, ts: Option<TimestampMs>) {
        if let Some(ts) = self.last_seen().max(ts) {
            self.last_seen = ts;
            self.seen = true;
        }
    }

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

    fn set_alert(&mut self, a: &Arc<Alert>) {
        // An update (the usual case) replaces the alert in place, without a new slice.
        if let Some(held) = self.active.iter_mut().find(|r| r.id == a.id) {
            if a.state == AlertState::Active {
                *held = a.clone();
                return;
            }
        } else if a.state != AlertState::Active {
            return;
        }
        let mut active = std::mem::take(&mut self.active).into_vec();
        active.retain(|r| r.id != a.id);
        if a.state == AlertState::Active {
            active.push(a.clone());
        }
        self.active = active.into_boxed_slice();
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

fn view<'a>(id: &'a str, e: &'a Entry, names: &'a Names) -> SensorView<'a> {
    SensorView {
        id,
        kind: names.get(e.kind),
        district: e.district(),
        tags: TagMap(e.tags.as_ref()),
        last_seen: e.last_seen(),
        latest: e
            .latest
            .iter()
            .map(|l| {
                (
                    names.get(l.metric),
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
    fn matches(&self, id: &str, e: &Entry, names: &Names) -> bool {
        self.kind
            .as_deref()
            .is_none_or(|k| names.find(k) == Some(e.kind))
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
struct Inner {
    sensors: Sensors,
    names: Names,
}

/// The sensors' entries, by id.
type Sensors = IdMap<Entry>;

impl Keyed for Entry {
    fn key(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
pub struct SensorBoard {
    inner: RwLock<Inner>,
}

impl SensorBoard {
    pub fn new() -> SensorBoard {
        SensorBoard::default()
    }

    // A panic while holding the lock cannot leave an entry half-updated in a way that
    // matters for display, so a poisoned lock is still used.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
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
        let mut inner = self.write();
        let Inner { sensors, names } = &mut *inner;
        let kind = names.id(kind);
        let e = sensors.entry(id, || Entry::new(id.into(), kind));
        e.kind = kind;
        if tags.is_some() {
            e.tags = tags;
        }
        e.saw(last_seen);
    }

    /// Active alerts restored at startup.
    pub fn add_alerts(&self, alerts: &[Arc<Alert>]) {
        let mut inner = self.write();
        for a in alerts {
            if let Some(e) = inner.sensors.get_mut(a.sensor.as_str()) {
                e.set_alert(a);
            }
        }
    }

    /// Takes in a committed output: new sensors, accepted readings, alert changes.
    pub fn apply(&self, out: &Output) {
        if out.accepted.is_empty() && out.new_sensors.is_empty() && out.alerts.is_empty() {
            return;
        }
        let mut inner = self.write();
        let Inner { sensors, names } = &mut *inner;
        for s in &out.new_sensors {
            let kind = names.id(&s.kind);
            let e = sensors.entry(&s.id, || Entry::new(s.id.clone(), kind));
            e.kind = kind;
            if s.tags.is_some() {
                e.tags = s.tags.clone();
            }
        }
        for r in &out.accepted {
            let Some(e) = sensors.get_mut(r.sensor.as_str()) else {
                continue;
            };
            // Keep the Arc the board holds when the tags are the same (the usual case): the
            // message's own copy is then freed with its batch instead of held per sensor.
            if r.tags.is_some() && r.tags != e.tags {
                e.tags = r.tags.clone();
            }
            e.saw(Some(r.ts));
            let metric = names.id(&r.metric);
            match e.latest.iter_mut().find(|l| l.metric == metric) {
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
                    let mut latest = std::mem::take(&mut e.latest).into_vec();
                    latest.reserve_exact(1);
                    latest.push(Latest {
                        value: r.value,
                        ts: r.ts,
                        metric,
                        quality: r.quality,
                    });
                    e.latest = latest.into_boxed_slice();
                }
            }
        }
        for a in &out.alerts {
            if let Some(e) = sensors.get_mut(a.sensor.as_str()) {
                e.set_alert(a);
            }
        }
    }

    /// The ids of the sensors whose `district` tag is this.
    pub fn in_district(&self, district: &str) -> Vec<String> {
        self.read()
            .sensors
            .iter()
            .filter(|e| e.district() == Some(district))
            .map(|e| e.id.to_string())
            .collect()
    }

    /// The sensor's tags, for alert messages.
    pub fn tags(&self, id: &str) -> Option<Tags> {
        self.read().sensors.get(id).and_then(|e| e.tags.clone())
    }

    /// Runs `f` on one sensor's view.
    pub fn with_sensor<T>(&self, id: &str, f: impl FnOnce(&SensorView<'_>) -> T) -> Option<T> {
        let inner = self.read();
        let e = inner.sensors.get(id)?;
        Some(f(&view(&e.id, e, &inner.names)))
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
        let inner = self.read();
        let names = &inner.names;
        let mut hits: Vec<&Entry> = inner
            .sensors
            .iter()
            .filter(|e| filter.matches(&e.id, e, names))
            .collect();
        let total = hits.len();
        hits.sort_unstable_by(|a, b| {
            (names.get(a.kind), a.district(), a.id.as_str()).cmp(&(
                names.get(b.kind),
                b.district(),
                b.id.as_str(),
            ))
        });
        let views: Vec<SensorView<'_>> = hits
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|e| view(&e.id, e, names))
            .collect();
        f(total, &views)
    }

    /// Sensors counted by kind and district and by status.
    pub fn summary(&self) -> Vec<Group> {
        let inner = self.read();
        let mut groups: BTreeMap<(&str, Option<&str>), Group> = BTreeMap::new();
        for e in inner.sensors.iter() {
            let kind = inner.names.get(e.kind);
            let g = groups.entry((kind, e.district())).or_insert_with(|| Group {
                kind: kind.to_string(),
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
            alerts: vec![Arc::new(warn.clone())],
            ..Default::default()
        });
        assert_eq!(status_of(&board, "wl-1"), Status::Alerting);
        let offline = alert("wl-1", OFFLINE_RULE, Severity::Info, AlertState::Active);
        board.apply(&Output {
            alerts: vec![Arc::new(offline.clone())],
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
            alerts: vec![Arc::new(cleared), Arc::new(cleared2)],
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
        board.add_alerts(&[Arc::new(alert(
            "c",
            "r",
            Severity::Warning,
            AlertState::Active,
        ))]);
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

    /// Kind and metric names are kept once for the whole board, and every sensor still shows
    /// its own kind and its own latest value of each metric.
    #[test]
    fn names_are_kept_once_and_each_sensor_shows_its_own_values() {
        let board = SensorBoard::new();
        board.add_sensor("wl-1", "water_level", None, None);
        assert_eq!(
            board.with_sensor("wl-1", |v| (
                v.kind.to_string(),
                v.last_seen,
                v.latest.len()
            )),
            Some(("water_level".to_string(), None, 0))
        );
        let mut out = Output::default();
        for (id, kind) in [("aq-1", "air_quality"), ("aq-2", "air_quality")] {
            out.new_sensors.push(NewSensor {
                id: id.into(),
                kind: kind.into(),
                tags: None,
                first_seen: 1,
            });
        }
        out.accepted = vec![
            Reading::new("wl-1", "water_level", "level", 1.5, 10),
            Reading::new("aq-1", "air_quality", "pm25", 35.0, 11),
            Reading::new("aq-1", "air_quality", "pm10", 50.0, 12),
            Reading::new("aq-2", "air_quality", "pm10", 70.0, 13),
            Reading::new("aq-2", "air_quality", "pm25", 20.0, 14),
            Reading::new("aq-1", "air_quality", "pm25", 36.0, 15),
            Reading::new("nobody", "air_quality", "so2", 1.0, 15),
        ];
        board.apply(&out);
        let latest = |id: &str| {
            board
                .with_sensor(id, |v| {
                    let values: Vec<(String, f64, i64)> = v
                        .latest
                        .iter()
                        .map(|(m, l)| (m.to_string(), l.value, l.ts))
                        .collect();
                    (v.kind.to_string(), v.last_seen, values)
                })
                .expect("known sensor")
        };
        assert_eq!(
            latest("wl-1"),
            (
                "water_level".into(),
                Some(10),
                vec![("level".into(), 1.5, 10)]
            )
        );
        assert_eq!(
            latest("aq-1"),
            (
                "air_quality".into(),
                Some(15),
                vec![("pm10".into(), 50.0, 12), ("pm25".into(), 36.0, 15)]
            )
        );
        assert_eq!(
            latest("aq-2"),
            (
                "air_quality".into(),
                Some(14),
                vec![("pm10".into(), 70.0, 13), ("pm25".into(), 20.0, 14)]
            )
        );
        let names = board.read().names.list.clone();
        assert_eq!(
            names,
            ["water_level", "air_quality", "level", "pm25", "pm10"]
        );
        let of_kind = |kind: &str| {
            let filter = SensorFilter {
                kind: Some(kind.into()),
                ..Default::default()
            };
            board.page(&filter, 0, 10, |total, page| {
                let ids: Vec<String> = page.iter().map(|v| v.id.to_string()).collect();
                (total, ids)
            })
        };
        assert_eq!(
            of_kind("air_quality"),
            (2, vec!["aq-1".into(), "aq-2".into()])
        );
        assert_eq!(of_kind("level"), (0, vec![]), "a metric name is not a kind");
        assert_eq!(of_kind("nope"), (0, vec![]));
    }

    /// One entry per sensor and one latest value per metric of each: the sizes the board's
    /// memory figure at 100,000 sensors rests on (BENCHMARKS.md).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 88);
        assert_eq!(std::mem::size_of::<Latest>(), 24);
    }

    /// Sensors past several chunks are each found by id with their own kind, values and
    /// alerts, whether they came from the config or from readings, and an unknown id is not.
    #[test]
    fn sensors_across_chunks_are_found_by_id() {
        let board = SensorBoard::new();
        const CHUNK: usize = 1024; // the id map's
        let n = 2 * CHUNK + 7;
        for i in (0..n).step_by(2) {
            board.add_sensor(&format!("wl-{i}"), "water_level", tags("x"), None);
        }
        let mut out = Output::default();
        for i in 0..n {
            let id = format!("wl-{i}");
            if i % 2 == 1 {
                out.new_sensors.push(NewSensor {
                    id: id.as_str().into(),
                    kind: "rainfall".into(),
                    tags: None,
                    first_seen: 1,
                });
            }
            out.accepted
                .push(Reading::new(&id, "water_level", "level", i as f64, 5));
        }
        out.alerts.push(Arc::new(alert(
            "wl-2000",
            "level_high",
            Severity::Major,
            AlertState::Active,
        )));
        board.apply(&out);
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, n - 1] {
            let id = format!("wl-{i}");
            let (kind, level, alerts) = board
                .with_sensor(&id, |v| {
                    (v.kind.to_string(), v.latest["level"].value, v.active_alerts)
                })
                .expect("known sensor");
            let want = if i % 2 == 0 {
                "water_level"
            } else {
                "rainfall"
            };
            assert_eq!((kind.as_str(), level, alerts), (want, i as f64, 0), "{id}");
        }
        assert_eq!(
            board.with_sensor("wl-2000", |v| v.status),
            Some(Status::Alerting)
        );
        assert_eq!(
            board
                .with_sensor("wl-2000", |v| v.id.to_string())
                .as_deref(),
            Some("wl-2000")
        );
        assert!(board.with_sensor(&format!("wl-{n}"), |_| ()).is_none());
        assert_eq!(
            board.page(&SensorFilter::default(), 0, 0, |total, _| total),
            n
        );
        assert_eq!(board.in_district("x").len(), n.div_ceil(2));
    }
}
