//! The InfluxDB sink and the durable outbox against real stores: VictoriaMetrics (the v2 write
//! API) and InfluxDB 1.x (the v1 API), both started by the harness on free ports.
//!
//! Readings go in over the gateway's HTTP ingest (or MQTT, for the back-pressure test), come
//! out of the store's own query API, and are compared exactly: values, tags, timestamps and
//! counts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use citygate::app::Gateway;
use common::influxdb1::Influx1;
use common::victoria::{Series, Victoria};
use common::{now_ms, Api, STORE_DEADLINE};
use serde_json::Value;

/// A `[[sinks.influxdb]]` for VictoriaMetrics (v2 API; any token will do, VM ignores it).
fn vm_sink(name: &str, vm: &Victoria, dir: &Path) -> String {
    let token = dir.join(format!("{name}.token"));
    std::fs::write(&token, "test-token-not-checked\n").expect("write token");
    format!(
        r#"
[[sinks.influxdb]]
name = "{name}"
url = "{url}"
org = "citygate"
bucket = "test"
token_file = {token:?}
flush_interval = "50ms"
retry_min = "50ms"
retry_max = "500ms"
auth_retry = "500ms"
"#,
        url = vm.url(),
        token = token.display().to_string()
    )
}

/// A `[[sinks.influxdb]]` for InfluxDB 1.x (v1 API, database `citygate`).
fn influx1_sink(name: &str, influx: &Influx1, dir: &Path, password: Option<&str>) -> String {
    let auth = match password {
        Some(pw) => {
            let file = dir.join(format!("{name}.password"));
            std::fs::write(&file, format!("{pw}\n")).expect("write password");
            format!(
                "username = \"admin\"\npassword_file = {:?}\n",
                file.display().to_string()
            )
        }
        None => String::new(),
    };
    format!(
        r#"
[[sinks.influxdb]]
name = "{name}"
url = "{url}"
api = "v1"
database = "citygate"
flush_interval = "50ms"
retry_min = "50ms"
retry_max = "500ms"
auth_retry = "300ms"
{auth}
"#,
        url = influx.url()
    )
}

/// The sensors every test writes: water levels with tags a line protocol writer must escape.
const SENSORS: &str = r#"
[sensors."wl-01"]
kind = "water_level"
tags = { district = "清城区", site = "北江 站,1=2" }
[sensors."wl-02"]
kind = "water_level"
tags = { district = "英德市", site = "east" }
"#;

/// `n` water-level readings, alternating between the two sensors, each sensor's a minute
/// apart, from `base`. Values change slowly (no spike, no rise-rate alert) and stay below every
/// level, so no alert muddies the counts.
fn level_readings(first: usize, n: usize, base: i64) -> Vec<(String, i64, f64)> {
    (first..first + n)
        .map(|i| {
            let sensor = if i % 2 == 0 { "wl-01" } else { "wl-02" };
            let ts = base + (i as i64 / 2) * 60_000;
            let level = 1.0 + (i % 50) as f64 * 0.001;
            (sensor.to_string(), ts, level)
        })
        .collect()
}

fn level_body(readings: &[(String, i64, f64)]) -> String {
    let items: Vec<String> = readings
        .iter()
        .map(|(s, ts, v)| format!(r#"{{"sensor":"{s}","ts":{ts},"level":{v}}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

async fn ingest(api: &Api, body: String) -> Value {
    let (status, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rejected"], 0, "{receipt}");
    receipt
}

/// Posts readings in batches of `batch`.
async fn ingest_levels(api: &Api, readings: &[(String, i64, f64)], batch: usize) {
    for chunk in readings.chunks(batch) {
        ingest(api, level_body(chunk)).await;
    }
}

fn outbox_points(h: &Value) -> u64 {
    h["outbox"]["points"].as_u64().unwrap_or(u64::MAX)
}

fn level_series(series: &[Series]) -> BTreeMap<(String, i64), f64> {
    let mut points = BTreeMap::new();
    for s in series.iter().filter(|s| s.name == "water_level_level") {
        for (ts, v) in s.timestamps.iter().zip(&s.values) {
            let sensor = s.labels.get("sensor").cloned().unwrap_or_default();
            let dup = points.insert((sensor, *ts), *v);
            assert!(dup.is_none(), "a point is in the store twice: {s:?}");
        }
    }
    points
}

fn expected_levels(readings: &[(String, i64, f64)]) -> BTreeMap<(String, i64), f64> {
    readings
        .iter()
        .map(|(s, ts, v)| ((s.clone(), *ts), *v))
        .collect()
}

/// Compares stored points with the expected ones, naming the first few differences rather
/// than printing thousands of points.
fn assert_same_points(
    got: &BTreeMap<(String, i64), f64>,
    want: &BTreeMap<(String, i64), f64>,
    context: &str,
) {
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, _)| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !want.contains_key(*k))
        .take(5)
        .collect();
    let wrong: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (k, v, g)))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "stored {} points, expected {}; first missing {missing:?}, first extra {extra:?}, \
         first wrong (want, got) {wrong:?}\n{context}",
        got.len(),
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_write_path_stores_every_kind_with_exact_values_tags_and_times() {
    let vm = Victoria::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = citygate::config::load_with_env(&[], Some(Default::default()))
        .expect("the built-in config loads");
    // One sensor of every kind in the catalog, its district in Chinese and a site name that
    // needs escaping; one reading carrying every metric of the kind.
    let t = now_ms() - 60_000;
    let mut sensors = String::new();
    let mut body = Vec::new();
    let mut expected = BTreeMap::new();
    for (kind, spec) in &config.catalog {
        let sensor = format!("{kind}-01");
        sensors.push_str(&format!(
            "[sensors.\"{sensor}\"]\nkind = \"{kind}\"\ntags = {{ district = \"清城区\", site = \"a b,c=d\" }}\n"
        ));
        let mut values = serde_json::Map::new();
        for (metric, m) in &spec.metrics {
            // A value inside the range, with decimals (counters start anywhere).
            let v = ((m.min + (m.max - m.min) * 0.037) * 1000.0).round() / 1000.0 + 0.125;
            let v = v.min(m.max);
            values.insert(metric.clone(), v.into());
            expected.insert(format!("{kind}_{metric}"), (sensor.clone(), v));
        }
        body.push(serde_json::json!({"sensor": sensor, "ts": t, "values": values}));
    }
    let gw = common::start(
        dir.path(),
        &format!("{sensors}{}", vm_sink("vm", &vm, dir.path())),
    )
    .await;
    let api = Api::new(&gw);
    let receipt = ingest(&api, Value::Array(body).to_string()).await;
    assert_eq!(receipt["accepted"].as_u64(), Some(expected.len() as u64));
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;

    let series = vm.export(r#"{sensor=~".+-01"}"#).await;
    let mut got = BTreeMap::new();
    for s in series.iter().filter(|s| !s.name.starts_with("alerts_")) {
        // VM keeps string fields as 0: the quality field is checked against InfluxDB 1.x.
        if s.name.ends_with("_quality") {
            continue;
        }
        assert_eq!(
            s.labels.get("district").map(String::as_str),
            Some("清城区"),
            "{s:?}"
        );
        assert_eq!(
            s.labels.get("site").map(String::as_str),
            Some("a b,c=d"),
            "{s:?}"
        );
        assert_eq!(s.timestamps, vec![t], "{s:?}");
        assert_eq!(s.values.len(), 1, "{s:?}");
        got.insert(s.name.clone(), (s.labels["sensor"].clone(), s.values[0]));
    }
    assert_eq!(got, expected);
    gw.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_write_path_into_influxdb_1_with_quality_alerts_and_a_startup_check() {
    let influx = Influx1::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The database does not exist yet: the startup check says so, and the data waits.
    let gw = common::start(
        dir.path(),
        &format!(
            "{SENSORS}\n[sensors.\"gd-01\"]\nkind = \"gas_detector\"\ntags = {{ district = \"清城区\" }}\n{}",
            influx1_sink("influx1", &influx, dir.path(), None)
        ),
    )
    .await;
    let api = Api::new(&gw);
    let health = common::wait_health(&api, "the startup check", |h| {
        h["sinks"][0]["state"] != "starting"
    })
    .await;
    let sink = &health["sinks"][0];
    assert_ne!(sink["state"], "ok", "{sink}");
    let err = sink["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("citygate"),
        "the error names the database: {err}"
    );

    let base = now_ms() - 48 * 3_600_000;
    let readings = level_readings(0, 40, base);
    ingest_levels(&api, &readings, 10).await;
    // A gas detector past its alarm level: an alert, which goes to the `alerts` measurement.
    ingest(
        &api,
        format!(r#"{{"sensor":"gd-01","ts":{},"lel":55}}"#, base + 1000),
    )
    .await;
    let health = common::wait_health(&api, "the sink to fail on the missing database", |h| {
        h["sinks"][0]["state"] == "misconfigured"
    })
    .await;
    assert!(outbox_points(&health) >= 41, "{health}");

    influx.create_database("citygate").await;
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;
    assert_eq!(
        common::wait_health(&api, "the sink to be ok", |h| h["sinks"][0]["state"]
            == "ok")
        .await["sinks"][0]["lag"]["points"],
        0
    );

    let rows = influx
        .rows(
            "citygate",
            "SELECT level, quality, sensor, district, site FROM water_level",
        )
        .await;
    let got: BTreeMap<(String, i64), f64> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["sensor"].as_str().unwrap_or_default().to_string(),
                    r["time"].as_i64().unwrap_or_default(),
                ),
                r["level"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    assert_same_points(&got, &expected_levels(&readings), "");
    for r in &rows {
        assert_eq!(r["quality"], "good", "{r:?}");
        match r["sensor"].as_str() {
            Some("wl-01") => {
                assert_eq!(r["district"], "清城区");
                assert_eq!(r["site"], "北江 站,1=2");
            }
            _ => assert_eq!(r["district"], "英德市"),
        }
    }
    let alerts = influx
        .rows("citygate", "SELECT * FROM alerts WHERE sensor = 'gd-01'")
        .await;
    assert!(
        alerts
            .iter()
            .any(|a| a["event"] == "raised" && a["kind"] == "gas_detector" && a["value"] == 55.0),
        "the raised alert is stored: {alerts:?}"
    );
    gw.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_loses_nothing_and_the_outbox_empties() {
    let mut vm = Victoria::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = common::start(
        dir.path(),
        &format!("{SENSORS}{}", vm_sink("vm", &vm, dir.path())),
    )
    .await;
    let api = Api::new(&gw);
    let base = now_ms() - 48 * 3_600_000;
    let readings = level_readings(0, 4000, base);
    // Steady load, in its own task, while the store goes away and comes back.
    let load = {
        let readings = readings.clone();
        let api = Api::new(&gw);
        tokio::spawn(async move {
            for chunk in readings.chunks(20) {
                ingest(&api, level_body(chunk)).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    common::wait_health(&api, "some points delivered", |h| {
        h["sinks"][0]["written_points"].as_u64() > Some(200)
    })
    .await;
    vm.stop();
    let health = common::wait_health(&api, "the sink to notice the outage", |h| {
        h["sinks"][0]["state"] == "retrying" && outbox_points(h) > 200
    })
    .await;
    assert!(
        !load.is_finished(),
        "the load outlasts the outage: {health}"
    );
    vm.restart().await;
    load.await.expect("the load task");
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;

    let got = level_series(&vm.export(r#"{__name__="water_level_level"}"#).await);
    assert_same_points(&got, &expected_levels(&readings), "");
    assert_eq!(gw.outbox().entries, 0);
    gw.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_outage_then_recovery_stores_the_exact_count_once() {
    let mut vm = Victoria::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = common::gateway_bin::GatewayProcess::start(
        dir.path(),
        &format!("{SENSORS}{}", vm_sink("vm", &vm, dir.path())),
        &[],
    );
    gw.wait_ready().await;
    let api = gw.api();
    let base = now_ms() - 48 * 3_600_000;
    let readings = level_readings(0, 3000, base);
    ingest_levels(&api, &readings[..1000], 100).await;
    common::wait_health(&api, "the first third delivered", |h| outbox_points(h) == 0).await;
    vm.stop();
    ingest_levels(&api, &readings[1000..2000], 100).await;
    common::wait_health(&api, "the second third in the outbox", |h| {
        outbox_points(h) == 1000
    })
    .await;
    gw.kill9();
    gw.start_again();
    gw.wait_ready().await;
    let health = common::wait_health(&api, "the backlog found after the restart", |h| {
        outbox_points(h) == 1000
    })
    .await;
    assert_eq!(health["sinks"][0]["lag"]["points"], 1000, "{health}");
    ingest_levels(&api, &readings[2000..], 100).await;
    vm.restart().await;
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;

    let got = level_series(&vm.export(r#"{__name__="water_level_level"}"#).await);
    assert_same_points(&got, &expected_levels(&readings), &gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_stops_the_mqtt_acks_and_the_broker_keeps_the_rest() {
    use common::mosquitto::{Mosquitto, MosquittoOptions};
    use common::publisher::{Proto, Publisher};

    // Every packet logged: if the broker keeps messages back, its log says whether it never
    // sent them or never had them acked (a rare failure here that is not understood yet).
    let broker = Mosquitto::start_with(MosquittoOptions::default().with_packet_log());
    let mut vm = Victoria::start().await;
    vm.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for a few batches only; the store is down from the start.
    let config = format!(
        "[outbox]\nmax_bytes = 4096\nwhen_full = \"block\"\nfsync = \"checkpoint\"\n{}{}",
        common::mqtt_section("full", &broker.url(), Proto::V311, ""),
        vm_sink("vm", &vm, dir.path())
    );
    let gw = common::start(dir.path(), &config).await;
    let api = Api::new(&gw);
    let n = 3000;
    let msgs = common::stream("wq", n, 0);
    let mut publisher = Publisher::connect(broker.port(), Proto::V311).await;
    publisher.publish_all(&msgs).await;
    let health = common::wait_health(&api, "the outbox to fill", |h| {
        h["outbox"]["state"] == "full"
    })
    .await;
    // Held back: the gateway has not taken (committed) every message; the broker keeps them.
    let taken = common::count(gw.db_path(), "SELECT count(*) FROM readings");
    assert!(
        taken < 2 * n as i64,
        "the gateway stopped taking input while full ({taken} readings committed): {health}"
    );
    // A shutdown while full finishes (the guard only turns a hang into a failure), and
    // loses nothing: what it took is in the outbox, the rest is still with the broker.
    tokio::time::timeout(STORE_DEADLINE, gw.shutdown())
        .await
        .expect("the shutdown finishes while the outbox is full")
        .expect("shutdown");
    vm.restart().await;
    let gw = common::start(dir.path(), &config).await;
    let api = Api::new(&gw);
    common::wait_health_or_explain(
        &api,
        "everything delivered",
        |h| {
            outbox_points(h) == 0
                && common::count(gw.db_path(), "SELECT count(*) FROM readings") == 2 * n as i64
        },
        || {
            format!(
                "readings: {}\nbroker: {}\nbroker log's end:\n{}",
                common::count(gw.db_path(), "SELECT count(*) FROM readings"),
                broker.unacked_deliveries("citygate-test-full"),
                broker.log_tail(60)
            )
        },
    )
    .await;
    let n_stored = vm
        .wait_for_samples(
            r#"{__name__=~"water_quality_(ph|temperature)"}"#,
            2 * n,
            STORE_DEADLINE,
        )
        .await;
    assert_eq!(
        n_stored,
        2 * n,
        "broker log's end:\n{}",
        broker.log_tail(60)
    );
    gw.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_line_becomes_a_dead_letter_and_the_rest_is_stored() {
    let influx = Influx1::start().await;
    influx.create_database("citygate").await;
    let base = now_ms() - 48 * 3_600_000;
    // `laeq` is a string in this database: any float laeq is a field type conflict. Field
    // types are per shard, and shard groups are weeks starting on Mondays (Go's Truncate),
    // so the string goes at the poison reading's own time: written "now", it missed the
    // conflict whenever now and 48 h ago fell in different weeks.
    let (status, body) = influx
        .write(
            "citygate",
            &format!("noise,sensor=other laeq=\"loud\" {base}"),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = common::start(
        dir.path(),
        &format!(
            "{SENSORS}\n[sensors.\"ns-01\"]\nkind = \"noise\"\n{}",
            influx1_sink("influx1", &influx, dir.path(), None)
        ),
    )
    .await;
    let api = Api::new(&gw);
    let readings = level_readings(0, 40, base);
    // One batch: 20 levels, the noise reading, 20 levels.
    let mut items: Vec<Value> = serde_json::from_str(&level_body(&readings)).expect("json");
    items.insert(
        20,
        serde_json::json!({"sensor": "ns-01", "ts": base, "laeq": 55.5}),
    );
    ingest(&api, Value::Array(items).to_string()).await;
    let health = common::wait_health(&api, "the outbox to drain", |h| {
        outbox_points(h) == 0 && h["sinks"][0]["dead_letters"] != 0
    })
    .await;
    assert_eq!(health["sinks"][0]["dead_letters"], 1, "{health}");

    let rows = influx
        .rows("citygate", "SELECT level, sensor FROM water_level")
        .await;
    assert_eq!(rows.len(), readings.len());
    let conn = rusqlite::Connection::open(gw.db_path()).expect("open db");
    let (source, sensor, detail, raw): (String, Option<String>, String, Vec<u8>) = conn
        .query_row(
            "SELECT source, sensor, detail, raw FROM dead_letters WHERE reason = 'store_rejected'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("one dead letter");
    assert_eq!(source, "sink:influx1");
    assert_eq!(sensor.as_deref(), Some("ns-01"));
    assert!(detail.contains("field type conflict"), "{detail}");
    let raw = String::from_utf8(raw).expect("utf-8");
    assert!(raw.starts_with("noise,sensor=ns-01"), "{raw}");
    gw.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_and_keeps_the_data() {
    let influx = Influx1::start_with_auth("admin", "right-secret").await;
    influx.create_database("citygate").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = now_ms() - 48 * 3_600_000;
    let readings = level_readings(0, 30, base);
    {
        let gw = common::start(
            dir.path(),
            &format!(
                "{SENSORS}{}",
                influx1_sink("influx1", &influx, dir.path(), Some("wrong-secret"))
            ),
        )
        .await;
        let api = Api::new(&gw);
        ingest_levels(&api, &readings, 10).await;
        let health = common::wait_health(&api, "the auth error", |h| {
            h["sinks"][0]["state"] == "auth_error"
        })
        .await;
        let text = health.to_string();
        assert!(
            !text.contains("wrong-secret"),
            "the password is not shown: {text}"
        );
        assert!(
            health["sinks"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("401")),
            "{health}"
        );
        assert_eq!(health["sinks"][0]["lag"]["points"], 30, "{health}");
        assert_eq!(health["sinks"][0]["dead_letters"], 0, "{health}");
        gw.shutdown().await.expect("shutdown");
    }
    // The operator fixes the password; the kept data goes out.
    let gw = common::start(
        dir.path(),
        &format!(
            "{SENSORS}{}",
            influx1_sink("influx1", &influx, dir.path(), Some("right-secret"))
        ),
    )
    .await;
    let api = Api::new(&gw);
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;
    let rows = influx
        .rows("citygate", "SELECT level, sensor FROM water_level")
        .await;
    assert_eq!(rows.len(), readings.len());
    gw.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_sink_does_not_hold_back_a_healthy_one() {
    let fast = Victoria::start().await;
    let mut slow = Victoria::start().await;
    slow.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw: Gateway = common::start(
        dir.path(),
        &format!(
            "{SENSORS}{}{}",
            vm_sink("fast", &fast, dir.path()),
            vm_sink("slow", &slow, dir.path())
        ),
    )
    .await;
    let api = Api::new(&gw);
    let base = now_ms() - 48 * 3_600_000;
    let readings = level_readings(0, 500, base);
    ingest_levels(&api, &readings, 50).await;
    let health = common::wait_health(&api, "the fast sink to catch up", |h| {
        h["sinks"][0]["lag"]["points"] == 0
    })
    .await;
    assert_eq!(health["sinks"][1]["lag"]["points"], 500, "{health}");
    assert_eq!(
        outbox_points(&health),
        500,
        "kept for the slow sink: {health}"
    );
    assert_same_points(
        &level_series(&fast.export(r#"{__name__="water_level_level"}"#).await),
        &expected_levels(&readings),
        "fast",
    );
    slow.restart().await;
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;
    assert_same_points(
        &level_series(&slow.export(r#"{__name__="water_level_level"}"#).await),
        &expected_levels(&readings),
        "slow",
    );
    gw.shutdown().await.expect("shutdown");
}

/// A store that refuses every request with a 400 (here: a proxy or a wrong parameter, simulated
/// by a stub, since no real server can be made to do it on purpose) is not a reason to throw
/// lines away: nothing becomes a dead letter, the data waits, and it all arrives once the
/// store takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_every_request_keeps_the_data_instead_of_dead_lettering_it() {
    use axum::routing::post;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Stub {
        accept: Arc<AtomicBool>,
        lines: Arc<Mutex<Vec<String>>>,
    }
    async fn write(
        axum::extract::State(stub): axum::extract::State<Stub>,
        body: axum::body::Bytes,
    ) -> (axum::http::StatusCode, String) {
        if !stub.accept.load(Ordering::SeqCst) {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                r#"{"code":"invalid","message":"invalid precision \"ms\""}"#.into(),
            );
        }
        let mut text = String::new();
        let _ =
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text);
        let mut lines = stub.lines.lock().expect("lock");
        lines.extend(text.lines().map(String::from));
        (axum::http::StatusCode::NO_CONTENT, String::new())
    }
    let stub = Stub::default();
    let app = axum::Router::new()
        .route("/api/v2/write", post(write))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "t").expect("token");
    let gw = common::start(
        dir.path(),
        &format!(
            "{SENSORS}\n[[sinks.influxdb]]\nname = \"stub\"\nurl = \"http://{addr}\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = {:?}\nflush_interval = \"50ms\"\nauth_retry = \"200ms\"\n",
            token.display().to_string()
        ),
    )
    .await;
    let api = Api::new(&gw);
    let readings = level_readings(0, 20, now_ms() - 48 * 3_600_000);
    ingest_levels(&api, &readings, 5).await;
    let health = common::wait_health(&api, "the sink to give up on the requests", |h| {
        h["sinks"][0]["state"] == "misconfigured"
    })
    .await;
    assert_eq!(health["sinks"][0]["dead_letters"], 0, "{health}");
    assert_eq!(health["sinks"][0]["lag"]["points"], 20, "{health}");
    assert!(
        health["sinks"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid precision")),
        "{health}"
    );
    stub.accept.store(true, Ordering::SeqCst);
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;
    let lines = stub.lines.lock().expect("lock").clone();
    assert_eq!(lines.len(), 20, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("water_level,")),
        "{lines:?}"
    );
    assert_eq!(common::dead_letter_reasons(gw.db_path()).len(), 0);
    gw.shutdown().await.expect("shutdown");
}

/// An outbox entry damaged on disk becomes a dead letter; the entries around it are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_outbox_entry_is_a_dead_letter_and_does_not_block_the_rest() {
    let mut vm = Victoria::start().await;
    vm.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!("{SENSORS}{}", vm_sink("vm", &vm, dir.path()));
    let readings = level_readings(0, 30, now_ms() - 48 * 3_600_000);
    let db = {
        let gw = common::start(dir.path(), &config).await;
        let api = Api::new(&gw);
        ingest_levels(&api, &readings, 10).await;
        let db = gw.db_path().to_path_buf();
        gw.shutdown().await.expect("shutdown");
        db
    };
    // Three entries (one per request); the middle one is damaged.
    let conn = rusqlite::Connection::open(&db).expect("open db");
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM outbox ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(seqs.len(), 3, "one outbox entry per committed request");
    conn.execute(
        "UPDATE outbox SET body = x'deadbeef' WHERE seq = ?1",
        [seqs[1]],
    )
    .expect("damage the entry");
    drop(conn);

    vm.restart().await;
    let gw = common::start(dir.path(), &config).await;
    let api = Api::new(&gw);
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;
    let got = level_series(&vm.export(r#"{__name__="water_level_level"}"#).await);
    let want: Vec<_> = readings[..10]
        .iter()
        .chain(&readings[20..])
        .cloned()
        .collect();
    assert_same_points(&got, &expected_levels(&want), "");
    assert_eq!(
        common::dead_letter_reasons(gw.db_path()).get("outbox_corrupt"),
        Some(&1)
    );
    gw.shutdown().await.expect("shutdown");
}

/// A partial request goes at once when none went in the last `flush_interval`: with an hour's
/// interval, the first readings after a quiet spell still reach the store (they used to wait
/// the whole hour), and the outbox empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_partial_request_after_a_quiet_spell_is_not_held_for_the_flush_interval() {
    let vm = Victoria::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = vm_sink("vm", &vm, dir.path())
        .replace("flush_interval = \"50ms\"", "flush_interval = \"1h\"");
    assert!(sink.contains("flush_interval = \"1h\""), "{sink}");
    let gw = common::start(dir.path(), &format!("{SENSORS}{sink}")).await;
    let api = Api::new(&gw);
    let readings = level_readings(0, 3, now_ms() - 3_600_000);
    ingest_levels(&api, &readings, 3).await;
    common::wait_health(&api, "the outbox to drain", |h| outbox_points(h) == 0).await;
    let n = vm
        .wait_for_samples(
            r#"{__name__="water_level_level"}"#,
            readings.len(),
            STORE_DEADLINE,
        )
        .await;
    assert_eq!(n, readings.len());
    let got = level_series(&vm.export(r#"{__name__="water_level_level"}"#).await);
    assert_same_points(&got, &expected_levels(&readings), "");
    gw.shutdown().await.expect("shutdown");
}
