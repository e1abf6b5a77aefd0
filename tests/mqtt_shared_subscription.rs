//! Two gateways share `$share/g/city/+/+/+`: together they store every message exactly once,
//! and each gets some.

mod common;

use common::mosquitto::Mosquitto;
use common::publisher::{Proto, Publisher};
use common::{count, start, stream, STORE_DEADLINE};

const N: usize = 1000;

fn section(name: &str, url: &str, proto: Proto) -> String {
    format!(
        r#"
[[mqtt]]
name = "{name}"
url = "{url}"
protocol = "{proto}"
client_id = "citygate-test-{name}"

[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}"
subscribe = "$share/g/city/+/+/+"
format = "json"
"#,
        proto = proto.config_name()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_split_a_shared_subscription() {
    let broker = Mosquitto::start();
    let (da, db_) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = start(da.path(), &section("share-a", &broker.url(), Proto::V5)).await;
    let b = start(db_.path(), &section("share-b", &broker.url(), Proto::V311)).await;
    common::wait_for_mqtt_status(
        &common::Api::new(&a),
        "share-a",
        STORE_DEADLINE,
        common::is_connected,
    )
    .await;
    common::wait_for_mqtt_status(
        &common::Api::new(&b),
        "share-b",
        STORE_DEADLINE,
        common::is_connected,
    )
    .await;

    let mut publisher = Publisher::connect(broker.port(), Proto::V5).await;
    publisher.publish_all(&stream("wq", N, 0)).await;

    let total = |_: ()| {
        count(a.db_path(), "SELECT count(*) FROM readings")
            + count(b.db_path(), "SELECT count(*) FROM readings")
    };
    let until = std::time::Instant::now() + STORE_DEADLINE;
    while total(()) < 2 * N as i64 && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (na, nb) = (
        count(a.db_path(), "SELECT count(*) FROM readings"),
        count(b.db_path(), "SELECT count(*) FROM readings"),
    );
    assert_eq!(
        na + nb,
        2 * N as i64,
        "stored across both gateways ({na} + {nb})"
    );
    assert!(na > 0 && nb > 0, "each gateway got some: {na} + {nb}");
    // no message went to both
    let distinct =
        |db: &std::path::Path| count(db, "SELECT count(DISTINCT sensor || ts) FROM readings");
    assert_eq!(distinct(a.db_path()) + distinct(b.db_path()), N as i64);
}
