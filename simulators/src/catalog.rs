//! The sensor kinds, their metric names and plausible ranges, as in SENSORS.md. The simulator
//! keeps its own copy because it must not depend on the gateway crate.

/// Every sensor kind, in the order the fleet creates them.
pub const KINDS: [&str; 13] = [
    "water_level",
    "rainfall",
    "flow",
    "water_quality",
    "air_quality",
    "noise",
    "electricity_meter",
    "water_meter",
    "gas_meter",
    "gas_detector",
    "structural",
    "landslide",
    "forest_fire",
];

/// (kind, metric, plausible min, plausible max).
///
/// Meter `flow_rate` has no range in SENSORS.md; 0..1000 m³/h is the simulator's own bound.
const RANGES: &[(&str, &str, f64, f64)] = &[
    ("water_level", "level", -10.0, 100.0),
    ("rainfall", "rainfall", 0.0, 200.0),
    ("flow", "flow", 0.0, 100_000.0),
    ("water_quality", "ph", 0.0, 14.0),
    ("water_quality", "dissolved_oxygen", 0.0, 20.0),
    ("water_quality", "cod", 0.0, 1000.0),
    ("water_quality", "codmn", 0.0, 100.0),
    ("water_quality", "ammonia_nitrogen", 0.0, 100.0),
    ("water_quality", "total_phosphorus", 0.0, 50.0),
    ("water_quality", "turbidity", 0.0, 4000.0),
    ("water_quality", "temperature", -5.0, 45.0),
    ("air_quality", "pm25", 0.0, 1000.0),
    ("air_quality", "pm10", 0.0, 2000.0),
    ("air_quality", "so2", 0.0, 5000.0),
    ("air_quality", "no2", 0.0, 2000.0),
    ("air_quality", "o3", 0.0, 1200.0),
    ("air_quality", "co", 0.0, 150.0),
    ("noise", "laeq", 20.0, 140.0),
    ("electricity_meter", "voltage_a", 0.0, 300.0),
    ("electricity_meter", "voltage_b", 0.0, 300.0),
    ("electricity_meter", "voltage_c", 0.0, 300.0),
    ("electricity_meter", "current_a", 0.0, 1000.0),
    ("electricity_meter", "current_b", 0.0, 1000.0),
    ("electricity_meter", "current_c", 0.0, 1000.0),
    ("electricity_meter", "active_power", -1000.0, 1000.0),
    ("electricity_meter", "power_factor", -1.0, 1.0),
    ("electricity_meter", "frequency", 45.0, 55.0),
    ("electricity_meter", "energy_total", 0.0, f64::MAX),
    ("water_meter", "volume_total", 0.0, f64::MAX),
    ("water_meter", "flow_rate", 0.0, 1000.0),
    ("gas_meter", "volume_total", 0.0, f64::MAX),
    ("gas_meter", "flow_rate", 0.0, 1000.0),
    ("gas_detector", "lel", 0.0, 100.0),
    ("gas_detector", "h2s", 0.0, 500.0),
    ("structural", "strain", -5000.0, 5000.0),
    ("structural", "deflection", -1000.0, 1000.0),
    ("structural", "tilt", -90.0, 90.0),
    ("landslide", "displacement", -1000.0, 1000.0),
    ("landslide", "tilt", -90.0, 90.0),
    ("landslide", "rainfall", 0.0, 200.0),
    ("forest_fire", "smoke", 0.0, 1.0),
    ("forest_fire", "temperature", -40.0, 125.0),
    ("forest_fire", "humidity", 0.0, 100.0),
];

/// Plausible range of a metric of a kind, `None` for an unknown pair.
pub fn plausible_range(kind: &str, metric: &str) -> Option<(f64, f64)> {
    RANGES
        .iter()
        .find(|(k, m, _, _)| *k == kind && *m == metric)
        .map(|&(_, _, lo, hi)| (lo, hi))
}

/// The metric names of a kind (empty for an unknown kind).
pub fn metrics(kind: &str) -> Vec<&'static str> {
    RANGES
        .iter()
        .filter(|(k, _, _, _)| *k == kind)
        .map(|&(_, m, _, _)| m)
        .collect()
}

/// Whether a metric is a monotonic counter.
pub fn is_counter(metric: &str) -> bool {
    matches!(metric, "energy_total" | "volume_total")
}

/// Short id prefix of a kind, e.g. `wq` for water_quality.
pub(crate) fn prefix(kind: &str) -> &'static str {
    match kind {
        "water_level" => "wl",
        "rainfall" => "rf",
        "flow" => "fl",
        "water_quality" => "wq",
        "air_quality" => "aq",
        "noise" => "ns",
        "electricity_meter" => "em",
        "water_meter" => "wm",
        "gas_meter" => "gm",
        "gas_detector" => "gd",
        "structural" => "st",
        "landslide" => "ls",
        _ => "ff",
    }
}
