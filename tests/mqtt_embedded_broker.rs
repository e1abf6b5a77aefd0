//! The embedded broker end to end: the gateway binary runs its own broker on a free port and
//! consumes from it; `mosquitto_pub` publishes to it.

mod common;

use common::gateway_bin::GatewayProcess;
use common::mosquitto::free_port;
use common::publisher::{mosquitto_pub, Msg, Proto};
use common::{count, mqtt_section, reading, wait_for_count, STORE_DEADLINE};

/// The gateway binary with its own broker on a free port, and the `[[mqtt]]` connection to
/// it. (`listen` port 0 would be better, but an `[[mqtt]]` url naming port 0 does not pass
/// config validation under `citygate run`.)
fn start_with_embedded_broker(dir: &std::path::Path) -> (GatewayProcess, u16) {
    let port = free_port();
    let overlay = format!(
        "[broker]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n{}",
        mqtt_section(
            "embedded",
            &format!("mqtt://127.0.0.1:{port}"),
            Proto::V311,
            ""
        )
    );
    (GatewayProcess::start(dir, &overlay, &[]), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_with_mosquitto_pub() {
    common::mosquitto::require_clients();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut gw, port) = start_with_embedded_broker(dir.path());
    gw.wait_ready().await;
    let api = gw.api();
    let status =
        common::wait_for_mqtt_status(&api, "embedded", STORE_DEADLINE, common::is_connected).await;
    assert!(
        common::is_connected(&status),
        "{status}\nlog:\n{}",
        gw.log()
    );

    let ts = common::now_ms() - 600_000;
    let msgs = vec![
        Msg::new(
            "city/qingcheng/water_level/wl-emb",
            format!(r#"{{"ts":{ts},"level":3.75}}"#),
        ),
        Msg::new("city/qingcheng/noise/nz-emb/value/laeq", "61.5"),
        Msg::new(
            "city/qingcheng/air_quality/aq-emb/line",
            format!(
                "air_quality,sensor=aq-emb pm25=35,pm10=80 {}\n",
                ts * 1_000_000
            ),
        ),
    ];
    tokio::task::spawn_blocking(move || mosquitto_pub(port, &msgs))
        .await
        .expect("mosquitto_pub");
    let db = gw.db.clone();
    let n = wait_for_count(&db, "SELECT count(*) FROM readings", 4, STORE_DEADLINE).await;
    assert_eq!(n, 4, "log:\n{}", gw.log());
    assert_eq!(
        reading(&db, "wl-emb", "level"),
        Some((3.75, "water_level".into(), "device".into()))
    );
    assert_eq!(
        reading(&db, "nz-emb", "laeq"),
        Some((61.5, "noise".into(), "received".into()))
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM readings WHERE sensor = 'aq-emb' AND kind = 'air_quality'"
        ),
        2
    );
}

/// rumqttd (patched, vendor/rumqttd) keeps its own copy of a retained message. Unpatched it
/// kept a slice of the connection's 10 KiB read buffer, and so every other message read into
/// that buffer: here each small retained message comes between two large ordinary ones, and
/// the gateway grew by about 8 KiB per retained message. A late subscriber gets them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_does_not_keep_the_messages_read_with_it() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut gw, port) = start_with_embedded_broker(dir.path());
    gw.wait_ready().await;
    let rss_kib = |gw: &GatewayProcess| gw.proc_status_kib("VmRSS").expect("VmRSS");
    let before = rss_kib(&gw);

    const RETAINED: usize = 10_000;
    let mut o = MqttOptions::new("retainer", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 64);
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < 3 * RETAINED {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher connection: {e}"),
            }
        }
    });
    let big = vec![b'x'; 3_000];
    for i in 0..RETAINED {
        for (topic, retain, payload) in [
            (format!("nobody/listens/{i}/a"), false, big.clone()),
            (format!("kept/{i}"), true, format!("r{i}").into_bytes()),
            (format!("nobody/listens/{i}/b"), false, big.clone()),
        ] {
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .expect("queue a publish");
        }
    }
    tokio::time::timeout(STORE_DEADLINE, acks)
        .await
        .expect("every publish acknowledged in time")
        .expect("publisher task");
    let grown_mib = (rss_kib(&gw) as f64 - before as f64) / 1024.0;
    println!("{RETAINED} retained messages among 3 KB ordinary ones: the gateway grew by {grown_mib:.1} MiB");
    // Unpatched this is about 80 MiB; the retained messages themselves are under 1 MiB.
    assert!(
        grown_mib < 30.0,
        "{RETAINED} small retained messages grew the gateway by {grown_mib:.1} MiB"
    );

    // Exact filters, one retained message each: rumqttd 0.20 sends a new subscription at
    // most one read's worth of retained messages (200 here), so a wildcard would not show
    // them all (docs/mqtt-broker.md).
    let mut o = MqttOptions::new("late", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (late, mut late_el) = AsyncClient::new(o, 8);
    let wanted = [0, RETAINED / 2, RETAINED - 1];
    for i in wanted {
        late.subscribe(format!("kept/{i}"), QoS::AtMostOnce)
            .await
            .expect("subscribe");
    }
    let mut got = std::collections::BTreeMap::new();
    let until = Instant::now() + STORE_DEADLINE;
    while got.len() < wanted.len() {
        assert!(
            Instant::now() < until,
            "the late subscriber got only {got:?}"
        );
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_secs(1), late_el.poll()).await
        {
            assert!(p.retain, "{p:?}");
            got.insert(p.topic.clone(), p.payload.to_vec());
        }
    }
    let expected: std::collections::BTreeMap<String, Vec<u8>> = wanted
        .iter()
        .map(|i| (format!("kept/{i}"), format!("r{i}").into_bytes()))
        .collect();
    assert_eq!(got, expected);
}
