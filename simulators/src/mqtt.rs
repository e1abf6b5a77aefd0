//! MQTT load generation and a plain counting subscriber, for measuring a broker and the
//! gateway behind it (`citygate-sim load`, `citygate-sim subscribe-rate`).
//!
//! The load is N readings from M simulated noise sensors, as citygate JSON on
//! `<prefix>/<district>/noise/<sensor>` (the default route `city/{district}/{kind}/{sensor}`).
//! Values stay below every noise limit and change from one reading to the next, so the
//! gateway stores them all and raises no alert; each sensor's timestamps are one second
//! apart (10 ms) and end at the start of the run, so none is in the future or a duplicate.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// What to publish and where.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `mqtt://host:port`.
    pub url: String,
    /// Readings in all.
    pub readings: u64,
    /// Distinct sensors (topics); readings go round-robin over them.
    pub sensors: u64,
    /// 0 or 1.
    pub qos: u8,
    /// First topic level.
    pub prefix: String,
    /// Parallel client connections; the readings are split between them.
    pub connections: u32,
    /// Unacknowledged QoS 1 publishes per connection.
    pub inflight: u16,
    /// Client id prefix (`-<n>` is appended).
    pub client_id: String,
}

/// What a load run achieved.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    pub published: u64,
    pub seconds: f64,
}

impl LoadReport {
    pub fn rate(&self) -> f64 {
        rate(self.published, self.seconds)
    }
}

/// What a subscriber saw.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscribeReport {
    pub received: u64,
    /// From the first message to the last.
    pub seconds: f64,
    /// Wall clock (epoch seconds) of the last message, for rates measured from elsewhere.
    pub last_at: f64,
}

impl SubscribeReport {
    pub fn rate(&self) -> f64 {
        rate(self.received, self.seconds)
    }
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// `host` and `port` of an `mqtt://host:port` URL.
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| format!("{url}: only mqtt://host:port is supported"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{url}: the port is missing"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{url}: bad port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url}: the host is missing"));
    }
    Ok((host.to_string(), port))
}

/// The topic of load sensor `i`.
pub fn load_topic(prefix: &str, sensor: u64) -> String {
    format!("{prefix}/d{}/noise/{}", sensor % 7, load_sensor_id(sensor))
}

fn load_sensor_id(sensor: u64) -> String {
    format!("ld-{sensor:05}")
}

/// Reading `round` of load sensor `sensor`, stamped `ts_ms`.
pub fn load_payload(sensor: u64, round: u64, ts_ms: i64) -> String {
    // 38.0 .. 43.4 dB(A): below the quietest night limit, never the same twice in a row.
    let laeq = 38.0 + (sensor % 10) as f64 * 0.5 + (round % 5) as f64 * 0.1;
    format!(
        "{{\"sensor\":\"{}\",\"kind\":\"noise\",\"ts\":{ts_ms},\"laeq\":{laeq:.1}}}",
        load_sensor_id(sensor)
    )
}

fn qos(q: u8) -> Result<QoS, String> {
    match q {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(format!("QoS {q} does not exist")),
    }
}

fn wall_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Publishes the load as fast as the broker takes it. With QoS 1 a run ends when every
/// publish is acknowledged; with QoS 0 when every publish is written to the socket.
pub async fn load(opts: &LoadOptions) -> Result<LoadReport, String> {
    let (host, port) = parse_url(&opts.url)?;
    let qos = qos(opts.qos)?;
    if opts.sensors == 0 || opts.connections == 0 {
        return Err("--sensors and --connections must be at least 1".into());
    }
    let rounds = opts.readings.div_ceil(opts.sensors) as i64;
    let end_ms = (wall_s() * 1000.0) as i64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..u64::from(opts.connections) {
        // Connection c publishes readings c, c + C, c + 2C, ...
        let mine: Vec<u64> = (c..opts.readings)
            .step_by(opts.connections as usize)
            .collect();
        let mut mqtt = MqttOptions::new(format!("{}-{c}", opts.client_id), host.clone(), port);
        mqtt.set_keep_alive(Duration::from_secs(30));
        mqtt.set_inflight(opts.inflight.max(1));
        mqtt.set_max_packet_size(256 * 1024, 256 * 1024);
        let prefix = opts.prefix.clone();
        let sensors = opts.sensors;
        tasks.push(tokio::spawn(async move {
            publish_share(mqtt, qos, mine, move |i| {
                let (sensor, round) = (i % sensors, i / sensors);
                let ts = end_ms - (rounds - round as i64) * 10;
                (load_topic(&prefix, sensor), load_payload(sensor, round, ts))
            })
            .await
        }));
    }
    let mut published = 0;
    for t in tasks {
        published += t.await.map_err(|e| format!("a publisher failed: {e}"))??;
    }
    Ok(LoadReport {
        published,
        seconds: start.elapsed().as_secs_f64(),
    })
}

async fn publish_share(
    mqtt: MqttOptions,
    qos: QoS,
    readings: Vec<u64>,
    message: impl Fn(u64) -> (String, String) + Send + 'static,
) -> Result<u64, String> {
    let total = readings.len() as u64;
    let (client, mut eventloop) = AsyncClient::new(mqtt, 1024);
    // The publisher awaits the client in its own task; the event loop below is never blocked
    // by it (rumqtt#1025).
    let publisher = tokio::spawn(async move {
        for i in readings {
            let (topic, payload) = message(i);
            if client.publish(topic, qos, false, payload).await.is_err() {
                return Err("the client stopped".to_string());
            }
        }
        Ok(client)
    });
    let mut done = 0u64;
    while done < total {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => done += 1,
            Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => done += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => done += 1,
            Ok(_) => {}
            Err(e) => return Err(format!("MQTT connection failed: {e}")),
        }
    }
    let client = publisher
        .await
        .map_err(|e| format!("the publisher failed: {e}"))??;
    // Let the DISCONNECT (and, for QoS 0, the last publishes) reach the broker.
    let _ = client.try_disconnect();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
    }
    Ok(total)
}

/// Subscribes to `filter` and counts messages until `count` have arrived. `ready` is called
/// once the subscription is acknowledged, so that a load can start after it.
pub async fn subscribe_rate(
    url: &str,
    filter: &str,
    q: u8,
    count: u64,
    timeout: Duration,
    ready: impl FnOnce(),
) -> Result<SubscribeReport, String> {
    let (host, port) = parse_url(url)?;
    let qos = qos(q)?;
    let mut mqtt = MqttOptions::new(
        format!("citygate-sim-sub-{}", std::process::id()),
        host,
        port,
    );
    mqtt.set_keep_alive(Duration::from_secs(30));
    mqtt.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(mqtt, 16);
    client
        .try_subscribe(filter, qos)
        .map_err(|e| format!("cannot subscribe: {e}"))?;
    let mut ready = Some(ready);
    let mut received = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    while received < count {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .map_err(|_| format!("timed out after {received} of {count} messages"))?;
        match event {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(f) = ready.take() {
                    f();
                }
            }
            Ok(Event::Incoming(Packet::Publish(_))) => {
                received += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Ok(_) => {}
            Err(e) => return Err(format!("MQTT connection failed: {e}")),
        }
    }
    let last_at = wall_s();
    let _ = client.try_disconnect();
    Ok(SubscribeReport {
        received,
        seconds: first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0),
        last_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_topics_follow_the_default_route() {
        assert_eq!(load_topic("city", 12), "city/d5/noise/ld-00012");
    }

    #[test]
    fn load_payloads_are_citygate_json_below_every_noise_limit() {
        let p = load_payload(9, 4, 1_700_000_000_000);
        let v: serde_json::Value = match serde_json::from_str(&p) {
            Ok(v) => v,
            Err(e) => panic!("{p}: {e}"),
        };
        assert_eq!(v["sensor"], "ld-00009");
        assert_eq!(v["kind"], "noise");
        assert_eq!(v["ts"], 1_700_000_000_000i64);
        assert_eq!(v["laeq"].as_f64(), Some(42.9));
    }

    #[test]
    fn urls_name_host_and_port() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883))
        );
        assert_eq!(parse_url("mqtt://[::1]:1884/x"), Ok(("::1".into(), 1884)));
        assert!(parse_url("mqtts://h:1").is_err());
        assert!(parse_url("mqtt://h").is_err());
    }
}
