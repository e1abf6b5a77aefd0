//! Fleet behaviour checked on the payloads it produces, parsed back from JSON.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use citygate_sim::{is_counter, metrics, plausible_range, Fleet, FleetConfig, SimMessage, KINDS};

/// 2024-11-22T00:00:00Z, 08:00 in Guangdong.
const START: i64 = 1_732_233_600_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

struct Report {
    sensor: String,
    kind: String,
    ts: i64,
    values: BTreeMap<String, f64>,
}

fn parse(m: &SimMessage) -> Report {
    let v: serde_json::Value = serde_json::from_str(&m.payload).expect("payload is JSON");
    let obj = v.as_object().expect("payload is an object");
    let mut values = BTreeMap::new();
    for (k, val) in obj {
        if matches!(k.as_str(), "sensor" | "kind" | "ts" | "tags") {
            continue;
        }
        let x = val
            .as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number in {}", m.payload));
        values.insert(k.clone(), x);
    }
    let r = Report {
        sensor: obj["sensor"].as_str().expect("sensor").to_string(),
        kind: obj["kind"].as_str().expect("kind").to_string(),
        ts: obj["ts"].as_i64().expect("ts"),
        values,
    };
    assert_eq!(r.sensor, m.sensor);
    assert_eq!(r.kind, m.kind);
    assert_eq!(r.ts, m.ts_ms);
    r
}

fn fleet(per_kind: usize, interval_ms: i64, seed: u64, incidents: bool) -> Fleet {
    Fleet::new(FleetConfig {
        per_kind,
        interval_ms,
        seed,
        incidents,
        start_ms: START,
    })
}

/// Ticks every `step` from START for `span` and returns every report, parsed.
fn run(f: &mut Fleet, step: i64, span: i64) -> Vec<Report> {
    let mut out = Vec::new();
    let mut t = START;
    while t <= START + span {
        out.extend(f.tick(t).iter().map(parse));
        t += step;
    }
    out
}

fn by_sensor(reports: &[Report]) -> HashMap<&str, Vec<&Report>> {
    let mut map: HashMap<&str, Vec<&Report>> = HashMap::new();
    for r in reports {
        map.entry(r.sensor.as_str()).or_default().push(r);
    }
    map
}

#[test]
fn same_seed_same_payloads_other_seed_other_payloads() {
    let collect = |seed| {
        let mut f = fleet(2, 2_000, seed, true);
        (0..200)
            .flat_map(|i| f.tick(START + i * 500))
            .map(|m| m.payload)
            .collect::<Vec<_>>()
    };
    let a = collect(7);
    assert!(!a.is_empty());
    assert_eq!(a, collect(7));
    assert_ne!(a, collect(8));
}

#[test]
fn every_kind_and_district_is_present_with_unique_ids_and_tags() {
    let f = fleet(7, 2_000, 1, false);
    let kinds: HashSet<&str> = f.sensors().iter().map(|s| s.kind).collect();
    assert_eq!(kinds, KINDS.iter().copied().collect());
    let ids: HashSet<&str> = f.sensors().iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 7 * 13);
    let districts: HashSet<&str> = f
        .sensors()
        .iter()
        .flat_map(|s| {
            s.tags
                .iter()
                .filter(|(k, _)| k == "district")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    let expected = [
        "清城区",
        "清新区",
        "英德市",
        "连州市",
        "榕城区",
        "揭东区",
        "普宁市",
    ];
    assert_eq!(districts, expected.into_iter().collect());
    for s in f.sensors() {
        let keys: Vec<&str> = s.tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["district", "site"], "{}", s.id);
        assert_eq!(s.levels.is_some(), s.kind == "water_level", "{}", s.id);
        assert_eq!(
            s.water_class.is_some(),
            s.kind == "water_quality",
            "{}",
            s.id
        );
        assert_eq!(s.noise_class.is_some(), s.kind == "noise", "{}", s.id);
        if let Some(l) = s.levels {
            assert!(l.warning < l.guaranteed, "{}", s.id);
        }
    }
    assert!(f.sensors().iter().any(|s| s.id == "wq-qc-01"));
}

/// GB 3096 (day, night) limits of a class.
fn noise_limits(class: &str) -> (f64, f64) {
    match class {
        "0" => (50.0, 40.0),
        "1" => (55.0, 45.0),
        "2" => (60.0, 50.0),
        "3" => (65.0, 55.0),
        "4a" => (70.0, 55.0),
        _ => (70.0, 60.0),
    }
}

/// 48 simulated hours at 1-minute reports with incidents off: every value plausible, every
/// metric of the kind present, counters monotonic, no flat lines, and no default rule breached.
#[test]
fn normal_operation_over_48h_is_plausible_monotonic_and_quiet() {
    let mut f = fleet(7, MINUTE, 3, false);
    let sensors: HashMap<String, _> = f
        .sensors()
        .iter()
        .map(|s| (s.id.clone(), s.clone()))
        .collect();
    let reports = run(&mut f, MINUTE, 48 * HOUR);
    assert!(reports.len() >= 91 * 48 * 60, "{}", reports.len());

    for (id, series) in by_sensor(&reports) {
        let sensor = &sensors[id];
        let kind = sensor.kind;
        let mut expected: Vec<&str> = metrics(kind);
        expected.sort_unstable();
        let mut rain_window: VecDeque<(i64, f64)> = VecDeque::new();
        let mut pm25_window: VecDeque<(i64, f64)> = VecDeque::new();
        let mut runs: HashMap<&str, (f64, usize)> = HashMap::new();
        for (i, r) in series.iter().enumerate() {
            let names: Vec<&str> = r.values.keys().map(String::as_str).collect();
            assert_eq!(names, expected, "{id} metrics");
            for (m, &v) in &r.values {
                let (lo, hi) = plausible_range(kind, m).expect("known metric");
                assert!(
                    v.is_finite() && v >= lo && v <= hi,
                    "{id} {m}={v} outside {lo}..{hi}"
                );
                if i > 0 && is_counter(m) {
                    let prev = series[i - 1].values[m];
                    assert!(v >= prev, "{id} {m} went backwards {prev} -> {v}");
                }
                // flat line: 20 identical values in a row (20 minutes here)
                if m != "rainfall" {
                    let e = runs.entry(m.as_str()).or_insert((f64::NAN, 0));
                    *e = if e.0 == v { (v, e.1 + 1) } else { (v, 1) };
                    assert!(e.1 < 20, "{id} {m} stuck at {v}");
                }
            }
            let hour = ((r.ts + 8 * HOUR).rem_euclid(24 * HOUR)) as f64 / HOUR as f64;
            let day = (6.0..22.0).contains(&hour);
            match kind {
                "rainfall" => {
                    rain_window.push_back((r.ts, r.values["rainfall"]));
                    while rain_window
                        .front()
                        .is_some_and(|(t, _)| *t <= r.ts - 3 * HOUR)
                    {
                        rain_window.pop_front();
                    }
                    let sum: f64 = rain_window.iter().map(|(_, v)| v).sum();
                    assert!(sum < 50.0, "{id} 3h rain {sum}");
                }
                "water_level" => {
                    let levels = sensor.levels.expect("levels");
                    assert!(r.values["level"] < levels.warning, "{id} above warning");
                }
                "water_quality" => {
                    let (nh3, tp, dox, cod, codmn) = match sensor.water_class {
                        Some("II") => (0.5, 0.1, 6.0, 15.0, 4.0),
                        _ => (1.0, 0.2, 5.0, 20.0, 6.0),
                    };
                    let v = &r.values;
                    assert!(
                        v["ammonia_nitrogen"] <= nh3,
                        "{id} NH3-N {}",
                        v["ammonia_nitrogen"]
                    );
                    assert!(
                        v["total_phosphorus"] <= tp,
                        "{id} TP {}",
                        v["total_phosphorus"]
                    );
                    assert!(
                        v["dissolved_oxygen"] >= dox,
                        "{id} DO {}",
                        v["dissolved_oxygen"]
                    );
                    assert!(v["cod"] <= cod, "{id} COD {}", v["cod"]);
                    assert!(v["codmn"] <= codmn, "{id} CODMn {}", v["codmn"]);
                    assert!((6.0..=9.0).contains(&v["ph"]), "{id} pH {}", v["ph"]);
                }
                "gas_detector" => assert!(r.values["lel"] < 25.0, "{id} lel"),
                "electricity_meter" => {
                    for ph in ["voltage_a", "voltage_b", "voltage_c"] {
                        let v = r.values[ph];
                        assert!((198.0..=235.4).contains(&v), "{id} {ph}={v}");
                    }
                    let f = r.values["frequency"];
                    assert!((49.8..=50.2).contains(&f), "{id} frequency {f}");
                }
                "noise" => {
                    let (d, n) = noise_limits(sensor.noise_class.expect("class"));
                    let limit = if day { d } else { n };
                    assert!(
                        r.values["laeq"] <= limit,
                        "{id} {} dB at {hour:.2} h",
                        r.values["laeq"]
                    );
                }
                "air_quality" => {
                    pm25_window.push_back((r.ts, r.values["pm25"]));
                    while pm25_window
                        .front()
                        .is_some_and(|(t, _)| *t <= r.ts - 24 * HOUR)
                    {
                        pm25_window.pop_front();
                    }
                    let mean =
                        pm25_window.iter().map(|(_, v)| v).sum::<f64>() / pm25_window.len() as f64;
                    assert!(mean <= 75.0, "{id} pm25 24h mean {mean}");
                }
                _ => {}
            }
        }
    }
}

/// The catalog's spike limits (pH 2/h, DO 5/h, water °C 5/h) and the level rise rule
/// (0.5 m/h) hold between consecutive reports, at 2 s and at 1 min.
#[test]
fn normal_operation_changes_slower_than_physical_limits() {
    let limits = [
        ("water_quality", "ph", 2.0),
        ("water_quality", "dissolved_oxygen", 5.0),
        ("water_quality", "temperature", 5.0),
        ("water_level", "level", 0.5),
    ];
    for (interval, span) in [(2_000, 2 * HOUR), (MINUTE, 48 * HOUR)] {
        let mut f = fleet(7, interval, 5, false);
        let reports: Vec<Report> = run(&mut f, interval, span)
            .into_iter()
            .filter(|r| r.kind == "water_quality" || r.kind == "water_level")
            .collect();
        for (id, series) in by_sensor(&reports) {
            for pair in series.windows(2) {
                let hours = (pair[1].ts - pair[0].ts) as f64 / HOUR as f64;
                for (kind, metric, max) in limits {
                    if pair[0].kind != kind {
                        continue;
                    }
                    let rate = (pair[1].values[metric] - pair[0].values[metric]).abs() / hours;
                    assert!(
                        rate <= max,
                        "{id} {metric} moves {rate}/h at {interval} ms (limit {max})"
                    );
                }
            }
        }
    }
}

/// At the demo's 2 s interval no metric repeats itself 20 times in a row in normal operation,
/// so a demo with a short flat-line duration flags only the scripted stuck probe.
#[test]
fn no_flat_lines_at_two_second_reports() {
    let mut f = fleet(7, 2_000, 6, false);
    let reports = run(&mut f, 2_000, HOUR);
    for (id, series) in by_sensor(&reports) {
        let mut runs: HashMap<&str, (f64, usize)> = HashMap::new();
        for r in series {
            for (m, &v) in &r.values {
                if m == "rainfall" {
                    continue;
                }
                let e = runs.entry(m.as_str()).or_insert((f64::NAN, 0));
                *e = if e.0 == v { (v, e.1 + 1) } else { (v, 1) };
                assert!(e.1 < 20, "{id} {m} stuck at {v}");
            }
        }
    }
}

#[test]
fn energy_counts_up_with_active_power() {
    let mut f = fleet(7, MINUTE, 9, false);
    let reports: Vec<Report> = run(&mut f, MINUTE, 6 * HOUR)
        .into_iter()
        .filter(|r| r.kind == "electricity_meter")
        .collect();
    for (id, series) in by_sensor(&reports) {
        for pair in series.windows(2) {
            let hours = (pair[1].ts - pair[0].ts) as f64 / HOUR as f64;
            let added = pair[1].values["energy_total"] - pair[0].values["energy_total"];
            let expected = pair[1].values["active_power"] * hours;
            assert!(
                (added - expected).abs() < 0.003,
                "{id}: +{added} kWh, power says {expected}"
            );
            let p = &pair[1].values;
            let per_phase: f64 = ["a", "b", "c"]
                .iter()
                .map(|ph| p[&format!("voltage_{ph}")] * p[&format!("current_{ph}")])
                .sum::<f64>()
                * p["power_factor"]
                / 1000.0;
            assert!(
                (per_phase - p["active_power"]).abs() < 0.01 * p["active_power"] + 0.05,
                "{id}: V·I·pf {per_phase} vs P {}",
                p["active_power"]
            );
        }
    }
}

#[test]
fn traffic_pollution_peaks_at_rush_hours() {
    let mut f = fleet(7, 10 * MINUTE, 4, false);
    let reports = run(&mut f, 10 * MINUTE, 48 * HOUR);
    let mean_no2_at = |local_hour: i64| {
        let xs: Vec<f64> = reports
            .iter()
            .filter(|r| r.kind == "air_quality")
            .filter(|r| ((r.ts + 8 * HOUR).rem_euclid(24 * HOUR)) / HOUR == local_hour)
            .map(|r| r.values["no2"])
            .collect();
        assert!(!xs.is_empty());
        xs.iter().sum::<f64>() / xs.len() as f64
    };
    let night = mean_no2_at(3);
    assert!(
        mean_no2_at(8) > 1.5 * night,
        "08:00 {} vs 03:00 {night}",
        mean_no2_at(8)
    );
    assert!(
        mean_no2_at(18) > 1.5 * night,
        "18:00 {} vs 03:00 {night}",
        mean_no2_at(18)
    );
}

/// The first minutes of the demo (2 s reports, ticked every 500 ms): each incident makes the
/// crossing it is designed for, at the time it is designed for, and undoes it later.
#[test]
fn incidents_cross_their_thresholds_in_the_first_minute_and_recover() {
    let mut f = fleet(3, 2_000, 42, true);
    let sensors = f.sensors().to_vec();
    let reports = run(&mut f, 500, 420_000);
    let series = by_sensor(&reports);
    let at = |r: &Report| (r.ts - START) as f64 / 1000.0;
    let first = |id: &str, metric: &str, pred: &dyn Fn(f64) -> bool| {
        series[id]
            .iter()
            .find(|r| pred(r.values[metric]))
            .map(|r| at(r))
    };

    // cloudburst: 3 h running sum from the start, every report inside 0..200
    let mut sum = 0.0;
    let mut sum_at_60 = 0.0;
    let mut crossed_50 = None;
    for r in &series["rf-qc-01"] {
        let mm = r.values["rainfall"];
        assert!((0.0..=200.0).contains(&mm), "{mm}");
        sum += mm;
        if crossed_50.is_none() && sum >= 50.0 {
            crossed_50 = Some(at(r));
        }
        if at(r) <= 60.0 {
            sum_at_60 = sum;
        }
    }
    assert!(
        crossed_50.is_some_and(|t| t <= 30.0),
        "3h sum 50 mm at {crossed_50:?}"
    );
    assert!(sum_at_60 >= 100.0, "3h sum by 60 s: {sum_at_60}");

    // level: warning then guaranteed within a minute, back under warning later
    let levels = sensors
        .iter()
        .find(|s| s.id == "wl-qc-01")
        .and_then(|s| s.levels)
        .expect("levels");
    let w = first("wl-qc-01", "level", &|v| v >= levels.warning).expect("warning crossed");
    let g = first("wl-qc-01", "level", &|v| v >= levels.guaranteed).expect("guaranteed crossed");
    assert!(w < g && g <= 60.0, "warning at {w}, guaranteed at {g}");
    let last_level = series["wl-qc-01"].last().expect("level reports").values["level"];
    assert!(
        last_level < levels.warning - 0.1,
        "level after the flood {last_level}"
    );

    // gas leak: 25 then 50 within a minute, then back near zero
    let w = first("gd-qc-01", "lel", &|v| v >= 25.0).expect("25 % LEL");
    let c = first("gd-qc-01", "lel", &|v| v >= 50.0).expect("50 % LEL");
    assert!(w < c && c <= 60.0, "{w} {c}");
    let after: Vec<f64> = series["gd-qc-01"]
        .iter()
        .filter(|r| at(r) > 110.0)
        .map(|r| r.values["lel"])
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|&v| v < 2.0),
        "{after:?}"
    );

    // voltage sag below 198 V, recovered later
    let sag = first("em-qc-01", "voltage_a", &|v| v < 198.0).expect("sag");
    assert!(sag <= 60.0, "{sag}");
    assert!(series["em-qc-01"]
        .iter()
        .filter(|r| at(r) > 130.0)
        .all(|r| r.values["voltage_a"] >= 198.0));

    // stuck turbidity: 20 identical values within the first minute, moving again after 240 s
    let early: Vec<f64> = series["wq-qc-01"]
        .iter()
        .filter(|r| at(r) <= 60.0)
        .map(|r| r.values["turbidity"])
        .collect();
    assert!(
        early.len() >= 20 && early.iter().all(|&v| v == early[0]),
        "{early:?}"
    );
    let late: HashSet<u64> = series["wq-qc-01"]
        .iter()
        .filter(|r| at(r) > 250.0)
        .map(|r| r.values["turbidity"].to_bits())
        .collect();
    assert!(late.len() > 10, "turbidity still stuck after the incident");

    // ammonia on another section: > 1.0 then > 2.0 within a minute, normal again later
    let w = first("wq-qx-01", "ammonia_nitrogen", &|v| v > 1.0).expect("> 1.0");
    let c = first("wq-qx-01", "ammonia_nitrogen", &|v| v > 2.0).expect("> 2.0");
    assert!(w < c && c <= 60.0, "{w} {c}");
    assert!(series["wq-qx-01"]
        .iter()
        .filter(|r| at(r) > 250.0)
        .all(|r| r.values["ammonia_nitrogen"] < 0.95));

    // silent bridge sensor: reports before 30 s, none from 30 s to 180 s, reports again
    let times: Vec<f64> = series["st-qc-01"].iter().map(|r| at(r)).collect();
    assert!(times.iter().any(|&t| t < 30.0));
    assert!(
        !times.iter().any(|&t| (30.0..180.0).contains(&t)),
        "{times:?}"
    );
    assert!(times.iter().any(|&t| t >= 180.0));

    // only the scripted sensors misbehave: the other rain gauges stay dry-ish
    assert!(
        series["rf-qx-01"]
            .iter()
            .map(|r| r.values["rainfall"])
            .sum::<f64>()
            < 50.0
    );
}

#[test]
fn single_section_fleet_plays_both_water_quality_incidents_on_it() {
    let mut f = fleet(1, 2_000, 1, true);
    let reports = run(&mut f, 500, 60_000);
    let wq: Vec<&Report> = reports.iter().filter(|r| r.sensor == "wq-qc-01").collect();
    assert!(wq.iter().any(|r| r.values["ammonia_nitrogen"] > 2.0));
    assert!(wq
        .iter()
        .all(|r| r.values["turbidity"] == wq[0].values["turbidity"]));
}

#[test]
fn a_thousand_per_kind_is_13000_sensors_that_all_report_within_one_interval() {
    let mut f = fleet(1000, 2_000, 2, true);
    assert_eq!(f.sensors().len(), 13_000);
    let ids: HashSet<&str> = f.sensors().iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 13_000);
    let mut reported = HashSet::new();
    for i in 0..=4 {
        for m in f.tick(START + i * 500) {
            reported.insert(m.sensor);
        }
    }
    assert_eq!(reported.len(), 13_000);
}
