//! A bare value: the whole payload is one number, e.g. `7.1`; the sensor and metric come from
//! the route (an MQTT topic like `city/wq-0042/ph`).

use super::emit::{Emitter, ItemMeta};
use super::error::{snippet, CodecError, Loc};
use super::{is_blank, strip_bom};

/// `nan` and `inf` are accepted here: the pipeline rejects non-finite values with its own
/// reason, so that they are counted as bad data rather than as undecodable payloads.
pub(crate) fn decode(payload: &[u8], em: &mut Emitter) -> Result<(), CodecError> {
    let payload = strip_bom(payload);
    if is_blank(payload) {
        return Err(CodecError::EmptyPayload);
    }
    let text = std::str::from_utf8(payload).map_err(|e| CodecError::InvalidUtf8 {
        at: Loc::Payload,
        offset: e.valid_up_to(),
    })?;
    let text = text.trim();
    let value = parse_number(text).ok_or_else(|| CodecError::NotANumber {
        text: snippet(text),
    })?;
    let sensor = em
        .ctx
        .sensor
        .ok_or(CodecError::MissingSensor { at: Loc::Payload })?;
    let metric = em
        .ctx
        .metric
        .filter(|m| !m.is_empty())
        .ok_or(CodecError::MissingMetric)?;
    let start = em.len();
    em.push(metric, value)?;
    let meta = ItemMeta {
        sensor: sensor.into(),
        kind: None,
        ts: None,
        tags: em.ctx.tags.clone(),
    };
    em.complete_since(start, &meta);
    Ok(())
}

/// A decimal number as Rust reads it (`7.1`, `-3`, `1e3`, `nan`, `inf`, `-infinity`, any case).
/// Rust also takes a leading `+`, which devices do send.
fn parse_number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_non_finite_literals() {
        assert_eq!(parse_number("7.1"), Some(7.1));
        assert_eq!(parse_number("+3"), Some(3.0));
        assert_eq!(parse_number("1e3"), Some(1000.0));
        assert_eq!(parse_number("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_number("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_number("7,1"), None);
        assert_eq!(parse_number("0x10"), None);
        assert_eq!(parse_number("seven"), None);
    }
}
