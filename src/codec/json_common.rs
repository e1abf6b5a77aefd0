//! What the two JSON formats share: getting from bytes to text, and turning serde_json's
//! errors into [`CodecError`]s.

use super::emit::Emitter;
use super::error::{CodecError, Loc};
use super::{is_blank, strip_bom};

/// The payload as JSON text: no BOM, not blank, valid UTF-8 (checked up front so that the error
/// can give the byte offset, which serde_json does not).
pub(crate) fn text(payload: &[u8]) -> Result<&str, CodecError> {
    let payload = strip_bom(payload);
    if is_blank(payload) {
        return Err(CodecError::EmptyPayload);
    }
    std::str::from_utf8(payload).map_err(|e| CodecError::InvalidUtf8 {
        at: Loc::Payload,
        offset: e.valid_up_to(),
    })
}

/// Runs a visitor over `text` and requires nothing but whitespace after the value.
pub(crate) fn parse<'de, V>(text: &'de str, visitor: V) -> serde_json::Result<V::Value>
where
    V: serde::de::Visitor<'de>,
{
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = de.deserialize_any(visitor)?;
    de.end()?;
    Ok(value)
}

/// The error a failed [`parse`] stands for: a fatal error a visitor raised, else serde_json's.
pub(crate) fn parse_error(e: &serde_json::Error, em: &mut Emitter) -> CodecError {
    em.take_fatal().unwrap_or_else(|| from_serde(e))
}

fn from_serde(e: &serde_json::Error) -> CodecError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    // serde_json appends the position to its message; we keep it in fields instead.
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    // No "too deep" case: the visitors nest a fixed few levels and serde_json skips the
    // values they do not read without recursing, so its recursion limit is never reached.
    CodecError::InvalidJson {
        line,
        column,
        message: message.to_owned(),
    }
}
