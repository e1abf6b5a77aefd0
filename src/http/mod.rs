//! The HTTP API (axum): ingest, queries over the embedded store, health and metrics.
//!
//! Every error is JSON `{"error": "...", "reason": "..."}` with a 4xx status that says whose
//! fault it is; bad input never gets a 500.

pub mod auth;
mod console;
pub mod ingest;
pub mod limits;
mod query;
mod sensors;
pub mod serve;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::app::{error_chain, Ingest, IngestError};
use crate::catalog::Catalog;
use crate::sinks::sqlite::SqliteReader;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ingest: Ingest,
    pub reader: Arc<SqliteReader>,
    pub catalog: Arc<Catalog>,
    pub db_path: PathBuf,
    pub started_at: Instant,
    /// The MQTT connections, for `/health`.
    pub mqtt: Arc<[Arc<crate::sources::mqtt::SourceStatus>]>,
    /// The polled Modbus devices, for `/health`.
    pub modbus: Arc<[Arc<crate::sources::modbus::DeviceStatus>]>,
    /// The outbox and the remote sinks draining it, for `/health`.
    pub outbox: Arc<crate::outbox::Outbox>,
    pub sinks: Arc<[Arc<crate::sinks::influxdb::drain::SinkStatus>]>,
    /// Committed alert events and the active set, for the SSE stream.
    pub hub: Arc<crate::alerts::AlertHub>,
    /// Every known sensor's latest values and status.
    pub board: Arc<crate::board::SensorBoard>,
    /// The alert outputs (MQTT, webhooks), for `/health`.
    pub alert_outputs: Arc<[Arc<crate::alerts::output::OutputStatus>]>,
    pub auth: Arc<auth::Auth>,
    /// Ingest rate per client address, SSE clients, body size.
    pub limits: Arc<limits::HttpLimits>,
    /// Turns true when the gateway stops: long-lived responses (SSE) end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// The OpenAPI document of this API, kept beside the routes (a test checks that the two name
/// the same paths).
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    // Only ingest is rate limited: it is what writes, and what a device loop hammers.
    let ingest = Router::new()
        .route("/api/v1/ingest", post(ingest::ingest))
        .route(
            "/api/v1/ingest/{sensor}/{metric}",
            post(ingest::ingest_value),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit_ingest,
        ));
    Router::new()
        .merge(ingest)
        .route("/api/v1/readings", get(query::readings))
        .route("/api/v1/sensors", get(sensors::list))
        .route("/api/v1/sensors/summary", get(sensors::summary))
        .route("/api/v1/sensors/{id}", get(sensors::one))
        .route("/api/v1/sensors/{id}/readings", get(sensors::readings))
        .route("/api/v1/alerts", get(query::alerts))
        .route("/api/v1/alerts/stream", get(stream::stream))
        .route("/api/v1/alerts/{id}", get(query::alert))
        .route("/api/v1/alerts/{id}/ack", post(query::ack))
        .route("/api/v1/dead-letters", get(query::dead_letters))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health", get(query::health))
        .route("/ready", get(query::ready))
        .route("/metrics", get(query::metrics))
        .merge(console::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            limits::body_limit_as_json,
        ))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// An API error: a status, a stable reason code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            reason,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.message, "reason": self.reason })),
        )
            .into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("bad_query", r.body_text())
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Ack(e) => ApiError {
                status: StatusCode::NOT_FOUND,
                reason: "not_active",
                message: e.to_string(),
            },
            other => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "unavailable",
                message: other.to_string(),
            },
        }
    }
}

impl From<crate::sinks::sqlite::StoreError> for ApiError {
    fn from(e: crate::sinks::sqlite::StoreError) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "store_unavailable",
            message: error_chain(&e),
        }
    }
}

/// Parses a time given as epoch milliseconds or RFC 3339.
pub(crate) fn parse_time(key: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            ApiError::bad_request(
                "bad_query",
                format!("{key}={s:?} is not a time: give epoch milliseconds or RFC 3339 ({e})"),
            )
        })
}
