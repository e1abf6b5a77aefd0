//! 10,000 malformed messages mixed with good ones (telegraf#13476 stalled on this): ingestion
//! never stalls, every bad message is a dead letter with its reason (counted exactly per
//! reason), and every good one is stored.

mod common;

use common::mosquitto::Mosquitto;
use common::publisher::{Msg, Proto, Publisher};
use common::{count, dead_letter_reasons, start, stream, wait_for_count, STORE_DEADLINE};

const GOOD: usize = 2000;
const BAD_EACH: usize = 2500;
/// The reason the source gives a message whose topic matches no route.
const NO_ROUTE: &str = "no_route";

/// Two routes, both subscribed through `city/#`, so that a topic matching neither still
/// reaches the gateway.
fn section(url: &str) -> String {
    format!(
        r#"
[[mqtt]]
name = "malformed"
url = "{url}"
client_id = "citygate-test-malformed"

[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}"
subscribe = "city/#"
format = "json"

[[mqtt.routes]]
topic = "city/{{district}}/{{kind}}/{{sensor}}/value/{{metric}}"
subscribe = "city/#"
format = "value"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dead_letters_and_never_stall() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), &section(&broker.url())).await;
    let api = common::Api::new(&g);
    common::wait_for_mqtt_status(&api, "malformed", STORE_DEADLINE, common::is_connected).await;
    let db = g.db_path().to_path_buf();

    let good = stream("wq", GOOD, 0);
    let mut all = Vec::with_capacity(GOOD + 4 * BAD_EACH);
    let mut good_iter = good.into_iter();
    for i in 0..BAD_EACH {
        all.push(Msg::new(
            format!("city/d2/water_quality/bad-json-{}", i % 10),
            format!(r#"{{"ph": 7.{i}"#),
        ));
        all.push(Msg::new(
            format!("city/d2/water_level/bad-value-{}/value/level", i % 10),
            format!("level={i}"),
        ));
        // a topic no route matches (one level too few)
        all.push(Msg::new(
            format!("city/d2/stray{}", i % 10),
            "{\"level\":1}",
        ));
        // readable but impossible: pH above 14
        all.push(Msg::new(
            format!("city/d2/water_quality/bad-ph-{}", i % 10),
            format!(
                r#"{{"ts":{},"ph":17}}"#,
                common::now_ms() - 3_600_000 - i as i64 * 1000
            ),
        ));
        if i % 5 == 4 {
            // 2,000 good ones spread among the 10,000 bad ones
            all.extend(good_iter.by_ref().take(4));
        }
    }
    all.extend(good_iter);
    assert_eq!(all.len(), GOOD + 4 * BAD_EACH);

    let mut publisher = Publisher::connect(broker.port(), Proto::V5).await;
    publisher.publish_all(&all).await;

    let bad_total = 4 * BAD_EACH as i64;
    let n = wait_for_count(
        &db,
        "SELECT count(*) FROM dead_letters",
        bad_total,
        STORE_DEADLINE,
    )
    .await;
    assert_eq!(n, bad_total, "dead letters: {:?}", dead_letter_reasons(&db));
    let stored = wait_for_count(
        &db,
        "SELECT count(*) FROM readings",
        2 * GOOD as i64,
        STORE_DEADLINE,
    )
    .await;
    assert_eq!(stored, 2 * GOOD as i64, "good points stored");

    let reasons = dead_letter_reasons(&db);
    let expected: std::collections::BTreeMap<String, i64> = [
        ("invalid_json", BAD_EACH as i64),
        ("not_a_number", BAD_EACH as i64),
        (NO_ROUTE, BAD_EACH as i64),
        ("out_of_range", BAD_EACH as i64),
    ]
    .into_iter()
    .map(|(r, n)| (r.to_string(), n))
    .collect();
    assert_eq!(reasons, expected);
    // each dead letter keeps the raw payload it was about
    assert_eq!(
        count(&db, "SELECT count(*) FROM dead_letters WHERE raw_len > 0"),
        bad_total
    );
    let stray_topic_kept = count(
        &db,
        &format!("SELECT count(*) FROM dead_letters WHERE reason = '{NO_ROUTE}' AND detail LIKE '%city/d2/stray%'"),
    );
    assert_eq!(
        stray_topic_kept, BAD_EACH as i64,
        "a no-route dead letter names its topic"
    );
    // and the connection never dropped over it
    let (_, health) = api.get("/health").await;
    let status = common::mqtt_status(&health, "malformed")
        .cloned()
        .unwrap_or_default();
    assert_eq!(status["reconnects"], 0, "{health}");
}
