//! The drain loop every alert output runs, its durable cursor, and its status.
//!
//! ```text
//! alert_events (seq) ──page after cursor──► Deliver (mqtt: PUBACKs, webhook: 2xx)
//!        ▲                                        │ done n, dead letters, or a failure
//!        └──── cursor (alert_output_cursors) ◄────┘ moved only past what was confirmed
//! ```
//! An output wakes when the hub's head moves (or on a timer), reads a page of events after its
//! cursor, hands them to its [`Deliver`] in order, and moves the cursor past the events it
//! confirmed, together with their dead letters, in one transaction. A failure waits (backoff,
//! `Retry-After` or `auth_retry`) and the same events are offered again: at-least-once, in
//! order, across restarts. A crash between a delivery and its cursor update resends those
//! events; receivers deduplicate by `seq`.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::AlertHub;
use crate::app::{error_chain, now_ms};
use crate::backoff::Backoff;
use crate::board::SensorBoard;
use crate::model::{DeadLetter, Severity, TimestampMs};
use crate::sinks::sqlite::{SequencedEvent, SqliteReader};

/// Events read and offered at once.
const PAGE: usize = 100;
/// Looks at the store even without a wake-up, so that nothing can wait forever.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Longest `Retry-After` honoured as given.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// Why delivery stopped short of the end of a page.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub state: State,
    /// Low-cardinality label for `citygate_alert_deliveries_total{result}`.
    pub result: &'static str,
    pub message: String,
    /// The receiver's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
}

/// What a [`Deliver`] did with a page.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// How many events, from the start of the page, are done: delivered, filtered out, or
    /// refused for good (with a dead letter). The cursor moves past them.
    pub done: usize,
    /// Of those, how many reached the receiver (for the status and metrics).
    pub sent: u64,
    pub dead_letters: Vec<DeadLetter>,
    /// Set when the rest of the page must be offered again later.
    pub failure: Option<Failure>,
}

/// One output's way of getting events to its receiver.
pub(crate) trait Deliver: Send + 'static {
    /// Pages that may be on their way at once. Their confirmations are taken in order, so
    /// the cursor still moves only past a prefix of what was confirmed. More than one keeps a
    /// receiver that is slow to confirm (a broker holding back PUBACKs) from delaying the
    /// next alert by a whole round trip.
    const IN_FLIGHT: usize = 1;

    /// Starts delivering `events` in order; the future resolves once they are confirmed, or
    /// at the first that cannot be delivered now. Whatever must happen in order (handing the
    /// page to a connection) happens in this call, before it returns.
    fn deliver(
        &mut self,
        events: Arc<[SequencedEvent]>,
    ) -> impl Future<Output = Delivered> + Send + 'static;
}

/// A page on its way: its events and the confirmation to come.
struct InFlight {
    page: Arc<[SequencedEvent]>,
    confirmed: std::pin::Pin<Box<dyn Future<Output = Delivered> + Send>>,
}

/// An output's state as `/health` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ok,
    /// A temporary failure (5xx, 429, a timeout): retried with backoff.
    Retrying,
    /// The receiver refuses us (401/403/404/410, a redirect): an operator must act.
    Misconfigured,
    /// The receiver cannot be reached (the broker is disconnected, the connection refused).
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Retrying => "retrying",
            State::Misconfigured => "misconfigured",
            State::Down => "down",
        }
    }
}

/// One output's state, shared with `/health`.
pub struct OutputStatus {
    name: String,
    kind: &'static str,
    target: String,
    hub: Arc<AlertHub>,
    cursor: AtomicI64,
    delivered: AtomicU64,
    dead_letters: AtomicU64,
    inner: Mutex<StatusInner>,
}

struct StatusInner {
    state: State,
    /// MQTT only: the broker connection; a lost connection shows as `down` whatever else.
    connected: Option<bool>,
    last_error: Option<String>,
    last_ok_at: Option<TimestampMs>,
}

/// An output as `/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct OutputSnapshot {
    pub name: String,
    /// `mqtt` or `webhook`.
    pub kind: &'static str,
    /// Where it delivers (a url with any credentials redacted).
    pub target: String,
    pub state: State,
    /// Events delivered since the gateway started.
    pub delivered: u64,
    /// Events the receiver refused for good, kept as dead letters.
    pub dead_letters: u64,
    /// The last event delivered (`alert_events.seq`).
    pub cursor: i64,
    /// Events committed but not delivered yet.
    pub lag: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub last_ok_at: Option<TimestampMs>,
}

impl OutputStatus {
    pub(crate) fn new(
        name: &str,
        kind: &'static str,
        target: String,
        hub: Arc<AlertHub>,
        cursor: i64,
        connected: Option<bool>,
    ) -> OutputStatus {
        let status = OutputStatus {
            name: name.to_string(),
            kind,
            target,
            hub,
            cursor: AtomicI64::new(cursor),
            delivered: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            inner: Mutex::new(StatusInner {
                state: State::Ok,
                connected,
                last_error: None,
                last_ok_at: None,
            }),
        };
        status.publish_gauges();
        status
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn effective(i: &StatusInner) -> State {
        match i.connected {
            Some(false) => State::Down,
            _ => i.state,
        }
    }

    pub fn state(&self) -> State {
        Self::effective(&self.lock())
    }

    pub fn snapshot(&self) -> OutputSnapshot {
        let cursor = self.cursor.load(Ordering::SeqCst);
        let i = self.lock();
        OutputSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            target: self.target.clone(),
            state: Self::effective(&i),
            delivered: self.delivered.load(Ordering::SeqCst),
            dead_letters: self.dead_letters.load(Ordering::SeqCst),
            cursor,
            lag: (self.hub.head() - cursor).max(0),
            last_error: i.last_error.clone(),
            last_ok_at: i.last_ok_at,
        }
    }

    pub(crate) fn set_state(&self, state: State, error: Option<String>) {
        let mut i = self.lock();
        i.state = state;
        if error.is_some() {
            i.last_error = error;
        }
        drop(i);
        self.publish_gauges();
    }

    /// MQTT: the broker connection came up or went down (with why).
    pub(crate) fn set_connected(&self, up: bool, error: Option<String>) {
        let mut i = self.lock();
        i.connected = Some(up);
        if error.is_some() {
            i.last_error = error;
        }
        drop(i);
        self.publish_gauges();
    }

    fn confirmed(&self, cursor: i64, sent: u64, dead: u64) {
        self.cursor.fetch_max(cursor, Ordering::SeqCst);
        self.delivered.fetch_add(sent, Ordering::SeqCst);
        self.dead_letters.fetch_add(dead, Ordering::SeqCst);
        if sent > 0 {
            self.lock().last_ok_at = Some(now_ms());
        }
        self.publish_gauges();
    }

    /// `citygate_alert_output_up` and `citygate_alert_output_lag`.
    pub(crate) fn publish_gauges(&self) {
        let up = self.state() == State::Ok;
        metrics::gauge!("citygate_alert_output_up", "output" => self.name.clone()).set(if up {
            1.0
        } else {
            0.0
        });
        let lag = (self.hub.head() - self.cursor.load(Ordering::SeqCst)).max(0);
        metrics::gauge!("citygate_alert_output_lag", "output" => self.name.clone()).set(lag as f64);
    }
}

/// Counts one outcome of one output: `result` is `delivered`, `rejected` or a failure's label.
pub(crate) fn count_delivery(output: &str, result: &'static str, n: u64) {
    metrics::counter!("citygate_alert_deliveries_total", "output" => output.to_string(), "result" => result)
        .increment(n);
}

/// Times one delivery (a webhook request, an MQTT page until its last PUBACK).
pub(crate) fn record_delivery_seconds(output: &str, seconds: f64) {
    metrics::histogram!("citygate_alert_delivery_seconds", "output" => output.to_string())
        .record(seconds);
}

/// Whether an event is at or above an output's `min_severity`.
pub(crate) fn wanted(e: &SequencedEvent, min: Severity) -> bool {
    e.event.alert.severity >= min
}

/// The `{"seq", "event", "at", "alert"}` JSON of an event, with its sensor's tags.
pub(crate) fn message_json(e: &SequencedEvent, board: &SensorBoard) -> String {
    let tags = board.tags(&e.event.alert.sensor);
    super::AlertMessage::new(e.seq, &e.event, tags.as_ref()).to_json()
}

/// Makes `alert_output_cursors` match the configured outputs: a new output starts at `head`
/// (it does not replay history), an output no longer configured loses its cursor (so that it
/// no longer holds back pruning). Returns each output's cursor, in `names` order.
pub fn reconcile_cursors(
    conn: &mut Connection,
    names: &[&str],
    head: i64,
) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Vec<String> = tx
        .prepare("SELECT output FROM alert_output_cursors")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in stored.iter().filter(|n| !names.contains(&n.as_str())) {
        warn!(output = %name, "an alert output is no longer configured; its cursor is removed");
        tx.execute("DELETE FROM alert_output_cursors WHERE output = ?1", [name])?;
    }
    let mut cursors = Vec::with_capacity(names.len());
    for name in names {
        tx.execute(
            "INSERT INTO alert_output_cursors (output, seq) VALUES (?1, ?2) \
             ON CONFLICT (output) DO NOTHING",
            params![name, head],
        )?;
        cursors.push(tx.query_row(
            "SELECT seq FROM alert_output_cursors WHERE output = ?1",
            [name],
            |r| r.get(0),
        )?);
    }
    tx.commit()?;
    Ok(cursors)
}

/// Moves an output's cursor forward to `seq` and keeps the dead letters of the events it
/// refused, in one transaction.
pub fn confirm(
    conn: &mut Connection,
    output: &str,
    seq: i64,
    dead_letters: &[DeadLetter],
    raw_max: usize,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    crate::sinks::sqlite::write_dead_letters(&tx, dead_letters, raw_max)?;
    tx.prepare_cached("UPDATE alert_output_cursors SET seq = ?2 WHERE output = ?1 AND seq < ?2")?
        .execute(params![output, seq])?;
    tx.commit()
}

/// What the drain loop shares with every output.
pub(crate) struct Common {
    pub reader: Arc<SqliteReader>,
    pub hub: Arc<AlertHub>,
    pub board: Arc<SensorBoard>,
    pub db_path: std::path::PathBuf,
    pub fsync: crate::outbox::Fsync,
    pub raw_max: usize,
    /// Where the in-process broker listens, when `[broker] enabled`: its retained messages
    /// die with the process, so the MQTT output has no stale ones to look for there.
    pub embedded_broker: Option<std::net::SocketAddr>,
}

/// How an output waits after a failure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
    /// After `misconfigured`: an operator must act, so it is retried slowly.
    pub misconfigured: Duration,
}

/// The drain loop of one output; see the module docs.
pub(crate) struct Drain<D> {
    pub deliver: D,
    pub status: Arc<OutputStatus>,
    /// A writing connection of its own, for the cursor and dead letters.
    pub conn: Arc<Mutex<Connection>>,
    pub common: Arc<Common>,
    pub retry: RetryPolicy,
    pub stop: watch::Receiver<bool>,
}

/// The task was told to stop.
struct Stopped;

impl<D: Deliver> Drain<D> {
    pub async fn run(mut self) {
        let mut head = self.common.hub.watch_head();
        let mut backoff = Backoff::new(self.retry.min, self.retry.max);
        let conn = self.conn.clone();
        let name = self.status.name.clone();
        let mut inflight: std::collections::VecDeque<InFlight> = Default::default();
        // The last event handed to the receiver; ahead of the cursor while pages are in flight.
        let mut offered = self.status.cursor.load(Ordering::SeqCst);
        loop {
            if *self.stop.borrow() {
                return;
            }
            if inflight.len() < D::IN_FLIGHT {
                let page = match self.read_page(offered, &mut backoff).await {
                    Ok(p) => p,
                    Err(Stopped) => return,
                };
                if let Some(last) = page.last() {
                    offered = last.seq;
                    let page: Arc<[SequencedEvent]> = page.into();
                    let confirmed = Box::pin(self.deliver.deliver(page.clone()));
                    inflight.push_back(InFlight { page, confirmed });
                    continue;
                }
            }
            let Some(front) = inflight.front_mut() else {
                self.status.publish_gauges();
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(IDLE_CHECK) => {}
                    _ = self.stop.changed() => return,
                }
                continue;
            };
            // A delivery can wait long (a broker away, a receiver retrying): the lag gauge
            // still follows the head meanwhile, and new events go out behind it when there is
            // room in flight.
            let delivered = tokio::select! {
                d = &mut front.confirmed => d,
                _ = head.changed() => {
                    self.status.publish_gauges();
                    continue;
                }
                _ = self.stop.changed() => return,
            };
            let Some(InFlight { page, .. }) = inflight.pop_front() else {
                continue;
            };
            let done = delivered.done.min(page.len());
            if done > 0 {
                backoff.reset();
                let to = page[done - 1].seq;
                let dead = delivered.dead_letters;
                let n_dead = dead.len() as u64;
                let write = {
                    let (conn, name) = (conn.clone(), name.clone());
                    let raw_max = self.common.raw_max;
                    move || {
                        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                        confirm(&mut c, &name, to, &dead, raw_max)
                    }
                };
                if self
                    .with_retry("move the alert output cursor", write, &mut backoff)
                    .await
                    .is_err()
                {
                    return;
                }
                self.status.confirmed(to, delivered.sent, n_dead);
                if delivered.failure.is_none() && self.status.lock().state != State::Ok {
                    info!(output = %name, "alert deliveries succeed again");
                    self.status.set_state(State::Ok, None);
                }
            }
            if delivered.done < page.len() || delivered.failure.is_some() {
                // The pages behind this one are offered again from the cursor, in order
                // (a receiver may see some twice: at-least-once, deduplicated by seq).
                inflight.clear();
                offered = self.status.cursor.load(Ordering::SeqCst);
            }
            if let Some(f) = delivered.failure {
                count_delivery(&name, f.result, 1);
                let delay = match (f.state, f.retry_after) {
                    (State::Misconfigured, _) => self.retry.misconfigured,
                    // Not `clamp`: it panics when a configured retry_min is above the cap.
                    (_, Some(d)) => d.min(RETRY_AFTER_MAX).max(self.retry.min),
                    _ => backoff.next_delay(),
                };
                if f.state == State::Misconfigured {
                    error!(output = %name, error = %f.message, retry_in = ?delay,
                        "the receiver refuses alert deliveries; fix the configuration. Events wait in the store");
                } else if self.status.lock().state == State::Ok {
                    warn!(output = %name, error = %f.message, retry_in = ?delay,
                        "alert delivery failed; events wait in the store and are retried");
                }
                self.status.set_state(f.state, Some(f.message));
                if self.pause(delay).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn read_page(
        &mut self,
        cursor: i64,
        backoff: &mut Backoff,
    ) -> Result<Vec<SequencedEvent>, Stopped> {
        let reader = self.common.reader.clone();
        self.with_retry(
            "read alert events",
            move || reader.alert_events_after(cursor, PAGE),
            backoff,
        )
        .await
    }

    /// Runs blocking store work off the async threads, retrying with backoff until it
    /// succeeds (a busy or full disk mends) or the output is stopped.
    async fn with_retry<T, E>(
        &mut self,
        what: &'static str,
        op: impl Fn() -> Result<T, E> + Clone + Send + 'static,
        backoff: &mut Backoff,
    ) -> Result<T, Stopped>
    where
        T: Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        loop {
            match tokio::task::spawn_blocking(op.clone()).await {
                Ok(Ok(t)) => return Ok(t),
                Ok(Err(e)) => {
                    error!(output = %self.status.name, error = %error_chain(&e), "cannot {what}; retrying")
                }
                Err(e) => {
                    error!(output = %self.status.name, error = %e, "cannot {what}: the task failed")
                }
            }
            self.pause(backoff.next_delay()).await?;
        }
    }

    async fn pause(&mut self, d: Duration) -> Result<(), Stopped> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.changed() => Err(Stopped),
        }
    }
}

/// A running alert output.
pub struct AlertOutput {
    pub status: Arc<OutputStatus>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long `join` waits for an output's tasks (they stop at their next await).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl AlertOutput {
    pub(crate) fn new(
        status: Arc<OutputStatus>,
        stop: watch::Sender<bool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> AlertOutput {
        AlertOutput {
            status,
            stop,
            tasks,
        }
    }

    /// Tells the output to stop; what it has not confirmed stays for the next run.
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn join(self) {
        for mut task in self.tasks {
            if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Why the alert outputs could not be started.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot open the store for the alert outputs: {0}")]
    Store(#[from] crate::sinks::sqlite::StoreError),
    #[error("cannot set up the alert output cursors in {path}: {source}")]
    Cursors {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("alerts.mqtt: {0}")]
    Mqtt(#[from] super::mqtt::MqttOutputError),
    #[error("alerts.webhooks[{index}] ({name}): {source}")]
    Webhook {
        index: usize,
        name: String,
        #[source]
        source: super::webhook::WebhookError,
    },
}

/// The cursor name of the MQTT output.
pub const MQTT_OUTPUT: &str = "mqtt";

/// The cursor (and metrics label) name of a webhook.
pub fn webhook_output(name: &str) -> String {
    format!("webhook:{name}")
}

fn side_writer(common: &Common) -> Result<Connection, OutputError> {
    Ok(crate::sinks::sqlite::open_side_writer(
        &common.db_path,
        common.fsync,
    )?)
}

/// Starts every configured alert output (`[alerts.mqtt]`, `[[alerts.webhooks]]`), each from
/// its cursor; `head` is the newest event at startup, where a new output starts.
/// `mqtt` is the `[[mqtt]]` connections (the MQTT output's defaults).
pub(crate) fn start_all(
    alerts: &crate::config::AlertsConfig,
    mqtt: &[crate::sources::mqtt::config::MqttConfig],
    common: Common,
    head: i64,
) -> Result<Vec<AlertOutput>, OutputError> {
    let mut names: Vec<String> = Vec::new();
    let mqtt_on = alerts.mqtt.enabled && alerts.mqtt.has_broker(mqtt);
    if alerts.mqtt.enabled && !mqtt_on {
        warn!("[alerts.mqtt] is on but there is no broker to publish to (no url and no [[mqtt]] connection): the MQTT alert output is off");
    }
    if mqtt_on {
        names.push(MQTT_OUTPUT.to_string());
    }
    names.extend(alerts.webhooks.iter().map(|w| webhook_output(&w.name)));
    let common = Arc::new(common);
    let mut conn = side_writer(&common)?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cursors =
        reconcile_cursors(&mut conn, &refs, head).map_err(|source| OutputError::Cursors {
            path: common.db_path.display().to_string(),
            source,
        })?;
    drop(conn);
    let mut cursors = cursors.into_iter();
    let mut outputs = Vec::new();
    if mqtt_on {
        let cursor = cursors.next().unwrap_or(head);
        let conn = side_writer(&common)?;
        outputs.push(super::mqtt::start(
            &alerts.mqtt,
            mqtt,
            common.clone(),
            conn,
            cursor,
        )?);
    }
    for (index, w) in alerts.webhooks.iter().enumerate() {
        let cursor = cursors.next().unwrap_or(head);
        let conn = side_writer(&common)?;
        outputs.push(
            super::webhook::start(w, common.clone(), conn, cursor).map_err(|source| {
                OutputError::Webhook {
                    index,
                    name: w.name.clone(),
                    source,
                }
            })?,
        );
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Alert, AlertEvent, AlertEventKind, AlertState};
    use crate::sinks::sqlite::{Commit, SqliteStore};
    use std::path::Path;

    fn open_cursor_connection(path: &Path) -> Result<Connection, OutputError> {
        Ok(crate::sinks::sqlite::open_side_writer(
            path,
            crate::outbox::Fsync::Always,
        )?)
    }

    fn resolved_alert(id: &str, at: i64) -> Alert {
        Alert {
            id: id.into(),
            rule: "level_warning".into(),
            sensor: "wl-1".into(),
            kind: "water_level".into(),
            metric: "level".into(),
            severity: Severity::Warning,
            state: AlertState::Resolved,
            value: 1.0,
            threshold: 0.5,
            peak: 1.0,
            count: 1,
            started_at: at,
            updated_at: at,
            resolved_at: Some(at),
            ack: None,
            message: String::new(),
        }
    }

    /// Commits one resolved alert with one event per id, all at time `at`.
    fn commit_resolved(store: &mut SqliteStore, ids: &[&str], at: i64) {
        let alerts: Vec<Alert> = ids.iter().map(|id| resolved_alert(id, at)).collect();
        let events: Vec<AlertEvent> = alerts
            .iter()
            .map(|a| AlertEvent {
                event: AlertEventKind::Resolved,
                at,
                alert: a.clone(),
            })
            .collect();
        store
            .commit(&Commit {
                alerts: &alerts.iter().cloned().map(Arc::new).collect::<Vec<_>>(),
                events: &events,
                raw_max: 64,
                ..Commit::default()
            })
            .expect("commit");
    }

    fn stored_seqs(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT seq FROM alert_events ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    #[test]
    fn pruning_keeps_every_event_an_output_has_not_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let mut store = SqliteStore::open(&path).expect("open");
        // Four old, resolved alerts: seq 1..=4, all past retention.
        commit_resolved(&mut store, &["a", "b", "c", "d"], 1_000);
        let mut conn = open_cursor_connection(&path).expect("side writer");
        // The webhook delivered up to 2, the MQTT output up to 3.
        assert_eq!(
            reconcile_cursors(&mut conn, &["webhook:ops", "mqtt"], 0).expect("reconcile"),
            [0, 0]
        );
        confirm(&mut conn, "webhook:ops", 2, &[], 64).expect("confirm");
        confirm(&mut conn, "mqtt", 3, &[], 64).expect("confirm");

        let pruned = store.prune(10_000).expect("prune");
        assert_eq!(pruned.alert_events, 2);
        assert_eq!(stored_seqs(&conn), [3, 4], "seq > min(cursor) = 2 stays");

        // The alert rows are gone now; the kept events age out once delivered everywhere.
        confirm(&mut conn, "webhook:ops", 4, &[], 64).expect("confirm");
        store.prune(10_000).expect("prune");
        assert_eq!(stored_seqs(&conn), [4]);

        // Removing the lagging output releases what only it was holding.
        assert_eq!(
            reconcile_cursors(&mut conn, &["webhook:ops"], 99).expect("reconcile"),
            [4]
        );
        store.prune(10_000).expect("prune");
        assert_eq!(stored_seqs(&conn), Vec::<i64>::new());
    }

    #[test]
    fn a_resume_is_complete_only_when_no_event_after_it_was_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let mut store = SqliteStore::open(&path).expect("open");
        // seq 1 an old alert, 2 a recent one, 3 another old one: pruning takes 1 and 3, so
        // what is left is not a suffix, and a resume from 1 would miss 3.
        commit_resolved(&mut store, &["old"], 1_000);
        commit_resolved(&mut store, &["recent"], 50_000);
        commit_resolved(&mut store, &["old2"], 2_000);
        let reader = SqliteReader::open(&path).expect("reader");
        assert!(reader.alert_events_complete(0, 3).expect("count"));
        store.prune(10_000).expect("prune");
        assert!(
            reader.alert_events_complete(1, 2).expect("count"),
            "seq 2 is kept"
        );
        assert!(
            !reader.alert_events_complete(1, 3).expect("count"),
            "seq 3 was pruned"
        );
        assert!(
            reader.alert_events_complete(3, 3).expect("count"),
            "nothing to send"
        );
    }

    #[test]
    fn without_outputs_pruning_is_by_age_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let mut store = SqliteStore::open(&path).expect("open");
        commit_resolved(&mut store, &["a", "b"], 1_000);
        commit_resolved(&mut store, &["c"], 50_000);
        let pruned = store.prune(10_000).expect("prune");
        assert_eq!(pruned.alert_events, 2);
        let conn = open_cursor_connection(&path).expect("side writer");
        assert_eq!(stored_seqs(&conn), [3]);
    }

    #[test]
    fn a_new_output_starts_at_the_head_and_a_cursor_never_moves_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_cursor_connection(&dir.path().join("c.db")).expect("open");
        assert_eq!(reconcile_cursors(&mut conn, &["mqtt"], 7).expect("r"), [7]);
        confirm(&mut conn, "mqtt", 9, &[], 64).expect("confirm");
        // A stale confirmation (an older page) does not move it back.
        confirm(&mut conn, "mqtt", 8, &[], 64).expect("confirm");
        // Restarted with a later head, plus a new webhook: mqtt resumes, the webhook starts now.
        assert_eq!(
            reconcile_cursors(&mut conn, &["mqtt", "webhook:x"], 20).expect("r"),
            [9, 20]
        );
    }
}
