//! The operators' API on a real gateway: every endpoint answers with the status and the
//! shape its OpenAPI document promises (each answer is validated against the documented
//! schema), bad parameters get a clear 400 and never a 500, bearer-token auth gives 401 and
//! 403, the SSE stream resumes from Last-Event-ID without a gap, and /metrics is valid
//! Prometheus text whose counters move with the readings.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::sse::SseClient;
use common::{now_ms, start, Api};
use serde_json::{json, Value};

const SENSORS: &str = r#"
[sensors.wl-bj-01]
kind = "water_level"
tags = { district = "清城区", site = "北江清远段" }
rules.level = { above = { warning = 12.0, critical = 14.0 } }
rules.rise_rate = { disabled = true }

[sensors.wl-bj-02]
kind = "water_level"
tags = { district = "英德市" }
rules.level = { above = { warning = 12.0, critical = 14.0 } }
rules.rise_rate = { disabled = true }
"#;

const WAIT: Duration = Duration::from_secs(20);
/// Readings an hour apart: the level's spike check allows 5 m/h.
const HOUR: i64 = 3_600_000;

fn openapi() -> Value {
    serde_json::from_str(citygate::http::OPENAPI).expect("the OpenAPI document is JSON")
}

/// Asserts that `status` is a documented answer of `method path` and that `body` matches
/// its schema.
fn conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let op = &doc["paths"][path][method];
    assert!(
        op.is_object(),
        "{method} {path} is not in the OpenAPI document"
    );
    let resp = &op["responses"][status.to_string()];
    assert!(
        resp.is_object(),
        "{method} {path} answered {status}, which its OpenAPI entry does not list: {body}"
    );
    let Some(schema) = resp["content"]["application/json"]["schema"].as_object() else {
        return;
    };
    let mut root = Value::Object(schema.clone());
    root["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("schema of {method} {path} {status}: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status} does not match its schema: {errors:?}\n{body}"
    );
}

async fn ingest(api: &Api, body: String) -> Value {
    let (status, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(status, 200, "{receipt}");
    receipt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_documented() {
    let doc = openapi();
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), SENSORS).await;
    let api = Api::new(&g);
    let t = now_ms() - 3 * HOUR;

    let receipt = ingest(
        &api,
        format!(
            r#"[{{"sensor":"wl-bj-01","ts":{t},"level":11.0}},{{"sensor":"wl-bj-01","ts":{},"level":12.5}},
                {{"sensor":"wl-bj-02","ts":{t},"level":3.0}},{{"sensor":"wl-bj-02","ts":{},"level":99999}}]"#,
            t + HOUR,
            t + HOUR
        ),
    )
    .await;
    assert_eq!(
        (receipt["accepted"].as_u64(), receipt["rejected"].as_u64()),
        (Some(3), Some(1))
    );
    conforms(&doc, "post", "/api/v1/ingest", 200, &receipt);

    // Sensors: latest values and status from the board.
    let (s, list) = api.get("/api/v1/sensors").await;
    conforms(&doc, "get", "/api/v1/sensors", s, &list);
    assert_eq!(list["total"], 2);
    let one = &list["sensors"][0];
    assert_eq!(one["id"], "wl-bj-01");
    assert_eq!(one["district"], "清城区");
    assert_eq!(one["latest"]["level"]["value"], 12.5);
    assert_eq!(one["last_seen"], t + HOUR);
    assert_eq!(one["status"], "alerting");
    assert_eq!(one["severity"], "warning");
    assert_eq!(list["sensors"][1]["status"], "ok");
    assert_eq!(list["sensors"][1]["latest"]["level"]["value"], 3.0);

    let (s, page) = api
        .get("/api/v1/sensors?status=alerting&district=%E6%B8%85%E5%9F%8E%E5%8C%BA&limit=1")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (page["total"].as_u64(), page["count"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, page) = api.get("/api/v1/sensors?q=02&offset=0").await;
    assert_eq!(page["sensors"][0]["id"], "wl-bj-02");

    let (s, summary) = api.get("/api/v1/sensors/summary").await;
    conforms(&doc, "get", "/api/v1/sensors/summary", s, &summary);
    assert_eq!(summary["total"], 2);
    let groups: BTreeSet<(String, u64, u64)> = summary["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["district"].as_str().unwrap_or_default().to_string(),
                g["ok"].as_u64().unwrap_or(99),
                g["alerting"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        groups,
        BTreeSet::from([("清城区".to_string(), 0, 1), ("英德市".to_string(), 1, 0)])
    );

    let (s, detail) = api.get("/api/v1/sensors/wl-bj-01").await;
    conforms(&doc, "get", "/api/v1/sensors/{id}", s, &detail);
    let level = detail["metrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["metric"] == "level"))
        .expect("the level metric");
    assert_eq!(level["unit"], "m");
    let lines: BTreeSet<(String, String, String)> = level["thresholds"]
        .as_array()
        .expect("thresholds")
        .iter()
        .map(|t| {
            (
                t["severity"].as_str().unwrap_or_default().to_string(),
                t["direction"].as_str().unwrap_or_default().to_string(),
                t["value"].to_string(),
            )
        })
        .collect();
    assert!(
        lines.contains(&("warning".into(), "above".into(), "12.0".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("critical".into(), "above".into(), "14.0".into())),
        "{lines:?}"
    );

    let (s, readings) = api
        .get(&format!(
            "/api/v1/sensors/wl-bj-01/readings?metric=level&from={t}&order=asc"
        ))
        .await;
    conforms(&doc, "get", "/api/v1/sensors/{id}/readings", s, &readings);
    let values: Vec<f64> = readings["readings"]
        .as_array()
        .expect("readings")
        .iter()
        .filter_map(|r| r["value"].as_f64())
        .collect();
    assert_eq!(values, [11.0, 12.5]);
    let (s, all) = api.get("/api/v1/readings?sensor=wl-bj-02").await;
    conforms(&doc, "get", "/api/v1/readings", s, &all);
    assert_eq!(all["count"], 1);

    // Alerts with filters.
    let (s, alerts) = api
        .get("/api/v1/alerts?severity=warning&kind=water_level")
        .await;
    conforms(&doc, "get", "/api/v1/alerts", s, &alerts);
    assert_eq!(alerts["count"], 1);
    let alert = &alerts["alerts"][0];
    assert_eq!(alert["sensor"], "wl-bj-01");
    assert_eq!(alert["tags"]["district"], "清城区");
    let id = alert["id"].as_str().expect("id").to_string();
    let (_, none) = api.get("/api/v1/alerts?severity=critical").await;
    assert_eq!(none["count"], 0);
    let (_, by_district) = api
        .get("/api/v1/alerts?district=%E6%B8%85%E5%9F%8E%E5%8C%BA")
        .await;
    assert_eq!(by_district["count"], 1);
    let (_, other) = api
        .get("/api/v1/alerts?district=%E8%8B%B1%E5%BE%B7%E5%B8%82")
        .await;
    assert_eq!(other["count"], 0);
    let (_, by_sensor) = api.get("/api/v1/alerts?sensor=wl-bj-02&state=all").await;
    assert_eq!(by_sensor["count"], 0);

    let (s, one) = api.get(&format!("/api/v1/alerts/{id}")).await;
    conforms(&doc, "get", "/api/v1/alerts/{id}", s, &one);
    let (s, acked) = api
        .post(
            &format!("/api/v1/alerts/{id}/ack"),
            "application/json",
            r#"{"by":"李伟","comment":"crew sent"}"#,
        )
        .await;
    conforms(&doc, "post", "/api/v1/alerts/{id}/ack", s, &acked);
    assert_eq!(acked["alert"]["ack"]["by"], "李伟");

    let (s, dl) = api.get("/api/v1/dead-letters").await;
    conforms(&doc, "get", "/api/v1/dead-letters", s, &dl);
    assert_eq!(dl["count"], 1);

    for path in ["/health", "/ready"] {
        let (s, body) = api.get(path).await;
        conforms(&doc, "get", path, s, &body);
        assert_eq!(s, 200, "{path}: {body}");
    }
    let (s, served) = api.get("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert_eq!(served, doc, "the served document is the one in the source");

    // Bad parameters and bodies: a 400 (or 404) that says what is wrong, never a 500.
    let bad: &[(&str, &str, u16, &str)] = &[
        ("get", "/api/v1/alerts?state=open", 400, "state"),
        ("get", "/api/v1/alerts?severity=high", 400, "severity"),
        ("get", "/api/v1/alerts?limit=0", 400, "limit"),
        ("get", "/api/v1/alerts?limit=x", 400, "limit"),
        ("get", "/api/v1/alerts?colour=red", 400, "colour"),
        ("get", "/api/v1/sensors?status=broken", 400, "status"),
        ("get", "/api/v1/sensors?limit=5000", 400, "limit"),
        ("get", "/api/v1/sensors?offset=-1", 400, "offset"),
        ("get", "/api/v1/sensors/nope", 404, "nope"),
        ("get", "/api/v1/sensors/nope/readings", 404, "nope"),
        (
            "get",
            "/api/v1/sensors/wl-bj-01/readings?from=yesterday",
            400,
            "from",
        ),
        (
            "get",
            "/api/v1/sensors/wl-bj-01/readings?order=up",
            400,
            "order",
        ),
        ("get", "/api/v1/readings?to=soon", 400, "to"),
        ("get", "/api/v1/alerts/nope", 404, "nope"),
        ("get", "/api/v1/dead-letters?limit=0", 400, "limit"),
    ];
    let templates = [
        (
            "/api/v1/sensors/nope/readings",
            "/api/v1/sensors/{id}/readings",
        ),
        (
            "/api/v1/sensors/wl-bj-01/readings",
            "/api/v1/sensors/{id}/readings",
        ),
        ("/api/v1/sensors/nope", "/api/v1/sensors/{id}"),
        ("/api/v1/alerts/nope", "/api/v1/alerts/{id}"),
    ];
    for (method, url, want, mention) in bad {
        let (s, body) = api.get(url).await;
        assert_eq!(s, *want, "{url}: {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(mention),
            "{url}: the error should name {mention:?}: {body}"
        );
        let path = url.split('?').next().unwrap_or_default();
        let template = templates
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(path, |(_, t)| t);
        conforms(&doc, method, template, s, &body);
    }
    for (body, mention) in [
        (r#"{"by":""}"#, "by"),
        (r#"{"comment":"x"}"#, "by"),
        (r#"{"by":"a","extra":1}"#, "extra"),
        ("not json", "JSON"),
    ] {
        let (s, answer) = api
            .post(
                &format!("/api/v1/alerts/{id}/ack"),
                "application/json",
                body,
            )
            .await;
        assert_eq!(s, 400, "{body}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(mention),
            "{body}: {answer}"
        );
        conforms(&doc, "post", "/api/v1/alerts/{id}/ack", s, &answer);
    }
    let (s, answer) = api
        .post(
            "/api/v1/alerts/nope/ack",
            "application/json",
            r#"{"by":"a"}"#,
        )
        .await;
    assert_eq!(s, 404, "{answer}");
    conforms(&doc, "post", "/api/v1/alerts/{id}/ack", s, &answer);

    drop(api);
    g.shutdown().await.expect("clean shutdown");
}

/// The routes the source declares (`.route("...")` in src/http/) and the paths the OpenAPI
/// document describes are the same set.
#[test]
fn the_openapi_document_covers_every_route() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("src/http") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("source");
            for part in text.split(".route(").skip(1) {
                let route = part.trim_start().strip_prefix('"').unwrap_or_default();
                let route = route.split('"').next().unwrap_or_default();
                // The console's page and assets are not API.
                if route.starts_with("/api/") || !route.starts_with("/console") && route != "/" {
                    routes.insert(route.to_string());
                }
            }
        }
    }
    let doc = openapi();
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    // The catalog route is the console's (src/http/console.rs); everything else must exist.
    let stale: Vec<_> = documented.difference(&routes).collect();
    assert!(
        stale.is_empty(),
        "openapi.json documents routes that do not exist: {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_changing_calls_and_reads_when_asked() {
    let doc = openapi();
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, "t0ken-for-tests\n").expect("token file");
    let overlay = format!(
        "{SENSORS}\n[http.auth]\ntoken_file = {:?}\n",
        token_file.display().to_string()
    );
    let g = start(dir.path(), &overlay).await;
    let base = format!("http://{}", g.addr());
    let client = common::http_client();
    let reading = format!(r#"{{"sensor":"wl-bj-01","ts":{},"level":5.0}}"#, now_ms());

    let none = client
        .post(format!("{base}/api/v1/ingest"))
        .body(reading.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(none.status().as_u16(), 401);
    assert_eq!(
        none.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let body: Value = none.json().await.expect("json");
    assert_eq!(body["reason"], "unauthorized");
    conforms(&doc, "post", "/api/v1/ingest", 401, &body);

    let wrong = client
        .post(format!("{base}/api/v1/ingest"))
        .bearer_auth("guess")
        .body(reading.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status().as_u16(), 403);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["reason"], "forbidden");
    assert!(
        !body.to_string().contains("t0ken"),
        "the answer must not reveal the token: {body}"
    );

    let ack = client
        .post(format!("{base}/api/v1/alerts/any/ack"))
        .json(&json!({"by": "x"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(ack.status().as_u16(), 401, "ack needs the token too");

    let right = client
        .post(format!("{base}/api/v1/ingest"))
        .bearer_auth("t0ken-for-tests")
        .body(reading)
        .send()
        .await
        .expect("sent");
    assert_eq!(right.status().as_u16(), 200);
    let receipt: Value = right.json().await.expect("json");
    assert_eq!(receipt["accepted"], 1);

    // Reads stay open unless protect_reads.
    let reads = client
        .get(format!("{base}/api/v1/sensors"))
        .send()
        .await
        .expect("sent");
    assert_eq!(reads.status().as_u16(), 200);
    g.shutdown().await.expect("clean shutdown");

    let dir2 = tempfile::tempdir().expect("tempdir");
    let overlay = format!(
        "{SENSORS}\n[http.auth]\ntoken_file = {:?}\nprotect_reads = true\n",
        token_file.display().to_string()
    );
    let g = start(dir2.path(), &overlay).await;
    let base = format!("http://{}", g.addr());
    for path in [
        "/api/v1/sensors",
        "/api/v1/alerts",
        "/api/v1/alerts/stream",
        "/metrics",
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 401, "{path} is protected");
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth("t0ken-for-tests")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200, "{path} with the token");
    }
    for path in ["/health", "/ready", "/api/v1/openapi.json"] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200, "{path} stays open for probes");
    }
    g.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_the_active_set_then_live_events_and_resumes_without_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), SENSORS).await;
    let api = Api::new(&g);
    let url = format!("http://{}/api/v1/alerts/stream", g.addr());
    let t = now_ms() - 5 * HOUR;
    let level =
        |sensor: &str, ts: i64, v: f64| format!(r#"{{"sensor":"{sensor}","ts":{ts},"level":{v}}}"#);

    // One alert active before anyone connects.
    ingest(&api, level("wl-bj-01", t, 12.5)).await;
    let mut first = SseClient::connect(&url, None, None).await;
    let snap = first.next(WAIT).await.expect("a snapshot on connect");
    assert_eq!(snap.event, "snapshot");
    let data = snap.json();
    let ids: Vec<&str> = data["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["sensor"].as_str())
        .collect();
    assert_eq!(ids, ["wl-bj-01"]);
    assert_eq!(data["alerts"][0]["tags"]["district"], "清城区");
    assert_eq!(snap.id.as_deref(), Some(data["seq"].to_string().as_str()));

    // Live: the second station breaches.
    ingest(&api, level("wl-bj-02", t, 12.7)).await;
    let live = first.next(WAIT).await.expect("a live event");
    assert_eq!(live.event, "alert");
    let msg = live.json();
    assert_eq!(
        (msg["event"].as_str(), msg["alert"]["sensor"].as_str()),
        (Some("raised"), Some("wl-bj-02"))
    );
    assert_eq!(msg["alert"]["severity"], "warning");
    assert_eq!(live.id.as_deref(), Some(msg["seq"].to_string().as_str()));
    let resume_from = live.id.clone().expect("id");
    drop(first);

    // While the client is away: escalation, resolution and a new alert.
    ingest(&api, level("wl-bj-02", t + HOUR, 14.2)).await;
    ingest(&api, level("wl-bj-02", t + 2 * HOUR, 11.5)).await;
    ingest(&api, level("wl-bj-01", t + 3 * HOUR, 14.5)).await;

    let mut back = SseClient::connect(&url, Some(&resume_from), None).await;
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    while got.len() < 3 {
        let e = back.next(WAIT).await.expect("the missed events");
        assert_eq!(
            e.event, "alert",
            "a resume sends events, not a snapshot: {e:?}"
        );
        let m = e.json();
        seqs.push(m["seq"].as_i64().expect("seq"));
        got.push((
            m["alert"]["sensor"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            m["event"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let first_missed: i64 = resume_from.parse().expect("numeric id");
    assert_eq!(
        seqs,
        [first_missed + 1, first_missed + 2, first_missed + 3],
        "no gap"
    );
    assert_eq!(
        got,
        [
            ("wl-bj-02".to_string(), "escalated".to_string()),
            ("wl-bj-02".to_string(), "resolved".to_string()),
            ("wl-bj-01".to_string(), "escalated".to_string()),
        ]
    );
    // And then live again on the same connection.
    ingest(&api, level("wl-bj-02", t + 4 * HOUR, 12.9)).await;
    let e = back.next(WAIT).await.expect("live after the resume");
    assert_eq!(e.json()["seq"].as_i64(), Some(first_missed + 4));

    // A Last-Event-ID from the future (another store) gets a fresh snapshot.
    let mut odd = SseClient::connect(&url, Some("999999"), None).await;
    let e = odd.next(WAIT).await.expect("a snapshot");
    assert_eq!(e.event, "snapshot");
    assert_eq!(e.json()["alerts"].as_array().map(Vec::len), Some(2));
    drop((back, odd, api));
    g.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_move_with_the_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), SENSORS).await;
    let api = Api::new(&g);
    let scrape = || async {
        let (s, text) = api.get_text("/metrics").await;
        assert_eq!(s, 200);
        common::prometheus::parse(&text).unwrap_or_else(|e| panic!("/metrics: {e}\n{text}"))
    };
    let before = scrape().await;
    let t = now_ms() - 60_000;
    ingest(
        &api,
        format!(
            r#"[{{"sensor":"wl-bj-01","ts":{t},"level":12.5}},{{"sensor":"wl-bj-02","ts":{t},"level":"high"}}]"#
        ),
    )
    .await;
    let after = scrape().await;
    // Other tests in this binary run gateways in the same process (one recorder), so compare
    // the difference, and at least what this test did.
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert!(moved("citygate_readings_accepted_total", &[("source", "http")]) >= 1.0);
    assert!(moved("citygate_readings_rejected_total", &[]) >= 1.0);
    assert!(moved("citygate_alerts_raised_total", &[("severity", "warning")]) >= 1.0);
    assert!(moved("citygate_pipeline_batch_seconds_count", &[]) >= 1.0);
    assert!(
        moved(
            "citygate_store_commit_seconds_count",
            &[("store", "sqlite")]
        ) >= 1.0
    );
    assert_eq!(
        after
            .types
            .get("citygate_pipeline_batch_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    for name in [
        "citygate_outbox_entries",
        "citygate_outbox_oldest_entry_timestamp_seconds",
    ] {
        assert!(after.has(name), "{name} is exported");
    }
    // Labels stay low-cardinality: no sample is labelled with a sensor id.
    for s in &after.samples {
        assert!(
            !s.labels.values().any(|v| v.starts_with("wl-bj")),
            "a sensor id in the labels of {}: {:?}",
            s.name,
            s.labels
        );
    }
    drop(api);
    g.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_what_is_down_while_health_stays_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A broker connection that cannot connect: nothing listens on this port.
    let port = common::mosquitto::free_port();
    let overlay = common::mqtt_section(
        "plant",
        &format!("mqtt://127.0.0.1:{port}"),
        common::publisher::Proto::V311,
        "",
    );
    let g = start(dir.path(), &overlay).await;
    let api = Api::new(&g);
    let (s, ready) = api.get("/ready").await;
    assert_eq!(s, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    let reasons: Vec<&str> = ready["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(reasons, ["mqtt plant: not connected"]);
    conforms(&openapi(), "get", "/ready", s, &ready);
    let (s, health) = api.get("/health").await;
    assert_eq!((s, health["status"].as_str()), (200, Some("degraded")));
    drop(api);
    g.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_the_mqtt_alert_output_stays_off_and_the_gateway_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The harness base has `mqtt = []`; the output is on, as in the default config.
    let g = start(dir.path(), "[alerts.mqtt]\nenabled = true\n").await;
    assert!(
        g.alert_outputs().is_empty(),
        "no broker to publish to: no MQTT alert output"
    );
    let api = Api::new(&g);
    let (s, health) = api.get("/health").await;
    assert_eq!(
        (s, health["alert_outputs"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    drop(api);
    g.shutdown().await.expect("clean shutdown");
}
