//! One broker connection: the protocol-independent part. The event-loop glue for MQTT 3.1.1
//! and 5 lives in `v4.rs` and `v5.rs`; everything else (routing, decoding, batching, acks,
//! status) is shared.
//!
//! ```text
//!  event-loop task ──Message──► batcher task ──AckJob──► event-loop task (MQTT 3.1.1)
//!  (polls rumqttc,   bounded     (route, decode,  bounded  or acker task (MQTT 5):
//!   never awaits                  one Batch per            waits for the commit,
//!   the client)                   recv_many)               then acks in order
//! ```
//! MQTT 3.1.1: the event-loop task itself waits for each batch's commit (the store thread's
//! notice wakes it directly) and writes the batch's PUBACKs into the connection with one
//! flush. A separate acker task cost two more wake-ups per batch (acker, then event loop).
//! MQTT 5 (rumqttc keeps that connection private): the acker task waits for the commit and
//! sends each ack through the client (`try_ack`); rumqttc writes and flushes them one at a
//! time.
//!
//! # Delivery
//! A message is acknowledged only after the batch that carries its readings and dead letters
//! is committed (`Ingest::enqueue(..).committed()`), and acks are sent in the order the
//! messages arrived (MQTT wants PUBACKs in order). A failed commit acks nothing and drops the
//! connection, so that the broker redelivers what is unacknowledged once we are back.
//!
//! # Acks across reconnects
//! Packet ids are per connection. An ack computed for a message of an old connection could,
//! on the new one, acknowledge a different, not yet committed message that reuses the id. So
//! every message carries the *generation* of its connection; the event-loop task bumps the
//! generation and purges queued acks (`EventLoop::clean`) under one lock, and the acker sends
//! an ack only while holding that lock with the generation unchanged (MQTT 5); for MQTT 3.1.1
//! the event-loop task writes the acks itself, between two polls, only for messages of its
//! current generation. Acks of an old generation are dropped: the broker redelivers those
//! messages, which are then stored twice (at-least-once, never lost).
//!
//! # Flow control
//! The event-loop task never waits on the batcher: its queue ([`MessageQueue`]) is bounded by
//! count and bytes instead, and past them the connection is dropped and the broker
//! redelivers. Every channel after the batcher is bounded: when the pipeline is slow the
//! batcher stops taking messages and the queue fills. The broker sends at most `inflight` unacknowledged messages (MQTT 5 receive
//! maximum; for 3.1.1 the broker's own per-client limit, which should not exceed `inflight`),
//! and the channels hold at least that many, so normally the event loop keeps polling (and
//! pinging) while acks are pending.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use compact_str::CompactString;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::config::{MqttConfig, MqttProtocol};
use super::route::Router;
use super::status::SourceStatus;
use super::tls::{self, TlsError};
use crate::app::{error_chain, now_ms, Ingest, IngestError, Pending};
use crate::backoff::Backoff;
use crate::codec::{self, CodecError, DecodeContext};
use crate::model::{Batch, DeadLetter, TimestampMs, TsSource};
use crate::secret::{Secret, SecretSource};

/// Why a connection could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt[{name}]: invalid url {url:?}: {why}")]
    Url {
        name: String,
        url: String,
        why: String,
    },
    #[error("mqtt[{name}]: route {index}: {why}")]
    Route {
        name: String,
        index: usize,
        why: String,
    },
    #[error("mqtt[{name}]: {why}")]
    Settings { name: String, why: String },
    #[error("mqtt[{name}]: password: {why}")]
    Password { name: String, why: String },
    #[error("mqtt[{name}]: TLS: {source}")]
    Tls {
        name: String,
        #[source]
        source: TlsError,
    },
}

/// Everything the event-loop glue needs to build its client, checked at startup.
pub(super) struct Settings {
    pub cfg: MqttConfig,
    pub host: String,
    pub port: u16,
    pub tls: Option<rustls::ClientConfig>,
    pub password: Option<Secret>,
    /// The transport limit given to rumqttc; see [`transport_limit`].
    pub transport_limit: usize,
    pub filters: Vec<String>,
}

/// rumqttc drops the *connection* when an incoming packet exceeds its limit. The broker then
/// redelivers the same message on reconnect, and the connection loops forever on it. So the
/// limit given to rumqttc is far above `max_packet_size`, and `max_packet_size` is enforced
/// here, per message: a larger payload becomes a `payload_too_large` dead letter and is acked.
/// With MQTT 5 the transport limit is also announced in CONNECT, so the broker drops (rather
/// than sends) anything larger still.
pub(super) fn transport_limit(max_packet_size: usize) -> usize {
    (16 * 1024 * 1024).max(max_packet_size.saturating_mul(4))
}

/// A received publish, as the glue hands it over.
pub(super) struct Message {
    /// Boxed: a publish (MQTT 5 properties and all) is a few hundred bytes, and a message is
    /// moved several times on its way (queue, batcher, ack queue); the box was made by the glue
    /// anyway. Unboxed, those copies were 15 % of the gateway's CPU draining a backlog.
    pub ack: Box<AckHandle>,
    pub received_at: TimestampMs,
    /// The connection generation it arrived on (see the module docs).
    pub generation: u64,
    /// MQTT 5 user property `ts`, parsed.
    pub ts: Option<TimestampMs>,
}

/// The packet to acknowledge; it also carries the topic and payload.
pub(super) enum AckHandle {
    V4(rumqttc::Publish),
    V5(rumqttc::v5::mqttbytes::v5::Publish),
}

impl AckHandle {
    fn topic(&self) -> Result<&str, std::str::Utf8Error> {
        match self {
            AckHandle::V4(p) => Ok(&p.topic),
            AckHandle::V5(p) => std::str::from_utf8(&p.topic),
        }
    }

    fn payload(&self) -> &Bytes {
        match self {
            AckHandle::V4(p) => &p.payload,
            AckHandle::V5(p) => &p.payload,
        }
    }
}

/// The client half, used by the acker and by `stop`.
#[derive(Clone)]
pub(super) enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    fn try_ack(&self, msg: &AckHandle) -> bool {
        match (self, msg) {
            (Client::V4(c), AckHandle::V4(p)) => c.try_ack(p).is_ok(),
            (Client::V5(c), AckHandle::V5(p)) => c.try_ack(p).is_ok(),
            // A message of the other protocol cannot happen; dropping its ack is safe.
            _ => true,
        }
    }

    async fn disconnect(&self) {
        match self {
            Client::V4(c) => {
                let _ = c.disconnect().await;
            }
            Client::V5(c) => {
                let _ = c.disconnect().await;
            }
        }
    }
}

/// State shared by the tasks of one connection.
pub(super) struct Shared {
    pub status: Arc<SourceStatus>,
    /// Connection generation; see the module docs. Held while bumping + purging and while
    /// sending an ack.
    pub generation: Mutex<u64>,
    /// After a failed commit, the task that saw it (the event loop itself, or the acker with
    /// MQTT 5) asks for the connection to be dropped: it sets `reconnect_wanted`, then
    /// notifies. The flag tells a fresh request from a stale permit.
    pub reconnect: Notify,
    pub reconnect_wanted: AtomicBool,
    /// Set by `stop`: publishes that arrive from now on are neither processed nor acked.
    pub stopping: AtomicBool,
    /// Set when the event-loop task has ended: acks can no longer be sent.
    pub loop_done: AtomicBool,
}

impl Shared {
    pub fn generation(&self) -> u64 {
        self.generation.lock().map(|g| *g).unwrap_or(0)
    }

    /// Starts a new connection generation, running `purge` (`EventLoop::clean`, which drops
    /// queued acks) under the same lock that the acker holds while sending an ack.
    pub fn new_generation(&self, purge: impl FnOnce()) {
        match self.generation.lock() {
            Ok(mut g) => {
                *g += 1;
                purge();
            }
            Err(_) => purge(),
        }
    }

    /// Asks the event loop for a new connection, so that the broker redelivers what is
    /// unacknowledged.
    pub fn request_reconnect(&self) {
        self.reconnect_wanted.store(true, Ordering::SeqCst);
        self.reconnect.notify_one();
    }

    /// Whether a reconnect was asked for since the last call (clears the request).
    pub fn take_reconnect_request(&self) -> bool {
        self.reconnect_wanted.swap(false, Ordering::SeqCst)
    }

    /// Records a lost or refused connection.
    pub fn on_error(&self, message: &str) {
        let was_up = self.status.is_connected();
        self.status.set_connected(false);
        self.status.set_error(message.to_string(), now_ms());
        self.status.count_reconnect();
        if was_up {
            warn!(connection = %self.status.name, error = %message, "MQTT connection lost; reconnecting");
        } else {
            warn!(connection = %self.status.name, error = %message, "MQTT connection failed; retrying");
        }
    }

    pub fn on_connected(&self, session_present: bool) {
        self.status.set_connected(true);
        info!(
            connection = %self.status.name,
            url = %self.status.url,
            session_present,
            "MQTT connected"
        );
    }
}

/// Where the acks of committed batches are sent from.
enum Acks {
    /// The event-loop task (MQTT 3.1.1); `true` once it has acked every batch handed to it
    /// and the batcher has stopped.
    InLoop(watch::Receiver<bool>),
    /// The acker task (MQTT 5).
    Task(JoinHandle<()>),
}

/// Spawns the event-loop task and, when the protocol has no direct acks, the acker task;
/// `jobs` are the batcher's submitted batches.
#[allow(clippy::too_many_arguments)]
fn spawn_event_loop<P: super::event_loop::Protocol>(
    glue: P,
    client: Client,
    settings: &Settings,
    shared: &Arc<Shared>,
    queue: MessageQueue,
    jobs: mpsc::Receiver<AckJob>,
    uncommitted: Arc<Uncommitted>,
    backoff: Backoff,
    stop: &watch::Receiver<bool>,
) -> (JoinHandle<()>, Acks) {
    let (committing, acks) = if P::DIRECT_ACKS {
        let (drained, drained_rx) = watch::channel(false);
        let committing = super::event_loop::Committing::new(jobs, uncommitted, drained);
        (Some(committing), Acks::InLoop(drained_rx))
    } else {
        let acker = tokio::spawn(run_acker(shared.clone(), client, jobs, uncommitted));
        (None, Acks::Task(acker))
    };
    let task = tokio::spawn(super::event_loop::run(
        glue,
        settings.filters.clone(),
        shared.clone(),
        queue,
        committing,
        backoff,
        stop.clone(),
    ));
    (task, acks)
}

/// Sleeps before a reconnect; `false` if the source is stopped meanwhile.
pub(super) async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Most messages, and most payload bytes, waiting between the event loop and the batcher
/// before the gateway drops the connection. The broker's in-flight window (receive maximum,
/// or its own per-client limit) should keep the queue small, but mosquitto 2.0 overshoots it
/// (for MQTT 3.1.1 and on session resume with a backlog), sending thousands while our acks
/// wait for their commits. That is absorbed here, within a fixed memory budget; only a
/// broker that floods past it gets the connection dropped (and redelivers what was not
/// acknowledged).
pub(super) fn queue_cap(inflight: u16) -> (usize, usize) {
    let messages = (usize::from(inflight) * 1000).max(100_000);
    (messages, 64 * 1024 * 1024)
}

/// The queue from the event-loop task to the batcher.
///
/// The event loop must never wait on it: while it waits it does not poll, so our acks (queued
/// in rumqttc's request channel, sent by the polling loop) never leave, commits stop being
/// acknowledged, the batcher waits for room among the batches awaiting their acks, which only
/// the event loop (or the acker, which needs the event loop) makes — the rumqtt#1025 deadlock
/// by another road. So the channel is unbounded and bounded by count
/// instead: over [`queue_cap`], the event loop drops the connection and the broker redelivers
/// what was not acknowledged.
pub(super) struct MessageQueue {
    tx: mpsc::UnboundedSender<Message>,
    queued: Arc<QueueCount>,
    cap: (usize, usize),
}

/// Messages and payload bytes in the queue.
#[derive(Default)]
pub(super) struct QueueCount {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl MessageQueue {
    pub(super) fn new(cap: (usize, usize)) -> (MessageQueue, QueueReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(QueueCount::default());
        (
            MessageQueue {
                tx,
                queued: queued.clone(),
                cap,
            },
            QueueReceiver { rx, queued },
        )
    }

    /// Queues a message; `false` when the queue is over its cap (the message is not taken).
    pub(super) fn push(&self, msg: Message) -> bool {
        let size = msg.ack.payload().len();
        if self.queued.messages.load(Ordering::SeqCst) >= self.cap.0
            || self.queued.bytes.load(Ordering::SeqCst) + size > self.cap.1
        {
            return false;
        }
        self.queued.messages.fetch_add(1, Ordering::SeqCst);
        self.queued.bytes.fetch_add(size, Ordering::SeqCst);
        if self.tx.send(msg).is_err() {
            self.queued.messages.fetch_sub(1, Ordering::SeqCst);
            self.queued.bytes.fetch_sub(size, Ordering::SeqCst);
        }
        true
    }
}

pub(super) struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<Message>,
    queued: Arc<QueueCount>,
}

impl QueueReceiver {
    async fn recv_many(&mut self, buf: &mut Vec<Message>, limit: usize) -> usize {
        let before = buf.len();
        let n = self.rx.recv_many(buf, limit).await;
        let bytes: usize = buf[before..].iter().map(|m| m.ack.payload().len()).sum();
        self.queued.messages.fetch_sub(n, Ordering::SeqCst);
        self.queued.bytes.fetch_sub(bytes, Ordering::SeqCst);
        n
    }
}

/// rumqttc's request channel carries our acks and subscriptions; it must hold at least one
/// ack per message the broker may have in flight, so that `try_ack` does not fail for room.
pub(super) fn request_capacity(inflight: u16) -> usize {
    usize::from(inflight) * 2 + 64
}

/// Most batches committing at once per connection (they commit in order).
pub(super) const ACK_JOBS: usize = 4;

/// Messages taken from the channel at once.
const RECV_MANY: usize = 1024;

/// While an earlier batch is still committing, a batch of fewer messages than this waits for
/// more (see [`gather`]).
const GATHER_MIN: usize = 64;

/// The longest such wait: the latency a message can gain so that the batch is larger.
const GATHER_WAIT: Duration = Duration::from_millis(1);

/// A stream's batch, with nothing committing, starts at this many messages (see [`Pace`]).
const STREAM_TARGET_MAX: usize = GATHER_MIN;

/// Batches that reach the stream target in a row before it doubles again (see [`Pace`]).
/// Small, so that a target lowered by a lull (a publisher pausing) is back at its maximum
/// within some 50 batches; a broker window smaller than the target then costs one
/// [`GATHER_WAIT`] per 9 batches.
const STREAM_GROW_AFTER: u32 = 8;

/// How big a batch the batcher waits for when messages stream in and nothing is committing.
///
/// A batch is handed on when the previous one has committed. Into a sink that commits at
/// once (the null sink) that left batches of the few messages that came during one hand-off,
/// and every batch costs the same wake-ups (batcher, pipeline, store thread, event loop): at
/// QoS 1, about four times the gateway CPU per message of batches of 64 (BENCHMARKS.md). So while messages stream in (the last
/// batch went less than [`GATHER_WAIT`] ago) the batcher waits for `target` messages, at most
/// [`GATHER_WAIT`]. With MQTT 3.1.1 the client cannot know the broker's in-flight window
/// (mosquitto's default is 20): when it is all in the batch, no more comes until these are
/// acked, and the wait runs out. The target then drops to what did come, so the next batches
/// do not wait for it, and it doubles again, up to [`STREAM_TARGET_MAX`], only after
/// [`STREAM_GROW_AFTER`] batches in a row reach it: a window smaller than the target costs one
/// wait in every `STREAM_GROW_AFTER + 1` batches.
#[derive(Debug)]
struct Pace {
    last_flush: Option<tokio::time::Instant>,
    target: usize,
    reached: u32,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            last_flush: None,
            target: STREAM_TARGET_MAX,
            reached: 0,
        }
    }
}

impl Pace {
    fn streaming(&self) -> bool {
        self.last_flush.is_some_and(|t| t.elapsed() < GATHER_WAIT)
    }

    /// A streaming gather ended with `got` messages, having reached the target or not.
    fn gathered(&mut self, got: usize, reached: bool) {
        if reached {
            self.reached += 1;
            if self.reached >= STREAM_GROW_AFTER {
                self.target = (self.target * 2).min(STREAM_TARGET_MAX);
                self.reached = 0;
            }
        } else {
            self.target = got.max(1);
            self.reached = 0;
        }
    }
}

/// Batches handed to the pipeline whose commit has not come back yet.
#[derive(Default)]
pub(super) struct Uncommitted {
    pub(super) count: AtomicUsize,
    /// Signalled at each commit (or failure) by whichever task waits for the commits.
    pub(super) done: Notify,
}

impl Uncommitted {
    /// A batch's commit came back (or failed).
    pub(super) fn one_done(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.done.notify_one();
    }
}

/// How long `stop` waits for committed batches to be acked and the disconnect to be sent.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running broker connection.
pub struct MqttSource {
    status: Arc<SourceStatus>,
    shared: Arc<Shared>,
    client: Client,
    stop: watch::Sender<bool>,
    event_loop: JoinHandle<()>,
    batcher: JoinHandle<()>,
    acks: Acks,
}

impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSource")
            .field("name", &self.status.name)
            .field("url", &self.status.url)
            .finish_non_exhaustive()
    }
}

/// Checks the settings, reads the password and builds TLS now (so a bad file fails at
/// startup), then spawns the connection's tasks. Must be called inside a tokio runtime.
pub fn start(cfg: MqttConfig, ingest: Ingest, batch_max: usize) -> Result<MqttSource, MqttError> {
    let settings = prepare(cfg)?;
    let status = Arc::new(SourceStatus::new(&settings.cfg.name, &settings.cfg.url));
    let router = Router::new(&settings.cfg.routes).map_err(|(index, e)| MqttError::Route {
        name: settings.cfg.name.clone(),
        index,
        why: e.to_string(),
    })?;
    let shared = Arc::new(Shared {
        status: status.clone(),
        generation: Mutex::new(0),
        reconnect: Notify::new(),
        reconnect_wanted: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        loop_done: AtomicBool::new(false),
    });
    let (stop, stop_rx) = watch::channel(false);
    let (msg_tx, msg_rx) = MessageQueue::new(queue_cap(settings.cfg.inflight));
    let (ack_tx, ack_rx) = mpsc::channel(ACK_JOBS);
    let uncommitted = Arc::new(Uncommitted::default());
    let backoff = Backoff::new(settings.cfg.reconnect_min.0, settings.cfg.reconnect_max.0);
    info!(
        connection = %settings.cfg.name,
        url = %settings.cfg.url,
        protocol = ?settings.cfg.protocol,
        client_id = %settings.cfg.client_id,
        filters = ?settings.filters,
        "starting MQTT source"
    );
    let decoder = Decoder {
        source: CompactString::from(format!("mqtt:{}", settings.cfg.name)),
        router,
        max_payload: settings.cfg.max_packet_size,
        max_topic_len: settings.cfg.max_topic_len,
        status: status.clone(),
    };
    let (client, (event_loop, acks)) = match settings.cfg.protocol {
        MqttProtocol::V311 => {
            let (client, eventloop) = super::v4::client(&settings);
            let glue = super::v4::V4 {
                eventloop,
                client: client.clone(),
            };
            let client = Client::V4(client);
            let spawned = spawn_event_loop(
                glue,
                client.clone(),
                &settings,
                &shared,
                msg_tx,
                ack_rx,
                uncommitted.clone(),
                backoff,
                &stop_rx,
            );
            (client, spawned)
        }
        MqttProtocol::V5 => {
            let (client, eventloop) = super::v5::client(&settings);
            let glue = super::v5::V5 {
                eventloop,
                client: client.clone(),
            };
            let client = Client::V5(client);
            let spawned = spawn_event_loop(
                glue,
                client.clone(),
                &settings,
                &shared,
                msg_tx,
                ack_rx,
                uncommitted.clone(),
                backoff,
                &stop_rx,
            );
            (client, spawned)
        }
    };
    let batcher = tokio::spawn(run_batcher(
        decoder,
        msg_rx,
        ingest,
        ack_tx,
        uncommitted,
        batch_max.max(1),
        stop_rx,
    ));
    Ok(MqttSource {
        status,
        shared,
        client,
        stop,
        event_loop,
        batcher,
        acks,
    })
}

impl MqttSource {
    pub fn status(&self) -> Arc<SourceStatus> {
        self.status.clone()
    }

    /// Stops pulling messages, lets batches already submitted commit and be acked, then
    /// disconnects (keeping the persistent session). Bounded in time: whatever is not acked by
    /// then is redelivered by the broker next time.
    pub async fn stop(self) {
        let name = self.status.name.clone();
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        let mut batcher = self.batcher;
        if tokio::time::timeout_at(deadline, &mut batcher)
            .await
            .is_err()
        {
            batcher.abort();
        }
        let acked = match self.acks {
            Acks::Task(mut acker) => {
                let done = tokio::time::timeout_at(deadline, &mut acker).await.is_ok();
                if !done {
                    acker.abort();
                }
                done
            }
            // Without a connection nothing waiting can be acked any more (a new connection
            // is a new generation); an error means the event loop has ended.
            Acks::InLoop(mut drained) => {
                !self.status.is_connected()
                    || tokio::time::timeout_at(deadline, drained.wait_for(|d| *d))
                        .await
                        .is_ok()
            }
        };
        if !acked {
            warn!(connection = %name, "MQTT stop: committed batches were not all acked in time; the broker will redeliver them");
        }
        // Queued behind the acks, so they go out first.
        let _ = tokio::time::timeout_at(deadline, self.client.disconnect()).await;
        let mut event_loop = self.event_loop;
        if tokio::time::timeout_at(deadline, &mut event_loop)
            .await
            .is_err()
        {
            event_loop.abort();
        }
        self.status.set_connected(false);
        info!(connection = %name, "MQTT source stopped");
    }
}

/// Validates what serde cannot and loads the secrets and TLS files.
pub(super) fn prepare(cfg: MqttConfig) -> Result<Settings, MqttError> {
    let name = cfg.name.clone();
    let settings_err = |why: String| MqttError::Settings {
        name: name.clone(),
        why,
    };
    let (tls_wanted, host, port) = parse_url(&cfg.url).map_err(|why| MqttError::Url {
        name: name.clone(),
        url: cfg.url.clone(),
        why,
    })?;
    if cfg.keepalive.0 < Duration::from_secs(5) {
        return Err(settings_err("keepalive must be at least 5s".into()));
    }
    if cfg.client_id.is_empty() {
        return Err(settings_err("client_id must not be empty".into()));
    }
    if cfg.inflight == 0 {
        return Err(settings_err("inflight must be at least 1".into()));
    }
    let password = read_password(&cfg).map_err(|why| MqttError::Password {
        name: name.clone(),
        why,
    })?;
    let tls = match (tls_wanted, &cfg.tls) {
        (false, _) => None,
        (true, t) => {
            let t = t.clone().unwrap_or_default();
            Some(
                tls::client_config(&t, &name).map_err(|source| MqttError::Tls {
                    name: name.clone(),
                    source,
                })?,
            )
        }
    };
    let router = Router::new(&cfg.routes).map_err(|(index, e)| MqttError::Route {
        name: name.clone(),
        index,
        why: e.to_string(),
    })?;
    if cfg.routes.is_empty() {
        warn!(connection = %name, "MQTT connection has no routes: it subscribes to nothing");
    }
    Ok(Settings {
        transport_limit: transport_limit(cfg.max_packet_size),
        filters: router.filters(),
        host,
        port,
        tls,
        password,
        cfg,
    })
}

/// `mqtt://host:port` or `mqtts://host:port` → (tls, host, port).
pub(crate) fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err("the scheme must be mqtt:// or mqtts://".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err("put credentials in username/password_env, not in the url".into());
    }
    if rest.contains('/') || rest.contains('?') {
        return Err("the url must be only scheme://host:port".into());
    }
    let no_port = || "a port is required, like mqtt://host:1883".to_string();
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").ok_or_else(no_port)?,
        None => match rest.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("write an IPv6 address in brackets, like mqtt://[::1]:1883".into())
            }
            Some(hp) => hp,
            None => return Err(no_port()),
        },
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {port:?}"))?;
    Ok((tls, host.to_string(), port))
}

/// Reads the password from its env var or file. Never logs it.
pub(super) fn read_password(cfg: &MqttConfig) -> Result<Option<Secret>, String> {
    password_source(cfg).read().map_err(|e| e.to_string())
}

pub(crate) fn password_source(cfg: &MqttConfig) -> SecretSource<'_> {
    SecretSource {
        name: "password",
        env: cfg.password_env.as_deref(),
        file: cfg.password_file.as_deref(),
    }
}

/// Parses an MQTT 5 user property `ts`: epoch milliseconds or RFC 3339.
pub(super) fn parse_ts_property(value: &str) -> Option<TimestampMs> {
    let v = value.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Turns messages into batch contents.
pub(super) struct Decoder {
    pub source: CompactString,
    pub router: Router,
    pub max_payload: usize,
    pub max_topic_len: usize,
    pub status: Arc<SourceStatus>,
}

/// How much of an oversize payload is kept in its dead letter.
const OVERSIZE_RAW_KEEP: usize = 1024;
/// How much of an overlong topic its dead letter's detail shows.
const TOPIC_SHOWN: usize = 64;

impl Decoder {
    fn dead(
        &self,
        batch: &mut Batch,
        received_at: TimestampMs,
        reason: &'static str,
        detail: String,
        raw: Bytes,
        sensor: Option<&str>,
    ) {
        let mut d = DeadLetter::undecodable(&self.source, received_at, reason, detail, raw);
        d.sensor = sensor.map(CompactString::from);
        batch.dead_letters.push(d);
        self.status.count_dead_letter(reason);
    }

    /// Routes and decodes one message into the batch: readings, or dead letters.
    pub fn add(&self, batch: &mut Batch, msg: &Message, errors: &mut Vec<CodecError>) {
        let payload = msg.ack.payload();
        let received_at = msg.received_at;
        let topic = match msg.ack.topic() {
            Ok(t) => t,
            Err(e) => {
                return self.dead(
                    batch,
                    received_at,
                    "invalid_topic",
                    format!("topic is not valid UTF-8: {e}"),
                    payload.clone(),
                    None,
                )
            }
        };
        if topic.len() > self.max_topic_len {
            // Checked before routing, so that a hostile topic costs no matching work, and its
            // captures (sensor id, tags) never reach the pipeline.
            let shown = crate::text::prefix_at_char(topic, TOPIC_SHOWN);
            return self.dead(
                batch,
                received_at,
                "topic_too_long",
                format!(
                    "topic of {} bytes is longer than max_topic_len ({} bytes); it starts {shown:?}",
                    topic.len(),
                    self.max_topic_len
                ),
                payload.slice(..payload.len().min(OVERSIZE_RAW_KEEP)),
                None,
            );
        }
        let Some(route) = self.router.resolve(topic) else {
            return self.dead(
                batch,
                received_at,
                "no_route",
                format!("topic {topic:?} matches no route"),
                payload.clone(),
                None,
            );
        };
        if payload.len() > self.max_payload {
            return self.dead(
                batch,
                received_at,
                "payload_too_large",
                format!(
                    "topic {topic:?}: payload of {} bytes is larger than max_packet_size ({} bytes); the first {} bytes are kept",
                    payload.len(),
                    self.max_payload,
                    OVERSIZE_RAW_KEEP
                ),
                payload.slice(..payload.len().min(OVERSIZE_RAW_KEEP)),
                route.sensor,
            );
        }
        let index = u32::try_from(batch.payloads.len()).unwrap_or(u32::MAX);
        let ctx = DecodeContext {
            received_at,
            payload: index,
            sensor: route.sensor,
            kind: route.kind,
            metric: route.metric,
            precision: Default::default(),
            tags: route.tags.clone(),
        };
        let start = batch.readings.len();
        errors.clear();
        match codec::decode(
            route.format.codec(),
            payload,
            &ctx,
            &mut batch.readings,
            errors,
        ) {
            Ok(()) => {
                batch.payloads.push(payload.clone());
                for e in errors.drain(..) {
                    let mut d = DeadLetter::undecodable(
                        &self.source,
                        received_at,
                        e.reason(),
                        format!("topic {topic:?}: {e}"),
                        payload.clone(),
                    );
                    d.sensor = route.sensor.map(CompactString::from);
                    batch.dead_letters.push(d);
                }
                if let Some(ts) = msg.ts {
                    apply_ts_property(&mut batch.readings[start..], ts);
                }
            }
            Err(e) => self.dead(
                batch,
                received_at,
                e.reason(),
                format!("topic {topic:?}: {e}"),
                payload.clone(),
                route.sensor,
            ),
        }
    }
}

/// The publisher's `ts` stamps the readings whose payload carried no time of its own.
pub(super) fn apply_ts_property(readings: &mut [crate::model::Reading], ts: TimestampMs) {
    for r in readings {
        if r.ts_source == TsSource::Received {
            r.ts = ts;
            r.ts_source = TsSource::Device;
        }
    }
}

/// A submitted batch and the messages to ack once it is committed.
pub(super) struct AckJob {
    pub(super) pending: Pending,
    pub(super) messages: Vec<Message>,
}

enum Gathered {
    Go,
    Stop,
}

/// With a batch still committing, waits until `buf` holds [`GATHER_MIN`] messages, every
/// earlier batch is committed, or [`GATHER_WAIT`] has passed. Without it the batcher made a
/// batch of whatever had arrived since it last woke, often a handful of messages, and a batch
/// costs several task wake-ups (batcher, pipeline, store thread, event loop; the acker too
/// with MQTT 5) whatever its size. An idle gateway (nothing committing) sends at once.
///
/// Then, with nothing committing, a batcher that `pace` says is streaming waits, up to the
/// same deadline, until `buf` holds the pace's target (see [`Pace`]).
async fn gather(
    rx: &mut QueueReceiver,
    buf: &mut Vec<Message>,
    uncommitted: &Uncommitted,
    pace: &mut Pace,
    stop: &mut watch::Receiver<bool>,
) -> Gathered {
    let deadline = tokio::time::Instant::now() + GATHER_WAIT;
    let mut timed_out = false;
    while buf.len() < GATHER_MIN && uncommitted.count.load(Ordering::SeqCst) > 0 {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Gathered::Stop,
            _ = uncommitted.done.notified() => {}
            n = rx.recv_many(buf, RECV_MANY - buf.len()) => if n == 0 { return Gathered::Go },
            _ = tokio::time::sleep_until(deadline) => { timed_out = true; break },
        }
    }
    if timed_out || uncommitted.count.load(Ordering::SeqCst) > 0 || !pace.streaming() {
        return Gathered::Go;
    }
    // A target met on arrival counts as reached too: that is how a low one grows back.
    while buf.len() < pace.target {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Gathered::Stop,
            n = rx.recv_many(buf, RECV_MANY - buf.len()) => if n == 0 { return Gathered::Go },
            _ = tokio::time::sleep_until(deadline) => {
                pace.gathered(buf.len(), false);
                return Gathered::Go;
            }
        }
    }
    pace.gathered(buf.len(), true);
    Gathered::Go
}

async fn run_batcher(
    decoder: Decoder,
    mut rx: QueueReceiver,
    ingest: Ingest,
    acks: mpsc::Sender<AckJob>,
    uncommitted: Arc<Uncommitted>,
    batch_max: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf: Vec<Message> = Vec::with_capacity(RECV_MANY);
    let mut errors = Vec::new();
    let mut pace = Pace::default();
    loop {
        let n = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            n = rx.recv_many(&mut buf, RECV_MANY) => n,
        };
        if n == 0 {
            break;
        }
        match gather(&mut rx, &mut buf, &uncommitted, &mut pace, &mut stop).await {
            Gathered::Go => {}
            Gathered::Stop => break,
        }
        pace.last_flush = Some(tokio::time::Instant::now());
        let mut batch = new_batch(&decoder.source);
        let mut messages = Vec::with_capacity(buf.len());
        for msg in buf.drain(..) {
            decoder.add(&mut batch, &msg, &mut errors);
            messages.push(msg);
            if batch.readings.len() >= batch_max {
                let full = std::mem::replace(&mut batch, new_batch(&decoder.source));
                uncommitted.count.fetch_add(1, Ordering::SeqCst);
                if !flush(&ingest, &acks, full, std::mem::take(&mut messages)).await {
                    return;
                }
            }
        }
        if messages.is_empty() {
            continue;
        }
        uncommitted.count.fetch_add(1, Ordering::SeqCst);
        if !flush(&ingest, &acks, batch, messages).await {
            return;
        }
    }
    debug!(connection = %decoder.status.name, "MQTT batcher stopped");
}

fn new_batch(source: &CompactString) -> Batch {
    Batch {
        source: source.clone(),
        received_at: now_ms(),
        ..Batch::default()
    }
}

/// Sends one batch to the pipeline and hands its messages to whichever task acks them
/// (see [`Acks`]). `false` once the gateway stops.
async fn flush(
    ingest: &Ingest,
    acks: &mpsc::Sender<AckJob>,
    batch: Batch,
    messages: Vec<Message>,
) -> bool {
    match ingest.enqueue(batch).await {
        Ok(pending) => acks.send(AckJob { pending, messages }).await.is_ok(),
        Err(_) => false,
    }
}

/// MQTT 5: waits for each batch's commit, then sends its acks one by one through the
/// client's request channel.
async fn run_acker(
    shared: Arc<Shared>,
    client: Client,
    mut jobs: mpsc::Receiver<AckJob>,
    uncommitted: Arc<Uncommitted>,
) {
    let name = shared.status.name.clone();
    while let Some(job) = jobs.recv().await {
        let committed = job.pending.committed().await;
        uncommitted.one_done();
        match committed {
            Ok(_) => {
                let acked = ack_in_order(&shared, &client, &job.messages).await;
                shared.status.count_acked(acked);
            }
            Err(IngestError::Stopped) => break,
            Err(e) => not_committed(&shared, &job.messages, &e),
        }
    }
    debug!(connection = %name, "MQTT acker stopped");
}

/// A batch's commit failed: none of its messages is acked, and the connection is dropped so
/// that the broker redelivers them (unacked messages come back only with a new connection).
pub(super) fn not_committed(shared: &Shared, messages: &[Message], e: &IngestError) {
    let msg = format!(
        "commit failed, {} messages not acked (the broker will redeliver them): {}",
        messages.len(),
        error_chain(e)
    );
    error!(connection = %shared.status.name, error = %msg, "MQTT batch not committed");
    shared.status.set_error(msg, now_ms());
    // The broker redelivers only over a new connection. Messages of an earlier one are
    // being redelivered already: dropping the new connection for them would be for nothing.
    let current = shared.generation();
    if messages.iter().any(|m| m.generation == current) {
        shared.request_reconnect();
    }
}

/// Acks the messages in arrival order; returns how many acks were sent.
async fn ack_in_order(shared: &Shared, client: &Client, messages: &[Message]) -> u64 {
    let mut sent = 0;
    for msg in messages {
        loop {
            {
                let Ok(generation) = shared.generation.lock() else {
                    return sent;
                };
                if *generation != msg.generation {
                    // Its connection is gone; the broker redelivers it.
                    break;
                }
                if client.try_ack(&msg.ack) {
                    sent += 1;
                    break;
                }
            }
            if shared.loop_done.load(Ordering::SeqCst) {
                return sent;
            }
            // The request channel is full (it is sized for the in-flight window, so this is
            // rare): give the event loop a moment to drain it.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    sent
}

/// Makes a connection error readable: TLS causes and CONNACK codes in plain words.
pub(super) fn describe_io(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref() {
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return format!("TLS: {tls}");
        }
    }
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("connection refused: {e}"),
        _ => format!("I/O: {e}"),
    }
}

pub(super) fn describe_tls(e: &rumqttc::TlsError) -> String {
    match e {
        rumqttc::TlsError::Io(io) => match describe_io(io) {
            s if s.starts_with("TLS: ") => s,
            s => format!("TLS: {s}"),
        },
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;
    use crate::model::Reading;
    use crate::sources::mqtt::config::{RouteConfig, RouteFormat};
    use std::collections::BTreeMap;

    fn config(routes: Vec<RouteConfig>) -> MqttConfig {
        let mut cfg: MqttConfig = serde_json::from_value(serde_json::json!({
            "name": "t",
            "url": "mqtt://127.0.0.1:1883",
        }))
        .expect("minimal config");
        cfg.routes = routes;
        cfg
    }

    fn route(topic: &str, format: RouteFormat) -> RouteConfig {
        RouteConfig {
            topic: topic.into(),
            subscribe: None,
            kind: None,
            format,
            tags: BTreeMap::new(),
        }
    }

    fn decoder(max_payload: usize) -> Decoder {
        let routes = vec![
            route("city/{district}/{kind}/{sensor}", RouteFormat::Json),
            route(
                "city/{district}/{kind}/{sensor}/value/{metric}",
                RouteFormat::Value,
            ),
        ];
        Decoder {
            source: "mqtt:t".into(),
            router: Router::new(&routes).expect("routes"),
            max_payload,
            max_topic_len: 64,
            status: Arc::new(SourceStatus::new("t", "mqtt://x:1")),
        }
    }

    #[test]
    fn a_topic_over_max_topic_len_is_a_dead_letter_before_routing() {
        let d = decoder(1024);
        let mut batch = Batch::default();
        let mut errors = Vec::new();
        // 64 bytes exactly is still routed; one more (a two-byte character across the limit
        // too) is not
        let sensor_64 = "s".repeat(64 - "city/east/noise/".len());
        let long = format!("city/east/noise/{}é", "s".repeat(47));
        assert_eq!(format!("city/east/noise/{sensor_64}").len(), 64);
        d.add(
            &mut batch,
            &msg(
                &format!("city/east/noise/{sensor_64}"),
                r#"{"laeq":50}"#,
                None,
            ),
            &mut errors,
        );
        d.add(&mut batch, &msg(&long, r#"{"laeq":50}"#, None), &mut errors);
        assert_eq!(batch.readings.len(), 1);
        assert_eq!(batch.readings[0].sensor, sensor_64.as_str());
        assert_eq!(batch.dead_letters.len(), 1);
        let dl = &batch.dead_letters[0];
        assert_eq!((dl.reason, dl.sensor.as_deref()), ("topic_too_long", None));
        assert!(
            dl.detail
                .starts_with("topic of 65 bytes is longer than max_topic_len (64 bytes)"),
            "{}",
            dl.detail
        );
        assert_eq!(d.status.snapshot().dead_lettered, 1);
    }

    fn msg(topic: &str, payload: &str, ts: Option<TimestampMs>) -> Message {
        let p = rumqttc::v5::mqttbytes::v5::Publish::new(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            Bytes::from(payload.to_string()),
            None,
        );
        Message {
            ack: Box::new(AckHandle::V5(p)),
            received_at: 1_000,
            generation: 0,
            ts,
        }
    }

    #[tokio::test]
    async fn an_idle_batcher_sends_at_once_and_a_busy_one_gathers_what_is_queued() {
        let (tx, mut rx) = MessageQueue::new((1000, 1 << 20));
        let (_stop_tx, mut stop) = watch::channel(false);
        let uncommitted = Uncommitted::default();
        let queue = |n: usize| {
            for i in 0..n {
                assert!(tx.push(msg(&format!("city/e/noise/s{i}"), "{}", None)));
            }
        };
        // Nothing committing: the message that woke the batcher goes alone, with no wait.
        queue(6);
        let mut buf = Vec::new();
        rx.recv_many(&mut buf, 1).await;
        assert!(goes_idle(&mut rx, &mut buf, &uncommitted, &mut stop).await);
        assert_eq!(buf.len(), 1);
        // A batch still committing: what is queued joins this one, up to GATHER_MIN at least.
        uncommitted.count.store(1, Ordering::SeqCst);
        queue(GATHER_MIN + 10);
        assert!(goes_idle(&mut rx, &mut buf, &uncommitted, &mut stop).await);
        assert!(buf.len() >= GATHER_MIN, "{}", buf.len());
        assert_eq!(
            rx.queued.messages.load(Ordering::SeqCst),
            5 + GATHER_MIN + 10 + 1 - buf.len()
        );
    }

    /// Runs `gather` and says whether the batch goes (`Gathered::Go`, not a stop).
    async fn goes(
        rx: &mut QueueReceiver,
        buf: &mut Vec<Message>,
        uncommitted: &Uncommitted,
        pace: &mut Pace,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        matches!(gather(rx, buf, uncommitted, pace, stop).await, Gathered::Go)
    }

    /// [`goes`] for a batcher that is not streaming (its last batch went long ago, or never).
    async fn goes_idle(
        rx: &mut QueueReceiver,
        buf: &mut Vec<Message>,
        uncommitted: &Uncommitted,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        goes(rx, buf, uncommitted, &mut Pace::default(), stop).await
    }

    /// A batcher test's queue, with `n` messages already taken into `buf`.
    fn gather_setup(n: usize) -> (MessageQueue, QueueReceiver, Vec<Message>) {
        let (tx, rx) = MessageQueue::new((1000, 1 << 20));
        let buf = (0..n)
            .map(|i| msg(&format!("city/e/noise/first{i}"), "{}", None))
            .collect();
        (tx, rx, buf)
    }

    /// The count of batches committing, with one still committing.
    fn one_commit_pending() -> Arc<Uncommitted> {
        let uncommitted = Arc::new(Uncommitted::default());
        uncommitted.count.store(1, Ordering::SeqCst);
        uncommitted
    }

    fn topics(buf: &[Message]) -> Vec<String> {
        buf.iter()
            .map(|m| m.ack.topic().expect("utf-8").to_string())
            .collect()
    }

    // The interleavings below are fixed: `#[tokio::test]` runs everything on one thread, and
    // the spawned task stands for the event loop (pushing messages, and ending a commit),
    // running only where `gather` waits. The clock is paused, so it moves only when every
    // task waits: the 1 ms limit cannot end a wait early on a loaded machine, which
    // would hide a broken wake-up.

    #[tokio::test(start_paused = true)]
    async fn while_a_batch_commits_the_batcher_waits_and_gathers_messages_that_arrive_later() {
        let (tx, mut rx, mut buf) = gather_setup(1);
        let (_stop_tx, mut stop) = watch::channel(false);
        let uncommitted = one_commit_pending();
        let acker = uncommitted.clone();
        let feeder = tokio::spawn(async move {
            for i in 0..3 {
                assert!(tx.push(msg(&format!("city/e/noise/late{i}"), "{}", None)));
            }
            tokio::task::yield_now().await;
            acker.count.store(0, Ordering::SeqCst);
            acker.done.notify_one();
            tx
        });
        assert!(goes_idle(&mut rx, &mut buf, &uncommitted, &mut stop).await);
        let _tx = feeder.await.expect("feeder");
        assert_eq!(
            topics(&buf),
            [
                "city/e/noise/first0",
                "city/e/noise/late0",
                "city/e/noise/late1",
                "city/e/noise/late2"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_batcher_stops_waiting_when_the_commit_finishes() {
        let (tx, mut rx, mut buf) = gather_setup(2);
        let (_stop_tx, mut stop) = watch::channel(false);
        let uncommitted = one_commit_pending();
        let acker = uncommitted.clone();
        let feeder = tokio::spawn(async move {
            acker.count.store(0, Ordering::SeqCst);
            acker.done.notify_one();
            tokio::task::yield_now().await;
            // Had the batcher slept through the commit, it would take these too.
            for i in 0..3 {
                assert!(tx.push(msg(&format!("city/e/noise/late{i}"), "{}", None)));
            }
            tx
        });
        assert!(goes_idle(&mut rx, &mut buf, &uncommitted, &mut stop).await);
        let _tx = feeder.await.expect("feeder");
        assert_eq!(topics(&buf), ["city/e/noise/first0", "city/e/noise/first1"]);
        assert_eq!(rx.queued.messages.load(Ordering::SeqCst), 3);
    }

    /// A commit that does not end in time (a slow disk) holds the batch back 1 ms at most.
    #[tokio::test(start_paused = true)]
    async fn a_commit_that_does_not_finish_holds_the_batcher_back_only_until_the_deadline() {
        let (_tx, mut rx, mut buf) = gather_setup(1);
        let (_stop_tx, mut stop) = watch::channel(false);
        let uncommitted = one_commit_pending();
        let started = tokio::time::Instant::now();
        let gathered = tokio::time::timeout(
            Duration::from_secs(5),
            gather(
                &mut rx,
                &mut buf,
                &uncommitted,
                &mut Pace::default(),
                &mut stop,
            ),
        )
        .await
        .expect("gather returns at its deadline while the commit goes on");
        assert!(matches!(gathered, Gathered::Go));
        assert_eq!(topics(&buf), ["city/e/noise/first0"]);
        // The paused clock moved exactly to the deadline, not past it.
        assert_eq!(started.elapsed(), GATHER_WAIT);
    }

    #[tokio::test]
    async fn with_nothing_committing_the_batcher_does_not_wait_even_for_queued_messages() {
        let (tx, mut rx, mut buf) = gather_setup(1);
        let (_stop_tx, mut stop) = watch::channel(false);
        let uncommitted = Uncommitted::default();
        assert!(tx.push(msg("city/e/noise/queued", "{}", None)));
        assert!(goes_idle(&mut rx, &mut buf, &uncommitted, &mut stop).await);
        assert_eq!(topics(&buf), ["city/e/noise/first0"]);
        assert_eq!(rx.queued.messages.load(Ordering::SeqCst), 1);
    }

    /// A pace whose last batch went just now: messages are streaming in.
    fn streaming(target: usize) -> Pace {
        Pace {
            last_flush: Some(tokio::time::Instant::now()),
            target,
            reached: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn streaming_with_nothing_committing_the_batcher_waits_for_its_target() {
        let (tx, mut rx, mut buf) = gather_setup(1);
        let (_stop_tx, mut stop) = watch::channel(false);
        let uncommitted = Uncommitted::default();
        let mut pace = streaming(4);
        let feeder = tokio::spawn(async move {
            for i in 0..5 {
                assert!(tx.push(msg(&format!("city/e/noise/late{i}"), "{}", None)));
                tokio::task::yield_now().await;
            }
            tx
        });
        let started = tokio::time::Instant::now();
        assert!(goes(&mut rx, &mut buf, &uncommitted, &mut pace, &mut stop).await);
        let _tx = feeder.await.expect("feeder");
        // It went as soon as the target was there, not at the deadline.
        assert!(buf.len() >= 4, "{}", buf.len());
        assert_eq!(
            &topics(&buf)[..4],
            [
                "city/e/noise/first0",
                "city/e/noise/late0",
                "city/e/noise/late1",
                "city/e/noise/late2"
            ]
        );
        assert!(started.elapsed() < GATHER_WAIT);
        assert_eq!((pace.target, pace.reached), (4, 1));
    }

    /// The broker's whole window is in the batch: nothing more comes until it is acked. The
    /// wait ends at the deadline and the target drops to what came, so that the next batch
    /// goes without waiting.
    #[tokio::test(start_paused = true)]
    async fn a_stream_that_stops_short_of_the_target_lowers_it_to_what_came() {
        let (_tx, mut rx, mut buf) = gather_setup(3);
        let (_stop_tx, mut stop) = watch::channel(false);
        let uncommitted = Uncommitted::default();
        let mut pace = streaming(STREAM_TARGET_MAX);
        let started = tokio::time::Instant::now();
        assert!(goes(&mut rx, &mut buf, &uncommitted, &mut pace, &mut stop).await);
        assert_eq!(started.elapsed(), GATHER_WAIT);
        assert_eq!(buf.len(), 3);
        assert_eq!(pace.target, 3);
        // The next batch of three, streaming as well, goes at once.
        pace.last_flush = Some(tokio::time::Instant::now());
        let (_tx2, mut rx2, mut buf2) = gather_setup(3);
        let started = tokio::time::Instant::now();
        assert!(goes(&mut rx2, &mut buf2, &uncommitted, &mut pace, &mut stop).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(buf2.len(), 3);
    }

    #[test]
    fn the_stream_target_doubles_only_after_a_long_run_of_batches_that_reach_it() {
        let mut pace = Pace {
            target: 3,
            ..Pace::default()
        };
        for _ in 1..STREAM_GROW_AFTER {
            pace.gathered(3, true);
        }
        assert_eq!(pace.target, 3);
        pace.gathered(3, true);
        assert_eq!(pace.target, 6);
        for _ in 0..8 * STREAM_GROW_AFTER {
            pace.gathered(pace.target, true);
        }
        assert_eq!(pace.target, STREAM_TARGET_MAX);
        // One short gather restarts the count.
        pace.gathered(10, false);
        assert_eq!((pace.target, pace.reached), (10, 0));
        pace.gathered(0, false);
        assert_eq!(pace.target, 1);
    }

    /// A target met on arrival counts, or a target lowered by one short stream would never
    /// grow again.
    #[tokio::test(start_paused = true)]
    async fn a_low_target_met_on_arrival_grows_back() {
        let (_tx, mut rx, mut buf) = gather_setup(2);
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut pace = streaming(2);
        let idle = Uncommitted::default();
        for _ in 0..STREAM_GROW_AFTER {
            pace.last_flush = Some(tokio::time::Instant::now());
            assert!(goes(&mut rx, &mut buf, &idle, &mut pace, &mut stop).await);
        }
        assert_eq!(pace.target, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn not_streaming_the_batcher_sends_at_once_whatever_its_target() {
        let (_tx, mut rx, mut buf) = gather_setup(1);
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut pace = streaming(STREAM_TARGET_MAX);
        // The last batch went more than GATHER_WAIT ago: a lone message, not a stream.
        tokio::time::advance(GATHER_WAIT * 2).await;
        let started = tokio::time::Instant::now();
        let idle = Uncommitted::default();
        assert!(goes(&mut rx, &mut buf, &idle, &mut pace, &mut stop).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(buf.len(), 1);
        assert_eq!(pace.target, STREAM_TARGET_MAX);
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_for_more() {
        let (_tx, mut rx, mut buf) = gather_setup(1);
        let (stop_tx, mut stop) = watch::channel(false);
        let uncommitted = one_commit_pending();
        stop_tx.send(true).expect("stop");
        assert!(matches!(
            gather(
                &mut rx,
                &mut buf,
                &uncommitted,
                &mut Pace::default(),
                &mut stop
            )
            .await,
            Gathered::Stop
        ));
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://localhost:1883"),
            Ok((false, "localhost".into(), 1883))
        );
        assert_eq!(
            parse_url("mqtts://broker.example:8883/"),
            Ok((true, "broker.example".into(), 8883))
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1883"),
            Ok((false, "::1".into(), 1883))
        );
        assert!(parse_url("tcp://localhost:1883").is_err());
        assert!(parse_url("mqtt://localhost").is_err());
        assert!(parse_url("mqtt://:1883").is_err());
        assert!(parse_url("mqtt://h:0").is_err());
        assert!(parse_url("mqtt://h:99999").is_err());
        assert!(parse_url("mqtt://user:pw@h:1883").is_err());
        assert!(parse_url("mqtt://h:1883/path").is_err());
    }

    #[test]
    fn ts_property_epoch_ms_or_rfc3339() {
        assert_eq!(parse_ts_property("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(
            parse_ts_property("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_ts_property("2023-11-15T06:13:20.123+08:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_ts_property("yesterday"), None);
    }

    #[test]
    fn ts_property_stamps_only_readings_without_a_payload_time() {
        let mut a = Reading::new("s", "noise", "laeq", 50.0, 5);
        a.ts_source = TsSource::Received;
        let b = Reading::new("s", "noise", "laeq", 51.0, 7);
        let mut rs = vec![a, b];
        apply_ts_property(&mut rs, 1_000);
        assert_eq!((rs[0].ts, rs[0].ts_source), (1_000, TsSource::Device));
        assert_eq!((rs[1].ts, rs[1].ts_source), (7, TsSource::Device));
    }

    #[test]
    fn decoder_fills_readings_from_the_topic_and_the_ts_property() {
        let d = decoder(1024);
        let mut batch = new_batch(&d.source);
        let mut errors = Vec::new();
        d.add(
            &mut batch,
            &msg(
                "city/east/noise/nz-1/value/laeq",
                "61.5",
                Some(1_700_000_000_000),
            ),
            &mut errors,
        );
        d.add(
            &mut batch,
            &msg("city/east/noise/nz-2/value/laeq", "62.5", None),
            &mut errors,
        );
        assert_eq!(batch.readings.len(), 2);
        let r = &batch.readings[0];
        assert_eq!(
            (
                r.sensor.as_str(),
                r.kind.as_str(),
                r.metric.as_str(),
                r.value
            ),
            ("nz-1", "noise", "laeq", 61.5)
        );
        assert_eq!((r.ts, r.ts_source), (1_700_000_000_000, TsSource::Device));
        let tags: Vec<(String, String)> = r
            .tags
            .as_ref()
            .expect("tags")
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(tags, vec![("district".to_string(), "east".to_string())]);
        let r = &batch.readings[1];
        assert_eq!(
            (r.ts, r.ts_source, r.payload),
            (1_000, TsSource::Received, 1)
        );
        assert_eq!(batch.payloads.len(), 2);
        assert!(batch.dead_letters.is_empty());
    }

    #[test]
    fn decoder_dead_letters_no_route_oversize_and_garbage() {
        let d = decoder(16);
        let mut batch = new_batch(&d.source);
        let mut errors = Vec::new();
        d.add(&mut batch, &msg("elsewhere/x", "1", None), &mut errors);
        d.add(
            &mut batch,
            &msg("city/east/noise/nz-1", &"x".repeat(2000), None),
            &mut errors,
        );
        d.add(
            &mut batch,
            &msg("city/east/noise/nz-1", "{not json", None),
            &mut errors,
        );
        assert!(batch.readings.is_empty());
        let got: Vec<(&str, Option<&str>, usize)> = batch
            .dead_letters
            .iter()
            .map(|d| (d.reason, d.sensor.as_deref(), d.raw.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("no_route", None, 1),
                ("payload_too_large", Some("nz-1"), 1024),
                ("invalid_json", Some("nz-1"), 9)
            ]
        );
        assert_eq!(
            batch.dead_letters[0].detail,
            "topic \"elsewhere/x\" matches no route"
        );
        assert_eq!(batch.dead_letters[0].source, "mqtt:t");
        let s = d.status.snapshot();
        assert_eq!((s.dead_lettered, s.no_route), (3, 1));
    }

    #[test]
    fn password_from_file_drops_the_trailing_newline_and_never_debugs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        let mut cfg = config(vec![]);
        cfg.username = Some("gw".into());
        cfg.password_file = Some(path);
        let pw = read_password(&cfg).expect("readable").expect("some");
        assert_eq!(pw.expose(), "s3cret");
        assert!(!format!("{pw:?}").contains("s3cret"));
        cfg.password_file = Some(dir.path().join("missing"));
        assert!(read_password(&cfg)
            .expect_err("missing file")
            .starts_with("cannot read "));
    }

    #[test]
    fn prepare_rejects_short_keepalive_and_bad_url() {
        let mut cfg = config(vec![]);
        cfg.keepalive = Dur::secs(1);
        assert_eq!(
            prepare(cfg).map(|_| ()).map_err(|e| e.to_string()),
            Err("mqtt[t]: keepalive must be at least 5s".to_string())
        );
        let mut cfg = config(vec![]);
        cfg.url = "http://x:1".into();
        assert!(prepare(cfg).is_err());
    }

    #[test]
    fn transport_limit_is_far_above_the_payload_limit() {
        assert_eq!(transport_limit(256 * 1024), 16 * 1024 * 1024);
        assert_eq!(transport_limit(8 * 1024 * 1024), 32 * 1024 * 1024);
    }
}
