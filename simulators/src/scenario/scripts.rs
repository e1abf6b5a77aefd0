//! The six scripts and what each should make the gateway do. The numbers come from
//! `config/examples/city.toml` (station levels, water classes) and the built-in catalog
//! (`config/catalog/*.toml`): rule levels, hysteresis, windows, rates, flat-line settings.

use super::{Cast, ExpectedAlert, ExpectedDeadLetters, FinalState, Scenario, Severity, Writer};
use crate::wire::WireFormat;

use FinalState::{Active, Resolved};
use Severity::{Critical, Info, Major, Warning};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

const fn cast(id: &'static str, kind: &'static str, district: &'static str) -> Cast {
    Cast { id, kind, district }
}

// The Beijiang catchment, upstream to downstream: 英德 → 清新 → 清城.
const RF_YD: Cast = cast("rf-yd-01", "rainfall", "英德市");
const RF_QX: Cast = cast("rf-qx-01", "rainfall", "清新区");
const RF_QC: Cast = cast("rf-qc-01", "rainfall", "清城区");
const WL_YD: Cast = cast("wl-yd-01", "water_level", "英德市");
const WL_QC: Cast = cast("wl-qc-01", "water_level", "清城区");
const WQ_YD: Cast = cast("wq-yd-01", "water_quality", "英德市");
const WQ_QX: Cast = cast("wq-qx-01", "water_quality", "清新区");
const WQ_QC: Cast = cast("wq-qc-01", "water_quality", "清城区");
// The chemical park (大南海石化工业区), its own district in city.toml.
const PARK: &str = "大南海石化区";
const GD_1: Cast = cast("gd-park-01", "gas_detector", PARK);
const GD_2: Cast = cast("gd-park-02", "gas_detector", PARK);
const GD_3: Cast = cast("gd-park-03", "gas_detector", PARK);
const EM_QC: Cast = cast("em-qc-01", "electricity_meter", "清城区");
// 连州市 loses power.
const WL_LZ: Cast = cast("wl-lz-01", "water_level", "连州市");
const RF_LZ: Cast = cast("rf-lz-01", "rainfall", "连州市");
const WQ_LZ: Cast = cast("wq-lz-01", "water_quality", "连州市");
const AQ_LZ: Cast = cast("aq-lz-01", "air_quality", "连州市");
// 普宁市's misbehaving devices.
const WQ_PN: Cast = cast("wq-pn-01", "water_quality", "普宁市");
const WL_PN: Cast = cast("wl-pn-01", "water_level", "普宁市");

pub(super) fn cast_of(s: Scenario) -> &'static [Cast] {
    match s {
        Scenario::Flood => &[RF_YD, RF_QX, RF_QC, WL_YD, WL_QC],
        Scenario::Pollution => &[WQ_YD, WQ_QX, WQ_QC],
        Scenario::GasLeak => &[GD_1, GD_2, GD_3],
        Scenario::MeterTamper => &[EM_QC],
        Scenario::Blackout => &[WL_LZ, RF_LZ, WQ_LZ, AQ_LZ],
        Scenario::BadDevices => &[WQ_PN, WL_PN],
    }
}

pub(super) fn summary(s: Scenario) -> &'static str {
    match s {
        Scenario::Flood => "a rainstorm on the Beijiang catchment, then rivers crossing their warning and guaranteed levels",
        Scenario::Pollution => "an ammonia-nitrogen plume moving down the Beijiang past three class II sections",
        Scenario::GasLeak => "combustible gas rising through both alarm levels at the chemical park",
        Scenario::MeterTamper => "an electricity meter's energy counter reset to zero",
        Scenario::Blackout => "the sensors of 连州市 going silent",
        Scenario::BadDevices => "malformed, out-of-range, stuck, spiking and duplicate payloads from 普宁市",
    }
}

pub(super) fn story(s: Scenario) -> &'static str {
    match s {
        Scenario::Flood => "\
12 h at 10 min. Rain (SenML): rf-qc-01 gets 130 mm between 01:10 and 04:00, rf-qx-01 70 mm
between 01:10 and 03:30, rf-yd-01 55 mm spread over 8 h. Levels (line protocol): wl-yd-01
(warning 20.96 m, guaranteed 22.86 m) rises 0.4 m/h from 19.80 m to a 21.60 m crest and recedes
to 20.30 m; wl-qc-01 (warning 27.67 m, guaranteed 29.30 m) rises 0.7 m/h from 26.80 m to a
29.60 m crest and is still at 28.10 m, above its warning level, when the script ends.",
        Scenario::Pollution => "\
10 h at 10 min (JSON). NH3-N at the class II sections (warning 0.5, critical 2.0 mg/L) is
0.25 mg/L; a plume passes wq-yd-01 at 02:00 (peak 2.6), wq-qx-01 at 04:00 (1.5) and
wq-qc-01 at 06:00 (0.8), diluting on its way, and is gone by the end. Dissolved oxygen dips
with it but stays above 6 mg/L.",
        Scenario::GasLeak => "\
20 min at 10 s (JSON). A flange at the tank farm leaks: gd-park-01 climbs from 0.3 to 68 %LEL
between 1:00 and 5:00, holds until 8:00, and falls back after the valve is shut (12:00).
gd-park-02, downwind, sees 47 % of it (peak 32 %LEL), gd-park-03 12 % (peak 8 %LEL).",
        Scenario::MeterTamper => "\
12 h at 15 min (JSON). em-qc-01 counts energy_total up from 12345.6 kWh with its load; at
08:00 someone resets the counter to 0 and it counts up from there. The gateway has no
tamper rule: a counter going down is invalid data (counter_backwards), a dead letter, and
the device is at fault (sensor_fault info on energy_total). Every later reading is still
below the last good one, so each is rejected too, and the fault stays active.
active_power keeps being accepted.",
        Scenario::Blackout => "\
30 min at 5 min (JSON): wl-lz-01, rf-lz-01, wq-lz-01 and aq-lz-01 report normal values, then
nothing. The deadman runs on the gateway's wall clock: each sensor goes offline once it has
been silent for its offline_after (30 min for level, rain and water quality, 2 h for air),
so the alerts come that long after the script ends, and stay active until the district reports again.",
        Scenario::BadDevices => "\
4 h at 10 min. wq-pn-01 (JSON) has a turbidity probe stuck at 12.5 NTU from the start: from
the 20th identical reading (3 h 10 min, past flatline_duration 2 h) the readings are suspect,
stored but kept from the rules. wl-pn-01 (JSON) jumps from 26.0 m to 31.0 m for one reading at
02:00 (5 m in 10 min, max_rate_per_hour is 5): suspect, kept from the level rule, cleared by
the next normal reading. In between, twelve broken payloads: truncated JSON, text, invalid
UTF-8, pH 17, a metric as a string, a day in the future, 8 days old, a conflicting duplicate
and an exact redelivery (which is not an error), a SenML level in cm, a line-protocol string
field, an unknown metric, and a payload claiming the wrong kind.",
    }
}

pub(super) fn duration_ms(s: Scenario) -> i64 {
    match s {
        Scenario::Flood => 12 * HOUR,
        Scenario::Pollution => 10 * HOUR,
        Scenario::GasLeak => 20 * MIN,
        Scenario::MeterTamper => 12 * HOUR,
        Scenario::Blackout => 30 * MIN,
        Scenario::BadDevices => 4 * HOUR,
    }
}

const fn alert(
    sensor: &'static str,
    rule: &'static str,
    metric: &'static str,
    severity: Severity,
    final_state: FinalState,
    why: &'static str,
) -> ExpectedAlert {
    ExpectedAlert {
        sensor,
        rule,
        metric,
        severity,
        final_state,
        why,
    }
}

pub(super) fn expected_alerts(s: Scenario) -> Vec<ExpectedAlert> {
    match s {
        Scenario::Flood => vec![
            alert("rf-qc-01", "rainstorm_3h", "rainfall", Critical, Resolved,
                "3 h sum 54 mm major at 02:10, 103 mm critical at 03:00; back under 50 mm at 05:40"),
            alert("rf-qc-01", "rainstorm_yellow", "rainfall", Warning, Resolved,
                "6 h sum ≥ 50 mm from 02:10; under 50 mm again at 08:40"),
            alert("rf-qc-01", "rainstorm_blue", "rainfall", Warning, Active,
                "12 h sum ≥ 50 mm from 02:10; all 130 mm still in the 12 h window at the end"),
            alert("rf-qx-01", "rainstorm_3h", "rainfall", Major, Resolved,
                "3 h sum peaks at 70 mm (orange, not red)"),
            alert("rf-qx-01", "rainstorm_yellow", "rainfall", Warning, Resolved,
                "6 h sum ≥ 50 mm; gone from the window by the end"),
            alert("rf-qx-01", "rainstorm_blue", "rainfall", Warning, Active,
                "12 h sum 70 mm at the end"),
            alert("rf-yd-01", "rainstorm_blue", "rainfall", Warning, Active,
                "55 mm over 8 h: 12 h sum ≥ 50 mm, never 50 mm in 6 h"),
            alert("wl-yd-01", "level", "level", Warning, Resolved,
                "crest 21.60 m between warning 20.96 and guaranteed 22.86; below 20.91 (hysteresis 0.05) at 09:30"),
            alert("wl-qc-01", "level", "level", Critical, Active,
                "crest 29.60 m ≥ guaranteed 29.30; de-escalates to warning, still 28.10 m ≥ 27.67 at the end"),
            alert("wl-qc-01", "rise_rate", "level", Warning, Resolved,
                "rises 0.7 m/h (warning 0.5, critical 1.0 m/h); clears at the crest"),
        ],
        Scenario::Pollution => vec![
            alert("wq-yd-01", "ammonia_nitrogen", "ammonia_nitrogen", Critical, Resolved,
                "peak 2.6 mg/L ≥ 2.0 (class II)"),
            alert("wq-qx-01", "ammonia_nitrogen", "ammonia_nitrogen", Warning, Resolved,
                "peak 1.5 mg/L ≥ 0.5, < 2.0"),
            alert("wq-qc-01", "ammonia_nitrogen", "ammonia_nitrogen", Warning, Resolved,
                "peak 0.8 mg/L ≥ 0.5"),
        ],
        Scenario::GasLeak => vec![
            alert("gd-park-01", "lel", "lel", Critical, Resolved,
                "≥ 25 %LEL at 2:30, ≥ 50 at 4:00; below 23 (hysteresis 2) at 10:50"),
            alert("gd-park-02", "lel", "lel", Warning, Resolved,
                "peak 32 %LEL: first-level alarm only"),
        ],
        Scenario::MeterTamper => vec![alert(
            "em-qc-01", "sensor_fault", "energy_total", Info, Active,
            "counter went backwards (counter_backwards); every later reading is below the last good one",
        )],
        Scenario::Blackout => [WL_LZ, RF_LZ, WQ_LZ, AQ_LZ]
            .iter()
            .map(|c| alert(c.id, "offline", "", Warning, Active,
                "silent for longer than its offline_after (wall clock)"))
            .collect(),
        Scenario::BadDevices => vec![
            alert("wq-pn-01", "sensor_fault", "turbidity", Info, Active,
                "flat line: 20 identical readings over ≥ 2 h, still stuck at the end"),
            alert("wl-pn-01", "sensor_fault", "level", Info, Resolved,
                "spike: 5 m in 10 min; the next normal reading clears it (no level alert: suspect readings skip the rules)"),
        ],
    }
}

const fn dead(reason: &'static str, count: u32, why: &'static str) -> ExpectedDeadLetters {
    ExpectedDeadLetters { reason, count, why }
}

pub(super) fn expected_dead_letters(s: Scenario) -> Vec<ExpectedDeadLetters> {
    match s {
        Scenario::MeterTamper => vec![dead(
            "counter_backwards",
            17,
            "the reset reading at 08:00 and the 16 after it (every 15 min to 12:00)",
        )],
        Scenario::BadDevices => vec![
            dead("invalid_json", 2, "truncated JSON; text that is not JSON"),
            dead("invalid_utf8", 1, "bytes that are not UTF-8"),
            dead("out_of_range", 1, "pH 17"),
            dead(
                "wrong_type",
                2,
                "a metric as a JSON string; a line-protocol string field",
            ),
            dead("future_timestamp", 1, "a day ahead"),
            dead("stale_timestamp", 1, "8 days old (max_age 7 d)"),
            dead(
                "duplicate",
                1,
                "same sensor and time, another value (the exact redelivery is no error)",
            ),
            dead("wrong_unit", 1, "SenML level in cm"),
            dead("unknown_metric", 1, "pm25 on a water-quality section"),
            dead(
                "kind_mismatch",
                1,
                "a water-quality section claiming to be a noise sensor",
            ),
        ],
        _ => Vec::new(),
    }
}

/// A small deterministic jitter (±`amp`) so that no value repeats exactly, which the
/// flat-line check would take for a stuck probe.
fn jitter(step: i64, amp: f64) -> f64 {
    const PATTERN: [f64; 4] = [1.0, -0.5, 0.5, -1.0];
    PATTERN[step.rem_euclid(4) as usize] * amp
}

/// Piecewise-linear interpolation through `(t, v)` points (t ascending).
fn ramp(points: &[(f64, f64)], t: f64) -> f64 {
    let Some(&(t0, v0)) = points.first() else {
        return 0.0;
    };
    if t <= t0 {
        return v0;
    }
    for w in points.windows(2) {
        let ((ta, va), (tb, vb)) = (w[0], w[1]);
        if t <= tb {
            return va + (vb - va) * (t - ta) / (tb - ta);
        }
    }
    points.last().map_or(0.0, |&(_, v)| v)
}

fn round(v: f64, decimals: i32) -> f64 {
    let s = 10f64.powi(decimals);
    (v * s).round() / s
}

pub(super) fn write(s: Scenario, w: &mut Writer) {
    match s {
        Scenario::Flood => flood(w),
        Scenario::Pollution => pollution(w),
        Scenario::GasLeak => gas_leak(w),
        Scenario::MeterTamper => meter_tamper(w),
        Scenario::Blackout => blackout(w),
        Scenario::BadDevices => bad_devices(w),
    }
}

fn flood(w: &mut Writer) {
    const QC_RAIN: [f64; 18] = [
        2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 12.0, 12.0, 10.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0,
        2.0,
    ];
    const QX_RAIN: [f64; 15] = [
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 1.0,
    ];
    // Minutes → metres.
    let yd_level = [
        (0.0, 19.8),
        (60.0, 19.8),
        (330.0, 21.6),
        (390.0, 21.6),
        (720.0, 20.3),
    ];
    let qc_level = [
        (0.0, 26.8),
        (120.0, 26.8),
        (360.0, 29.6),
        (420.0, 29.6),
        (720.0, 28.1),
    ];
    for step in 0..=72i64 {
        let minute = step * 10;
        let at = minute * MIN;
        // The burst at rf-qc-01 and rf-qx-01 starts with the reading at 01:10.
        let burst = |table: &[f64]| {
            usize::try_from(step - 7)
                .ok()
                .and_then(|i| table.get(i).copied())
                .unwrap_or(0.0)
        };
        let yd_rain = if (1..=48).contains(&step) {
            if step % 2 == 1 {
                1.0
            } else {
                1.3
            }
        } else {
            0.0
        };
        for (who, mm) in [
            (RF_YD, yd_rain),
            (RF_QX, burst(&QX_RAIN)),
            (RF_QC, burst(&QC_RAIN)),
        ] {
            w.report(who, at, WireFormat::Senml, &[("rainfall", mm)]);
        }
        let m = minute as f64;
        for (who, points) in [(WL_YD, &yd_level), (WL_QC, &qc_level)] {
            let level = round(ramp(points, m) + jitter(step, 0.004), 3);
            w.report(who, at, WireFormat::Line, &[("level", level)]);
        }
    }
}

fn pollution(w: &mut Writer) {
    // (section, peak time in minutes, plume height in mg/L)
    let plume = [
        (WQ_YD, 120.0, 2.35),
        (WQ_QX, 240.0, 1.25),
        (WQ_QC, 360.0, 0.55),
    ];
    for step in 0..=60i64 {
        let minute = (step * 10) as f64;
        for (who, peak_at, height) in plume {
            let x = (minute - peak_at) / 40.0;
            let excess = height * (-0.5 * x * x).exp();
            let nh3 = round(0.25 + excess + jitter(step, 0.005), 3);
            let dox = round(7.0 - 0.3 * excess + jitter(step + 1, 0.02), 2);
            let ph = round(7.3 + jitter(step + 2, 0.02), 2);
            w.report(
                who,
                step * 10 * MIN,
                WireFormat::Json,
                &[
                    ("ammonia_nitrogen", nh3),
                    ("dissolved_oxygen", dox),
                    ("ph", ph),
                ],
            );
        }
    }
}

fn gas_leak(w: &mut Writer) {
    // Seconds → %LEL above the 0.3 background at the leak.
    let leak = [
        (60.0, 0.0),
        (300.0, 67.7),
        (480.0, 67.7),
        (720.0, 0.2),
        (1200.0, 0.0),
    ];
    for step in 0..=120i64 {
        let second = (step * 10) as f64;
        let excess = ramp(&leak, second);
        for (who, share) in [(GD_1, 1.0), (GD_2, 0.47), (GD_3, 0.12)] {
            let lel = round(0.3 + excess * share + jitter(step, 0.05), 1);
            w.report(
                who,
                step * 10_000,
                WireFormat::Json,
                &[("lel", lel.max(0.0)), ("h2s", 0.0), ("fault", 0.0)],
            );
        }
    }
}

fn meter_tamper(w: &mut Writer) {
    let mut energy = 12_345.6;
    for step in 0..=48i64 {
        let hour = step as f64 / 4.0;
        // A commercial load: 6 kW at night, 14 kW by day.
        let power = round(
            10.0 - 4.0 * (std::f64::consts::TAU * hour / 24.0).cos() + jitter(step, 0.3),
            2,
        );
        if step == 32 {
            energy = 0.0; // 08:00: the counter is reset
        } else if step > 0 {
            energy += power * 0.25;
        }
        w.report(
            EM_QC,
            step * 15 * MIN,
            WireFormat::Json,
            &[("energy_total", round(energy, 2)), ("active_power", power)],
        );
    }
}

fn blackout(w: &mut Writer) {
    for step in 0..=6i64 {
        let at = step * 5 * MIN;
        let j = |amp| jitter(step, amp);
        w.report(
            WL_LZ,
            at,
            WireFormat::Json,
            &[("level", round(26.5 + j(0.004), 3))],
        );
        w.report(RF_LZ, at, WireFormat::Json, &[("rainfall", 0.0)]);
        w.report(
            WQ_LZ,
            at,
            WireFormat::Json,
            &[
                ("ph", round(7.4 + j(0.02), 2)),
                ("dissolved_oxygen", round(6.8 + j(0.05), 2)),
                ("ammonia_nitrogen", round(0.4 + j(0.01), 3)),
                ("cod", round(12.0 + j(0.2), 1)),
            ],
        );
        w.report(
            AQ_LZ,
            at,
            WireFormat::Json,
            &[
                ("pm25", round(30.0 + j(2.0), 1)),
                ("pm10", round(55.0 + j(3.0), 1)),
                ("so2", round(10.0 + j(1.0), 1)),
                ("no2", round(25.0 + j(2.0), 1)),
                ("o3", round(60.0 + j(4.0), 1)),
                ("co", round(0.6 + j(0.05), 2)),
            ],
        );
    }
}

fn bad_devices(w: &mut Writer) {
    let json = WireFormat::Json;
    let mut regular_at_90 = None;
    for step in 0..=24i64 {
        let at = step * 10 * MIN;
        let wq = [
            ("ph", round(7.3 + jitter(step, 0.02), 2)),
            ("dissolved_oxygen", round(6.8 + jitter(step + 1, 0.05), 2)),
            ("turbidity", 12.5),
        ];
        w.report(WQ_PN, at, json, &wq);
        if step == 9 {
            regular_at_90 = Some(wq);
        }
        let level = if step == 12 {
            31.0
        } else {
            round(26.0 + jitter(step, 0.004), 3)
        };
        w.report(WL_PN, at, json, &[("level", level)]);
    }

    let head = |ts: i64| format!(r#""sensor":"wq-pn-01","kind":"water_quality","ts":{ts}"#);
    let at = |minute: i64| minute * MIN + 5_000;
    let good = format!(r#"{{{},"ph":7.1,"cod":12}}"#, head(w.ts(at(30))));
    let truncated = good.as_bytes()[..good.len() / 2].to_vec();
    w.raw(WQ_PN, at(30), json, truncated);
    w.raw(WQ_PN, at(40), json, b"ph=7.1 cod=12".to_vec());
    w.raw(
        WQ_PN,
        at(50),
        json,
        b"{\"sensor\":\"wq-pn-01\",\"ph\":\xff\xfe7.1}".to_vec(),
    );
    let ph17 = format!(r#"{{{},"ph":17.0}}"#, head(w.ts(at(60))));
    w.raw(WQ_PN, at(60), json, ph17.into_bytes());
    let string_value = format!(r#"{{{},"ph":"7.1"}}"#, head(w.ts(at(70))));
    w.raw(WQ_PN, at(70), json, string_value.into_bytes());
    let future = format!(r#"{{{},"ph":7.1}}"#, head(w.ts(at(80)) + DAY));
    w.raw(WQ_PN, at(80), json, future.into_bytes());
    let stale = format!(r#"{{{},"ph":7.1}}"#, head(w.ts(at(90)) - 8 * DAY));
    w.raw(WQ_PN, at(90), json, stale.into_bytes());
    if let Some(wq) = regular_at_90 {
        // The 01:30 reading again, exactly (a redelivery: no error), then with another pH.
        w.report(WQ_PN, 90 * MIN, json, &wq);
        let other_ph = format!(r#"{{{},"ph":{}}}"#, head(w.ts(90 * MIN)), wq[0].1 + 0.5);
        w.raw(WQ_PN, 90 * MIN, json, other_ph.into_bytes());
    }
    let senml_cm = format!(
        r#"[{{"bn":"wl-pn-01/","bt":{},"n":"level","u":"cm","v":2600}}]"#,
        w.ts(at(100)) / 1000
    );
    w.raw(WL_PN, at(100), WireFormat::Senml, senml_cm.into_bytes());
    let line_string = format!(
        "water_level,sensor=wl-pn-01 level=\"high\" {}\n",
        i128::from(w.ts(at(110))) * 1_000_000
    );
    w.raw(WL_PN, at(110), WireFormat::Line, line_string.into_bytes());
    let unknown = format!(r#"{{{},"pm25":35.0}}"#, head(w.ts(at(130))));
    w.raw(WQ_PN, at(130), json, unknown.into_bytes());
    let wrong_kind = format!(
        r#"{{"sensor":"wq-pn-01","kind":"noise","ts":{},"laeq":50.0}}"#,
        w.ts(at(140))
    );
    w.raw(WQ_PN, at(140), json, wrong_kind.into_bytes());
}
