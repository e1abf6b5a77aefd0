//! Read endpoints over the embedded store, alert acknowledgement, health and metrics.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{parse_time, ApiError, AppState};
use crate::alerts::AlertView;
use crate::model::{Alert, AlertEvent, Severity};
use crate::sinks::sqlite::{
    AlertFilter, AlertQuery, DeadLetterQuery, Order, ReadingQuery, SqliteReader, MAX_LIMIT,
};

/// Runs a blocking store query off the async workers.
async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&SqliteReader) -> Result<T, crate::sinks::sqlite::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = st.reader.clone();
    tokio::task::spawn_blocking(move || f(&reader))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "unavailable",
            message: format!("query task failed: {e}"),
        })?
        .map_err(ApiError::from)
}

fn limit(l: Option<usize>) -> Result<Option<usize>, ApiError> {
    match l {
        Some(0) => Err(ApiError::bad_request(
            "bad_query",
            "limit must be at least 1",
        )),
        Some(n) if n > MAX_LIMIT => Err(ApiError::bad_request(
            "bad_query",
            format!("limit={n} is above the maximum {MAX_LIMIT}"),
        )),
        other => Ok(other),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsParams {
    pub(super) sensor: Option<String>,
    pub(super) metric: Option<String>,
    /// Inclusive, epoch ms or RFC 3339.
    pub(super) from: Option<String>,
    /// Exclusive, epoch ms or RFC 3339.
    pub(super) to: Option<String>,
    pub(super) limit: Option<usize>,
    /// "asc" for oldest first; newest first by default.
    pub(super) order: Option<String>,
}

#[derive(Serialize)]
struct ReadingOut {
    sensor: String,
    kind: String,
    metric: String,
    value: f64,
    ts: i64,
    time: String,
    quality: &'static str,
    ts_source: &'static str,
}

pub async fn readings(
    State(st): State<AppState>,
    params: Result<Query<ReadingsParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    readings_for(&st, p).await
}

pub(super) async fn readings_for(
    st: &AppState,
    p: ReadingsParams,
) -> Result<Json<Value>, ApiError> {
    let order = match p.order.as_deref() {
        None | Some("desc") => Order::NewestFirst,
        Some("asc") => Order::OldestFirst,
        Some(o) => {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("order={o:?}: use asc or desc"),
            ))
        }
    };
    let q = ReadingQuery {
        sensor: p.sensor,
        metric: p.metric,
        from: p
            .from
            .as_deref()
            .map(|s| parse_time("from", s))
            .transpose()?,
        to: p.to.as_deref().map(|s| parse_time("to", s)).transpose()?,
        limit: limit(p.limit)?,
        order,
    };
    let rows = blocking(st, move |r| r.readings(&q)).await?;
    let out: Vec<ReadingOut> = rows
        .into_iter()
        .map(|r| ReadingOut {
            sensor: r.sensor.to_string(),
            kind: r.kind.to_string(),
            metric: r.metric.to_string(),
            value: r.value,
            ts: r.ts,
            time: crate::pipeline::fmt_time(r.ts),
            quality: r.quality.as_str(),
            ts_source: r.ts_source.as_str(),
        })
        .collect();
    Ok(Json(json!({ "count": out.len(), "readings": out })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsParams {
    /// active (default), resolved or all.
    state: Option<String>,
    /// info, warning, major or critical.
    severity: Option<String>,
    kind: Option<String>,
    sensor: Option<String>,
    district: Option<String>,
    limit: Option<usize>,
}

/// Alerts as the API shows them: each with its sensor's tags.
pub(super) fn alert_views(st: &AppState, alerts: &[Alert]) -> Vec<Value> {
    alerts.iter().map(|a| alert_view(st, a)).collect()
}

pub(super) fn alert_view(st: &AppState, a: &Alert) -> Value {
    let tags = st.board.tags(&a.sensor);
    serde_json::to_value(AlertView::new(a, tags.as_ref())).unwrap_or(Value::Null)
}

pub async fn alerts(
    State(st): State<AppState>,
    params: Result<Query<AlertsParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    let state = match p.state.as_deref() {
        None | Some("active") => AlertFilter::Active,
        Some("resolved") => AlertFilter::Resolved,
        Some("all") => AlertFilter::All,
        Some(s) => {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("state={s:?}: use active, resolved or all"),
            ))
        }
    };
    let severity = p
        .severity
        .as_deref()
        .map(|s| {
            Severity::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_query",
                    format!("severity={s:?}: use info, warning, major or critical"),
                )
            })
        })
        .transpose()?;
    let q = AlertQuery {
        state,
        severity,
        kind: p.kind,
        sensor: p.sensor,
        // Districts are tags, which the board knows for every sensor (configured ones too).
        sensors_in: p.district.map(|d| st.board.in_district(&d)),
        limit: limit(p.limit)?,
    };
    let alerts: Vec<Alert> = blocking(&st, move |r| r.alerts(&q)).await?;
    let views = alert_views(&st, &alerts);
    Ok(Json(json!({ "count": views.len(), "alerts": views })))
}

pub async fn alert(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id2 = id.clone();
    let (alert, events): (Option<Alert>, Vec<AlertEvent>) =
        blocking(&st, move |r| Ok((r.alert(&id2)?, r.alert_events(&id2)?))).await?;
    match alert {
        Some(a) => Ok(Json(
            json!({ "alert": alert_view(&st, &a), "events": events }),
        )),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            reason: "not_found",
            message: format!("no alert with id {id:?}"),
        }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// Who acknowledges (an operator's name).
    by: String,
    #[serde(default)]
    comment: String,
}

pub async fn ack(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AckBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    if b.by.trim().is_empty() {
        return Err(ApiError::bad_request(
            "bad_body",
            "`by` (the operator's name) must not be empty",
        ));
    }
    let alert = st.ingest.ack(&id, &b.by, &b.comment).await?;
    Ok(Json(json!({ "alert": alert_view(&st, &alert) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterParams {
    reason: Option<String>,
    limit: Option<usize>,
}

pub async fn dead_letters(
    State(st): State<AppState>,
    params: Result<Query<DeadLetterParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    let q = DeadLetterQuery {
        reason: p.reason,
        limit: limit(p.limit)?,
    };
    let rows = blocking(&st, move |r| r.dead_letters(&q)).await?;
    let out: Vec<Value> = rows
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id,
                "received_at": d.received_at,
                "source": d.source,
                "reason": d.reason,
                "detail": d.detail,
                "sensor": d.sensor,
                "metric": d.metric,
                // JSON has no NaN: a non-finite value is shown as text
                "value": d.value.map(|v| if v.is_finite() { json!(v) } else { json!(v.to_string()) }),
                "ts": d.ts,
                "raw": d.raw,
                "raw_len": d.raw_len,
                "raw_truncated": d.raw_truncated,
            })
        })
        .collect();
    Ok(Json(json!({ "count": out.len(), "dead_letters": out })))
}

pub async fn health(State(st): State<AppState>) -> impl IntoResponse {
    let counts = blocking(&st, |r| r.counts()).await;
    let uptime = st.started_at.elapsed().as_secs();
    let mqtt: Vec<_> = st.mqtt.iter().map(|s| s.snapshot()).collect();
    let modbus: Vec<_> = st.modbus.iter().map(|s| s.snapshot()).collect();
    let outbox = st.outbox.snapshot(crate::app::now_ms());
    let sinks: Vec<_> = st.sinks.iter().map(|s| s.snapshot()).collect();
    let alert_outputs: Vec<_> = st.alert_outputs.iter().map(|o| o.snapshot()).collect();
    // A broker connection, a device or a remote store that is down degrades the gateway but
    // it still serves (and takes HTTP input), so the answer stays 200.
    let status = if mqtt.iter().all(|m| m.connected)
        && modbus.iter().all(|d| d.state != "down")
        && sinks.iter().all(|s| s.state == "ok")
        && alert_outputs
            .iter()
            .all(|o| o.state == crate::alerts::output::State::Ok)
        && outbox.state == "ok"
    {
        "ok"
    } else {
        "degraded"
    };
    match counts {
        Ok(c) => (
            StatusCode::OK,
            Json(json!({
                "status": status,
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_s": uptime,
                "store": {
                    "kind": "sqlite",
                    "path": st.db_path.display().to_string(),
                    "state": "ok",
                    "readings": c.readings,
                    "alerts": c.alerts,
                    "active_alerts": c.active_alerts,
                    "dead_letters": c.dead_letters,
                    "sensors": c.sensors,
                },
                "mqtt": mqtt,
                "modbus": modbus,
                "outbox": outbox,
                "sinks": sinks,
                "alert_outputs": alert_outputs,
            })),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "degraded",
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_s": uptime,
                "store": { "kind": "sqlite", "path": st.db_path.display().to_string(), "state": "error", "error": e.message },
                "mqtt": mqtt,
                "modbus": modbus,
                "outbox": outbox,
                "sinks": sinks,
                "alert_outputs": alert_outputs,
            })),
        ),
    }
}

/// Readiness: whether the gateway can take input and deliver it now. Not ready while a broker
/// connection is down, a remote sink is not writing, or the outbox is full (it is holding the
/// sources back). A Modbus device that is down is a field problem, not the gateway's: it shows
/// in `/health` but does not make the gateway unready.
pub async fn ready(State(st): State<AppState>) -> impl IntoResponse {
    let mut reasons: Vec<String> = Vec::new();
    for m in st.mqtt.iter().map(|s| s.snapshot()) {
        if !m.connected {
            reasons.push(format!("mqtt {}: not connected", m.name));
        }
    }
    for s in st.sinks.iter().map(|s| s.snapshot()) {
        if s.state != "ok" {
            reasons.push(format!("sink {}: {}", s.name, s.state));
        }
    }
    let outbox = st.outbox.snapshot(crate::app::now_ms());
    if outbox.state != "ok" {
        reasons.push(format!("outbox: {}", outbox.state));
    }
    if let Err(e) = blocking(&st, |r| r.counts()).await {
        reasons.push(format!("store: {}", e.message));
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": reasons.is_empty(), "reasons": reasons })),
    )
}

pub async fn metrics() -> impl IntoResponse {
    let body = crate::telemetry::metrics_handle()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
