//! Golden decoding cases: `tests/cases/codec/<name>/{input,args,expected}`.
//!
//! `input` is the raw payload, `args` one line of `key=value` (format, sensor, kind, metric,
//! precision, received_at, payload, tags=k:v,k:v), and `expected` one line per reading
//! (`sensor kind metric value ts ts_source unit tags`, `-` for empty), then one line per item
//! error (`error <reason>: <message>`), or the single line `fatal <reason>: <message>`.
//!
//! `CODEC_CASES_BLESS=1 cargo test --test codec_cases` writes the actual output over
//! `expected`; review the diff before committing it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use citygate::codec::{decode, DecodeContext, Format, Precision};
use citygate::model::{Reading, Tags};
use compact_str::CompactString;

struct Args {
    format: Format,
    sensor: Option<String>,
    kind: Option<String>,
    metric: Option<String>,
    precision: Precision,
    received_at: i64,
    payload: u32,
    tags: Option<Tags>,
}

fn parse_args(text: &str) -> Result<Args, String> {
    let mut args = Args {
        format: Format::Json,
        sensor: None,
        kind: None,
        metric: None,
        precision: Precision::Ns,
        received_at: 1_732_250_000_000,
        payload: 0,
        tags: None,
    };
    for word in text.split_whitespace() {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("args: {word:?} is not key=value"))?;
        match k {
            "format" => args.format = Format::parse(v).ok_or_else(|| format!("bad format {v}"))?,
            "sensor" => args.sensor = Some(v.to_string()),
            "kind" => args.kind = Some(v.to_string()),
            "metric" => args.metric = Some(v.to_string()),
            "precision" => {
                args.precision = Precision::parse(v).ok_or_else(|| format!("bad precision {v}"))?
            }
            "received_at" => args.received_at = v.parse().map_err(|e| format!("{k}: {e}"))?,
            "payload" => args.payload = v.parse().map_err(|e| format!("{k}: {e}"))?,
            "tags" => {
                let mut pairs: Vec<(CompactString, CompactString)> = v
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair.split_once(':').unwrap_or((pair, ""));
                        (k.into(), v.into())
                    })
                    .collect();
                pairs.sort();
                args.tags = Some(Arc::from(pairs));
            }
            _ => return Err(format!("args: unknown key {k:?}")),
        }
    }
    Ok(args)
}

fn render_reading(r: &Reading, out: &mut String) {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let tags = match &r.tags {
        None => "-".to_string(),
        Some(t) => t
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    };
    let _ = writeln!(
        out,
        "{} {} {} {} {} {} {} {}",
        dash(&r.sensor),
        dash(&r.kind),
        dash(&r.metric),
        r.value,
        r.ts,
        r.ts_source.as_str(),
        r.unit.as_deref().map_or("-".to_string(), dash),
        tags
    );
}

fn run_case(dir: &Path) -> Result<String, String> {
    let input = std::fs::read(dir.join("input")).map_err(|e| format!("input: {e}"))?;
    let args = std::fs::read_to_string(dir.join("args")).map_err(|e| format!("args: {e}"))?;
    let args = parse_args(&args)?;
    let ctx = DecodeContext {
        received_at: args.received_at,
        payload: args.payload,
        sensor: args.sensor.as_deref(),
        kind: args.kind.as_deref(),
        metric: args.metric.as_deref(),
        precision: args.precision,
        tags: args.tags.clone(),
    };
    let (mut readings, mut errors) = (Vec::new(), Vec::new());
    let result = decode(args.format, &input, &ctx, &mut readings, &mut errors);
    let mut actual = String::new();
    match result {
        Err(e) => {
            if !readings.is_empty() || !errors.is_empty() {
                return Err(format!(
                    "fatal {e} but left {} readings and {} errors behind",
                    readings.len(),
                    errors.len()
                ));
            }
            let _ = writeln!(actual, "fatal {}: {e}", e.reason());
        }
        Ok(()) => {
            for r in &readings {
                if r.payload != args.payload {
                    return Err(format!("reading {r:?} lost its payload index"));
                }
                render_reading(r, &mut actual);
            }
            for e in &errors {
                let _ = writeln!(actual, "error {}: {e}", e.reason());
            }
        }
    }
    Ok(actual)
}

fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => {
                let _ = writeln!(out, "   {x}");
            }
            (x, y) => {
                if let Some(x) = x {
                    let _ = writeln!(out, " - {x}");
                }
                if let Some(y) = y {
                    let _ = writeln!(out, " + {y}");
                }
            }
        }
    }
    out
}

fn case_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/codec");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_cases() {
    let bless = std::env::var_os("CODEC_CASES_BLESS").is_some();
    let dirs = case_dirs();
    assert!(dirs.len() >= 30, "only {} codec cases found", dirs.len());
    let mut failures = String::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let actual = match run_case(dir) {
            Ok(actual) => actual,
            Err(problem) => {
                let _ = writeln!(failures, "\n== {name}: {problem}");
                continue;
            }
        };
        let expected_path = dir.join("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap_or_else(|e| panic!("{name}: {e}"));
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            let _ = writeln!(
                failures,
                "\n== {name} (- expected, + actual)\n{}",
                diff(&expected, &actual)
            );
        }
    }
    assert!(failures.is_empty(), "codec cases differ:{failures}");
}

/// A megabyte-sized body decodes completely; generated here rather than committed.
#[test]
fn megabyte_json_array() {
    let mut body = String::from("[");
    let mut n = 0;
    while body.len() < 1_048_576 {
        if n > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"sensor":"wq-{:04}","kind":"water_quality","ts":{},"ph":{}.{},"cod":{}}}"#,
            n % 10_000,
            1_732_250_000_000_i64 + n,
            6 + n % 3,
            n % 10,
            n % 40
        );
        n += 1;
    }
    body.push(']');
    let ctx = DecodeContext::default();
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    decode(Format::Json, body.as_bytes(), &ctx, &mut out, &mut errors)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(out.len() as i64, 2 * n);
    let last = &out[out.len() - 1];
    assert_eq!(last.metric, "cod");
    assert_eq!(last.sensor, format!("wq-{:04}", (n - 1) % 10_000));
    assert_eq!(last.value, ((n - 1) % 40) as f64);
    assert_eq!(last.ts, 1_732_250_000_000 + n - 1);
    let ph = &out[out.len() - 2];
    assert_eq!(
        ph.value,
        format!("{}.{}", 6 + (n - 1) % 3, (n - 1) % 10)
            .parse::<f64>()
            .unwrap_or(f64::NAN)
    );
}

#[test]
fn megabyte_line_protocol_with_a_bad_line_in_the_middle() {
    let mut body = String::new();
    let mut n = 0_i64;
    while body.len() < 1_048_576 {
        if n == 5000 {
            body.push_str("water_level,sensor=broken level=\n");
        } else {
            let _ = writeln!(
                body,
                "water_level,sensor=wl-{},district=清城区 level={}.25 {}",
                n % 100,
                n % 7,
                1_732_250_000_000_000_000_i64 + n * 1_000_000
            );
        }
        n += 1;
    }
    let ctx = DecodeContext::default();
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    decode(Format::Line, body.as_bytes(), &ctx, &mut out, &mut errors)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.len() as i64, n - 1);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].reason(), "invalid_line");
    assert!(
        errors[0].to_string().starts_with("line 5001, column 33:"),
        "{}",
        errors[0]
    );
    let r = &out[6000];
    assert_eq!(r.sensor, "wl-1");
    assert_eq!(r.value, 2.25);
    assert_eq!(r.ts, 1_732_250_000_000 + 6001);
    assert_eq!(
        r.tags.as_deref(),
        Some(&[("district".into(), "清城区".into())][..])
    );
}

/// serde_json skips values it is not asked to read without recursing, so nesting under a metric
/// is a wrong type however deep it goes, never a stack overflow.
#[test]
fn deeply_nested_metric_value_is_a_wrong_type() {
    for payload_depth in [200, 1_000_000] {
        let body = format!(
            r#"{{"sensor":"x","m":{}{},"ok":1}}"#,
            "[".repeat(payload_depth),
            "]".repeat(payload_depth)
        );
        let ctx = DecodeContext::default();
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        decode(Format::Json, body.as_bytes(), &ctx, &mut out, &mut errors)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].metric, "ok");
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "\"m\": expected a number, found an array"
        );
    }
}

/// A payload of nothing but bad items records the first MAX_ITEM_ERRORS and counts the rest.
#[test]
fn item_errors_are_capped() {
    use citygate::codec::MAX_ITEM_ERRORS;
    let body = "m f=1\n".repeat(MAX_ITEM_ERRORS + 50);
    let ctx = DecodeContext::default();
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    decode(Format::Line, body.as_bytes(), &ctx, &mut out, &mut errors)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.is_empty());
    assert_eq!(errors.len(), MAX_ITEM_ERRORS + 1);
    assert!(errors[..MAX_ITEM_ERRORS]
        .iter()
        .all(|e| e.reason() == "missing_sensor"));
    assert_eq!(
        errors[MAX_ITEM_ERRORS].to_string(),
        "50 more item errors in this payload were not recorded"
    );
}

#[test]
fn too_many_readings_is_fatal() {
    use citygate::codec::MAX_READINGS_PER_PAYLOAD;
    let line = "water_level,sensor=wl-1 a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9,j=10\n";
    let body = line.repeat(MAX_READINGS_PER_PAYLOAD / 10 + 1);
    let ctx = DecodeContext::default();
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let result = decode(Format::Line, body.as_bytes(), &ctx, &mut out, &mut errors);
    assert_eq!(result.map_err(|e| e.reason()), Err("too_many_items"));
    assert!(out.is_empty() && errors.is_empty());
}
