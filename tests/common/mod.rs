//! Test harness: starts a real gateway (the library's `Gateway`, with its HTTP server on a
//! port-0 listener and its SQLite store in a temporary directory) and talks to it over HTTP.
//! For MQTT: a real mosquitto (`mosquitto`), a QoS 1 publisher (`publisher`), the gateway
//! in-process with an `[[mqtt]]` overlay or as a child process (`gateway_bin`), and store
//! polling helpers.
#![allow(dead_code)]

pub mod gateway_bin;
pub mod influxdb1;
pub mod mosquitto;
pub mod process;
pub mod prometheus;
pub mod publisher;
pub mod sse;
pub mod victoria;
pub mod webdriver;

use std::collections::HashMap;
use std::path::Path;

use citygate::app::Gateway;
use citygate::config::{load_with_env, Source};
use serde_json::Value;

/// Starts a gateway whose data lives in `dir`, with `extra` TOML layered over the defaults.
pub async fn start(dir: &Path, extra: &str) -> Gateway {
    let base = format!(
        "mqtt = []\n[broker]\nenabled = false\n[gateway]\ndata_dir = {:?}\ndeadman_interval = \"1h\"\n[alerts]\nconsole = false\n[alerts.mqtt]\nenabled = false\n",
        dir.display().to_string()
    );
    let sources = [
        Source::Text {
            name: "test base".into(),
            toml: base,
        },
        Source::Text {
            name: "test".into(),
            toml: extra.into(),
        },
    ];
    let config = match load_with_env(&sources, Some(HashMap::new())) {
        Ok(c) => c,
        Err(e) => panic!("test config must load: {e}"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    Gateway::start(config, Some(listener))
        .await
        .expect("gateway starts")
}

/// A plain HTTP client for tests. reqwest is built without a TLS provider of its own (the
/// gateway hands it a ring-backed rustls config), so a default-built client needs a process-wide
/// provider: ring, installed once.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    /// A client for the gateway listening on `addr` (`127.0.0.1:port`).
    pub fn at(addr: impl std::fmt::Display) -> Api {
        Api {
            base: format!("http://{addr}"),
            client: http_client(),
        }
    }

    pub fn new(g: &Gateway) -> Api {
        Api {
            base: format!("http://{}", g.addr()),
            client: http_client(),
        }
    }

    /// POSTs a body and returns the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body read");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answer to {path} is not JSON ({e}): {text}"));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path).await;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request sent");
        (
            resp.status().as_u16(),
            resp.text().await.expect("body read"),
        )
    }
}

pub fn now_ms() -> i64 {
    citygate::app::now_ms()
}

/// An `[[mqtt]]` section named `name` for the broker at `url`, with the default routes of
/// config/citygate.toml (`city/{district}/{kind}/{sensor}` json, `/senml`, `/line`,
/// `/value/{metric}`). `extra` is TOML put inside the section (keys such as `max_packet_size`).
pub fn mqtt_section(name: &str, url: &str, proto: publisher::Proto, extra: &str) -> String {
    format!(
        r#"
[[mqtt]]
name = "{name}"
url = "{url}"
protocol = "{proto}"
client_id = "citygate-test-{name}"
reconnect_min = "100ms"
reconnect_max = "2s"
{extra}

[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}"
format = "json"

[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}/senml"
format = "senml"

[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}/line"
format = "line"

[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}/value/{{metric}}"
format = "value"
"#,
        proto = proto.config_name()
    )
}

/// A count from the store (opened read-only for each call, so the gateway's writer is never
/// blocked for long).
pub fn count(db: &Path, sql: &str) -> i64 {
    let conn = match rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(_) => return 0,
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

/// Polls `sql` until it returns at least `expected` or `deadline` passes; returns the last
/// count. The deadline only guards against a hang: callers assert the exact count.
pub async fn wait_for_count(
    db: &Path,
    sql: &str,
    expected: i64,
    deadline: std::time::Duration,
) -> i64 {
    let until = std::time::Instant::now() + deadline;
    loop {
        let n = count(db, sql);
        if n >= expected || std::time::Instant::now() > until {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A generous failure guard for waits on the store.
pub const STORE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls `/health` until the first alert output's status satisfies `done` (or the store
/// deadline passes, as a guard against a hang); returns its last status.
pub async fn wait_alert_output(api: &Api, done: impl Fn(&Value) -> bool) -> Value {
    let until = std::time::Instant::now() + STORE_DEADLINE;
    loop {
        let (_, h) = api.get("/health").await;
        let o = h["alert_outputs"][0].clone();
        if done(&o) || std::time::Instant::now() > until {
            return o;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits (a failure guard, not a timing check) until `done` holds for the gateway's
/// `/health`, and returns it; panics naming `what` after [`STORE_DEADLINE`].
pub async fn wait_health(api: &Api, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_health_or_explain(api, what, done, String::new).await
}

/// `wait_health`, with `explain()` (a service's log, say) in the message if it times out.
pub async fn wait_health_or_explain(
    api: &Api,
    what: &str,
    done: impl Fn(&Value) -> bool,
    explain: impl Fn() -> String,
) -> Value {
    let until = std::time::Instant::now() + STORE_DEADLINE;
    loop {
        let (_, health) = api.get("/health").await;
        if done(&health) {
            return health;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}: {health}\n{}",
            explain()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Dead letters by reason.
pub fn dead_letter_reasons(db: &Path) -> std::collections::BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// One stored reading's value.
pub fn reading(db: &Path, sensor: &str, metric: &str) -> Option<(f64, String, String)> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.query_row(
        "SELECT value, kind, ts_source FROM readings WHERE sensor = ?1 AND metric = ?2 ORDER BY ts DESC LIMIT 1",
        [sensor, metric],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

/// The `/health` status of the MQTT connection `name`.
pub fn mqtt_status<'a>(health: &'a Value, name: &str) -> Option<&'a Value> {
    match &health["mqtt"] {
        Value::Array(list) => list.iter().find(|c| c["name"] == name),
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

/// Polls `/health` until the MQTT connection `name` satisfies `pred`, or the deadline
/// passes; returns the last status seen (`Null` if none).
pub async fn wait_for_mqtt_status(
    api: &Api,
    name: &str,
    deadline: std::time::Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let until = std::time::Instant::now() + deadline;
    loop {
        let (_, health) = api.get("/health").await;
        let status = mqtt_status(&health, name).cloned().unwrap_or(Value::Null);
        if pred(&status) || std::time::Instant::now() > until {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The connection is up according to its `/health` status.
pub fn is_connected(status: &Value) -> bool {
    status["state"] == "connected" || status["connected"] == true
}

/// `n` water-quality messages, two points each (`ph`, `temperature`), for ten sensors
/// `<prefix>-0..9` on `city/d1/water_quality/<sensor>`; every message has its own time, so
/// each point is distinct and the stored count is exactly `2 n`.
pub fn stream(prefix: &str, n: usize, first: usize) -> Vec<publisher::Msg> {
    let base = now_ms() - 3 * 3_600_000;
    (first..first + n)
        .map(|i| {
            let sensor = format!("{prefix}-{}", i % 10);
            let ts = base + i as i64 * 1000;
            let ph = 7.0 + (i % 7) as f64 * 0.01;
            let temp = 20.0 + (i % 5) as f64 * 0.1;
            publisher::Msg::new(
                format!("city/d1/water_quality/{sensor}"),
                format!(r#"{{"ts":{ts},"ph":{ph:.2},"temperature":{temp:.1}}}"#),
            )
        })
        .collect()
}
