//! TLS to mosquitto with a CA and server certificate generated here: the gateway connects
//! over mqtts:// with `tls.ca_file` and data flows; with an unrelated CA it refuses the broker
//! and says why in /health.

mod common;

use common::mosquitto::{Mosquitto, MosquittoOptions, TestPki};
use common::publisher::{Proto, Publisher};
use common::{mqtt_section, start, stream, wait_for_count, STORE_DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_flows_and_a_wrong_ca_is_a_clear_error() {
    let pki = TestPki::generate();
    let broker = Mosquitto::start_with(MosquittoOptions::default().with_tls(&pki));

    let dir = tempfile::tempdir().expect("tempdir");
    let tls = format!(
        "tls = {{ ca_file = {:?} }}",
        pki.ca_file.display().to_string()
    );
    let g = start(
        dir.path(),
        &mqtt_section("tls", &broker.tls_url(), Proto::V5, &tls),
    )
    .await;
    let api = common::Api::new(&g);
    let status =
        common::wait_for_mqtt_status(&api, "tls", STORE_DEADLINE, common::is_connected).await;
    assert!(
        common::is_connected(&status),
        "{status}\nbroker log:\n{}",
        broker.log()
    );
    // published on the plain listener, consumed over TLS
    let mut publisher = Publisher::connect(broker.port(), Proto::V5).await;
    publisher.publish_all(&stream("wq", 20, 0)).await;
    let db = g.db_path().to_path_buf();
    assert_eq!(
        wait_for_count(&db, "SELECT count(*) FROM readings", 40, STORE_DEADLINE).await,
        40
    );

    let dir2 = tempfile::tempdir().expect("tempdir");
    let wrong = format!(
        "tls = {{ ca_file = {:?} }}",
        pki.other_ca_file.display().to_string()
    );
    let g2 = start(
        dir2.path(),
        &mqtt_section("tls-wrong-ca", &broker.tls_url(), Proto::V5, &wrong),
    )
    .await;
    let api2 = common::Api::new(&g2);
    let status = common::wait_for_mqtt_status(&api2, "tls-wrong-ca", STORE_DEADLINE, |s| {
        s["last_error"].is_string()
    })
    .await;
    assert!(!common::is_connected(&status), "{status}");
    let err = status["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        err.contains("certificate"),
        "a clear certificate error: {status}"
    );
}
