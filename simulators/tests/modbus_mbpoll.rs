//! Interop: mbpoll, a Modbus client we did not write, reads the documented values from the
//! simulator over TCP and over RTU (a socat pty pair).

mod modbus_support;

use citygate_sim::modbus::{
    example_sim, parse_fault_spec, serve_rtu, GasDetectorValues, MeterValues, Parity,
    SerialSettings, SondeValues, WaterMeterValues, METER_SERIAL,
};
use modbus_support::{mbpoll, tcp_server, PtyPair};

fn meter_floats() -> Vec<f64> {
    let m = MeterValues::FIXED;
    vec![m.voltage[0], m.voltage[1], m.voltage[2]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_the_documented_values_over_tcp() {
    let sim = example_sim();
    let (_server, addr) = tcp_server(&sim).await;
    let port = addr.port().to_string();
    // mbpoll numbers references from 1 (reference 1 is protocol address 0); -B reads floats
    // and 32-bit integers big-endian (ABCD), its default is low word first (CDAB).
    let tcp = |extra: &[&str]| {
        let mut args = vec!["-m", "tcp", "-p", &port, "-o", "2"];
        args.extend_from_slice(extra);
        args.push("127.0.0.1");
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let args = tcp(extra);
        async move { mbpoll(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };

    let voltages = run(&["-a", "1", "-t", "3:float", "-B", "-r", "1", "-c", "3"]).await;
    assert_eq!(voltages.refs(), vec![1, 3, 5], "{voltages:?}");
    assert_eq!(voltages.f64s(), meter_floats(), "{voltages:?}");

    let energy = run(&["-a", "1", "-t", "3:float", "-B", "-r", "343"]).await;
    assert_eq!(
        energy.f64s(),
        vec![MeterValues::FIXED.energy_kwh],
        "{energy:?}"
    );

    let serial = run(&["-a", "1", "-t", "4:hex", "-r", "64513", "-c", "8"]).await;
    let text: String = serial
        .values
        .iter()
        .flat_map(|(_, hex)| {
            let word = u16::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex word");
            word.to_be_bytes()
        })
        .map(char::from)
        .collect();
    assert_eq!(text, METER_SERIAL, "{serial:?}");

    // The water meter's u32 is low word first: mbpoll's default order.
    let volume = run(&["-a", "2", "-t", "4:int", "-r", "1"]).await;
    assert_eq!(
        volume.f64s(),
        vec![WaterMeterValues::FIXED.volume_l],
        "{volume:?}"
    );
    let flow_and_status = run(&["-a", "2", "-t", "4", "-r", "3", "-c", "2"]).await;
    assert_eq!(
        flow_and_status.f64s(),
        vec![125.0, 11.0],
        "{flow_and_status:?}"
    );

    let s = SondeValues::FIXED;
    let sonde = run(&["-a", "3", "-t", "4:float", "-r", "1", "-c", "6"]).await;
    assert_eq!(
        sonde.f64s(),
        vec![
            s.ph,
            s.dissolved_oxygen,
            s.ammonia_nitrogen,
            s.turbidity,
            s.temperature,
            s.cod
        ],
        "{sonde:?}"
    );

    for (unit, values) in [
        ("4", GasDetectorValues::FIXED),
        ("5", GasDetectorValues::FIXED_SECOND),
    ] {
        let gas = run(&["-a", unit, "-t", "3", "-r", "1", "-c", "2"]).await;
        assert_eq!(
            gas.f64s(),
            vec![values.lel * 10.0, values.h2s * 10.0],
            "{gas:?}"
        );
        let bits = run(&["-a", unit, "-t", "1", "-r", "1", "-c", "2"]).await;
        assert_eq!(
            bits.f64s(),
            vec![0.0, 1.0],
            "fault clear, power OK: {bits:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_sees_an_injected_exception_and_the_rest_of_the_unit_still_answers() {
    let sim = example_sim();
    let (unit, faults) = parse_fault_spec("unit=3,exception=0x02,addr=4..6").expect("spec");
    assert!(sim.set_faults(unit, faults));
    let (_server, addr) = tcp_server(&sim).await;
    let port = addr.port().to_string();
    let base = [
        "-m", "tcp", "-p", &port, "-o", "2", "-a", "3", "-t", "4:float",
    ];

    let hit = mbpoll(&[&base[..], &["-r", "5", "127.0.0.1"]].concat()).await;
    assert!(hit.values.is_empty(), "{hit:?}");
    assert!(hit.stderr.contains("Illegal data address"), "{hit:?}");

    let clear = mbpoll(&[&base[..], &["-r", "1", "-c", "2", "127.0.0.1"]].concat()).await;
    assert_eq!(
        clear.f64s(),
        vec![SondeValues::FIXED.ph, SondeValues::FIXED.dissolved_oxygen],
        "{clear:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_the_documented_values_over_rtu() {
    let pty = PtyPair::new().expect("a socat pty pair");
    let sim = example_sim();
    let settings = SerialSettings {
        baud: 9600,
        parity: Parity::Even,
        ..SerialSettings::default()
    };
    let _server = serve_rtu(&pty.server_path(), &settings, sim.clone()).expect("serve RTU");
    let client = pty.client_path();
    let rtu = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["-m", "rtu", "-b", "9600", "-P", "even", "-o", "2"];
        args.extend_from_slice(extra);
        args.push(&client);
        args.into_iter().map(String::from).collect()
    };
    let run = |extra: &[&str]| {
        let args = rtu(extra);
        async move { mbpoll(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };

    let voltages = run(&["-a", "1", "-t", "3:float", "-B", "-r", "1", "-c", "3"]).await;
    assert_eq!(voltages.f64s(), meter_floats(), "{voltages:?}");
    let volume = run(&["-a", "2", "-t", "4:int", "-r", "1"]).await;
    assert_eq!(
        volume.f64s(),
        vec![WaterMeterValues::FIXED.volume_l],
        "{volume:?}"
    );
    let gas = run(&["-a", "4", "-t", "3", "-r", "1", "-c", "2"]).await;
    assert_eq!(gas.f64s(), vec![30.0, 0.0], "{gas:?}");

    // Nobody answers for a unit that is not on the bus, and the bus still works after.
    let absent = run(&["-a", "9", "-t", "3", "-r", "1"]).await;
    assert!(absent.values.is_empty(), "{absent:?}");
    assert!(absent.stderr.contains("timed out"), "{absent:?}");
    let sonde = run(&["-a", "3", "-t", "4:float", "-r", "1"]).await;
    assert_eq!(sonde.f64s(), vec![SondeValues::FIXED.ph], "{sonde:?}");
    assert_eq!(
        (sim.requests(1).len(), sim.requests(3).len()),
        (1, 1),
        "each unit saw its one request"
    );
}
