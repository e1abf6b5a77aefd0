//! Wiring: sources → pipeline → store, over bounded channels.
//!
//! ```text
//! http / demo ──Command──► pipeline task ──StoreMsg──► store thread (SQLite, blocking)
//!   (decode)    bounded     (validate, rules)  bounded   group commit, then reply, print, count
//! ```
//! A source that needs to know its input is safe (an HTTP request, later an MQTT ack) waits
//! for the reply, which is sent only after the store committed. Both channels are bounded, so
//! a slow store pushes back on the pipeline and the pipeline on the sources.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use compact_str::CompactString;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::alerts::AlertHub;
use crate::board::SensorBoard;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::model::{Alert, AlertEvent, AlertEventKind, Batch, Severity, TimestampMs};
use crate::outbox::{Admit, Append, Outbox};
use crate::pipeline::{AckError, Output, Pipeline, Settings};
use crate::sinks::influxdb::drain::{Sink, SinkStatus};
use crate::sinks::sqlite::{Commit, CommitStats, SensorRecord, SqliteReader, SqliteStore};
use crate::telemetry;

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> TimestampMs {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What a source is told once its batch is committed.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Receipt {
    pub accepted: u64,
    /// Of the accepted, how many are suspect.
    pub suspect: u64,
    pub rejected: u64,
    /// Rejections by reason.
    pub reasons: BTreeMap<String, u64>,
    /// The first rejections, with what was wrong.
    pub errors: Vec<ReceiptError>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReceiptError {
    pub reason: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
}

const RECEIPT_ERRORS_MAX: usize = 100;

impl Receipt {
    fn of(out: &Output) -> Receipt {
        Receipt {
            accepted: out.stats.accepted,
            suspect: out.stats.suspect,
            rejected: out.dead_letters.len() as u64,
            reasons: out
                .stats
                .rejected
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect(),
            errors: out
                .dead_letters
                .iter()
                .take(RECEIPT_ERRORS_MAX)
                .map(|d| ReceiptError {
                    reason: d.reason.to_string(),
                    detail: d.detail.clone(),
                    sensor: d.sensor.as_ref().map(|s| s.to_string()),
                    metric: d.metric.as_ref().map(|s| s.to_string()),
                })
                .collect(),
        }
    }
}

/// Why a source's input could not be taken.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum IngestError {
    #[error("the gateway is shutting down")]
    Stopped,
    #[error("the store could not commit: {0}")]
    Store(String),
    #[error(transparent)]
    Ack(#[from] AckError),
}

enum Command {
    Ingest {
        batch: Batch,
        reply: Option<oneshot::Sender<Result<Receipt, IngestError>>>,
    },
    Ack {
        id: String,
        by: String,
        comment: String,
        reply: oneshot::Sender<Result<Alert, IngestError>>,
    },
}

enum Reply {
    None,
    Receipt(oneshot::Sender<Result<Receipt, IngestError>>, Box<Receipt>),
    Ack(oneshot::Sender<Result<Alert, IngestError>>, Arc<Alert>),
}

enum StoreMsg {
    Commit {
        out: Box<Output>,
        source: CompactString,
        reply: Reply,
    },
    Prune {
        older_than: TimestampMs,
    },
}

/// A queued batch whose commit is still to come (see [`Ingest::enqueue`]).
pub struct Pending(oneshot::Receiver<Result<Receipt, IngestError>>);

impl Pending {
    /// Waits until the batch's readings and dead letters are committed.
    pub async fn committed(self) -> Result<Receipt, IngestError> {
        self.await
    }

    /// A pending commit that a test ends by hand.
    #[cfg(test)]
    pub(crate) fn by_hand() -> (oneshot::Sender<Result<Receipt, IngestError>>, Pending) {
        let (tx, rx) = oneshot::channel();
        (tx, Pending(rx))
    }
}

/// Polled in place (it is `Unpin`), so that a task can keep several in a queue and wait for
/// the oldest inside its own `select!` (the MQTT event loop acks a batch once it is committed).
impl std::future::Future for Pending {
    type Output = Result<Receipt, IngestError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|_| IngestError::Stopped).and_then(|r| r))
    }
}

/// The handle sources use to feed the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Command>,
}

impl Ingest {
    /// Submits a batch and waits until its readings and dead letters are committed.
    pub async fn submit(&self, batch: Batch) -> Result<Receipt, IngestError> {
        self.enqueue(batch).await?.committed().await
    }

    /// Queues a batch (waiting for room) and returns a handle to wait for its commit, so that
    /// a source can queue the next batch while this one commits. Batches are processed and
    /// committed in the order they were queued.
    pub async fn enqueue(&self, batch: Batch) -> Result<Pending, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ingest {
                batch,
                reply: Some(reply),
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        Ok(Pending(rx))
    }

    /// Submits a batch without waiting for its commit (still bounded: waits for room).
    pub async fn send(&self, batch: Batch) -> Result<(), IngestError> {
        self.tx
            .send(Command::Ingest { batch, reply: None })
            .await
            .map_err(|_| IngestError::Stopped)
    }

    /// Acknowledges an active alert; answers once the acknowledgement is committed.
    pub async fn ack(&self, id: &str, by: &str, comment: &str) -> Result<Alert, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ack {
                id: id.to_string(),
                by: by.to_string(),
                comment: comment.to_string(),
                reply,
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        rx.await.map_err(|_| IngestError::Stopped)?
    }
}

/// A running gateway.
pub struct Gateway {
    addr: SocketAddr,
    db_path: PathBuf,
    ingest: Ingest,
    reader: Arc<SqliteReader>,
    mqtt: Vec<crate::sources::mqtt::MqttSource>,
    modbus: crate::sources::modbus::ModbusSource,
    stop_http: watch::Sender<bool>,
    /// True once shutdown begins: changing HTTP calls (ingest, ack) get 503 from then on.
    drain_http: watch::Sender<bool>,
    /// True once the HTTP handlers must let go of the pipeline (every call gets 503).
    release_http: watch::Sender<bool>,
    http: tokio::task::JoinHandle<()>,
    pipeline: tokio::task::JoinHandle<()>,
    store: std::thread::JoinHandle<()>,
    outbox: Arc<Outbox>,
    sinks: Vec<Sink>,
    broker: Option<crate::broker::EmbeddedBroker>,
    hub: Arc<AlertHub>,
    board: Arc<SensorBoard>,
    alert_outputs: Vec<crate::alerts::output::AlertOutput>,
}

impl Gateway {
    /// Opens the store, restores alert state, and starts serving. With `listener` the caller
    /// picks the socket (tests bind port 0); otherwise `http.listen` is bound.
    pub async fn start(config: Config, listener: Option<TcpListener>) -> anyhow::Result<Gateway> {
        // The embedded broker comes first: the MQTT sources connect to it, at the address it
        // actually bound (port 0 picks one).
        let mut config = config;
        let broker = crate::broker::start_configured(&mut config)?;

        let config = Arc::new(config);
        // Install the recorder before anything counts, or early counts go nowhere.
        telemetry::metrics_handle();
        std::fs::create_dir_all(&config.gateway.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                config.gateway.data_dir.display()
            )
        })?;
        let db_path = config.sqlite_path();
        let mut store = SqliteStore::open(&db_path)
            .with_context(|| format!("cannot open the store {}", db_path.display()))?;
        store
            .set_fsync(config.outbox.fsync)
            .context("cannot set the fsync policy")?;
        store.set_max_dead_letters(config.sqlite.max_dead_letters);
        let sink_names: Vec<&str> = config
            .sinks
            .influxdb
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let outbox = Outbox::open(store.connection_mut(), config.outbox.clone(), &sink_names)
            .with_context(|| format!("cannot open the outbox in {}", db_path.display()))?;
        let reader =
            Arc::new(SqliteReader::open(&db_path).context("cannot open the store for reading")?);

        let now = now_ms();
        let catalog = Arc::new(Catalog::from_config(&config));
        let mut pipeline = Pipeline::new(catalog.clone(), Settings::from_config(&config), now);
        let registry = reader
            .sensors()
            .context("cannot read the sensor registry")?;
        for s in &registry {
            pipeline.restore_sensor(&s.id, &s.kind, tags_of(&s.tags), now);
        }
        let active = store.active_alerts().context("cannot read active alerts")?;
        let restored = active.len();
        let out = pipeline.restore_alerts(active, now);
        if !out.is_empty() {
            // A handful of resolve events at startup: appended without waiting for room (the
            // sinks are not running yet), at most one entry over the limit.
            let entry = outbox_entry(&outbox, &out).context("cannot encode for the outbox")?;
            let stats = commit_output(
                &mut store,
                &out,
                config.sqlite.dead_letter_raw_max,
                true,
                entry.as_ref(),
            )
            .context("cannot resolve orphaned alerts")?;
            if let (Some(e), Some(seq)) = (&entry, stats.outbox_seq) {
                outbox.appended(e.meta(seq), Admit::default());
            }
        }
        // The hub and the board start from what the store holds now, after the restore above:
        // the pipeline's active alerts, shared rather than read again as copies.
        let active = pipeline.shared_active_alerts();
        let head = reader
            .alert_event_head()
            .context("cannot read the alert history")?;
        let board = Arc::new(SensorBoard::new());
        // Configured sensors, as the catalog compiled them (kind and tags).
        for (id, profile) in catalog.sensors() {
            board.add_sensor(id, &profile.kind.name, profile.tags.clone(), None);
        }
        for s in &registry {
            board.add_sensor(&s.id, &s.kind, tags_of(&s.tags), Some(s.last_seen));
        }
        board.add_alerts(&active);
        let hub = Arc::new(AlertHub::new(head, active));
        info!(
            store = %db_path.display(),
            sensors = pipeline.sensor_count(),
            active_alerts = restored - out.events.len(),
            "store opened and alert state restored"
        );

        let cap = config.gateway.channel_capacity;
        let (tx, rx) = mpsc::channel(cap);
        let (store_tx, store_rx) = mpsc::channel(cap);
        let store_cfg = StoreThread {
            raw_max: config.sqlite.dead_letter_raw_max,
            store_readings: config.sqlite.store_readings,
            console: config.alerts.console,
            tz: catalog.timezone,
            outbox: outbox.clone(),
            hub: hub.clone(),
            board: board.clone(),
        };
        let store = std::thread::Builder::new()
            .name("citygate-store".into())
            .spawn(move || store_cfg.run(store, store_rx))
            .context("cannot start the store thread")?;
        let timers = Timers {
            deadman: config.gateway.deadman_interval.0,
            prune: config.sqlite.prune_interval.0,
            retention_ms: config.sqlite.retention.as_millis(),
        };
        let pipeline = tokio::spawn(run_pipeline(pipeline, rx, store_tx, timers));
        let ingest = Ingest { tx };

        // Remote sinks: one task each, draining the outbox from its own cursor. A missing
        // token is a startup error; an unreachable store is not (the outbox holds the data).
        let mut sinks = Vec::with_capacity(config.sinks.influxdb.len());
        for (i, cfg) in config.sinks.influxdb.iter().enumerate() {
            let client = crate::sinks::influxdb::client::InfluxClient::new(cfg)
                .with_context(|| format!("cannot set up the sink {:?}", cfg.name))?;
            let conn = crate::sinks::sqlite::open_side_writer(&db_path, config.outbox.fsync)
                .with_context(|| format!("cannot open the outbox for the sink {:?}", cfg.name))?;
            info!(sink = %cfg.name, store = %client.describe(), "draining the outbox to a remote store");
            sinks.push(Sink::start(
                cfg,
                i,
                client,
                outbox.clone(),
                conn,
                config.sqlite.dead_letter_raw_max,
            ));
        }
        let sink_status: Arc<[Arc<SinkStatus>]> = sinks.iter().map(|s| s.status.clone()).collect();

        // Alert outputs: each drains alert_events from its own cursor; a new one starts at the
        // head read above, before the store thread could add anything.
        let alert_outputs = crate::alerts::output::start_all(
            &config.alerts,
            &config.mqtt,
            crate::alerts::output::Common {
                reader: reader.clone(),
                hub: hub.clone(),
                board: board.clone(),
                db_path: db_path.clone(),
                fsync: config.outbox.fsync,
                raw_max: config.sqlite.dead_letter_raw_max,
                embedded_broker: broker.as_ref().map(|b| b.addr()),
            },
            head,
        )
        .context("cannot start the alert outputs")?;

        // MQTT sources: one per [[mqtt]] connection. A bad password or TLS file fails here.
        let mut mqtt = Vec::with_capacity(config.mqtt.len());
        for m in &config.mqtt {
            let source =
                crate::sources::mqtt::start(m.clone(), ingest.clone(), config.gateway.batch_max)
                    .context("cannot start an MQTT source")?;
            mqtt.push(source);
        }
        let mqtt_status: Arc<[_]> = mqtt.iter().map(|s| s.status()).collect();

        // Modbus devices: one polling task each (config::load already checked the maps).
        let modbus =
            crate::sources::modbus::start(&config, ingest.clone()).map_err(|problems| {
                anyhow::Error::new(crate::config::ConfigError { problems })
                    .context("cannot start the Modbus source")
            })?;
        if !config.modbus.devices.is_empty() {
            info!(
                devices = config.modbus.devices.len(),
                "polling Modbus devices"
            );
        }
        let modbus_status: Arc<[_]> = modbus.status().iter().cloned().collect();

        // Before binding, so that a bad certificate fails the start with nothing listening.
        let serve_opts = crate::http::serve::ServeOptions::from_config(&config.http)
            .context("cannot set up HTTPS (http.tls)")?;
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(config.http.listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {} (http.listen)", config.http.listen)
                })?,
        };
        let addr = listener.local_addr().context("listener has no address")?;
        let (stop_http, _) = watch::channel(false);
        let (release_http, _) = watch::channel(false);
        let state = crate::http::AppState {
            stopping: release_http.subscribe(),
            ingest: ingest.clone(),
            reader: reader.clone(),
            catalog,
            db_path: db_path.clone(),
            started_at: Instant::now(),
            mqtt: mqtt_status,
            modbus: modbus_status,
            outbox: outbox.clone(),
            sinks: sink_status,
            hub: hub.clone(),
            board: board.clone(),
            alert_outputs: alert_outputs.iter().map(|o| o.status.clone()).collect(),
            limits: Arc::new(crate::http::limits::HttpLimits::from_config(&config.http)),
            auth: Arc::new(
                crate::http::auth::Auth::from_config(&config.http.auth)
                    .context("cannot read the API token (http.auth)")?,
            ),
        };
        let router = crate::http::router(state, config.http.max_body_bytes);
        let (drain_http, draining) = watch::channel(false);
        let signals = crate::http::serve::Signals {
            draining,
            release: release_http.subscribe(),
            stop: stop_http.subscribe(),
        };
        let http = tokio::spawn(crate::http::serve::serve(
            listener, router, serve_opts, signals,
        ));
        let scheme = if config.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        info!(%addr, scheme, "HTTP API listening");
        for warning in crate::security::startup_warnings(&config) {
            warn!("{warning}");
        }
        Ok(Gateway {
            addr,
            db_path,
            ingest,
            reader,
            mqtt,
            modbus,
            stop_http,
            drain_http,
            release_http,
            http,
            pipeline,
            store,
            outbox,
            sinks,
            broker,
            hub,
            board,
            alert_outputs,
        })
    }

    /// The outbox's depth and state, as `/health` shows it.
    pub fn outbox(&self) -> crate::outbox::Snapshot {
        self.outbox.snapshot(now_ms())
    }

    /// The state of each remote sink, in `[[sinks.influxdb]]` order.
    pub fn sinks(&self) -> Vec<crate::sinks::influxdb::drain::SinkSnapshot> {
        self.sinks.iter().map(|s| s.status.snapshot()).collect()
    }

    /// Committed alert events and the active set, for alert outputs and tests.
    pub fn alerts(&self) -> Arc<AlertHub> {
        self.hub.clone()
    }

    /// The state of each alert output (`[alerts.mqtt]`, then `[[alerts.webhooks]]`).
    pub fn alert_outputs(&self) -> Vec<crate::alerts::output::OutputSnapshot> {
        self.alert_outputs
            .iter()
            .map(|o| o.status.snapshot())
            .collect()
    }

    /// The live state of every known sensor.
    pub fn board(&self) -> Arc<SensorBoard> {
        self.board.clone()
    }

    /// The embedded MQTT broker, if `[broker] enabled`.
    pub fn broker(&self) -> Option<&crate::broker::EmbeddedBroker> {
        self.broker.as_ref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn db_path(&self) -> &std::path::Path {
        &self.db_path
    }

    pub fn ingest(&self) -> Ingest {
        self.ingest.clone()
    }

    pub fn reader(&self) -> Arc<SqliteReader> {
        self.reader.clone()
    }

    /// The state of each polled Modbus device, in `[[modbus.devices]]` order.
    pub fn modbus_status(&self) -> Vec<crate::sources::modbus::DeviceSnapshot> {
        self.modbus.status().iter().map(|s| s.snapshot()).collect()
    }

    /// The state of each MQTT connection, in `[[mqtt]]` order.
    pub fn mqtt_status(&self) -> Vec<crate::sources::mqtt::StatusSnapshot> {
        self.mqtt.iter().map(|s| s.status().snapshot()).collect()
    }

    /// The first step of [`shutdown`](Self::shutdown), on its own: from now on changing HTTP
    /// calls (ingest, ack) get 503 `shutting_down`, while reads are still served.
    pub fn stop_taking_input(&self) {
        let _ = self.drain_http.send(true);
    }

    /// [`shutdown`](Self::shutdown), bounded: after `bound` it gives up waiting, logs which
    /// step it was at and what was still queued, and returns an error. What was not committed
    /// was not acknowledged either (QoS 1 messages stay with the broker, HTTP clients got no
    /// 200), so nothing acknowledged is lost; the next run takes it again.
    pub async fn shutdown_within(self, bound: Duration) -> anyhow::Result<()> {
        let step = Arc::new(std::sync::Mutex::new("starting"));
        let queued = self.ingest.tx.downgrade();
        let outbox = self.outbox.clone();
        match tokio::time::timeout(bound, self.shutdown_steps(step.clone())).await {
            Ok(result) => result,
            Err(_) => {
                let at = step.lock().map(|s| *s).unwrap_or("unknown");
                let batches = queued
                    .upgrade()
                    .map(|tx| tx.max_capacity() - tx.capacity())
                    .unwrap_or(0);
                let outbox = outbox.snapshot(now_ms());
                error!(
                    step = at,
                    queued_batches = batches,
                    outbox_entries = outbox.entries,
                    "shutdown did not finish within gateway.shutdown_timeout ({bound:?}); \
                     exiting anyway: queued input was not acknowledged and will be sent again, \
                     the outbox keeps what the remote sinks have not confirmed"
                );
                anyhow::bail!("shutdown did not finish within {bound:?} (stuck at: {at})")
            }
        }
    }

    /// Stops taking input, lets everything already taken be committed, and returns.
    /// Every other `Ingest` handle must have been dropped for the pipeline to drain.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown_steps(Arc::new(std::sync::Mutex::new("starting")))
            .await
    }

    async fn shutdown_steps(self, step: Arc<std::sync::Mutex<&'static str>>) -> anyhow::Result<()> {
        let at = |name: &'static str| {
            if let Ok(mut s) = step.lock() {
                *s = name;
            }
        };
        // HTTP input first: an ingest from now on gets 503 rather than racing the drain.
        self.stop_taking_input();
        // A full outbox stops holding the store thread: a source or an HTTP request
        // waiting for room would otherwise keep the shutdown from finishing. The last batches
        // are committed over the limit rather than lost.
        self.outbox.close();
        // Sources next: they stop pulling and get what they already submitted acked.
        at("stopping the MQTT sources (acking what was committed)");
        for source in self.mqtt {
            source.stop().await;
        }
        at("stopping the Modbus polling");
        self.modbus.stop().await;
        // The HTTP API lets go of the pipeline (SSE streams end, requests in flight finish,
        // everything else gets 503) but keeps listening until the end, so that a client
        // gets an answer rather than a refused connection while the rest is flushed.
        let _ = self.release_http.send(true);
        drop(self.ingest);
        at("committing the pipeline's last batches");
        let pipeline = self.pipeline.await.context("pipeline task failed");
        let store = self.store;
        let store = tokio::task::spawn_blocking(move || store.join())
            .await
            .context("store thread join failed")
            .and_then(|r| r.map_err(|_| anyhow::anyhow!("store thread panicked")));
        // What the sinks have not delivered stays in the outbox for the next run. Every sink
        // is told at once, so their last requests time out together.
        at("stopping the remote sinks");
        for sink in &self.sinks {
            sink.signal_stop();
        }
        for sink in self.sinks {
            sink.join().await;
        }
        // Events the outputs have not confirmed stay in alert_events for the next run.
        at("stopping the alert outputs");
        for output in &self.alert_outputs {
            output.signal_stop();
        }
        for output in self.alert_outputs {
            output.join().await;
        }
        at("closing the HTTP API");
        let _ = self.stop_http.send(true);
        let _ = self.http.await;
        pipeline?;
        store?;
        Ok(())
    }
}

struct Timers {
    deadman: Duration,
    prune: Duration,
    retention_ms: i64,
}

async fn run_pipeline(
    mut pipeline: Pipeline,
    mut rx: mpsc::Receiver<Command>,
    store: mpsc::Sender<StoreMsg>,
    timers: Timers,
) {
    let mut deadman = tokio::time::interval(timers.deadman);
    deadman.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(timers.prune);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Command::Ingest { batch, reply }) => {
                    let source = batch.source.clone();
                    let started = Instant::now();
                    let out = pipeline.process(batch, now_ms());
                    telemetry::record_pipeline_batch(started.elapsed().as_secs_f64());
                    let reply = match reply {
                        Some(tx) => Reply::Receipt(tx, Box::new(Receipt::of(&out))),
                        None => Reply::None,
                    };
                    StoreMsg::Commit { out: Box::new(out), source, reply }
                }
                Some(Command::Ack { id, by, comment, reply }) => match pipeline.ack(&id, &by, &comment, now_ms()) {
                    Ok(out) => match out.alerts.first().cloned() {
                        Some(alert) => StoreMsg::Commit { out: Box::new(out), source: "api".into(), reply: Reply::Ack(reply, alert) },
                        None => continue,
                    },
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        continue;
                    }
                },
            },
            _ = deadman.tick() => {
                let out = pipeline.tick(now_ms());
                if out.is_empty() {
                    continue;
                }
                StoreMsg::Commit { out: Box::new(out), source: "deadman".into(), reply: Reply::None }
            }
            _ = prune.tick() => StoreMsg::Prune { older_than: now_ms() - timers.retention_ms },
        };
        if store.send(msg).await.is_err() {
            error!("the store thread stopped; the pipeline stops too");
            break;
        }
    }
}

/// The outbox entry for an output: its readings and alert events as line protocol,
/// compressed. `None` when no remote sink is configured or there is nothing to send.
fn outbox_entry(outbox: &Outbox, out: &Output) -> std::io::Result<Option<Append>> {
    if !outbox.enabled() || (out.accepted.is_empty() && out.events.is_empty()) {
        return Ok(None);
    }
    let mut text = Vec::with_capacity(out.accepted.len() * 96 + out.events.len() * 256);
    let mut lines = crate::sinks::influxdb::line::encode_readings(&mut text, &out.accepted) as u64;
    for e in &out.events {
        crate::sinks::influxdb::line::encode_alert_event(&mut text, e);
        lines += 1;
    }
    let points = (out.accepted.len() + out.events.len()) as u64;
    Append::compress(&text, lines, points, now_ms()).map(Some)
}

/// Commits one output in one transaction, with its outbox entry if it has one.
fn commit_output(
    store: &mut SqliteStore,
    out: &Output,
    raw_max: usize,
    store_readings: bool,
    outbox: Option<&Append>,
) -> Result<CommitStats, crate::sinks::sqlite::StoreError> {
    let sensors: Vec<SensorRecord> = out
        .new_sensors
        .iter()
        .map(|s| SensorRecord {
            id: s.id.clone(),
            kind: s.kind.clone(),
            tags: s
                .tags
                .iter()
                .flat_map(|t| t.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            last_seen: s.first_seen,
        })
        .collect();
    store.commit(&Commit {
        // Off (the null sink), readings are validated and drive rules but are not written.
        readings: if store_readings { &out.accepted } else { &[] },
        dead_letters: &out.dead_letters,
        alerts: &out.alerts,
        events: &out.events,
        sensors: &sensors,
        raw_max,
        outbox,
    })
}

/// Most messages waiting at once that go into one transaction.
const GROUP_MAX: usize = 64;

struct StoreThread {
    raw_max: usize,
    /// Off: readings are not written (the null sink); alerts and dead letters still are.
    store_readings: bool,
    console: bool,
    tz: chrono_tz::Tz,
    outbox: Arc<Outbox>,
    hub: Arc<AlertHub>,
    board: Arc<SensorBoard>,
}

/// Logs rejected input at most once per window, with counts by reason, so that a broken
/// device flooding bad payloads cannot flood the log too. Every rejection is still counted
/// in the metrics and kept as a dead letter.
struct RejectLog {
    since: Instant,
    counts: BTreeMap<&'static str, u64>,
    example: Option<String>,
}

const REJECT_LOG_WINDOW: Duration = Duration::from_secs(10);

impl RejectLog {
    fn new() -> Self {
        RejectLog {
            since: Instant::now(),
            counts: BTreeMap::new(),
            example: None,
        }
    }

    fn add(&mut self, out: &Output) {
        for d in &out.dead_letters {
            *self.counts.entry(d.reason).or_default() += 1;
            if self.example.is_none() {
                self.example = Some(format!("{}: {}", d.reason, d.detail));
            }
        }
        if !self.counts.is_empty() && self.since.elapsed() >= REJECT_LOG_WINDOW {
            let total: u64 = self.counts.values().sum();
            let by_reason: Vec<String> = self
                .counts
                .iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            warn!(
                total,
                reasons = %by_reason.join(" "),
                example = %self.example.take().unwrap_or_default(),
                "rejected input since the last report (see /api/v1/dead-letters)"
            );
            self.counts.clear();
            self.since = Instant::now();
        }
    }
}

impl StoreThread {
    fn run(self, mut store: SqliteStore, mut rx: mpsc::Receiver<StoreMsg>) {
        let mut group = Vec::with_capacity(GROUP_MAX);
        let mut rejects = RejectLog::new();
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < GROUP_MAX {
                match rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            let mut merged: Option<Box<Output>> = None;
            let mut done = Vec::with_capacity(group.len());
            let mut prune_before = None;
            for msg in group.drain(..) {
                match msg {
                    StoreMsg::Commit { out, source, reply } => {
                        done.push(take_into(&mut merged, out, source, reply));
                    }
                    StoreMsg::Prune { older_than } => prune_before = Some(older_than),
                }
            }
            if let Some(merged) = merged {
                self.commit_group(&mut store, &merged, done);
                rejects.add(&merged);
            }
            if let Some(cutoff) = prune_before {
                match store.prune(cutoff) {
                    Ok(p) => {
                        telemetry::record_dead_letters_dropped(p.dead_letters_over_cap);
                        info!(
                            readings = p.readings,
                            dead_letters = p.dead_letters,
                            dead_letters_over_cap = p.dead_letters_over_cap,
                            alerts = p.alerts,
                            "retention pruning"
                        )
                    }
                    Err(e) => warn!(error = %error_chain(&e), "retention pruning failed"),
                }
            }
        }
    }

    fn commit(
        &self,
        store: &mut SqliteStore,
        out: &Output,
        entry: Option<&Append>,
    ) -> Result<CommitStats, crate::sinks::sqlite::StoreError> {
        commit_output(store, out, self.raw_max, self.store_readings, entry)
    }

    fn commit_group(&self, store: &mut SqliteStore, merged: &Output, done: Vec<Done>) {
        // The outbox entry is encoded and admitted (waiting while the outbox is full) before
        // the transaction, so a full outbox holds the sources back, not a half-done commit.
        let mut entry = match outbox_entry(&self.outbox, merged) {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "cannot encode the batch for the outbox");
                None
            }
        };
        let admit = match &mut entry {
            Some(e) => {
                let admit = self.outbox.reserve(e.body.len() as u64);
                e.drop_through = admit.drop_through;
                admit
            }
            None => Admit::default(),
        };
        let started = Instant::now();
        let mut result = self.commit(store, merged, entry.as_ref());
        // The pipeline's state (duplicate checks, windows, alerts) already counts this output
        // as done, so giving up on a commit that may still succeed would lose it for good: a
        // busy or full disk is retried until it recovers, while the bounded channels hold the
        // sources back. Only an error no retry can mend (a bug) fails the sources.
        let mut backoff = Duration::from_millis(50);
        while let Err(e) = &result {
            if !e.is_retryable() {
                break;
            }
            warn!(error = %error_chain(e), retry_in = ?backoff, "store commit failed; retrying");
            telemetry::record_commit_latency(started.elapsed().as_secs_f64(), false);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            result = self.commit(store, merged, entry.as_ref());
        }
        telemetry::record_commit_latency(started.elapsed().as_secs_f64(), result.is_ok());
        match result {
            Ok(stats) => {
                if let (Some(e), Some(seq)) = (&entry, stats.outbox_seq) {
                    self.outbox.appended(e.meta(seq), admit);
                }
                telemetry::record_dead_letters_dropped(stats.dead_letters_dropped);
                // New sensors first, so that the events' tags are there for the outputs.
                self.board.apply(merged);
                self.hub
                    .publish(&merged.alerts, stats.last_event_seq, &merged.events);
                for Done {
                    stats,
                    events,
                    source,
                    reply,
                } in done
                {
                    let events = &merged.events[events];
                    telemetry::record_committed(&source, &stats, events);
                    if self.console {
                        print_events(events, self.tz);
                    }
                    match reply {
                        Reply::None => {}
                        Reply::Receipt(tx, receipt) => {
                            let _ = tx.send(Ok(*receipt));
                        }
                        Reply::Ack(tx, alert) => {
                            let _ = tx.send(Ok(Arc::unwrap_or_clone(alert)));
                        }
                    }
                }
            }
            Err(e) => {
                let msg = error_chain(&e);
                error!(error = %msg, readings = merged.accepted.len(), "store commit failed; the sources are told");
                for Done { reply, .. } in done {
                    match reply {
                        Reply::None => {}
                        Reply::Receipt(tx, _) => {
                            let _ = tx.send(Err(IngestError::Store(msg.clone())));
                        }
                        Reply::Ack(tx, _) => {
                            let _ = tx.send(Err(IngestError::Store(msg.clone())));
                        }
                    }
                }
            }
        }
    }
}

/// What is left of one output once it is part of its group's commit: what its source is
/// told, and its alert events as a range of the group's.
struct Done {
    stats: crate::pipeline::Stats,
    events: std::ops::Range<usize>,
    source: CompactString,
    reply: Reply,
}

/// Moves an output into its group's merged output (a lone output, the usual case, becomes
/// it as it is: its readings are not copied).
fn take_into(
    merged: &mut Option<Box<Output>>,
    mut out: Box<Output>,
    source: CompactString,
    reply: Reply,
) -> Done {
    let stats = std::mem::take(&mut out.stats);
    let events = match merged {
        None => {
            let events = 0..out.events.len();
            *merged = Some(out);
            events
        }
        Some(into) => {
            let start = into.events.len();
            into.accepted.append(&mut out.accepted);
            into.dead_letters.append(&mut out.dead_letters);
            into.events.append(&mut out.events);
            into.alerts.append(&mut out.alerts);
            into.new_sensors.append(&mut out.new_sensors);
            start..into.events.len()
        }
    };
    Done {
        stats,
        events,
        source,
        reply,
    }
}

/// Registry tags (sorted pairs) as a reading's tags; `None` when there are none.
fn tags_of(pairs: &[(String, String)]) -> Option<crate::model::Tags> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    CompactString::from(k.as_str()),
                    CompactString::from(v.as_str()),
                )
            })
            .collect()
    })
}

/// An error with all its causes, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Prints alert events for a person watching the console.
fn print_events(events: &[AlertEvent], tz: chrono_tz::Tz) {
    if events.is_empty() {
        return;
    }
    let color = std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    for e in events {
        let _ = writeln!(stdout, "{}", format_event(e, tz, color));
    }
}

/// One readable line per alert event.
pub fn format_event(e: &AlertEvent, tz: chrono_tz::Tz, color: bool) -> String {
    let time = chrono::DateTime::from_timestamp_millis(e.at)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let sev = e.alert.severity;
    let (on, off) = match (color, sev) {
        (false, _) => ("", ""),
        (true, Severity::Info) => ("\x1b[36m", "\x1b[0m"),
        (true, Severity::Warning) => ("\x1b[33m", "\x1b[0m"),
        (true, Severity::Major) => ("\x1b[38;5;208m", "\x1b[0m"),
        (true, Severity::Critical) => ("\x1b[1;31m", "\x1b[0m"),
    };
    let event = match e.event {
        AlertEventKind::Raised => "RAISED",
        AlertEventKind::Escalated => "ESCALATED",
        AlertEventKind::Deescalated => "LOWERED",
        AlertEventKind::Resolved => "RESOLVED",
        AlertEventKind::Acknowledged => "ACKED",
    };
    format!(
        "{time} {on}{:<8}{off} {event:<9} {:<10} {:<18} {}",
        sev.as_str().to_uppercase(),
        e.alert.sensor,
        format!("{}/{}", e.alert.kind, e.alert.rule),
        e.alert.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Alert, AlertEventKind, AlertState, Reading, Severity};

    fn event(id: &str) -> AlertEvent {
        AlertEvent {
            event: AlertEventKind::Raised,
            at: 1_000,
            alert: Alert {
                id: id.into(),
                rule: "level high".into(),
                sensor: "wl-1".into(),
                kind: "water_level".into(),
                metric: "level".into(),
                severity: Severity::Major,
                state: AlertState::Active,
                value: 5.0,
                threshold: 4.0,
                peak: 5.0,
                count: 1,
                started_at: 1_000,
                updated_at: 1_000,
                resolved_at: None,
                ack: None,
                message: String::new(),
            },
        }
    }

    fn output(sensor: &str, readings: usize, events: &[&str]) -> Box<Output> {
        let mut out = Output::default();
        for i in 0..readings {
            out.accepted.push(Reading::new(
                sensor,
                "water_level",
                "level",
                i as f64,
                1_000,
            ));
        }
        out.events = events.iter().map(|id| event(id)).collect();
        out.stats.accepted = readings as u64;
        out.stats.received = readings as u64 + 1;
        Box::new(out)
    }

    fn sensors(out: &Output) -> Vec<String> {
        out.accepted.iter().map(|r| r.sensor.to_string()).collect()
    }

    #[test]
    fn a_group_is_merged_in_order_and_each_output_keeps_its_stats_and_events() {
        let mut merged = None;
        let a = take_into(
            &mut merged,
            output("a", 2, &["a1"]),
            "s1".into(),
            Reply::None,
        );
        let b = take_into(&mut merged, output("b", 1, &[]), "s2".into(), Reply::None);
        let c = take_into(
            &mut merged,
            output("c", 3, &["c1", "c2"]),
            "s1".into(),
            Reply::None,
        );
        let merged = merged.expect("merged");
        assert_eq!(sensors(&merged), ["a", "a", "b", "c", "c", "c"]);
        let ids = |d: &Done| -> Vec<String> {
            merged.events[d.events.clone()]
                .iter()
                .map(|e| e.alert.id.clone())
                .collect()
        };
        assert_eq!(ids(&a), ["a1"]);
        assert!(ids(&b).is_empty());
        assert_eq!(ids(&c), ["c1", "c2"]);
        assert_eq!(
            [a.stats.accepted, b.stats.accepted, c.stats.accepted],
            [2, 1, 3]
        );
        assert_eq!(c.stats.received, 4);
        assert_eq!((a.source.as_str(), b.source.as_str()), ("s1", "s2"));
    }

    #[test]
    fn a_lone_output_becomes_the_merged_one_without_a_copy() {
        let out = output("a", 3, &["a1"]);
        let readings_at = out.accepted.as_ptr();
        let mut merged = None;
        let done = take_into(&mut merged, out, "s".into(), Reply::None);
        let merged = merged.expect("merged");
        assert_eq!(merged.accepted.as_ptr(), readings_at);
        assert_eq!(sensors(&merged), ["a", "a", "a"]);
        assert_eq!(done.events, 0..1);
        assert_eq!(done.stats.accepted, 3);
    }
}
