//! Fault injection and the request log, seen by a tokio-modbus client over real sockets.

mod modbus_support;

use std::time::Duration;

use citygate_sim::modbus::{
    example_sim, serve_rtu, Bank, DropFault, ExceptionCode, ExceptionFault, Faults, LoggedRequest,
    SerialSettings, Table, WordOrder, METER_UNIT, SONDE_UNIT, WATER_METER_UNIT,
};
use modbus_support::{tcp_server, PtyPair};
use tokio_modbus::client::{rtu, tcp, Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

/// Longer than any answer of an unfaulted local server takes: a request still unanswered
/// by then is not going to be.
const NO_ANSWER: Duration = Duration::from_millis(300);

async fn client(addr: std::net::SocketAddr, unit: u8) -> Context {
    tcp::connect_slave(addr, Slave(unit))
        .await
        .expect("connect")
}

fn f32_of(hi: u16, lo: u16) -> f32 {
    f32::from_bits((u32::from(hi) << 16) | u32::from(lo))
}

#[tokio::test]
async fn an_exception_covers_its_address_range_only() {
    let sim = example_sim();
    sim.set_faults(
        SONDE_UNIT,
        Faults {
            exceptions: vec![ExceptionFault::at(
                ExceptionCode::IllegalDataAddress,
                Table::Holding,
                4..6,
            )],
            ..Faults::default()
        },
    );
    let (_server, addr) = tcp_server(&sim).await;
    let mut ctx = client(addr, SONDE_UNIT).await;

    let hit = ctx.read_holding_registers(5, 2).await.expect("transport");
    assert_eq!(hit, Err(ExceptionCode::IllegalDataAddress));
    let ph = ctx
        .read_holding_registers(0, 4)
        .await
        .expect("transport")
        .expect("no exception");
    // CDAB: low word first.
    assert_eq!(f32_of(ph[1], ph[0]), 7.25);
    let past = ctx
        .read_holding_registers(6, 2)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(f32_of(past[1], past[0]), 12.5, "turbidity");
}

#[tokio::test]
async fn a_silent_unit_never_answers_and_its_neighbours_do() {
    let sim = example_sim();
    sim.set_faults(
        5,
        Faults {
            silent: true,
            ..Faults::default()
        },
    );
    let (_server, addr) = tcp_server(&sim).await;

    let mut silent = client(addr, 5).await;
    let waited = tokio::time::timeout(NO_ANSWER, silent.read_input_registers(0, 2)).await;
    assert!(waited.is_err(), "unit 5 answered: {waited:?}");
    assert_eq!(
        sim.requests(5),
        vec![LoggedRequest {
            function: 4,
            table: Some(Table::Input),
            address: 0,
            count: 2
        }],
        "the request did arrive"
    );

    let mut other = client(addr, 4).await;
    let lel = other
        .read_input_registers(0, 2)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(lel, vec![30, 0]);
}

#[tokio::test]
async fn a_delayed_unit_answers_after_the_delay() {
    let sim = example_sim();
    sim.set_faults(
        METER_UNIT,
        Faults {
            delay: Some(Duration::from_millis(600)),
            ..Faults::default()
        },
    );
    let (_server, addr) = tcp_server(&sim).await;

    // Shorter than the delay: no answer (a client must drop this connection now, since the
    // late answer would be taken for its next request).
    let mut impatient = client(addr, METER_UNIT).await;
    let waited = tokio::time::timeout(
        Duration::from_millis(100),
        impatient.read_input_registers(0, 2),
    )
    .await;
    assert!(waited.is_err(), "answered before the delay: {waited:?}");

    let mut patient = client(addr, METER_UNIT).await;
    let v = tokio::time::timeout(Duration::from_secs(10), patient.read_input_registers(0, 2))
        .await
        .expect("answered within 10 s")
        .expect("transport")
        .expect("no exception");
    assert_eq!(f32_of(v[0], v[1]), 230.5);
}

#[tokio::test]
async fn drop_next_closes_the_connection_once() {
    let sim = example_sim();
    sim.set_faults(
        WATER_METER_UNIT,
        Faults {
            drop: Some(DropFault::Next),
            ..Faults::default()
        },
    );
    let (_server, addr) = tcp_server(&sim).await;

    let mut ctx = client(addr, WATER_METER_UNIT).await;
    let dropped = ctx.read_holding_registers(0, 2).await;
    assert!(
        dropped.is_err(),
        "expected a transport error, got {dropped:?}"
    );

    let mut again = client(addr, WATER_METER_UNIT).await;
    let v = again
        .read_holding_registers(0, 2)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(u32::from(v[1]) << 16 | u32::from(v[0]), 123_456);
}

#[tokio::test]
async fn drop_every_third_request() {
    let sim = example_sim();
    sim.set_faults(
        WATER_METER_UNIT,
        Faults {
            drop: Some(DropFault::Every(3)),
            ..Faults::default()
        },
    );
    let (_server, addr) = tcp_server(&sim).await;

    let mut outcomes = Vec::new();
    let mut ctx = client(addr, WATER_METER_UNIT).await;
    for _ in 0..6 {
        match ctx.read_holding_registers(2, 1).await {
            Ok(Ok(v)) => outcomes.push(Some(v[0])),
            Ok(Err(e)) => panic!("exception {e}"),
            Err(_) => {
                outcomes.push(None);
                ctx = client(addr, WATER_METER_UNIT).await;
            }
        }
    }
    assert_eq!(
        outcomes,
        vec![Some(125), Some(125), None, Some(125), Some(125), None]
    );
}

#[tokio::test]
async fn a_wrong_word_order_swaps_the_registers_of_multi_register_values() {
    let sim = example_sim();
    let (_server, addr) = tcp_server(&sim).await;
    let mut sonde = client(addr, SONDE_UNIT).await;
    let right = sonde
        .read_holding_registers(0, 2)
        .await
        .expect("transport")
        .expect("no exception");

    sim.set_faults(
        SONDE_UNIT,
        Faults {
            word_order: Some(WordOrder::Abcd),
            ..Faults::default()
        },
    );
    let wrong = sonde
        .read_holding_registers(0, 2)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(wrong, vec![right[1], right[0]]);
    assert_eq!(f32_of(wrong[0], wrong[1]), 7.25, "now big-endian");

    // The water meter's flow is one register: a word order does not apply to it.
    sim.set_faults(
        WATER_METER_UNIT,
        Faults {
            word_order: Some(WordOrder::Dcba),
            ..Faults::default()
        },
    );
    let mut water = client(addr, WATER_METER_UNIT).await;
    let v = water
        .read_holding_registers(0, 3)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(
        v,
        vec![0x40E2, 0x0100, 125],
        "123456 = 0x0001E240 in DCBA, flow untouched"
    );

    sim.clear_faults(SONDE_UNIT);
    let back = sonde
        .read_holding_registers(0, 2)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(back, right);
}

#[tokio::test]
async fn the_request_log_shows_how_a_long_map_was_split() {
    let sim = example_sim();
    sim.add_unit(10, Bank::counting(300));
    let (_server, addr) = tcp_server(&sim).await;
    let mut ctx = client(addr, 10).await;
    let mut all = Vec::new();
    for (start, count) in [(0, 125), (125, 125), (250, 50)] {
        all.extend(
            ctx.read_holding_registers(start, count)
                .await
                .expect("transport")
                .expect("data"),
        );
    }
    assert_eq!(all, (0..300).collect::<Vec<u16>>());
    let too_long = ctx.read_holding_registers(0, 126).await.expect("transport");
    assert_eq!(too_long, Err(ExceptionCode::IllegalDataValue));
    let seen: Vec<(u16, u16)> = sim
        .requests(10)
        .iter()
        .map(|r| (r.address, r.count))
        .collect();
    assert_eq!(seen, vec![(0, 125), (125, 125), (250, 50), (0, 126)]);
    assert!(sim
        .requests(10)
        .iter()
        .all(|r| r.function == 3 && r.table == Some(Table::Holding)));
}

#[tokio::test]
async fn an_absent_unit_behind_the_tcp_port_is_a_gateway_exception() {
    let sim = example_sim();
    let (_server, addr) = tcp_server(&sim).await;
    let mut ctx = client(addr, 42).await;
    let r = ctx.read_holding_registers(0, 1).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::GatewayTargetDevice));
}

#[tokio::test]
async fn stopping_the_server_closes_its_connections() {
    let sim = example_sim();
    let (server, addr) = tcp_server(&sim).await;
    let mut ctx = client(addr, 4).await;
    assert_eq!(
        ctx.read_input_registers(0, 1).await.expect("transport"),
        Ok(vec![30])
    );
    server.stop().await.expect("clean stop");
    let after = tokio::time::timeout(Duration::from_secs(10), ctx.read_input_registers(0, 1))
        .await
        .expect("the closed connection fails at once rather than hanging");
    assert!(after.is_err(), "{after:?}");
    assert!(tcp::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn faults_over_rtu_exception_and_silence() {
    let pty = PtyPair::new().expect("a socat pty pair");
    let sim = example_sim();
    sim.set_faults(
        METER_UNIT,
        Faults {
            exceptions: vec![ExceptionFault::everywhere(ExceptionCode::ServerDeviceBusy)],
            ..Faults::default()
        },
    );
    sim.set_faults(
        5,
        Faults {
            silent: true,
            ..Faults::default()
        },
    );
    let _server =
        serve_rtu(&pty.server_path(), &SerialSettings::default(), sim.clone()).expect("serve RTU");
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(pty.client_path(), 9600))
        .expect("open the client pty");
    let mut ctx = rtu::attach_slave(port, Slave(METER_UNIT));

    assert_eq!(
        ctx.read_input_registers(0, 2).await.expect("transport"),
        Err(ExceptionCode::ServerDeviceBusy)
    );
    ctx.set_slave(Slave(5));
    let waited = tokio::time::timeout(NO_ANSWER, ctx.read_input_registers(0, 2)).await;
    assert!(waited.is_err(), "unit 5 answered: {waited:?}");
    ctx.set_slave(Slave(4));
    assert_eq!(
        ctx.read_input_registers(0, 2).await.expect("transport"),
        Ok(vec![30, 0])
    );
}
