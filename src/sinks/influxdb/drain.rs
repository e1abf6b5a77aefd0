//! One task per `[[sinks.influxdb]]`: reads the outbox after its cursor, writes the lines to
//! the store, and moves the cursor only once the store confirmed them.
//!
//! - 5xx, 429, timeouts and refused connections: the same request again, after an exponential
//!   backoff with jitter, or after the server's `Retry-After`.
//! - 400/413 (a line the store refuses, a body too large): the request is split in halves until
//!   the refused lines stand alone; they become dead letters with the server's message and
//!   the rest is written. One poison line costs about 2·log2(lines) requests, never the queue.
//! - 401/403 and 404 (bad token, unknown bucket): an operator must act. Logged as errors,
//!   shown in `/health`, retried every `auth_retry`; the data waits in the outbox.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::client::{Body, CheckError, InfluxClient, WriteOutcome};
use super::config::InfluxConfig;
use crate::app::{error_chain, now_ms};
use crate::backoff::Backoff;
use crate::model::{DeadLetter, TimestampMs};
use crate::outbox::{db, Lag, Outbox, Range};

/// The reason code of a line the store refused.
pub const STORE_REJECTED: &str = "store_rejected";
/// The reason code of an outbox entry that could not be decompressed.
pub const OUTBOX_CORRUPT: &str = "outbox_corrupt";

/// Longest `Retry-After` honoured as given; a larger one is cut to this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// A sink's state, shared with `/health`.
pub struct SinkStatus {
    name: String,
    target: String,
    index: usize,
    outbox: Arc<Outbox>,
    inner: Mutex<StatusInner>,
}

#[derive(Default)]
struct StatusInner {
    state: &'static str,
    last_error: Option<String>,
    last_ok_at: Option<TimestampMs>,
    written_points: u64,
    dead_letters: u64,
}

/// A sink as `/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SinkSnapshot {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    /// `ok`, `retrying` (the store is unreachable or failing; retried with backoff),
    /// `auth_error` (401/403), `misconfigured` (404 or another 4xx), `unreachable` (the startup
    /// check could not reach it).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub last_ok_at: Option<TimestampMs>,
    /// Points delivered since the gateway started.
    pub written_points: u64,
    /// Lines the store refused, kept as dead letters.
    pub dead_letters: u64,
    /// What is still to deliver.
    pub lag: Lag,
    pub oldest_age_seconds: Option<f64>,
}

impl SinkStatus {
    pub fn snapshot(&self) -> SinkSnapshot {
        let lag = self.outbox.lag(self.index);
        let i = self.lock();
        SinkSnapshot {
            name: self.name.clone(),
            kind: "influxdb",
            target: self.target.clone(),
            state: i.state,
            last_error: i.last_error.clone(),
            last_ok_at: i.last_ok_at,
            written_points: i.written_points,
            dead_letters: i.dead_letters,
            oldest_age_seconds: lag
                .oldest_at
                .map(|t| crate::outbox::age_seconds(t, now_ms())),
            lag,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.lock().state == "ok"
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, state: &'static str, error: Option<String>) {
        let mut i = self.lock();
        i.state = state;
        if error.is_some() {
            i.last_error = error;
        }
        metrics::gauge!("citygate_sink_up", "sink" => self.name.clone()).set(if state == "ok" {
            1.0
        } else {
            0.0
        });
    }
}

/// A running sink task.
pub struct Sink {
    pub status: Arc<SinkStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Starts draining the outbox into the store `cfg` names. `conn` is a connection of its
    /// own to the gateway's SQLite file (cursor and dead-letter writes).
    pub fn start(
        cfg: &InfluxConfig,
        index: usize,
        client: InfluxClient,
        outbox: Arc<Outbox>,
        conn: Connection,
        raw_max: usize,
    ) -> Sink {
        let status = Arc::new(SinkStatus {
            name: cfg.name.clone(),
            target: client.describe(),
            index,
            outbox: outbox.clone(),
            inner: Mutex::new(StatusInner {
                state: "starting",
                ..StatusInner::default()
            }),
        });
        let (stop, stopped) = watch::channel(false);
        let drain = Drain {
            index,
            name: cfg.name.clone(),
            client,
            outbox,
            conn: Arc::new(Mutex::new(conn)),
            max_lines: cfg.batch_max_lines.max(1) as u64,
            max_bytes: cfg.batch_max_bytes.max(1) as u64,
            flush: cfg.flush_interval.0,
            last_partial: None,
            backoff: Backoff::new(cfg.retry_min.0, cfg.retry_max.0),
            retry_min: cfg.retry_min.0,
            auth_retry: cfg.auth_retry.0,
            status: status.clone(),
            stop: stopped,
            raw_max,
        };
        let task = tokio::spawn(drain.run());
        Sink { status, stop, task }
    }

    /// Tells the task to stop at the next safe point: what is not confirmed stays in the
    /// outbox for the next run. Signal every sink first, then [`Sink::join`] them, so that
    /// their last requests run out together.
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Cloned for each request in flight: the parts are shared (`Arc`) or per-request (backoff).
#[derive(Clone)]
struct Drain {
    index: usize,
    name: String,
    client: InfluxClient,
    outbox: Arc<Outbox>,
    conn: Arc<Mutex<Connection>>,
    max_lines: u64,
    max_bytes: u64,
    flush: Duration,
    /// When the last partial request (fewer lines and bytes than the limits) was taken.
    last_partial: Option<Instant>,
    backoff: Backoff,
    /// The shortest wait before a retry, even when the server says `Retry-After: 0`.
    retry_min: Duration,
    auth_retry: Duration,
    status: Arc<SinkStatus>,
    stop: watch::Receiver<bool>,
    raw_max: usize,
}

/// The task was told to stop.
#[derive(Debug)]
struct Stopped;

/// Most requests in flight per sink. Two keep the store busy while the gateway reads the
/// outbox and commits cursors; cursors still move strictly in order.
const IN_FLIGHT: usize = 2;

/// A request in flight: the end of its range and the dead letters it made.
type InFlight = tokio::task::JoinHandle<Result<(i64, Vec<DeadLetter>), Stopped>>;

impl Drain {
    async fn run(mut self) {
        self.startup_check().await;
        let mut head = self.outbox.subscribe();
        // Requests in flight, oldest first. The first comes from the cursor (and waits for a
        // full request or the flush interval); a second is sent only when a full request
        // follows the first. Each is confirmed, in order, once it and all before it are done.
        let mut in_flight: std::collections::VecDeque<(i64, InFlight)> = Default::default();
        loop {
            if *self.stop.borrow() {
                break;
            }
            while in_flight.len() < IN_FLIGHT {
                let range = match in_flight.back() {
                    None => match self.wait_for_work(&mut head).await {
                        Ok(Some(range)) => range,
                        Ok(None) => break,
                        Err(Stopped) => return,
                    },
                    Some((last, _)) => {
                        match self
                            .outbox
                            .range_after(*last, self.max_bytes, self.max_lines)
                            .filter(|r| r.full)
                        {
                            Some(range) => range,
                            None => break,
                        }
                    }
                };
                let Ok(prepared) = self.prepare(range).await else {
                    break;
                };
                let mut writer = self.clone();
                in_flight.push_back((
                    range.to,
                    tokio::spawn(async move { writer.send_prepared(prepared).await }),
                ));
            }
            let Some((_, oldest)) = in_flight.pop_front() else {
                continue;
            };
            match oldest.await {
                Ok(Ok((to, dead))) => {
                    if self.confirm(to, dead).await.is_err() {
                        break;
                    }
                }
                Ok(Err(Stopped)) => break,
                Err(e) => {
                    // A request task failed (a bug): start again from the cursor.
                    error!(sink = %self.name, error = %e, "a request task failed; resending from the cursor");
                    for (_, task) in in_flight.drain(..) {
                        task.abort();
                    }
                }
            }
        }
        for (_, task) in in_flight {
            task.abort();
        }
    }

    /// Waits until there is a request's worth of lines, or the oldest waiting entry is
    /// `flush_interval` old; returns the range to send (`None`: look again).
    async fn wait_for_work(
        &mut self,
        head: &mut watch::Receiver<i64>,
    ) -> Result<Option<Range>, Stopped> {
        let lag = self.outbox.lag(self.index);
        if lag.entries == 0 {
            tokio::select! {
                r = head.changed() => if r.is_err() { return Err(Stopped) },
                _ = self.stop.changed() => return Err(Stopped),
            }
            return Ok(None);
        }
        // Fewer lines than a full request: wait for more, at most until the oldest is
        // `flush_interval` old. But a partial request goes at once when none went in the last
        // `flush_interval`: the store normally gets at most one partial request per interval
        // (a retry, or the wall clock jumping ahead, can make it two), and
        // the end of a burst (or a lone reading after a quiet spell) is not held back a whole
        // interval behind full requests that went out just before it.
        let full = lag.lines >= self.max_lines || lag.raw_bytes >= self.max_bytes;
        // An entry stamped after now (the clock was set back) counts as due, or a quiet
        // sink would wait for a full request.
        let now = now_ms();
        let age = lag
            .oldest_at
            .filter(|t| *t <= now)
            .map_or(Duration::MAX, |t| ms(now - t));
        let since_partial = self.last_partial.map_or(Duration::MAX, |t| t.elapsed());
        if !full && age < self.flush && since_partial < self.flush {
            let wait = (self.flush - age).min(self.flush - since_partial);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = head.changed() => if r.is_err() { return Err(Stopped) },
                _ = self.stop.changed() => return Err(Stopped),
            }
            return Ok(None);
        }
        let range = self
            .outbox
            .next_range(self.index, self.max_bytes, self.max_lines);
        if range.is_some_and(|r| !r.full) {
            self.last_partial = Some(Instant::now());
        }
        Ok(range)
    }

    /// Reads and encodes a range, retrying while the outbox cannot be read.
    async fn prepare(&mut self, range: Range) -> Result<Prepared, Stopped> {
        let (client, name) = (self.client.clone(), self.name.clone());
        let limits = (self.max_lines, self.max_bytes);
        self.with_db("read the outbox", move |conn| {
            prepare(conn, &client, &name, range, limits)
        })
        .await
    }

    async fn startup_check(&mut self) {
        match self.client.check().await {
            Ok(()) => {
                info!(sink = %self.name, store = %self.client.describe(), "store reachable");
                self.status.set("ok", None);
            }
            Err(e) => {
                let msg = error_chain(&e);
                error!(sink = %self.name, store = %self.client.describe(), error = %msg,
                    "store check failed; readings wait in the outbox until it is fixed");
                let state = match e {
                    CheckError::BadCredentials { .. } => "auth_error",
                    CheckError::Unreachable { .. } | CheckError::Unexpected { .. } => "unreachable",
                    _ => "misconfigured",
                };
                self.status.set(state, Some(msg));
            }
        }
    }

    /// Writes a prepared range (every line written or dead-lettered); returns the end of the
    /// range and the dead letters, for [`Drain::confirm`].
    async fn send_prepared(&mut self, p: Prepared) -> Result<(i64, Vec<DeadLetter>), Stopped> {
        let Prepared {
            to,
            chunks,
            mut dead,
        } = p;
        for (text, body) in chunks {
            let lines: Vec<&[u8]> = text
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            self.deliver(&lines, Some(body), &mut dead).await?;
        }
        Ok((to, dead))
    }

    /// Moves the cursor past `to`, keeping the dead letters, in one transaction.
    async fn confirm(&mut self, to: i64, dead: Vec<DeadLetter>) -> Result<(), Stopped> {
        let n_dead = dead.len() as u64;
        let name = self.name.clone();
        let raw_max = self.raw_max;
        self.with_db("move the outbox cursor", move |conn| {
            db::confirm(conn, &name, to, &dead, raw_max)
        })
        .await?;
        // The status first: `/health` must not show the points gone but not their dead letters.
        let mut i = self.status.lock();
        i.dead_letters += n_dead;
        i.last_ok_at = Some(now_ms());
        drop(i);
        let delivered = self.outbox.confirmed(self.index, to);
        self.status.lock().written_points += delivered;
        metrics::counter!("citygate_sink_points_written_total", "sink" => self.name.clone())
            .increment(delivered);
        Ok(())
    }

    /// Runs `op` on the sink's SQLite connection off the async threads, retrying with backoff
    /// until it succeeds (a busy or full disk mends) or the task is stopped.
    async fn with_db<T, E>(
        &mut self,
        what: &'static str,
        op: impl Fn(&mut Connection) -> Result<T, E> + Clone + Send + 'static,
    ) -> Result<T, Stopped>
    where
        T: Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        loop {
            let conn = self.conn.clone();
            let op = op.clone();
            let done = tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                op(&mut conn)
            })
            .await;
            match done {
                Ok(Ok(t)) => return Ok(t),
                Ok(Err(e)) => {
                    error!(sink = %self.name, error = %error_chain(&e), "cannot {what}; retrying")
                }
                Err(e) => error!(sink = %self.name, error = %e, "cannot {what}: the task failed"),
            }
            let delay = self.backoff.next_delay();
            self.pause(delay).await?;
        }
    }

    /// Writes `lines`, splitting refused requests down to the refused lines, which go to
    /// `dead`; waits out every temporary failure. Returns only when every line is written or
    /// dead-lettered, or when the task is stopped.
    /// `encoded` is the whole of `lines`, already encoded, when the caller has it.
    async fn deliver(
        &mut self,
        lines: &[&[u8]],
        mut encoded: Option<Body>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(), Stopped> {
        // Halves still to write, as ranges of `lines`; the earlier half is written first.
        let mut todo = vec![(0, lines.len())];
        // Whether a refusal is about the lines (dead-letter them) or about every request (an
        // invalid parameter, a proxy's 400: keep everything). Asked once, when needed.
        let mut lines_are_the_problem = false;
        while let Some((a, b)) = todo.pop() {
            let body = match encoded.take() {
                Some(body) if (a, b) == (0, lines.len()) => body,
                _ => self.client.encode(&join_lines(&lines[a..b])),
            };
            loop {
                let started = Instant::now();
                let outcome = self.client.send(body.clone()).await;
                metrics::histogram!("citygate_sink_write_seconds", "sink" => self.name.clone())
                    .record(started.elapsed().as_secs_f64());
                match outcome {
                    WriteOutcome::Written => {
                        self.backoff.reset();
                        if !self.status.is_ok() {
                            info!(sink = %self.name, "store writes succeed again");
                        }
                        self.status.set("ok", None);
                        break;
                    }
                    WriteOutcome::Rejected { message, .. } | WriteOutcome::TooLarge { message } => {
                        self.count_error("rejected");
                        if b - a == 1 && !lines_are_the_problem {
                            match self.request_level_refusal(&message).await? {
                                true => {
                                    todo.push((a, b));
                                    break;
                                }
                                false => lines_are_the_problem = true,
                            }
                        }
                        if b - a == 1 {
                            warn!(sink = %self.name, error = %message, "the store refused a line; kept as a dead letter");
                            dead.push(dead_letter(&self.name, lines[a], &message));
                            metrics::counter!("citygate_sink_dead_letters_total", "sink" => self.name.clone())
                                .increment(1);
                        } else {
                            let mid = a + (b - a) / 2;
                            todo.push((mid, b));
                            todo.push((a, mid));
                        }
                        break;
                    }
                    WriteOutcome::Retry {
                        reason,
                        message,
                        retry_after,
                    } => {
                        self.count_error(reason);
                        let delay = match retry_after {
                            Some(d) => d.clamp(self.retry_min, RETRY_AFTER_MAX),
                            None => self.backoff.next_delay(),
                        };
                        if matches!(self.status.lock().state, "ok" | "starting") {
                            warn!(sink = %self.name, error = %message, retry_in = ?delay,
                                "store write failed; the data waits in the outbox and is retried");
                        }
                        self.status.set("retrying", Some(message));
                        self.pause(delay).await?;
                    }
                    WriteOutcome::Auth { status, message } => {
                        self.count_error("auth");
                        error!(sink = %self.name, status, error = %message, retry_in = ?self.auth_retry,
                            "the store refused the credentials (check the token or password); the data waits in the outbox");
                        self.status
                            .set("auth_error", Some(format!("{status}: {message}")));
                        self.pause(self.auth_retry).await?;
                    }
                    WriteOutcome::Misconfigured { status, message } => {
                        self.count_error("misconfigured");
                        error!(sink = %self.name, status, error = %message, retry_in = ?self.auth_retry,
                            "the store refused the write (check the url, org, bucket or database); the data waits in the outbox");
                        self.status
                            .set("misconfigured", Some(format!("{status}: {message}")));
                        self.pause(self.auth_retry).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Before the first line is dead-lettered: does the store take an empty write? If it
    /// refuses that too, it refuses every request (a wrong parameter, a proxy in the way), not
    /// this line: the data waits, the sink shows `misconfigured`, and it tries again after
    /// `auth_retry`. Returns true in that case.
    async fn request_level_refusal(&mut self, message: &str) -> Result<bool, Stopped> {
        match self.client.write(b"").await {
            WriteOutcome::Written => Ok(false),
            WriteOutcome::Retry { .. } => {
                // The store went away meanwhile: the next attempt will wait for it.
                Ok(true)
            }
            _ => {
                self.count_error("misconfigured");
                error!(sink = %self.name, error = %message, retry_in = ?self.auth_retry,
                    "the store refuses every write, not just some lines; the data waits in the outbox");
                self.status.set("misconfigured", Some(message.to_string()));
                self.pause(self.auth_retry).await?;
                Ok(true)
            }
        }
    }

    fn count_error(&self, reason: &'static str) {
        metrics::counter!("citygate_sink_errors_total", "sink" => self.name.clone(), "reason" => reason)
            .increment(1);
    }

    /// Sleeps, unless told to stop.
    async fn pause(&mut self, d: Duration) -> Result<(), Stopped> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.changed() => Err(Stopped),
        }
    }
}

/// A range of the outbox, read and encoded, ready to send.
struct Prepared {
    to: i64,
    /// Each request: its lines (newline-terminated) and its encoded body.
    chunks: Vec<(Vec<u8>, Body)>,
    /// Entries that could not be decompressed, as dead letters.
    dead: Vec<DeadLetter>,
}

/// Reads the entries of `range` and cuts their lines into requests within the limits
/// (`(max_lines, max_bytes)`), each encoded. Blocking.
fn prepare(
    conn: &mut Connection,
    client: &InfluxClient,
    sink: &str,
    range: Range,
    (max_lines, max_bytes): (u64, u64),
) -> rusqlite::Result<Prepared> {
    let mut entries = db::read_range(conn, range.from, range.to)?;
    // The common case with a backlog: one stored entry is one request. It goes as stored,
    // already gzipped: no second compression.
    if let [e] = entries.as_mut_slice() {
        let fits = e.lines <= max_lines && e.text.len() as u64 <= max_bytes;
        if e.corrupt.is_none() && fits {
            if let Some(body) = client.gzipped(std::mem::take(&mut e.body)) {
                return Ok(Prepared {
                    to: range.to,
                    chunks: vec![(std::mem::take(&mut e.text), body)],
                    dead: Vec::new(),
                });
            }
        }
    }
    let mut dead = Vec::new();
    let mut lines: Vec<&[u8]> = Vec::new();
    for e in &entries {
        if let Some(why) = &e.corrupt {
            error!(sink = %sink, seq = e.seq, error = %why,
                "an outbox entry cannot be decompressed; kept as a dead letter");
            dead.push(corrupt_letter(sink, e.seq, why, &e.body));
            continue;
        }
        lines.extend(e.text.split(|b| *b == b'\n').filter(|l| !l.is_empty()));
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        let end = chunk_end(&lines, start, max_lines, max_bytes);
        let text = join_lines(&lines[start..end]);
        let body = client.encode(&text);
        chunks.push((text, body));
        start = end;
    }
    Ok(Prepared {
        to: range.to,
        chunks,
        dead,
    })
}

/// The end of the request that starts at `start`: within the line and byte limits, at least
/// one line.
fn chunk_end(lines: &[&[u8]], start: usize, max_lines: u64, max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    let mut end = start;
    while end < lines.len() {
        let len = lines[end].len() as u64 + 1;
        if end > start && (bytes + len > max_bytes || (end - start) as u64 >= max_lines) {
            break;
        }
        bytes += len;
        end += 1;
    }
    end
}

fn join_lines(lines: &[&[u8]]) -> Vec<u8> {
    let mut text = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    text
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(u64::try_from(n).unwrap_or(0))
}

/// A line the store refused, with the store's reason. The gateway's own line-protocol decoder
/// reads it back, so that the dead letter can be found by sensor (and, for a one-metric line,
/// by metric, value and time).
fn dead_letter(sink: &str, line: &[u8], message: &str) -> DeadLetter {
    let ctx = crate::codec::DecodeContext {
        precision: crate::codec::Precision::Ms,
        ..Default::default()
    };
    let (mut readings, mut errors) = (Vec::new(), Vec::new());
    let _ = crate::codec::decode(
        crate::codec::Format::Line,
        line,
        &ctx,
        &mut readings,
        &mut errors,
    );
    let one = (readings.len() == 1).then(|| &readings[0]);
    DeadLetter {
        received_at: now_ms(),
        source: format!("sink:{sink}").into(),
        reason: STORE_REJECTED,
        detail: format!("the store refused the line: {message}"),
        sensor: readings.first().map(|r| r.sensor.clone()),
        metric: one.map(|r| r.metric.clone()),
        value: one.map(|r| r.value),
        ts: one.map(|r| r.ts),
        raw: Bytes::copy_from_slice(line),
    }
}

/// An outbox entry that could not be decompressed, kept with its stored bytes.
fn corrupt_letter(sink: &str, seq: i64, why: &str, body: &[u8]) -> DeadLetter {
    DeadLetter::undecodable(
        &format!("sink:{sink}"),
        now_ms(),
        OUTBOX_CORRUPT,
        format!("outbox entry {seq} cannot be decompressed: {why}"),
        Bytes::copy_from_slice(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_line_is_read_back_into_its_dead_letter() {
        let d = dead_letter(
            "central",
            r#"noise,district=x,sensor=a\ b\,c laeq=55.5,quality="good" 1700000000000"#.as_bytes(),
            "field type conflict",
        );
        assert_eq!(d.source, "sink:central");
        assert_eq!(d.reason, STORE_REJECTED);
        assert_eq!(d.sensor.as_deref(), Some("a b,c"));
        assert_eq!(d.metric.as_deref(), Some("laeq"));
        assert_eq!(d.value, Some(55.5));
        assert_eq!(d.ts, Some(1_700_000_000_000));
        assert!(d.detail.contains("field type conflict"));
        // A line the decoder cannot read is still kept whole.
        let d = dead_letter("central", b"not line protocol", "bad");
        assert_eq!(d.sensor, None);
        assert_eq!(&d.raw[..], b"not line protocol");
    }
}
