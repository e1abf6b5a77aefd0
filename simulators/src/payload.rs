//! citygate JSON payloads: one flat object per report, and deliberately broken ones for tests.

use std::fmt::Write as _;

use crate::kinds::Metric;

/// Appends `s` as a JSON string literal (UTF-8 kept as is, quotes and controls escaped).
pub(crate) fn push_json_str(buf: &mut String, s: &str) {
    buf.push('"');
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

/// `value` rounded to `decimals`. Rounding before formatting makes a tiny negative print as
/// 0.0, not -0.0 (`+ 0.0` turns the -0.0 that rounding leaves into +0.0).
pub(crate) fn rounded(value: f64, decimals: u8) -> f64 {
    let scale = 10f64.powi(i32::from(decimals));
    (value * scale).round() / scale + 0.0
}

/// Writes one report: `{"sensor":..,"kind":..,"ts":..,"tags":{..},"<metric>":<value>,...}`.
pub(crate) fn write_report(
    buf: &mut String,
    sensor: &str,
    kind: &str,
    ts_ms: i64,
    tags: &[(String, String)],
    metrics: &[Metric],
) {
    buf.push_str("{\"sensor\":");
    push_json_str(buf, sensor);
    buf.push_str(",\"kind\":");
    push_json_str(buf, kind);
    let _ = write!(buf, ",\"ts\":{ts_ms},\"tags\":{{");
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            buf.push(',');
        }
        push_json_str(buf, k);
        buf.push(':');
        push_json_str(buf, v);
    }
    buf.push('}');
    for m in metrics {
        // Generators never produce NaN or infinities; skipping keeps the JSON valid if one did.
        if !m.value.is_finite() {
            continue;
        }
        buf.push(',');
        push_json_str(buf, m.name);
        let _ = write!(
            buf,
            ":{:.*}",
            usize::from(m.decimals),
            rounded(m.value, m.decimals)
        );
    }
    buf.push('}');
}

/// Malformed or invalid payloads, each with what is wrong with it, stamped around the current
/// wall-clock time (so only the deliberately future one is out of the gateway's time window).
pub fn bad_payloads() -> Vec<(&'static str, String)> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    bad_payloads_at(now_ms)
}

/// [`bad_payloads`] for a given "now" (epoch ms), for deterministic tests.
///
/// They name sensor `wq-qc-01`, which every fleet has. Each entry is a whole payload: the
/// duplicate is a JSON array holding the same reading twice.
pub fn bad_payloads_at(now_ms: i64) -> Vec<(&'static str, String)> {
    let head = |ts: i64| {
        format!(
            r#""sensor":"wq-qc-01","kind":"water_quality","ts":{ts},"tags":{{"district":"清城区","site":"北江清远段"}}"#
        )
    };
    let ts = now_ms;
    let good = format!(r#"{{{},"ph":7.1,"cod":12.0}}"#, head(ts));
    let truncated = good[..good.len() / 2].to_string();
    let day_ms = 86_400_000;
    vec![
        ("truncated JSON", truncated),
        ("not JSON at all", "ph=7.1 cod=12".to_string()),
        (
            "wrong type: metric value is a boolean",
            format!(r#"{{{},"ph":true}}"#, head(ts)),
        ),
        (
            "wrong type: timestamp is a string",
            r#"{"sensor":"wq-qc-01","kind":"water_quality","ts":"yesterday","ph":7.1}"#.to_string(),
        ),
        (
            "wrong type: sensor id is a number",
            format!(r#"{{"sensor":42,"kind":"water_quality","ts":{ts},"ph":7.1}}"#),
        ),
        (
            "pH of 17 (out of range 0..14)",
            format!(r#"{{{},"ph":17.0}}"#, head(ts)),
        ),
        ("NaN as a string", format!(r#"{{{},"ph":"NaN"}}"#, head(ts))),
        (
            "timestamp one day in the future",
            format!(r#"{{{},"ph":7.1}}"#, head(ts + day_ms)),
        ),
        (
            "duplicate: the same sensor and timestamp twice",
            format!("[{good},{good}]"),
        ),
        (
            "unknown metric for the kind",
            format!(r#"{{{},"pm25":35.0}}"#, head(ts)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_valid_json_with_escaped_tags() {
        let mut buf = String::new();
        let tags = vec![
            ("district".to_string(), "清城区".to_string()),
            ("site".to_string(), "a \"quoted\" \\ site\n".to_string()),
        ];
        let metrics = [
            Metric {
                name: "ph",
                value: 7.123456,
                decimals: 2,
            },
            Metric {
                name: "cod",
                value: -0.0001,
                decimals: 1,
            },
            Metric {
                name: "bad",
                value: f64::NAN,
                decimals: 1,
            },
        ];
        write_report(
            &mut buf,
            "wq-qc-01",
            "water_quality",
            1_732_250_000_000,
            &tags,
            &metrics,
        );
        let v: serde_json::Value = serde_json::from_str(&buf).expect("valid JSON");
        assert_eq!(v["sensor"], "wq-qc-01");
        assert_eq!(v["ts"], 1_732_250_000_000i64);
        assert_eq!(v["tags"]["district"], "清城区");
        assert_eq!(v["tags"]["site"], "a \"quoted\" \\ site\n");
        assert_eq!(v["ph"].as_f64(), Some(7.12));
        assert_eq!(v["cod"].to_string(), "0.0");
        assert!(v.get("bad").is_none());
    }

    #[test]
    fn bad_payloads_are_bad_in_the_way_they_claim() {
        let now = 1_732_250_000_000;
        let bad = bad_payloads_at(now);
        let find = |what: &str| {
            bad.iter()
                .find(|(w, _)| w.starts_with(what))
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| panic!("missing {what}"))
        };
        assert!(serde_json::from_str::<serde_json::Value>(&find("truncated")).is_err());
        let ph17: serde_json::Value = serde_json::from_str(&find("pH of 17")).expect("json");
        assert_eq!(ph17["ph"].as_f64(), Some(17.0));
        let nan: serde_json::Value = serde_json::from_str(&find("NaN")).expect("json");
        assert_eq!(nan["ph"], "NaN");
        let future: serde_json::Value =
            serde_json::from_str(&find("timestamp one day")).expect("json");
        assert_eq!(future["ts"].as_i64(), Some(now + 86_400_000));
        let dup: serde_json::Value = serde_json::from_str(&find("duplicate")).expect("json");
        let items = dup.as_array().expect("array");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1]);
        let wrong: serde_json::Value =
            serde_json::from_str(&find("wrong type: metric")).expect("json");
        assert!(wrong["ph"].is_boolean());
    }
}
