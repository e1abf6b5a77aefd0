//! mosquitto is restarted mid-stream on the same port with its persistence: every QoS 1
//! message published before and after is stored, exactly once.

mod common;

use common::mosquitto::Mosquitto;
use common::publisher::{Proto, Publisher};
use common::{count, mqtt_section, start, stream, wait_for_count, Api, STORE_DEADLINE};

const N: usize = 2000;
const READINGS: &str = "SELECT count(*) FROM readings";

async fn broker_restart(proto: Proto) {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("restart-{}", proto.config_name());
    let g = start(dir.path(), &mqtt_section(&name, &broker.url(), proto, "")).await;
    let api = Api::new(&g);
    common::wait_for_mqtt_status(&api, &name, STORE_DEADLINE, common::is_connected).await;
    let db = g.db_path().to_path_buf();
    let msgs = stream("wq", N, 0);

    let mut publisher = Publisher::connect(broker.port(), proto).await;
    publisher.publish_all(&msgs[..N / 2]).await;
    // Mid-stream: the gateway has taken some of the first half, maybe not all.
    wait_for_count(&db, READINGS, N as i64 / 4, STORE_DEADLINE).await;
    broker.restart();
    publisher.publish_all(&msgs[N / 2..]).await;

    let n = wait_for_count(&db, READINGS, 2 * N as i64, STORE_DEADLINE).await;
    assert_eq!(
        n,
        2 * N as i64,
        "points stored (2 per message); broker log:\n{}",
        broker.log()
    );
    // every message once: one point per sensor, metric and time
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT DISTINCT sensor, ts FROM readings)"
        ),
        N as i64
    );
    // after the restart the connection came back
    let status =
        common::wait_for_mqtt_status(&api, &name, STORE_DEADLINE, common::is_connected).await;
    assert!(common::is_connected(&status), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_mqtt5() {
    broker_restart(Proto::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_mqtt311() {
    broker_restart(Proto::V311).await;
}
