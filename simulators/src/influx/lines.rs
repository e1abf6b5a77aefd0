//! The benchmark's readings, as InfluxDB line protocol shaped like the gateway's InfluxDB sink
//! output, and as citygate JSON for the gateway's HTTP ingest: the same N readings either way.
//!
//! Reading `i` belongs to sensor `i % M` and is that sensor's `i / M`-th report, so a batch of
//! consecutive readings is one tick of a fleet. Each sensor reports once a minute, so every
//! (series, timestamp) pair is distinct and nothing is deduplicated by the store. Only
//! single-metric kinds are used, so one reading is one line and one outbox point. Values
//! change from one report to the next (no flat line) and stay inside every default rule and
//! rate limit (water level moves 1 mm a minute, 0.06 m/h; noise stays under the 50 dB(A)
//! night limit; rainfall sums stay far below the rainstorm signals; flow has no default
//! threshold), so the gateway raises no alert and stores every reading as good.

use std::fmt::Write;

/// Milliseconds between two reports of one sensor.
pub const REPORT_INTERVAL_MS: i64 = 60_000;

/// Kind, sensor id prefix and its one metric.
const KINDS: [(&str, &str, &str); 4] = [
    ("water_level", "wl", "level"),
    ("rainfall", "rf", "rainfall"),
    ("noise", "ns", "laeq"),
    ("flow", "fl", "flow"),
];

/// Qingyuan and Jieyang districts: non-ASCII tag values, as in production.
const DISTRICTS: [&str; 7] = [
    "清城区",
    "清新区",
    "英德市",
    "连州市",
    "佛冈县",
    "榕城区",
    "揭东区",
];

/// The metric names (`<measurement>_<field>`) VictoriaMetrics gives these readings, as a
/// PromQL regex for `/api/v1/export`.
pub const VM_SERIES_REGEX: &str = "water_level_level|rainfall_rainfall|noise_laeq|flow_flow";

/// N readings from M sensors, reports starting at `start_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchReadings {
    pub lines: u64,
    pub sensors: u64,
    pub start_ms: i64,
}

/// One reading, before formatting.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReading {
    pub kind: &'static str,
    pub sensor: String,
    pub metric: &'static str,
    pub district: &'static str,
    pub site: String,
    pub value: f64,
    pub ts_ms: i64,
}

impl BenchReadings {
    /// Reading `i` (0-based, below `lines`).
    pub fn reading(&self, i: u64) -> BenchReading {
        let sensors = self.sensors.max(1);
        let s = i % sensors;
        let k = i / sensors;
        let (kind, prefix, metric) = KINDS[(s % KINDS.len() as u64) as usize];
        // A triangle wave 0..=20..0: changes every report, never runs away.
        let tri = (k % 40).abs_diff(20) as f64;
        let value = match metric {
            "level" => 2.0 + (s % 50) as f64 * 0.1 + tri * 0.001,
            "rainfall" => ((s + k) % 5) as f64 * 0.1,
            "laeq" => 40.0 + ((s * 7 + k) % 90) as f64 * 0.1,
            _ => 10.0 + (s % 100) as f64 + tri * 0.25,
        };
        BenchReading {
            kind,
            sensor: format!("{prefix}-{s:05}"),
            metric,
            district: DISTRICTS[(s % DISTRICTS.len() as u64) as usize],
            site: format!("s{}", s % 50),
            // Whole millimetres / tenths: what a device would send, printed as short as the
            // gateway prints a parsed value.
            value: (value * 1000.0).round() / 1000.0,
            ts_ms: self.start_ms + k as i64 * REPORT_INTERVAL_MS,
        }
    }

    /// Appends reading `i` as one line of line protocol (ms precision), in the gateway sink's
    /// shape (tags sorted by key, the value as a float, the quality as a string field):
    /// `water_level,district=清城区,sensor=wl-00001,site=s1 level=2.103,quality="good" <ms>`.
    /// No tag value needs escaping: ids, district names and sites have no space, comma or `=`.
    pub fn push_line(&self, i: u64, out: &mut String) {
        let r = self.reading(i);
        let _ = writeln!(
            out,
            "{},district={},sensor={},site={} {}={},quality=\"good\" {}",
            r.kind, r.district, r.sensor, r.site, r.metric, r.value, r.ts_ms
        );
    }

    /// Appends reading `i` as one citygate JSON object (the flat form, tags and kind named).
    pub fn push_json(&self, i: u64, out: &mut String) {
        let r = self.reading(i);
        let _ = write!(
            out,
            r#"{{"sensor":"{}","kind":"{}","ts":{},"tags":{{"district":"{}","site":"{}"}},"{}":{}}}"#,
            r.sensor, r.kind, r.ts_ms, r.district, r.site, r.metric, r.value
        );
    }

    /// Readings `from..to` as one request body in `format`.
    pub fn body(&self, format: BodyFormat, from: u64, to: u64) -> String {
        let mut out = String::with_capacity(((to - from) * 110) as usize);
        match format {
            BodyFormat::Line => (from..to).for_each(|i| self.push_line(i, &mut out)),
            BodyFormat::Json => {
                out.push('[');
                for i in from..to {
                    if i > from {
                        out.push(',');
                    }
                    self.push_json(i, &mut out);
                }
                out.push(']');
            }
        }
        out
    }

    /// A start that puts the last report a day before `now_ms`: inside the gateway's default
    /// `max_age` (7 d), never in the future, and on a whole second.
    pub fn start_before(now_ms: i64, lines: u64, sensors: u64) -> i64 {
        let reports = lines.div_ceil(sensors.max(1)) as i64;
        let start = now_ms - 86_400_000 - reports * REPORT_INTERVAL_MS;
        start - start.rem_euclid(1_000)
    }
}

/// What a request body holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BodyFormat {
    /// InfluxDB line protocol, for `/api/v2/write` (VictoriaMetrics, InfluxDB 2).
    Line,
    /// A JSON array of citygate readings, for the gateway's `/api/v1/ingest`.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SHAPE: BenchReadings = BenchReadings {
        lines: 40,
        sensors: 8,
        start_ms: 1_795_305_600_000,
    };

    #[test]
    fn lines_have_the_gateway_shape() {
        let mut out = String::new();
        SHAPE.push_line(1, &mut out);
        SHAPE.push_line(8 + 2, &mut out);
        assert_eq!(
            out,
            "rainfall,district=清新区,sensor=rf-00001,site=s1 rainfall=0.1,quality=\"good\" 1795305600000\n\
             noise,district=英德市,sensor=ns-00002,site=s2 laeq=41.5,quality=\"good\" 1795305660000\n"
        );
    }

    #[test]
    fn json_names_sensor_kind_tags_and_metric() {
        let body = SHAPE.body(BodyFormat::Json, 0, 2);
        let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(v[0]["sensor"], "wl-00000");
        assert_eq!(v[0]["kind"], "water_level");
        assert_eq!(v[0]["ts"], 1_795_305_600_000_i64);
        assert_eq!(v[0]["tags"]["district"], "清城区");
        assert_eq!(v[0]["level"], 2.02);
        assert_eq!(v[1]["kind"], "rainfall");
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn every_series_timestamp_pair_is_distinct_and_values_move() {
        let body = SHAPE.body(BodyFormat::Line, 0, SHAPE.lines);
        let mut seen = HashSet::new();
        let mut last_value = std::collections::HashMap::new();
        for line in body.lines() {
            let (series, rest) = line.split_once(' ').expect("series");
            let (fields, ts) = rest.rsplit_once(' ').expect("ts");
            assert!(seen.insert((series.to_string(), ts.to_string())), "{line}");
            let value = fields.split(',').next().expect("field").to_string();
            if let Some(prev) = last_value.insert(series.to_string(), value.clone()) {
                // rainfall may repeat (no flat-line check on it); the others must move
                if !series.starts_with("rainfall") {
                    assert_ne!(prev, value, "{series} repeats {value}");
                }
            }
        }
        assert_eq!(seen.len(), 40);
        assert_eq!(last_value.len(), 8);
    }

    #[test]
    fn start_is_a_day_back_and_on_a_second() {
        let now = 1_795_305_600_123;
        let start = BenchReadings::start_before(now, 100, 10);
        assert_eq!(start % 1_000, 0);
        let last = start + 9 * REPORT_INTERVAL_MS;
        assert!(last <= now - 86_400_000, "{last}");
        assert!(last > now - 86_400_000 - 2 * REPORT_INTERVAL_MS);
    }
}
