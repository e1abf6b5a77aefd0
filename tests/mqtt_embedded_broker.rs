//! The embedded broker end to end: the gateway binary runs its own broker on a free port and
//! consumes from it; `mosquitto_pub` publishes to it.

mod common;

use common::gateway_bin::GatewayProcess;
use common::mosquitto::free_port;
use common::publisher::{mosquitto_pub, Msg, Proto};
use common::{count, mqtt_section, reading, wait_for_count, STORE_DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_with_mosquitto_pub() {
    common::mosquitto::require_clients();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let overlay = format!(
        "[broker]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n{}",
        mqtt_section(
            "embedded",
            &format!("mqtt://127.0.0.1:{port}"),
            Proto::V311,
            ""
        )
    );
    let mut gw = GatewayProcess::start(dir.path(), &overlay, &[]);
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
