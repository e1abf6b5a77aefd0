//! The fleet: every simulated sensor, and the clock-free `tick` that makes them report.

use crate::catalog::{prefix, KINDS};
use crate::geo::DISTRICTS;
use crate::incidents::{self, Incident};
use crate::kinds::{Ctx, Metric, Out, State};
use crate::payload::{rounded, write_report};
use crate::rng::{mix, SplitMix64};
use crate::weather::Weather;

/// How to build a fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// Sensors of each of the 13 kinds (spread over the 7 districts).
    pub per_kind: usize,
    /// Every sensor reports once per interval (simulated time). Values below 1 are taken as 1.
    pub interval_ms: i64,
    /// Same seed and same tick times, same payloads.
    pub seed: u64,
    /// Play the scripted incidents (see [`crate::incidents`]).
    pub incidents: bool,
    /// Epoch ms the simulation starts at: the incident clock's zero, and sensors' first
    /// reports fall within one interval after it.
    pub start_ms: i64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            per_kind: 1,
            interval_ms: 2_000,
            seed: 42,
            incidents: false,
            start_ms: 0,
        }
    }
}

/// A water-level station's flood levels (m, station datum).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StationLevels {
    /// 警戒水位: the warning level.
    pub warning: f64,
    /// 保证水位: the guaranteed (critical) level.
    pub guaranteed: f64,
}

/// A simulated sensor as the gateway should know it.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSensor {
    /// e.g. `wq-qc-01`: kind prefix, district code, number within the district.
    pub id: String,
    /// One of [`KINDS`].
    pub kind: &'static str,
    /// `district` and `site`.
    pub tags: Vec<(String, String)>,
    /// Water-level stations: warning and guaranteed levels.
    pub levels: Option<StationLevels>,
    /// Water-quality sections: their GB 3838 class ("II" or "III"), a catalog profile name.
    pub water_class: Option<&'static str>,
    /// Noise sites: their GB 3096 functional class ("1", "2", "3", "4a").
    pub noise_class: Option<&'static str>,
    /// The scripted incidents this sensor plays (empty unless `incidents` is on).
    pub incidents: Vec<Incident>,
}

/// One report of one sensor.
#[derive(Clone, Debug, PartialEq)]
pub struct SimMessage {
    pub sensor: String,
    pub kind: &'static str,
    pub ts_ms: i64,
    /// citygate JSON: one flat object.
    pub payload: String,
    /// The same values as the payload (rounded as written there), metric by metric, for
    /// writing the report in another format (see [`crate::wire`]).
    pub values: Vec<(&'static str, f64)>,
}

struct Runtime {
    district: usize,
    next_due_ms: i64,
    prev_ts_ms: Option<i64>,
    rng: SplitMix64,
    state: State,
}

/// Every simulated sensor. Time only moves when [`Fleet::tick`] is called.
pub struct Fleet {
    cfg: FleetConfig,
    sensors: Vec<SimSensor>,
    runtime: Vec<Runtime>,
    weather: Weather,
    scratch: Vec<Metric>,
}

impl Fleet {
    pub fn new(cfg: FleetConfig) -> Self {
        let mut cfg = cfg;
        cfg.interval_ms = cfg.interval_ms.max(1);
        let count = cfg.per_kind * KINDS.len();
        let mut sensors = Vec::with_capacity(count);
        let mut runtime = Vec::with_capacity(count);
        for (k, &kind) in KINDS.iter().enumerate() {
            for i in 0..cfg.per_kind {
                let district_idx = i % DISTRICTS.len();
                let district = &DISTRICTS[district_idx];
                let n = i / DISTRICTS.len();
                let incidents = if cfg.incidents {
                    incidents_for(kind, i, cfg.per_kind)
                } else {
                    Vec::new()
                };
                let mut rng = SplitMix64::new(mix(mix(cfg.seed, k as u64), i as u64));
                let (state, meta) = State::build(kind, n, district, &mut rng, &incidents);
                let phase_ms = (rng.unit() * cfg.interval_ms as f64) as i64;
                sensors.push(SimSensor {
                    id: format!("{}-{}-{:02}", prefix(kind), district.code, n + 1),
                    kind,
                    tags: vec![
                        ("district".to_string(), district.name.to_string()),
                        ("site".to_string(), meta.site),
                    ],
                    levels: meta.levels,
                    water_class: meta.water_class,
                    noise_class: meta.noise_class,
                    incidents,
                });
                runtime.push(Runtime {
                    district: district_idx,
                    next_due_ms: cfg.start_ms + phase_ms,
                    prev_ts_ms: None,
                    rng,
                    state,
                });
            }
        }
        Self {
            weather: Weather::new(cfg.seed),
            cfg,
            sensors,
            runtime,
            scratch: Vec::with_capacity(16),
        }
    }

    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    pub fn sensors(&self) -> &[SimSensor] {
        &self.sensors
    }

    /// Reports of every sensor whose interval is due at `now_ms`, stamped `now_ms`. A sensor
    /// reports at most once per call; intervals skipped by a long jump are not replayed (its
    /// counters still integrate over the whole gap).
    pub fn tick(&mut self, now_ms: i64) -> Vec<SimMessage> {
        let interval = self.cfg.interval_ms;
        let elapsed_s = (now_ms - self.cfg.start_ms) as f64 / 1000.0;
        let mut messages = Vec::new();
        for (sensor, rt) in self.sensors.iter().zip(self.runtime.iter_mut()) {
            if now_ms < rt.next_due_ms {
                continue;
            }
            let missed = (now_ms - rt.next_due_ms) / interval;
            rt.next_due_ms += (missed + 1) * interval;
            if sensor.incidents.contains(&Incident::GoesSilent) && incidents::silent(elapsed_s) {
                continue;
            }
            let dt_s = rt
                .prev_ts_ms
                .map_or(0.0, |prev| (now_ms - prev).max(0) as f64 / 1000.0);
            let ctx = Ctx {
                ts_ms: now_ms,
                prev_ts_ms: rt.prev_ts_ms,
                dt_s,
                elapsed_s,
                district: rt.district,
                weather: &self.weather,
                incidents: &sensor.incidents,
            };
            self.scratch.clear();
            rt.state
                .sample(&ctx, &mut rt.rng, &mut Out(&mut self.scratch));
            rt.prev_ts_ms = Some(now_ms);
            let mut payload = String::with_capacity(96 + 24 * self.scratch.len());
            write_report(
                &mut payload,
                &sensor.id,
                sensor.kind,
                now_ms,
                &sensor.tags,
                &self.scratch,
            );
            let values = self
                .scratch
                .iter()
                .filter(|m| m.value.is_finite())
                .map(|m| (m.name, rounded(m.value, m.decimals)))
                .collect();
            messages.push(SimMessage {
                sensor: sensor.id.clone(),
                kind: sensor.kind,
                ts_ms: now_ms,
                payload,
                values,
            });
        }
        messages
    }
}

/// Which scripted incidents sensor `i` of `kind` plays: #0 of each kind involved, and the
/// ammonia excursion on water-quality #1 so that it is a different section from the stuck probe.
fn incidents_for(kind: &str, i: usize, per_kind: usize) -> Vec<Incident> {
    let ammonia_section = if per_kind > 1 { 1 } else { 0 };
    Incident::ALL
        .iter()
        .copied()
        .filter(|inc| inc.kind() == kind)
        .filter(|inc| match inc {
            Incident::AmmoniaExcursion => i == ammonia_section,
            _ => i == 0,
        })
        .collect()
}
