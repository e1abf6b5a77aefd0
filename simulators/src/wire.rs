//! The three payload formats a simulated device can speak over MQTT, and the topics of
//! citygate's default routes they go to:
//!
//! | format | topic | payload |
//! |---|---|---|
//! | json | `<prefix>/<district>/<kind>/<sensor>` | one citygate JSON object |
//! | senml | `<prefix>/<district>/<kind>/<sensor>/senml` | a SenML pack (RFC 8428), names `<sensor>/<metric>` |
//! | line | `<prefix>/<district>/<kind>/<sensor>/line` | InfluxDB line protocol, ns timestamps |
//!
//! The encoders are the simulator's own (the crate does not depend on citygate), so the
//! gateway's decoders are checked against an independent writer.

use std::fmt::Write as _;

use crate::payload::push_json_str;
use crate::rng::mix;

/// A payload format on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    Json,
    Senml,
    Line,
}

impl WireFormat {
    pub const ALL: [WireFormat; 3] = [WireFormat::Json, WireFormat::Senml, WireFormat::Line];

    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::Json => "json",
            WireFormat::Senml => "senml",
            WireFormat::Line => "line",
        }
    }

    /// The last topic level after the sensor id (none for JSON).
    fn topic_suffix(self) -> &'static str {
        match self {
            WireFormat::Json => "",
            WireFormat::Senml => "/senml",
            WireFormat::Line => "/line",
        }
    }
}

/// Which format each sensor of a fleet speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatChoice {
    Json,
    Senml,
    Line,
    /// A fixed per-sensor choice drawn from the seed: about 70 % JSON, 20 % SenML, 10 % line
    /// protocol, so that every decoder is exercised by one fleet.
    Mix,
}

impl FormatChoice {
    /// The format sensor `id` speaks, with `Mix` at the default weights; the same seed and
    /// id always give the same answer.
    pub fn for_sensor(self, seed: u64, id: &str) -> WireFormat {
        self.for_sensor_with(seed, id, &MixWeights::default())
    }

    /// The format sensor `id` speaks, with `Mix` drawn at `weights`.
    pub fn for_sensor_with(self, seed: u64, id: &str, weights: &MixWeights) -> WireFormat {
        match self {
            FormatChoice::Json => WireFormat::Json,
            FormatChoice::Senml => WireFormat::Senml,
            FormatChoice::Line => WireFormat::Line,
            FormatChoice::Mix => {
                let h = id
                    .bytes()
                    .fold(mix(seed, 0x5eed), |h, b| mix(h, u64::from(b)));
                weights.pick(h)
            }
        }
    }
}

/// The shares of a `mix` fleet, `json=70,senml=20,line=10` by default: relative weights, any
/// of which may be 0 (not all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixWeights {
    pub json: u32,
    pub senml: u32,
    pub line: u32,
}

impl Default for MixWeights {
    fn default() -> Self {
        MixWeights {
            json: 70,
            senml: 20,
            line: 10,
        }
    }
}

impl MixWeights {
    fn pick(&self, h: u64) -> WireFormat {
        let total = u64::from(self.json) + u64::from(self.senml) + u64::from(self.line);
        let r = h % total.max(1);
        if r < u64::from(self.json) {
            WireFormat::Json
        } else if r < u64::from(self.json) + u64::from(self.senml) {
            WireFormat::Senml
        } else {
            WireFormat::Line
        }
    }
}

impl std::str::FromStr for MixWeights {
    type Err = String;

    /// `json=70,senml=20,line=10`; formats left out weigh 0.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut w = MixWeights {
            json: 0,
            senml: 0,
            line: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: want FORMAT=WEIGHT, e.g. json=70"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|e| format!("{part:?}: the weight is not a whole number ({e})"))?;
            match name.trim() {
                "json" => w.json = weight,
                "senml" => w.senml = weight,
                "line" => w.line = weight,
                other => return Err(format!("{other:?}: the formats are json, senml and line")),
            }
        }
        if w.json == 0 && w.senml == 0 && w.line == 0 {
            return Err(format!("{s:?}: give at least one format a weight above 0"));
        }
        Ok(w)
    }
}

/// Replaces what a topic level must not contain (the separator and the wildcards).
pub fn topic_level(v: &str) -> String {
    v.replace(['/', '+', '#'], "_")
}

/// The topic of a report of `sensor` in `format`, on citygate's default routes.
pub fn topic(prefix: &str, district: &str, kind: &str, sensor: &str, format: WireFormat) -> String {
    format!(
        "{prefix}/{}/{kind}/{}{}",
        topic_level(district),
        topic_level(sensor),
        format.topic_suffix()
    )
}

/// One report as values, ready to be written in any format.
#[derive(Clone, Debug, PartialEq)]
pub struct Report<'a> {
    pub sensor: &'a str,
    pub kind: &'a str,
    pub ts_ms: i64,
    pub tags: &'a [(String, String)],
    /// Metric name and value; non-finite values are left out of every format.
    pub values: &'a [(&'a str, f64)],
}

impl Report<'_> {
    pub fn encode(&self, format: WireFormat) -> String {
        match format {
            WireFormat::Json => self.json(),
            WireFormat::Senml => self.senml(),
            WireFormat::Line => self.line(),
        }
    }

    /// `{"sensor":..,"kind":..,"ts":..,"tags":{..},"<metric>":<value>,...}`.
    pub fn json(&self) -> String {
        let mut buf = String::with_capacity(96 + 24 * self.values.len());
        buf.push_str("{\"sensor\":");
        push_json_str(&mut buf, self.sensor);
        buf.push_str(",\"kind\":");
        push_json_str(&mut buf, self.kind);
        let _ = write!(buf, ",\"ts\":{}", self.ts_ms);
        if !self.tags.is_empty() {
            buf.push_str(",\"tags\":{");
            for (i, (k, v)) in self.tags.iter().enumerate() {
                if i > 0 {
                    buf.push(',');
                }
                push_json_str(&mut buf, k);
                buf.push(':');
                push_json_str(&mut buf, v);
            }
            buf.push('}');
        }
        for (name, v) in self.finite() {
            buf.push(',');
            push_json_str(&mut buf, name);
            let _ = write!(buf, ":{v}");
        }
        buf.push('}');
        buf
    }

    /// A SenML pack: the first record carries `bn` = `<sensor>/` and `bt` (seconds, with the
    /// milliseconds as an exact decimal fraction); SenML has no kind or tags, the route's
    /// topic gives them.
    pub fn senml(&self) -> String {
        let mut buf = String::from("[");
        let secs = self.ts_ms.div_euclid(1000);
        let ms = self.ts_ms.rem_euclid(1000);
        for (i, (name, v)) in self.finite().enumerate() {
            if i > 0 {
                buf.push(',');
                buf.push_str("{\"n\":");
            } else {
                buf.push_str("{\"bn\":");
                push_json_str(&mut buf, &format!("{}/", self.sensor));
                let _ = write!(buf, ",\"bt\":{secs}.{ms:03},\"n\":");
            }
            push_json_str(&mut buf, name);
            let _ = write!(buf, ",\"v\":{v}}}");
        }
        buf.push(']');
        buf
    }

    /// `<kind>,sensor=<id>,<tag>=<v>... <metric>=<value>,... <ts ns>`.
    pub fn line(&self) -> String {
        let mut buf = String::new();
        escape_line(&mut buf, self.kind, b", ");
        buf.push_str(",sensor=");
        escape_line(&mut buf, self.sensor, b",= ");
        for (k, v) in self.tags {
            // An empty tag value cannot be written in line protocol.
            if v.is_empty() {
                continue;
            }
            buf.push(',');
            escape_line(&mut buf, k, b",= ");
            buf.push('=');
            escape_line(&mut buf, v, b",= ");
        }
        for (i, (name, v)) in self.finite().enumerate() {
            buf.push(if i == 0 { ' ' } else { ',' });
            escape_line(&mut buf, name, b",= ");
            let _ = write!(buf, "={v}");
        }
        let _ = writeln!(buf, " {}", i128::from(self.ts_ms) * 1_000_000);
        buf
    }

    fn finite(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.values
            .iter()
            .filter(|(_, v)| v.is_finite())
            // `+ 0.0` turns -0.0 into 0.0, which every format prints without a sign.
            .map(|&(n, v)| (n, v + 0.0))
    }
}

fn escape_line(buf: &mut String, s: &str, specials: &[u8]) {
    for c in s.chars() {
        if c.is_ascii() && specials.contains(&(c as u8)) {
            buf.push('\\');
        }
        // Line protocol has no escape for a newline: a space keeps the line whole.
        buf.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report<'a>(tags: &'a [(String, String)], values: &'a [(&'a str, f64)]) -> Report<'a> {
        Report {
            sensor: "wq-qc-01",
            kind: "water_quality",
            ts_ms: 1_732_250_000_042,
            tags,
            values,
        }
    }

    #[test]
    fn senml_names_the_sensor_once_and_keeps_the_milliseconds() {
        let values = [("ph", 7.25), ("cod", 12.0)];
        let pack: serde_json::Value =
            serde_json::from_str(&report(&[], &values).senml()).expect("SenML is JSON");
        assert_eq!(pack[0]["bn"], "wq-qc-01/");
        assert_eq!(pack[0]["bt"].as_f64(), Some(1_732_250_000.042));
        assert_eq!(pack[0]["n"], "ph");
        assert_eq!(pack[0]["v"].as_f64(), Some(7.25));
        assert_eq!(pack[1]["n"], "cod");
        assert_eq!(pack[1]["v"].as_f64(), Some(12.0));
        assert!(pack[1].get("bn").is_none());
    }

    #[test]
    fn line_protocol_escapes_tags_and_writes_nanoseconds() {
        let tags = vec![
            ("district".to_string(), "清城区".to_string()),
            ("site".to_string(), "a b,c=d".to_string()),
        ];
        let values = [("ph", 7.25), ("bad", f64::NAN), ("cod", -0.0)];
        assert_eq!(
            report(&tags, &values).line(),
            "water_quality,sensor=wq-qc-01,district=清城区,site=a\\ b\\,c\\=d ph=7.25,cod=0 1732250000042000000\n"
        );
    }

    #[test]
    fn json_has_the_values_and_tags() {
        let tags = vec![("district".to_string(), "清城区".to_string())];
        let values = [("ph", 7.25)];
        let v: serde_json::Value =
            serde_json::from_str(&report(&tags, &values).json()).expect("JSON");
        assert_eq!(v["ts"], 1_732_250_000_042i64);
        assert_eq!(v["tags"]["district"], "清城区");
        assert_eq!(v["ph"].as_f64(), Some(7.25));
    }

    #[test]
    fn mix_uses_every_format_and_is_stable() {
        let ids: Vec<String> = (0..200).map(|i| format!("s-{i}")).collect();
        let picks: Vec<WireFormat> = ids
            .iter()
            .map(|id| FormatChoice::Mix.for_sensor(42, id))
            .collect();
        for f in WireFormat::ALL {
            let n = picks.iter().filter(|p| **p == f).count();
            assert!(n > 5, "{f:?} chosen only {n} times of 200");
        }
        let json = picks.iter().filter(|p| **p == WireFormat::Json).count();
        assert!((110..=170).contains(&json), "about 70 % JSON, got {json}");
        let again: Vec<WireFormat> = ids
            .iter()
            .map(|id| FormatChoice::Mix.for_sensor(42, id))
            .collect();
        assert_eq!(picks, again);
    }

    #[test]
    fn topics_follow_the_default_routes() {
        assert_eq!(
            topic(
                "city",
                "清城区",
                "water_quality",
                "wq-qc-01",
                WireFormat::Senml
            ),
            "city/清城区/water_quality/wq-qc-01/senml"
        );
        assert_eq!(
            topic("city", "a/b", "noise", "n#1", WireFormat::Json),
            "city/a_b/noise/n_1"
        );
    }

    #[test]
    fn mix_weights_parse_and_steer_the_choice() {
        let w: MixWeights = "senml=1".parse().expect("parses");
        assert_eq!((w.json, w.senml, w.line), (0, 1, 0));
        let ids: Vec<String> = (0..200).map(|i| format!("s-{i}")).collect();
        assert!(ids
            .iter()
            .all(|id| FormatChoice::Mix.for_sensor_with(42, id, &w) == WireFormat::Senml));
        let half: MixWeights = "json=1,line=1".parse().expect("parses");
        let line = ids
            .iter()
            .filter(|id| FormatChoice::Mix.for_sensor_with(42, id, &half) == WireFormat::Line)
            .count();
        assert!(
            (60..=140).contains(&line),
            "about half line protocol, got {line}"
        );
        for bad in ["json", "json=x", "xml=1", "json=0", ""] {
            assert!(bad.parse::<MixWeights>().is_err(), "{bad:?} is refused");
        }
    }
}
