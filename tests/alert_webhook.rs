//! `[[alerts.webhooks]]` against a real HTTP receiver (axum, in the test, on port 0): the body
//! is the AlertMessage JSON and its signature verifies with an HMAC computed here; a receiver
//! failing with 500 gets the same events again and none is lost or reordered; a 400 becomes a
//! `webhook_rejected` dead letter and later events still arrive; events raised while the
//! receiver is down survive a gateway restart (the cursor is durable).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use common::{now_ms, start, Api, STORE_DEADLINE};
use serde_json::Value;

const SECRET: &str = "webhook-test-secret";

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
    json: Value,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn seq(&self) -> i64 {
        self.header("x-citygate-seq").parse().unwrap_or(-1)
    }
}

#[derive(Clone, Default)]
struct Receiver {
    log: Arc<Mutex<Vec<Received>>>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<Mutex<usize>>,
    /// Answer 400 to events of this sensor.
    refuse_sensor: Option<String>,
}

impl Receiver {
    fn requests(&self) -> Vec<Received> {
        self.log.lock().expect("lock").clone()
    }

    /// Serves on `listener` until the test ends.
    fn serve(&self, listener: tokio::net::TcpListener) {
        async fn hook(
            axum::extract::State(r): axum::extract::State<Receiver>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> (StatusCode, String) {
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = {
                let mut fail = r.fail_first.lock().expect("lock");
                if *fail > 0 {
                    *fail -= 1;
                    (StatusCode::INTERNAL_SERVER_ERROR, "try later".to_string())
                } else if r.refuse_sensor.as_deref() == json["alert"]["sensor"].as_str() {
                    (StatusCode::BAD_REQUEST, "unknown station".to_string())
                } else {
                    (StatusCode::NO_CONTENT, String::new())
                }
            };
            r.log.lock().expect("lock").push(Received {
                headers,
                body: body.to_vec(),
                json,
                answered: answer.0.as_u16(),
            });
            answer
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    /// Waits until the receiver has accepted (2xx) every seq in `want`; returns what it has.
    async fn wait_for(&self, want: &BTreeSet<i64>) -> Vec<Received> {
        let until = Instant::now() + STORE_DEADLINE;
        loop {
            let got = self.requests();
            let ok: BTreeSet<i64> = got
                .iter()
                .filter(|r| r.answered < 300)
                .map(Received::seq)
                .collect();
            if want.is_subset(&ok) || Instant::now() > until {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sensors whose `level` rule breaches at 12 m (warning) and 14 m (critical); the rise-rate
/// rule is moved out of the way so that only `level` raises alerts.
fn config(sensors: &[&str], url: &str, secret_file: &Path) -> String {
    let mut toml = format!(
        r#"
[[alerts.webhooks]]
name = "ops"
url = "{url}"
secret_file = {secret:?}
retry_min = "50ms"
retry_max = "200ms"
auth_retry = "200ms"
timeout = "5s"
"#,
        secret = secret_file.display().to_string()
    );
    for s in sensors {
        toml.push_str(&format!(
            "[sensors.{s}]\nkind = \"water_level\"\ntags = {{ district = \"qingcheng\" }}\nrules.level = {{ above = {{ warning = 12.0, critical = 14.0 }} }}\nrules.rise_rate = {{ above = {{ warning = 100.0, critical = 200.0 }} }}\n"
        ));
    }
    toml
}

fn secret_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("webhook.secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    path
}

/// A reading `minutes_ago`; readings of one sensor an hour apart keep the change plausible
/// (a faster one is suspect and drives no rule).
async fn level(api: &Api, sensor: &str, value: f64, minutes_ago: i64) {
    let ts = now_ms() - minutes_ago * 60_000;
    let body = format!(r#"{{"sensor":"{sensor}","ts":{ts},"level":{value}}}"#);
    let (status, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(
        (status, receipt["accepted"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );
}

/// Every `alert_events.seq` in the store, in order.
fn stored_seqs(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT seq FROM alert_events ORDER BY seq")
        .expect("prepare");
    let rows = stmt.query_map([], |r| r.get(0)).expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// The seqs in the order of their first accepted delivery, after dropping repeats.
fn first_deliveries(got: &[Received]) -> Vec<i64> {
    let mut seen = BTreeSet::new();
    got.iter()
        .filter(|r| r.answered < 300)
        .map(Received::seq)
        .filter(|s| seen.insert(*s))
        .collect()
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    (l, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_arrive_in_order_once_each_through_server_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, url) = listener().await;
    let receiver = Receiver {
        fail_first: Arc::new(Mutex::new(3)),
        ..Receiver::default()
    };
    receiver.serve(l);
    let sensors = ["wl-a", "wl-b", "wl-c"];
    let g = start(
        dir.path(),
        &config(&sensors, &url, &secret_file(dir.path())),
    )
    .await;
    let api = Api::new(&g);
    for s in sensors {
        level(&api, s, 12.5, 120).await;
    }
    level(&api, "wl-a", 14.5, 60).await; // escalated to critical
    level(&api, "wl-b", 10.0, 60).await; // resolved

    let want: BTreeSet<i64> = stored_seqs(g.db_path()).into_iter().collect();
    assert_eq!(want.len(), 5, "raised ×3, escalated, resolved");
    let got = receiver.wait_for(&want).await;

    // Every event exactly once after dedup by X-Citygate-Seq, in store order; the three
    // refused attempts were sent again.
    assert_eq!(
        first_deliveries(&got),
        want.iter().copied().collect::<Vec<_>>()
    );
    assert_eq!(got.iter().filter(|r| r.answered == 500).count(), 3);
    assert!(
        got[..3].iter().all(|r| r.seq() == got[0].seq()),
        "the same first event, retried"
    );

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    for r in &got {
        let expected: String = ring::hmac::sign(&key, &r.body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            r.header("x-citygate-signature"),
            format!("sha256={expected}")
        );
        assert_eq!(r.header("content-type"), "application/json");
        assert!(
            r.header("user-agent").starts_with("citygate/"),
            "{:?}",
            r.headers
        );
        assert_eq!(r.json["seq"].as_i64(), Some(r.seq()));
        assert_eq!(r.json["event"].as_str(), Some(r.header("x-citygate-event")));
    }
    let accepted: Vec<&Received> = got.iter().filter(|r| r.answered < 300).collect();
    let first = accepted[0];
    assert_eq!(first.json["event"], "raised");
    assert_eq!(first.json["alert"]["sensor"], "wl-a");
    assert_eq!(first.json["alert"]["kind"], "water_level");
    assert_eq!(first.json["alert"]["severity"], "warning");
    assert_eq!(first.json["alert"]["value"], 12.5);
    assert_eq!(first.json["alert"]["tags"]["district"], "qingcheng");
    let events: Vec<(&str, &str)> = accepted
        .iter()
        .map(|r| {
            (
                r.json["event"].as_str().unwrap_or_default(),
                r.json["alert"]["sensor"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("raised", "wl-a"),
            ("raised", "wl-b"),
            ("raised", "wl-c"),
            ("escalated", "wl-a"),
            ("resolved", "wl-b")
        ]
    );

    let outputs = common::wait_alert_output(&api, |o| o["lag"] == 0 && o["delivered"] == 5).await;
    assert_eq!(outputs["name"], "webhook:ops");
    assert_eq!(outputs["state"], "ok");
    assert_eq!(outputs["cursor"].as_i64(), want.last().copied());
    // Only this test's receiver fails with 500 (the recorder is shared by the process).
    let (_, metrics) = api.get_text("/metrics").await;
    assert!(
        metrics.contains(
            r#"citygate_alert_deliveries_total{output="webhook:ops",result="server_error"} 3"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"citygate_alert_output_up{output="webhook:ops"}"#));
    assert!(metrics.contains(r#"citygate_alert_delivery_seconds_count{output="webhook:ops"}"#));
    g.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_becomes_a_dead_letter_and_later_ones_still_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, url) = listener().await;
    let receiver = Receiver {
        refuse_sensor: Some("wl-bad".into()),
        ..Receiver::default()
    };
    receiver.serve(l);
    let g = start(
        dir.path(),
        &config(&["wl-bad", "wl-good"], &url, &secret_file(dir.path())),
    )
    .await;
    let api = Api::new(&g);
    level(&api, "wl-bad", 13.0, 60).await;
    level(&api, "wl-good", 13.0, 60).await;
    let seqs = stored_seqs(g.db_path());
    assert_eq!(seqs.len(), 2);
    let got = receiver.wait_for(&BTreeSet::from([seqs[1]])).await;
    let answers: Vec<(i64, u16)> = got.iter().map(|r| (r.seq(), r.answered)).collect();
    assert_eq!(
        answers,
        [(seqs[0], 400), (seqs[1], 204)],
        "refused once, not retried"
    );

    let out = common::wait_alert_output(&api, |o| o["lag"] == 0 && o["dead_letters"] == 1).await;
    assert_eq!(
        (out["delivered"].as_u64(), out["dead_letters"].as_u64()),
        (Some(1), Some(1))
    );
    let conn = rusqlite::Connection::open(g.db_path()).expect("open db");
    let (source, sensor, detail, raw): (String, String, String, Vec<u8>) = conn
        .query_row(
            "SELECT source, sensor, detail, raw FROM dead_letters WHERE reason = 'webhook_rejected'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("the dead letter");
    assert_eq!(
        (source.as_str(), sensor.as_str()),
        ("webhook:ops", "wl-bad")
    );
    assert!(
        detail.contains("HTTP 400") && detail.contains("unknown station"),
        "{detail}"
    );
    assert_eq!(raw, got[0].body, "the refused body is kept as sent");
    g.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_raised_while_the_receiver_is_down_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port with nobody listening yet; the receiver takes it after the restart.
    let port = common::mosquitto::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let cfg = config(&["wl-r1", "wl-r2"], &url, &secret_file(dir.path()));
    let g = start(dir.path(), &cfg).await;
    let api = Api::new(&g);
    level(&api, "wl-r1", 12.5, 60).await;
    level(&api, "wl-r2", 14.5, 60).await;
    let out = common::wait_alert_output(&api, |o| o["state"] == "down").await;
    assert_eq!(out["state"], "down", "{out}");
    assert_eq!(out["lag"], 2);
    g.shutdown().await.expect("shutdown");

    let receiver = Receiver::default();
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the receiver's port");
    receiver.serve(l);
    let g = start(dir.path(), &cfg).await;
    let want: Vec<i64> = stored_seqs(g.db_path());
    assert_eq!(want.len(), 2);
    let got = receiver.wait_for(&want.iter().copied().collect()).await;
    assert_eq!(first_deliveries(&got), want);
    let severities: Vec<&str> = got
        .iter()
        .map(|r| r.json["alert"]["severity"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(severities, ["warning", "critical"]);
    g.shutdown().await.expect("shutdown");
}
