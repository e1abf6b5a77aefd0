//! The event-loop task, one for both protocol versions. rumqttc's MQTT 3.1.1 and MQTT 5
//! clients have separate, incompatible types; [`Protocol`] turns each one's events into the
//! few [`Step`]s the loop cares about, so that the loop itself (reconnects, resubscribing,
//! queueing without ever waiting) exists once.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;
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
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let name = shared.status.name.clone();
    loop {
        let polled = tokio::select! {
            ev = proto.poll() => Some(ev),
            _ = shared.reconnect.notified(), if !shared.stopping.load(Ordering::SeqCst) => None,
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
                        ack: *ack,
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
