//! `POST /api/v1/ingest`: JSON, SenML or line protocol, chosen by `?format=` or Content-Type,
//! and `POST /api/v1/ingest/{sensor}/{metric}` for a bare number.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::app::{now_ms, Receipt};
use crate::codec::{self, CodecError, DecodeContext, Format, Precision};
use crate::model::{Batch, TimestampMs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestParams {
    /// json, senml, line or value; overrides Content-Type.
    pub format: Option<String>,
    /// Sensor id for payloads that name none.
    pub sensor: Option<String>,
    /// Sensor kind for payloads that name none.
    pub kind: Option<String>,
    /// Metric of a bare value.
    pub metric: Option<String>,
    /// Line-protocol timestamp precision: ns (default), us, ms, s.
    pub precision: Option<String>,
}

/// An ingest body decoded into the batch that is submitted, with no I/O done yet.
#[derive(Debug)]
pub struct DecodedBody {
    pub format: Format,
    /// The readings, a dead letter for each bad item (or for the whole payload when `fatal`
    /// is set), and the payload itself.
    pub batch: Batch,
    /// Why the payload as a whole could not be read: the batch is still submitted (its dead
    /// letter is kept) and the client is told 400.
    pub fatal: Option<CodecError>,
}

pub async fn ingest(
    State(st): State<AppState>,
    params: Result<Query<IngestParams>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let Query(p) = params?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = request_format(&p, content_type)?;
    decode_and_submit(&st, format, &p, body).await
}

pub async fn ingest_value(
    State(st): State<AppState>,
    Path((sensor, metric)): Path<(String, String)>,
    params: Result<Query<IngestParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let Query(mut p) = params?;
    p.sensor = Some(sensor);
    p.metric = Some(metric);
    decode_and_submit(&st, Format::Value, &p, body).await
}

/// The format a request names: `?format=` first, then its Content-Type.
pub fn request_format(p: &IngestParams, content_type: Option<&str>) -> Result<Format, ApiError> {
    match &p.format {
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::bad_request(
                "bad_query",
                format!("format={f:?}: use json, senml, line or value"),
            )
        }),
        // No or an unknown Content-Type (curl -d sends a form type) means JSON.
        None => Ok(content_type
            .and_then(Format::from_content_type)
            .unwrap_or(Format::Json)),
    }
}

/// Decodes an ingest body as the handlers do, without a server: the fuzz target
/// `http_ingest` calls this directly.
pub fn decode_body(
    format: Format,
    p: &IngestParams,
    body: Bytes,
    now: TimestampMs,
) -> Result<DecodedBody, ApiError> {
    let precision = match &p.precision {
        Some(s) => Precision::parse(s).ok_or_else(|| {
            ApiError::bad_request("bad_query", format!("precision={s:?}: use ns, us, ms or s"))
        })?,
        None => Precision::default(),
    };
    let mut batch = Batch {
        source: "http".into(),
        received_at: now,
        ..Batch::default()
    };
    let ctx = DecodeContext {
        received_at: now,
        payload: 0,
        sensor: p.sensor.as_deref(),
        kind: p.kind.as_deref(),
        metric: p.metric.as_deref(),
        precision,
        tags: None,
    };
    let fatal = codec::decode_into_batch(&mut batch, format, body, &ctx).err();
    Ok(DecodedBody {
        format,
        batch,
        fatal,
    })
}

async fn decode_and_submit(
    st: &AppState,
    format: Format,
    p: &IngestParams,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let decoded = decode_body(format, p, body, now_ms())?;
    let receipt = st.ingest.submit(decoded.batch).await?;
    match decoded.fatal {
        // The payload as a whole is unreadable: it was kept as a dead letter; now say why.
        Some(e) => Err(ApiError::bad_request(
            e.reason(),
            format!("cannot decode the {} payload: {e}", format.as_str()),
        )),
        None => Ok(Json(receipt)),
    }
}
