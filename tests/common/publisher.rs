//! A test MQTT publisher (rumqttc, v3.1.1 or v5) that publishes at QoS 1 and returns only
//! once the broker acknowledged every message. If the connection drops (a broker restart),
//! it reconnects and publishes the unacknowledged window again: a duplicate is harmless
//! (the store keeps one point per series and time), a loss is not.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    V311,
    V5,
}

impl Proto {
    /// The value of `protocol` in an `[[mqtt]]` section.
    pub fn config_name(self) -> &'static str {
        match self {
            Proto::V311 => "v311",
            Proto::V5 => "v5",
        }
    }
}

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    /// MQTT 5 user properties (ignored over 3.1.1).
    pub user_properties: Vec<(String, String)>,
}

impl Msg {
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Msg {
        Msg {
            topic: topic.into(),
            payload: payload.into(),
            user_properties: Vec::new(),
        }
    }

    pub fn with_property(mut self, key: &str, value: &str) -> Msg {
        self.user_properties.push((key.into(), value.into()));
        self
    }
}

enum Ev {
    ConnAck,
    PubAck,
    Error(String),
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

struct Conn {
    client: Client,
    events: mpsc::UnboundedReceiver<Ev>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Publisher {
    port: u16,
    proto: Proto,
    client_id: String,
    conn: Option<Conn>,
    /// How many times the connection was made again after a drop.
    pub reconnects: u32,
}

/// Messages published before waiting for their acknowledgements.
const WINDOW: usize = 100;
/// A failure guard, not a speed expectation.
const DEADLINE: Duration = Duration::from_secs(120);

impl Publisher {
    pub async fn connect(port: u16, proto: Proto) -> Publisher {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut p = Publisher {
            port,
            proto,
            client_id: format!("test-pub-{}-{n}", std::process::id()),
            conn: None,
            reconnects: 0,
        };
        p.ensure_connected().await;
        p
    }

    fn open(&self) -> Conn {
        let (tx, events) = mpsc::unbounded_channel();
        match self.proto {
            Proto::V311 => {
                let mut o = rumqttc::MqttOptions::new(&self.client_id, "127.0.0.1", self.port);
                o.set_clean_session(true)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_inflight(WINDOW as u16)
                    .set_max_packet_size(4 << 20, 4 << 20)
                    .set_request_channel_capacity(WINDOW);
                let (client, mut el) = rumqttc::AsyncClient::new(o, WINDOW);
                let task = tokio::spawn(async move {
                    use rumqttc::{Event, Packet};
                    loop {
                        let ev = match el.poll().await {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => Ev::ConnAck,
                            Ok(Event::Incoming(Packet::PubAck(_))) => Ev::PubAck,
                            Ok(_) => continue,
                            Err(e) => {
                                let _ = tx.send(Ev::Error(e.to_string()));
                                return;
                            }
                        };
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                });
                Conn {
                    client: Client::V4(client),
                    events,
                    task,
                }
            }
            Proto::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(&self.client_id, "127.0.0.1", self.port);
                o.set_clean_start(true)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(Some(4 << 20))
                    .set_request_channel_capacity(WINDOW);
                let (client, mut el) = rumqttc::v5::AsyncClient::new(o, WINDOW);
                let task = tokio::spawn(async move {
                    use rumqttc::v5::mqttbytes::v5::Packet;
                    use rumqttc::v5::Event;
                    loop {
                        let ev = match el.poll().await {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => Ev::ConnAck,
                            Ok(Event::Incoming(Packet::PubAck(_))) => Ev::PubAck,
                            Ok(_) => continue,
                            Err(e) => {
                                let _ = tx.send(Ev::Error(e.to_string()));
                                return;
                            }
                        };
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                });
                Conn {
                    client: Client::V5(client),
                    events,
                    task,
                }
            }
        }
    }

    /// Connects (again), retrying until the broker answers or the deadline passes.
    async fn ensure_connected(&mut self) {
        if self.conn.is_some() {
            return;
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut conn = self.open();
            let outcome = tokio::time::timeout(Duration::from_secs(10), conn.events.recv()).await;
            match outcome {
                Ok(Some(Ev::ConnAck)) => {
                    self.conn = Some(conn);
                    return;
                }
                other => {
                    let why = match other {
                        Ok(Some(Ev::Error(e))) => e,
                        Ok(_) => "event loop ended".into(),
                        Err(_) => "no CONNACK in 10 s".into(),
                    };
                    assert!(
                        Instant::now() < deadline,
                        "test publisher cannot connect to 127.0.0.1:{}: {why}",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn send(&self, conn: &Conn, m: &Msg) -> Result<(), String> {
        let qos1 = rumqttc::QoS::AtLeastOnce;
        match &conn.client {
            Client::V4(c) => c
                .publish(m.topic.clone(), qos1, false, m.payload.clone())
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                    user_properties: m.user_properties.clone(),
                    ..Default::default()
                };
                c.publish_with_properties(
                    m.topic.clone(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    m.payload.clone(),
                    props,
                )
                .await
                .map_err(|e| e.to_string())
            }
        }
    }

    /// Publishes every message at QoS 1; returns once the broker acknowledged all of them.
    pub async fn publish_all(&mut self, msgs: &[Msg]) {
        let deadline = Instant::now() + DEADLINE;
        for window in msgs.chunks(WINDOW) {
            loop {
                assert!(
                    Instant::now() < deadline,
                    "test publisher: no PUBACKs from the broker in {DEADLINE:?}"
                );
                self.ensure_connected().await;
                if self.try_window(window).await.is_ok() {
                    break;
                }
                // The connection dropped with some of the window unacknowledged: start a
                // new connection and publish the whole window again.
                self.conn = None;
                self.reconnects += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn try_window(&mut self, window: &[Msg]) -> Result<(), String> {
        let mut conn = self.conn.take().ok_or("not connected")?;
        let result = async {
            for m in window {
                self.send(&conn, m).await?;
            }
            let mut acked = 0;
            while acked < window.len() {
                match tokio::time::timeout(Duration::from_secs(10), conn.events.recv()).await {
                    Ok(Some(Ev::PubAck)) => acked += 1,
                    Ok(Some(Ev::ConnAck)) => {}
                    Ok(Some(Ev::Error(e))) => return Err(e),
                    Ok(None) => return Err("event loop ended".into()),
                    Err(_) => return Err("no PUBACK in 10 s".into()),
                }
            }
            Ok(())
        }
        .await;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish_all(&[Msg::new(topic, payload)]).await;
    }
}

/// Publishes each message with `mosquitto_pub` (QoS 1; one process per message: it exits
/// only after the broker's PUBACK).
pub fn mosquitto_pub(port: u16, msgs: &[Msg]) {
    super::mosquitto::require_clients();
    for m in msgs {
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t"])
            .arg(&m.topic)
            .arg("-m")
            .arg(String::from_utf8_lossy(&m.payload).as_ref())
            .output()
            .expect("run mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
