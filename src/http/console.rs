//! The operators' web console: static assets embedded in the binary and the catalog of display
//! names it needs.
//!
//! The assets are compiled in (`include_str!`) because monitoring centres are often offline:
//! no CDN, no frontend build step, nothing to install next to the binary. The console itself
//! talks only to the JSON API and the SSE alert stream.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::catalog::Catalog;

/// One embedded file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("console/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/api.js"),
    },
    Asset {
        name: "i18n.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/i18n.js"),
    },
    Asset {
        name: "chart.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/chart.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("console/style.css"),
    },
];

fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(file))
        .route("/api/v1/catalog", get(catalog))
}

fn serve(a: &Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            // The console must pick up a new gateway version on the next load; the files are
            // small, so revalidating every time costs nothing worth caching for.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        a.body,
    )
        .into_response()
}

async fn index() -> Response {
    match asset("index.html") {
        Some(a) => serve(a),
        None => not_found("index.html"),
    }
}

async fn file(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some(a) => serve(a),
        None => not_found(&name),
    }
}

fn not_found(name: &str) -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        reason: "not_found",
        message: format!("no console asset named {name:?}"),
    }
    .into_response()
}

async fn catalog(State(st): State<AppState>) -> Json<Value> {
    Json(catalog_view(&st.catalog))
}

/// The catalog as the console shows it: kinds and metrics with their display names, sorted
/// by name so the page's dropdowns keep a stable order.
pub fn catalog_view(catalog: &Catalog) -> Value {
    let mut kinds: Vec<_> = catalog.kinds().collect();
    kinds.sort_by(|a, b| a.name.cmp(&b.name));
    let kinds: Vec<Value> = kinds
        .into_iter()
        .map(|kind| {
            let metrics: Vec<Value> = kind
                .metrics
                .iter()
                .map(|m| {
                    let name = kind
                        .spec
                        .metrics
                        .get(m.name.as_str())
                        .map(|spec| display(&spec.name, &m.name))
                        .unwrap_or_else(|| json!({ "en": m.name, "zh": m.name }));
                    json!({
                        "metric": m.name,
                        "name": name,
                        "unit": m.unit,
                        "min": m.min,
                        "max": m.max,
                    })
                })
                .collect();
            json!({
                "kind": kind.name,
                "name": display(&kind.spec.name, &kind.name),
                "metrics": metrics,
            })
        })
        .collect();
    json!({ "timezone": catalog.timezone.name(), "kinds": kinds })
}

/// A display name with every language filled in: the catalog's `zh` is optional, and the
/// console should show the English name (or the id) rather than an empty label.
fn display(name: &crate::catalog::spec::DisplayName, id: &str) -> Value {
    let en = if name.en.is_empty() { id } else { &name.en };
    let zh = if name.zh.is_empty() { en } else { &name.zh };
    json!({ "en": en, "zh": zh })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{load_with_env, Source};

    fn catalog(extra: &str) -> Catalog {
        let sources = [Source::Text {
            name: "test".into(),
            toml: extra.into(),
        }];
        match load_with_env(&sources, Some(HashMap::new())) {
            Ok(c) => Catalog::from_config(&c),
            Err(e) => panic!("test config must load: {e}"),
        }
    }

    #[test]
    fn catalog_view_has_every_kind_sorted_with_both_languages() {
        let view = catalog_view(&catalog(""));
        assert_eq!(view["timezone"], "Asia/Shanghai");
        let kinds: Vec<&str> = view["kinds"]
            .as_array()
            .expect("kinds")
            .iter()
            .filter_map(|k| k["kind"].as_str())
            .collect();
        let mut sorted = kinds.clone();
        sorted.sort_unstable();
        assert_eq!(kinds, sorted);
        assert_eq!(kinds.len(), 13, "{kinds:?}");

        let wl = &view["kinds"][kinds
            .iter()
            .position(|k| *k == "water_level")
            .expect("water_level")];
        assert_eq!(wl["name"]["en"], "Water level");
        assert_eq!(wl["name"]["zh"], "水位");
        assert_eq!(
            wl["metrics"],
            json!([{"metric": "level", "name": {"en": "Water level", "zh": "水位"},
                    "unit": "m", "min": -10.0, "max": 100.0}])
        );
    }

    #[test]
    fn catalog_view_shows_configured_ranges_and_falls_back_to_english() {
        let view = catalog_view(&catalog(
            "[catalog.noise]\nname = { en = \"Street noise\", zh = \"\" }\n\
             [catalog.noise.metrics.laeq]\nname = { en = \"LAeq\", zh = \"\" }\nunit = \"dB(A)\"\nmin = 10.0\nmax = 150.0\n",
        ));
        let noise = view["kinds"]
            .as_array()
            .expect("kinds")
            .iter()
            .find(|k| k["kind"] == "noise")
            .expect("noise");
        assert_eq!(
            noise["name"],
            json!({"en": "Street noise", "zh": "Street noise"})
        );
        assert_eq!(
            noise["metrics"][0]["name"],
            json!({"en": "LAeq", "zh": "LAeq"})
        );
        assert_eq!(noise["metrics"][0]["min"], 10.0);
        assert_eq!(noise["metrics"][0]["max"], 150.0);
    }

    #[test]
    fn every_asset_the_page_loads_is_embedded() {
        let index = asset("index.html").expect("index");
        for needed in ["/console/app.js", "/console/style.css"] {
            assert!(
                index.body.contains(needed),
                "index.html does not load {needed}"
            );
        }
        // ES module imports are relative to /console/.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit_once("'./")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .map(|(file, _)| file)
                    .unwrap_or_else(|| panic!("{}: unexpected import {line}", a.name));
                assert!(
                    asset(target).is_some(),
                    "{} imports missing {target}",
                    a.name
                );
            }
        }
        assert!(asset("secret.txt").is_none());
        assert!(asset("../mod.rs").is_none());
    }
}
