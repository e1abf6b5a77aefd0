//! SenML JSON (RFC 8428): an array of records, each resolved against the base fields
//! (`bn`, `bt`, `bu`, `bv`, `bver`) of the records before it.
//!
//! The resolved name `bn + n` is split at its last `:` or `/` into the sensor id and the
//! metric: `wq-0042/ph` and `urn:dev:wq-0042:ph` both give sensor `wq-0042`, metric `ph` (a
//! leading `urn:dev:` is dropped). A name without a separator is a metric of the route's sensor.

use compact_str::CompactString;
use serde::de::{MapAccess, SeqAccess};

use super::emit::{Emitter, ItemMeta};
use super::error::{CodecError, Loc};
use super::json_common;
use super::scalar::{Compound, Expect, Found, Key, Scalar};
use super::time;

/// The newest SenML version this decoder understands (RFC 8428's).
const SUPPORTED_VERSION: f64 = 10.0;

/// RFC 8428 §4.5.3: resolved times below 2^28 seconds are relative to now.
const RELATIVE_TIME_LIMIT_S: f64 = (1u64 << 28) as f64;

/// Prefix of RFC 9039 device URNs; a gateway whose ids are all devices drops it.
const DEVICE_URN_PREFIX: &str = "urn:dev:";

pub(crate) fn decode(payload: &[u8], em: &mut Emitter) -> Result<(), CodecError> {
    let text = json_common::text(payload)?;
    let found = json_common::parse(text, Expect(Pack { em: &mut *em }))
        .map_err(|e| json_common::parse_error(&e, em))?;
    found.map_err(|found| CodecError::SenmlNotAPack { found })
}

struct Pack<'e, 'o, 'c, 'a> {
    em: &'e mut Emitter<'o, 'c, 'a>,
}

impl<'de> Compound<'de> for Pack<'_, '_, '_, '_> {
    fn array<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let mut base = Base::default();
        let mut index = 0;
        while let Some(found) = seq.next_element_seed(Expect(RecordOf {
            em: &mut *self.em,
            base: &mut base,
            at: Loc::Record(index),
        }))? {
            if let Err(found) = found {
                self.em.item_error(CodecError::NotAnObject {
                    at: Loc::Record(index),
                    expected: "a SenML record (an object)",
                    found,
                });
            }
            index += 1;
        }
        Ok(Ok(()))
    }
}

/// Base values in force, set by earlier records.
#[derive(Default)]
struct Base {
    name: CompactString,
    /// Seconds; `None` until a record sets `bt`.
    time: Option<f64>,
    unit: Option<CompactString>,
    value: f64,
}

/// The fields of one record, as written.
#[derive(Default)]
struct Record<'de> {
    bn: Option<Scalar<'de>>,
    bt: Option<Scalar<'de>>,
    bu: Option<Scalar<'de>>,
    bv: Option<Scalar<'de>>,
    bver: Option<Scalar<'de>>,
    n: Option<Scalar<'de>>,
    u: Option<Scalar<'de>>,
    v: Option<Scalar<'de>>,
    vs: Option<Scalar<'de>>,
    vb: Option<Scalar<'de>>,
    vd: Option<Scalar<'de>>,
    s: Option<Scalar<'de>>,
    t: Option<Scalar<'de>>,
    must_understand: Option<CompactString>,
}

struct RecordOf<'b, 'e, 'o, 'c, 'a> {
    em: &'e mut Emitter<'o, 'c, 'a>,
    base: &'b mut Base,
    at: Loc,
}

impl<'de> Compound<'de> for RecordOf<'_, '_, '_, '_, '_> {
    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut r = Record::default();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let value = map.next_value::<Scalar>()?;
            let slot = match &*key {
                "bn" => &mut r.bn,
                "bt" => &mut r.bt,
                "bu" => &mut r.bu,
                "bv" => &mut r.bv,
                "bver" => &mut r.bver,
                "n" => &mut r.n,
                "u" => &mut r.u,
                "v" => &mut r.v,
                "vs" => &mut r.vs,
                "vb" => &mut r.vb,
                "vd" => &mut r.vd,
                "s" => &mut r.s,
                "t" => &mut r.t,
                // Base sum and update time do not change what citygate stores.
                "bs" | "ut" => continue,
                other => {
                    if other.ends_with('_') && r.must_understand.is_none() {
                        r.must_understand = Some(other.into());
                    }
                    continue;
                }
            };
            *slot = Some(value);
        }
        apply_base(self.base, &r, self.at).map_err(|e| self.em.abort(e))?;
        match resolve(self.em, self.base, r, self.at) {
            Ok((metric, value, meta, unit)) => {
                let start = self.em.len();
                self.em.push(&metric, value).map_err(|e| self.em.abort(e))?;
                self.em.complete_since(start, &meta);
                if let Some(reading) = self.em.out.last_mut() {
                    reading.unit = unit;
                }
            }
            Err(e) => self.em.item_error(e),
        }
        Ok(Ok(()))
    }
}

/// Takes the record's base fields into `base`. A malformed base field is fatal: it would change
/// the meaning of every record after it.
fn apply_base(base: &mut Base, r: &Record, at: Loc) -> Result<(), CodecError> {
    let bad = |field, expected, found: &Scalar| CodecError::SenmlBadBaseField {
        at,
        field,
        expected,
        found: found.describe(),
    };
    match &r.bver {
        None => {}
        Some(Scalar::Num(v)) if *v > SUPPORTED_VERSION => {
            return Err(CodecError::SenmlVersion { at, version: *v })
        }
        Some(Scalar::Num(_)) => {}
        Some(other) => return Err(bad("bver", "a number", other)),
    }
    match &r.bn {
        None => {}
        Some(Scalar::Str(s)) => base.name = CompactString::from(s.as_ref()),
        Some(other) => return Err(bad("bn", "a string", other)),
    }
    match &r.bt {
        None => {}
        Some(Scalar::Num(t)) => base.time = Some(*t),
        Some(other) => {
            return Err(CodecError::SenmlBadBaseTime {
                at,
                found: other.describe(),
            })
        }
    }
    match &r.bu {
        None => {}
        Some(Scalar::Str(s)) => base.unit = (!s.is_empty()).then(|| s.as_ref().into()),
        Some(other) => return Err(bad("bu", "a string", other)),
    }
    match &r.bv {
        None => {}
        Some(Scalar::Num(v)) => base.value = *v,
        Some(other) => return Err(bad("bv", "a number", other)),
    }
    Ok(())
}

type Resolved = (CompactString, f64, ItemMeta, Option<CompactString>);

/// The reading a record stands for: metric, value, sensor/time/tags and unit.
fn resolve(em: &Emitter, base: &Base, r: Record, at: Loc) -> Result<Resolved, CodecError> {
    if let Some(field) = r.must_understand {
        return Err(CodecError::SenmlMustUnderstand { at, field });
    }
    let n = match &r.n {
        None => "",
        Some(Scalar::Str(s)) => s.as_ref(),
        Some(other) => return Err(wrong_type(at, "n", "a string", other.type_name())),
    };
    let mut name = base.name.clone();
    name.push_str(n);
    let (sensor, metric) = split_name(&name, at, em.ctx.sensor)?;

    let value = resolve_value(base, &r, at, metric)?;
    let unit = match &r.u {
        None => base.unit.clone(),
        Some(Scalar::Str(s)) => (!s.is_empty()).then(|| s.as_ref().into()),
        Some(other) => return Err(wrong_type(at, "u", "a string", other.type_name())),
    };
    let ts = resolve_time(base, &r, at, em.ctx.received_at)?;
    let meta = ItemMeta {
        sensor,
        kind: None,
        ts,
        tags: em.merge_tags(Vec::new()),
    };
    Ok((metric.into(), value, meta, unit))
}

fn resolve_value(base: &Base, r: &Record, at: Loc, metric: &str) -> Result<f64, CodecError> {
    let present = [&r.v, &r.vs, &r.vb, &r.vd]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if present > 1 {
        return Err(CodecError::SenmlSeveralValues { at });
    }
    if let Some(v) = &r.v {
        return match v {
            Scalar::Num(v) => Ok(base.value + v),
            other => Err(wrong_type(at, metric, "a number in v", other.type_name())),
        };
    }
    if let Some(vb) = &r.vb {
        return match vb {
            Scalar::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            other => Err(wrong_type(at, metric, "a boolean in vb", other.type_name())),
        };
    }
    let numeric = "a number (v) or a boolean (vb)";
    if r.vs.is_some() {
        return Err(wrong_type(at, metric, numeric, "a string value (vs)"));
    }
    if r.vd.is_some() {
        return Err(wrong_type(at, metric, numeric, "a data value (vd)"));
    }
    let why = if r.s.is_some() {
        "only a sum (s), which citygate does not store"
    } else {
        "no value (v, vb, vs or vd)"
    };
    Err(CodecError::SenmlNoValue { at, why })
}

/// The device time in epoch milliseconds, `None` if neither `bt` nor `t` is given.
fn resolve_time(
    base: &Base,
    r: &Record,
    at: Loc,
    received_at: i64,
) -> Result<Option<i64>, CodecError> {
    let t = match &r.t {
        None => None,
        Some(Scalar::Num(t)) => Some(*t),
        Some(other) => {
            return Err(CodecError::BadTimestamp {
                at,
                text: other.describe(),
                why: "expected seconds as a number",
            })
        }
    };
    if t.is_none() && base.time.is_none() {
        return Ok(None);
    }
    let secs = base.time.unwrap_or(0.0) + t.unwrap_or(0.0);
    let ms = if secs < RELATIVE_TIME_LIMIT_S {
        time::from_ms_f64(received_at as f64 + secs * 1000.0)
    } else {
        time::from_secs_f64(secs)
    };
    ms.map(Some).ok_or_else(|| CodecError::BadTimestamp {
        at,
        text: secs.to_string(),
        why: time::OUT_OF_RANGE,
    })
}

/// Splits a resolved name into (sensor, metric); see the module docs for the convention.
fn split_name<'n>(
    name: &'n str,
    at: Loc,
    route_sensor: Option<&str>,
) -> Result<(CompactString, &'n str), CodecError> {
    let bad = |why| CodecError::SenmlBadName {
        at,
        name: name.into(),
        why,
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(CodecError::SenmlMissingName { at }),
        Some(first) if !first.is_ascii_alphanumeric() => {
            return Err(bad(
                "a name must start with a letter or digit (RFC 8428 §4.5.1)",
            ))
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_')) {
        return Err(bad(
            "a name may only hold letters, digits and - : . / _ (RFC 8428 §4.5.1)",
        ));
    }
    let Some(cut) = name.rfind([':', '/']) else {
        let sensor = route_sensor.ok_or(CodecError::MissingSensor { at })?;
        return Ok((sensor.into(), name));
    };
    let metric = &name[cut + 1..];
    if metric.is_empty() {
        return Err(bad(
            "nothing after the last ':' or '/' to use as the metric",
        ));
    }
    let prefix = &name[..cut];
    let sensor = prefix.strip_prefix(DEVICE_URN_PREFIX).unwrap_or(prefix);
    if sensor.is_empty() {
        return Err(bad(
            "nothing before the last ':' or '/' to use as the sensor",
        ));
    }
    Ok((sensor.into(), metric))
}

fn wrong_type(at: Loc, field: &str, expected: &'static str, found: &'static str) -> CodecError {
    CodecError::WrongType {
        at,
        field: field.into(),
        expected,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str) -> Result<(String, String), &'static str> {
        split_name(name, Loc::Payload, Some("route"))
            .map(|(s, m)| (s.to_string(), m.to_string()))
            .map_err(|e| e.reason())
    }

    #[test]
    fn name_conventions() {
        let ok = |s: &str, m: &str| Ok((s.to_string(), m.to_string()));
        assert_eq!(split("wq-0042/ph"), ok("wq-0042", "ph"));
        assert_eq!(split("urn:dev:wq-0042:ph"), ok("wq-0042", "ph"));
        assert_eq!(
            split("urn:dev:ow:10e2073a01080063:temp"),
            ok("ow:10e2073a01080063", "temp")
        );
        assert_eq!(split("qingcheng/wq-0042/ph"), ok("qingcheng/wq-0042", "ph"));
        assert_eq!(split("ph"), ok("route", "ph"));
        assert_eq!(split("wq-0042/"), Err("invalid_senml"));
        assert_eq!(split("urn:dev::ph"), Err("invalid_senml"));
        assert_eq!(split("-x/ph"), Err("invalid_senml"));
        assert_eq!(split("wq 1/ph"), Err("invalid_senml"));
        assert_eq!(split(""), Err("invalid_senml"));
        assert_eq!(
            split_name("ph", Loc::Payload, None).map_err(|e| e.reason()),
            Err("missing_sensor")
        );
    }
}
