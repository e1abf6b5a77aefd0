//! A resilient MQTT publisher for the fleet and the scenarios: QoS 0 or 1, optional
//! username/password, and reconnection with backoff when the broker goes away.
//!
//! rumqttc reconnects on the next `poll` after an error and resends the publishes that were
//! not acknowledged, but it has no backoff of its own: the event-loop task here sleeps 0.5 s,
//! 1 s, 2 s ... up to 30 s between attempts, and starts again from 0.5 s after a ConnAck.
//! The publishing side never awaits anything the event-loop task waits on (rumqtt#1025).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Where and how to publish.
#[derive(Clone)]
pub struct MqttTarget {
    /// `mqtt://host:port`.
    pub url: String,
    pub username: Option<String>,
    /// The password itself (read from an environment variable by the binary); never printed.
    pub password: Option<String>,
    /// 0 or 1.
    pub qos: u8,
    pub client_id: String,
}

impl std::fmt::Debug for MqttTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTarget")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("qos", &self.qos)
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    BadTarget(String),
    #[error("the MQTT client stopped")]
    ClientStopped,
    #[error("{acked} of {sent} publishes acknowledged after {waited:?}")]
    NotAcknowledged {
        acked: u64,
        sent: u64,
        waited: Duration,
    },
}

/// A connected (or connecting) publisher. Drop it, or call [`Publisher::close`], to stop.
pub struct Publisher {
    client: AsyncClient,
    qos: QoS,
    sent: u64,
    done: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    /// Set by `close`: the connection's end is then expected, not an outage to retry.
    closing: Arc<AtomicBool>,
    events: tokio::task::JoinHandle<()>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Publisher {
    /// Starts the client; the connection is made in the background (publishes queue until
    /// it is up). Must be called inside a tokio runtime.
    pub fn connect(target: &MqttTarget) -> Result<Publisher, PublishError> {
        let (host, port) = crate::mqtt::parse_url(&target.url).map_err(PublishError::BadTarget)?;
        let qos = match target.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            q => return Err(PublishError::BadTarget(format!("QoS {q}: use 0 or 1"))),
        };
        let mut opts = MqttOptions::new(target.client_id.clone(), host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        opts.set_inflight(100);
        match (&target.username, &target.password) {
            (Some(u), p) => {
                opts.set_credentials(u.clone(), p.clone().unwrap_or_default());
            }
            (None, Some(_)) => {
                return Err(PublishError::BadTarget(
                    "a password without a username".into(),
                ))
            }
            (None, None) => {}
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let done = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let (done_ev, connected_ev, url) = (done.clone(), connected.clone(), target.url.clone());
        let closing_ev = closing.clone();
        let events = tokio::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if !connected_ev.swap(true, Ordering::Relaxed) {
                            eprintln!("citygate-sim: connected to {url}");
                        }
                        backoff = BACKOFF_MIN;
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => {
                        done_ev.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                        done_ev.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) if closing_ev.load(Ordering::Relaxed) => return,
                    Err(e) => {
                        connected_ev.store(false, Ordering::Relaxed);
                        eprintln!(
                            "citygate-sim: MQTT connection to {url}: {e}; retrying in {backoff:?}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        });
        Ok(Publisher {
            client,
            qos,
            sent: 0,
            done,
            connected,
            closing,
            events,
        })
    }

    /// Queues one publish; waits only when the client's queue is full (the broker is slow
    /// or away), which paces the caller.
    pub async fn publish(
        &mut self,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), PublishError> {
        self.client
            .publish(topic, self.qos, false, payload.into())
            .await
            .map_err(|_| PublishError::ClientStopped)?;
        self.sent += 1;
        Ok(())
    }

    /// Publishes queued so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Publishes acknowledged by the broker (QoS 1) or written to the socket (QoS 0).
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Waits until every publish so far is acknowledged (QoS 1) or written (QoS 0).
    pub async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let start = tokio::time::Instant::now();
        while self.done() < self.sent {
            if start.elapsed() > timeout {
                return Err(PublishError::NotAcknowledged {
                    acked: self.done(),
                    sent: self.sent,
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Flushes (up to `timeout`), disconnects and stops the event loop.
    pub async fn close(self, timeout: Duration) -> Result<(), PublishError> {
        let flushed = self.flush(timeout).await;
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        // Give the DISCONNECT a moment to leave before the event loop is stopped.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.events.abort();
        flushed
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.events.abort();
    }
}
