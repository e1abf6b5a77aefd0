//! End to end over HTTP: a real gateway on port 0 with a temporary SQLite store takes
//! readings from the SENSORS.md examples in every payload format, breaching and malformed
//! ones included; the rows, the alerts and the dead letters are checked in the store and
//! through the API; then the gateway restarts and its active alerts carry on.

mod common;

use std::collections::BTreeSet;

use common::{now_ms, start, Api};
use serde_json::Value;

const SENSORS: &str = r#"
[sensors.wl-bj-01]
kind = "water_level"
tags = { district = "清城区", site = "北江清远段" }
rules.level = { above = { warning = 12.0, critical = 14.0 } }

[sensors.wq-0042]
kind = "water_quality"
profile = "II"
tags = { district = "清新区" }
"#;

const MIN: i64 = 60_000;

fn active_set(alerts: &Value) -> BTreeSet<(String, String, String)> {
    alerts["alerts"]
        .as_array()
        .expect("alerts array")
        .iter()
        .map(|a| {
            (
                a["sensor"].as_str().unwrap_or_default().to_string(),
                a["rule"].as_str().unwrap_or_default().to_string(),
                a["severity"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_validate_alert_store_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), SENSORS).await;
    let api = Api::new(&g);
    let t = now_ms() - 120 * MIN;

    // JSON, flat: class II section, NH3-N 1.2 mg/L is above the class II limit 0.5
    let body = format!(
        r#"{{"sensor":"wq-0042","ts":{t},"ph":7.1,"dissolved_oxygen":6.5,"ammonia_nitrogen":1.2}}"#
    );
    let (status, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["accepted"], 3);
    assert_eq!(receipt["rejected"], 0);

    // JSON, nested, an array, RFC 3339 time: the station rises past its warning level
    let t1 = chrono::DateTime::from_timestamp_millis(t + 30 * MIN)
        .expect("time")
        .to_rfc3339();
    let body = format!(
        r#"[{{"sensor":"wl-bj-01","ts":{t},"values":{{"level":11.5}}}},{{"sensor":"wl-bj-01","ts":"{t1}","values":{{"level":12.5}}}}]"#
    );
    let (status, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(
        (status, receipt["accepted"].as_u64()),
        (200, Some(2)),
        "{receipt}"
    );

    // line protocol: an unlisted gas detector, accepted with its kind from the measurement
    let ns = (t + 10 * MIN) * 1_000_000;
    let (status, receipt) = api
        .post(
            "/api/v1/ingest",
            "text/plain",
            format!("gas_detector,sensor=gd-01,district=清城区 lel=55,h2s=2i {ns}\n"),
        )
        .await;
    assert_eq!(
        (status, receipt["accepted"].as_u64()),
        (200, Some(2)),
        "{receipt}"
    );

    // SenML with a base name and base time, kind from the query: 60 mm in 3 h is CMA orange
    let senml = format!(
        r#"[{{"bn":"rf-01/","bt":{},"n":"rainfall","u":"mm","v":60}}]"#,
        (t + 5 * MIN) / 1000
    );
    let (status, receipt) = api
        .post(
            "/api/v1/ingest?kind=rainfall",
            "application/senml+json",
            senml,
        )
        .await;
    assert_eq!(
        (status, receipt["accepted"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );

    // a bare value in the path form: phase A at 190 V is below 198 V
    let (status, receipt) = api
        .post(
            "/api/v1/ingest/em-01/voltage_a?kind=electricity_meter",
            "text/plain",
            "190",
        )
        .await;
    assert_eq!(
        (status, receipt["accepted"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );

    // rejected readings: a pH of 17, a duplicate, NaN, an unknown metric
    let body = format!(r#"{{"sensor":"wq-0042","ts":{},"ph":17}}"#, t + MIN);
    let (status, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(status, 200);
    assert_eq!(receipt["rejected"], 1);
    assert_eq!(receipt["reasons"]["out_of_range"], 1);
    assert!(
        receipt["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("0..14"),
        "{receipt}"
    );
    let body = format!(r#"{{"sensor":"wq-0042","ts":{t},"ph":7.2}}"#);
    let (_, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(receipt["reasons"]["duplicate"], 1, "{receipt}");
    let (_, receipt) = api
        .post(
            "/api/v1/ingest/em-01/voltage_b?kind=electricity_meter",
            "text/plain",
            "NaN",
        )
        .await;
    assert_eq!(receipt["reasons"]["not_finite"], 1, "{receipt}");
    let body = format!(
        r#"{{"sensor":"wq-0042","ts":{},"salinity":3}}"#,
        t + 2 * MIN
    );
    let (_, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(receipt["reasons"]["unknown_metric"], 1, "{receipt}");

    // an unreadable body: a 400 that says why, never a 500
    let (status, err) = api
        .post(
            "/api/v1/ingest",
            "application/json",
            "{\"sensor\": \"wq-0042\", \"ph\": 7",
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap_or_default().contains("json"),
        "{err}"
    );
    let (status, err) = api
        .post("/api/v1/ingest?format=xml", "application/json", "{}")
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = api.get("/api/v1/readings?limit=abc").await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = api.get("/api/v1/readings?from=yesterday").await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = api.get("/api/v1/alerts?state=sleeping").await;
    assert_eq!(status, 400, "{err}");

    // the store holds exactly the accepted rows
    let db = g.db_path().to_path_buf();
    assert_eq!(
        count(&db, "SELECT count(*) FROM readings"),
        3 + 2 + 2 + 1 + 1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM readings WHERE sensor = 'wq-0042'"
        ),
        3
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM readings WHERE sensor = 'gd-01' AND kind = 'gas_detector'"
        ),
        2
    );
    let (_, readings) = api
        .get("/api/v1/readings?sensor=wl-bj-01&metric=level&order=asc")
        .await;
    let levels: Vec<f64> = readings["readings"]
        .as_array()
        .expect("readings")
        .iter()
        .map(|r| r["value"].as_f64().expect("value"))
        .collect();
    assert_eq!(levels, vec![11.5, 12.5]);
    assert_eq!(readings["readings"][1]["ts"], t + 30 * MIN);
    assert_eq!(readings["readings"][1]["ts_source"], "device");

    // the dead letters, each with its reason and the raw input
    let (_, dl) = api.get("/api/v1/dead-letters").await;
    let reasons: BTreeSet<String> = dl["dead_letters"]
        .as_array()
        .expect("dead letters")
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: BTreeSet<String> = [
        "out_of_range",
        "duplicate",
        "not_finite",
        "unknown_metric",
        "invalid_json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(reasons, expected);
    assert_eq!(
        count(&db, "SELECT count(*) FROM dead_letters WHERE raw_len > 0"),
        5
    );

    // the alerts
    let (_, alerts) = api.get("/api/v1/alerts?state=active").await;
    let active = active_set(&alerts);
    let must = set(&[
        ("wq-0042", "ammonia_nitrogen", "warning"),
        ("wl-bj-01", "level", "warning"),
        ("gd-01", "lel", "critical"),
        ("rf-01", "rainstorm_3h", "major"),
        ("em-01", "voltage_a", "warning"),
    ]);
    assert!(
        must.is_subset(&active),
        "missing alerts: {:?}\nactive: {active:?}",
        must.difference(&active)
    );
    let level_alert = alerts["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["rule"] == "level"))
        .expect("level alert")
        .clone();
    let level_id = level_alert["id"].as_str().expect("id").to_string();
    assert_eq!(level_alert["threshold"], 12.0);
    assert_eq!(level_alert["value"], 12.5);

    // restart on the same data directory
    g.shutdown().await.expect("clean shutdown");
    let g = start(dir.path(), SENSORS).await;
    let api = Api::new(&g);
    let (_, alerts) = api.get("/api/v1/alerts?state=active").await;
    assert_eq!(
        active_set(&alerts),
        active,
        "active alerts survive the restart"
    );

    // the breach goes on and escalates: the same alert, not a new one
    let body = format!(
        r#"{{"sensor":"wl-bj-01","ts":{},"level":14.1}}"#,
        t + 60 * MIN
    );
    let (status, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(
        (status, receipt["accepted"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );
    let (_, detail) = api.get(&format!("/api/v1/alerts/{level_id}")).await;
    assert_eq!(detail["alert"]["severity"], "critical", "{detail}");
    assert_eq!(detail["alert"]["count"], 2);
    let events: Vec<&str> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        events,
        vec!["raised", "escalated"],
        "raised once, across the restart"
    );

    // an operator acknowledges it
    let (status, acked) = api
        .post(
            &format!("/api/v1/alerts/{level_id}/ack"),
            "application/json",
            r#"{"by":"王工","comment":"闸门已开"}"#,
        )
        .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["alert"]["ack"]["by"], "王工");
    let (status, _) = api
        .post(
            "/api/v1/alerts/nope/ack",
            "application/json",
            r#"{"by":"x"}"#,
        )
        .await;
    assert_eq!(status, 404);

    // the level falls back below the deadband: resolved
    let body = format!(
        r#"{{"sensor":"wl-bj-01","ts":{},"level":11.0}}"#,
        t + 100 * MIN
    );
    api.post("/api/v1/ingest", "application/json", body).await;
    let (_, detail) = api.get(&format!("/api/v1/alerts/{level_id}")).await;
    assert_eq!(detail["alert"]["state"], "resolved", "{detail}");
    assert_eq!(detail["alert"]["peak"], 14.1);
    let (_, resolved) = api.get("/api/v1/alerts?state=resolved").await;
    assert!(resolved["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .any(|a| a["id"] == level_id.as_str()));

    // health and metrics
    let (status, health) = api.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["readings"], 11);
    let (status, metrics) = api.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("citygate_readings_rejected_total"),
        "{metrics}"
    );
    g.shutdown().await.expect("clean shutdown");
}
