//! The event-loop task, one for both protocol versions. rumqttc's MQTT 3.1.1 and MQTT 5
//! clients have separate, incompatible types; [`Protocol`] turns each one's events into the
//! few [`Step`]s the loop cares about, so that the loop itself (reconnects, resubscribing,
//! queueing without ever waiting) exists once.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::source::{sleep_or_stop, AckHandle, Message, MessageQueue, Shared};
use crate::app::now_ms;
use crate::backoff::Backoff;
use crate::model::TimestampMs;

/// What the loop needs to know of one event.
pub(super) enum Step {
    /// Connected; `session_present` says whether the broker kept our session.
    ConnAck { session_present: bool },
    /// The broker's answer to our subscriptions, in filter order.
    SubAck(Vec<Grant>),
    /// A message, with the MQTT 5 user property `ts` if it had one.
    Publish(Box<AckHandle>, Option<TimestampMs>),
    /// Our own DISCONNECT went out.
    Disconnected,
    /// Anything else (pings, acks going out...).
    Other,
}

/// How the broker answered one subscription.
pub(super) enum Grant {
    Granted,
    /// Granted at QoS 0 only: messages can be lost.
    AtMostOnce,
    Refused(String),
}

/// One protocol version's client glue.
pub(super) trait Protocol: Send + 'static {
    type Error: Send;
    /// Polls rumqttc's event loop once.
    fn poll(&mut self) -> impl Future<Output = Result<Step, Self::Error>> + Send;
    /// Drops the connection state, so that the next poll reconnects.
    fn clean(&mut self);
    /// Queues the subscriptions (never waits: this runs in the event-loop task).
    fn subscribe(&self, filters: &[String]) -> Result<(), String>;
    /// Whether [`Protocol::write_acks`] works: the acks of committed batches then come to
    /// the event-loop task, which writes a batch of them with one flush. Otherwise the acker
    /// sends each through the client's request channel, which rumqttc writes and flushes one
    /// by one (a syscall and an event-loop round per message).
    const DIRECT_ACKS: bool;
    /// Writes the acks onto the current connection and flushes once; returns how many
    /// messages are acknowledged (QoS 0 ones need no packet and count too). Without a
    /// connection nothing is written: the broker redelivers.
    fn write_acks(
        &mut self,
        acks: &[&AckHandle],
    ) -> impl Future<Output = Result<usize, Self::Error>> + Send;
    /// Whether a connection is up (only asked when [`Protocol::DIRECT_ACKS`]): while it is
    /// not, a poll is inside rumqttc's connect, whose progress lives in the poll future, so
    /// acks must not interrupt it.
    fn connected(&self) -> bool {
        true
    }
    /// A connection error in plain words.
    fn describe(e: &Self::Error) -> String;
    /// The name of the broker's in-flight window in this version, for messages.
    const WINDOW: &'static str;
}

/// The event-loop task. It never `.await`s the client (rumqtt#1025): the client's requests
/// are drained by this very loop, so awaiting one here could deadlock; only `try_*` is used.
/// Nor does it ever wait on the queue to the batcher (see [`MessageQueue`]).
pub(super) async fn run<P: Protocol>(
    mut proto: P,
    filters: Vec<String>,
    shared: Arc<Shared>,
    tx: MessageQueue,
    mut acks: Option<mpsc::Receiver<Vec<Message>>>,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let name = shared.status.name.clone();
    loop {
        let connected = proto.connected();
        let polled = tokio::select! {
            // Acks first: at stop, the DISCONNECT queued after the last batch was handed over
            // must not overtake its acks. Dropping the poll future meanwhile is safe once
            // connected: rumqttc keeps read bytes and decoded events in the event loop, not in
            // the future. While connecting it is not (the TCP, TLS and CONNECT exchange lives
            // in the future), so acks wait; those of the old connection are not written anyway.
            biased;
            Some(batch) = next_acks(&mut acks), if connected => match send_acks(&mut proto, &shared, &batch).await {
                Ok(()) => continue,
                Err(e) => Some(Err(e)),
            },
            // Before the poll, which is ready all the time under load.
            _ = shared.reconnect.notified(), if !shared.stopping.load(Ordering::SeqCst) => None,
            ev = proto.poll() => Some(ev),
        };
        let reason = match polled {
            Some(Ok(step)) => match step {
                Step::ConnAck { session_present } => {
                    backoff.reset();
                    shared.on_connected(session_present);
                    // rumqttc never resubscribes by itself; a broker without our session (or
                    // with a fresh one) would otherwise send nothing.
                    if !filters.is_empty() {
                        if let Err(e) = proto.subscribe(&filters) {
                            error!(connection = %name, error = %e, "cannot queue the MQTT subscription");
                        }
                    }
                    continue;
                }
                Step::SubAck(grants) => {
                    for (filter, grant) in filters.iter().zip(grants) {
                        match grant {
                            Grant::Granted => {}
                            Grant::AtMostOnce => {
                                warn!(connection = %name, filter = %filter, "the broker granted only QoS 0: messages can be lost");
                            }
                            Grant::Refused(why) => {
                                let msg = format!(
                                    "the broker refused the subscription to {filter:?}: {why}"
                                );
                                error!(connection = %name, "{msg}");
                                shared.status.set_error(msg, now_ms());
                            }
                        }
                    }
                    continue;
                }
                Step::Publish(ack, ts) => {
                    if shared.stopping.load(Ordering::SeqCst) {
                        // Not processed, not acked: the broker keeps it for next time.
                        continue;
                    }
                    shared.status.count_received(1);
                    let msg = Message {
                        ack,
                        received_at: now_ms(),
                        generation: shared.generation(),
                        ts,
                    };
                    // Never waits (see MessageQueue): the broker's window bounds the queue; a
                    // broker that floods past its budget gets the connection dropped, and
                    // redelivers what was not acknowledged.
                    if tx.push(msg) {
                        continue;
                    }
                    format!(
                        "the broker sent far more unacknowledged messages than the {}; reconnecting",
                        P::WINDOW
                    )
                }
                Step::Disconnected if shared.stopping.load(Ordering::SeqCst) => break,
                Step::Disconnected | Step::Other => continue,
            },
            Some(Err(e)) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                // The connection is gone anyway: a pending reconnect request is served.
                shared.take_reconnect_request();
                P::describe(&e)
            }
            None if !shared.take_reconnect_request() => continue,
            // A commit failed: drop the connection so that the broker redelivers.
            None => "reconnecting to get unacknowledged messages redelivered".to_string(),
        };
        shared.new_generation(|| proto.clean());
        shared.on_error(&reason);
        if !sleep_or_stop(backoff.next_delay(), &mut stop).await {
            break;
        }
    }
    shared.loop_done.store(true, Ordering::SeqCst);
    shared.status.set_connected(false);
}

/// The next batch of acks for the event loop to write; never ready without a channel, and
/// the channel is dropped once the acker is gone.
async fn next_acks(acks: &mut Option<mpsc::Receiver<Vec<Message>>>) -> Option<Vec<Message>> {
    let rx = acks.as_mut()?;
    match rx.recv().await {
        Some(batch) => Some(batch),
        None => {
            *acks = None;
            None
        }
    }
}

/// Writes the acks of a committed batch, in arrival order, skipping messages of an earlier
/// connection (see the generation rule in `source.rs`): the broker redelivers those.
async fn send_acks<P: Protocol>(
    proto: &mut P,
    shared: &Shared,
    batch: &[Message],
) -> Result<(), P::Error> {
    // Only this task moves the generation, so it cannot change while the acks are written.
    let current = shared.generation();
    let live: Vec<&AckHandle> = batch
        .iter()
        .filter(|m| m.generation == current)
        .map(|m| &*m.ack)
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    let acked = proto.write_acks(&live).await?;
    shared.status.count_acked(acked as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use bytes::Bytes;
    use tokio::sync::Notify;

    use super::*;
    use crate::sources::mqtt::status::SourceStatus;

    /// Records the packet ids it is asked to ack.
    struct Recorder {
        written: Vec<u16>,
    }

    impl Protocol for Recorder {
        type Error = String;
        const WINDOW: &'static str = "window";
        const DIRECT_ACKS: bool = true;

        async fn poll(&mut self) -> Result<Step, String> {
            Ok(Step::Other)
        }
        fn clean(&mut self) {}
        fn subscribe(&self, _filters: &[String]) -> Result<(), String> {
            Ok(())
        }
        fn describe(e: &String) -> String {
            e.clone()
        }
        async fn write_acks(&mut self, acks: &[&AckHandle]) -> Result<usize, String> {
            for ack in acks {
                if let AckHandle::V4(p) = ack {
                    self.written.push(p.pkid);
                }
            }
            Ok(acks.len())
        }
    }

    fn message(pkid: u16, generation: u64) -> Message {
        let mut p = rumqttc::Publish::new(
            "city/x/noise/a",
            rumqttc::QoS::AtLeastOnce,
            Bytes::from_static(b"{}"),
        );
        p.pkid = pkid;
        Message {
            ack: Box::new(AckHandle::V4(p)),
            received_at: 0,
            generation,
            ts: None,
        }
    }

    #[tokio::test]
    async fn acks_are_written_in_order_and_only_for_the_current_connection() {
        let shared = Shared {
            status: Arc::new(SourceStatus::new("t", "mqtt://x:1")),
            generation: Mutex::new(1),
            reconnect: Notify::new(),
            reconnect_wanted: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            loop_done: AtomicBool::new(false),
        };
        let mut proto = Recorder {
            written: Vec::new(),
        };
        // Ids 1 and 2 came on the connection before the current one: on this one they may
        // name other, uncommitted messages, so they must not be acked.
        let batch = vec![message(1, 0), message(7, 1), message(2, 0), message(3, 1)];
        send_acks(&mut proto, &shared, &batch)
            .await
            .expect("written");
        assert_eq!(proto.written, vec![7, 3]);
        assert_eq!(shared.status.snapshot().acked, 2);
        // A batch wholly of an old connection writes nothing.
        send_acks(&mut proto, &shared, &[message(9, 0)])
            .await
            .expect("nothing to write");
        assert_eq!(proto.written, vec![7, 3]);
        assert_eq!(shared.status.snapshot().acked, 2);
    }
}
