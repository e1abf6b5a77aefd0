//! A resilient MQTT publisher for the fleet and the scenarios: QoS 0 or 1, optional
//! username/password, and reconnection with backoff when the broker goes away.
//!
//! rumqttc reconnects on the next `poll` after an error and resends the publishes that were
//! not acknowledged, but it has no backoff of its own: the event-loop task here sleeps 0.5 s,
//! 1 s, 2 s ... up to 30 s between attempts, and starts again from 0.5 s after a ConnAck.
//! The publishing side never awaits anything the event-loop task waits on (rumqtt#1025).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ack_ledger::AckLedger;

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
    #[error("the acknowledgement record: {0}")]
    Record(String),
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
    /// With a record file: which message each acknowledgement completes.
    ledger: Option<Arc<Mutex<AckLedger<String>>>>,
}

type Recording = (Arc<Mutex<AckLedger<String>>>, std::fs::File);

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Publisher {
    /// Starts the client; the connection is made in the background (publishes queue until
    /// it is up). Must be called inside a tokio runtime.
    pub fn connect(target: &MqttTarget) -> Result<Publisher, PublishError> {
        Self::start(target, None)
    }

    /// Like [`Publisher::connect`] (QoS 1 only), and appends each message's record (given to
    /// [`Publisher::publish_recorded`]) to `record` once the broker has acknowledged it, and
    /// only then. The session is persistent (`clean_session = false`): on a reconnect into a
    /// new session rumqttc drops unacknowledged publishes without saying which.
    pub fn connect_recording(
        target: &MqttTarget,
        record: std::fs::File,
    ) -> Result<Publisher, PublishError> {
        if target.qos != 1 {
            return Err(PublishError::BadTarget(
                "recording acknowledgements needs QoS 1".into(),
            ));
        }
        Self::start(target, Some((Arc::default(), record)))
    }

    fn start(target: &MqttTarget, recording: Option<Recording>) -> Result<Publisher, PublishError> {
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
        if recording.is_some() {
            opts.set_clean_session(false);
        }
        let ledger = recording.as_ref().map(|(l, _)| l.clone());
        let mut record = recording;
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
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if let Some((ledger, _)) = &record {
                            lock(ledger).connected(ack.session_present);
                        }
                        if !connected_ev.swap(true, Ordering::Relaxed) {
                            eprintln!("citygate-sim: connected to {url}");
                        }
                        backoff = BACKOFF_MIN;
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) if qos == QoS::AtLeastOnce => {
                        if let Some((ledger, file)) = &mut record {
                            let line = lock(ledger).acked(ack.pkid);
                            if let Some(line) = line {
                                if let Err(e) = file.write_all(line.as_bytes()) {
                                    lock(ledger).write_failed(&e);
                                }
                            }
                        }
                        done_ev.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) if record.is_some() => {
                        if let Some((ledger, _)) = &record {
                            lock(ledger).sent(pkid);
                        }
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
            ledger,
        })
    }

    /// Publishes a message whose `record` (one or more whole lines) goes to the record file
    /// once the broker acknowledged it. Needs [`Publisher::connect_recording`].
    pub async fn publish_recorded(
        &mut self,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
        record: String,
    ) -> Result<(), PublishError> {
        let Some(ledger) = &self.ledger else {
            return Err(PublishError::Record(
                "publish_recorded on a publisher without a record".into(),
            ));
        };
        // Queued before the client can send it, so the event loop always finds it.
        lock(ledger).queued(record);
        self.publish(topic, payload).await
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
        if let Some(ledger) = &self.ledger {
            if let Some(why) = lock(ledger).lost_track() {
                return Err(PublishError::Record(why.to_string()));
            }
        }
        flushed
    }
}

/// The ledger is only ever held for a few map operations; a panic while holding it cannot leave
/// it half-updated in a way that matters more than the panic itself.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.events.abort();
    }
}
