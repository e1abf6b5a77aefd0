//! Properties of the codecs: no input makes one panic, a fatal error leaves nothing behind, and
//! what citygate's own encoders write decodes back to the same readings.

use std::collections::BTreeMap;

use citygate::codec::{decode, CodecError, DecodeContext, Format, Precision, JSON_RESERVED_KEYS};
use citygate::model::{Reading, TsSource};
use proptest::prelude::*;

fn contexts() -> [DecodeContext<'static>; 2] {
    [
        DecodeContext::default(),
        DecodeContext {
            received_at: 1_732_250_000_000,
            payload: 3,
            sensor: Some("route-sensor"),
            kind: Some("water_level"),
            metric: Some("level"),
            precision: Precision::Ms,
            tags: Some(vec![("district".into(), "清城区".into())].into()),
        },
    ]
}

/// Decodes with every format and context; checks the contract on the way.
fn decode_everything(payload: &[u8]) {
    for ctx in &contexts() {
        for format in Format::ALL {
            let (mut out, mut errors) = (Vec::new(), Vec::new());
            match decode(format, payload, ctx, &mut out, &mut errors) {
                Err(_) => assert!(out.is_empty() && errors.is_empty()),
                Ok(()) => {
                    for r in &out {
                        assert_eq!(r.payload, ctx.payload);
                        assert!(!r.sensor.is_empty(), "{format}: empty sensor in {r:?}");
                        if let Some(tags) = &r.tags {
                            assert!(
                                tags.windows(2).all(|w| w[0].0 < w[1].0),
                                "unsorted {tags:?}"
                            );
                        }
                    }
                    for e in &errors {
                        assert!(!e.reason().is_empty());
                    }
                }
            }
        }
    }
}

/// Valid payloads of each format that mutations start from.
const SEEDS: &[&str] = &[
    r#"{"sensor":"wq-0042","kind":"water_quality","ts":"2024-11-22T12:33:20+08:00","tags":{"district":"清城区"},"ph":7.1,"values":{"cod":12}}"#,
    r#"[{"sensor":"a","ts":1732250000000,"x":1},{"sensor":"b","x":[1,{"y":2}]}]"#,
    r#"[{"bn":"urn:dev:wq-0042:","bt":1732250000,"bu":"mg/L","n":"cod","v":12},{"n":"ph","vb":true,"t":-5}]"#,
    "water_quality,sensor=wq\\ 1,district=清城区 ph=7.1,ok=t,n=3i,note=\"a \\\"b\\\"\" 1732250000000000000\n# c\nm f=1",
    " -3.25e2 ",
];

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
}

fn mutate(seed: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Truncate(i) => bytes.truncate(i % len),
            Mutation::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            Mutation::Delete(_) => {}
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Replace(i, b) if !bytes.is_empty() => bytes[i % len] = b,
            Mutation::Replace(..) => {}
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Mostly the bytes that matter to the grammars, sometimes anything.
    let byte = prop_oneof![
        3 => prop::sample::select(b"{}[]\":,=\\ \n#-.0123456789eitfu".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_panic_on_arbitrary_bytes(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_everything(&payload);
    }

    #[test]
    fn no_panic_on_arbitrary_text(payload in "\\PC{0,200}") {
        decode_everything(payload.as_bytes());
    }

    #[test]
    fn no_panic_on_near_valid_payloads(
        seed in prop::sample::select(SEEDS),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        decode_everything(&mutate(seed, &mutations));
    }
}

/// One object as a device would send it.
#[derive(Debug, Clone)]
struct Object {
    sensor: String,
    ts: Option<i64>,
    tags: BTreeMap<String, String>,
    metrics: BTreeMap<String, f64>,
}

fn metric_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,30}".prop_filter("reserved key", |m| {
        !JSON_RESERVED_KEYS.contains(&m.as_str())
    })
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO
}

fn object() -> impl Strategy<Value = Object> {
    (
        "[a-z0-9][a-z0-9-]{0,40}",
        prop::option::of(-62_135_596_800_000_i64..=253_402_300_799_999),
        prop::collection::btree_map("[a-z_]{1,10}", "\\PC{0,12}", 0..4),
        prop::collection::btree_map(metric_name(), finite_f64(), 1..6),
    )
        .prop_map(|(sensor, ts, tags, metrics)| Object {
            sensor,
            ts,
            tags,
            metrics,
        })
}

fn encode_flat(objects: &[Object]) -> String {
    let array: Vec<serde_json::Value> = objects
        .iter()
        .map(|o| {
            let mut map = serde_json::Map::new();
            map.insert("sensor".into(), o.sensor.clone().into());
            if let Some(ts) = o.ts {
                map.insert("ts".into(), ts.into());
            }
            if !o.tags.is_empty() {
                map.insert(
                    "tags".into(),
                    serde_json::to_value(&o.tags).unwrap_or_default(),
                );
            }
            for (m, v) in &o.metrics {
                map.insert(m.clone(), (*v).into());
            }
            serde_json::Value::Object(map)
        })
        .collect();
    serde_json::Value::Array(array).to_string()
}

fn decode_ok(
    format: Format,
    payload: &str,
    ctx: &DecodeContext,
) -> (Vec<Reading>, Vec<CodecError>) {
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    if let Err(e) = decode(format, payload.as_bytes(), ctx, &mut out, &mut errors) {
        panic!("fatal {e} on {payload}");
    }
    (out, errors)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn flat_json_round_trips(objects in prop::collection::vec(object(), 1..8)) {
        let payload = encode_flat(&objects);
        let ctx = DecodeContext { received_at: 42, ..Default::default() };
        let (out, errors) = decode_ok(Format::Json, &payload, &ctx);
        prop_assert!(errors.is_empty(), "{:?}", errors);

        let mut readings = out.iter();
        for o in &objects {
            for (metric, value) in &o.metrics {
                let r = readings.next();
                prop_assert!(r.is_some(), "missing reading for {}", metric);
                let Some(r) = r else { break };
                prop_assert_eq!(r.sensor.as_str(), o.sensor.as_str());
                prop_assert_eq!(r.metric.as_str(), metric.as_str());
                prop_assert_eq!(r.value.to_bits(), value.to_bits());
                prop_assert_eq!(r.ts, o.ts.unwrap_or(42));
                let source = if o.ts.is_some() { TsSource::Device } else { TsSource::Received };
                prop_assert_eq!(r.ts_source, source);
                let tags: Option<Vec<(String, String)>> = r
                    .tags
                    .as_ref()
                    .map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
                let expected_tags = (!o.tags.is_empty())
                    .then(|| o.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
                prop_assert_eq!(tags, expected_tags);
            }
        }
        prop_assert!(readings.next().is_none());
    }

    /// Line protocol with every escapable character in tags and keys, and non-ASCII text.
    #[test]
    fn escaped_line_protocol_round_trips(
        kind in "[a-z_]{1,12}",
        sensor in "[^\\\\\n\r\t]{1,16}",
        tags in prop::collection::btree_map("t[^\\\\\n\r\t]{0,8}", "[^\\\\\n\r\t]{1,12}", 0..4),
        fields in prop::collection::btree_map("[^\\\\\n\r\t#]{1,12}", (-1_000_000_i64..1_000_000, any::<bool>()), 1..5),
        ts in -1_000_000_000_000_000_000_i64..4_000_000_000_000_000_000,
    ) {
        let escape = |s: &str| s.replace(',', "\\,").replace('=', "\\=").replace(' ', "\\ ");
        let mut line = format!("{kind},sensor={}", escape(&sensor));
        for (k, v) in &tags {
            line.push_str(&format!(",{}={}", escape(k), escape(v)));
        }
        let fields_text: Vec<String> = fields
            .iter()
            .map(|(k, (v, int))| if *int { format!("{}={v}i", escape(k)) } else { format!("{}={v}", escape(k)) })
            .collect();
        line.push_str(&format!(" {} {ts}\n", fields_text.join(",")));

        let ctx = DecodeContext::default();
        let (out, errors) = decode_ok(Format::Line, &line, &ctx);
        prop_assert!(errors.is_empty(), "{:?} in {}", errors, line);
        prop_assert_eq!(out.len(), fields.len());
        for (r, (key, (value, _))) in out.iter().zip(&fields) {
            prop_assert_eq!(r.kind.as_str(), kind.as_str());
            prop_assert_eq!(r.sensor.as_str(), sensor.as_str());
            prop_assert_eq!(r.metric.as_str(), key.as_str());
            prop_assert_eq!(r.value, *value as f64);
            prop_assert_eq!(r.ts, ts.div_euclid(1_000_000));
            let got: Vec<(String, String)> = r
                .tags
                .iter()
                .flat_map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            let want: Vec<(String, String)> = tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
