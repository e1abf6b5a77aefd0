//! `[alerts.mqtt]`: alert events published to an MQTT broker, and the active set kept there
//! as retained messages.
//!
//! - every event → `{prefix}/{severity}/{kind}/{sensor}`, QoS 1, the AlertMessage JSON;
//! - the active state → `{prefix}/active/{alert id}`, retained, the Alert JSON; a resolve
//!   publishes an empty retained payload, which clears it. On every (re)connect the active
//!   set is published again, and a retained message under `{prefix}/active/` for an alert
//!   that is not active (left by a crash) is cleared.
//!
//! # Delivery
//! One task polls rumqttc's event loop and is the only one that publishes, with `try_publish`
//! (it must never `.await` the client: the client's requests are drained by this very loop,
//! rumqtt#1025). The drain loop hands it one page at a time; the page is confirmed, and the
//! cursor moves, once the broker has acknowledged every message of it. MQTT wants PUBACKs in
//! the order of the PUBLISHes (MQTT 3.1.1 §4.6), so counting acknowledgements on the current
//! connection tells which messages are in. A lost connection starts a clean session and the
//! unconfirmed page is published again: at-least-once; retained messages are idempotent.

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::output::{
    count_delivery, message_json, record_delivery_seconds, wanted, AlertOutput, Common, Deliver,
    Delivered, Drain, Failure, OutputStatus, RetryPolicy, State, MQTT_OUTPUT,
};
use super::AlertView;
use crate::backoff::Backoff;
use crate::config::{ConfigProblem, Dur};
use crate::model::{AlertEventKind, AlertState, Severity};
use crate::secret::{Secret, SecretSource};
use crate::sinks::sqlite::SequencedEvent;
use crate::sources::mqtt::config::{MqttConfig, TlsConfig};
use crate::sources::mqtt::tls::{self, TlsError};

/// `[alerts.mqtt]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertMqttConfig {
    /// Publish alerts over MQTT.
    #[serde(default)]
    pub enabled: bool,
    /// Broker address, `mqtt://host:port` or `mqtts://host:port`. Unset: the first `[[mqtt]]`
    /// connection's url, user name, password and TLS (the keys below still override them).
    #[serde(default)]
    pub url: Option<String>,
    /// Client id; must differ from the `[[mqtt]]` connections' on the same broker.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Topic prefix: events go to `{prefix}/{severity}/{kind}/{sensor}`, the active set to
    /// `{prefix}/active/{alert id}`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Keep each active alert as a retained message under `{prefix}/active/`, so that a
    /// subscriber sees the active set as soon as it subscribes.
    #[serde(default = "default_retain_active")]
    pub retain_active: bool,
    /// Events of alerts below this severity are not published (info, warning, major, critical).
    #[serde(default = "super::webhook::default_min_severity")]
    pub min_severity: Severity,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File that holds the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS settings; for `mqtts://`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// First reconnect delay; it doubles, with jitter, up to `reconnect_max`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min: Dur,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: Dur,
}

impl Default for AlertMqttConfig {
    fn default() -> Self {
        AlertMqttConfig {
            enabled: false,
            url: None,
            client_id: default_client_id(),
            topic_prefix: default_topic_prefix(),
            retain_active: default_retain_active(),
            min_severity: super::webhook::default_min_severity(),
            username: None,
            password_env: None,
            password_file: None,
            tls: None,
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
        }
    }
}

fn default_client_id() -> String {
    "citygate-alerts".into()
}
fn default_topic_prefix() -> String {
    "citygate/alerts".into()
}
fn default_retain_active() -> bool {
    true
}
fn default_reconnect_min() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_reconnect_max() -> Dur {
    Dur::secs(30)
}

impl AlertMqttConfig {
    fn own_password(&self) -> SecretSource<'_> {
        SecretSource {
            name: "password",
            env: self.password_env.as_deref(),
            file: self.password_file.as_deref(),
        }
    }

    /// The `[[mqtt]]` connection this output takes its defaults from: the first, when no
    /// `url` is set.
    fn inherited<'a>(&self, mqtt: &'a [MqttConfig]) -> Option<&'a MqttConfig> {
        self.url.is_none().then(|| mqtt.first()).flatten()
    }

    /// Whether there is a broker to publish to: its own `url` or a `[[mqtt]]` connection. The
    /// default config turns the output on for "the first `[[mqtt]]` broker"; a config with no
    /// broker at all (Modbus and HTTP only) runs without it, with a warning at startup, rather
    /// than failing on a default it never asked for.
    pub fn has_broker(&self, mqtt: &[MqttConfig]) -> bool {
        self.url.is_some() || !mqtt.is_empty()
    }

    /// Every problem serde cannot see, at key paths under `alerts.mqtt`; `mqtt` is the
    /// `[[mqtt]]` connections (the defaults). A disabled output is not checked.
    pub fn validate(&self, mqtt: &[MqttConfig]) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        let mut push = |key: &str, message: String| {
            problems.push(ConfigProblem {
                path: format!("alerts.mqtt.{key}"),
                message,
            })
        };
        let inherited = self.inherited(mqtt);
        let url = match (&self.url, inherited) {
            (Some(u), _) => Some(u.as_str()),
            (None, Some(m)) => Some(m.url.as_str()),
            // Nothing to publish to: the output stays off (see `has_broker`).
            (None, None) => None,
        };
        if let Some(own) = &self.url {
            match crate::sources::mqtt::parse_url(own) {
                Err(why) => push("url", format!("invalid url {own:?}: {why}")),
                Ok((false, _, _)) if self.tls.is_some() => push(
                    "tls",
                    "is set but the url is mqtt:// (use mqtts:// for TLS)".into(),
                ),
                Ok(_) => {}
            }
        }
        if self.client_id.is_empty() {
            push("client_id", "must not be empty".into());
        } else if let Some((i, _)) = mqtt
            .iter()
            .enumerate()
            .find(|(_, m)| Some(m.url.as_str()) == url && m.client_id == self.client_id)
        {
            push(
                "client_id",
                format!(
                    "{:?} is also the client id of mqtt[{i}] on the same broker, which would disconnect one of them",
                    self.client_id
                ),
            );
        }
        if let Err(why) = check_prefix(&self.topic_prefix) {
            push("topic_prefix", why);
        }
        let password = self.own_password();
        for (key, message) in password.problems() {
            push(&key, message);
        }
        let username = self
            .username
            .as_ref()
            .or(inherited.and_then(|m| m.username.as_ref()));
        if password.is_set() && username.is_none() {
            push("username", "is required when a password is set".into());
        }
        if let Some(t) = &self.tls {
            match (&t.cert_file, &t.key_file) {
                (Some(_), None) => push("tls.key_file", "is required with cert_file".into()),
                (None, Some(_)) => push("tls.cert_file", "is required with key_file".into()),
                _ => {}
            }
            let files = [&t.ca_file, &t.cert_file, &t.key_file];
            for (key, file) in ["tls.ca_file", "tls.cert_file", "tls.key_file"]
                .into_iter()
                .zip(files)
            {
                if let Some(Err(e)) = file.as_ref().map(std::fs::File::open) {
                    let path = file.as_ref().map(|p| p.display().to_string());
                    push(
                        key,
                        format!("cannot read {}: {e}", path.unwrap_or_default()),
                    );
                }
            }
        }
        if self.reconnect_min.0.is_zero() {
            push("reconnect_min", "must be longer than 0s".into());
        } else if self.reconnect_min.0 > self.reconnect_max.0 {
            push(
                "reconnect_max",
                format!(
                    "must not be shorter than reconnect_min ({})",
                    self.reconnect_min
                ),
            );
        }
        problems
    }
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".into());
    }
    if prefix.contains(['+', '#', '\0']) {
        return Err(format!(
            "{prefix:?} holds a wildcard (+ or #); a topic to publish to cannot"
        ));
    }
    if prefix.starts_with('/') || prefix.ends_with('/') {
        return Err(format!(
            "{prefix:?} must not start or end with '/' (levels are added after it)"
        ));
    }
    Ok(())
}

/// One topic level from a sensor id, kind or alert id: MQTT's wildcards and separator (and
/// NUL, which no topic may hold) become `_`, and an empty level becomes `_`, so that an id
/// can never publish outside its own level.
///
/// A level longer than [`LEVEL_MAX`] bytes is cut and given a hash of the whole id, so that
/// a hostile or broken device's huge sensor id cannot make a topic longer than MQTT's 65,535
/// bytes (rumqttc would write a wrapped length, the broker would drop the connection, and the
/// same page would be sent again after every reconnect), while distinct ids stay distinct.
pub fn topic_level(s: &str) -> Cow<'_, str> {
    if s.is_empty() {
        return Cow::Borrowed("_");
    }
    let level: Cow<'_, str> = if s.contains(['+', '#', '/', '\0']) {
        Cow::Owned(s.replace(['+', '#', '/', '\0'], "_"))
    } else {
        Cow::Borrowed(s)
    };
    if level.len() <= LEVEL_MAX {
        return level;
    }
    let cut = crate::text::prefix_at_char(&level, LEVEL_MAX - 17).len();
    // FNV-1a: stable across builds and runs (a retained topic must be found again).
    let hash = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Cow::Owned(format!("{}~{hash:016x}", &level[..cut]))
}

/// Longest topic level the output writes, in bytes.
pub const LEVEL_MAX: usize = 256;

/// Why the MQTT output could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MqttOutputError {
    #[error("no url, and no [[mqtt]] connection to take one from")]
    NoUrl,
    #[error("invalid url {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("password: {0}")]
    Password(#[source] crate::secret::SecretError),
    #[error("TLS: {0}")]
    Tls(#[source] TlsError),
}

/// The connection settings after the `[[mqtt]]` defaults are applied, secrets read.
struct Resolved {
    url: String,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<Secret>,
    tls: Option<rustls::ClientConfig>,
}

fn resolve(cfg: &AlertMqttConfig, mqtt: &[MqttConfig]) -> Result<Resolved, MqttOutputError> {
    let inherited = cfg.inherited(mqtt);
    let url = match (&cfg.url, inherited) {
        (Some(u), _) => u.clone(),
        (None, Some(m)) => m.url.clone(),
        (None, None) => return Err(MqttOutputError::NoUrl),
    };
    let (tls_wanted, host, port) =
        crate::sources::mqtt::parse_url(&url).map_err(|why| MqttOutputError::Url {
            url: url.clone(),
            why,
        })?;
    let own = cfg.own_password();
    let password = match (own.is_set(), inherited) {
        (false, Some(m)) => crate::sources::mqtt::password_source(m).read(),
        _ => own.read(),
    }
    .map_err(MqttOutputError::Password)?;
    let tls = match tls_wanted {
        false => None,
        true => {
            let t = cfg
                .tls
                .clone()
                .or_else(|| inherited.and_then(|m| m.tls.clone()))
                .unwrap_or_default();
            Some(tls::client_config(&t, "alerts.mqtt").map_err(MqttOutputError::Tls)?)
        }
    };
    Ok(Resolved {
        username: cfg
            .username
            .clone()
            .or_else(|| inherited.and_then(|m| m.username.clone())),
        url,
        host,
        port,
        password,
        tls,
    })
}

/// What goes out for a page of events.
#[derive(Clone, Debug, PartialEq)]
struct Pub {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// The topic settings, shared by the page builder and the connection task.
#[derive(Clone, Debug)]
struct Topics {
    prefix: String,
    retain_active: bool,
    min: Severity,
}

impl Topics {
    fn active(&self, id: &str) -> String {
        format!("{}/active/{}", self.prefix, topic_level(id))
    }

    /// Every active-state topic: subscribed on connect to find stale retained ones.
    fn active_filter(&self) -> String {
        format!("{}/active/+", self.prefix)
    }

    /// The active-state message of an alert: its JSON, or an empty payload that clears it.
    fn active_state(&self, alert: &crate::model::Alert, tags: Option<&crate::model::Tags>) -> Pub {
        let payload = match alert.state {
            AlertState::Active => {
                serde_json::to_vec(&AlertView::new(alert, tags)).unwrap_or_default()
            }
            AlertState::Resolved => Vec::new(),
        };
        Pub {
            topic: self.active(&alert.id),
            payload,
            retain: true,
        }
    }

    /// The messages of a page, in order, and how many of its events are published.
    fn messages(
        &self,
        events: &[SequencedEvent],
        board: &crate::board::SensorBoard,
    ) -> (Vec<Pub>, u64) {
        let mut out = Vec::new();
        let mut sent = 0;
        for e in events {
            let a = &e.event.alert;
            let above = wanted(e, self.min);
            if above {
                sent += 1;
                out.push(Pub {
                    topic: format!(
                        "{}/{}/{}/{}",
                        self.prefix,
                        a.severity.as_str(),
                        topic_level(&a.kind),
                        topic_level(&a.sensor)
                    ),
                    payload: message_json(e, board).into_bytes(),
                    retain: false,
                });
            }
            if !self.retain_active {
                continue;
            }
            // Below min_severity an active alert has no retained state: one that was lowered
            // below it is cleared, one that never rose above it is left alone.
            let clears = a.state == AlertState::Resolved
                || (!above && e.event.event == AlertEventKind::Deescalated);
            if above || clears {
                let tags = board.tags(&a.sensor);
                let mut p = self.active_state(a, tags.as_ref());
                if clears {
                    p.payload.clear();
                }
                out.push(p);
            }
        }
        (out, sent)
    }
}

/// A page handed to the connection task; `done` fires once every message is acknowledged.
struct Job {
    msgs: Vec<Pub>,
    done: oneshot::Sender<()>,
}

/// Most publishes queued in rumqttc's request channel at once.
const REQUEST_CAPACITY: usize = 256;
/// rumqttc's limit on packets in and out (its default, 10 KiB, is below a long alert).
const MAX_PACKET: usize = 1024 * 1024;

struct MqttDeliver {
    jobs: mpsc::Sender<Job>,
    topics: Topics,
    common: Arc<Common>,
}

impl Deliver for MqttDeliver {
    /// mosquitto (and rumqttd) do not set TCP_NODELAY: a PUBACK written while an earlier one
    /// is unacknowledged waits for our delayed ACK, up to 40 ms. With one page at a time,
    /// every alert behind such a page waited that long (BENCHMARKS.md, "Alert latency"); with
    /// pages in flight the next page goes out at once and carries the ACK.
    const IN_FLIGHT: usize = JOBS_IN_FLIGHT;

    fn deliver(
        &mut self,
        events: Arc<[SequencedEvent]>,
    ) -> impl Future<Output = Delivered> + Send + 'static {
        let (msgs, sent) = self.topics.messages(&events, &self.common.board);
        let len = events.len();
        let started = Instant::now();
        // Handed over now, in page order; the channel holds every page that can be in flight,
        // so only a stopped connection task refuses it.
        let acked = if msgs.is_empty() {
            None
        } else {
            let (done, acked) = oneshot::channel();
            match self.jobs.try_send(Job { msgs, done }) {
                Ok(()) => Some(Ok(acked)),
                Err(_) => Some(Err(())),
            }
        };
        async move {
            let stopped = || Delivered {
                failure: Some(Failure {
                    state: State::Down,
                    result: "stopped",
                    message: "the MQTT connection task has ended".into(),
                    retry_after: None,
                }),
                ..Delivered::default()
            };
            match acked {
                None => {}
                Some(Err(())) => return stopped(),
                Some(Ok(acked)) => {
                    if acked.await.is_err() {
                        return stopped();
                    }
                    record_delivery_seconds(MQTT_OUTPUT, started.elapsed().as_secs_f64());
                }
            }
            count_delivery(MQTT_OUTPUT, "delivered", sent);
            Delivered {
                done: len,
                sent,
                ..Delivered::default()
            }
        }
    }
}

/// Pages handed to the connection task and not yet acknowledged, at most.
const JOBS_IN_FLIGHT: usize = 4;

/// Per-connection bookkeeping of the connection task.
#[derive(Default)]
struct Session {
    connected: bool,
    /// The check of the retained active set on this connection (see [`Sweep`]).
    sweep: Sweep,
    /// Messages queued on this connection, and PUBACKs received on it.
    queued: u64,
    acked: u64,
    /// Not yet handed to rumqttc (its request channel was full).
    outq: VecDeque<Pub>,
}

impl Session {
    fn queue(&mut self, msgs: impl IntoIterator<Item = Pub>) {
        for m in msgs {
            self.outq.push_back(m);
            self.queued += 1;
        }
    }

    /// Hands queued messages to rumqttc until its channel is full; never waits.
    fn flush(&mut self, client: &AsyncClient, topics: &Topics) {
        // Before any publish: a full request channel must not keep the output subscribed.
        if self.sweep == Sweep::Unsubscribe
            && client.try_unsubscribe(topics.active_filter()).is_ok()
        {
            self.sweep = Sweep::Off;
        }
        while let Some(m) = self.outq.front() {
            let sent = client.try_publish(
                m.topic.clone(),
                QoS::AtLeastOnce,
                m.retain,
                m.payload.clone(),
            );
            if sent.is_err() {
                break;
            }
            self.outq.pop_front();
        }
    }
}

struct Connection {
    eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    common: Arc<Common>,
    status: Arc<OutputStatus>,
    backoff: Backoff,
    /// The topic levels of the alerts active at the last connect: a retained message the
    /// broker sends on subscribing was there before it, so this snapshot decides what is stale.
    active_levels: BTreeSet<String>,
    /// Whether to look for stale retained alerts on connect: not on the embedded broker,
    /// whose retained messages end with the process that would have left them.
    check_stale: bool,
}

/// The check of the retained active set on one connection. The output subscribes to it
/// after connecting, clears what is stale, and then unsubscribes: staying subscribed would
/// have the broker send back every active-state message the output publishes. (A rumqttd
/// broker keeps filling the log it made for the filter even then, which is why there is
/// no check at all on the embedded one.)
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Sweep {
    /// No check on this connection, or it is over.
    #[default]
    Off,
    /// Subscribed: waiting for the SUBACK, and for the PUBACK of every message queued at
    /// connect (`after` of them): the broker handles packets in order, so by then it has
    /// handled the SUBSCRIBE and sent what it sends for it.
    Waiting { suback: bool, after: u64 },
    /// Retained messages may still come: the check ends this long after the last one.
    Quiet(tokio::time::Instant),
    /// Over: the UNSUBSCRIBE goes out with the next flush that finds room for it.
    Unsubscribe,
}

/// How long the check of the retained active set waits, once the broker has handled the
/// SUBSCRIBE, for more retained messages before it ends. Brokers send a subscription's
/// retained messages at once (mosquitto while handling the SUBSCRIBE, rumqttd on its next
/// read), so a second of quiet is plenty.
const SWEEP_QUIET: Duration = Duration::from_secs(1);

impl Session {
    /// Moves the check on after a SUBACK or a PUBACK.
    fn sweep_progress(&mut self) {
        if let Sweep::Waiting {
            suback: true,
            after,
        } = self.sweep
        {
            if self.acked >= after {
                self.sweep = Sweep::Quiet(tokio::time::Instant::now() + SWEEP_QUIET);
            }
        }
    }
}

/// How long stopping waits for the DISCONNECT to go out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl Connection {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut stop: watch::Receiver<bool>) {
        let mut s = Session::default();
        // The pages being delivered, oldest first, each with the count of messages on this
        // connection that includes its last one (`None`: not queued on this connection yet).
        let mut jobs_out: VecDeque<(Job, Option<u64>)> = VecDeque::new();
        loop {
            let sweep = s.sweep;
            let sweep_end = async move {
                match sweep {
                    Sweep::Quiet(t) => tokio::time::sleep_until(t).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = sweep_end => s.sweep = Sweep::Unsubscribe,
                polled = self.eventloop.poll() => match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        self.on_connect(&mut s);
                        for (j, mark) in &mut jobs_out {
                            s.queue(j.msgs.iter().cloned());
                            *mark = Some(s.queued);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        s.acked += 1;
                        s.sweep_progress();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Sweep::Waiting { suback, .. } = &mut s.sweep {
                            *suback = true;
                        }
                        s.sweep_progress();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.retain {
                            if let Sweep::Quiet(_) = s.sweep {
                                s.sweep = Sweep::Quiet(tokio::time::Instant::now() + SWEEP_QUIET);
                            }
                            if !p.payload.is_empty() {
                                self.clear_if_stale(&mut s, &p.topic);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let why = crate::sources::mqtt::describe_v4_error(&e);
                        if s.connected {
                            warn!(output = MQTT_OUTPUT, error = %why, "alert MQTT connection lost; reconnecting (undelivered alerts are sent again)");
                        }
                        self.status.set_connected(false, Some(why));
                        s = Session::default();
                        for (_, mark) in &mut jobs_out {
                            *mark = None;
                        }
                        let delay = self.backoff.next_delay();
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => break,
                        }
                    }
                },
                next = jobs.recv(), if jobs_out.len() < JOBS_IN_FLIGHT => match next {
                    None => break,
                    Some(j) => {
                        let mark = s.connected.then(|| {
                            s.queue(j.msgs.iter().cloned());
                            s.queued
                        });
                        jobs_out.push_back((j, mark));
                    }
                },
            }
            if s.connected {
                s.flush(&self.client, &self.topics);
            }
            // PUBACKs come in order (MQTT 3.1.1 4.6), so a page is done once the count
            // reaches its last message.
            while let Some((_, Some(mark))) = jobs_out.front() {
                if s.acked < *mark {
                    break;
                }
                if let Some((j, _)) = jobs_out.pop_front() {
                    let _ = j.done.send(());
                }
            }
        }
        // Best effort, so that the broker learns we left on purpose. What is not confirmed
        // is published again next run.
        if s.connected && self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
                loop {
                    match self.eventloop.poll().await {
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
        }
    }

    fn on_connect(&mut self, s: &mut Session) {
        self.backoff.reset();
        *s = Session {
            connected: true,
            ..Session::default()
        };
        self.status.set_connected(true, None);
        info!(output = MQTT_OUTPUT, "alert MQTT connection up");
        if !self.topics.retain_active {
            return;
        }
        // The broker may have lost its retained messages (a restart without persistence):
        // the active set goes out again, and old ones are checked as they come back.
        let active: Vec<_> = self
            .common
            .hub
            .active()
            .into_iter()
            .filter(|a| a.severity >= self.topics.min)
            .collect();
        self.active_levels = active
            .iter()
            .map(|a| topic_level(&a.id).into_owned())
            .collect();
        s.queue(active.iter().map(|a| {
            let tags = self.common.board.tags(&a.sensor);
            self.topics.active_state(a, tags.as_ref())
        }));
        if !self.check_stale {
            return;
        }
        let filter = self.topics.active_filter();
        match self.client.try_subscribe(filter, QoS::AtMostOnce) {
            // The publishes queued above are flushed after this SUBSCRIBE.
            Ok(()) => {
                s.sweep = Sweep::Waiting {
                    suback: false,
                    after: s.queued,
                }
            }
            Err(e) => {
                warn!(output = MQTT_OUTPUT, error = %e, "cannot subscribe to the retained active alerts; stale ones are not cleared")
            }
        }
    }

    /// A retained active-state message for an alert that is not active (a crash left it, or
    /// its resolve was never published) is cleared.
    fn clear_if_stale(&mut self, s: &mut Session, topic: &str) {
        let Some(level) = topic
            .strip_prefix(self.topics.prefix.as_str())
            .and_then(|t| t.strip_prefix("/active/"))
        else {
            return;
        };
        // The snapshot of the last connect decides, and the hub's set now as well: a broker
        // that looks up retained messages after the SUBSCRIBE (rumqttd) can send back one
        // this connection published for an alert raised since.
        let active_now = || self.common.hub.any_active(|a| topic_level(&a.id) == level);
        if !self.active_levels.contains(level) && !active_now() {
            info!(
                output = MQTT_OUTPUT,
                topic, "clearing a retained alert that is not active"
            );
            s.queue([Pub {
                topic: topic.to_string(),
                payload: Vec::new(),
                retain: true,
            }]);
        }
    }
}

/// Whether `host:port` is the in-process broker listening on `embedded` (the rule the
/// `[[mqtt]]` connections are pointed at it by, `crate::broker::names_addr`).
fn is_embedded_broker(host: &str, port: u16, embedded: Option<std::net::SocketAddr>) -> bool {
    let Some(addr) = embedded else {
        return false;
    };
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    crate::broker::names_addr(&authority, addr)
}

/// Resolves the settings (a missing password or TLS file fails here) and starts the
/// connection task and the drain from `cursor`.
pub(crate) fn start(
    cfg: &AlertMqttConfig,
    mqtt: &[MqttConfig],
    common: Arc<Common>,
    conn: rusqlite::Connection,
    cursor: i64,
) -> Result<AlertOutput, MqttOutputError> {
    let r = resolve(cfg, mqtt)?;
    let mut o = MqttOptions::new(cfg.client_id.clone(), r.host.clone(), r.port);
    o.set_keep_alive(Duration::from_secs(30))
        // A fresh session each time: the unconfirmed page is published again by us, so
        // rumqttc must not replay its own copies as well.
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(user) = &r.username {
        let password = r.password.as_ref().map(Secret::expose).unwrap_or_default();
        o.set_credentials(user.clone(), password.to_string());
    }
    if let Some(t) = r.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(t),
        )));
    }
    let (client, eventloop) = AsyncClient::new(o, REQUEST_CAPACITY);
    let status = Arc::new(OutputStatus::new(
        MQTT_OUTPUT,
        "mqtt",
        r.url.clone(),
        common.hub.clone(),
        cursor,
        Some(false),
    ));
    let topics = Topics {
        prefix: cfg.topic_prefix.clone(),
        retain_active: cfg.retain_active,
        min: cfg.min_severity,
    };
    info!(output = MQTT_OUTPUT, url = %r.url, client_id = %cfg.client_id,
        prefix = %cfg.topic_prefix, "publishing alerts over MQTT");
    let (stop, stopped) = watch::channel(false);
    let (jobs_tx, jobs_rx) = mpsc::channel(JOBS_IN_FLIGHT);
    let connection = Connection {
        eventloop,
        client,
        topics: topics.clone(),
        common: common.clone(),
        status: status.clone(),
        backoff: Backoff::new(cfg.reconnect_min.0, cfg.reconnect_max.0),
        active_levels: BTreeSet::new(),
        check_stale: !is_embedded_broker(&r.host, r.port, common.embedded_broker),
    };
    let conn_task = tokio::spawn(connection.run(jobs_rx, stopped.clone()));
    let drain = Drain {
        deliver: MqttDeliver {
            jobs: jobs_tx,
            topics,
            common: common.clone(),
        },
        status: status.clone(),
        conn: Arc::new(std::sync::Mutex::new(conn)),
        common,
        retry: RetryPolicy {
            min: cfg.reconnect_min.0,
            max: cfg.reconnect_max.0,
            misconfigured: cfg.reconnect_max.0,
        },
        stop: stopped,
    };
    let drain_task = tokio::spawn(drain.run());
    Ok(AlertOutput::new(status, stop, vec![drain_task, conn_task]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::SensorBoard;
    use crate::model::{Alert, AlertEvent};

    #[test]
    fn a_huge_id_makes_a_bounded_distinct_stable_level() {
        let a = format!("{}a", "x".repeat(70_000));
        let b = format!("{}b", "x".repeat(70_000));
        let (la, lb) = (topic_level(&a), topic_level(&b));
        assert!(la.len() <= LEVEL_MAX && lb.len() <= LEVEL_MAX);
        assert_ne!(la, lb, "distinct ids stay distinct");
        assert_eq!(la, topic_level(&a), "the same id gives the same level");
        let wide = "水".repeat(200); // 600 bytes: the cut falls inside a character
        assert!(topic_level(&wide).len() <= LEVEL_MAX);
        assert_eq!(topic_level("wl-1"), "wl-1");
    }

    #[test]
    fn the_embedded_broker_is_known_by_its_port_on_a_loopback_or_matching_host() {
        let addr = |a: &str| -> Option<std::net::SocketAddr> { Some(a.parse().expect("addr")) };
        assert!(is_embedded_broker(
            "127.0.0.1",
            1883,
            addr("127.0.0.1:1883")
        ));
        assert!(is_embedded_broker(
            "localhost",
            1883,
            addr("127.0.0.1:1883")
        ));
        assert!(is_embedded_broker("127.0.0.1", 1883, addr("0.0.0.0:1883")));
        assert!(is_embedded_broker("::1", 1883, addr("[::]:1883")));
        assert!(is_embedded_broker("::1", 1883, addr("[::1]:1883")));
        // 0.0.0.0 is IPv4 only: [::1]:1883 is another socket
        assert!(!is_embedded_broker("::1", 1883, addr("0.0.0.0:1883")));
        // a broker on a LAN address is not what localhost names
        assert!(!is_embedded_broker(
            "localhost",
            1883,
            addr("10.0.0.5:1883")
        ));
        assert!(!is_embedded_broker(
            "127.0.0.1",
            1884,
            addr("127.0.0.1:1883")
        ));
        assert!(!is_embedded_broker("127.0.0.1", 1883, None));
        assert!(!is_embedded_broker(
            "broker.example",
            1883,
            addr("0.0.0.0:1883")
        ));
        assert!(!is_embedded_broker(
            "10.0.0.5",
            1883,
            addr("127.0.0.1:1883")
        ));
    }

    #[test]
    fn topic_levels_cannot_escape_their_level() {
        assert_eq!(topic_level("wl-qc-001"), "wl-qc-001");
        assert_eq!(topic_level("a/b+c#d"), "a_b_c_d");
        assert_eq!(topic_level("nul\0x"), "nul_x");
        assert_eq!(topic_level(""), "_");
        assert_eq!(topic_level("水位:level_warning:1"), "水位:level_warning:1");
    }

    #[test]
    fn a_prefix_must_be_publishable() {
        assert!(check_prefix("citygate/alerts").is_ok());
        for bad in ["", "a/+/b", "a/#", "/a", "a/"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    fn alert(sev: Severity, state: AlertState) -> Alert {
        Alert {
            id: "wl/1:level:1".into(),
            rule: "level".into(),
            sensor: "wl/1".into(),
            kind: "water_level".into(),
            metric: "level".into(),
            severity: sev,
            state,
            value: 15.2,
            threshold: 15.0,
            peak: 15.2,
            count: 1,
            started_at: 1,
            updated_at: 2,
            resolved_at: None,
            ack: None,
            message: "m".into(),
        }
    }

    fn ev(seq: i64, kind: AlertEventKind, a: Alert) -> SequencedEvent {
        SequencedEvent {
            seq,
            event: AlertEvent {
                event: kind,
                at: a.updated_at,
                alert: a,
            },
        }
    }

    #[test]
    fn a_page_publishes_events_and_keeps_the_active_set_retained() {
        let topics = Topics {
            prefix: "p".into(),
            retain_active: true,
            min: Severity::Warning,
        };
        let board = SensorBoard::new();
        let events = [
            ev(
                1,
                AlertEventKind::Raised,
                alert(Severity::Info, AlertState::Active),
            ),
            ev(
                2,
                AlertEventKind::Escalated,
                alert(Severity::Major, AlertState::Active),
            ),
            ev(
                3,
                AlertEventKind::Deescalated,
                alert(Severity::Info, AlertState::Active),
            ),
            ev(
                4,
                AlertEventKind::Resolved,
                alert(Severity::Info, AlertState::Resolved),
            ),
        ];
        let (msgs, sent) = topics.messages(&events, &board);
        assert_eq!(sent, 1, "only the major event is at or above warning");
        let summary: Vec<(&str, bool, bool)> = msgs
            .iter()
            .map(|m| (m.topic.as_str(), m.retain, m.payload.is_empty()))
            .collect();
        assert_eq!(
            summary,
            [
                ("p/major/water_level/wl_1", false, false),
                ("p/active/wl_1:level:1", true, false),
                // lowered below min_severity: cleared
                ("p/active/wl_1:level:1", true, true),
                // resolved: cleared
                ("p/active/wl_1:level:1", true, true),
            ]
        );
        let event: serde_json::Value = serde_json::from_slice(&msgs[0].payload).expect("json");
        assert_eq!(
            (event["seq"].as_i64(), event["event"].as_str()),
            (Some(2), Some("escalated"))
        );
        assert_eq!(event["alert"]["sensor"], "wl/1");
        let active: serde_json::Value = serde_json::from_slice(&msgs[1].payload).expect("json");
        assert_eq!(active["id"], "wl/1:level:1");
        assert_eq!(active["severity"], "major");
        assert_eq!(active["tags"], serde_json::json!({}));
    }

    #[test]
    fn config_problems_are_listed_and_without_a_broker_the_output_is_off() {
        let cfg = AlertMqttConfig {
            enabled: true,
            topic_prefix: "a/#".into(),
            password_env: Some("PW".into()),
            ..AlertMqttConfig::default()
        };
        let problems: Vec<String> = cfg.validate(&[]).iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "alerts.mqtt.topic_prefix: \"a/#\" holds a wildcard (+ or #); a topic to publish to cannot",
                "alerts.mqtt.username: is required when a password is set",
            ]
        );
        assert!(
            !cfg.has_broker(&[]),
            "no url and no [[mqtt]]: nothing to publish to"
        );
        assert!(
            AlertMqttConfig::default().validate(&[]).is_empty(),
            "disabled: not checked"
        );
    }
}
