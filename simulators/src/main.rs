//! `citygate-sim`: run a simulated sensor fleet against citygate, or print it; serve simulated
//! Modbus devices.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use citygate_sim::http::HttpTarget;
use citygate_sim::publish::{MqttTarget, Publisher};
use citygate_sim::scenario::{self, Pace};
use citygate_sim::{
    bad_payloads, influx, latency, modbus, mqtt, wire, Fleet, FleetConfig, FormatChoice, Scenario,
    SimSensor,
};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "citygate-sim",
    version,
    about = "Simulated smart-city sensors for citygate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sensor fleet: publish its reports over MQTT, POST them to the gateway, or print
    /// them as JSON lines.
    Fleet(FleetArgs),
    /// Replay a scripted incident over MQTT (see --list for each one's expected alerts).
    Scenario(ScenarioArgs),
    /// List the fleet's sensors (id, kind, tags, levels, classes, incidents) as JSON lines.
    Sensors(FleetShape),
    /// Print malformed and invalid payloads (what is wrong, TAB, payload), for testing.
    Bad,
    /// Publish N readings from M sensors to an MQTT broker as fast as it takes them, and
    /// print the rate achieved.
    Load(LoadArgs),
    /// Subscribe and count messages until N have arrived, and print the delivery rate.
    SubscribeRate(SubscribeArgs),
    /// Serve the example Modbus devices (config/examples/modbus/*.toml) over Modbus TCP
    /// and/or RTU, with optional fault injection.
    Modbus(ModbusArgs),
    /// Read one Modbus unit back to back over one TCP connection for a while, and print the
    /// requests answered per second: the round-trip limit of that socket, for benchmarks.
    ModbusRtt(ModbusRttArgs),
    /// POST N readings as InfluxDB line protocol to a store's /api/v2/write (or as citygate
    /// JSON to the gateway's /api/v1/ingest) as fast as it takes them, and print the rate.
    InfluxWrite(InfluxWriteArgs),
    /// Measure alert latency under load: from a gas-detector reading published over MQTT to
    /// its `raised` event on the gateway's SSE stream and on its MQTT alert topic, while a
    /// paced background of normal readings runs. Prints p50/p90/p99/max in ms.
    AlertLatency(AlertLatencyArgs),
}

#[derive(Args)]
struct AlertLatencyArgs {
    /// The broker the gateway consumes from, mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// The gateway's HTTP API, http://host:port (no auth token is sent).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Background readings per second (air_quality messages of 6 readings each).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Background sensors.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    sensors: u64,
    /// Probes (each an alarm reading on a gas detector of its own).
    #[arg(long, default_value_t = 200)]
    probes: u32,
    /// Time between the starts of two probes, in ms.
    #[arg(long, default_value_t = 100)]
    probe_interval_ms: u64,
    /// The gateway's [alerts.mqtt] topic_prefix; the tool subscribes to
    /// <prefix>/+/gas_detector/+.
    #[arg(long, default_value = "citygate/alerts")]
    topic_prefix: String,
    /// QoS of the publishes and of the alert subscription: 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Probe sensors are <prefix>-<i>; give each run against one gateway its own prefix.
    #[arg(long, default_value = "probe")]
    probe_prefix: String,
    /// Seconds of background load before the first probe.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Seconds a probe waits for its events before they count as missing.
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
    /// Client id prefix (-bg, -probe and -sub are appended).
    #[arg(long, default_value = "citygate-sim-latency")]
    client_id: String,
    /// Print one JSON object instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InfluxWriteArgs {
    /// http://host:port of the store (path: /api/v2/write?org=citygate&bucket=bench&precision=ms)
    /// or of the gateway with --format json (path: /api/v1/ingest); or a full URL.
    #[arg(long)]
    url: String,
    /// Readings in all; one line each.
    #[arg(long, default_value_t = 100_000)]
    lines: u64,
    /// Distinct sensors, over four single-metric kinds; each reports once a simulated minute.
    #[arg(long, default_value_t = 10_000)]
    sensors: u64,
    /// Readings per request.
    #[arg(long, default_value_t = 5_000)]
    batch: u64,
    /// Requests in flight, one keep-alive connection each.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Gzip the request bodies (Content-Encoding: gzip).
    #[arg(long)]
    gzip: bool,
    /// line: InfluxDB line protocol; json: citygate JSON for the gateway's ingest.
    #[arg(long, value_enum, default_value_t = influx::BodyFormat::Line)]
    format: influx::BodyFormat,
    /// Timestamp of every sensor's first report, epoch ms (default: the run ends a day ago).
    /// Give two runs the same start to write the same readings.
    #[arg(long)]
    start_ms: Option<i64>,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

const MODBUS_HELP: &str = "\
Units (the unit ids of config/examples/modbus/*.toml):
  1  three-phase electricity meter  input registers, f32 ABCD; serial string at holding 64512
  2  water meter                    holding 0 (\"40001\") u32 CDAB litres, 2 flow, 3 status bits
  3  water-quality sonde            holding 0..11, f32 CDAB (manual numbers them from 1)
  4, 5  gas detectors               input 0 LEL, 1 H2S (tenths), discrete input 0 fault

--values fixed serves the test values listed in simulators/README.md (230.5 V, ...);
--values live changes them every second (load curve, counters that only go up, drift).

Fault spec (--fault, repeatable; comma-separated, unit required):
  unit=3,exception=0x02,addr=0..10   exception 0x02 for requests touching addresses 0..9
       [,table=holding|input|coil|discrete_input]   (addr: A..B half open, A..=B, or A)
  unit=1,delay=1500ms                answer every request 1.5 s late (also: 2s)
  unit=2,drop=next | drop=5          close the TCP connection on the next / every 5th request
  unit=3,order=ABCD                  serve multi-register values in another word order
  unit=5,silent                      never answer unit 5

Examples:
  citygate-sim modbus --listen 127.0.0.1:5020
  citygate-sim modbus --listen 127.0.0.1:5020 --values live --fault 'unit=5,silent'
  socat -d -d pty,raw,echo=0,link=/tmp/ttyS pty,raw,echo=0,link=/tmp/ttyM &
  citygate-sim modbus --rtu /tmp/ttyS --baud 9600 --parity none
  mbpoll -m rtu -b 9600 -P none -a 1 -t 3:float -B -r 1 -c 2 -1 /tmp/ttyM

Many devices, for benchmarks (one port serves at most 247 unit ids):
  citygate-sim modbus --listen 127.0.0.1:5021 --listen 127.0.0.1:5022 \
      --counting-units 200 --counting-registers 20
  (each port: its own units 1..=200, holding registers 0..20 each holding its own address)";

#[derive(Args)]
#[command(after_help = MODBUS_HELP)]
struct ModbusArgs {
    /// Modbus TCP address to listen on; every unit answers behind it, as behind a Modbus TCP
    /// gateway. Repeatable. Default 127.0.0.1:5020 unless --rtu is given.
    #[arg(long)]
    listen: Vec<std::net::SocketAddr>,
    /// Also (or only) serve Modbus RTU on this serial device, e.g. /dev/ttyUSB0 or one end of
    /// a socat pty pair.
    #[arg(long)]
    rtu: Option<String>,
    /// RTU baud rate.
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// RTU parity: none, even or odd.
    #[arg(long, default_value = "none")]
    parity: modbus::Parity,
    /// RTU data bits: 7 or 8.
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    /// RTU stop bits: 1 or 2.
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    /// fixed: the documented test values; live: realistic values changing every second.
    #[arg(long, value_enum, default_value_t = ValueMode::Fixed)]
    values: ValueMode,
    /// PRNG seed of the live values.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Inject a fault, e.g. 'unit=3,exception=0x02,addr=0..10' (see below). Repeatable.
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault)]
    faults: Vec<(u8, modbus::Faults)>,
    /// Add a plain unit for tests: UNIT=COUNT serves holding registers 0..COUNT, each holding
    /// its own address (e.g. 10=300). Repeatable.
    #[arg(long = "counting-unit", value_name = "UNIT=COUNT", value_parser = parse_counting_unit)]
    counting_units: Vec<(u8, u16)>,
    /// Serve N plain units instead of the example devices: units 1..=N behind every --listen
    /// (and --rtu), each server with units of its own, each unit with --counting-registers
    /// holding registers holding their own addresses. For benchmarks with many devices.
    #[arg(long = "counting-units", value_name = "N", value_parser = clap::value_parser!(u8).range(1..=247))]
    counting_units_each: Option<u8>,
    /// Holding registers of each --counting-units unit.
    #[arg(long, value_name = "COUNT", default_value_t = 20)]
    counting_registers: u16,
}

#[derive(Args)]
struct ModbusRttArgs {
    /// The Modbus TCP server, e.g. 127.0.0.1:5020.
    #[arg(long)]
    connect: std::net::SocketAddr,
    /// Unit id to read.
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// First holding register read.
    #[arg(long, default_value_t = 0)]
    address: u16,
    /// Holding registers per request (at most 125).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=125))]
    registers: u16,
    /// How long to read, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ValueMode {
    Fixed,
    Live,
}

fn parse_fault(s: &str) -> Result<(u8, modbus::Faults), String> {
    modbus::parse_fault_spec(s).map_err(|e| e.reason)
}

fn parse_counting_unit(s: &str) -> Result<(u8, u16), String> {
    let (unit, count) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: want UNIT=COUNT, e.g. 10=300"))?;
    let unit = unit
        .trim()
        .parse()
        .map_err(|e| format!("unit {unit:?}: {e}"))?;
    let count = count
        .trim()
        .parse()
        .map_err(|e| format!("count {count:?}: {e}"))?;
    Ok((unit, count))
}

#[derive(Args)]
struct LoadArgs {
    /// Broker, mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    url: String,
    /// Readings to publish in all.
    #[arg(long, default_value_t = 100_000)]
    readings: u64,
    /// Distinct sensors (one topic each).
    #[arg(long, default_value_t = 10_000)]
    sensors: u64,
    /// QoS of the publishes: 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// First topic level: topics are <prefix>/<district>/noise/<sensor>.
    #[arg(long, default_value = "city")]
    prefix: String,
    /// Parallel connections.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Unacknowledged QoS 1 publishes per connection.
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Client id prefix.
    #[arg(long, default_value = "citygate-sim-load")]
    client_id: String,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SubscribeArgs {
    /// Broker, mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    url: String,
    /// Subscription filter.
    #[arg(long, default_value = "city/#")]
    topic: String,
    /// QoS of the subscription.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Stop after this many messages.
    #[arg(long)]
    count: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Create this file once subscribed (a script can wait for it before starting a load).
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct FleetShape {
    /// Sensors per kind (13 kinds, spread over 7 districts).
    #[arg(long, default_value_t = 3)]
    per_kind: usize,
    /// Reporting interval of every sensor, in simulated milliseconds.
    #[arg(long, default_value_t = 2_000)]
    interval_ms: i64,
    /// PRNG seed: the same seed gives the same fleet and readings.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Play the scripted incidents (cloudburst, flood rise, gas leak, voltage sag, stuck
    /// probe, ammonia spill, silent sensor) in the first minutes.
    #[arg(long)]
    incidents: bool,
}

#[derive(Args)]
struct FleetArgs {
    #[command(flatten)]
    shape: FleetShape,
    /// Simulated seconds per real second. Above 1 the timestamps are synthetic; by default the
    /// run is then placed in the past so that it ends at the present.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Stop after this many simulated seconds (default: run until killed).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Start of the simulated timeline, epoch ms (default: see --speed).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Print each report as one JSON line on stdout.
    #[arg(long, conflicts_with_all = ["http", "mqtt"], required_unless_present_any = ["http", "mqtt"])]
    print: bool,
    /// POST each tick's reports as one JSON array to this URL,
    /// e.g. http://127.0.0.1:8080/api/v1/ingest.
    #[arg(long, conflicts_with = "mqtt")]
    http: Option<String>,
    #[command(flatten)]
    mqtt: MqttArgs,
    /// Payload format over MQTT: json, senml, line, or mix (a fixed per-sensor choice from
    /// the seed, in the shares of --mix).
    #[arg(long, value_enum, default_value_t = FormatChoice::Json)]
    format: FormatChoice,
    /// Append `sensor,metric,ts_ms,value` for every reading to FILE once the broker has
    /// acknowledged its message (QoS 1 PUBACK), and only then: the exact list of readings the
    /// gateway owes. Uses a persistent MQTT session.
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    record: Option<std::path::PathBuf>,
    /// The shares of --format mix, as relative weights.
    #[arg(
        long,
        value_name = "FORMAT=WEIGHT,...",
        default_value = "json=70,senml=20,line=10"
    )]
    mix: wire::MixWeights,
}

/// Publishing over MQTT (fleet and scenario).
#[derive(Args, Clone)]
struct MqttArgs {
    /// Publish over MQTT to this broker, mqtt://host:port, on
    /// <prefix>/<district>/<kind>/<sensor>[/senml|/line] (citygate's default routes).
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// MQTT username.
    #[arg(long, requires = "mqtt")]
    username: Option<String>,
    /// Name of the environment variable holding the MQTT password (never given on the
    /// command line, never printed).
    #[arg(long, value_name = "VAR", requires = "username")]
    password_env: Option<String>,
    /// QoS of the publishes: 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// First topic level.
    #[arg(long, default_value = "city")]
    topic_prefix: String,
    /// MQTT client id (default: citygate-sim-<pid>-<random>; the pid alone repeats across
    /// containers, where every process is pid 1, and a broker drops one of two clients that
    /// share an id).
    #[arg(long)]
    client_id: Option<String>,
}

fn default_client_id() -> String {
    // Nanoseconds of the clock are random enough to tell two starts apart.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("citygate-sim-{}-{nanos:08x}", std::process::id())
}

impl MqttArgs {
    fn target(&self) -> Result<Option<MqttTarget>, String> {
        let Some(url) = &self.mqtt else {
            return Ok(None);
        };
        let password = match &self.password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("--password-env {var}: the environment variable is not set (or not UTF-8)")
            })?),
            None => None,
        };
        Ok(Some(MqttTarget {
            url: url.clone(),
            username: self.username.clone(),
            password,
            qos: self.qos,
            client_id: self.client_id.clone().unwrap_or_else(default_client_id),
        }))
    }
}

fn scenario_help() -> String {
    let mut t = String::from("Scenarios:\n");
    for s in Scenario::ALL {
        t.push_str(&format!("  {:<13} {}\n", s.name(), s.summary()));
    }
    t.push_str(
        "\nEach runs against a gateway loaded with config/examples/city.toml. `--list` prints \
         what each should raise;\n`citygate-sim scenario NAME --help` one of them.\n\n\
         Example:\n  citygate run -c config/examples/city.toml &\n  \
         citygate-sim scenario flood --mqtt mqtt://127.0.0.1:1883\n",
    );
    t
}

#[derive(Args)]
#[command(after_help = scenario_help(), args_conflicts_with_subcommands = true)]
struct ScenarioArgs {
    /// List the scenarios with the alerts and dead letters each should cause.
    #[arg(long)]
    list: bool,
    #[command(subcommand)]
    which: Option<ScenarioName>,
}

#[derive(Subcommand)]
enum ScenarioName {
    /// A rainstorm on the Beijiang catchment, then levels crossing warning and guaranteed levels.
    #[command(after_help = Scenario::Flood.describe())]
    Flood(PlayArgs),
    /// An ammonia-nitrogen plume moving downstream past three stations.
    #[command(after_help = Scenario::Pollution.describe())]
    Pollution(PlayArgs),
    /// LEL rising through both alarm levels at the chemical park.
    #[command(after_help = Scenario::GasLeak.describe())]
    GasLeak(PlayArgs),
    /// An electricity meter's counter reset.
    #[command(after_help = Scenario::MeterTamper.describe())]
    MeterTamper(PlayArgs),
    /// A district's sensors going silent.
    #[command(after_help = Scenario::Blackout.describe())]
    Blackout(PlayArgs),
    /// Malformed, out-of-range, stuck and duplicate payloads.
    #[command(after_help = Scenario::BadDevices.describe())]
    BadDevices(PlayArgs),
}

impl ScenarioName {
    fn split(self) -> (Scenario, PlayArgs) {
        match self {
            ScenarioName::Flood(a) => (Scenario::Flood, a),
            ScenarioName::Pollution(a) => (Scenario::Pollution, a),
            ScenarioName::GasLeak(a) => (Scenario::GasLeak, a),
            ScenarioName::MeterTamper(a) => (Scenario::MeterTamper, a),
            ScenarioName::Blackout(a) => (Scenario::Blackout, a),
            ScenarioName::BadDevices(a) => (Scenario::BadDevices, a),
        }
    }
}

#[derive(Args)]
struct PlayArgs {
    #[command(flatten)]
    mqtt: MqttArgs,
    /// Simulated seconds per real second (default: the whole script in about 30 s).
    #[arg(long)]
    speed: Option<f64>,
    /// Epoch ms of the timeline's start (default: placed so that the last reading is
    /// stamped about when it is sent).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Print the messages (topic, TAB, payload) instead of publishing them.
    #[arg(long, conflicts_with = "mqtt", required_unless_present = "mqtt")]
    print: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Fleet(args) => match run_fleet(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("citygate-sim: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Scenario(args) => report(run_scenario(args)),
        Command::Sensors(shape) => {
            let fleet = Fleet::new(config(&shape, 0));
            let mut out = std::io::stdout().lock();
            for s in fleet.sensors() {
                if writeln!(out, "{}", sensor_json(s)).is_err() {
                    break;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Bad => {
            for (what, payload) in bad_payloads() {
                println!("{what}\t{payload}");
            }
            ExitCode::SUCCESS
        }
        Command::Load(args) => report(run_load(args)),
        Command::SubscribeRate(args) => report(run_subscribe(args)),
        Command::Modbus(args) => report(runtime().and_then(|rt| rt.block_on(run_modbus(args)))),
        Command::ModbusRtt(args) => report(run_modbus_rtt(args)),
        Command::InfluxWrite(args) => report(run_influx_write(args)),
        Command::AlertLatency(args) => report(run_alert_latency(args)),
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citygate-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn run_load(args: LoadArgs) -> Result<(), String> {
    let opts = mqtt::LoadOptions {
        url: args.url,
        readings: args.readings,
        sensors: args.sensors,
        qos: args.qos,
        prefix: args.prefix,
        connections: args.connections,
        inflight: args.inflight,
        client_id: args.client_id,
    };
    let r = runtime()?.block_on(mqtt::load(&opts))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "published": r.published,
                "seconds": r.seconds,
                "rate": r.rate(),
                "sensors": opts.sensors,
                "qos": opts.qos,
            })
        );
    } else {
        println!(
            "published {} readings from {} sensors (QoS {}) in {:.2} s: {:.0} msg/s",
            r.published,
            opts.sensors,
            opts.qos,
            r.seconds,
            r.rate()
        );
    }
    Ok(())
}

fn run_influx_write(args: InfluxWriteArgs) -> Result<(), String> {
    let start_ms = args.start_ms.unwrap_or_else(|| {
        influx::BenchReadings::start_before(wall_ms(), args.lines, args.sensors)
    });
    let opts = influx::WriteOptions {
        url: args.url,
        readings: influx::BenchReadings {
            lines: args.lines,
            sensors: args.sensors,
            start_ms,
        },
        batch: args.batch,
        concurrency: args.concurrency,
        gzip: args.gzip,
        format: args.format,
        timeout: Duration::from_secs(args.timeout_s),
    };
    let r = runtime()?
        .block_on(influx::write(&opts))
        .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "lines": r.lines,
                "seconds": r.seconds,
                "rate": r.rate(),
                "requests": r.requests,
                "bytes": r.bytes,
                "last_at": r.last_at,
                "accepted": r.accepted,
                "rejected": r.rejected,
                "start_ms": start_ms,
            })
        );
    } else {
        println!(
            "wrote {} lines in {} requests ({} bytes) in {:.2} s: {:.0} lines/s",
            r.lines,
            r.requests,
            r.bytes,
            r.seconds,
            r.rate()
        );
    }
    Ok(())
}

fn run_alert_latency(args: AlertLatencyArgs) -> Result<(), String> {
    let seconds = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).map_err(|_| format!("--{what} {s}: not a duration"))
    };
    let opts = latency::LatencyOptions {
        broker: args.broker,
        gateway: args.gateway,
        rate: args.rate.max(0.0),
        sensors: args.sensors,
        probes: args.probes,
        probe_interval: Duration::from_millis(args.probe_interval_ms),
        topic_prefix: args.topic_prefix,
        qos: args.qos,
        probe_prefix: args.probe_prefix,
        warmup: seconds(args.warmup_s, "warmup-s")?,
        timeout: seconds(args.timeout_s, "timeout-s")?,
        client_id: args.client_id,
    };
    let r = runtime()?
        .block_on(latency::run(&opts))
        .map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", r.to_json());
    } else {
        println!("{}", r.markdown());
    }
    if r.sse_missing() > 0 || r.mqtt_missing() > 0 {
        return Err(format!(
            "{} SSE and {} MQTT events of {} probes never arrived",
            r.sse_missing(),
            r.mqtt_missing(),
            r.probes
        ));
    }
    Ok(())
}

fn run_subscribe(args: SubscribeArgs) -> Result<(), String> {
    let ready_file = args.ready_file.clone();
    let r = runtime()?.block_on(mqtt::subscribe_rate(
        &args.url,
        &args.topic,
        args.qos,
        args.count,
        Duration::from_secs(args.timeout_s),
        move || {
            if let Some(p) = ready_file {
                if let Err(e) = std::fs::write(&p, b"subscribed\n") {
                    eprintln!("citygate-sim: cannot write {}: {e}", p.display());
                }
            }
        },
    ))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "received": r.received,
                "seconds": r.seconds,
                "rate": r.rate(),
                "last_at": r.last_at,
            })
        );
    } else {
        println!(
            "received {} messages in {:.2} s (first to last): {:.0} msg/s",
            r.received,
            r.seconds,
            r.rate()
        );
    }
    Ok(())
}

/// The units one server answers for: the example devices, or with --counting-units a
/// fresh set of plain units (so every port has units 1..=N of its own).
fn modbus_sim(args: &ModbusArgs) -> Result<modbus::Sim, String> {
    let sim = match args.counting_units_each {
        Some(n) => {
            let sim = modbus::Sim::new();
            for unit in 1..=n {
                sim.add_unit(unit, modbus::Bank::counting(args.counting_registers));
            }
            sim
        }
        None => modbus::example_sim(),
    };
    for (unit, count) in &args.counting_units {
        sim.add_unit(*unit, modbus::Bank::counting(*count));
    }
    let mut faults: std::collections::BTreeMap<u8, modbus::Faults> = Default::default();
    for (unit, f) in &args.faults {
        faults.entry(*unit).or_default().merge(f.clone());
    }
    for (unit, f) in faults {
        if !sim.set_faults(unit, f) {
            return Err(format!(
                "--fault names unit {unit}, which is not served (units: {:?})",
                sim.units()
            ));
        }
    }
    Ok(sim)
}

/// A short list of unit ids for the log line: a thousand of them say nothing.
fn describe_units(units: &[u8]) -> String {
    match units {
        [first, .., last] if units.len() > 8 => format!("{} units, {first}..={last}", units.len()),
        _ => format!("units {units:?}"),
    }
}

async fn run_modbus(args: ModbusArgs) -> Result<(), String> {
    // Without --counting-units every server shares the example devices (and their live
    // values); with it each server gets units of its own.
    if args.counting_units_each.is_some() && matches!(args.values, ValueMode::Live) {
        return Err(
            "--values live changes the example devices, which --counting-units leaves out".into(),
        );
    }
    let shared = modbus_sim(&args)?;
    let sim_for_server = || -> Result<modbus::Sim, String> {
        if args.counting_units_each.is_some() {
            modbus_sim(&args)
        } else {
            Ok(shared.clone())
        }
    };
    let _live = matches!(args.values, ValueMode::Live)
        .then(|| modbus::spawn_live(shared.clone(), args.seed));

    let listen = if args.listen.is_empty() && args.rtu.is_none() {
        vec![std::net::SocketAddr::from(([127, 0, 0, 1], 5020))]
    } else {
        args.listen.clone()
    };
    let mut servers = Vec::new();
    for addr in listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let sim = sim_for_server()?;
        eprintln!(
            "citygate-sim: Modbus TCP on {addr}, {}",
            describe_units(&sim.units())
        );
        servers.push((
            format!("Modbus TCP server on {addr}"),
            modbus::serve_tcp(listener, sim),
        ));
    }
    if let Some(path) = &args.rtu {
        let settings = modbus::SerialSettings {
            baud: args.baud,
            parity: args.parity,
            data_bits: args.data_bits,
            stop_bits: args.stop_bits,
        };
        let sim = sim_for_server()?;
        let units = describe_units(&sim.units());
        let server = modbus::serve_rtu(path, &settings, sim).map_err(|e| e.to_string())?;
        eprintln!(
            "citygate-sim: Modbus RTU on {path} at {} baud, {units}",
            args.baud
        );
        servers.push((format!("Modbus RTU server on {path}"), server));
    }
    // The first server to end ends the run; dropping the set aborts the other waits, and
    // with them their handles, which stops those servers.
    let mut waits = tokio::task::JoinSet::new();
    for (name, server) in servers {
        waits.spawn(async move { (name, server.wait().await) });
    }
    let until_one_ends = async move {
        match waits.join_next().await {
            Some(Ok((name, ended))) => format!("{name} ended: {}", describe_end(ended)),
            Some(Err(e)) => format!("a server task failed: {e}"),
            None => "no server to run".to_string(),
        }
    };
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.map_err(|e| format!("cannot wait for Ctrl-C: {e}")),
        why = until_one_ends => Err(why),
    }
}

fn run_modbus_rtt(args: ModbusRttArgs) -> Result<(), String> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(format!(
            "--seconds {}: want a positive number",
            args.seconds
        ));
    }
    let opts = modbus::RttOptions {
        addr: args.connect,
        unit: args.unit,
        address: args.address,
        count: args.registers,
        duration: Duration::from_secs_f64(args.seconds),
    };
    let r = runtime()?
        .block_on(modbus::round_trips(&opts))
        .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "requests": r.requests,
                "seconds": r.seconds,
                "rate": r.rate(),
                "mean_rtt_us": r.mean_rtt_us(),
                "unit": opts.unit,
                "registers": opts.count,
            })
        );
    } else {
        println!(
            "{} reads of {} registers from unit {} in {:.2} s: {:.0} requests/s, {:.1} µs per round trip",
            r.requests,
            opts.count,
            opts.unit,
            r.seconds,
            r.rate(),
            r.mean_rtt_us()
        );
    }
    Ok(())
}

fn describe_end(ended: Result<(), modbus::ServeError>) -> String {
    match ended {
        Ok(()) => "the line closed".into(),
        Err(e) => e.to_string(),
    }
}

fn config(shape: &FleetShape, start_ms: i64) -> FleetConfig {
    FleetConfig {
        per_kind: shape.per_kind,
        interval_ms: shape.interval_ms,
        seed: shape.seed,
        incidents: shape.incidents,
        start_ms,
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn run_fleet(args: FleetArgs) -> Result<(), String> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(format!(
            "--speed must be a positive number, got {}",
            args.speed
        ));
    }
    if args.shape.interval_ms <= 0 {
        return Err("--interval-ms must be positive".into());
    }
    let duration_ms = args.duration_s.map(|s| s as i64 * 1000);
    let start_ms = match (args.start_ms, duration_ms) {
        (Some(s), _) => s,
        // Faster than real time would run into the future, which the gateway rejects:
        // place the run so that it ends now.
        (None, Some(d)) if args.speed > 1.0 => wall_ms() - d,
        (None, None) if args.speed > 1.0 => {
            eprintln!("citygate-sim: --speed > 1 without --duration-s: timestamps will run ahead of the clock");
            wall_ms()
        }
        _ => wall_ms(),
    };
    let target = args
        .http
        .as_deref()
        .map(HttpTarget::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut fleet = Fleet::new(config(&args.shape, start_ms));
    let mut mqtt = match args.mqtt.target()? {
        Some(t) => Some(FleetMqtt::start(&t, &args, &fleet)?),
        None => None,
    };
    eprintln!(
        "citygate-sim: {} sensors, every {} ms, speed {}x{}",
        fleet.sensors().len(),
        args.shape.interval_ms,
        args.speed,
        if args.shape.incidents {
            ", incidents on"
        } else {
            ""
        }
    );

    // Step finer than the interval so staggered sensors report close to their own phase.
    let step_ms = (args.shape.interval_ms / 4).clamp(1, 1_000);
    let real_start = Instant::now();
    let mut sim_ms = start_ms;
    let mut stdout = std::io::stdout().lock();
    let (mut sent, mut failed) = (0u64, 0u64);
    loop {
        if duration_ms.is_some_and(|d| sim_ms - start_ms > d) {
            break;
        }
        let messages = fleet.tick(sim_ms);
        if !messages.is_empty() {
            if let Some(mqtt) = &mut mqtt {
                mqtt.publish(&messages)?;
                sent += messages.len() as u64;
            } else if let Some(target) = &target {
                let body = json_array(messages.iter().map(|m| m.payload.as_str()));
                match target.post_json(&body, Duration::from_secs(10)) {
                    Ok(_) => sent += messages.len() as u64,
                    Err(e) => {
                        failed += messages.len() as u64;
                        eprintln!(
                            "citygate-sim: POST of {} readings failed: {e}",
                            messages.len()
                        );
                    }
                }
            } else {
                for m in &messages {
                    if writeln!(stdout, "{}", m.payload).is_err() {
                        // stdout closed (e.g. piped into `head`): nothing left to do.
                        return Ok(());
                    }
                }
                sent += messages.len() as u64;
            }
        }
        sim_ms += step_ms;
        let due = Duration::from_secs_f64((sim_ms - start_ms) as f64 / 1000.0 / args.speed);
        if let Some(wait) = due.checked_sub(real_start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    if let Some(mqtt) = mqtt {
        mqtt.close()?;
    }
    eprintln!("citygate-sim: done, {sent} readings sent, {failed} failed");
    if failed > 0 && sent == 0 {
        return Err("no reading was accepted".into());
    }
    Ok(())
}

/// The fleet's MQTT side: a runtime for the publisher, and each sensor's topic and format.
struct FleetMqtt {
    rt: tokio::runtime::Runtime,
    publisher: Publisher,
    routes: std::collections::HashMap<String, (String, wire::WireFormat)>,
    tags: std::collections::HashMap<String, Vec<(String, String)>>,
    recording: bool,
}

impl FleetMqtt {
    fn start(target: &MqttTarget, args: &FleetArgs, fleet: &Fleet) -> Result<FleetMqtt, String> {
        let rt = runtime()?;
        let publisher = {
            let _in_runtime = rt.enter();
            match &args.record {
                Some(path) => {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| format!("--record {}: {e}", path.display()))?;
                    Publisher::connect_recording(target, file)
                }
                None => Publisher::connect(target),
            }
            .map_err(|e| e.to_string())?
        };
        let mut routes = std::collections::HashMap::new();
        let mut tags = std::collections::HashMap::new();
        for s in fleet.sensors() {
            let format = args
                .format
                .for_sensor_with(args.shape.seed, &s.id, &args.mix);
            let district = s
                .tags
                .iter()
                .find(|(k, _)| k == "district")
                .map_or("unknown", |(_, v)| v.as_str());
            let topic = wire::topic(&args.mqtt.topic_prefix, district, s.kind, &s.id, format);
            routes.insert(s.id.clone(), (topic, format));
            tags.insert(s.id.clone(), s.tags.clone());
        }
        eprintln!(
            "citygate-sim: publishing to {} with QoS {} ({:?} payloads)",
            target.url, target.qos, args.format
        );
        Ok(FleetMqtt {
            rt,
            publisher,
            routes,
            tags,
            recording: args.record.is_some(),
        })
    }

    fn publish(&mut self, messages: &[citygate_sim::SimMessage]) -> Result<(), String> {
        let no_tags = Vec::new();
        for m in messages {
            let Some((topic, format)) = self.routes.get(&m.sensor) else {
                continue;
            };
            let payload = match format {
                wire::WireFormat::Json => m.payload.clone(),
                other => wire::Report {
                    sensor: &m.sensor,
                    kind: m.kind,
                    ts_ms: m.ts_ms,
                    tags: self.tags.get(&m.sensor).unwrap_or(&no_tags),
                    values: &m.values,
                }
                .encode(*other),
            };
            let sent = if self.recording {
                let mut record = String::new();
                for (metric, value) in &m.values {
                    record.push_str(&format!("{},{metric},{},{value}\n", m.sensor, m.ts_ms));
                }
                self.rt.block_on(
                    self.publisher
                        .publish_recorded(topic.clone(), payload, record),
                )
            } else {
                self.rt
                    .block_on(self.publisher.publish(topic.clone(), payload))
            };
            sent.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn close(self) -> Result<(), String> {
        let FleetMqtt { rt, publisher, .. } = self;
        rt.block_on(publisher.close(Duration::from_secs(30)))
            .map_err(|e| e.to_string())
    }
}

fn run_scenario(args: ScenarioArgs) -> Result<(), String> {
    let Some(which) = args.which else {
        if args.list {
            let mut out = std::io::stdout().lock();
            for s in Scenario::ALL {
                if writeln!(out, "{}", s.describe()).is_err() {
                    break;
                }
            }
            return Ok(());
        }
        return Err("name a scenario, or --list (see --help)".into());
    };
    let (scenario, play) = which.split();
    let pace = match play.speed {
        Some(x) if x.is_finite() && x > 0.0 => Pace::Speed(x),
        Some(x) => return Err(format!("--speed must be a positive number, got {x}")),
        None => Pace::Speed((scenario.duration_ms() as f64 / 30_000.0).max(1.0)),
    };
    let start_ms = play
        .start_ms
        .unwrap_or_else(|| scenario::start_for(scenario, pace, wall_ms()));
    let script = scenario.script(&play.mqtt.topic_prefix, start_ms);
    let Some(target) = play.mqtt.target()? else {
        let mut out = std::io::stdout().lock();
        for m in &script.messages {
            let line = format!("{}\t{}", m.topic, String::from_utf8_lossy(&m.payload));
            if writeln!(out, "{}", line.trim_end()).is_err() {
                return Ok(());
            }
        }
        return Ok(());
    };
    eprintln!(
        "citygate-sim: scenario {}: {} messages over {} simulated s, to {}",
        scenario.name(),
        script.messages.len(),
        script.duration_ms / 1000,
        target.url
    );
    runtime()?.block_on(async {
        let mut publisher = Publisher::connect(&target).map_err(|e| e.to_string())?;
        scenario::play(&script, &mut publisher, pace, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        publisher
            .close(Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
    })?;
    eprintln!(
        "citygate-sim: scenario {} published; expected:\n{}",
        scenario.name(),
        scenario.describe()
    );
    Ok(())
}

fn json_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut body = String::from("[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push(']');
    body
}

fn sensor_json(s: &SimSensor) -> String {
    let tags: serde_json::Map<String, serde_json::Value> = s
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    let mut obj = serde_json::json!({ "id": s.id, "kind": s.kind, "tags": tags });
    if let Some(l) = s.levels {
        obj["warning_level"] = l.warning.into();
        obj["guaranteed_level"] = l.guaranteed.into();
    }
    if let Some(c) = s.water_class {
        obj["water_class"] = c.into();
    }
    if let Some(c) = s.noise_class {
        obj["noise_class"] = c.into();
    }
    if !s.incidents.is_empty() {
        obj["incidents"] = s
            .incidents
            .iter()
            .map(|i| {
                let rates: serde_json::Map<String, serde_json::Value> = i
                    .rate_hints()
                    .iter()
                    .map(|(m, r)| (m.to_string(), (*r).into()))
                    .collect();
                serde_json::json!({
                    "name": i.name(),
                    "expected": i.expected_alerts(),
                    "max_rate_per_hour": rates,
                    "offline_after_ms": i.offline_after_ms(),
                })
            })
            .collect::<Vec<_>>()
            .into();
    }
    obj.to_string()
}
