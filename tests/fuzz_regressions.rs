//! What the fuzz targets (fuzz/, docs/fuzzing.md) found, one test per finding, each named
//! after it and asserting the right outcome, so that a fix cannot quietly come undone.

use std::collections::BTreeMap;

use citygate::codec::{self, CodecError, DecodeContext, Format};
use citygate::model::Reading;
use citygate::sources::mqtt::config::{RouteConfig, RouteFormat};
use citygate::sources::mqtt::{check_filter, Pattern, PatternError, Router};

fn decode(format: Format, payload: &[u8], ctx: &DecodeContext) -> (Vec<Reading>, Vec<CodecError>) {
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    codec::decode(format, payload, ctx, &mut out, &mut errors).expect("readable payload");
    (out, errors)
}

/// fuzz target `json` (and `http_ingest`): `{"": 55.2}` became a reading whose metric was
/// the empty string.
#[test]
fn json_empty_metric_key_is_an_item_error_not_a_reading_without_a_metric() {
    let ctx = DecodeContext::default();
    let (readings, errors) = decode(
        Format::Json,
        br#"{"sensor":"ns-1","kind":"noise","":55.2,"laeq":61.5}"#,
        &ctx,
    );
    let got: Vec<(&str, f64)> = readings
        .iter()
        .map(|r| (r.metric.as_str(), r.value))
        .collect();
    assert_eq!(got, vec![("laeq", 61.5)], "the other metric still decodes");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].reason(), "missing_metric");
    assert_eq!(errors[0].to_string(), "a metric with an empty name");

    // The same inside `values`, and as the only metric of an array item.
    let (readings, errors) = decode(
        Format::Json,
        br#"[{"sensor":"a","values":{"":1}},{"sensor":"b","x":2}]"#,
        &ctx,
    );
    let got: Vec<(&str, &str)> = readings
        .iter()
        .map(|r| (r.sensor.as_str(), r.metric.as_str()))
        .collect();
    assert_eq!(got, vec![("b", "x")]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].to_string(), "item 0: a metric with an empty name");
}

/// Found while fixing the one above: a route that gives an empty metric is no metric.
#[test]
fn bare_value_with_an_empty_metric_from_the_route_is_missing_metric() {
    let ctx = DecodeContext {
        sensor: Some("wl-1"),
        metric: Some(""),
        ..DecodeContext::default()
    };
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let result = codec::decode(Format::Value, b"3.2", &ctx, &mut out, &mut errors);
    assert_eq!(result.map_err(|e| e.reason()), Err("missing_metric"));
    assert!(out.is_empty());
}

fn route(topic: &str) -> RouteConfig {
    RouteConfig {
        topic: topic.into(),
        subscribe: None,
        kind: None,
        format: RouteFormat::Json,
        tags: BTreeMap::new(),
    }
}

/// fuzz target `mqtt_route`: `topic = "$share/g1"` parsed as a pattern of literal levels
/// whose derived subscription filter, `$share/g1`, is an invalid shared subscription; and
/// `$share/g/city/#` would subscribe to `city/#` while matching no topic ever received.
#[test]
fn mqtt_route_share_prefix_in_topic_pattern_is_refused_with_a_pointer_to_subscribe() {
    for topic in ["$share/g1", "$share/g/city/{sensor}", "$share"] {
        assert_eq!(
            Pattern::parse(topic),
            Err(PatternError::ShareInPattern),
            "{topic:?}"
        );
    }
    let err = Router::new(&[route("city/{sensor}"), route("$share/g/city/#")]).map(|_| ());
    assert_eq!(err, Err((1, PatternError::ShareInPattern)));
    assert!(PatternError::ShareInPattern
        .to_string()
        .contains("`subscribe`"));

    // The right way still works, and `$SYS`-style literal `$` levels are not affected.
    let mut shared = route("city/{sensor}");
    shared.subscribe = Some("$share/g/city/+".into());
    let router = Router::new(&[shared]).expect("a shared subscription in `subscribe`");
    assert_eq!(router.filters(), vec!["$share/g/city/+"]);
    assert_eq!(router.resolve("city/s1").and_then(|r| r.sensor), Some("s1"));
    assert_eq!(check_filter("$share/g/city/+"), Ok(()));
    assert!(Pattern::parse("$sharex/{sensor}").is_ok());
}

/// fuzz target `line_protocol`, decode → encode → decode: a tag key `k\\q` (two backslashes
/// before an ordinary character) is kept as two backslashes by the decoder, as InfluxDB's own
/// parser does, while the InfluxDB sink's encoder writes a backslash before another one
/// doubled, for readers that follow the line-protocol reference (VictoriaMetrics). So such a
/// key does not survive a round trip through citygate's own decoder; this pins the decoder's
/// side of that documented difference (src/sinks/influxdb/line.rs, Escaping).
#[test]
fn line_protocol_doubled_backslash_in_a_tag_key_is_kept_as_two_like_influxdb() {
    let ctx = DecodeContext {
        precision: codec::Precision::Ms,
        ..DecodeContext::default()
    };
    let (readings, errors) = decode(
        Format::Line,
        br"air,sensor=a1,k\\q=61,x\,y=1 pm25=80 1732250000000",
        &ctx,
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(readings.len(), 1);
    let tags: Vec<(String, String)> = readings[0]
        .tags
        .iter()
        .flat_map(|t| t.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        tags,
        vec![
            (r"k\\q".to_string(), "61".to_string()),
            ("x,y".to_string(), "1".to_string())
        ]
    );
}
