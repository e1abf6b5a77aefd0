//! citygate JSON: one object or an array of objects, flat
//! (`{"sensor":"wq-0042","ts":1732250000000,"ph":7.1}`) or nested (`{"sensor":..,"values":{..}}`).
//!
//! Objects are read in one pass with borrowed keys: metrics become readings as they are met,
//! and the sensor, time and tags, which may come after them, are stamped on at the object's end.

use compact_str::{format_compact, CompactString};
use serde::de::{MapAccess, SeqAccess};

use super::emit::{Emitter, ItemMeta};
use super::error::{CodecError, Loc};
use super::json_common;
use super::scalar::{Compound, Expect, Found, Key, Scalar};
use super::time;

/// Keys of an object that are not metrics.
pub const RESERVED_KEYS: [&str; 5] = ["sensor", "kind", "ts", "tags", "values"];

pub(crate) fn decode(payload: &[u8], em: &mut Emitter) -> Result<(), CodecError> {
    let text = json_common::text(payload)?;
    let found = json_common::parse(text, Expect(Top { em: &mut *em }))
        .map_err(|e| json_common::parse_error(&e, em))?;
    found.map_err(|found| CodecError::NotAnObject {
        at: Loc::Payload,
        expected: "an object or an array of objects",
        found,
    })
}

struct Top<'e, 'o, 'c, 'a> {
    em: &'e mut Emitter<'o, 'c, 'a>,
}

impl<'de> Compound<'de> for Top<'_, '_, '_, '_> {
    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Found, A::Error> {
        decode_object(self.em, map, Loc::Payload).map(Ok)
    }

    fn array<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let mut index = 0;
        while let Some(found) = seq.next_element_seed(Expect(Element {
            em: &mut *self.em,
            at: Loc::Item(index),
        }))? {
            if let Err(found) = found {
                self.em.item_error(CodecError::NotAnObject {
                    at: Loc::Item(index),
                    expected: "an object",
                    found,
                });
            }
            index += 1;
        }
        Ok(Ok(()))
    }
}

struct Element<'e, 'o, 'c, 'a> {
    em: &'e mut Emitter<'o, 'c, 'a>,
    at: Loc,
}

impl<'de> Compound<'de> for Element<'_, '_, '_, '_> {
    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Found, A::Error> {
        decode_object(self.em, map, self.at).map(Ok)
    }
}

/// Problems found while reading one object, reported when it ends.
#[derive(Default)]
struct Problems {
    /// Make the whole object unusable (no sensor, bad time...).
    object: Vec<CodecError>,
    /// Lose one metric; the others still decode.
    metrics: Vec<CodecError>,
}

fn decode_object<'de, A: MapAccess<'de>>(
    em: &mut Emitter,
    mut map: A,
    at: Loc,
) -> Result<(), A::Error> {
    let start = em.len();
    let mut sensor = None;
    let mut kind = None;
    let mut ts = None;
    let mut tags = Vec::new();
    let mut problems = Problems::default();

    while let Some(Key(key)) = map.next_key::<Key>()? {
        match &*key {
            "sensor" => sensor = Some(map.next_value::<Scalar>()?),
            "kind" => kind = Some(map.next_value::<Scalar>()?),
            "ts" => ts = Some(map.next_value::<Scalar>()?),
            "tags" => {
                let found = map.next_value_seed(Expect(TagsOf {
                    tags: &mut tags,
                    problems: &mut problems.object,
                    at,
                }))?;
                if let Err(found) = found {
                    problems
                        .object
                        .push(wrong_type(at, "tags", "an object", found));
                }
            }
            "values" => {
                let found = map.next_value_seed(Expect(ValuesOf {
                    em: &mut *em,
                    problems: &mut problems.metrics,
                    at,
                }))?;
                if let Err(found) = found {
                    problems
                        .metrics
                        .push(wrong_type(at, "values", "an object", found));
                }
            }
            metric => {
                let value = map.next_value::<Scalar>()?;
                metric_value(em, &mut problems.metrics, at, metric, value)
                    .map_err(|e| em.abort(e))?;
            }
        }
    }

    let meta = resolve_meta(em, at, sensor, kind, ts, tags, &mut problems.object);
    match meta {
        Some(meta) if problems.object.is_empty() => {
            if em.len() == start && problems.metrics.is_empty() {
                em.item_error(CodecError::NoValue { at });
            }
            em.complete_since(start, &meta);
        }
        _ => em.discard_since(start),
    }
    for e in problems.object.into_iter().chain(problems.metrics) {
        em.item_error(e);
    }
    Ok(())
}

fn metric_value(
    em: &mut Emitter,
    problems: &mut Vec<CodecError>,
    at: Loc,
    metric: &str,
    value: Scalar,
) -> Result<(), CodecError> {
    match value {
        // Found by fuzzing (tests/fuzz_regressions.rs): `{"": 1}` made a reading with no metric.
        _ if metric.is_empty() => {
            problems.push(CodecError::EmptyMetricName { at });
            Ok(())
        }
        Scalar::Num(v) => em.push(metric, v),
        other => {
            problems.push(wrong_type(at, metric, "a number", other.type_name()));
            Ok(())
        }
    }
}

/// The sensor, kind, time and tags of an object; `None` (with the reasons in `problems`) when
/// they do not make a usable object.
fn resolve_meta(
    em: &Emitter,
    at: Loc,
    sensor: Option<Scalar>,
    kind: Option<Scalar>,
    ts: Option<Scalar>,
    tags: Vec<(CompactString, CompactString)>,
    problems: &mut Vec<CodecError>,
) -> Option<ItemMeta> {
    let sensor = match sensor {
        Some(Scalar::Str(s)) if !s.is_empty() => Some(CompactString::from(s)),
        Some(Scalar::Str(_)) | Some(Scalar::Null) | None => em.ctx.sensor.map(CompactString::from),
        Some(other) => {
            problems.push(wrong_type(at, "sensor", "a string", other.type_name()));
            return None;
        }
    };
    let Some(sensor) = sensor else {
        problems.push(CodecError::MissingSensor { at });
        return None;
    };
    let kind = match kind {
        Some(Scalar::Str(s)) if !s.is_empty() => Some(CompactString::from(s)),
        Some(Scalar::Str(_)) | Some(Scalar::Null) | None => None,
        Some(other) => {
            problems.push(wrong_type(at, "kind", "a string", other.type_name()));
            return None;
        }
    };
    let ts = match ts {
        None | Some(Scalar::Null) => None,
        Some(value) => match device_time(&value) {
            Ok(ts) => Some(ts),
            Err(why) => {
                problems.push(CodecError::BadTimestamp {
                    at,
                    text: value.describe(),
                    why,
                });
                return None;
            }
        },
    };
    Some(ItemMeta {
        sensor,
        kind,
        ts,
        tags: em.merge_tags(tags),
    })
}

/// `ts` as epoch milliseconds: a number, an RFC 3339 string, or a string of digits (protobuf's
/// JSON mapping writes 64-bit integers as strings).
fn device_time(value: &Scalar) -> Result<i64, &'static str> {
    match value {
        Scalar::Num(ms) => time::from_ms_f64(*ms).ok_or(time::OUT_OF_RANGE),
        Scalar::Str(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                let ms = s.parse::<i64>().map_err(|_| time::OUT_OF_RANGE)?;
                time::from_ms_f64(ms as f64).ok_or(time::OUT_OF_RANGE)
            } else {
                time::parse_rfc3339(s).ok_or(
                    "expected an RFC 3339 date-time such as 2024-11-22T12:33:20+08:00, or epoch milliseconds",
                )
            }
        }
        _ => Err(TS_EXPECTED),
    }
}

const TS_EXPECTED: &str = "expected epoch milliseconds or an RFC 3339 date-time";

fn wrong_type(at: Loc, field: &str, expected: &'static str, found: &'static str) -> CodecError {
    CodecError::WrongType {
        at,
        field: field.into(),
        expected,
        found,
    }
}

/// `"values": {"ph": 7.1, ...}`
struct ValuesOf<'p, 'e, 'o, 'c, 'a> {
    em: &'e mut Emitter<'o, 'c, 'a>,
    problems: &'p mut Vec<CodecError>,
    at: Loc,
}

impl<'de> Compound<'de> for ValuesOf<'_, '_, '_, '_, '_> {
    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        while let Some(Key(metric)) = map.next_key::<Key>()? {
            let value = map.next_value::<Scalar>()?;
            metric_value(self.em, self.problems, self.at, &metric, value)
                .map_err(|e| self.em.abort(e))?;
        }
        Ok(Ok(()))
    }
}

/// `"tags": {"district": "清城区", "floor": 3}`: numbers and booleans are kept as their text.
struct TagsOf<'p> {
    tags: &'p mut Vec<(CompactString, CompactString)>,
    problems: &'p mut Vec<CodecError>,
    at: Loc,
}

impl<'de> Compound<'de> for TagsOf<'_> {
    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let value = match map.next_value::<Scalar>()? {
                Scalar::Str(s) => CompactString::from(s),
                Scalar::Num(n) => format_compact!("{n}"),
                Scalar::Bool(b) => format_compact!("{b}"),
                other => {
                    let field = format_compact!("tags.{key}");
                    self.problems
                        .push(wrong_type(self.at, &field, "a string", other.type_name()));
                    continue;
                }
            };
            self.tags.push((CompactString::from(key), value));
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, DecodeContext, Format};
    use crate::model::{Reading, TsSource};

    fn run(payload: &str, ctx: &DecodeContext) -> (Vec<Reading>, Vec<CodecError>) {
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        decode(Format::Json, payload.as_bytes(), ctx, &mut out, &mut errors)
            .unwrap_or_else(|e| panic!("fatal: {e}"));
        (out, errors)
    }

    #[test]
    fn metrics_before_sensor_and_ts_get_them_stamped() {
        let ctx = DecodeContext {
            received_at: 5,
            payload: 7,
            ..Default::default()
        };
        let (out, errors) = run(
            r#"{"ph":7.1,"cod":12,"sensor":"wq-0042","ts":1732250000000}"#,
            &ctx,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(out.len(), 2);
        for r in &out {
            assert_eq!(r.sensor, "wq-0042");
            assert_eq!(r.ts, 1_732_250_000_000);
            assert_eq!(r.ts_source, TsSource::Device);
            assert_eq!(r.payload, 7);
        }
        assert_eq!((out[0].metric.as_str(), out[0].value), ("ph", 7.1));
        assert_eq!((out[1].metric.as_str(), out[1].value), ("cod", 12.0));
    }

    #[test]
    fn object_without_sensor_uses_the_route_and_without_ts_the_receive_time() {
        let ctx = DecodeContext {
            received_at: 1_732_250_000_999,
            sensor: Some("from-topic"),
            kind: Some("water_level"),
            ..Default::default()
        };
        let (out, _) = run(r#"{"level":2.5}"#, &ctx);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].sensor, "from-topic");
        assert_eq!(out[0].kind, "water_level");
        assert_eq!(out[0].ts, 1_732_250_000_999);
        assert_eq!(out[0].ts_source, TsSource::Received);
    }

    #[test]
    fn escaped_keys_and_long_names_decode() {
        let (out, _) = run(
            r#"{"sensor":"a-very-long-sensor-identifier-over-24-bytes","p\u0068":7}"#,
            &DecodeContext::default(),
        );
        assert_eq!(out[0].metric, "ph");
        assert_eq!(out[0].sensor, "a-very-long-sensor-identifier-over-24-bytes");
    }
}
