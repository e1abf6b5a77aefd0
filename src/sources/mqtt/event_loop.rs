//! The event-loop task, one for both protocol versions. rumqttc's MQTT 3.1.1 and MQTT 5
//! clients have separate, incompatible types; [`Protocol`] turns each one's events into the
//! few [`Step`]s the loop cares about, so that the loop itself (reconnects, resubscribing,
//! queueing without ever waiting) exists once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::source::{
    not_committed, sleep_or_stop, AckHandle, AckJob, Message, MessageQueue, Shared, Uncommitted,
    ACK_JOBS,
};
use crate::app::{now_ms, IngestError, Receipt};
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
    /// Whether [`Protocol::write_acks`] works: the event-loop task then waits for each
    /// batch's commit itself and writes its acks with one flush. Otherwise the acker task
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
    mut committing: Option<Committing>,
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
            ev = next_commit(&mut committing), if connected => match ev {
                CommitEvent::Committed(Ok(_), messages) => match send_acks(&mut proto, &shared, &messages).await {
                    Ok(()) => continue,
                    Err(e) => Some(Err(e)),
                },
                // Shutting down: not acked, the broker keeps them for next time.
                CommitEvent::Committed(Err(IngestError::Stopped), _) => continue,
                CommitEvent::Committed(Err(e), messages) => {
                    not_committed(&shared, &messages, &e);
                    continue;
                }
                CommitEvent::Queued => continue,
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

/// The batches handed to the pipeline, oldest first, each waiting for its commit so that
/// the event-loop task can ack its messages (MQTT 3.1.1). The store thread's commit notice
/// wakes this task directly: no acker task in between.
pub(super) struct Committing {
    /// From the batcher; `None` once it has stopped.
    jobs_rx: Option<mpsc::Receiver<AckJob>>,
    /// Taken from `jobs_rx`, at most [`ACK_JOBS`], so that the channel keeps bounding the
    /// batches in flight. They commit in order, so only the oldest is waited for.
    jobs: VecDeque<AckJob>,
    uncommitted: Arc<Uncommitted>,
    /// Set once the batcher has stopped and every batch it handed over is done: `stop` then
    /// sends the DISCONNECT, behind the last acks.
    drained: watch::Sender<bool>,
}

/// What [`next_commit`] saw.
enum CommitEvent {
    /// The oldest batch's commit came back: its messages, to ack if it succeeded.
    Committed(Result<Receipt, IngestError>, Vec<Message>),
    /// A new batch was taken from the batcher (or the batcher stopped).
    Queued,
}

impl Committing {
    pub(super) fn new(
        jobs_rx: mpsc::Receiver<AckJob>,
        uncommitted: Arc<Uncommitted>,
        drained: watch::Sender<bool>,
    ) -> Self {
        Committing {
            jobs_rx: Some(jobs_rx),
            jobs: VecDeque::with_capacity(ACK_JOBS),
            uncommitted,
            drained,
        }
    }

    async fn next(&mut self) -> CommitEvent {
        let room = self.jobs.len() < ACK_JOBS;
        tokio::select! {
            // The oldest commit first: its acks free the broker's window.
            biased;
            committed = oldest(&mut self.jobs) => {
                let messages = self.jobs.pop_front().map(|j| j.messages).unwrap_or_default();
                self.uncommitted.one_done();
                self.check_drained();
                CommitEvent::Committed(committed, messages)
            }
            job = recv_or_never(&mut self.jobs_rx), if room => {
                match job {
                    Some(job) => self.jobs.push_back(job),
                    None => {
                        self.jobs_rx = None;
                        self.check_drained();
                    }
                }
                CommitEvent::Queued
            }
        }
    }

    fn check_drained(&self) {
        if self.jobs_rx.is_none() && self.jobs.is_empty() {
            self.drained.send_replace(true);
        }
    }
}

/// The oldest batch's commit; never ready while there is none.
async fn oldest(jobs: &mut VecDeque<AckJob>) -> Result<Receipt, IngestError> {
    match jobs.front_mut() {
        Some(job) => (&mut job.pending).await,
        None => std::future::pending().await,
    }
}

/// The next job from the batcher, `None` once it has stopped; never ready after that.
async fn recv_or_never(rx: &mut Option<mpsc::Receiver<AckJob>>) -> Option<AckJob> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next commit event; never ready without direct acks (MQTT 5 has its acker task).
async fn next_commit(committing: &mut Option<Committing>) -> CommitEvent {
    match committing {
        Some(c) => c.next().await,
        None => std::future::pending().await,
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
    use futures_util::FutureExt;
    use tokio::sync::Notify;

    use super::*;
    use crate::app::Pending;
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

    fn pkids(messages: &[Message]) -> Vec<u16> {
        messages
            .iter()
            .map(|m| match &*m.ack {
                AckHandle::V4(p) => p.pkid,
                AckHandle::V5(p) => p.pkid,
            })
            .collect()
    }

    /// What the next commit event is, if one is ready now.
    fn next_now(c: &mut Committing) -> Option<CommitEvent> {
        c.next().now_or_never()
    }

    #[tokio::test]
    async fn batches_are_acked_oldest_first_once_committed_and_a_failed_one_is_not() {
        let (jobs_tx, jobs_rx) = mpsc::channel(ACK_JOBS);
        let uncommitted = Arc::new(Uncommitted::default());
        let (drained_tx, drained) = watch::channel(false);
        let mut c = Committing::new(jobs_rx, uncommitted.clone(), drained_tx);
        let mut commits = Vec::new();
        for ids in [&[1u16, 2][..], &[3], &[4]] {
            let (tx, pending) = Pending::by_hand();
            commits.push(tx);
            let messages = ids.iter().map(|id| message(*id, 1)).collect();
            uncommitted.count.fetch_add(1, Ordering::SeqCst);
            jobs_tx
                .send(AckJob { pending, messages })
                .await
                .expect("queued");
        }
        for _ in 0..3 {
            assert!(matches!(next_now(&mut c), Some(CommitEvent::Queued)));
        }
        // Nothing is committed yet: nothing to ack.
        assert!(next_now(&mut c).is_none());
        let mut commits = commits.into_iter();
        let (first, second, third) = (
            commits.next().expect("1"),
            commits.next().expect("2"),
            commits.next().expect("3"),
        );
        // A later batch's notice does not overtake the oldest batch's acks.
        second.send(Ok(Receipt::default())).expect("sent");
        assert!(next_now(&mut c).is_none());
        first.send(Ok(Receipt::default())).expect("sent");
        match next_now(&mut c) {
            Some(CommitEvent::Committed(Ok(_), messages)) => assert_eq!(pkids(&messages), [1, 2]),
            _ => panic!("the oldest batch, committed"),
        }
        assert_eq!(uncommitted.count.load(Ordering::SeqCst), 2);
        match next_now(&mut c) {
            Some(CommitEvent::Committed(Ok(_), messages)) => assert_eq!(pkids(&messages), [3]),
            _ => panic!("the second batch, committed"),
        }
        third
            .send(Err(IngestError::Store("disk full".into())))
            .expect("sent");
        match next_now(&mut c) {
            Some(CommitEvent::Committed(Err(IngestError::Store(why)), messages)) => {
                assert_eq!(why, "disk full");
                assert_eq!(pkids(&messages), [4]);
            }
            _ => panic!("the third batch, failed"),
        }
        assert_eq!(uncommitted.count.load(Ordering::SeqCst), 0);
        // Drained only once the batcher has stopped as well.
        assert!(!*drained.borrow());
        drop(jobs_tx);
        assert!(matches!(next_now(&mut c), Some(CommitEvent::Queued)));
        assert!(*drained.borrow());
        assert!(next_now(&mut c).is_none());
    }

    #[tokio::test]
    async fn no_more_than_ack_jobs_batches_are_taken_from_the_batcher() {
        let (jobs_tx, jobs_rx) = mpsc::channel(ACK_JOBS + 1);
        let (drained_tx, _drained) = watch::channel(false);
        let mut c = Committing::new(jobs_rx, Arc::new(Uncommitted::default()), drained_tx);
        let mut commits = Vec::new();
        for id in 0..=ACK_JOBS as u16 {
            let (tx, pending) = Pending::by_hand();
            commits.push(tx);
            jobs_tx
                .send(AckJob {
                    pending,
                    messages: vec![message(id, 1)],
                })
                .await
                .expect("queued");
        }
        for _ in 0..ACK_JOBS {
            assert!(matches!(next_now(&mut c), Some(CommitEvent::Queued)));
        }
        // The channel keeps the one over the limit (and so holds the batcher back).
        assert!(next_now(&mut c).is_none());
        assert_eq!(jobs_tx.capacity(), ACK_JOBS);
        commits
            .remove(0)
            .send(Ok(Receipt::default()))
            .expect("sent");
        assert!(matches!(
            next_now(&mut c),
            Some(CommitEvent::Committed(Ok(_), _))
        ));
        assert!(matches!(next_now(&mut c), Some(CommitEvent::Queued)));
        assert_eq!(jobs_tx.capacity(), ACK_JOBS + 1);
    }

    #[test]
    fn a_failed_commit_drops_the_connection_only_for_messages_of_the_current_one() {
        let shared = Shared {
            status: Arc::new(SourceStatus::new("t", "mqtt://x:1")),
            generation: Mutex::new(2),
            reconnect: Notify::new(),
            reconnect_wanted: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            loop_done: AtomicBool::new(false),
        };
        let e = IngestError::Store("disk full".into());
        // Taken before the last reconnect: the broker is redelivering them already.
        not_committed(&shared, &[message(1, 1), message(2, 1)], &e);
        assert!(!shared.take_reconnect_request());
        // One of the current connection's: only a new connection gets it redelivered.
        not_committed(&shared, &[message(3, 1), message(4, 2)], &e);
        assert!(shared.take_reconnect_request());
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
