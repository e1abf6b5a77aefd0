//! Table-driven tests of validation, every rule type and the alert lifecycle, on a test kind
//! defined here so that they do not move when the built-in catalog's numbers do.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::config::{load_with_env, Source};
use crate::model::{AlertEventKind, Quality, Severity, TsSource};

const TEST_KIND: &str = r#"
[validation]
flatline_count = 3
flatline_duration = "10m"

[catalog.tk]
name = { en = "Test kind" }
offline_after = "10m"

[catalog.tk.metrics.level]
name = { en = "Level" }
unit = "m"
min = -10.0
max = 100.0
max_rate_per_hour = 6.0

[catalog.tk.metrics.rain]
name = { en = "Rain" }
unit = "mm"
min = 0.0
max = 200.0
flatline = false

[catalog.tk.metrics.energy]
name = { en = "Energy" }
unit = "kWh"
unit_aliases = ["kW.h"]
min = 0.0
max = 1e9
counter = true
rollover = 100000.0

[catalog.tk.metrics.noise]
name = { en = "Noise" }
unit = "dB(A)"
min = 20.0
max = 140.0

[catalog.tk.metrics.gas]
name = { en = "Gas" }
unit = "%"
min = 0.0
max = 100.0

[catalog.tk.metrics.ph]
name = { en = "pH" }
min = 0.0
max = 14.0

[[catalog.tk.rules]]
name = "level"
metric = "level"
above = { warning = 10.0, critical = 12.0 }
hysteresis = 0.5

[[catalog.tk.rules]]
name = "rise"
metric = "level"
rate_per = "1h"
above = 0.5

[[catalog.tk.rules]]
name = "rain_3h"
metric = "rain"
window = "3h"
aggregate = "sum"
above = { major = 50.0, critical = 100.0 }

[[catalog.tk.rules]]
name = "noise"
metric = "noise"
schedule = [
  { from = "06:00", to = "22:00", above = 60.0 },
  { from = "22:00", to = "06:00", above = 50.0 },
]

[[catalog.tk.rules]]
name = "gas"
metric = "gas"
above = { warning = 25.0 }
for = "10m"

[[catalog.tk.rules]]
name = "ph"
metric = "ph"
below = 6.0
above = 9.0

[catalog.tk.metrics.pm]
name = { en = "PM2.5" }
unit = "ug/m3"
min = 0.0
max = 1000.0

[[catalog.tk.rules]]
name = "pm_1h"
metric = "pm"
window = "1h"
aggregate = "mean"
above = 75.0
"#;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// 2026-11-22 00:00 in Asia/Shanghai.
fn t0() -> i64 {
    chrono::DateTime::parse_from_rfc3339("2026-11-22T00:00:00+08:00")
        .expect("valid time")
        .timestamp_millis()
}

fn pipeline_with(extra: &str) -> Pipeline {
    let sources = [
        Source::Text {
            name: "test kind".into(),
            toml: TEST_KIND.into(),
        },
        Source::Text {
            name: "test extra".into(),
            toml: extra.into(),
        },
    ];
    let config = match load_with_env(&sources, Some(HashMap::new())) {
        Ok(c) => c,
        Err(e) => panic!("test config must load: {e}"),
    };
    let catalog = Arc::new(Catalog::from_config(&config));
    Pipeline::new(catalog, Settings::from_config(&config), t0())
}

fn pipeline() -> Pipeline {
    pipeline_with("")
}

fn reading(metric: &str, value: f64, ts: i64) -> Reading {
    Reading::new("s1", "tk", metric, value, ts)
}

fn feed(p: &mut Pipeline, r: Reading) -> Output {
    let now = r.ts;
    feed_at(p, r, now)
}

fn feed_at(p: &mut Pipeline, r: Reading, now: i64) -> Output {
    p.process(
        Batch {
            source: "test".into(),
            received_at: now,
            readings: vec![r],
            payloads: vec![Bytes::from_static(b"raw")],
            dead_letters: vec![],
            devices: vec![],
        },
        now,
    )
}

fn feed_v(p: &mut Pipeline, metric: &str, value: f64, ts: i64) -> Output {
    feed(p, reading(metric, value, ts))
}

fn events(out: &Output, rule: &str) -> Vec<(AlertEventKind, Severity)> {
    out.events
        .iter()
        .filter(|e| e.alert.rule == rule)
        .map(|e| (e.event, e.alert.severity))
        .collect()
}

fn rejected(out: &Output) -> Option<&'static str> {
    out.dead_letters.first().map(|d| d.reason)
}

#[test]
fn every_validation_reason() {
    let t = t0();
    // (what, setup readings, the reading under test, expected reason)
    type Case = (&'static str, Vec<Reading>, Reading, &'static str);
    let mut unit = reading("level", 5.0, t);
    unit.unit = Some("ft".into());
    let mut wrong_kind = reading("level", 5.0, t);
    wrong_kind.kind = "noise_kind".into();
    let mut no_kind = Reading::new("s9", "", "level", 5.0, t);
    no_kind.ts_source = TsSource::Device;
    let cases: Vec<Case> = vec![
        (
            "out of range",
            vec![],
            reading("ph", 17.0, t),
            "out_of_range",
        ),
        (
            "below range",
            vec![],
            reading("level", -11.0, t),
            "out_of_range",
        ),
        ("NaN", vec![], reading("level", f64::NAN, t), "not_finite"),
        (
            "+Inf",
            vec![],
            reading("level", f64::INFINITY, t),
            "not_finite",
        ),
        (
            "-Inf",
            vec![],
            reading("level", f64::NEG_INFINITY, t),
            "not_finite",
        ),
        (
            "future",
            vec![],
            reading("level", 5.0, t + HOUR),
            "future_timestamp",
        ),
        (
            "stale",
            vec![],
            reading("level", 5.0, t - 8 * 24 * HOUR),
            "stale_timestamp",
        ),
        (
            "duplicate",
            vec![reading("level", 5.0, t)],
            reading("level", 5.1, t),
            "duplicate",
        ),
        (
            "unknown metric",
            vec![],
            reading("salinity", 5.0, t),
            "unknown_metric",
        ),
        (
            "unknown kind",
            vec![],
            Reading::new("s2", "volcano", "level", 5.0, t),
            "unknown_kind",
        ),
        (
            "unknown sensor without kind",
            vec![],
            no_kind,
            "unknown_sensor",
        ),
        (
            "kind mismatch",
            vec![reading("level", 5.0, t - MIN)],
            wrong_kind,
            "kind_mismatch",
        ),
        ("wrong unit", vec![], unit, "wrong_unit"),
        (
            "counter backwards",
            vec![reading("energy", 500.0, t - MIN)],
            reading("energy", 499.0, t),
            "counter_backwards",
        ),
    ];
    for (what, setup, r, expected) in cases {
        let mut p = pipeline();
        for s in setup {
            let out = feed_at(&mut p, s, t);
            assert!(
                out.dead_letters.is_empty(),
                "{what}: setup rejected: {:?}",
                out.dead_letters
            );
        }
        let out = feed_at(&mut p, r, t);
        assert_eq!(rejected(&out), Some(expected), "{what}");
        assert!(out.accepted.is_empty(), "{what}: nothing accepted");
        let d = &out.dead_letters[0];
        assert!(!d.detail.is_empty(), "{what}: a reason has a detail");
        assert_eq!(&d.raw[..], b"raw", "{what}: the raw input is kept");
        assert_eq!(out.stats.rejected, vec![(expected, 1)], "{what}: counted");
    }
}

#[test]
fn an_exact_redelivery_is_a_replay_not_an_error() {
    let mut p = pipeline();
    let first = feed_v(&mut p, "level", 11.0, t0());
    assert_eq!(events(&first, "level").len(), 1);
    let again = feed_v(&mut p, "level", 11.0, t0());
    assert!(again.dead_letters.is_empty(), "{:?}", again.dead_letters);
    assert_eq!(
        again.accepted.len(),
        1,
        "passed on; the store keeps one point"
    );
    assert_eq!(again.stats.replayed, 1);
    assert!(
        again.events.is_empty() && again.alerts.is_empty(),
        "not evaluated twice"
    );
}

#[test]
fn unknown_sensor_policy_reject() {
    let mut p = pipeline_with("[validation]\nunknown_sensor = \"reject\"\n");
    let out = feed_v(&mut p, "level", 5.0, t0());
    assert_eq!(rejected(&out), Some("unknown_sensor"));
}

#[test]
fn unknown_metric_policy_accept() {
    let mut p = pipeline_with("[validation]\nunknown_metric = \"accept\"\n");
    let out = feed_v(&mut p, "salinity", 5.0, t0());
    assert_eq!(out.accepted.len(), 1);
    assert_eq!(
        out.accepted[0].kind, "tk",
        "the kind is resolved for the store"
    );
}

#[test]
fn unit_alias_and_canonical_unit_are_accepted() {
    let mut p = pipeline();
    for (i, u) in ["kWh", "kW.h"].iter().enumerate() {
        let mut r = reading("energy", 10.0 + i as f64, t0() + i as i64 * MIN);
        r.unit = Some((*u).into());
        let out = feed(&mut p, r);
        assert_eq!(out.accepted.len(), 1, "unit {u}");
    }
}

#[test]
fn new_sensor_is_registered_once_with_its_tags() {
    let mut p = pipeline();
    let mut r = reading("level", 5.0, t0());
    r.tags = Some(Arc::from(vec![("district".into(), "清城区".into())]));
    let out = feed(&mut p, r);
    assert_eq!(out.new_sensors.len(), 1);
    assert_eq!(out.new_sensors[0].kind, "tk");
    let tags = out.new_sensors[0].tags.as_ref().expect("tags");
    assert_eq!(tags[0].1, "清城区");
    let out = feed_v(&mut p, "level", 5.0, t0() + MIN);
    assert!(out.new_sensors.is_empty());
}

/// Unlisted sensors that bring the same tags share one profile; each still gets its own
/// tags on its readings and in the registry.
#[test]
fn unlisted_sensors_with_the_same_tags_share_a_profile() {
    let mut p = pipeline();
    let tagged = |sensor: &str, district: &str| {
        let mut r = Reading::new(sensor, "tk", "level", 5.0, t0());
        r.tags = Some(Arc::from(vec![("district".into(), district.into())]));
        r
    };
    for (sensor, district) in [("a", "x"), ("b", "x"), ("c", "y"), ("d", "y"), ("e", "x")] {
        let out = feed(&mut p, tagged(sensor, district));
        let registered = out.new_sensors[0].tags.as_ref().map(|t| t[0].1.to_string());
        let stored = out.accepted[0].tags.as_ref().map(|t| t[0].1.to_string());
        assert_eq!(registered.as_deref(), Some(district));
        assert_eq!(stored.as_deref(), Some(district));
    }
    let profile = |id: &str| {
        p.sensors
            .get(id)
            .map(|s| s.profile.clone())
            .expect("known sensor")
    };
    assert!(Arc::ptr_eq(&profile("a"), &profile("b")));
    assert!(Arc::ptr_eq(&profile("a"), &profile("e")));
    assert!(Arc::ptr_eq(&profile("c"), &profile("d")));
    assert!(!Arc::ptr_eq(&profile("a"), &profile("c")));
    assert_eq!(p.shared_profiles.len(), 2);
}

#[test]
fn counter_rollover_is_accepted() {
    let mut p = pipeline();
    assert!(feed_v(&mut p, "energy", 99_990.0, t0())
        .dead_letters
        .is_empty());
    let out = feed_v(&mut p, "energy", 5.0, t0() + MIN);
    assert_eq!(out.accepted.len(), 1, "{:?}", out.dead_letters);
}

#[test]
fn counter_backwards_raises_a_fault_that_clears() {
    let mut p = pipeline();
    feed_v(&mut p, "energy", 500.0, t0());
    let out = feed_v(&mut p, "energy", 10.0, t0() + MIN);
    assert_eq!(rejected(&out), Some("counter_backwards"));
    assert_eq!(
        events(&out, FAULT_RULE),
        vec![(AlertEventKind::Raised, Severity::Info)]
    );
    let out = feed_v(&mut p, "energy", 501.0, t0() + 2 * MIN);
    assert_eq!(
        events(&out, FAULT_RULE),
        vec![(AlertEventKind::Resolved, Severity::Info)]
    );
}

#[test]
fn spike_is_suspect_stored_and_kept_from_rules() {
    let mut p = pipeline();
    feed_v(&mut p, "level", 5.0, t0());
    // 6 m/h allowed: a 7 m jump in a minute is no river
    let out = feed_v(&mut p, "level", 12.5, t0() + MIN);
    assert_eq!(out.accepted.len(), 1);
    assert_eq!(out.accepted[0].quality, Quality::Suspect);
    assert_eq!(out.stats.suspect, 1);
    assert!(
        events(&out, "level").is_empty(),
        "suspect readings do not drive rules"
    );
    assert_eq!(
        events(&out, FAULT_RULE),
        vec![(AlertEventKind::Raised, Severity::Info)]
    );
}

#[test]
fn slow_noise_on_a_fast_device_is_not_a_spike() {
    let mut p = pipeline();
    feed_v(&mut p, "level", 5.0, t0());
    // one second later, 5 cm of noise: within a minute's worth of 6 m/h
    let out = feed_v(&mut p, "level", 5.05, t0() + 1000);
    assert_eq!(out.accepted[0].quality, Quality::Good);
}

#[test]
fn suspect_policy_store_and_evaluate_drives_rules() {
    let mut p = pipeline_with("[validation]\nsuspect = \"store_and_evaluate\"\n");
    feed_v(&mut p, "level", 5.0, t0());
    let out = feed_v(&mut p, "level", 12.5, t0() + MIN);
    assert_eq!(out.accepted[0].quality, Quality::Suspect);
    assert_eq!(
        events(&out, "level"),
        vec![(AlertEventKind::Raised, Severity::Critical)]
    );
}

#[test]
fn suspect_policy_reject_dead_letters() {
    let mut p = pipeline_with("[validation]\nsuspect = \"reject\"\n");
    feed_v(&mut p, "level", 5.0, t0());
    let out = feed_v(&mut p, "level", 12.5, t0() + MIN);
    assert_eq!(rejected(&out), Some("spike"));
}

#[test]
fn flatline_needs_count_and_duration() {
    let mut p = pipeline();
    let mut qualities = vec![];
    // 3 identical values are enough by count, but not before 10 minutes have passed
    for i in 0..6 {
        let out = feed_v(&mut p, "level", 4.2, t0() + i * 4 * MIN);
        qualities.push(out.accepted[0].quality);
    }
    use Quality::*;
    assert_eq!(qualities, vec![Good, Good, Good, Suspect, Suspect, Suspect]);
    let out = feed_v(&mut p, "level", 4.3, t0() + 24 * MIN);
    assert_eq!(out.accepted[0].quality, Good);
    assert_eq!(
        events(&out, FAULT_RULE),
        vec![(AlertEventKind::Resolved, Severity::Info)]
    );
}

/// A run's span is kept in 32-bit milliseconds from the last reading: a month (past what 31
/// bits hold) is measured exactly, and a run longer than the 49.7 days it holds stays long.
#[test]
fn flatline_spans_of_weeks_are_measured() {
    let mut p = pipeline_with("[validation]\nflatline_duration = \"30d\"\n");
    let day = 24 * 60 * MIN;
    let mut qualities = vec![];
    for days in [0, 10, 20, 29, 30, 60, 90] {
        let out = feed_v(&mut p, "level", 4.2, t0() + days * day);
        qualities.push(out.accepted[0].quality);
    }
    use Quality::*;
    assert_eq!(
        qualities,
        vec![Good, Good, Good, Good, Suspect, Suspect, Suspect]
    );
}

#[test]
fn out_of_order_is_stored_but_not_evaluated() {
    let mut p = pipeline();
    feed_v(&mut p, "level", 5.0, t0() + 10 * MIN);
    let out = feed_v(&mut p, "level", 11.0, t0() + 5 * MIN);
    assert_eq!(out.accepted.len(), 1);
    assert!(out.events.is_empty());
}

/// Threshold levels with escalation, de-escalation and a deadband before the clear.
#[test]
fn threshold_lifecycle_with_hysteresis() {
    use AlertEventKind::*;
    use Severity::*;
    let mut p = pipeline();
    // (value, the events of the `level` rule it causes)
    let steps: Vec<(f64, Vec<(AlertEventKind, Severity)>)> = vec![
        (9.9, vec![]),
        (10.0, vec![(Raised, Warning)]),
        (10.5, vec![]),
        (12.1, vec![(Escalated, Critical)]),
        (11.6, vec![]), // within the deadband of the critical level 12
        (11.4, vec![(Deescalated, Warning)]),
        (9.6, vec![]), // within the deadband of the warning level 10
        (9.4, vec![(Resolved, Warning)]),
        (9.9, vec![]),
    ];
    for (i, (v, expected)) in steps.into_iter().enumerate() {
        // half an hour apart, so that no step is a spike at 6 m/h
        let out = feed_v(&mut p, "level", v, t0() + i as i64 * 30 * MIN);
        assert_eq!(events(&out, "level"), expected, "step {i}: value {v}");
    }
}

#[test]
fn repeated_breaches_update_one_alert() {
    let mut p = pipeline();
    let mut raised = 0;
    let mut last = None;
    for i in 0..5 {
        let out = feed_v(&mut p, "level", 10.0 + i as f64 * 0.1, t0() + i * 10 * MIN);
        raised += events(&out, "level").len();
        last = out.alerts.into_iter().find(|a| a.rule == "level");
    }
    assert_eq!(raised, 1, "one Raised event, no more");
    let a = last.expect("the alert's state is in every output that changed it");
    assert_eq!(a.count, 5);
    assert!((a.peak - 10.4).abs() < 1e-9);
    assert!((a.value - 10.4).abs() < 1e-9);
    assert_eq!(a.started_at, t0());
    assert_eq!(a.updated_at, t0() + 40 * MIN);
    let active: Vec<_> = p
        .active_alerts()
        .into_iter()
        .filter(|a| a.rule == "level")
        .collect();
    assert_eq!(active.len(), 1);
}

#[test]
fn outside_band_rule_alerts_on_either_side() {
    use AlertEventKind::*;
    let mut p = pipeline();
    let got: Vec<_> = [7.0, 5.5, 7.0, 9.5, 7.0]
        .iter()
        .enumerate()
        .map(|(i, v)| events(&feed_v(&mut p, "ph", *v, t0() + i as i64 * 10 * MIN), "ph"))
        .collect();
    assert_eq!(
        got,
        vec![
            vec![],
            vec![(Raised, Severity::Warning)],
            vec![(Resolved, Severity::Warning)],
            vec![(Raised, Severity::Warning)],
            vec![(Resolved, Severity::Warning)],
        ]
    );
}

#[test]
fn for_duration_delays_the_raise_and_a_dip_resets_it() {
    let mut p = pipeline();
    let g = |p: &mut Pipeline, v, m| events(&feed_v(p, "gas", v, t0() + m * MIN), "gas");
    assert!(g(&mut p, 30.0, 0).is_empty());
    assert!(g(&mut p, 30.0, 5).is_empty());
    assert!(g(&mut p, 10.0, 8).is_empty(), "the dip resets the clock");
    assert!(g(&mut p, 30.0, 9).is_empty());
    assert!(g(&mut p, 30.0, 18).is_empty(), "9 minutes is not 10");
    assert_eq!(
        g(&mut p, 31.0, 19),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
}

#[test]
fn window_sum_raises_the_rainstorm_levels() {
    use AlertEventKind::*;
    let mut p = pipeline();
    let mut got = vec![];
    // 10 mm every 10 minutes: 50 mm after 5 reports, 100 mm after 10
    for i in 0..12 {
        let out = feed_v(&mut p, "rain", 10.0, t0() + i * 10 * MIN);
        got.extend(events(&out, "rain_3h"));
    }
    assert_eq!(
        got,
        vec![(Raised, Severity::Major), (Escalated, Severity::Critical)]
    );
    // dry for 3 hours: the readings fall out of the window and the alert clears
    let mut later = vec![];
    for i in 12..40 {
        let out = feed_v(&mut p, "rain", 0.0, t0() + i * 10 * MIN);
        later.extend(events(&out, "rain_3h"));
    }
    assert_eq!(
        later,
        vec![(Deescalated, Severity::Major), (Resolved, Severity::Major)]
    );
}

#[test]
fn rate_of_change_per_hour() {
    let mut p = pipeline();
    assert!(events(&feed_v(&mut p, "level", 5.0, t0()), "rise").is_empty());
    // +0.2 m in 30 min = 0.4 m/h
    assert!(events(&feed_v(&mut p, "level", 5.2, t0() + 30 * MIN), "rise").is_empty());
    // +0.6 m over the hour since the first reading = 0.6 m/h
    let out = feed_v(&mut p, "level", 5.6, t0() + 60 * MIN);
    assert_eq!(
        events(&out, "rise"),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
    let a = &out.events[0].alert;
    assert!(
        (a.value - 0.6).abs() < 1e-9,
        "the alert carries the rate, got {}",
        a.value
    );
    let out = feed_v(&mut p, "level", 5.65, t0() + 90 * MIN);
    assert_eq!(
        events(&out, "rise"),
        vec![(AlertEventKind::Resolved, Severity::Warning)]
    );
}

#[test]
fn schedule_limits_by_local_time_across_midnight() {
    // (local hour:minute offset from 2026-11-22 00:00 +08:00, dB, alert active afterwards)
    let cases = [
        (-2 * 60, 55.0, true),     // 22:00 the day before: night limit 50
        (-1, 55.0, true),          // 23:59
        (0, 55.0, true),           // midnight
        (5 * 60 + 59, 55.0, true), // 05:59
        (6 * 60, 55.0, false),     // 06:00: day limit 60
        (12 * 60, 59.0, false),
        (12 * 60 + 1, 61.0, true),
        (21 * 60 + 59, 55.0, false),
    ];
    for (minute, db, active) in cases {
        let mut p = pipeline();
        feed_v(&mut p, "noise", db, t0() + minute * MIN);
        let is_active = p.active_alerts().iter().any(|a| a.rule == "noise");
        assert_eq!(is_active, active, "at minute {minute} with {db} dB");
    }
}

#[test]
fn deadman_raises_offline_and_the_next_reading_clears_it() {
    let mut p = pipeline();
    feed_v(&mut p, "level", 5.0, t0());
    assert!(p.tick(t0() + 9 * MIN).events.is_empty());
    let out = p.tick(t0() + 10 * MIN);
    assert_eq!(
        events(&out, OFFLINE_RULE),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
    assert!(p.tick(t0() + 20 * MIN).events.is_empty(), "raised once");
    let out = feed_v(&mut p, "level", 5.0, t0() + 21 * MIN);
    assert_eq!(
        events(&out, OFFLINE_RULE),
        vec![(AlertEventKind::Resolved, Severity::Warning)]
    );
}

fn device_health(p: &mut Pipeline, sensor: &str, down: Option<&str>, at: i64) -> Output {
    p.process(
        Batch {
            source: "modbus".into(),
            received_at: at,
            devices: vec![crate::model::DeviceHealth {
                sensor: sensor.into(),
                down: down.map(str::to_string),
                failures: 3,
                at,
            }],
            ..Batch::default()
        },
        at,
    )
}

#[test]
fn a_device_reported_down_raises_device_offline_until_it_answers_and_silences_the_deadman() {
    let mut p = pipeline_with("[sensors.meter]\nkind = \"tk\"\n");
    let out = device_health(&mut p, "meter", Some("no answer within 1s"), t0());
    assert_eq!(
        events(&out, DEVICE_RULE),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
    assert!(out.events[0].alert.message.contains("no answer within 1s"));
    assert_eq!(out.alerts.len(), 1, "the alert is stored");
    // The cause is known: the deadman does not add an `offline` alert of its own.
    assert!(p.tick(t0() + 60 * MIN).events.is_empty());
    // Reported down again (a restart of the source): no second alert.
    assert!(device_health(&mut p, "meter", Some("still"), t0() + MIN)
        .events
        .is_empty());
    let out = device_health(&mut p, "meter", None, t0() + 61 * MIN);
    assert_eq!(
        events(&out, DEVICE_RULE),
        vec![(AlertEventKind::Resolved, Severity::Warning)]
    );
    // Up for a device with nothing active, and news of a device nobody knows: nothing.
    assert!(device_health(&mut p, "meter", None, t0() + 62 * MIN).is_empty());
    assert!(device_health(&mut p, "ghost", Some("x"), t0()).is_empty());
}

#[test]
fn a_device_offline_alert_survives_a_restart_and_clears_on_the_first_good_poll() {
    let mut p = pipeline_with("[sensors.meter]\nkind = \"tk\"\n");
    let out = device_health(&mut p, "meter", Some("connection refused"), t0());
    let mut again = pipeline_with("[sensors.meter]\nkind = \"tk\"\n");
    let restored = again.restore_alerts(owned(&out.alerts), t0() + MIN);
    assert!(
        restored.is_empty(),
        "placed back, not resolved as an orphan"
    );
    assert_eq!(again.active_alerts().len(), 1);
    let out = device_health(&mut again, "meter", None, t0() + 2 * MIN);
    assert_eq!(
        events(&out, DEVICE_RULE),
        vec![(AlertEventKind::Resolved, Severity::Warning)]
    );
}

#[test]
fn the_gateways_own_rule_names_are_reserved() {
    let text = "[[catalog.tk.rules]]\nname = \"device_offline\"\nmetric = \"level\"\nabove = { warning = 1.0 }\n";
    let sources = [
        Source::Text {
            name: "test kind".into(),
            toml: TEST_KIND.into(),
        },
        Source::Text {
            name: "reserved".into(),
            toml: text.into(),
        },
    ];
    let err = load_with_env(&sources, Some(HashMap::new())).expect_err("reserved");
    assert!(err.to_string().contains("reserved"), "{err}");
}

#[test]
fn configured_sensor_that_never_reports_goes_offline() {
    let mut p = pipeline_with("[sensors.quiet]\nkind = \"tk\"\n");
    let out = p.tick(t0() + 10 * MIN);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].alert.sensor, "quiet");
}

#[test]
fn per_sensor_override_sets_a_stations_levels() {
    let mut p = pipeline_with("[sensors.s1]\nkind = \"tk\"\nrules.level = { above = { warning = 4.0, critical = 6.0 } }\n");
    let out = feed_v(&mut p, "level", 5.0, t0());
    assert_eq!(
        events(&out, "level"),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
    assert_eq!(out.events[0].alert.threshold, 4.0);
}

#[test]
fn ack_is_an_event_and_unknown_ids_are_refused() {
    let mut p = pipeline();
    let out = feed_v(&mut p, "level", 11.0, t0());
    let id = out.events[0].alert.id.clone();
    let out = p
        .ack(&id, "operator 7", "crew dispatched", t0() + MIN)
        .expect("active alert");
    assert_eq!(out.events[0].event, AlertEventKind::Acknowledged);
    let ack = out.alerts[0].ack.as_ref().expect("ack recorded");
    assert_eq!(
        (ack.by.as_str(), ack.comment.as_str()),
        ("operator 7", "crew dispatched")
    );
    assert_eq!(
        p.ack("nope", "x", "", t0()).err(),
        Some(AckError::NotActive)
    );
}

/// The alerts of an output as the store gives them back: owned, not shared.
fn owned(alerts: &[Arc<Alert>]) -> Vec<Alert> {
    alerts.iter().map(|a| Alert::clone(a)).collect()
}

#[test]
fn restored_alerts_are_updated_not_raised_again() {
    let mut first = pipeline();
    let out = feed_v(&mut first, "level", 11.0, t0());
    let stored: Vec<Alert> = owned(&out.alerts);
    assert_eq!(stored.len(), 1);

    let mut second = pipeline();
    let out = second.restore_alerts(stored.clone(), t0() + HOUR);
    assert!(out.events.is_empty());
    let out = feed_v(&mut second, "level", 11.5, t0() + HOUR);
    assert!(
        events(&out, "level").is_empty(),
        "no second Raised after a restart"
    );
    assert_eq!(out.alerts[0].id, stored[0].id);
    assert_eq!(out.alerts[0].count, 2);
    let out = feed_v(&mut second, "level", 9.0, t0() + 2 * HOUR);
    assert_eq!(
        events(&out, "level"),
        vec![(AlertEventKind::Resolved, Severity::Warning)]
    );
    assert_eq!(out.events[0].alert.id, stored[0].id);
}

/// An output carries the pipeline's own active alert, not a copy, and a later update copies
/// it first instead of changing what an earlier output (the hub, the board) still holds.
#[test]
fn outputs_share_the_active_alert_and_updates_copy_on_write() {
    let mut p = pipeline();
    let raised = feed_v(&mut p, "level", 11.0, t0());
    assert_eq!(
        events(&raised, "level"),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
    let held = raised.alerts[0].clone();
    assert!(Arc::ptr_eq(&held, &p.shared_active_alerts()[0]), "shared");

    let updated = feed_v(&mut p, "level", 11.2, t0() + HOUR);
    assert!(events(&updated, "level").is_empty());
    let now = &updated.alerts[0];
    assert_eq!(
        (now.id.as_str(), now.count, now.value),
        (held.id.as_str(), 2, 11.2)
    );
    assert_eq!(
        (held.count, held.value),
        (1, 11.0),
        "the earlier state is untouched"
    );
    assert!(Arc::ptr_eq(now, &p.shared_active_alerts()[0]));

    let acked = p.ack(&held.id, "ops", "seen", t0() + HOUR).expect("active");
    assert!(Arc::ptr_eq(&acked.alerts[0], &p.shared_active_alerts()[0]));
    assert_eq!(now.ack, None, "the update before the ack is untouched");

    let resolved = feed_v(&mut p, "level", 9.0, t0() + 2 * HOUR);
    assert_eq!(resolved.alerts[0].state, AlertState::Resolved);
    assert_eq!(acked.alerts[0].state, AlertState::Active);
    assert_eq!(
        acked.alerts[0].ack.as_ref().map(|a| a.by.as_str()),
        Some("ops")
    );
    assert!(p.shared_active_alerts().is_empty());
}

#[test]
fn restored_window_alert_is_not_cleared_by_a_partial_window() {
    let mut first = pipeline();
    let mut stored = vec![];
    for i in 0..6 {
        stored.extend(owned(
            &feed_v(&mut first, "rain", 10.0, t0() + i * 10 * MIN).alerts,
        ));
    }
    let mut second = pipeline();
    second.restore_alerts(stored, t0() + HOUR);
    // a small reading after the restart: the window holds only it, but the storm is still on
    let out = feed_v(&mut second, "rain", 1.0, t0() + HOUR);
    assert!(events(&out, "rain_3h").is_empty());
    assert_eq!(second.active_alerts().len(), 1);
}

#[test]
fn orphaned_alert_is_resolved_at_restore() {
    let mut first = pipeline();
    let out = feed_v(&mut first, "level", 11.0, t0());
    let mut stored = owned(&out.alerts);
    stored[0].rule = "gone".into();
    let mut second = pipeline();
    let out = second.restore_alerts(stored, t0() + HOUR);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].event, AlertEventKind::Resolved);
}

// Regression tests from the review of issue 2, each named after what it guards against.

#[test]
fn rate_noise_over_a_short_span_is_not_a_flood() {
    let mut p = pipeline();
    // 1 cm in one minute would be 0.6 m/h, but a minute is too short a span to tell
    for (i, v) in [10.00, 10.01, 10.00, 10.01].iter().enumerate() {
        let out = feed_v(&mut p, "level", *v, t0() + i as i64 * MIN);
        assert!(events(&out, "rise").is_empty(), "reading {i}");
    }
}

#[test]
fn rejected_first_reading_leaves_no_sensor_behind() {
    let mut p = pipeline();
    let before = p.sensor_count();
    let out = feed_v(&mut p, "ph", 17.0, t0());
    assert_eq!(rejected(&out), Some("out_of_range"));
    assert!(out.new_sensors.is_empty());
    assert_eq!(p.sensor_count(), before);
    assert!(
        p.tick(t0() + HOUR).events.is_empty(),
        "no deadman for a sensor never accepted"
    );
}

#[test]
fn deadman_runs_on_arrival_time_not_on_a_slow_device_clock() {
    let mut p = pipeline();
    // the device's clock is 40 minutes slow; its readings arrive on time
    let now = t0();
    feed_at(&mut p, reading("level", 5.0, now - 40 * MIN), now);
    assert!(p.tick(now + 9 * MIN).events.is_empty());
    feed_at(&mut p, reading("level", 5.0, now - 35 * MIN), now + 5 * MIN);
    assert!(p.tick(now + 14 * MIN).events.is_empty());
}

#[test]
fn a_spike_does_not_become_the_baseline() {
    let mut p = pipeline();
    feed_v(&mut p, "level", 2.0, t0());
    assert_eq!(
        feed_v(&mut p, "level", 7.0, t0() + 10_000).accepted[0].quality,
        Quality::Suspect
    );
    let out = feed_v(&mut p, "level", 2.05, t0() + 20_000);
    assert_eq!(
        out.accepted[0].quality,
        Quality::Good,
        "judged against 2.0, not the glitch"
    );
}

#[test]
fn a_payload_is_kept_once_however_many_of_its_readings_are_rejected() {
    let mut p = pipeline();
    let readings = (0..3)
        .map(|i| reading("ph", 17.0 + i as f64, t0() + i))
        .collect();
    let out = p.process(
        Batch {
            source: "test".into(),
            received_at: t0(),
            readings,
            payloads: vec![Bytes::from_static(b"the payload")],
            dead_letters: vec![],
            devices: vec![],
        },
        t0(),
    );
    let raws: Vec<usize> = out.dead_letters.iter().map(|d| d.raw.len()).collect();
    assert_eq!(raws, vec![11, 0, 0]);
}

#[test]
fn a_mean_of_a_few_readings_does_not_raise() {
    let mut p = pipeline();
    let out = feed_v(&mut p, "pm", 120.0, t0());
    assert!(
        events(&out, "pm_1h").is_empty(),
        "one reading is not an hourly mean"
    );
    let mut raised = None;
    for i in 1..=60 {
        // not quite constant, or the flat-line check would call it stuck
        let out = feed_v(&mut p, "pm", 120.0 + (i % 2) as f64, t0() + i * MIN);
        if !events(&out, "pm_1h").is_empty() {
            raised = Some(i);
            break;
        }
    }
    assert_eq!(
        raised,
        Some(50),
        "raised once five sixths of the hour are covered"
    );
}

#[test]
fn escalation_clears_the_acknowledgement() {
    let mut p = pipeline();
    let out = feed_v(&mut p, "level", 10.5, t0());
    let id = out.events[0].alert.id.clone();
    p.ack(&id, "op", "", t0()).expect("ack");
    let out = feed_v(&mut p, "level", 12.5, t0() + 30 * MIN);
    let a = out
        .alerts
        .iter()
        .find(|a| a.id == id)
        .expect("updated alert");
    assert_eq!(a.severity, Severity::Critical);
    assert!(a.ack.is_none(), "a worse alert needs a new acknowledgement");
}

#[test]
fn a_replayed_raise_after_restart_gets_a_new_id() {
    let mut first = pipeline();
    let a = feed_v(&mut first, "level", 11.0, t0()).events[0]
        .alert
        .id
        .clone();
    // the gateway restarts a minute later and the same reading is delivered again
    let config = load_with_env(
        &[Source::Text {
            name: "test kind".into(),
            toml: TEST_KIND.into(),
        }],
        Some(HashMap::new()),
    )
    .expect("test config");
    let catalog = Arc::new(Catalog::from_config(&config));
    let mut second = Pipeline::new(catalog, Settings::from_config(&config), t0() + MIN);
    let b = feed_v(&mut second, "level", 11.0, t0()).events[0]
        .alert
        .id
        .clone();
    assert_ne!(a, b);
}

proptest! {
    /// An alert is only ever resolved by a reading that meets the clear condition: the value is
    /// back below the lowest level by more than the deadband.
    #[test]
    fn rules_never_resolve_without_the_clear_condition(values in proptest::collection::vec(0.0f64..20.0, 1..60)) {
        let mut p = pipeline();
        for (i, v) in values.iter().enumerate() {
            let out = feed_v(&mut p, "level", *v, t0() + i as i64 * 10 * MIN);
            for e in out.events.iter().filter(|e| e.alert.rule == "level") {
                match e.event {
                    AlertEventKind::Resolved => prop_assert!(*v < 10.0 - 0.5, "resolved at {}", v),
                    AlertEventKind::Raised => prop_assert!(*v >= 10.0, "raised at {}", v),
                    _ => {}
                }
            }
            let active = p.active_alerts().into_iter().filter(|a| a.rule == "level").count();
            prop_assert!(active <= 1, "one active alert per sensor and rule");
        }
    }
}

/// The benches' rules-only entry point runs the same rules as `process` on readings that
/// `process` accepted, and skips what it cannot judge.
#[test]
fn evaluate_rules_only_raises_what_process_would() {
    // Register the sensor through `process` with a quiet reading.
    let mut p = pipeline();
    let quiet = feed_v(&mut p, "level", 5.0, t0());
    assert!(quiet.events.is_empty());
    // Two hours later, so that the rise is no spike for `process` either.
    let mut breach = reading("level", 12.5, t0() + 2 * HOUR);
    breach.kind = "tk".into();
    let unknown = Reading::new("nobody", "tk", "level", 99.0, t0() + 2 * HOUR);
    let out = p.evaluate_rules_only(&[breach.clone(), unknown]);
    assert_eq!(
        events(&out, "level"),
        [(AlertEventKind::Raised, Severity::Critical)],
        "the breach raises, the unknown sensor is skipped"
    );

    // `process` on a pipeline in the same state raises the same alert.
    let mut q = pipeline();
    feed_v(&mut q, "level", 5.0, t0());
    let via_process = feed(&mut q, breach);
    assert_eq!(events(&via_process, "level"), events(&out, "level"));
}

fn feed_from(p: &mut Pipeline, source: &str, readings: Vec<Reading>, now: i64) -> Output {
    p.process(
        Batch {
            source: source.into(),
            received_at: now,
            readings,
            payloads: vec![Bytes::from_static(b"raw")],
            dead_letters: vec![],
            devices: vec![],
        },
        now,
    )
}

fn reasons(out: &Output) -> Vec<(&'static str, String)> {
    out.dead_letters
        .iter()
        .map(|d| (d.reason, d.sensor.as_deref().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn new_sensors_past_max_sensors_are_rejected_and_leave_no_state() {
    let t = t0();
    let mut p = pipeline_with("[validation]\nmax_sensors = 3\n");
    let at = |id: &str, v: f64| Reading::new(id, "tk", "level", v, t + v as i64 * MIN);
    // a new id rejected for another reason takes no place
    let out = feed_from(&mut p, "test", vec![at("bad", 1000.0)], t);
    assert_eq!(reasons(&out), vec![("out_of_range", "bad".to_string())]);
    let out = feed_from(
        &mut p,
        "test",
        vec![at("a", 1.0), at("b", 1.0), at("c", 1.0), at("d", 1.0)],
        t,
    );
    assert_eq!(out.stats.accepted, 3);
    assert_eq!(reasons(&out), vec![("too_many_sensors", "d".to_string())]);
    assert!(
        out.dead_letters[0]
            .detail
            .contains("validation.max_sensors"),
        "{}",
        out.dead_letters[0].detail
    );
    let registered: Vec<&str> = out.new_sensors.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(registered, vec!["a", "b", "c"]);
    assert_eq!(p.sensor_count(), 3);
    // the known ones carry on; new ones stay out
    let out = feed_from(
        &mut p,
        "test",
        vec![at("a", 2.0), at("e", 1.0), at("c", 2.0)],
        t + MIN,
    );
    assert_eq!(out.stats.accepted, 2);
    assert_eq!(reasons(&out), vec![("too_many_sensors", "e".to_string())]);
    assert!(out.new_sensors.is_empty());
    assert_eq!(p.sensor_count(), 3);
}

#[test]
fn a_new_sensor_id_over_max_sensor_id_len_is_rejected_with_its_start_kept() {
    let t = t0();
    let mut p = pipeline_with("[validation]\nmax_sensor_id_len = 8\n");
    let out = feed_from(
        &mut p,
        "test",
        vec![
            Reading::new("abcdefgh", "tk", "level", 1.0, t),
            Reading::new("abcdefghi", "tk", "level", 1.0, t),
            Reading::new("abcdefgé", "tk", "level", 1.0, t),
        ],
        t,
    );
    assert_eq!(out.stats.accepted, 1);
    assert_eq!(
        reasons(&out),
        vec![
            ("sensor_id_too_long", "abcdefgh".to_string()),
            ("sensor_id_too_long", "abcdefg".to_string()),
        ]
    );
    assert_eq!(
        out.dead_letters[0].detail,
        "a sensor id of 9 bytes is longer than validation.max_sensor_id_len (8)"
    );
    assert_eq!(p.sensor_count(), 1);
}

#[test]
fn each_sensor_is_rate_limited_over_mqtt_only() {
    let t = t0();
    let mut p = pipeline_with("[validation]\nsensor_rate = 1.0\nsensor_burst = 3\n");
    let five = |id: &str, from: i64| -> Vec<Reading> {
        (0..5)
            .map(|i| Reading::new(id, "tk", "rain", 1.0, from + i * 1000))
            .collect()
    };
    let out = feed_from(&mut p, "mqtt:x", five("m1", t - HOUR), t);
    assert_eq!(out.stats.accepted, 3, "the burst");
    assert_eq!(
        reasons(&out),
        vec![
            ("rate_limited", "m1".to_string()),
            ("rate_limited", "m1".to_string())
        ]
    );
    assert!(
        out.dead_letters[0].detail.contains("in 1000 ms"),
        "{}",
        out.dead_letters[0].detail
    );
    // another sensor has its own bucket
    let out = feed_from(&mut p, "mqtt:x", five("m2", t - HOUR).split_off(2), t);
    assert_eq!(out.stats.accepted, 3);
    // a second later, one more token
    let out = feed_from(&mut p, "mqtt:x", five("m1", t - HOUR + MIN), t + 1000);
    assert_eq!(out.stats.accepted, 1);
    assert_eq!(out.dead_letters.len(), 4);
    // HTTP is limited per client address instead, and Modbus not at all
    let out = feed_from(&mut p, "http", five("m1", t - HOUR + 2 * MIN), t + 1000);
    assert_eq!(out.stats.accepted, 5);
    let out = feed_from(&mut p, "modbus", five("m1", t - HOUR + 3 * MIN), t + 1000);
    assert_eq!(out.stats.accepted, 5);
}

#[test]
fn restored_sensors_respect_max_sensors() {
    let t = t0();
    let mut p = pipeline_with("[validation]\nmax_sensors = 2\n");
    for id in ["r1", "r2", "r3"] {
        p.restore_sensor(id, "tk", None, t);
    }
    assert_eq!(p.sensor_count(), 2);
    let out = feed_from(
        &mut p,
        "test",
        vec![
            Reading::new("r1", "tk", "level", 1.0, t),
            Reading::new("r3", "tk", "level", 1.0, t),
        ],
        t,
    );
    assert_eq!(out.stats.accepted, 1);
    assert_eq!(reasons(&out), vec![("too_many_sensors", "r3".to_string())]);
}

/// A sensor's alerts and `for` waits share one place (`SensorAlerts`): many at once must each
/// keep their own state, be found by their ack, and resolve alone. The `for` wait of `gas` is
/// the only thing left there while `level` resolves, and must survive it.
#[test]
fn one_sensors_alerts_and_waits_live_side_by_side() {
    let mut p = pipeline();
    let at = |m: i64| t0() + m * MIN;
    assert_eq!(
        events(&feed_v(&mut p, "level", 10.2, at(0)), "level"),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
    assert!(events(&feed_v(&mut p, "gas", 30.0, at(1)), "gas").is_empty());
    assert_eq!(
        // slowly enough not to be a spike
        events(&feed_v(&mut p, "level", 9.4, at(10)), "level"),
        vec![(AlertEventKind::Resolved, Severity::Warning)]
    );
    assert_eq!(
        events(&feed_v(&mut p, "gas", 30.0, at(11)), "gas"),
        vec![(AlertEventKind::Raised, Severity::Warning)],
        "the wait that began at minute 1 was kept while level resolved"
    );
    assert_eq!(
        events(&feed_v(&mut p, "ph", 5.0, at(12)), "ph"),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
    feed_v(&mut p, "energy", 500.0, at(13));
    let out = feed_v(&mut p, "energy", 10.0, at(14));
    assert_eq!(
        events(&out, FAULT_RULE),
        vec![(AlertEventKind::Raised, Severity::Info)]
    );
    let out = p.tick(at(24));
    assert_eq!(
        events(&out, OFFLINE_RULE),
        vec![(AlertEventKind::Raised, Severity::Warning)]
    );
    let mut active: Vec<(String, String)> = p
        .active_alerts()
        .into_iter()
        .map(|a| (a.rule.to_string(), a.id))
        .collect();
    active.sort();
    let rules: Vec<&str> = active.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(rules, ["gas", "offline", "ph", "sensor_fault"]);
    for (rule, id) in &active {
        let out = p.ack(id, "op", rule, at(25)).expect("active alert");
        assert_eq!(out.alerts.len(), 1);
        let a = &out.alerts[0];
        assert_eq!(
            (a.id.as_str(), a.rule.as_str()),
            (id.as_str(), rule.as_str())
        );
        assert_eq!(
            out.alerts[0].ack.as_ref().map(|a| a.comment.as_str()),
            Some(rule.as_str())
        );
    }
    // A good counter reading clears the fault and, being a reading, the deadman.
    let out = feed_v(&mut p, "energy", 501.0, at(26));
    assert_eq!(
        events(&out, FAULT_RULE),
        vec![(AlertEventKind::Resolved, Severity::Info)]
    );
    assert_eq!(
        events(&out, OFFLINE_RULE),
        vec![(AlertEventKind::Resolved, Severity::Warning)]
    );
    let out = feed_v(&mut p, "ph", 7.0, at(27));
    assert_eq!(
        events(&out, "ph"),
        vec![(AlertEventKind::Resolved, Severity::Warning)]
    );
    let left: Vec<String> = p
        .active_alerts()
        .into_iter()
        .map(|a| a.rule.to_string())
        .collect();
    assert_eq!(left, ["gas"]);
    let acked = p.active_alerts().pop().and_then(|a| a.ack).map(|a| a.by);
    assert_eq!(
        acked.as_deref(),
        Some("op"),
        "gas keeps its ack through the others' changes"
    );
}

/// Rules of every sort on two metrics, interleaved: each keeps its own window, candidates or
/// history (a sensor keeps these only for the rules that need them, found by counting), so
/// each raises and clears exactly as it does alone in a kind of its own.
#[test]
fn mixed_rules_each_behave_as_they_do_alone() {
    let rules = [
        ("a_now", "a", "above = 70.0"),
        (
            "b_max",
            "b",
            "window = \"1h\"\naggregate = \"max\"\nabove = 90.0",
        ),
        ("a_rate", "a", "rate_per = \"1h\"\nabove = 30.0"),
        (
            "b_sum",
            "b",
            "window = \"1h\"\naggregate = \"sum\"\nabove = 600.0",
        ),
        (
            "a_min",
            "a",
            "window = \"1h\"\naggregate = \"min\"\nbelow = -15.0",
        ),
        ("b_now", "b", "above = 85.0"),
        (
            "a_mean",
            "a",
            "window = \"2h\"\naggregate = \"mean\"\nabove = 30.0",
        ),
    ];
    let kind_with = |which: &[(&str, &str, &str)]| {
        let mut toml = String::from("[catalog.mx]\nname = { en = \"Mixed\" }\n");
        for m in ["a", "b"] {
            toml += &format!(
                "[catalog.mx.metrics.{m}]\nname = {{ en = \"{m}\" }}\nmin = -1000.0\nmax = 1000.0\nflatline = false\n"
            );
        }
        for (name, metric, body) in which {
            toml += &format!(
                "[[catalog.mx.rules]]\nname = \"{name}\"\nmetric = \"{metric}\"\n{body}\n"
            );
        }
        let sources = [Source::Text {
            name: "mixed".into(),
            toml,
        }];
        let config = load_with_env(&sources, Some(HashMap::new())).expect("test config loads");
        let catalog = Arc::new(Catalog::from_config(&config));
        Pipeline::new(catalog, Settings::from_config(&config), t0())
    };
    let run = |p: &mut Pipeline| {
        let mut got: Vec<(String, AlertEventKind, Severity, u64, i64)> = vec![];
        for i in 0..60_i64 {
            let ts = t0() + i * 5 * MIN;
            for (metric, v) in [
                ("a", ((i * 37) % 101) as f64 - 20.0),
                ("b", ((i * 53) % 97) as f64),
            ] {
                let out = feed(p, Reading::new("x1", "mx", metric, v, ts));
                assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
                for e in out.events {
                    let a = e.alert;
                    got.push((
                        a.rule.to_string(),
                        e.event,
                        a.severity,
                        a.value.to_bits(),
                        e.at,
                    ));
                }
            }
        }
        got
    };
    let mixed = run(&mut kind_with(&rules));
    for rule in &rules {
        let alone = run(&mut kind_with(std::slice::from_ref(rule)));
        let here: Vec<_> = mixed.iter().filter(|e| e.0 == rule.0).cloned().collect();
        assert!(
            !alone.is_empty(),
            "{} raises something on this data",
            rule.0
        );
        assert_eq!(here, alone, "{} among the others and alone", rule.0);
    }
}

/// The per-sensor structs are held once per metric, rule or sensor, 100,000s of times: these
/// sizes are what BENCHMARKS.md's memory figures rest on, so growing one should be a choice.
#[test]
#[cfg(target_pointer_width = "64")]
fn per_sensor_state_stays_small() {
    use std::mem::size_of;
    assert_eq!(size_of::<MetricState>(), 72);
    assert_eq!(size_of::<WindowAgg>(), 16);
    assert_eq!(size_of::<Series>(), 32);
    assert_eq!(size_of::<SensorAlerts>(), 8);
    // With its id (24 bytes), since the map keeps only a 4-byte slot per bucket.
    assert!(
        size_of::<SensorState>() <= 120,
        "{}",
        size_of::<SensorState>()
    );
}

#[test]
fn rejected_new_sensors_leave_no_shared_profile_behind() {
    // A tagged reading from a new id that is then rejected (past max_sensors, or out of
    // range) must not keep its tags in the profile-sharing map: the tags come from outside
    // and the map lives as long as the process.
    let t = t0();
    let mut p = pipeline_with("[validation]\nmax_sensors = 1\n");
    let tagged = |id: &str, district: &str, v: f64| {
        let mut r = Reading::new(id, "tk", "level", v, t);
        r.tags = Some(Arc::from(vec![("district".into(), district.into())]));
        r
    };
    let out = feed(&mut p, tagged("bad", "x", 1000.0));
    assert_eq!(reasons(&out), vec![("out_of_range", "bad".to_string())]);
    assert!(p.shared_profiles.is_empty());
    let out = feed(&mut p, tagged("kept", "y", 1.0));
    assert_eq!(out.stats.accepted, 1);
    assert_eq!(p.shared_profiles.len(), 1);
    for i in 0..50 {
        let out = feed(&mut p, tagged(&format!("n{i}"), &format!("d{i}"), 1.0));
        assert_eq!(reasons(&out), vec![("too_many_sensors", format!("n{i}"))]);
    }
    assert_eq!(p.shared_profiles.len(), 1, "only the kept sensor's profile");
}

/// Duplicate detection as it was with full timestamps in the recent ring: the oracle for
/// the ring of offsets from the last reading.
#[derive(Default)]
struct FullTimeRing {
    last: Option<(i64, u64)>,
    recent: Vec<(i64, u64)>,
}

impl FullTimeRing {
    /// `Some(true)`: a replay, `Some(false)`: a conflicting duplicate, `None`: taken.
    fn check(&mut self, ts: i64, v: f64) -> Option<bool> {
        let bits = v.to_bits();
        let seen = (self.recent.iter().chain(&self.last)).find(|(t, _)| *t == ts);
        if let Some(&(_, b)) = seen {
            return Some(b == bits);
        }
        self.recent.push((ts, bits));
        if self.recent.len() > 4 {
            self.recent.remove(0);
        }
        if self.last.is_none_or(|(t, _)| ts >= t) {
            self.last = Some((ts, bits));
        }
        None
    }
}

proptest! {
    /// Within `validation.max_age` (7 days) the ring of time offsets tells replays and
    /// duplicates apart exactly as full timestamps did, readings out of order included.
    #[test]
    fn recent_offsets_catch_what_full_times_caught(
        readings in proptest::collection::vec((0..50_i64, prop_oneof![Just(1.0), Just(2.0)]), 1..60),
    ) {
        // the newest reading is 3 h after t0, the oldest 6 days before it
        let now = t0() + 3 * HOUR;
        let mut p = pipeline();
        let mut oracle = FullTimeRing::default();
        for (k, v) in readings {
            let ts = t0() - 6 * 24 * HOUR + k * 3 * HOUR;
            let out = feed_at(&mut p, reading("rain", v, ts), now);
            let got = match (out.stats.replayed, rejected(&out)) {
                (1, None) => Some(true),
                (0, Some("duplicate")) => Some(false),
                (0, None) => None,
                other => panic!("unexpected outcome {other:?}"),
            };
            prop_assert_eq!(got, oracle.check(ts, v), "at {}", ts);
        }
    }
}

/// A reading more than 24 days from the series' last is not remembered (its offset does not
/// fit 32 bits): with `max_age` raised that far, its conflicting redelivery is taken rather
/// than rejected as a duplicate, and the store's primary key keeps the first value.
#[test]
fn readings_far_from_the_last_are_not_remembered() {
    let mut p = pipeline_with("[validation]\nmax_age = \"60d\"\n");
    let t = t0();
    let old = t - 30 * 24 * HOUR;
    assert_eq!(
        feed_at(&mut p, reading("rain", 1.0, t), t).stats.accepted,
        1
    );
    assert_eq!(
        feed_at(&mut p, reading("rain", 1.0, old), t).stats.accepted,
        1
    );
    let again = feed_at(&mut p, reading("rain", 2.0, old), t);
    assert_eq!((again.stats.accepted, rejected(&again)), (1, None));
    // within reach, the same is a duplicate
    let near = t - 20 * 24 * HOUR;
    assert_eq!(
        feed_at(&mut p, reading("rain", 1.0, near), t)
            .stats
            .accepted,
        1
    );
    assert_eq!(
        rejected(&feed_at(&mut p, reading("rain", 2.0, near), t)),
        Some("duplicate")
    );
}

/// The ring's offsets move with the last reading: a reading remembered days before the
/// series moved on is still recognised, as a replay and as a conflict.
#[test]
fn remembered_readings_survive_the_series_moving_on() {
    let mut p = pipeline();
    let t = t0();
    let now = t + HOUR;
    for (i, ts) in [t - 5 * 24 * HOUR, t - 3 * 24 * HOUR, t]
        .into_iter()
        .enumerate()
    {
        let out = feed_at(&mut p, reading("rain", i as f64, ts), now);
        assert_eq!(out.stats.accepted, 1);
    }
    let replay = feed_at(&mut p, reading("rain", 0.0, t - 5 * 24 * HOUR), now);
    assert_eq!(replay.stats.replayed, 1);
    let conflict = feed_at(&mut p, reading("rain", 9.0, t - 3 * 24 * HOUR), now);
    assert_eq!(rejected(&conflict), Some("duplicate"));
}
