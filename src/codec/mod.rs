//! Payload decoders. Each turns bytes into [`Reading`]s and says precisely what is wrong with
//! bad input; none panics on any input.
//!
//! CONTRACT (filled in by the codec work): `decode` appends readings to `out`, appends
//! per-item problems (one bad record in an otherwise good pack) to `errors`, and returns `Err`
//! only when the payload as a whole cannot be read.

use crate::model::{Reading, Tags, TimestampMs};

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

/// Timestamp precision of line protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Ns,
    Us,
    Ms,
    S,
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

/// Why a payload or one of its items could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CodecError {
    #[error("{0}")]
    Other(String),
}

impl CodecError {
    /// A short stable code for metrics labels and dead letters.
    pub fn reason(&self) -> &'static str {
        "decode_error"
    }
}

/// Decodes one payload.
pub fn decode(
    _format: Format,
    _payload: &[u8],
    _ctx: &DecodeContext,
    _out: &mut Vec<Reading>,
    _errors: &mut Vec<CodecError>,
) -> Result<(), CodecError> {
    Err(CodecError::Other("not yet".into()))
}
