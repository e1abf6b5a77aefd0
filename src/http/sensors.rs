//! `/api/v1/sensors`: every known sensor with its latest values and status (from the
//! in-memory board), one sensor with its metrics and thresholds, and its recent readings.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::query::{readings_for, ReadingsParams};
use super::{ApiError, AppState};
use crate::board::{SensorFilter, Status};
use crate::catalog::spec::DisplayName;
use crate::catalog::{Metric, SensorProfile};
use crate::model::Severity;

/// Largest page of sensors.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    kind: Option<String>,
    district: Option<String>,
    /// ok, suspect, offline or alerting.
    status: Option<String>,
    /// A substring of the sensor id.
    q: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

pub async fn list(
    State(st): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    let status = p
        .status
        .as_deref()
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_query",
                    format!("status={s:?}: use ok, suspect, offline or alerting"),
                )
            })
        })
        .transpose()?;
    let limit = match p.limit {
        None => DEFAULT_PAGE,
        Some(0) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "limit must be at least 1",
            ))
        }
        Some(n) if n > MAX_PAGE => {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("limit={n} is above the maximum {MAX_PAGE}"),
            ))
        }
        Some(n) => n,
    };
    let offset = p.offset.unwrap_or(0);
    let filter = SensorFilter {
        kind: p.kind,
        district: p.district,
        status,
        id_contains: p.q.filter(|q| !q.is_empty()),
    };
    let body = st.board.page(&filter, offset, limit, |total, page| {
        json!({ "total": total, "offset": offset, "count": page.len(), "sensors": page })
    });
    Ok(Json(body))
}

pub async fn summary(State(st): State<AppState>) -> Json<Value> {
    let groups = st.board.summary();
    let total: usize = groups.iter().map(|g| g.total).sum();
    Json(json!({ "total": total, "groups": groups }))
}

fn unknown(id: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        reason: "not_found",
        message: format!("no sensor with id {id:?}"),
    }
}

/// A threshold to draw as a line on the sensor's chart.
#[derive(Debug, Serialize)]
struct Threshold<'a> {
    rule: &'a str,
    severity: Severity,
    direction: &'static str,
    value: f64,
}

#[derive(Debug, Serialize)]
struct MetricOut<'a> {
    metric: &'a str,
    name: Option<&'a DisplayName>,
    unit: &'a str,
    min: f64,
    max: f64,
    thresholds: Vec<Threshold<'a>>,
}

fn metrics_of(profile: &SensorProfile) -> Vec<MetricOut<'_>> {
    profile
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m): (usize, &Metric)| MetricOut {
            metric: &m.name,
            name: profile
                .kind
                .spec
                .metrics
                .get(m.name.as_str())
                .map(|s| &s.name),
            unit: &m.unit,
            min: m.min,
            max: m.max,
            // The fixed levels of every rule on this metric; scheduled spans (day/night
            // levels) are left to the alert messages.
            thresholds: profile
                .rules
                .iter()
                .filter(|r| r.metric == i)
                .flat_map(|r| {
                    let above = r.above.iter().map(move |(severity, value)| Threshold {
                        rule: &r.name,
                        severity,
                        direction: "above",
                        value,
                    });
                    let below = r.below.iter().map(move |(severity, value)| Threshold {
                        rule: &r.name,
                        severity,
                        direction: "below",
                        value,
                    });
                    above.chain(below)
                })
                .collect(),
        })
        .collect()
}

pub async fn one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (sensor, kind) = st
        .board
        .with_sensor(&id, |v| {
            (
                serde_json::to_value(v).unwrap_or(Value::Null),
                v.kind.to_string(),
            )
        })
        .ok_or_else(|| unknown(&id))?;
    let profile = st
        .catalog
        .sensor(&id)
        .cloned()
        .or_else(|| st.catalog.unlisted(&kind, None));
    let metrics = profile.as_deref().map(metrics_of).unwrap_or_default();
    Ok(Json(json!({ "sensor": sensor, "metrics": metrics })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorReadingsParams {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
}

pub async fn readings(
    State(st): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<SensorReadingsParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    if st.board.with_sensor(&id, |_| ()).is_none() {
        return Err(unknown(&id));
    }
    readings_for(
        &st,
        ReadingsParams {
            sensor: Some(id),
            metric: p.metric,
            from: p.from,
            to: p.to,
            limit: p.limit,
            order: p.order,
        },
    )
    .await
}
