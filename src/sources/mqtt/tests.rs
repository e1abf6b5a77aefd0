//! `check_config` cases, and a smoke test against a real mosquitto (skipped when it is not
//! installed; the thorough broker tests live in tests/).

use std::collections::{BTreeSet, HashMap};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::check_config;
use super::config::MqttConfig;
use crate::app::{now_ms, Gateway};
use crate::config::{load_with_env, Source};
use crate::model::TsSource;
use crate::sinks::sqlite::{DeadLetterQuery, Order, ReadingQuery};

fn mqtt(extra: serde_json::Value) -> MqttConfig {
    let mut v = serde_json::json!({ "name": "m", "url": "mqtt://127.0.0.1:1883" });
    if let (Some(base), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            base.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).expect("valid MqttConfig")
}

fn problems(configs: Vec<MqttConfig>) -> Vec<String> {
    let kinds: BTreeSet<String> = ["noise".to_string(), "water_level".to_string()].into();
    let indexed: Vec<(usize, MqttConfig)> = configs.into_iter().enumerate().collect();
    check_config(&indexed, &kinds)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_sound_connection_has_no_problems() {
    let m = mqtt(serde_json::json!({
        "username": "gw",
        "password_env": "PW",
        "routes": [
            { "topic": "city/{district}/{kind}/{sensor}" },
            { "topic": "city/{district}/{kind}/{sensor}/value/{metric}", "format": "value" },
            { "topic": "plant/{sensor}", "kind": "noise", "subscribe": "$share/gw/plant/+" },
        ],
    }));
    assert_eq!(problems(vec![m]), Vec::<String>::new());
}

#[test]
fn tls_needs_mqtts_and_names_are_unique() {
    let a = mqtt(serde_json::json!({ "tls": { "insecure": true } }));
    let b = mqtt(serde_json::json!({ "url": "mqtts://h:8883", "tls": { "insecure": true } }));
    assert_eq!(
        problems(vec![a, b]),
        vec![
            "mqtt[0].tls: is set but the url is mqtt:// (use mqtts:// for TLS)",
            "mqtt[1].name: \"m\" is already the name of mqtt[0]",
        ]
    );
}

#[test]
fn value_routes_need_sensor_and_metric() {
    let m = mqtt(serde_json::json!({
        "routes": [{ "topic": "x/{sensor}/level", "format": "value", "kind": "water_level" }],
    }));
    assert_eq!(
        problems(vec![m]),
        vec!["mqtt[0].routes[0].topic: a value route needs {sensor} and {metric} placeholders (a bare number names neither)"]
    );
}

// --- smoke test against mosquitto -----------------------------------------------------------

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

struct Broker {
    child: Child,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto(dir: &Path) -> Option<Broker> {
    start_mosquitto_with(dir, "allow_anonymous true\n")
}

fn start_mosquitto_with(dir: &Path, extra_conf: &str) -> Option<Broker> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("mosquitto is not installed; skipping");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\npersistence false\n{extra_conf}"),
    )
    .expect("write mosquitto.conf");
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto");
    let broker = Broker { child, port };
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(broker);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mosquitto did not listen on {port}");
}

fn publish(port: u16, v5: bool, topic: &str, payload: &str, user_ts: Option<i64>) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        payload,
    ]);
    if v5 {
        cmd.args(["-V", "mqttv5"]);
        if let Some(ts) = user_ts {
            cmd.args(["-D", "publish", "user-property", "ts", &ts.to_string()]);
        }
    }
    let status = cmd.status().expect("run mosquitto_pub");
    assert!(status.success(), "mosquitto_pub failed");
}

async fn gateway(dir: &Path, port: u16, protocol: &str) -> Gateway {
    gateway_with(dir, &format!("mqtt://127.0.0.1:{port}"), protocol, "").await
}

/// `extra` goes into the `[[mqtt]]` table.
async fn gateway_with(dir: &Path, url: &str, protocol: &str, extra: &str) -> Gateway {
    let toml = format!(
        r#"
[broker]
enabled = false
[gateway]
data_dir = {dir:?}
deadman_interval = "1h"
[alerts]
console = false
[[mqtt]]
name = "smoke"
url = "{url}"
protocol = "{protocol}"
client_id = "citygate-smoke-{protocol}"
reconnect_min = "100ms"
reconnect_max = "1s"
max_packet_size = 1024
{extra}
[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}"
format = "json"
subscribe = "city/#"
[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}/value/{{metric}}"
format = "value"
subscribe = "city/#"
"#,
        dir = dir.display().to_string()
    );
    let config = load_with_env(
        &[Source::Text {
            name: "smoke".into(),
            toml,
        }],
        Some(HashMap::new()),
    )
    .unwrap_or_else(|e| panic!("config: {e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    Gateway::start(config, Some(listener))
        .await
        .expect("gateway starts")
}

/// Polls `done` for up to 20 s.
async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    assert!(wait_until(done).await, "timed out waiting for {what}");
}

async fn smoke(protocol: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(broker) = start_mosquitto(dir.path()) else {
        return;
    };
    let g = gateway(dir.path(), broker.port, protocol).await;
    wait_for("the connection", || {
        g.mqtt_status().first().is_some_and(|s| s.connected)
    })
    .await;
    // Subscriptions go out right after the ConnAck; give the SUBACK a moment by publishing
    // until the first message lands.
    let v5 = protocol == "v5";
    let reader = g.reader();
    let ts = now_ms() - 60_000;
    publish(
        broker.port,
        v5,
        "city/east/water_level/wl-1/value/level",
        "1.25",
        Some(ts),
    );
    wait_for("the first reading", || {
        reader.counts().map(|c| c.readings).unwrap_or(0) >= 1
    })
    .await;
    publish(
        broker.port,
        v5,
        "city/east/water_level/wl-2",
        r#"{"level": 2.5}"#,
        None,
    );
    publish(
        broker.port,
        v5,
        "city/east/water_level/wl-3",
        "{broken",
        None,
    );
    // Received (the subscription is wider than the patterns) but matching no route.
    publish(broker.port, v5, "city/east", "1", None);
    publish(
        broker.port,
        v5,
        "city/east/water_level/wl-4",
        &"9".repeat(2000),
        None,
    );
    let settled = wait_until(|| {
        reader
            .counts()
            .map(|c| c.readings == 2 && c.dead_letters == 3)
            .unwrap_or(false)
    })
    .await;
    assert!(
        settled,
        "not everything stored: {:?}, dead letters {:?}, status {:?}",
        reader.counts(),
        reader.dead_letters(&DeadLetterQuery::default()),
        g.mqtt_status()
    );

    let rows = reader
        .readings(&ReadingQuery {
            order: Order::default(),
            ..ReadingQuery::default()
        })
        .expect("readings");
    let mut got: Vec<(String, String, f64)> = rows
        .iter()
        .map(|r| (r.sensor.to_string(), r.metric.to_string(), r.value))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("wl-1".to_string(), "level".to_string(), 1.25),
            ("wl-2".to_string(), "level".to_string(), 2.5)
        ]
    );
    let wl1 = rows.iter().find(|r| r.sensor == "wl-1").expect("wl-1");
    if v5 {
        // The user property `ts` stamped the bare value.
        assert_eq!((wl1.ts, wl1.ts_source), (ts, TsSource::Device));
    } else {
        assert_eq!(wl1.ts_source, TsSource::Received);
    }
    let mut reasons: Vec<String> = reader
        .dead_letters(&DeadLetterQuery::default())
        .expect("dead letters")
        .into_iter()
        .map(|d| d.reason)
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec!["invalid_json", "no_route", "payload_too_large"]
    );

    // Every message is acked once its batch is committed.
    wait_for("all acks", || {
        g.mqtt_status().first().is_some_and(|s| s.acked == 5)
    })
    .await;
    let s = &g.mqtt_status()[0];
    assert_eq!((s.received, s.dead_lettered, s.no_route), (5, 3, 1));
    g.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_v5_against_mosquitto() {
    smoke("v5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_v311_against_mosquitto() {
    smoke("v311").await;
}

async fn auth_failure(protocol: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let passwd = dir.path().join("passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["gw", "right"])
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mosquitto_passwd is not available; skipping");
        return;
    }
    let conf = format!(
        "allow_anonymous false\npassword_file {}\n",
        passwd.display()
    );
    let Some(broker) = start_mosquitto_with(dir.path(), &conf) else {
        return;
    };
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong\n").expect("write pw");
    let extra = format!(
        "username = \"gw\"\npassword_file = {:?}\n",
        pw.display().to_string()
    );
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let g = gateway_with(dir.path(), &url, protocol, &extra).await;
    assert!(
        wait_until(|| g.mqtt_status()[0].reconnects >= 3).await,
        "no retries: {:?}",
        g.mqtt_status()
    );
    let s = &g.mqtt_status()[0];
    assert!(!s.connected);
    // mosquitto answers "not authorized" to 3.1.1 clients and "bad user name or password"
    // to MQTT 5 clients.
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("connection refused by the broker: not authorized")),
        "{s:?}"
    );
    g.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_is_clear_and_retried_v5() {
    auth_failure("v5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_is_clear_and_retried_v311() {
    auth_failure("v311").await;
}

/// Makes a CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA.
fn make_certs(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let _ = std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]) && run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-days",
        "2",
        "-subj",
        "/CN=other-ca",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_connects_and_a_wrong_ca_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    if !make_certs(d) {
        eprintln!("openssl is not available; skipping");
        return;
    }
    // mosquitto started as root drops to its own user, which must be able to read these.
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [(d.to_path_buf(), 0o755), (d.join("server.key"), 0o644)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let conf = format!(
        "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
        d.join("ca.pem").display(),
        d.join("server.pem").display(),
        d.join("server.key").display()
    );
    let Some(broker) = start_mosquitto_with(d, &conf) else {
        return;
    };
    let url = format!("mqtts://127.0.0.1:{}", broker.port);

    let good = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "[mqtt.tls]\nca_file = {:?}\n",
        d.join("ca.pem").display().to_string()
    );
    let g = gateway_with(good.path(), &url, "v5", &extra).await;
    wait_for("the TLS connection", || g.mqtt_status()[0].connected).await;
    g.shutdown().await.expect("shutdown");

    let bad = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "[mqtt.tls]\nca_file = {:?}\n",
        d.join("other.pem").display().to_string()
    );
    let g = gateway_with(bad.path(), &url, "v311", &extra).await;
    wait_for("a TLS failure", || g.mqtt_status()[0].reconnects >= 1).await;
    let s = &g.mqtt_status()[0];
    assert!(!s.connected);
    assert_eq!(
        s.last_error.as_deref(),
        Some("TLS: invalid peer certificate: UnknownIssuer"),
        "{s:?}"
    );
    g.shutdown().await.expect("shutdown");
}
