//! The harness itself: mosquitto starts with the generated certificates, keeps what it was
//! given across a restart on the same port, and the test publisher gets its PUBACKs.

mod common;

use common::mosquitto::{Mosquitto, MosquittoOptions, TestPki};
use common::publisher::{Proto, Publisher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restarts_with_persistence_and_serves_tls() {
    common::mosquitto::require_clients();
    let pki = TestPki::generate();
    let mut broker = Mosquitto::start_with(MosquittoOptions::default().with_tls(&pki));
    let port = broker.port();
    let mut publisher = Publisher::connect(port, Proto::V311).await;
    publisher.publish("harness/plain", "not retained").await;
    drop(publisher);
    // a retained message is the simplest thing a broker must persist
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
        .args(["-t", "harness/retained", "-m", "kept 42"])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    broker.restart();
    assert_eq!(broker.port(), port);
    let tls_port = broker
        .tls_url()
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let out = std::process::Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &tls_port, "-C", "1", "-W", "10"])
        .arg("--cafile")
        .arg(&pki.ca_file)
        .args(["-t", "harness/retained"])
        .output()
        .expect("mosquitto_sub");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "kept 42",
        "stderr: {}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    let mut publisher = Publisher::connect(port, Proto::V5).await;
    publisher.publish("harness/after", "v5 after restart").await;
}
