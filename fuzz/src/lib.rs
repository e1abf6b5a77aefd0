//! Invariants the fuzz targets assert beyond "it did not panic". Each target is a thin
//! `fuzz_target!` over one of these, so that the checks are written once.

use std::sync::Arc;

use citygate::codec::{self, CodecError, DecodeContext, Format, Precision};
use citygate::model::{Reading, Tags};

/// When the fuzzed payloads "arrived"; any fixed time will do.
pub const RECEIVED_AT: i64 = 1_732_250_000_000;

/// A context with nothing from the transport: the payload must name everything.
pub fn bare_context(precision: Precision) -> DecodeContext<'static> {
    DecodeContext {
        received_at: RECEIVED_AT,
        precision,
        ..DecodeContext::default()
    }
}

/// A context as an MQTT route fills it: sensor, kind, metric and a tag from the topic.
pub fn route_context(precision: Precision) -> DecodeContext<'static> {
    let tags: Tags = Arc::from(vec![("district".into(), "north".into())]);
    DecodeContext {
        received_at: RECEIVED_AT,
        payload: 3,
        sensor: Some("route-sensor"),
        kind: Some("water_quality"),
        metric: Some("level"),
        precision,
        tags: Some(tags),
    }
}

/// What every reading out of any codec must look like.
pub fn check_reading(r: &Reading, ctx: &DecodeContext) {
    assert!(!r.sensor.is_empty(), "empty sensor in {r:?}");
    assert!(!r.metric.is_empty(), "empty metric in {r:?}");
    assert_eq!(r.payload, ctx.payload, "payload index not copied: {r:?}");
    if let Some(tags) = &r.tags {
        assert!(
            tags.windows(2).all(|w| w[0].0 < w[1].0),
            "tags not sorted by key, or a key twice: {r:?}"
        );
    }
}

/// What every error must look like: a reason code for metrics and a message for people.
pub fn check_error(e: &CodecError) {
    assert!(!e.reason().is_empty(), "no reason for {e:?}");
    assert!(!e.to_string().is_empty(), "no message for {e:?}");
}

/// How a codec treats non-finite values.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Every value is finite (JSON cannot spell NaN or infinity; numbers out of range are
    /// errors).
    Finite,
    /// Never NaN; an overflowing number (`1e999`) may be infinite, which the pipeline rejects.
    NotNan,
}

/// Decodes `payload` as `format` in `ctx` and checks the codec contract (`src/codec/mod.rs`):
/// on `Err` nothing of this payload is left in `out` or `errors`; on `Ok` the output stays
/// within the documented caps and every reading and error is well formed. Returns the
/// readings on success.
pub fn decode_checked(
    format: Format,
    payload: &[u8],
    ctx: &DecodeContext,
    values: Values,
) -> Option<Vec<Reading>> {
    // Output from an earlier payload must survive a fatal error in this one untouched.
    let sentinel = Reading::new("earlier", "noise", "laeq", 55.0, 1);
    let mut out = vec![sentinel.clone()];
    let mut errors = vec![CodecError::EmptyPayload];
    match codec::decode(format, payload, ctx, &mut out, &mut errors) {
        Err(e) => {
            check_error(&e);
            assert_eq!(out, vec![sentinel], "a fatal error left readings behind");
            assert_eq!(
                errors,
                vec![CodecError::EmptyPayload],
                "a fatal error left item errors"
            );
            None
        }
        Ok(()) => {
            assert_eq!(out[0], sentinel, "an earlier reading was changed");
            let readings = out.split_off(1);
            assert!(readings.len() <= codec::MAX_READINGS_PER_PAYLOAD);
            // The cap, plus the one `too_many_errors` that closes a capped list.
            assert!(
                errors.len() - 1 <= codec::MAX_ITEM_ERRORS + 1,
                "{} errors",
                errors.len()
            );
            for e in &errors[1..] {
                check_error(e);
            }
            for r in &readings {
                check_reading(r, ctx);
                match values {
                    Values::Finite => assert!(r.value.is_finite(), "non-finite value: {r:?}"),
                    Values::NotNan => assert!(!r.value.is_nan(), "NaN value: {r:?}"),
                }
            }
            Some(readings)
        }
    }
}

/// Decodes a payload both without and with a route's context.
pub fn fuzz_codec(format: Format, payload: &[u8], values: Values) {
    for ctx in [bare_context(Precision::Ns), route_context(Precision::Ns)] {
        decode_checked(format, payload, &ctx, values);
    }
}

/// Whether an MQTT subscription filter (no `$share/` prefix) matches a topic, written
/// straight from the MQTT 3.1.1 rules (section 4.7) as an independent reference for the
/// router.
pub fn mqtt_filter_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for (i, f) in filter.split('/').enumerate() {
        if f == "#" {
            return !(i == 0 && topic.starts_with('$'));
        }
        let Some(t) = topic_levels.next() else {
            return false;
        };
        if f == "+" {
            if i == 0 && topic.starts_with('$') {
                return false;
            }
        } else if f != t {
            return false;
        }
    }
    topic_levels.next().is_none()
}
