//! End to end over a real mosquitto: a client publishes readings of several kinds in every
//! payload format to routed topics; the stored points (values, kinds, tags from the topic)
//! and the raised alerts are checked. Over MQTT 5 and 3.1.1, with rumqttc, and once with
//! `mosquitto_pub`.

mod common;

use std::collections::BTreeSet;

use common::mosquitto::Mosquitto;
use common::publisher::{mosquitto_pub, Msg, Proto, Publisher};
use common::{count, mqtt_section, now_ms, reading, start, wait_for_count, Api, STORE_DEADLINE};

const SENSORS: &str = r#"
[sensors.wl-bj-01]
kind = "water_level"
rules.level = { above = { warning = 12.0, critical = 14.0 } }
"#;

const MIN: i64 = 60_000;

/// The readings of SENSORS.md examples, one per payload format, and how many points they are.
fn messages(t: i64) -> (Vec<Msg>, i64) {
    let msgs = vec![
        // JSON, flat: NH3-N 1.2 mg/L is above the class II limit
        Msg::new(
            "city/qingxin/water_quality/wq-0042",
            format!(r#"{{"ts":{t},"ph":7.1,"dissolved_oxygen":6.5,"ammonia_nitrogen":1.2}}"#),
        ),
        // JSON, nested, two points; the second is above the warning level
        Msg::new(
            "city/qingcheng/water_level/wl-bj-01",
            format!(
                r#"[{{"ts":{t},"values":{{"level":11.5}}}},{{"ts":{},"values":{{"level":12.5}}}}]"#,
                t + 30 * MIN
            ),
        ),
        // line protocol: 55 %LEL is critical
        Msg::new(
            "city/qingcheng/gas_detector/gd-01/line",
            format!(
                "gas_detector,sensor=gd-01 lel=55,h2s=2i {}\n",
                (t + 10 * MIN) * 1_000_000
            ),
        ),
        // SenML, the sensor from the topic: 60 mm in 3 h is a rainstorm
        Msg::new(
            "city/qingxin/rainfall/rf-01/senml",
            format!(
                r#"[{{"bt":{},"n":"rainfall","u":"mm","v":60}}]"#,
                (t + 5 * MIN) / 1000
            ),
        ),
        // a bare value: phase A at 190 V is below 198 V
        Msg::new(
            "city/qingcheng/electricity_meter/em-01/value/voltage_a",
            "190",
        ),
    ];
    (msgs, 3 + 2 + 2 + 1 + 1)
}

async fn check_stored(g: &citygate::app::Gateway, t: i64, expected_points: i64) {
    let db = g.db_path().to_path_buf();
    let n = wait_for_count(
        &db,
        "SELECT count(*) FROM readings",
        expected_points,
        STORE_DEADLINE,
    )
    .await;
    assert_eq!(n, expected_points, "stored points");
    // exact values and kinds (the kind from the topic's {kind})
    assert_eq!(
        reading(&db, "wq-0042", "ammonia_nitrogen"),
        Some((1.2, "water_quality".into(), "device".into()))
    );
    assert_eq!(
        reading(&db, "wl-bj-01", "level"),
        Some((12.5, "water_level".into(), "device".into()))
    );
    assert_eq!(
        reading(&db, "gd-01", "h2s"),
        Some((2.0, "gas_detector".into(), "device".into()))
    );
    assert_eq!(
        reading(&db, "rf-01", "rainfall"),
        Some((60.0, "rainfall".into(), "device".into()))
    );
    assert_eq!(
        reading(&db, "em-01", "voltage_a"),
        Some((190.0, "electricity_meter".into(), "received".into()))
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM readings WHERE sensor = 'wl-bj-01' AND ts = {}",
                t + 30 * MIN
            )
        ),
        1
    );
    // the {district} placeholder became a tag of the sensor (stored as [key, value] pairs)
    let district = |id: &str| -> Option<String> {
        let conn = rusqlite::Connection::open(&db).expect("open db");
        let text: String = conn
            .query_row("SELECT tags FROM sensors WHERE id = ?1", [id], |r| r.get(0))
            .unwrap_or_else(|e| panic!("sensor {id} is registered: {e}"));
        let pairs: Vec<(String, String)> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("tags of {id} are [key, value] pairs ({e}): {text}"));
        pairs
            .into_iter()
            .find(|(k, _)| k == "district")
            .map(|(_, v)| v)
    };
    assert_eq!(district("wq-0042").as_deref(), Some("qingxin"));
    assert_eq!(district("em-01").as_deref(), Some("qingcheng"));

    let api = Api::new(g);
    let (_, alerts) = api.get("/api/v1/alerts?state=active").await;
    let active: BTreeSet<(String, String, String)> = alerts["alerts"]
        .as_array()
        .expect("alerts array")
        .iter()
        .map(|a| {
            (
                a["sensor"].as_str().unwrap_or_default().to_string(),
                a["rule"].as_str().unwrap_or_default().to_string(),
                a["severity"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for must in [
        ("wq-0042", "ammonia_nitrogen", "warning"),
        ("wl-bj-01", "level", "warning"),
        ("gd-01", "lel", "critical"),
        ("rf-01", "rainstorm_3h", "major"),
        ("em-01", "voltage_a", "warning"),
    ] {
        let must = (must.0.to_string(), must.1.to_string(), must.2.to_string());
        assert!(
            active.contains(&must),
            "missing alert {must:?}; active: {active:?}"
        );
    }
    let _ = t;
}

async fn end_to_end(proto: Proto) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let overlay = format!(
        "{SENSORS}\n{}",
        mqtt_section("e2e", &broker.url(), proto, "")
    );
    let g = start(dir.path(), &overlay).await;
    common::wait_for_mqtt_status(&Api::new(&g), "e2e", STORE_DEADLINE, common::is_connected).await;
    let t = now_ms() - 120 * MIN;
    let (msgs, points) = messages(t);
    let mut publisher = Publisher::connect(broker.port(), proto).await;
    publisher.publish_all(&msgs).await;
    check_stored(&g, t, points).await;
    assert_eq!(count(g.db_path(), "SELECT count(*) FROM dead_letters"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_mqtt5() {
    end_to_end(Proto::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_mqtt311() {
    end_to_end(Proto::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_with_mosquitto_pub() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let overlay = format!(
        "{SENSORS}\n{}",
        mqtt_section("e2e-pub", &broker.url(), Proto::V5, "")
    );
    let g = start(dir.path(), &overlay).await;
    common::wait_for_mqtt_status(
        &Api::new(&g),
        "e2e-pub",
        STORE_DEADLINE,
        common::is_connected,
    )
    .await;
    let t = now_ms() - 120 * MIN;
    let (msgs, points) = messages(t);
    let port = broker.port();
    tokio::task::spawn_blocking(move || mosquitto_pub(port, &msgs))
        .await
        .expect("mosquitto_pub");
    check_stored(&g, t, points).await;
}

/// An MQTT 5 user property `ts` stamps a payload that carries no time of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_user_property_ts_is_the_device_time() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let overlay = mqtt_section("ts-prop", &broker.url(), Proto::V5, "");
    let g = start(dir.path(), &overlay).await;
    common::wait_for_mqtt_status(
        &Api::new(&g),
        "ts-prop",
        STORE_DEADLINE,
        common::is_connected,
    )
    .await;
    let ts = now_ms() - 42 * MIN;
    let mut publisher = Publisher::connect(broker.port(), Proto::V5).await;
    publisher
        .publish_all(&[
            Msg::new("city/d1/water_level/wl-prop", r#"{"level":3.25}"#)
                .with_property("ts", &ts.to_string()),
            // without the property: the receive time
            Msg::new("city/d1/water_level/wl-noprop", r#"{"level":4.5}"#),
        ])
        .await;
    let db = g.db_path().to_path_buf();
    assert_eq!(
        wait_for_count(&db, "SELECT count(*) FROM readings", 2, STORE_DEADLINE).await,
        2
    );
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM readings WHERE sensor = 'wl-prop' AND ts = {ts} AND ts_source = 'device' AND value = 3.25")),
        1
    );
    assert_eq!(
        reading(&db, "wl-noprop", "level"),
        Some((4.5, "water_level".into(), "received".into()))
    );
}
