//! Modbus end to end: the gateway polls the simulator (citygate-sim) over real TCP sockets and
//! over a real serial line (a socat pseudo-terminal pair), and the readings, dead letters and
//! alerts land in the store.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use citygate_sim::modbus::{
    example_sim, serve_rtu, serve_tcp, Bank, DropFault, ExceptionCode, ExceptionFault, Faults,
    GasDetectorValues, MeterValues, SerialSettings, ServerHandle, Sim, SondeValues, Table,
    ValueType, WaterMeterValues, WordOrder, GAS_DETECTOR_UNITS, METER_UNIT,
};
use common::{count, reading, start, wait_for_count, Api, STORE_DEADLINE};
use serde_json::Value;

async fn tcp_server(sim: &Sim) -> (ServerHandle, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    (serve_tcp(listener, sim.clone()), format!("tcp://{addr}"))
}

/// An example config from `config/examples/modbus/`, pointed at `address` and polled fast.
fn example(file: &str, address: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples/modbus")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("example config");
    assert!(
        text.contains("tcp://127.0.0.1:5020"),
        "{file} polls the simulator"
    );
    text.replace("tcp://127.0.0.1:5020", address)
        .lines()
        .map(|l| {
            if l.starts_with("interval = ") {
                "interval = \"250ms\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn stored(db: &Path, sensor: &str, metric: &str) -> f64 {
    match reading(db, sensor, metric) {
        Some((v, _, _)) => v,
        None => panic!("no stored reading of {sensor}/{metric}"),
    }
}

async fn wait_for_reading(db: &Path, sensor: &str, metric: &str) {
    let sql =
        format!("SELECT count(*) FROM readings WHERE sensor = '{sensor}' AND metric = '{metric}'");
    let n = wait_for_count(db, &sql, 1, STORE_DEADLINE).await;
    assert!(n >= 1, "no reading of {sensor}/{metric} was stored");
}

async fn alerts(api: &Api, query: &str) -> Vec<Value> {
    let (status, body) = api.get(&format!("/api/v1/alerts?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().cloned().unwrap_or_default()
}

/// Waits until an alert of `rule` for `sensor` in `state` shows in the API.
async fn wait_for_alert(api: &Api, sensor: &str, rule: &str, state: &str) -> Value {
    let until = Instant::now() + STORE_DEADLINE;
    loop {
        let found = alerts(api, &format!("state={state}&limit=1000"))
            .await
            .into_iter()
            .find(|a| a["rule"] == rule && a["sensor"] == sensor);
        if let Some(a) = found {
            return a;
        }
        assert!(
            Instant::now() < until,
            "no {state} {rule} alert for {sensor}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn device_status(api: &Api, sensor: &str) -> Value {
    let (_, health) = api.get("/health").await;
    health["modbus"]
        .as_array()
        .and_then(|list| list.iter().find(|d| d["sensor"] == sensor).cloned())
        .unwrap_or_else(|| panic!("{sensor} is not in /health: {health}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_example_devices_are_read_with_their_documented_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = example_sim();
    let (server, address) = tcp_server(&sim).await;
    let config = [
        "electricity-meter.toml",
        "water-meter.toml",
        "water-quality-sonde.toml",
        "gas-detector.toml",
    ]
    .map(|f| example(f, &address))
    .join("\n");
    let g = start(dir.path(), &config).await;
    let api = Api::new(&g);
    let db = g.db_path().to_path_buf();

    for (sensor, metric) in [
        ("em-qingcheng-001", "energy_total"),
        ("wm-qingcheng-017", "reverse_flow"),
        ("wq-beijiang-05", "cod"),
        ("gd-park-a-01", "fault"),
        ("gd-park-a-02", "h2s"),
    ] {
        wait_for_reading(&db, sensor, metric).await;
    }
    let m = MeterValues::FIXED;
    let em = "em-qingcheng-001";
    for (i, phase) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(stored(&db, em, &format!("voltage_{phase}")), m.voltage[i]);
        assert_eq!(stored(&db, em, &format!("current_{phase}")), m.current[i]);
    }
    // The map scales watts to kW.
    assert!((stored(&db, em, "active_power") - m.active_power_w / 1000.0).abs() < 1e-9);
    assert_eq!(stored(&db, em, "power_factor"), m.power_factor);
    assert_eq!(stored(&db, em, "frequency"), m.frequency);
    assert_eq!(stored(&db, em, "energy_total"), m.energy_kwh);
    let (_, kind, ts_source) = reading(&db, em, "voltage_a").expect("reading");
    assert_eq!(
        (kind.as_str(), ts_source.as_str()),
        ("electricity_meter", "received")
    );

    // Litres in a CDAB u32 become m³; the status word's bit 2 is reverse flow.
    let w = WaterMeterValues::FIXED;
    let wm = "wm-qingcheng-017";
    assert!((stored(&db, wm, "volume_total") - w.volume_l / 1000.0).abs() < 1e-9);
    assert!((stored(&db, wm, "flow_rate") - w.flow_m3h).abs() < 1e-9);
    assert_eq!(stored(&db, wm, "reverse_flow"), 0.0);

    let s = SondeValues::FIXED;
    let wq = "wq-beijiang-05";
    for (metric, v) in [
        ("ph", s.ph),
        ("dissolved_oxygen", s.dissolved_oxygen),
        ("ammonia_nitrogen", s.ammonia_nitrogen),
        ("turbidity", s.turbidity),
        ("temperature", s.temperature),
        ("cod", s.cod),
    ] {
        assert_eq!(stored(&db, wq, metric), v, "{metric}");
    }

    for (sensor, v) in [
        ("gd-park-a-01", GasDetectorValues::FIXED),
        ("gd-park-a-02", GasDetectorValues::FIXED_SECOND),
    ] {
        assert!(
            (stored(&db, sensor, "lel") - v.lel).abs() < 1e-9,
            "{sensor}"
        );
        assert!(
            (stored(&db, sensor, "h2s") - v.h2s).abs() < 1e-9,
            "{sensor}"
        );
        assert_eq!(stored(&db, sensor, "fault"), 0.0);
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM dead_letters"),
        0,
        "{:?}",
        common::dead_letter_reasons(&db)
    );
    let status = device_status(&api, em).await;
    assert_eq!(status["state"], "up");
    assert_eq!(status["tags"]["serial"], citygate_sim::modbus::METER_SERIAL);

    // The meter's phase A goes over the GB/T 12325 limit of 235.4 V: a warning.
    sim.update(METER_UNIT, |bank| {
        bank.set(Table::Input, 0, 240.0, ValueType::F32, WordOrder::Abcd)
    })
    .expect("unit 1")
    .expect("set voltage");
    let alert = wait_for_alert(&api, em, "voltage_a", "active").await;
    assert_eq!(alert["severity"], "warning");
    assert_eq!(alert["value"], 240.0);

    // The gas detector raises its fault input: the detector_fault rule fires.
    sim.update(GAS_DETECTOR_UNITS[0], |bank| {
        bank.set_bit(Table::DiscreteInput, 0, true)
    })
    .expect("unit 4")
    .expect("set fault");
    wait_for_alert(&api, "gd-park-a-01", "detector_fault", "active").await;

    g.shutdown().await.expect("shutdown");
    server.stop().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_on_one_field_leaves_the_other_fields_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = example_sim();
    // The energy register (input 342) is refused; the rest of the meter answers.
    sim.set_faults(
        METER_UNIT,
        Faults {
            exceptions: vec![ExceptionFault::at(
                ExceptionCode::IllegalDataAddress,
                Table::Input,
                342..344,
            )],
            ..Faults::default()
        },
    );
    let (server, address) = tcp_server(&sim).await;
    let g = start(dir.path(), &example("electricity-meter.toml", &address)).await;
    let db = g.db_path().to_path_buf();
    let em = "em-qingcheng-001";
    wait_for_reading(&db, em, "frequency").await;
    let n = wait_for_count(
        &db,
        "SELECT count(*) FROM dead_letters WHERE reason = 'modbus_exception'",
        1,
        STORE_DEADLINE,
    )
    .await;
    assert!(n >= 1);
    assert_eq!(stored(&db, em, "voltage_a"), MeterValues::FIXED.voltage[0]);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM readings WHERE metric = 'energy_total'"
        ),
        0
    );
    let conn = rusqlite::Connection::open(&db).expect("db");
    let (metric, detail): (String, String) = conn
        .query_row(
            "SELECT metric, detail FROM dead_letters WHERE reason = 'modbus_exception' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("dead letter");
    assert_eq!(metric, "energy_total");
    assert!(
        detail.contains("illegal data address") && detail.contains("input registers 342..343"),
        "{detail}"
    );
    // An exception is an answer: the device is up, not offline.
    let api = Api::new(&g);
    assert_eq!(device_status(&api, em).await["state"], "up");
    g.shutdown().await.expect("shutdown");
    server.stop().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_made_again_and_polling_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = example_sim();
    sim.set_faults(
        GAS_DETECTOR_UNITS[0],
        Faults {
            drop: Some(DropFault::Every(3)),
            ..Faults::default()
        },
    );
    let (server, address) = tcp_server(&sim).await;
    let g = start(dir.path(), &example("gas-detector.toml", &address)).await;
    let api = Api::new(&g);
    let db = g.db_path().to_path_buf();
    // Each poll is two requests (input registers, discrete inputs): a drop every third
    // request hits every other poll, and the retry on a new connection saves it.
    let n = wait_for_count(
        &db,
        "SELECT count(*) FROM readings WHERE sensor = 'gd-park-a-01' AND metric = 'lel'",
        8,
        STORE_DEADLINE,
    )
    .await;
    assert!(n >= 8, "polling went on: {n} readings");
    let status = device_status(&api, "gd-park-a-01").await;
    assert!(
        status["reconnects"].as_u64().unwrap_or(0) >= 2,
        "reconnected: {status}"
    );
    assert_eq!(status["state"], "up");
    g.shutdown().await.expect("shutdown");
    server.stop().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_register_map_is_read_in_requests_of_at_most_125() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new();
    sim.add_unit(9, Bank::counting(300));
    let (server, address) = tcp_server(&sim).await;
    let mut config = format!(
        "[validation]\nunknown_metric = \"accept\"\n[[modbus.devices]]\nsensor = \"bank-9\"\nkind = \"electricity_meter\"\naddress = \"{address}\"\nunit_id = 9\ninterval = \"1h\"\nregisters = [\n"
    );
    for a in 0..300 {
        config.push_str(&format!(
            "  {{ metric = \"r{a}\", table = \"holding\", address = {a} }},\n"
        ));
    }
    config.push_str("]\n");
    let g = start(dir.path(), &config).await;
    let db = g.db_path().to_path_buf();
    let n = wait_for_count(
        &db,
        "SELECT count(*) FROM readings WHERE sensor = 'bank-9'",
        300,
        STORE_DEADLINE,
    )
    .await;
    assert_eq!(n, 300);
    for a in [0, 124, 125, 249, 250, 299] {
        assert_eq!(stored(&db, "bank-9", &format!("r{a}")), f64::from(a));
    }
    let seen: Vec<(u8, u16, u16)> = sim
        .requests(9)
        .iter()
        .map(|r| (r.function, r.address, r.count))
        .collect();
    assert_eq!(seen, vec![(3, 0, 125), (3, 125, 125), (3, 250, 50)]);
    g.shutdown().await.expect("shutdown");
    server.stop().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_device_goes_offline_without_slowing_the_other_nineteen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new();
    let dead: u8 = 20;
    for unit in 1..=20u8 {
        sim.add_unit(unit, Bank::counting(4));
    }
    sim.set_faults(
        dead,
        Faults {
            silent: true,
            ..Faults::default()
        },
    );
    let (server, address) = tcp_server(&sim).await;
    let interval_ms = 200u64;
    let mut config = String::from("[modbus]\nmax_concurrent = 8\n");
    for unit in 1..=20u8 {
        config.push_str(&format!(
            "[[modbus.devices]]\nsensor = \"dev-{unit}\"\nkind = \"gas_detector\"\naddress = \"{address}\"\nunit_id = {unit}\ninterval = \"{interval_ms}ms\"\ntimeout = \"300ms\"\nretries = 1\noffline_after_failures = 3\nregisters = [{{ metric = \"lel\", table = \"holding\", address = 1 }}]\n"
        ));
    }
    let g = start(dir.path(), &config).await;
    let api = Api::new(&g);

    // The dead unit times out (twice per poll, with its retry) for three polls, then is
    // reported offline.
    let alert = wait_for_alert(&api, "dev-20", "device_offline", "active").await;
    assert_eq!(alert["severity"], "warning");
    assert!(
        alert["message"]
            .as_str()
            .unwrap_or("")
            .contains("no answer"),
        "{alert}"
    );

    // Count each live device's polls over a stretch of time. A dead neighbour must not cost
    // them polls: each should poll about once per interval. The tolerance (at least 70 % of
    // the intervals that passed, less one for the edges) leaves room for a loaded machine,
    // and is far above what a device stuck behind the dead one's timeouts would manage
    // (at most one poll per 2 × 300 ms timeout, under 34 %).
    let before: Vec<usize> = (1..dead).map(|u| sim.requests(u).len()).collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let after: Vec<usize> = (1..dead).map(|u| sim.requests(u).len()).collect();
    let intervals = elapsed.as_millis() as f64 / interval_ms as f64;
    let floor = (intervals * 0.7 - 1.0).floor() as usize;
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        let polls = b - a;
        println!(
            "dev-{}: {polls} polls in {elapsed:?} ({intervals:.1} intervals, floor {floor})",
            i + 1
        );
        assert!(
            polls >= floor,
            "dev-{} polled {polls} times in {intervals:.1} intervals",
            i + 1
        );
    }
    assert_eq!(device_status(&api, "dev-20").await["state"], "down");
    assert_eq!(device_status(&api, "dev-1").await["state"], "up");

    // It answers again: the alert resolves on the next good poll (backed off to at most
    // 2^k × the interval, well within the deadline).
    sim.clear_faults(dead);
    wait_for_alert(&api, "dev-20", "device_offline", "resolved").await;
    assert_eq!(device_status(&api, "dev-20").await["state"], "up");
    g.shutdown().await.expect("shutdown");
    server.stop().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_devices_share_a_serial_line_over_a_pty_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pty = citygate_sim::pty::PtyPair::new().expect("a socat pty pair");
    let sim = example_sim();
    let settings = SerialSettings {
        baud: 19200,
        parity: citygate_sim::modbus::Parity::Even,
        ..SerialSettings::default()
    };
    let server = serve_rtu(&pty.server_path(), &settings, sim.clone()).expect("serve RTU");
    let line = format!(
        "address = \"rtu://{}\"\nserial = {{ baud = 19200, parity = \"even\", data_bits = 8, stop_bits = 1 }}",
        pty.client_path()
    );
    let config = [
        example("electricity-meter.toml", "X"),
        example("gas-detector.toml", "X"),
    ]
    .join("\n")
    .replace("address = \"X\"", &line);
    let g = start(dir.path(), &config).await;
    let api = Api::new(&g);
    let db = g.db_path().to_path_buf();
    for (sensor, metric) in [
        ("em-qingcheng-001", "energy_total"),
        ("gd-park-a-01", "fault"),
        ("gd-park-a-02", "lel"),
    ] {
        wait_for_reading(&db, sensor, metric).await;
    }
    assert_eq!(
        stored(&db, "em-qingcheng-001", "voltage_b"),
        MeterValues::FIXED.voltage[1]
    );
    assert!(
        (stored(&db, "gd-park-a-02", "lel") - GasDetectorValues::FIXED_SECOND.lel).abs() < 1e-9
    );
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters"), 0);
    let status = device_status(&api, "gd-park-a-02").await;
    assert_eq!(status["state"], "up");
    assert!(status["address"]
        .as_str()
        .unwrap_or("")
        .starts_with("rtu://"));
    g.shutdown().await.expect("shutdown");
    server.stop().await.expect("server stops");
}
