//! The gateway binary is killed with SIGKILL mid-stream. While it is down the broker keeps
//! the messages for its persistent session; once restarted with the same config and data
//! it gets them all: the stored count is exact.

mod common;

use common::gateway_bin::GatewayProcess;
use common::mosquitto::Mosquitto;
use common::publisher::{Proto, Publisher};
use common::{count, mqtt_section, stream, wait_for_count, STORE_DEADLINE};

const N: usize = 2000;
const READINGS: &str = "SELECT count(*) FROM readings";

/// The gateway binary in `dir` with one `[[mqtt]]` connection `name` to `broker`, started
/// and connected.
async fn start_connected(
    dir: &std::path::Path,
    broker: &Mosquitto,
    name: &str,
    proto: Proto,
) -> GatewayProcess {
    let mut gw = GatewayProcess::start(dir, &mqtt_section(name, &broker.url(), proto, ""), &[]);
    wait_connected(&mut gw, name).await;
    gw
}

/// Waits until the gateway answers and its connection `name` is up (panics with the log).
async fn wait_connected(gw: &mut GatewayProcess, name: &str) {
    gw.wait_ready().await;
    let status =
        common::wait_for_mqtt_status(&gw.api(), name, STORE_DEADLINE, common::is_connected).await;
    assert!(
        common::is_connected(&status),
        "{status}\nlog:\n{}",
        gw.log()
    );
}

async fn gateway_kill(proto: Proto) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("kill-{}", proto.config_name());
    let mut gw = start_connected(dir.path(), &broker, &name, proto).await;
    let api = gw.api();
    let db = gw.db.clone();
    let msgs = stream("wq", N, 0);

    let mut publisher = Publisher::connect(broker.port(), proto).await;
    publisher.publish_all(&msgs[..N / 2]).await;
    wait_for_count(&db, READINGS, N as i64 / 4, STORE_DEADLINE).await;
    gw.kill9();
    let stored_at_kill = count(&db, READINGS);
    // published while the gateway is down: only the broker's session holds them
    publisher.publish_all(&msgs[N / 2..]).await;

    gw.start_again();
    gw.wait_ready().await;
    let n = wait_for_count(&db, READINGS, 2 * N as i64, STORE_DEADLINE).await;
    let (_, health) = api.get("/health").await;
    assert_eq!(
        n,
        2 * N as i64,
        "points stored (2 per message; {stored_at_kill} when killed); dead letters {:?}\n/health: {health}\ngateway log:\n{}\nbroker log:\n{}",
        common::dead_letter_reasons(&db),
        gw.log(),
        broker.log()
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT DISTINCT sensor, ts FROM readings)"
        ),
        N as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_kill9_mid_stream_mqtt5() {
    gateway_kill(Proto::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_kill9_mid_stream_mqtt311() {
    gateway_kill(Proto::V311).await;
}

/// The other side of the kill: a clean stop (SIGTERM) acknowledges everything it stored, so
/// the broker has nothing to send again when the gateway comes back. After the restart a
/// marker is published; the broker resends a session's unacknowledged messages on resume,
/// before anything new, so once the marker is stored the gateway must have received exactly
/// one message. This holds the PUBACKs the 3.1.1 event loop writes itself, and the acks of
/// the last batches before the DISCONNECT.
async fn clean_stop(proto: Proto) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("stop-{}", proto.config_name());
    let mut gw = start_connected(dir.path(), &broker, &name, proto).await;
    let api = gw.api();
    let db = gw.db.clone();
    let mut publisher = Publisher::connect(broker.port(), proto).await;
    publisher.publish_all(&stream("cs", N, 0)).await;
    wait_for_count(&db, READINGS, 2 * N as i64, STORE_DEADLINE).await;
    gw.stop();

    gw.start_again();
    wait_connected(&mut gw, &name).await;
    publisher.publish_all(&stream("marker", 1, 0)).await;
    let n = wait_for_count(&db, READINGS, 2 * N as i64 + 2, STORE_DEADLINE).await;
    assert_eq!(n, 2 * N as i64 + 2, "log:\n{}", gw.log());
    let status = common::wait_for_mqtt_status(&api, &name, STORE_DEADLINE, |_| true).await;
    assert_eq!(
        status["received"],
        1,
        "after a clean stop only the marker comes: {status}\nbroker log:\n{}",
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_nothing_to_redeliver_mqtt311() {
    clean_stop(Proto::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_nothing_to_redeliver_mqtt5() {
    clean_stop(Proto::V5).await;
}
