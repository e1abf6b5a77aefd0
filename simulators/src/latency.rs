//! Alert latency under load (`citygate-sim alert-latency`), for `scripts/bench-alerts`.
//!
//! ```text
//! background client ──QoS 1 air_quality, paced──►┐
//! probe client ──lel 30 on probe-<i> (t0)────────► broker ──► gateway ──► SSE stream ──► t_sse
//!                                                                     └──► MQTT alert topic ──► t_mqtt
//! ```
//! The background load is normal air-quality readings (six metrics a message) that raise
//! nothing. Each probe is one gas-detector reading above the warning level of 25 % LEL on a
//! sensor of its own; the time from just before its publish to the `raised` event for that
//! sensor is measured on the SSE stream and on the MQTT alert topic, in this one process with
//! one monotonic clock. A reading of 0 then resolves the alert, unmeasured. An event that has
//! not come within [`LatencyOptions::timeout`] counts as missing: that is a lost alert, a bug.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::mqtt::parse_url;

/// Readings in one background message: the six air-quality metrics.
pub const READINGS_PER_MESSAGE: u64 = 6;

/// What to run against which gateway.
#[derive(Clone, Debug)]
pub struct LatencyOptions {
    /// `mqtt://host:port` of the broker the gateway consumes from.
    pub broker: String,
    /// `http://host:port` of the gateway's API.
    pub gateway: String,
    /// Background readings per second (messages per second × 6).
    pub rate: f64,
    /// Background sensors; their messages go round-robin over them.
    pub sensors: u64,
    pub probes: u32,
    /// Time between the starts of two probes.
    pub probe_interval: Duration,
    /// `[alerts.mqtt] topic_prefix` of the gateway.
    pub topic_prefix: String,
    /// QoS of every publish (background and probes) and of the alert subscription.
    pub qos: u8,
    /// Probe sensors are `<probe_prefix>-<i>`; give each run against one gateway its own.
    pub probe_prefix: String,
    /// Background load before the first probe, so that the probes meet a steady state.
    pub warmup: Duration,
    /// How long a probe waits for its events before they count as missing.
    pub timeout: Duration,
    /// Client id prefix of the three MQTT clients.
    pub client_id: String,
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyReport {
    pub probes: u32,
    /// Latencies of the probes whose event arrived, in milliseconds, in probe order.
    pub sse_ms: Vec<f64>,
    pub mqtt_ms: Vec<f64>,
    /// Background readings acknowledged by the broker per second while the probes ran.
    pub background_rate: f64,
    pub background_target: f64,
}

impl LatencyReport {
    pub fn sse_missing(&self) -> u32 {
        self.probes.saturating_sub(self.sse_ms.len() as u32)
    }

    pub fn mqtt_missing(&self) -> u32 {
        self.probes.saturating_sub(self.mqtt_ms.len() as u32)
    }

    /// One JSON object (for scripts).
    pub fn to_json(&self) -> serde_json::Value {
        let path = |samples: &[f64], missing: u32| {
            let p = Percentiles::of(samples);
            json!({
                "count": samples.len(),
                "missing": missing,
                "p50": p.map(|p| round2(p.p50)),
                "p90": p.map(|p| round2(p.p90)),
                "p99": p.map(|p| round2(p.p99)),
                "max": p.map(|p| round2(p.max)),
            })
        };
        json!({
            "probes": self.probes,
            "sse": path(&self.sse_ms, self.sse_missing()),
            "mqtt": path(&self.mqtt_ms, self.mqtt_missing()),
            "background_rate": self.background_rate.round(),
            "background_target": self.background_target.round(),
        })
    }

    /// The header, separator and one row of a Markdown table.
    pub fn markdown(&self) -> String {
        let cells = |samples: &[f64]| match Percentiles::of(samples) {
            Some(p) => format!("{:.2} | {:.2} | {:.2} | {:.2}", p.p50, p.p90, p.p99, p.max),
            None => "– | – | – | –".to_string(),
        };
        format!(
            "| probes | SSE p50 | SSE p90 | SSE p99 | SSE max | SSE missing | MQTT p50 | MQTT p90 | MQTT p99 | MQTT max | MQTT missing | background readings/s (target) |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {} | {} | {:.0} ({:.0}) |",
            self.probes,
            cells(&self.sse_ms),
            self.sse_missing(),
            cells(&self.mqtt_ms),
            self.mqtt_missing(),
            self.background_rate,
            self.background_target,
        )
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Nearest-rank percentiles of a sample, in its unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for an empty sample.
    pub fn of(samples: &[f64]) -> Option<Percentiles> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let n = sorted.len();
            // Nearest rank: the smallest value with at least p % of the sample at or below it.
            let i = ((p / 100.0) * n as f64).ceil() as usize;
            sorted[i.clamp(1, n) - 1]
        };
        let max = *sorted.last()?;
        Some(Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max,
        })
    }
}

/// Why a run could not be made (missing events are not errors: they are in the report).
#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    #[error("{0}")]
    Options(String),
    #[error("cannot connect to the gateway at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("GET /api/v1/alerts/stream answered {0:?}, not 200")]
    Status(String),
    #[error("the alert stream broke: {0}")]
    Stream(#[source] std::io::Error),
    #[error("the alert stream ended")]
    StreamEnded,
    #[error("the MQTT {client} client failed: {source}")]
    Mqtt {
        client: &'static str,
        source: Box<rumqttc::ConnectionError>,
    },
    #[error("the MQTT {0} client stopped")]
    ClientStopped(&'static str),
    #[error("{0} did not become ready within {1:?}")]
    NotReady(&'static str, Duration),
}

/// Probes waiting for their events: sensor → where to send the arrival time.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

fn arrived(waiters: &Waiters, sensor: &str, at: Instant) {
    let tx = waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(sensor);
    if let Some(tx) = tx {
        let _ = tx.send(at);
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send what it queued before its DISCONNECT.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Runs the background load and the probes; see the module docs.
pub async fn run(opts: &LatencyOptions) -> Result<LatencyReport, LatencyError> {
    let (host, port) = parse_url(&opts.broker).map_err(LatencyError::Options)?;
    let qos = match opts.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => return Err(LatencyError::Options(format!("--qos {q}: use 0 or 1"))),
    };
    if opts.sensors == 0 {
        return Err(LatencyError::Options("--sensors must be at least 1".into()));
    }
    let sse_waiters: Waiters = Arc::default();
    let mqtt_waiters: Waiters = Arc::default();

    // Both listeners are up before anything is published.
    let (sse_ready_tx, sse_ready) = oneshot::channel();
    let mut sse = tokio::spawn(follow_sse(
        opts.gateway.clone(),
        sse_waiters.clone(),
        sse_ready_tx,
    ));
    let filter = format!("{}/+/gas_detector/+", opts.topic_prefix);
    let sub_opts = mqtt_options(&format!("{}-sub", opts.client_id), &host, port);
    let (mqtt_ready_tx, mqtt_ready) = oneshot::channel();
    let mut sub = tokio::spawn(follow_mqtt(
        sub_opts,
        filter,
        qos,
        mqtt_waiters.clone(),
        mqtt_ready_tx,
    ));
    wait_ready(sse_ready, &mut sse, "the SSE stream").await?;
    wait_ready(mqtt_ready, &mut sub, "the MQTT alert subscription").await?;

    let (stop_tx, stop) = watch::channel(false);
    let acked = Arc::new(AtomicU64::new(0));
    let background = tokio::spawn(background_load(
        mqtt_options(&format!("{}-bg", opts.client_id), &host, port),
        qos,
        opts.rate / READINGS_PER_MESSAGE as f64,
        opts.sensors,
        acked.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(opts.warmup).await;

    let (probe_client, probe_loop) = mqtt_client(
        mqtt_options(&format!("{}-probe", opts.client_id), &host, port),
        1024,
    );
    let probe_acks = Arc::new(AtomicU64::new(0));
    let probe_poll = tokio::spawn(poll_counting_acks(
        probe_loop,
        "probe",
        probe_acks.clone(),
        stop,
    ));

    let acked_before = acked.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut probes = Vec::with_capacity(opts.probes as usize);
    for i in 0..opts.probes {
        tokio::time::sleep_until((started + opts.probe_interval * i).into()).await;
        let probe = Probe {
            sensor: format!("{}-{i}", opts.probe_prefix),
            client: probe_client.clone(),
            qos,
            timeout: opts.timeout,
        };
        probes.push(tokio::spawn(
            probe.run(sse_waiters.clone(), mqtt_waiters.clone()),
        ));
    }
    let mut sse_ms = Vec::with_capacity(probes.len());
    let mut mqtt_ms = Vec::with_capacity(probes.len());
    for p in probes {
        let (s, m) = p
            .await
            .map_err(|_| LatencyError::ClientStopped("probe"))??;
        sse_ms.extend(s.map(ms));
        mqtt_ms.extend(m.map(ms));
    }
    let seconds = started.elapsed().as_secs_f64();
    let background_rate = (acked.load(Ordering::SeqCst) - acked_before) as f64
        * READINGS_PER_MESSAGE as f64
        / seconds;

    // The resolving readings are not measured, but they must reach the broker before the
    // client goes, or the probes' alerts stay active.
    let publishes = u64::from(opts.probes) * 2;
    let deadline = Instant::now() + Duration::from_secs(5);
    while qos == QoS::AtLeastOnce
        && probe_acks.load(Ordering::SeqCst) < publishes
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = probe_client.try_disconnect();
    let _ = stop_tx.send(true);
    for task in [background, probe_poll] {
        task.await
            .map_err(|_| LatencyError::ClientStopped("background"))??;
    }
    sse.abort();
    sub.abort();
    Ok(LatencyReport {
        probes: opts.probes,
        sse_ms,
        mqtt_ms,
        background_rate,
        background_target: opts.rate,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn wait_ready(
    ready: oneshot::Receiver<()>,
    task: &mut tokio::task::JoinHandle<Result<(), LatencyError>>,
    what: &'static str,
) -> Result<(), LatencyError> {
    match tokio::time::timeout(READY_TIMEOUT, ready).await {
        Ok(Ok(())) => Ok(()),
        // The task ended before it was ready: its error says why.
        Ok(Err(_)) => match task.await {
            Ok(Err(e)) => Err(e),
            _ => Err(LatencyError::NotReady(what, READY_TIMEOUT)),
        },
        Err(_) => Err(LatencyError::NotReady(what, READY_TIMEOUT)),
    }
}

fn mqtt_options(client_id: &str, host: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(100);
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o
}

/// A client and its event loop with Nagle off: the tool must not hold its own small
/// packets (a probe, a PUBACK) back waiting for the peer's TCP ACK.
fn mqtt_client(opts: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(opts, capacity);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

struct Probe {
    sensor: String,
    client: AsyncClient,
    qos: QoS,
    timeout: Duration,
}

impl Probe {
    /// Publishes the alarm reading and waits for its two events; then resolves the alert.
    async fn run(
        self,
        sse: Waiters,
        mqtt: Waiters,
    ) -> Result<(Option<Duration>, Option<Duration>), LatencyError> {
        let topic = probe_topic(&self.sensor);
        let (sse_tx, sse_rx) = oneshot::channel();
        let (mqtt_tx, mqtt_rx) = oneshot::channel();
        lock(&sse).insert(self.sensor.clone(), sse_tx);
        lock(&mqtt).insert(self.sensor.clone(), mqtt_tx);
        let t0 = Instant::now();
        self.client
            .publish(&topic, self.qos, false, probe_payload(30.0))
            .await
            .map_err(|_| LatencyError::ClientStopped("probe"))?;
        let deadline = tokio::time::Instant::from(t0 + self.timeout);
        let since = |r: Result<Result<Instant, _>, _>| match r {
            Ok(Ok(at)) => Some(at.saturating_duration_since(t0)),
            _ => None,
        };
        let sse_latency = since(tokio::time::timeout_at(deadline, sse_rx).await);
        let mqtt_latency = since(tokio::time::timeout_at(deadline, mqtt_rx).await);
        lock(&sse).remove(&self.sensor);
        lock(&mqtt).remove(&self.sensor);
        self.client
            .publish(&topic, self.qos, false, probe_payload(0.0))
            .await
            .map_err(|_| LatencyError::ClientStopped("probe"))?;
        Ok((sse_latency, mqtt_latency))
    }
}

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Instant>>> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// The topic of a probe sensor (the default route `city/{district}/{kind}/{sensor}`).
pub fn probe_topic(sensor: &str) -> String {
    format!("city/bench/gas_detector/{sensor}")
}

/// A gas-detector reading stamped now.
pub fn probe_payload(lel: f64) -> String {
    format!("{{\"ts\":{},\"lel\":{lel:.1}}}", wall_ms())
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The topic of background sensor `i`.
pub fn background_topic(i: u64) -> String {
    format!("city/d{}/air_quality/aq-bench-{i:05}", i % 7)
}

/// Message `round` of a background sensor: all six metrics, well inside GB 3095 grade II,
/// changing a little from one message to the next (so no flat-line check fires).
pub fn background_payload(sensor: u64, round: u64, ts_ms: i64) -> String {
    let wobble = ((sensor + round) % 10) as f64 * 0.1;
    format!(
        "{{\"ts\":{ts_ms},\"pm25\":{:.1},\"pm10\":{:.1},\"so2\":{:.1},\"no2\":{:.1},\"o3\":{:.1},\"co\":{:.2}}}",
        20.0 + wobble,
        45.0 + wobble,
        8.0 + wobble,
        30.0 + wobble,
        60.0 + wobble,
        0.6 + wobble / 10.0,
    )
}

/// Publishes background messages at `msg_rate` per second until told to stop. The publishing
/// half runs in a task of its own so that the event loop is never blocked by it (rumqtt#1025).
async fn background_load(
    opts: MqttOptions,
    qos: QoS,
    msg_rate: f64,
    sensors: u64,
    acked: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
) -> Result<(), LatencyError> {
    let (client, eventloop) = mqtt_client(opts, 1024);
    let poll = tokio::spawn(poll_counting_acks(
        eventloop,
        "background",
        acked,
        stop.clone(),
    ));
    let mut last_ts = vec![0i64; sensors as usize];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tick.tick().await;
        // Paced by the clock, not by the ticks: a late tick publishes what fell due meanwhile.
        let due = (started.elapsed().as_secs_f64() * msg_rate) as u64;
        while sent < due {
            let sensor = sent % sensors;
            // Each sensor's timestamps go up even when two messages fall in one millisecond.
            let slot = &mut last_ts[sensor as usize];
            *slot = wall_ms().max(*slot + 1);
            let payload = background_payload(sensor, sent / sensors, *slot);
            if client
                .publish(background_topic(sensor), qos, false, payload)
                .await
                .is_err()
            {
                // The event loop ends only when told to stop, or with an error it reports.
                return poll
                    .await
                    .map_err(|_| LatencyError::ClientStopped("background"))?;
            }
            sent += 1;
        }
    }
    let _ = client.try_disconnect();
    poll.await
        .map_err(|_| LatencyError::ClientStopped("background"))?
}

/// Polls a publishing client's event loop, counting acknowledgements. Once told to stop it
/// goes on until the client's DISCONNECT is out (or a second has passed), so that what was
/// queued before it still reaches the broker.
async fn poll_counting_acks(
    mut eventloop: EventLoop,
    client: &'static str,
    acked: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LatencyError> {
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        let event = match stopping {
            None => tokio::select! {
                event = eventloop.poll() => event,
                _ = stop.changed() => {
                    stopping = Some(tokio::time::Instant::now() + STOP_GRACE);
                    continue;
                }
            },
            Some(deadline) => match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(event) => event,
                Err(_) => return Ok(()),
            },
        };
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
            Ok(_) => {}
            Err(_) if stopping.is_some() => return Ok(()),
            Err(source) => {
                return Err(LatencyError::Mqtt {
                    client,
                    source: Box::new(source),
                })
            }
        }
    }
}

/// Subscribes to the alert topics and reports each `raised` event's arrival.
async fn follow_mqtt(
    opts: MqttOptions,
    filter: String,
    qos: QoS,
    waiters: Waiters,
    ready: oneshot::Sender<()>,
) -> Result<(), LatencyError> {
    let (client, mut eventloop) = mqtt_client(opts, 16);
    client
        .try_subscribe(filter, qos)
        .map_err(|_| LatencyError::ClientStopped("subscriber"))?;
    let mut ready = Some(ready);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let at = Instant::now();
                if let Some(sensor) = raised_sensor(&p.payload) {
                    arrived(&waiters, &sensor, at);
                }
            }
            Ok(_) => {}
            Err(source) => {
                return Err(LatencyError::Mqtt {
                    client: "subscriber",
                    source: Box::new(source),
                })
            }
        }
    }
}

/// The sensor of a `raised` alert message (`{"seq","event","at","alert":{"sensor",..}}`);
/// `None` for any other event or text.
pub fn raised_sensor(data: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    if v.get("event")?.as_str()? != "raised" {
        return None;
    }
    Some(v.get("alert")?.get("sensor")?.as_str()?.to_string())
}

/// Reads the gateway's SSE stream and reports each `raised` event's arrival.
async fn follow_sse(
    gateway: String,
    waiters: Waiters,
    ready: oneshot::Sender<()>,
) -> Result<(), LatencyError> {
    let mut body = open_sse(&gateway).await?;
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut ready = Some(ready);
    loop {
        let bytes = body.next().await?.ok_or(LatencyError::StreamEnded)?;
        let at = Instant::now();
        parser.feed(&bytes, &mut events);
        for e in events.drain(..) {
            match e.event.as_str() {
                "snapshot" => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                "alert" => {
                    if let Some(sensor) = raised_sensor(e.data.as_bytes()) {
                        arrived(&waiters, &sensor, at);
                    }
                }
                _ => {}
            }
        }
    }
}

/// `host:port` of an `http://host:port[/...]` URL.
pub fn http_authority(url: &str) -> Result<&str, LatencyError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        LatencyError::Options(format!("{url}: only http://host:port is supported"))
    })?;
    let authority = rest.split('/').next().unwrap_or(rest);
    if !authority.contains(':') {
        return Err(LatencyError::Options(format!("{url}: the port is missing")));
    }
    Ok(authority)
}

/// Opens `GET /api/v1/alerts/stream` over plain HTTP/1.1 (loopback, so no TLS and no
/// client library), and returns its body once the 200 is in.
async fn open_sse(gateway: &str) -> Result<Body<BufReader<TcpStream>>, LatencyError> {
    let addr = http_authority(gateway)?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| LatencyError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    // Events are small; Nagle would only delay the request, never the measured reads.
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    let request = format!(
        "GET /api/v1/alerts/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(LatencyError::Stream)?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .await
        .map_err(LatencyError::Stream)?;
    if line.split_whitespace().nth(1) != Some("200") {
        return Err(LatencyError::Status(line.trim_end().to_string()));
    }
    let mut chunked = false;
    loop {
        line.clear();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(LatencyError::Stream)?;
        if n == 0 {
            return Err(LatencyError::StreamEnded);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    Ok(Body {
        reader: stream,
        chunked,
    })
}

/// An HTTP/1.1 response body, chunked or read until the connection closes.
pub struct Body<R> {
    reader: R,
    chunked: bool,
}

impl<R: AsyncBufRead + Unpin> Body<R> {
    pub fn new(reader: R, chunked: bool) -> Body<R> {
        Body { reader, chunked }
    }

    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, LatencyError> {
        if !self.chunked {
            let mut buf = vec![0u8; 8192];
            let n = self
                .reader
                .read(&mut buf)
                .await
                .map_err(LatencyError::Stream)?;
            buf.truncate(n);
            return Ok((n > 0).then_some(buf));
        }
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .await
            .map_err(LatencyError::Stream)?
            == 0
        {
            return Ok(None);
        }
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| {
            LatencyError::Stream(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad chunk size {:?}", line.trim_end()),
            ))
        })?;
        if size == 0 {
            return Ok(None);
        }
        let mut chunk = vec![0u8; size];
        self.reader
            .read_exact(&mut chunk)
            .await
            .map_err(LatencyError::Stream)?;
        let mut crlf = [0u8; 2];
        self.reader
            .read_exact(&mut crlf)
            .await
            .map_err(LatencyError::Stream)?;
        Ok(Some(chunk))
    }
}

/// One Server-Sent Event: its `event:` name (`message` when none) and its `data:` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Splits a byte stream into SSE events; pieces may end anywhere, even inside a line.
#[derive(Debug, Default)]
pub struct SseParser {
    partial: Vec<u8>,
    event: String,
    data: Option<String>,
}

impl SseParser {
    /// Adds bytes and appends every event they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = String::from_utf8_lossy(line).into_owned();
            start += end + 1;
            self.line(&line, out);
        }
        self.partial.drain(..start);
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                });
            }
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // Comments (`: keepalive`), `id:` and `retry:` do not matter here.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let p = Percentiles::of(&samples).expect("a sample");
        assert_eq!((p.p50, p.p90, p.p99, p.max), (100.0, 180.0, 198.0, 200.0));
        let one = Percentiles::of(&[7.5]).expect("a sample");
        assert_eq!((one.p50, one.p99, one.max), (7.5, 7.5, 7.5));
        assert_eq!(Percentiles::of(&[]), None);
    }

    #[test]
    fn sse_events_are_split_wherever_the_pieces_end() {
        let text = b": keepalive\n\nevent: snapshot\nid: 4\ndata: {\"seq\":4}\n\nevent: alert\r\ndata: a\r\ndata: b\r\n\r\n";
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for piece in text.chunks(5) {
            parser.feed(piece, &mut out);
        }
        assert_eq!(
            out,
            [
                SseEvent {
                    event: "snapshot".into(),
                    data: "{\"seq\":4}".into()
                },
                SseEvent {
                    event: "alert".into(),
                    data: "a\nb".into()
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_chunked_body_is_read_chunk_by_chunk() {
        let wire: &[u8] = b"6\r\nevent:\r\n3;x=1\r\n ok\r\n0\r\n\r\n";
        let mut body = Body::new(wire, true);
        assert_eq!(body.next().await.ok().flatten(), Some(b"event:".to_vec()));
        assert_eq!(body.next().await.ok().flatten(), Some(b" ok".to_vec()));
        assert_eq!(body.next().await.ok().flatten(), None);
        let mut bad = Body::new(&b"zz\r\n"[..], true);
        assert!(bad.next().await.is_err());
    }

    #[test]
    fn only_raised_events_name_their_sensor() {
        let raised = br#"{"seq":9,"event":"raised","at":1,"alert":{"sensor":"probe-3","kind":"gas_detector"}}"#;
        assert_eq!(raised_sensor(raised), Some("probe-3".into()));
        let resolved = br#"{"seq":10,"event":"resolved","at":2,"alert":{"sensor":"probe-3"}}"#;
        assert_eq!(raised_sensor(resolved), None);
        // A retained active-set message is a bare Alert, with no event.
        assert_eq!(raised_sensor(br#"{"sensor":"probe-3"}"#), None);
        assert_eq!(raised_sensor(b"not json"), None);
    }

    #[test]
    fn background_messages_carry_six_normal_air_quality_metrics() {
        let p = background_payload(3, 8, 1_763_800_000_000);
        let v: serde_json::Value = match serde_json::from_str(&p) {
            Ok(v) => v,
            Err(e) => panic!("{p}: {e}"),
        };
        assert_eq!(v["ts"], 1_763_800_000_000i64);
        // GB 3095 grade II: pm25 75, pm10 150, so2 150, no2 80, o3 160, co 4.
        let limits = [
            ("pm25", 75.0),
            ("pm10", 150.0),
            ("so2", 150.0),
            ("no2", 80.0),
            ("o3", 160.0),
            ("co", 4.0),
        ];
        for (metric, limit) in limits {
            let x = v[metric].as_f64().unwrap_or(f64::NAN);
            assert!(x > 0.0 && x < limit, "{metric} = {x}");
        }
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(1 + READINGS_PER_MESSAGE as usize)
        );
        assert_ne!(p, background_payload(3, 9, 1_763_800_000_000));
        assert_eq!(background_topic(12), "city/d5/air_quality/aq-bench-00012");
    }

    #[test]
    fn probes_read_above_the_gas_warning_level() {
        let v: serde_json::Value = serde_json::from_str(&probe_payload(30.0)).unwrap_or_default();
        assert_eq!(v["lel"].as_f64(), Some(30.0));
        assert!(v["ts"].as_i64().unwrap_or(0) > 1_700_000_000_000);
        assert_eq!(probe_topic("probe-1"), "city/bench/gas_detector/probe-1");
    }

    #[test]
    fn gateway_urls_give_host_and_port() {
        assert_eq!(
            http_authority("http://127.0.0.1:8080/").ok(),
            Some("127.0.0.1:8080")
        );
        assert!(http_authority("https://h:1").is_err());
        assert!(http_authority("http://h").is_err());
    }
}
