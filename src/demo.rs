//! `citygate run` and `citygate demo`.
//!
//! The demo is the default run plus a simulated fleet of every sensor kind (from the
//! `citygate-sim` library) with scripted incidents, so that alerts of every severity show up
//! on the console within the first minute. Its sensors are written into a config overlay, so
//! they go through the same validation as a user's config.
//!
//! The fleet publishes over real MQTT (QoS 1) to the embedded broker, on the topics of the
//! default routes, `city/<district>/<kind>/<sensor>`, and the gateway consumes them through
//! its ordinary `[[mqtt]]` connection: the demo exercises the same path as a field device.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::collections::HashMap;

use anyhow::Context;
use citygate_sim::{Fleet, FleetConfig, SimSensor};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tracing::{info, warn};

use crate::app::{now_ms, Gateway};
use crate::config::{self, Config, Source};

/// Options of `citygate demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Simulated sensors per kind.
    #[arg(long, default_value_t = 3)]
    pub per_kind: usize,
    /// How often each simulated sensor reports, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub interval_ms: i64,
    /// Seed of the simulation (the same seed gives the same signals).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Leave out the scripted incidents.
    #[arg(long)]
    pub no_incidents: bool,
    /// Stop after this many seconds instead of at Ctrl-C.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Where the demo keeps its SQLite store.
    #[arg(long, default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// Keep the store of an earlier demo run instead of starting afresh.
    #[arg(long)]
    pub keep_data: bool,
    /// HTTP address to listen on (overrides http.listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address of the embedded MQTT broker (overrides broker.listen; port 0 picks a free
    /// port). The `[[mqtt]]` connection that pointed at broker.listen follows it.
    #[arg(long)]
    pub broker_listen: Option<SocketAddr>,
}

/// `citygate run`: serve until SIGINT or SIGTERM, then drain and stop.
pub async fn run_gateway(config: Config) -> anyhow::Result<()> {
    let bound = config.gateway.shutdown_timeout.0;
    let gateway = Gateway::start(config, None).await?;
    info!(addr = %gateway.addr(), store = %gateway.db_path().display(), "citygate is running");
    shutdown_signal().await;
    info!(within = ?bound, "shutting down: committing what was taken");
    gateway.shutdown_within(bound).await?;
    info!("stopped cleanly");
    Ok(())
}

/// `citygate demo`.
pub async fn run(args: DemoArgs, user_files: Vec<PathBuf>) -> anyhow::Result<()> {
    let fleet = Fleet::new(FleetConfig {
        per_kind: args.per_kind.max(1),
        interval_ms: args.interval_ms.max(100),
        seed: args.seed,
        incidents: !args.no_incidents,
        start_ms: now_ms(),
    });
    let mut sources = vec![Source::Text {
        name: "the demo fleet".into(),
        toml: overlay(&fleet, &args),
    }];
    sources.extend(user_files.into_iter().map(Source::File));
    let mut config = config::load(&sources).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(listen) = args.listen {
        config.http.listen = listen;
    }
    if let Some(listen) = args.broker_listen {
        crate::broker::retarget(&mut config.mqtt, config.broker.listen, listen);
        config.broker.listen = listen;
    }
    if !args.keep_data {
        fresh_store(&config.sqlite_path())?;
    }
    let external = external_broker(&config);
    let bound = config.gateway.shutdown_timeout.0;
    let gateway = Gateway::start(config, None).await?;
    let broker = match (gateway.broker(), external) {
        (Some(b), _) => BrokerTarget {
            addr: b.addr(),
            embedded: true,
        },
        (None, Some(addr)) => BrokerTarget {
            addr,
            embedded: false,
        },
        (None, None) => anyhow::bail!(
            "the demo publishes over MQTT and needs a broker: set broker.enabled = true, or \
             point an [[mqtt]] connection at an external broker (mqtt://host:port)"
        ),
    };
    banner(&gateway, &fleet, &broker);

    let feeder = tokio::spawn(publish_fleet(fleet, broker.addr));
    match args.duration_s {
        Some(s) => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                _ = shutdown_signal() => {}
            }
        }
        None => shutdown_signal().await,
    }
    feeder.abort();
    let _ = feeder.await;
    info!("demo stopping: committing what was taken");
    gateway.shutdown_within(bound).await
}

/// Removes an earlier demo store so that the incidents raise their alerts afresh.
fn fresh_store(db: &std::path::Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if p.exists() {
            std::fs::remove_file(&p)
                .with_context(|| format!("cannot remove the old demo store {}", p.display()))?;
        }
    }
    Ok(())
}

/// Where the demo fleet publishes.
struct BrokerTarget {
    addr: SocketAddr,
    embedded: bool,
}

/// The first `[[mqtt]]` connection to a plain `mqtt://host:port`, for a demo whose embedded
/// broker is turned off.
fn external_broker(config: &Config) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    config.mqtt.iter().find_map(|c| {
        let rest = c.url.strip_prefix("mqtt://")?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        rest[..end].to_socket_addrs().ok()?.next()
    })
}

fn banner(gateway: &Gateway, fleet: &Fleet, broker: &BrokerTarget) {
    let addr = gateway.addr();
    let kinds: std::collections::BTreeSet<&str> = fleet.sensors().iter().map(|s| s.kind).collect();
    println!(
        "citygate demo: {} simulated sensors of {} kinds, with scripted incidents, publishing \
         over MQTT",
        fleet.sensors().len(),
        kinds.len()
    );
    println!("  SQLite store : {}", gateway.db_path().display());
    let (host, port) = (broker.addr.ip(), broker.addr.port());
    println!(
        "  MQTT broker  : mqtt://{} ({}, MQTT 3.1.1); topics city/<district>/<kind>/<sensor>",
        broker.addr,
        if broker.embedded {
            "embedded"
        } else {
            "external"
        }
    );
    println!("    mosquitto_sub -h {host} -p {port} -t 'city/#' -v");
    println!("    mosquitto_sub -h {host} -p {port} -t 'citygate/alerts/#' -v   # the alerts");
    println!(
        "    mosquitto_pub -h {host} -p {port} -q 1 -t 'city/清城区/noise/ns-test-01' \
         -m '{{\"laeq\": 58.2}}'"
    );
    println!(
        "  Web console  : http://{addr}/   (live alerts, sensors, charts; English / 简体中文)"
    );
    println!("  HTTP API     : http://{addr}/api/v1/openapi.json");
    println!("    curl -s http://{addr}/api/v1/alerts");
    println!("    curl -s 'http://{addr}/api/v1/readings?sensor=rf-qc-01&limit=5'");
    println!("    curl -s http://{addr}/api/v1/dead-letters");
    println!("    curl -sN http://{addr}/api/v1/alerts/stream        # alerts as SSE");
    println!("  Alerts appear below as they are raised, escalated and resolved. Ctrl-C stops.");
    println!();
}

/// Publishes the fleet's reports to the broker with QoS 1, one MQTT message per report, on
/// `city/<district>/<kind>/<sensor>`. The district level is the sensor's Chinese district
/// name, the same value as the `district` tag in its payload, so the tag the route takes
/// from the topic agrees with the payload's.
async fn publish_fleet(mut fleet: Fleet, broker: SocketAddr) {
    let topics: HashMap<String, String> = fleet
        .sensors()
        .iter()
        .map(|s| (s.id.clone(), topic_of(s)))
        .collect();
    let mut opts = MqttOptions::new(
        "citygate-demo-fleet",
        broker.ip().to_string(),
        broker.port(),
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    // The event loop runs in its own task and is never awaited from the publishing side
    // (rumqtt#1025); rumqttc reconnects on the next poll after an error.
    let _events = AbortOnDrop(tokio::spawn(async move {
        let mut connected = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => connected = true,
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        warn!(error = %e, "the demo fleet lost its MQTT connection; retrying");
                    }
                    connected = false;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for m in fleet.tick(now_ms()) {
            let topic = match topics.get(&m.sensor) {
                Some(t) => t.clone(),
                None => format!("city/unknown/{}/{}", m.kind, m.sensor),
            };
            if client
                .publish(topic, QoS::AtLeastOnce, false, m.payload.into_bytes())
                .await
                .is_err()
            {
                warn!("the demo fleet's MQTT client stopped");
                return;
            }
        }
    }
}

/// Stops the event-loop task when the publisher stops or is aborted.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn topic_of(s: &SimSensor) -> String {
    let district = s
        .tags
        .iter()
        .find(|(k, _)| k == "district")
        .map(|(_, v)| v.as_str())
        .unwrap_or("unknown");
    // A topic level must not contain the separator or a wildcard.
    let level = |v: &str| v.replace(['/', '+', '#'], "_");
    format!("city/{}/{}/{}", level(district), s.kind, level(&s.id))
}

/// The demo's config overlay: short flat-line and deadman times so that incidents show
/// within a minute, and every simulated sensor with its tags and station settings.
fn overlay(fleet: &Fleet, args: &DemoArgs) -> String {
    let mut t = String::new();
    let dir = args.data_dir.display().to_string();
    let _ = writeln!(
        t,
        "[gateway]\ndata_dir = {}\ndeadman_interval = \"2s\"\n",
        toml_str(&dir)
    );
    let _ = writeln!(t, "[validation]\nflatline_duration = \"30s\"\n");
    for s in fleet.sensors() {
        sensor_toml(&mut t, s);
    }
    t
}

fn sensor_toml(t: &mut String, s: &SimSensor) {
    let _ = writeln!(
        t,
        "[sensors.{}]\nkind = {}",
        toml_str(&s.id),
        toml_str(s.kind)
    );
    let profile = s.water_class.or(s.noise_class);
    if let Some(p) = profile {
        let _ = writeln!(t, "profile = {}", toml_str(p));
    }
    if let Some(ms) = s.incidents.iter().find_map(|i| i.offline_after_ms()) {
        let _ = writeln!(t, "offline_after = \"{}ms\"", ms);
    }
    if !s.tags.is_empty() {
        let tags: Vec<String> = s
            .tags
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
            .collect();
        let _ = writeln!(t, "tags = {{ {} }}", tags.join(", "));
    }
    if let Some(l) = s.levels {
        let _ = writeln!(
            t,
            "rules.level = {{ above = {{ warning = {}, critical = {} }} }}",
            l.warning, l.guaranteed
        );
    }
    for (metric, rate) in s.incidents.iter().flat_map(|i| i.rate_hints()) {
        let _ = writeln!(t, "metrics.{metric} = {{ max_rate_per_hour = {rate} }}");
    }
    t.push('\n');
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_overlay_is_a_valid_config_for_every_kind() {
        let fleet = Fleet::new(FleetConfig {
            per_kind: 2,
            interval_ms: 2000,
            seed: 1,
            incidents: true,
            start_ms: 0,
        });
        let args = DemoArgs {
            per_kind: 2,
            interval_ms: 2000,
            seed: 1,
            no_incidents: false,
            duration_s: None,
            data_dir: "data/demo".into(),
            keep_data: false,
            listen: None,
            broker_listen: None,
        };
        let sources = [Source::Text {
            name: "demo".into(),
            toml: overlay(&fleet, &args),
        }];
        let config = match config::load_with_env(&sources, Some(Default::default())) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(config.sensors.len(), fleet.sensors().len());
        let kinds: std::collections::BTreeSet<&str> =
            config.sensors.values().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds.len(), 13, "every kind from the plans is simulated");
    }
}
