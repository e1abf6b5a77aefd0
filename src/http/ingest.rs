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
use crate::codec::{self, DecodeContext, Format, Precision};
use crate::model::Batch;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestParams {
    /// json, senml, line or value; overrides Content-Type.
    format: Option<String>,
    /// Sensor id for payloads that name none.
    sensor: Option<String>,
    /// Sensor kind for payloads that name none.
    kind: Option<String>,
    /// Metric of a bare value.
    metric: Option<String>,
    /// Line-protocol timestamp precision: ns (default), us, ms, s.
    precision: Option<String>,
}

pub async fn ingest(
    State(st): State<AppState>,
    params: Result<Query<IngestParams>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let Query(p) = params?;
    let format = match &p.format {
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::bad_request(
                "bad_query",
                format!("format={f:?}: use json, senml, line or value"),
            )
        })?,
        // No or an unknown Content-Type (curl -d sends a form type) means JSON.
        None => headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_content_type)
            .unwrap_or(Format::Json),
    };
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

async fn decode_and_submit(
    st: &AppState,
    format: Format,
    p: &IngestParams,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let precision = match &p.precision {
        Some(s) => Precision::parse(s).ok_or_else(|| {
            ApiError::bad_request("bad_query", format!("precision={s:?}: use ns, us, ms or s"))
        })?,
        None => Precision::default(),
    };
    let now = now_ms();
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
    if let Err(e) = codec::decode_into_batch(&mut batch, format, body, &ctx) {
        // The payload as a whole is unreadable: it is kept as a dead letter, then we say why.
        st.ingest.submit(batch).await?;
        return Err(ApiError::bad_request(
            e.reason(),
            format!("cannot decode the {} payload: {e}", format.as_str()),
        ));
    }
    Ok(Json(st.ingest.submit(batch).await?))
}
