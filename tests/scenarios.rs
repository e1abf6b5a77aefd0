//! Every `citygate-sim scenario` against a real gateway loaded with config/examples/city.toml:
//! the scenario is published over MQTT to the embedded broker, and the alerts the gateway
//! stores must be exactly the ones the scenario documents (`Scenario::expected_alerts`:
//! sensor, rule, metric, highest severity, final state), no more and no fewer, and so must the
//! dead letters by reason (`Scenario::expected_dead_letters`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use citygate::app::Gateway;
use citygate::config::{load_with_env, Source};
use citygate_sim::publish::{MqttTarget, Publisher};
use citygate_sim::scenario::{self, Pace, Scenario};
use common::mosquitto::free_port;
use common::publisher::Proto;
use common::{mqtt_section, wait_for_count, Api, STORE_DEADLINE};

const MARKER: &str = "zz-end-of-scenario";

fn city_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/city.toml")
}

struct City {
    gateway: Gateway,
    port: u16,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

/// A gateway running city.toml, with its embedded broker on a free port, its store in a
/// temporary directory, no Modbus devices (no device simulator runs here), the deadman
/// checking every `deadman_interval`, and `extra` on top.
async fn start_city(deadman_interval: &str, extra: &str) -> City {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let overlay = format!(
        "[gateway]\ndata_dir = {data:?}\ndeadman_interval = {deadman_interval:?}\n\
         [alerts]\nconsole = false\n[alerts.mqtt]\nenabled = false\n\
         [broker]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
         [modbus]\ndevices = []\n{mqtt}\n{extra}",
        data = dir.path().display().to_string(),
        mqtt = mqtt_section(
            "embedded",
            &format!("mqtt://127.0.0.1:{port}"),
            Proto::V311,
            ""
        ),
    );
    let sources = [
        Source::File(city_toml()),
        Source::Text {
            name: "scenario test".into(),
            toml: overlay,
        },
    ];
    let config = match load_with_env(&sources, Some(Default::default())) {
        Ok(c) => c,
        Err(e) => panic!("city.toml with the test overlay must load: {e}"),
    };
    assert!(
        config.modbus.devices.is_empty(),
        "the overlay removes the Modbus devices"
    );
    let db = config.sqlite_path();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let gateway = Gateway::start(config, Some(listener))
        .await
        .expect("gateway starts");
    let api = Api::new(&gateway);
    let status =
        common::wait_for_mqtt_status(&api, "embedded", STORE_DEADLINE, common::is_connected).await;
    assert!(
        common::is_connected(&status),
        "gateway not subscribed: {status}"
    );
    City {
        gateway,
        port,
        db,
        _dir: dir,
    }
}

/// Plays the scenario as fast as the broker takes it, then a marker reading on each route's
/// topic on the same connection, and waits until every marker is stored. MQTT keeps order per
/// topic only, and the embedded broker keeps one log per subscription filter, so one marker
/// on the JSON route says nothing about the SenML or line-protocol readings before it: each
/// route gets its own.
async fn play(city: &City, s: Scenario) {
    let script = s.script(
        "city",
        scenario::start_for(s, Pace::Unpaced, common::now_ms()),
    );
    let mut publisher = Publisher::connect(&MqttTarget {
        url: format!("mqtt://127.0.0.1:{}", city.port),
        username: None,
        password: None,
        qos: 1,
        client_id: format!("scenario-{}", s.name()),
    })
    .expect("publisher");
    scenario::play(&script, &mut publisher, Pace::Unpaced, STORE_DEADLINE)
        .await
        .expect("the broker takes the script");
    let now = common::now_ms();
    let markers = [
        (
            format!("city/test/noise/{MARKER}-json"),
            format!(r#"{{"ts":{now},"laeq":45.5}}"#),
        ),
        (
            format!("city/test/noise/{MARKER}-senml/senml"),
            r#"[{"n":"laeq","v":45.5}]"#.to_string(),
        ),
        (
            format!("city/test/noise/{MARKER}-line/line"),
            "noise laeq=45.5".to_string(),
        ),
        (
            format!("city/test/noise/{MARKER}-value/value/laeq"),
            "45.5".to_string(),
        ),
    ];
    let expected = markers.len() as i64;
    for (topic, payload) in markers {
        publisher.publish(topic, payload).await.expect("marker");
    }
    publisher.close(STORE_DEADLINE).await.expect("acknowledged");
    let sql = format!("SELECT count(DISTINCT sensor) FROM readings WHERE sensor LIKE '{MARKER}-%'");
    let n = wait_for_count(&city.db, &sql, expected, STORE_DEADLINE).await;
    assert_eq!(
        n, expected,
        "a marker after the script on every route is stored"
    );
}

type AlertKey = (String, String, String, String, String);

/// Every stored alert as (sensor, rule, metric, highest severity reached, state). The
/// highest severity comes from the alert's events (an alert that de-escalated before it
/// resolved is stored with its last severity).
fn stored_alerts(db: &Path) -> Vec<AlertKey> {
    let conn = rusqlite::Connection::open(db).expect("open store");
    let rank = |s: &str| {
        ["info", "warning", "major", "critical"]
            .iter()
            .position(|x| *x == s)
    };
    let mut highest: BTreeMap<String, String> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT alert_id, alert FROM alert_events")
        .expect("events query");
    let events = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("events");
    for e in events {
        let (id, alert) = e.expect("event row");
        let alert: serde_json::Value = serde_json::from_str(&alert).expect("event JSON");
        let sev = alert["severity"].as_str().unwrap_or("").to_string();
        let slot = highest.entry(id).or_default();
        if rank(&sev) > rank(slot) {
            *slot = sev;
        }
    }
    let mut stmt = conn
        .prepare("SELECT id, sensor, rule, metric, severity, state FROM alerts")
        .expect("alerts query");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .expect("alerts");
    let mut out: Vec<AlertKey> = rows
        .map(|r| {
            let (id, sensor, rule, metric, severity, state) = r.expect("alert row");
            let top = highest.get(&id).cloned().unwrap_or(severity);
            (sensor, rule, metric, top, state)
        })
        .collect();
    out.sort();
    out
}

fn expected_alerts(s: Scenario) -> Vec<AlertKey> {
    let mut v: Vec<AlertKey> = s
        .expected_alerts()
        .iter()
        .map(|a| {
            (
                a.sensor.to_string(),
                a.rule.to_string(),
                a.metric.to_string(),
                a.severity.as_str().to_string(),
                a.final_state.as_str().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn expected_dead_letters(s: Scenario) -> BTreeMap<String, i64> {
    s.expected_dead_letters()
        .iter()
        .map(|d| (d.reason.to_string(), i64::from(d.count)))
        .collect()
}

async fn check(s: Scenario, extra: &str) {
    let city = start_city("1h", extra).await;
    play(&city, s).await;
    assert_eq!(stored_alerts(&city.db), expected_alerts(s), "{}", s.name());
    assert_eq!(
        common::dead_letter_reasons(&city.db),
        expected_dead_letters(s),
        "{}",
        s.name()
    );
    city.gateway.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood() {
    check(Scenario::Flood, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollution() {
    check(Scenario::Pollution, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gas_leak() {
    check(Scenario::GasLeak, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_tamper() {
    check(Scenario::MeterTamper, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_devices() {
    check(Scenario::BadDevices, "").await;
}

/// The deadman runs on the wall clock: the district's sensors get a short `offline_after`
/// and the deadman checks every 200 ms, and the test waits until each has gone offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackout() {
    let s = Scenario::Blackout;
    let mut extra = String::new();
    // Configured sensors' deadman clocks start with the gateway, so `offline_after` must
    // outlast the time to the scenario's first reading, or a sensor would go offline (and come
    // back) before the blackout: an extra alert. 15 s leaves a loaded CI machine room.
    for id in s.sensors() {
        extra.push_str(&format!("[sensors.{id}]\noffline_after = \"15s\"\n"));
    }
    let city = start_city("200ms", &extra).await;
    play(&city, s).await;
    let expected = s.expected_alerts().len() as i64;
    let n = wait_for_count(
        &city.db,
        "SELECT count(*) FROM alerts WHERE rule = 'offline'",
        expected,
        STORE_DEADLINE,
    )
    .await;
    assert_eq!(n, expected, "each silent sensor goes offline");
    assert_eq!(stored_alerts(&city.db), expected_alerts(s));
    assert_eq!(
        common::dead_letter_reasons(&city.db),
        expected_dead_letters(s)
    );
    city.gateway.shutdown().await.expect("shutdown");
}

/// The fleet's own SenML and line-protocol encoders against the gateway's decoders, through
/// MQTT: one tick of the city's fleet, each report in JSON, SenML or line protocol in turn,
/// and every stored reading has exactly the value, time and kind the simulator wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_formats_decode_to_the_values_the_simulator_wrote() {
    use citygate_sim::{wire, Fleet, FleetConfig, WireFormat};
    let city = start_city("1h", "").await;
    let start_ms = common::now_ms() - 60_000;
    let mut fleet = Fleet::new(FleetConfig {
        per_kind: 7,
        interval_ms: 10_000,
        seed: 42,
        incidents: false,
        start_ms,
    });
    let messages = fleet.tick(start_ms + 10_000);
    assert_eq!(
        messages.len(),
        fleet.sensors().len(),
        "every sensor reports"
    );
    let mut publisher = Publisher::connect(&MqttTarget {
        url: format!("mqtt://127.0.0.1:{}", city.port),
        username: None,
        password: None,
        qos: 1,
        client_id: "fleet-formats".into(),
    })
    .expect("publisher");
    let mut expected = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let sensor = fleet
            .sensors()
            .iter()
            .find(|s| s.id == m.sensor)
            .expect("sensor of the fleet");
        let format = WireFormat::ALL[i % 3];
        let district = &sensor.tags[0].1;
        let report = wire::Report {
            sensor: &m.sensor,
            kind: m.kind,
            ts_ms: m.ts_ms,
            tags: &sensor.tags,
            values: &m.values,
        };
        publisher
            .publish(
                wire::topic("city", district, m.kind, &m.sensor, format),
                report.encode(format),
            )
            .await
            .expect("publish");
        for &(metric, value) in &m.values {
            expected.push((m.sensor.clone(), metric, m.ts_ms, m.kind, value, format));
        }
    }
    publisher.close(STORE_DEADLINE).await.expect("acknowledged");
    let n = wait_for_count(
        &city.db,
        "SELECT count(*) FROM readings",
        expected.len() as i64,
        STORE_DEADLINE,
    )
    .await;
    assert_eq!(n, expected.len() as i64, "one stored reading per value");
    assert!(common::dead_letter_reasons(&city.db).is_empty());
    let conn = rusqlite::Connection::open(&city.db).expect("open store");
    for (sensor, metric, ts, kind, value, format) in &expected {
        let stored: (f64, String) = conn
            .query_row(
                "SELECT value, kind FROM readings WHERE sensor = ?1 AND metric = ?2 AND ts = ?3",
                rusqlite::params![sensor, metric, ts],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("{sensor} {metric} at {ts} ({format:?}): {e}"));
        assert_eq!(
            stored,
            (*value, kind.to_string()),
            "{sensor} {metric} ({format:?})"
        );
    }
    city.gateway.shutdown().await.expect("shutdown");
}
