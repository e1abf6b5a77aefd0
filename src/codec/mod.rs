//! Payload decoders. Each turns bytes into [`Reading`]s and says precisely what is wrong with
//! bad input; none panics on any input.
//!
//! # Contract
//! [`decode`] appends readings to `out` and per-item problems (one bad record in an otherwise
//! good pack, one bad line among good ones) to `errors`, and returns `Err` only when the payload
//! as a whole cannot be read. On `Err` nothing from this payload is left in `out` or `errors`:
//! the caller dead-letters the payload once, with the returned error's reason.
//!
//! The formats, their conventions and every error reason are documented in `docs/payloads.md`.

mod emit;
mod error;
mod json;
mod json_common;
mod line_protocol;
pub mod modbus;
mod scalar;
mod senml;
mod time;
mod value;

pub use error::{CodecError, Loc};
pub use json::RESERVED_KEYS as JSON_RESERVED_KEYS;

use crate::model::{Reading, Tags, TimestampMs};
use emit::Emitter;

/// At most this many readings come out of one payload; more is a fatal `too_many_items`.
/// A payload that large is a misbehaving device or an attack, not telemetry.
pub const MAX_READINGS_PER_PAYLOAD: usize = 250_000;

/// At most this many item errors are recorded for one payload; the rest are counted in one
/// final `too_many_errors` so that a garbage payload cannot flood the dead-letter store.
pub const MAX_ITEM_ERRORS: usize = 100;

/// A payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// citygate JSON, flat or nested, one object or an array of them.
    Json,
    /// SenML JSON (RFC 8428).
    Senml,
    /// InfluxDB line protocol.
    Line,
    /// A bare number; the sensor and metric come from the topic or path.
    Value,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Json, Format::Senml, Format::Line, Format::Value];

    /// The name used in config and query strings: `json`, `senml`, `line`, `value`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Senml => "senml",
            Format::Line => "line",
            Format::Value => "value",
        }
    }

    /// The inverse of [`Format::as_str`].
    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The format an HTTP `Content-Type` names, ignoring parameters such as `charset`.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let is = |name: &str| essence.eq_ignore_ascii_case(name);
        if is("application/json") {
            Some(Format::Json)
        } else if is("application/senml+json") {
            Some(Format::Senml)
        } else if is("text/plain")
            || is("application/x-influx-line-protocol")
            || is("text/x-influx-line-protocol")
            || is("application/vnd.influx.line-protocol")
        {
            Some(Format::Line)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timestamp precision of line protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Ns,
    Us,
    Ms,
    S,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }

    /// `ns`, `us`, `ms` or `s`, as InfluxDB's `precision` query parameter spells them.
    pub fn parse(s: &str) -> Option<Precision> {
        [Precision::Ns, Precision::Us, Precision::Ms, Precision::S]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// What the transport knows about a payload.
#[derive(Clone, Debug, Default)]
pub struct DecodeContext<'a> {
    /// When the payload arrived; stamps readings that carry no time.
    pub received_at: TimestampMs,
    /// Index of the payload in its batch, copied into each reading.
    pub payload: u32,
    /// Sensor id from the topic or path, used when the payload names none.
    pub sensor: Option<&'a str>,
    /// Sensor kind from the route or query, used when the payload names none.
    pub kind: Option<&'a str>,
    /// Metric from the topic or path (bare values).
    pub metric: Option<&'a str>,
    /// Line-protocol timestamp precision.
    pub precision: Precision,
    /// Tags from the route.
    pub tags: Option<Tags>,
}

/// Decodes one payload. See the module docs for the contract.
pub fn decode(
    format: Format,
    payload: &[u8],
    ctx: &DecodeContext,
    out: &mut Vec<Reading>,
    errors: &mut Vec<CodecError>,
) -> Result<(), CodecError> {
    let (out_len, errors_len) = (out.len(), errors.len());
    let mut em = Emitter::new(ctx, out, errors);
    let result = match format {
        Format::Json => json::decode(payload, &mut em),
        Format::Senml => senml::decode(payload, &mut em),
        Format::Line => line_protocol::decode(payload, &mut em),
        Format::Value => value::decode(payload, &mut em),
    };
    match result {
        Ok(()) => {
            em.finish();
            Ok(())
        }
        Err(e) => {
            out.truncate(out_len);
            errors.truncate(errors_len);
            Err(e)
        }
    }
}

/// Decodes a citygate JSON payload; the same as `decode(Format::Json, ..)`, named for benches.
pub fn decode_json(
    payload: &[u8],
    ctx: &DecodeContext,
    out: &mut Vec<Reading>,
    errors: &mut Vec<CodecError>,
) -> Result<(), CodecError> {
    decode(Format::Json, payload, ctx, out, errors)
}

/// Skips a UTF-8 byte order mark, which some Windows tools put before JSON and text bodies.
fn strip_bom(payload: &[u8]) -> &[u8] {
    payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload)
}

fn is_blank(payload: &[u8]) -> bool {
    payload.iter().all(u8::is_ascii_whitespace)
}

/// Decodes one payload into a batch: its readings, and a dead letter (with the raw payload)
/// for each item that could not be read, or for the whole payload when it cannot be read at
/// all. The payload is kept in the batch either way. Returns the fatal error, if any, for
/// callers that answer their client (HTTP says 400).
pub fn decode_into_batch(
    batch: &mut crate::model::Batch,
    format: Format,
    payload: bytes::Bytes,
    ctx: &DecodeContext,
) -> Result<(), CodecError> {
    let ctx = DecodeContext {
        payload: batch.payloads.len() as u32,
        ..ctx.clone()
    };
    let mut errors = Vec::new();
    let result = decode(format, &payload, &ctx, &mut batch.readings, &mut errors);
    let source = batch.source.clone();
    let dead = |e: &CodecError| {
        crate::model::DeadLetter::undecodable(
            &source,
            ctx.received_at,
            e.reason(),
            e.to_string(),
            payload.clone(),
        )
    };
    batch
        .dead_letters
        .extend(errors.iter().chain(result.as_ref().err()).map(dead));
    batch.payloads.push(payload);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.as_str()), Some(f));
        }
        assert_eq!(Format::parse("JSON"), None);
        assert_eq!(Format::parse("xml"), None);
    }

    #[test]
    fn content_types_ignore_parameters_and_case() {
        assert_eq!(
            Format::from_content_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type("Application/SenML+JSON"),
            Some(Format::Senml)
        );
        assert_eq!(
            Format::from_content_type("text/plain;charset=UTF-8"),
            Some(Format::Line)
        );
        assert_eq!(
            Format::from_content_type("application/x-influx-line-protocol"),
            Some(Format::Line)
        );
        assert_eq!(Format::from_content_type("application/xml"), None);
        assert_eq!(Format::from_content_type(""), None);
    }

    #[test]
    fn precision_names() {
        assert_eq!(Precision::parse("ns"), Some(Precision::Ns));
        assert_eq!(Precision::parse("us"), Some(Precision::Us));
        assert_eq!(Precision::parse("ms"), Some(Precision::Ms));
        assert_eq!(Precision::parse("s"), Some(Precision::S));
        assert_eq!(Precision::parse("m"), None);
    }

    #[test]
    fn fatal_error_leaves_no_partial_output() {
        let ctx = DecodeContext::default();
        let mut out = vec![Reading::new("keep", "", "m", 1.0, 0)];
        let mut errors = Vec::new();
        // The first object decodes before the parser reaches the truncation.
        let r = decode(
            Format::Json,
            br#"[{"sensor":"a","x":1},{"sensor":"b","x":"#,
            &ctx,
            &mut out,
            &mut errors,
        );
        assert_eq!(r.map_err(|e| e.reason()), Err("invalid_json"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].sensor, "keep");
        assert!(errors.is_empty());
    }
}
