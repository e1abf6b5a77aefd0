//! Scripted incidents, switched on by [`FleetConfig::incidents`](crate::FleetConfig).
//!
//! They are timed from the fleet's `start_ms` (elapsed *simulated* time, so they also happen at
//! `--speed 60`) and designed for the demo, which runs at `interval_ms = 2000`: with citygate's
//! default rules, alerts of every severity appear within the first 60 s and clear again later.
//! Each incident is played by sensor #0 of its kind (district 清城区), except the ammonia
//! excursion, which uses water-quality section #1 (清新区) when there is one.
//!
//! | t (s) | incident | sensor | expected alert |
//! |---|---|---|---|
//! | 0–240 | [`Incident::StuckTurbidity`] | `wq-qc-01` | info: flat line (sensor fault) once 20 identical values span the flat-line duration |
//! | 4–47 | [`Incident::Cloudburst`] | `rf-qc-01` | 3 h sum ≥ 50 mm major by ~21 s, ≥ 100 mm critical by ~38 s |
//! | 6–60 | [`Incident::LevelRise`] | `wl-qc-01` | warning at 12.00 m by ~23 s, critical at 12.30 m by ~48 s; clears ~6 min |
//! | 8–100 | [`Incident::GasLeak`] | `gd-qc-01` | LEL ≥ 25 warning at ~21 s, ≥ 50 critical at ~33 s; back to 0 by 100 s |
//! | 10–126 | [`Incident::VoltageSag`] | `em-qc-01` | phase A ~188 V < 198 warning from ~13 s; clears at ~125 s |
//! | 10–240 | [`Incident::AmmoniaExcursion`] | `wq-qx-01` | NH3-N > 1.0 warning at ~16 s, > 2.0 critical at ~34 s; clears ~4 min |
//! | 30–180 | [`Incident::GoesSilent`] | `st-qc-01` | deadman `offline` once silent longer than its `offline_after` |

/// One scripted incident. A sensor lists the incidents it plays in
/// [`SimSensor::incidents`](crate::SimSensor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Incident {
    /// A cloudburst on rain gauge `rf-qc-01`: ~3 mm/s (4.7–7.3 mm per 2 s report) from t = 4 s until
    /// 130 mm have fallen (t ≈ 47 s). Every single report stays inside 0..200 mm. The 3 h sum
    /// passes 50 mm (major, CMA orange) at ~21 s and 100 mm (critical, red) at ~38 s, and
    /// clears only when the burst leaves the 3 h window.
    Cloudburst,
    /// Water-level station `wl-qc-01` (北江清远段, a regulated reach whose normal level is
    /// 11.80 m, warning 12.00 m, guaranteed 12.30 m) rises 0.012 m/s from t = 6 s to a 12.45 m
    /// crest at t ≈ 60 s: warning at ~23 s, critical at ~48 s. It holds until 150 s, then
    /// recedes at 0.003 m/s and is back to normal at ~6 min, clearing both. The rise is
    /// 43 m/h: the station's `max_rate_per_hour` must be raised (see [`Incident::rate_hints`])
    /// or the spike check marks the readings suspect.
    LevelRise,
    /// Gas detector `gd-qc-01` sees a leak: LEL climbs 2 %/s from t = 8 s to 60 % at 38 s
    /// (warning at 25 % ~21 s, critical at 50 % ~33 s), holds until 70 s, and falls back to the
    /// normal near-zero reading by 100 s, clearing both.
    GasLeak,
    /// Electricity meter `em-qc-01`: phase-A voltage sags by ~35 V, to 183–193 V, between
    /// t = 10 s and 14 s (warning below 198 V), stays down until 120 s and recovers by 126 s. The currents follow
    /// the sag (constant-power load) and energy keeps counting consistently.
    VoltageSag,
    /// Water-quality section `wq-qc-01`: its turbidity probe sticks from its first report until
    /// t = 240 s, repeating exactly one value. That is a flat line: an info `sensor_fault` once
    /// `flatline_count` (20) identical readings, i.e. ~40 s at 2 s, span `flatline_duration`
    /// (the demo needs a short one; the default 2 h would take two hours).
    StuckTurbidity,
    /// Water-quality section `wq-qx-01` (class III; `wq-qc-01` when the fleet has one section):
    /// NH3-N climbs from 0.65 to 2.4 mg/L between t = 10 s and 40 s (warning > 1.0 at ~16 s,
    /// critical > 2.0 at ~34 s), holds until 120 s and returns to normal by 240 s.
    AmmoniaExcursion,
    /// Bridge sensor `st-qc-01` goes silent from t = 30 s to t = 180 s, then reports again. The
    /// deadman fires once the silence exceeds the sensor's `offline_after` (the demo should set
    /// [`Incident::offline_after_ms`]) and clears with the next reading.
    GoesSilent,
}

impl Incident {
    /// Every incident, in the order of their first alert.
    pub const ALL: [Incident; 7] = [
        Incident::StuckTurbidity,
        Incident::Cloudburst,
        Incident::LevelRise,
        Incident::GasLeak,
        Incident::VoltageSag,
        Incident::AmmoniaExcursion,
        Incident::GoesSilent,
    ];

    /// Short stable name.
    pub fn name(self) -> &'static str {
        match self {
            Incident::Cloudburst => "cloudburst",
            Incident::LevelRise => "level_rise",
            Incident::GasLeak => "gas_leak",
            Incident::VoltageSag => "voltage_sag",
            Incident::StuckTurbidity => "stuck_turbidity",
            Incident::AmmoniaExcursion => "ammonia_excursion",
            Incident::GoesSilent => "goes_silent",
        }
    }

    /// The kind of sensor that plays it.
    pub fn kind(self) -> &'static str {
        match self {
            Incident::Cloudburst => "rainfall",
            Incident::LevelRise => "water_level",
            Incident::GasLeak => "gas_detector",
            Incident::VoltageSag => "electricity_meter",
            Incident::StuckTurbidity | Incident::AmmoniaExcursion => "water_quality",
            Incident::GoesSilent => "structural",
        }
    }

    /// What the gateway should raise, for people reading the demo.
    pub fn expected_alerts(self) -> &'static str {
        match self {
            Incident::Cloudburst => "rainfall 3h sum >= 50 major (~21 s), >= 100 critical (~38 s)",
            Incident::LevelRise => "level >= 12.00 warning (~23 s), >= 12.30 critical (~48 s)",
            Incident::GasLeak => {
                "lel >= 25 warning (~21 s), >= 50 critical (~33 s), clears by 100 s"
            }
            Incident::VoltageSag => "voltage_a < 198 warning (~13 s), clears ~125 s",
            Incident::StuckTurbidity => "turbidity flat line: info sensor_fault",
            Incident::AmmoniaExcursion => {
                "ammonia_nitrogen > 1.0 warning (~16 s), > 2.0 critical (~34 s), clears ~4 min"
            }
            Incident::GoesSilent => "offline (deadman) after offline_after; clears at 180 s",
        }
    }

    /// Per-metric `max_rate_per_hour` the playing sensor needs so that the scripted change is
    /// not taken for a spike (a demo sensor override). Empty when no override is needed.
    pub fn rate_hints(self) -> &'static [(&'static str, f64)] {
        match self {
            Incident::LevelRise => &[("level", 60.0)],
            Incident::GasLeak => &[("lel", 10_000.0)],
            Incident::VoltageSag => &[("voltage_a", 30_000.0)],
            Incident::AmmoniaExcursion => &[("ammonia_nitrogen", 300.0)],
            _ => &[],
        }
    }

    /// A deadman time short enough for the silence to be noticed within the first minute.
    pub fn offline_after_ms(self) -> Option<i64> {
        match self {
            Incident::GoesSilent => Some(12_000),
            _ => None,
        }
    }
}

/// The regulated demo reach of [`Incident::LevelRise`].
pub(crate) const LEVEL_NORMAL_M: f64 = 11.80;
pub(crate) const LEVEL_WARNING_M: f64 = 12.00;
pub(crate) const LEVEL_GUARANTEED_M: f64 = 12.30;
const LEVEL_CREST_M: f64 = 12.45;
const LEVEL_RISE_M_PER_S: f64 = 0.012;
const LEVEL_FALL_M_PER_S: f64 = 0.003;

/// Cloudburst rain (mm) fallen by `e` seconds after start: about 3 mm/s, pulsing between
/// 2.3 and 3.7 mm/s (a real burst is not a flat line), until 130 mm have fallen.
pub(crate) fn cloudburst_fallen_mm(e: f64) -> f64 {
    const START_S: f64 = 4.0;
    const TOTAL_MM: f64 = 130.0;
    let x = (e - START_S).max(0.0);
    // The rate 3 + (2/3)·cos(x/3) stays positive, so the sum only grows.
    (3.0 * x + 2.0 * (x / 3.0).sin()).min(TOTAL_MM)
}

/// Level of the demo reach `e` seconds after start, before noise.
pub(crate) fn level_rise_m(e: f64) -> f64 {
    const RISE_FROM_S: f64 = 6.0;
    const HOLD_UNTIL_S: f64 = 150.0;
    if e < HOLD_UNTIL_S {
        (LEVEL_NORMAL_M + LEVEL_RISE_M_PER_S * (e - RISE_FROM_S).max(0.0)).min(LEVEL_CREST_M)
    } else {
        (LEVEL_CREST_M - LEVEL_FALL_M_PER_S * (e - HOLD_UNTIL_S)).max(LEVEL_NORMAL_M)
    }
}

/// Leak LEL (%) at `e` seconds, `None` outside the leak.
pub(crate) fn gas_leak_lel(e: f64) -> Option<f64> {
    match e {
        e if (8.0..38.0).contains(&e) => Some(2.0 * (e - 8.0)),
        e if (38.0..70.0).contains(&e) => Some(60.0),
        e if (70.0..100.0).contains(&e) => Some(60.0 - 2.0 * (e - 70.0)),
        _ => None,
    }
}

/// A full sag pulls phase A down by (nominal − this), i.e. to about this value at no load.
pub(crate) const SAG_VOLTAGE_V: f64 = 191.0;

/// How far into the sag we are at `e` seconds (0 = none, 1 = full).
pub(crate) fn voltage_sag_depth(e: f64) -> f64 {
    match e {
        e if (10.0..14.0).contains(&e) => (e - 10.0) / 4.0,
        e if (14.0..120.0).contains(&e) => 1.0,
        e if (120.0..126.0).contains(&e) => 1.0 - (e - 120.0) / 6.0,
        _ => 0.0,
    }
}

pub(crate) fn turbidity_stuck(e: f64) -> bool {
    (0.0..240.0).contains(&e)
}

/// Excursion NH3-N (mg/L) at `e` seconds, `None` outside it.
pub(crate) fn ammonia_excursion(e: f64) -> Option<f64> {
    const LOW: f64 = 0.65;
    const HIGH: f64 = 2.4;
    match e {
        e if (10.0..40.0).contains(&e) => Some(LOW + (HIGH - LOW) * (e - 10.0) / 30.0),
        e if (40.0..120.0).contains(&e) => Some(HIGH),
        e if (120.0..240.0).contains(&e) => Some(HIGH - (HIGH - LOW) * (e - 120.0) / 120.0),
        _ => None,
    }
}

pub(crate) fn silent(e: f64) -> bool {
    (30.0..180.0).contains(&e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_schedule_crosses_both_levels_within_a_minute_and_recedes() {
        let first_at = |lvl: f64| {
            (0..600)
                .map(|t| t as f64 / 2.0)
                .find(|&e| level_rise_m(e) >= lvl)
        };
        assert!(first_at(LEVEL_WARNING_M).is_some_and(|e| e < 30.0));
        assert!(first_at(LEVEL_GUARANTEED_M).is_some_and(|e| e < 55.0));
        assert!((level_rise_m(400.0) - LEVEL_NORMAL_M).abs() < 1e-9);
    }
}
