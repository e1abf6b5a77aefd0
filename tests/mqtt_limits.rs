//! Limits: an oversize payload is a dead letter, not a reconnect loop; an authentication
//! failure is a clear error in /health, retried with backoff, and the password never shows
//! in the log.

mod common;

use std::time::{Duration, Instant};

use common::gateway_bin::GatewayProcess;
use common::mosquitto::{Mosquitto, MosquittoOptions};
use common::publisher::{Msg, Proto, Publisher};
use common::{
    count, dead_letter_reasons, mqtt_section, start, stream, wait_for_count, STORE_DEADLINE,
};

async fn oversize(proto: Proto) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("oversize-{}", proto.config_name());
    let g = start(
        dir.path(),
        &mqtt_section(&name, &broker.url(), proto, "max_packet_size = 4096"),
    )
    .await;
    let api = common::Api::new(&g);
    common::wait_for_mqtt_status(&api, &name, STORE_DEADLINE, common::is_connected).await;
    let db = g.db_path().to_path_buf();

    let big = format!(
        r#"{{"level":1.5,"note_padding":"{}"}}"#,
        "x".repeat(16 * 1024)
    );
    let mut publisher = Publisher::connect(broker.port(), proto).await;
    publisher
        .publish_all(&[Msg::new("city/d1/water_level/wl-big", big)])
        .await;
    let good = stream("wq", 50, 0);
    publisher.publish_all(&good).await;

    let n = wait_for_count(&db, "SELECT count(*) FROM dead_letters", 1, STORE_DEADLINE).await;
    assert_eq!(n, 1, "the oversize message is one dead letter");
    assert_eq!(
        dead_letter_reasons(&db).into_iter().collect::<Vec<_>>(),
        vec![("payload_too_large".to_string(), 1)]
    );
    let stored = wait_for_count(&db, "SELECT count(*) FROM readings", 100, STORE_DEADLINE).await;
    assert_eq!(stored, 100, "the good messages after it still arrive");
    assert_eq!(
        count(&db, "SELECT count(*) FROM readings WHERE sensor = 'wl-big'"),
        0
    );
    let (_, health) = api.get("/health").await;
    let status = common::mqtt_status(&health, &name)
        .cloned()
        .unwrap_or_default();
    assert!(common::is_connected(&status), "{health}");
    assert_eq!(
        status["reconnects"], 0,
        "no reconnect over an oversize message: {health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_payload_is_a_dead_letter_not_a_reconnect_mqtt5() {
    oversize(Proto::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_payload_is_a_dead_letter_not_a_reconnect_mqtt311() {
    oversize(Proto::V311).await;
}

const SECRET: &str = "wrong-Pa55word-7f3a9c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_is_clear_backs_off_and_hides_the_password() {
    let broker =
        Mosquitto::start_with(MosquittoOptions::default().with_user("citygate", "right-password"));
    let dir = tempfile::tempdir().expect("tempdir");
    let section = mqtt_section(
        "auth",
        &broker.url(),
        Proto::V5,
        "username = \"citygate\"\npassword_env = \"CITYGATE_TEST_MQTT_PASSWORD\"",
    );
    // debug logging: not even a debug line may carry the password
    let mut gw = GatewayProcess::start(
        dir.path(),
        &section,
        &[
            ("CITYGATE_TEST_MQTT_PASSWORD", SECRET),
            ("RUST_LOG", "debug"),
        ],
    );
    gw.wait_ready().await;
    let started = Instant::now();
    let api = gw.api();
    let status = common::wait_for_mqtt_status(&api, "auth", STORE_DEADLINE, |s| {
        s["last_error"].is_string() && s["reconnects"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    assert!(!common::is_connected(&status), "{status}");
    let err = status["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        err.contains("not authorized")
            || err.contains("notauthorized")
            || err.contains("bad user name or password")
            || err.contains("badusernamepassword"),
        "a clear authentication error: {status}"
    );
    // let it retry a while: with backoff it tries a handful of times, not ten a second
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, health) = api.get("/health").await;
    let status = common::mqtt_status(&health, "auth")
        .cloned()
        .unwrap_or_default();
    let attempts = status["reconnects"].as_u64().unwrap_or(0);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(attempts >= 2, "it keeps retrying: {status}");
    assert!(
        (attempts as f64) < elapsed * 3.0,
        "{attempts} attempts in {elapsed:.1} s is no backoff: {status}"
    );
    gw.stop();
    let log = gw.log();
    assert!(!log.is_empty(), "the gateway logged something");
    assert!(!log.contains(SECRET), "the password is in the log:\n{log}");
    assert!(
        !health.to_string().contains(SECRET),
        "the password is in /health"
    );
}
