//! The real binary: SIGTERM mid-stream is a clean, bounded stop that loses and doubles
//! nothing; secrets given by env or file appear nowhere it writes or answers; `check-config`
//! warns about open listeners and world-readable secrets.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::gateway_bin::GatewayProcess;
use common::mosquitto::{Mosquitto, MosquittoOptions};
use common::publisher::{Proto, Publisher};
use common::{count, mqtt_section, stream, wait_for_count, STORE_DEADLINE};

const N: usize = 2000;
const READINGS: &str = "SELECT count(*) FROM readings";
/// gateway.shutdown_timeout in the test config; the exit is awaited this long plus slack.
const BOUND_S: u64 = 10;

/// What an HTTP ingest got while the gateway was stopping.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum During {
    Ok200,
    Refused503,
    /// The listener was closed (the connection refused), or the stopping server closed the
    /// connection before it read the request.
    NotListening,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_stops_in_bounded_time_and_loses_nothing() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let overlay = format!(
        "[gateway]\nshutdown_timeout = \"{BOUND_S}s\"\n{}",
        mqtt_section("term", &broker.url(), Proto::V311, "")
    );
    let mut gw = GatewayProcess::start(dir.path(), &overlay, &[]);
    gw.wait_ready().await;
    let api = gw.api();
    let status =
        common::wait_for_mqtt_status(&api, "term", STORE_DEADLINE, common::is_connected).await;
    assert!(common::is_connected(&status), "{status}\n{}", gw.log());
    let db = gw.db.clone();
    let msgs = stream("term", N, 0);
    let mut publisher = Publisher::connect(broker.port(), Proto::V311).await;
    publisher.publish_all(&msgs[..N / 2]).await;
    wait_for_count(&db, READINGS, N as i64 / 4, STORE_DEADLINE).await;

    // SIGTERM while the first half is still being taken, with HTTP ingest going on.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(BOUND_S + 20))
        .build()
        .expect("client");
    let url = format!("{}/api/v1/ingest", api.base);
    let stopped_at = Instant::now();
    gw.sigterm();
    let mut during = Vec::new();
    let t0 = common::now_ms() - 600_000;
    for i in 0..200 {
        let body = format!(
            r#"[{{"sensor":"http-term","kind":"water_level","ts":{},"level":1.0}}]"#,
            t0 + i
        );
        match client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 200 => during.push(During::Ok200),
            Ok(r) if r.status().as_u16() == 503 => {
                let answer: serde_json::Value = r.json().await.expect("JSON");
                assert_eq!(answer["reason"], "shutting_down", "{answer}");
                during.push(During::Refused503);
            }
            Ok(r) => panic!("ingest during shutdown got {}", r.status()),
            Err(e) if e.is_connect() => {
                during.push(During::NotListening);
                break;
            }
            // A connection the stopping server closed before it read the request (one still
            // in the listener's backlog, or one accepted just as the stop came) ends without
            // an answer: "not listening" too. Nothing it sent may then be stored, which the
            // count below holds. A hang (a timeout) is never acceptable.
            Err(e) if !e.is_timeout() => {
                during.push(During::NotListening);
                break;
            }
            Err(e) => panic!("ingest during shutdown hung: {e:?}"),
        }
    }
    // Published while the gateway stops and is down: the broker's session keeps them.
    publisher.publish_all(&msgs[N / 2..]).await;
    let exit = gw
        .wait_exit(Duration::from_secs(BOUND_S + 20))
        .await
        .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", gw.log()));
    let took = stopped_at.elapsed();
    assert!(exit.success(), "exit {exit:?}; log:\n{}", gw.log());
    assert!(gw.log().contains("stopped cleanly"), "log:\n{}", gw.log());
    assert!(!during.is_empty());
    eprintln!(
        "stopped in {took:?}; HTTP ingest during the stop: {} ok, {} 503, then {}",
        during.iter().filter(|d| **d == During::Ok200).count(),
        during.iter().filter(|d| **d == During::Refused503).count(),
        if during.last() == Some(&During::NotListening) {
            "closed"
        } else {
            "still open"
        }
    );
    let http_ok = during.iter().filter(|d| **d == During::Ok200).count() as i64;
    let stored_at_stop = count(&db, READINGS);

    gw.start_again();
    gw.wait_ready().await;
    let want = 2 * N as i64 + http_ok;
    let n = wait_for_count(&db, READINGS, want, STORE_DEADLINE).await;
    assert_eq!(
        n,
        want,
        "{stored_at_stop} stored at the stop; dead letters {:?}\nlog:\n{}",
        common::dead_letter_reasons(&db),
        gw.log()
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT DISTINCT sensor, metric, ts FROM readings WHERE sensor LIKE 'term-%')"
        ),
        2 * N as i64,
        "every published reading exactly once"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM readings WHERE sensor = 'http-term'"
        ),
        http_ok,
        "every HTTP ingest answered 200 is stored, and only those"
    );
    gw.stop();
}

const API_TOKEN: &str = "api-tok-6b1f0c2e9d";
const MQTT_PASSWORD: &str = "mqtt-pw-41d7aa03c5";
const WEBHOOK_SECRET: &str = "hook-sec-9e2b57f1a0";
const INFLUX_TOKEN: &str = "influx-tok-c83f16d24b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_nowhere_in_output_answers_or_log() {
    let broker = Mosquitto::start_with(MosquittoOptions::default().with_user("gw", MQTT_PASSWORD));
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("influx-token");
    std::fs::write(&token_file, format!("{INFLUX_TOKEN}\n")).expect("write");
    let overlay = format!(
        r#"
[http.auth]
token_env = "CG_TEST_API_TOKEN"
protect_reads = true

[[alerts.webhooks]]
name = "ops"
url = "http://127.0.0.1:9/hook"
secret_env = "CG_TEST_WEBHOOK_SECRET"
retry_min = "100ms"

[[sinks.influxdb]]
name = "tsdb"
url = "http://127.0.0.1:9"
org = "city"
bucket = "readings"
token_file = {:?}
retry_min = "100ms"
{}"#,
        token_file.display().to_string(),
        mqtt_section(
            "secret",
            &broker.url(),
            Proto::V311,
            "username = \"gw\"\npassword_env = \"CG_TEST_MQTT_PASSWORD\""
        )
    );
    let env = [
        ("CG_TEST_API_TOKEN", API_TOKEN),
        ("CG_TEST_MQTT_PASSWORD", MQTT_PASSWORD),
        ("CG_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET),
        // As verbose as it gets: a secret in any debug line shows up.
        ("RUST_LOG", "debug"),
    ];
    let mut gw = GatewayProcess::start(dir.path(), &overlay, &env);
    gw.wait_ready().await;
    let api = gw.api();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", api.base))
            .bearer_auth(API_TOKEN)
            .send()
    };
    // Connected with the password: the MQTT source is up.
    let until = Instant::now() + STORE_DEADLINE;
    let health = loop {
        let h: serde_json::Value = get("/health")
            .await
            .expect("health")
            .json()
            .await
            .expect("JSON");
        if common::mqtt_status(&h, "secret").is_some_and(common::is_connected) {
            break h;
        }
        assert!(Instant::now() < until, "not connected: {h}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A reading and an alert go to the failing sink and webhook, so their error paths log.
    let t = common::now_ms() - 60_000;
    let r = client
        .post(format!("{}/api/v1/ingest", api.base))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(format!(
            r#"[{{"sensor":"wl-sec-1","kind":"water_level","ts":{t},"level":1.0}}]"#
        ))
        .send()
        .await
        .expect("ingest");
    assert_eq!(r.status().as_u16(), 200);
    let wrong = client
        .get(format!("{}/api/v1/sensors", api.base))
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("wrong token");
    assert_eq!(wrong.status().as_u16(), 403);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let health = format!(
        "{health}\n{}",
        get("/health")
            .await
            .expect("health")
            .text()
            .await
            .expect("text")
    );
    let metrics = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("citygate_"), "{metrics}");

    let files = gw.config_files().map(|p| p.to_path_buf());
    let check = Command::new(env!("CARGO_BIN_EXE_citygate"))
        .arg("check-config")
        .args(files.iter().flat_map(|f| ["-c".as_ref(), f.as_os_str()]))
        .envs(env)
        .output()
        .expect("check-config runs");
    assert!(check.status.success(), "{check:?}");
    let check = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    gw.stop();
    let log = gw.log();
    assert!(
        log.contains("DEBUG"),
        "the run logged at debug level:\n{log}"
    );
    for (what, text) in [
        ("check-config", &check),
        ("/health", &health),
        ("/metrics", &metrics),
        ("the log", &log),
    ] {
        for secret in [API_TOKEN, MQTT_PASSWORD, WEBHOOK_SECRET, INFLUX_TOKEN] {
            assert!(
                !text.contains(secret),
                "{what} shows the secret {secret}:\n{text}"
            );
        }
    }
}

fn check_config(files: &[&std::path::Path]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_citygate"))
        .arg("check-config")
        .args(files.iter().flat_map(|f| ["-c".as_ref(), f.as_os_str()]))
        .output()
        .expect("check-config runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(unix)]
#[test]
fn check_config_warns_about_a_world_readable_config_with_a_secret() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("citygate.toml");
    std::fs::write(
        &conf,
        "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://ops:hunter2pw@hooks.example.org/a\"\nsecret_env = \"S\"\n",
    )
    .expect("write");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = check_config(&[&conf]);
    assert!(out.starts_with("configuration OK"), "{out}");
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning: SECURITY") && l.contains("readable by every user"))
        .unwrap_or_else(|| panic!("no warning:\n{out}"));
    assert!(warning.contains(&conf.display().to_string()), "{warning}");
    assert!(!out.contains("hunter2pw"), "{out}");

    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = check_config(&[&conf]);
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn check_config_warns_about_open_listeners_without_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("open.toml");
    std::fs::write(
        &conf,
        "[http]\nlisten = \"0.0.0.0:8080\"\n[broker]\nlisten = \"0.0.0.0:1883\"\n",
    )
    .expect("write");
    let out = check_config(&[&conf]);
    assert!(
        out.contains("warning: SECURITY: http.listen = 0.0.0.0:8080")
            && out.contains("no API token"),
        "{out}"
    );
    assert!(
        out.contains("warning: SECURITY: broker.listen = 0.0.0.0:1883"),
        "{out}"
    );
    // The built-in defaults: loopback, no warning.
    let out = check_config(&[]);
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn a_secret_pasted_where_its_variable_name_belongs_is_a_config_error_that_does_not_repeat_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("pasted.toml");
    std::fs::write(
        &conf,
        "[[mqtt]]\nname = \"field\"\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"gw\"\npassword_env = \"p@ss w0rd!Zq9\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_citygate"))
        .arg("check-config")
        .args(["-c".as_ref(), conf.as_os_str()])
        .output()
        .expect("check-config runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("mqtt[0].password_env: must be the name of an environment variable"),
        "{text}"
    );
    assert!(!text.contains("w0rd"), "{text}");
}
