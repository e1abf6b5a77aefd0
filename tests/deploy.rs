//! The production stack (Dockerfile, docker-compose.yml, deploy/) checked without a Docker
//! engine, which this machine does not run:
//! - the compose client accepts docker-compose.yml (with `.env.example` as its env file), and
//!   secrets come only from that file;
//! - every citygate config the compose file mounts passes `citygate check-config` in the
//!   service's environment, and points at the services and credentials the file defines;
//! - mosquitto's config, password file (made by the same entrypoint script) and ACL work in a
//!   real mosquitto;
//! - the built gateway runs on those configs (only the service host names moved to local
//!   ports): it consumes a device's reading through that mosquitto and publishes the alert
//!   event back to it, and its API wants the token from `.env`;
//! - the Grafana dashboard's Flux queries name measurements, fields and tags that a real
//!   gateway writes to a real InfluxDB, and its PromQL names metrics the gateway exports;
//! - the Dockerfile builds both binaries and runs as a non-root user; the systemd unit passes
//!   `systemd-analyze verify`.
//!
//! What only a Docker engine can show (images build, containers start and talk, Grafana
//! renders the panels) is not checked here: docs/deployment.md says how to try it.

mod common;
#[path = "deploy/compose.rs"]
mod compose;
#[path = "deploy/queries.rs"]
mod queries;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use citygate::config::{load_with_env, Config, Source};
use compose::{read, repo, url_host_port, Service, ROOT};
use serde_json::Value;
use yaml_rust2::Yaml;

const SERVICES: [&str; 7] = [
    "mosquitto",
    "influxdb",
    "citygate",
    "simulator",
    "modbus-devices",
    "prometheus",
    "grafana",
];

/// Loads config files the way `citygate check-config -c ...` does, with `env` as the whole
/// environment.
fn load_config(files: &[PathBuf], env: &BTreeMap<String, String>) -> Config {
    let sources: Vec<Source> = files.iter().cloned().map(Source::File).collect();
    let env: HashMap<String, String> = env.clone().into_iter().collect();
    load_with_env(&sources, Some(env)).unwrap_or_else(|e| panic!("{files:?} do not load: {e}"))
}

/// Runs the built `citygate check-config` on `files` with exactly `env` (and PATH).
fn check_config(files: &[PathBuf], env: &BTreeMap<String, String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_citygate"));
    cmd.arg("check-config");
    for f in files {
        cmd.arg("-c").arg(f);
    }
    let out = cmd
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .expect("run citygate check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("configuration OK"),
        "citygate check-config {files:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The container port of each `ports:` entry, in either syntax the clients print.
fn container_ports(service: &Service) -> Vec<u16> {
    let Yaml::Array(items) = &service.yaml["ports"] else {
        return Vec::new();
    };
    items
        .iter()
        .map(|p| {
            let target = match p {
                Yaml::Hash(_) => compose::scalar(&p["target"]),
                other => {
                    let s = compose::scalar(other);
                    let last = s.rsplit(':').next().unwrap_or_default().to_owned();
                    last.split('/').next().unwrap_or_default().to_owned()
                }
            };
            target
                .parse()
                .unwrap_or_else(|e| panic!("{}: port {target:?}: {e}", service.name))
        })
        .collect()
}

#[test]
fn compose_file_parses_and_takes_secrets_only_from_the_env_file() {
    let resolved = compose::resolved();
    let names: BTreeSet<String> = resolved["services"]
        .as_hash()
        .expect("services")
        .keys()
        .map(compose::scalar)
        .collect();
    assert_eq!(
        names,
        SERVICES.iter().map(|s| s.to_string()).collect(),
        "the services of docker-compose.yml"
    );

    // The gateway and the fleet are built from this repository's Dockerfile.
    for name in ["citygate", "simulator", "modbus-devices"] {
        let context = compose::scalar(&resolved["services"][name]["build"]["context"]);
        assert_eq!(Path::new(&context), Path::new(ROOT), "{name} build context");
    }

    // Every bind-mounted file is in the repository.
    for name in SERVICES {
        for m in Service::of(&resolved, name).mounts() {
            if let Some(host) = m.host {
                assert!(
                    host.starts_with(ROOT) && host.exists(),
                    "{name} mounts {} at {}, which is not a file of the repository",
                    host.display(),
                    m.target
                );
            }
        }
    }

    // A secret in the file itself would end up in git: every password, token or secret is a
    // ${VAR} from .env. .env.example leaves each one empty, so that a copy of it used as is
    // stops compose with a message (`${VAR:?...}`) instead of starting with a public password.
    let raw = compose::yaml("docker-compose.yml");
    let example = compose::env_example();
    let mut secrets = 0;
    for (name, service) in raw["services"].as_hash().expect("services") {
        let Yaml::Hash(env) = &service["environment"] else {
            continue;
        };
        for (key, value) in env {
            let key = compose::scalar(key);
            if !["PASSWORD", "TOKEN", "SECRET"]
                .iter()
                .any(|s| key.contains(s))
            {
                continue;
            }
            secrets += 1;
            let value = compose::scalar(value);
            let var = value
                .strip_prefix("${")
                .and_then(|v| v.split([':', '}']).next())
                .unwrap_or_else(|| {
                    panic!(
                        "{}: {key} is not taken from .env: {value:?}",
                        compose::scalar(name)
                    )
                });
            let placeholder = example
                .get(var)
                .unwrap_or_else(|| panic!("{var} ({key}) is missing from .env.example"));
            assert!(
                placeholder.is_empty(),
                ".env.example: {var}={placeholder}: leave it empty, so that compose refuses to \
                 start until the user sets it"
            );
        }
    }
    let refused = compose::config_with(&Path::new(ROOT).join(".env.example"));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("set it in .env"),
        "with .env.example as is, compose must refuse to start and say why: {message}"
    );
    assert!(secrets >= 6, "only {secrets} secrets found in the services");
    assert!(
        read(".gitignore").lines().any(|l| l.trim() == "/.env"),
        ".env is not in .gitignore"
    );
}

#[test]
fn citygate_configs_mounted_by_compose_pass_check_config_and_name_the_services() {
    let resolved = compose::resolved();
    let gw = Service::of(&resolved, "citygate");
    let command = gw.command();
    assert_eq!(
        command.first().map(String::as_str),
        Some("run"),
        "{command:?}"
    );
    let files: Vec<PathBuf> = gw
        .config_args()
        .iter()
        .map(|p| {
            gw.host_path(p)
                .unwrap_or_else(|| panic!("citygate is started with -c {p}, which is not mounted"))
        })
        .collect();
    assert!(!files.is_empty(), "citygate is run with no -c file");
    let env = gw.environment();
    check_config(&files, &env);

    let config = load_config(&files, &env);
    assert!(
        gw.volume_at(&config.gateway.data_dir.display().to_string())
            .is_some(),
        "gateway.data_dir {} is not on a named volume",
        config.gateway.data_dir.display()
    );
    let http_port = config.http.listen.port();
    assert!(
        config.http.listen.ip().is_unspecified(),
        "{}",
        config.http.listen
    );
    assert!(container_ports(&gw).contains(&http_port));
    let api_token = config.http.auth.token_env.as_deref().expect("http.auth");
    assert!(
        env.contains_key(api_token),
        "{api_token} is not set for citygate"
    );

    // MQTT: mosquitto, as the user the mosquitto entrypoint creates, with its password.
    let mosquitto = Service::of(&resolved, "mosquitto");
    let mosquitto_env = mosquitto.environment();
    assert!(
        !config.broker.enabled,
        "the embedded broker runs beside mosquitto"
    );
    assert_eq!(config.mqtt.len(), 1, "one [[mqtt]] connection");
    let mqtt = &config.mqtt[0];
    assert_eq!(url_host_port(&mqtt.url), ("mosquitto".into(), 1883));
    assert_eq!(mqtt.username.as_deref(), Some("citygate"));
    let var = mqtt.password_env.as_deref().expect("mqtt password_env");
    assert_eq!(
        env.get(var),
        mosquitto_env.get("MQTT_CITYGATE_PASSWORD"),
        "citygate's {var} is mosquitto's password for user citygate"
    );

    // InfluxDB: the org, bucket and token its first-run setup creates.
    let influx = Service::of(&resolved, "influxdb").environment();
    assert_eq!(config.sinks.influxdb.len(), 1, "one [[sinks.influxdb]]");
    let sink = &config.sinks.influxdb[0];
    assert_eq!(url_host_port(&sink.url), ("influxdb".into(), 8086));
    assert_eq!(sink.org.as_ref(), influx.get("DOCKER_INFLUXDB_INIT_ORG"));
    assert_eq!(
        sink.bucket.as_ref(),
        influx.get("DOCKER_INFLUXDB_INIT_BUCKET")
    );
    let var = sink.token_env.as_deref().expect("sink token_env");
    assert_eq!(
        env.get(var),
        influx.get("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"),
        "citygate's {var} is InfluxDB's token"
    );

    // Prometheus scrapes the gateway's /metrics.
    let prom = Service::of(&resolved, "prometheus");
    let prom_file = prom
        .command()
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
        .expect("prometheus --config.file");
    let prom_host = prom
        .host_path(&prom_file)
        .expect("prometheus.yml is mounted");
    let prom_yaml = compose::parse_yaml(
        &std::fs::read_to_string(&prom_host).expect("read prometheus.yml"),
        "prometheus.yml",
    );
    let job = &prom_yaml["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        compose::strings(&job["static_configs"][0]["targets"]),
        [format!("citygate:{http_port}")]
    );

    // Grafana's data sources: the same InfluxDB org, bucket and token; the Prometheus service.
    let grafana = Service::of(&resolved, "grafana");
    let sources = grafana_datasources(&grafana);
    let flux = sources
        .iter()
        .find(|d| d["type"].as_str() == Some("influxdb"))
        .expect("an InfluxDB data source");
    assert_eq!(
        url_host_port(flux["url"].as_str().expect("url")),
        ("influxdb".into(), 8086)
    );
    assert_eq!(flux["jsonData"]["version"].as_str(), Some("Flux"));
    assert_eq!(
        flux["jsonData"]["organization"].as_str(),
        sink.org.as_deref()
    );
    assert_eq!(
        flux["jsonData"]["defaultBucket"].as_str(),
        sink.bucket.as_deref()
    );
    let token = flux["secureJsonData"]["token"].as_str().expect("token");
    let var = token.trim_start_matches('$').trim_matches(['{', '}']);
    assert_eq!(
        grafana.environment().get(var),
        influx.get("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"),
        "Grafana's {token} is InfluxDB's token"
    );
    let prometheus = sources
        .iter()
        .find(|d| d["type"].as_str() == Some("prometheus"))
        .expect("a Prometheus data source");
    assert_eq!(
        url_host_port(prometheus["url"].as_str().expect("url")).0,
        "prometheus"
    );
}

/// The data sources Grafana provisions, from the files mounted into its provisioning dir.
fn grafana_datasources(grafana: &Service) -> Vec<Yaml> {
    let dir = grafana
        .host_path("/etc/grafana/provisioning/datasources")
        .expect("Grafana's provisioning is mounted");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read datasources dir") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read datasource file");
        let doc = compose::parse_yaml(&text, &path.display().to_string());
        if let Yaml::Array(list) = &doc["datasources"] {
            out.extend(list.iter().cloned());
        }
    }
    out
}

/// The dashboard files Grafana loads, through its dashboard provider's path.
fn grafana_dashboards(grafana: &Service) -> Vec<PathBuf> {
    let providers_dir = grafana
        .host_path("/etc/grafana/provisioning/dashboards")
        .expect("Grafana's provisioning is mounted");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&providers_dir).expect("read dashboards provisioning") {
        let path = entry.expect("dir entry").path();
        let doc = compose::parse_yaml(
            &std::fs::read_to_string(&path).expect("read provider file"),
            &path.display().to_string(),
        );
        for provider in doc["providers"].as_vec().into_iter().flatten() {
            let dir = compose::scalar(&provider["options"]["path"]);
            let host = grafana
                .host_path(&dir)
                .unwrap_or_else(|| panic!("dashboards path {dir} is not mounted"));
            for file in std::fs::read_dir(&host).expect("read dashboards dir") {
                let file = file.expect("dir entry").path();
                if file.extension().is_some_and(|e| e == "json") {
                    out.push(file);
                }
            }
        }
    }
    out
}

/// A running mosquitto, killed when dropped.
struct Broker {
    child: Option<std::process::Child>,
    log: PathBuf,
    port: u16,
    /// The mosquitto service's environment (the passwords).
    env: BTreeMap<String, String>,
    _scratch: tempfile::TempDir,
}

impl Broker {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        common::process::signal(&mut self.child, "-KILL");
    }
}

fn mosquitto_bin() -> PathBuf {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| PathBuf::from("mosquitto"))
}

/// A path inside the mosquitto container, on this machine: a bind-mounted repository file,
/// or a place under `scratch` for a named volume (a trailing `/` is kept: mosquitto appends
/// file names to `persistence_location`).
fn mosquitto_host_path(service: &Service, scratch: &Path, path: &str) -> String {
    let (bare, slash) = match path.strip_suffix('/') {
        Some(b) => (b, "/"),
        None => (path, ""),
    };
    if let Some(host) = service.host_path(bare) {
        return format!("{}{slash}", host.display());
    }
    let volume = service
        .volume_at(bare)
        .unwrap_or_else(|| panic!("mosquitto.conf names {path}, which is on no mount"));
    let rest = bare
        .strip_prefix(&volume.target)
        .unwrap_or_default()
        .trim_start_matches('/');
    let host = scratch
        .join(volume.target.trim_start_matches('/'))
        .join(rest);
    std::fs::create_dir_all(if rest.is_empty() {
        &host
    } else {
        host.parent().expect("parent")
    })
    .expect("create volume dir");
    format!("{}{slash}", host.display())
}

async fn mqtt_connect(
    port: u16,
    id: &str,
    credentials: Option<(&str, &str)>,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), rumqttc::ConnectionError> {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
    let connack = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("no answer to CONNECT");
    connack.map(|()| (client, events))
}

/// Polls until `n` packets matching `want` came in; panics on a connection error.
async fn wait_packets(
    events: &mut rumqttc::EventLoop,
    n: usize,
    want: impl Fn(&rumqttc::Packet) -> bool,
    what: &str,
) -> Vec<rumqttc::Packet> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while got.len() < n {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(p)) if want(&p) => got.push(p),
                Ok(_) => {}
                Err(e) => panic!("{what}: connection failed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: no answer"));
    got
}

/// mosquitto as the compose file runs it: its config, with the container paths moved to
/// this machine and the listener on a free port, and the password file made by the
/// entrypoint script from the service's environment.
async fn start_compose_mosquitto(resolved: &Yaml) -> Broker {
    let mosquitto = Service::of(resolved, "mosquitto");
    let env = mosquitto.environment();
    let scratch = tempfile::tempdir().expect("tempdir");

    // The command and entrypoint as compose runs them.
    let command = mosquitto.command();
    assert_eq!(command.first().map(String::as_str), Some("mosquitto"));
    let conf_path = mosquitto.config_args().pop().expect("mosquitto -c <conf>");
    let conf = std::fs::read_to_string(
        mosquitto
            .host_path(&conf_path)
            .expect("mosquitto.conf is mounted"),
    )
    .expect("read mosquitto.conf");
    let entrypoint = mosquitto.entrypoint();
    let script = mosquitto
        .host_path(entrypoint.last().expect("entrypoint"))
        .expect("the entrypoint script is mounted");

    // The conf with its container paths moved here and its listener on a free port; only
    // those words change.
    let port = common::mosquitto::free_port();
    let mut local = String::new();
    let mut listeners = Vec::new();
    let mut password_file = None;
    for line in conf.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["listener", p, ..] => {
                listeners.push(p.to_string());
                local.push_str(&format!("listener {port} 127.0.0.1\n"));
            }
            [key, path] if path.starts_with('/') => {
                let host = mosquitto_host_path(&mosquitto, scratch.path(), path);
                if *key == "password_file" {
                    password_file = Some((path.to_string(), host.clone()));
                }
                local.push_str(&format!("{key} {host}\n"));
            }
            _ => {
                local.push_str(line);
                local.push('\n');
            }
        }
    }
    assert_eq!(
        listeners,
        ["1883"],
        "one listener, on the port citygate uses"
    );
    assert!(container_ports(&mosquitto).contains(&1883));
    assert!(
        conf.lines().any(|l| l.trim() == "allow_anonymous false"),
        "anonymous clients are refused"
    );
    // The test runs as root in CI: mosquitto would drop to its own user, which cannot read
    // the temporary files. In the container the entrypoint chowns the password file instead.
    local.push_str("user root\n");
    let (container_pw, host_pw) = password_file.expect("mosquitto.conf sets password_file");
    let script_text = std::fs::read_to_string(&script).expect("read entrypoint");
    assert!(
        script_text.contains(&format!(":-{container_pw}}}")),
        "the entrypoint writes the password file mosquitto.conf reads ({container_pw})"
    );
    let conf_file = scratch.path().join("mosquitto.conf");
    std::fs::write(&conf_file, local).expect("write conf");

    // The password file, made by the entrypoint script itself from the service's environment.
    let out = Command::new("sh")
        .arg(&script)
        .arg("true")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(&env)
        .env("MOSQUITTO_PASSWORD_FILE", &host_pw)
        .output()
        .expect("run the mosquitto entrypoint");
    assert!(
        out.status.success(),
        "the entrypoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = scratch.path().join("mosquitto.log");
    let mut cmd = Command::new(mosquitto_bin());
    cmd.arg("-c").arg(&conf_file);
    let broker = Broker {
        child: Some(common::process::spawn_logged(
            &mut cmd,
            &log,
            "mosquitto is not installed: apt-get install mosquitto (or run scripts/test)",
        )),
        log,
        port,
        env,
        _scratch: scratch,
    };
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "mosquitto does not listen:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker
}

#[tokio::test]
async fn mosquitto_config_authenticates_the_compose_users_and_applies_the_acl() {
    let resolved = compose::resolved();
    let broker = start_compose_mosquitto(&resolved).await;
    let (port, env) = (broker.port, &broker.env);
    let citygate_pw = env
        .get("MQTT_CITYGATE_PASSWORD")
        .expect("citygate password");
    let device_pw = env.get("MQTT_DEVICE_PASSWORD").expect("devices password");
    for (who, creds) in [
        ("anonymous", None),
        ("a wrong password", Some(("citygate", "not-the-password"))),
        ("an unknown user", Some(("nobody", device_pw.as_str()))),
    ] {
        let refused = mqtt_connect(port, "deploy-refused", creds).await;
        assert!(
            matches!(refused, Err(rumqttc::ConnectionError::ConnectionRefused(_))),
            "{who} is let in: {:?}\n{}",
            refused.as_ref().map(|_| ()),
            broker.log()
        );
    }

    // The gateway's user reads readings and alert topics...
    let (gw, mut gw_events) =
        mqtt_connect(port, "deploy-citygate", Some(("citygate", citygate_pw)))
            .await
            .unwrap_or_else(|e| panic!("citygate cannot log in: {e}\n{}", broker.log()));
    gw.subscribe("city/#", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    gw.subscribe("citygate/alerts/#", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    for ack in wait_packets(
        &mut gw_events,
        2,
        |p| matches!(p, rumqttc::Packet::SubAck(_)),
        "citygate subscribes",
    )
    .await
    {
        let rumqttc::Packet::SubAck(ack) = ack else {
            unreachable!()
        };
        assert!(
            ack.return_codes
                .iter()
                .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
            "{ack:?}"
        );
    }

    // ...devices write readings only. A forged alert is dropped (mosquitto answers with a
    // PUBACK or, in some 2.0 releases, closes the connection); a reading published after
    // that answer arrives, and nothing before it (a broker routes a message as it takes it,
    // so a forged alert let through would be ahead of the reading).
    let (dev, mut dev_events) = mqtt_connect(port, "deploy-forger", Some(("devices", device_pw)))
        .await
        .unwrap_or_else(|e| panic!("devices cannot log in: {e}\n{}", broker.log()));
    dev.publish(
        "citygate/alerts/critical/gas_detector/forged",
        rumqttc::QoS::AtLeastOnce,
        false,
        "forged",
    )
    .await
    .expect("publish");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match dev_events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("no answer to the forged alert");
    drop((dev, dev_events));
    let (dev, mut dev_events) = mqtt_connect(port, "deploy-device", Some(("devices", device_pw)))
        .await
        .unwrap_or_else(|e| panic!("devices cannot log in: {e}\n{}", broker.log()));
    dev.publish(
        "city/qingcheng/water_level/wl-deploy",
        rumqttc::QoS::AtLeastOnce,
        false,
        r#"{"level":3.2}"#,
    )
    .await
    .expect("publish");
    wait_packets(
        &mut dev_events,
        1,
        |p| matches!(p, rumqttc::Packet::PubAck(_)),
        "devices publish",
    )
    .await;
    // The gateway's user may publish alert events and read them back (retained active set).
    gw.publish(
        "citygate/alerts/active/deploy-probe",
        rumqttc::QoS::AtLeastOnce,
        false,
        "probe",
    )
    .await
    .expect("publish");
    let received: Vec<(String, String)> = wait_packets(
        &mut gw_events,
        2,
        |p| matches!(p, rumqttc::Packet::Publish(_)),
        "citygate receives",
    )
    .await
    .into_iter()
    .map(|p| match p {
        rumqttc::Packet::Publish(p) => (p.topic, String::from_utf8_lossy(&p.payload).into_owned()),
        _ => unreachable!(),
    })
    .collect();
    assert_eq!(
        received,
        [
            (
                "city/qingcheng/water_level/wl-deploy".to_owned(),
                r#"{"level":3.2}"#.to_owned()
            ),
            (
                "citygate/alerts/active/deploy-probe".to_owned(),
                "probe".to_owned()
            ),
        ],
        "{}",
        broker.log()
    );
}

/// The built gateway as a child process, killed when dropped.
struct GatewayChild {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl GatewayChild {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        common::process::signal(&mut self.child, "-KILL");
    }
}

/// Replaces `from` (which must be there) in a config's text.
fn moved(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the compose config no longer names {from}"
    );
    text.replace(from, to)
}

#[tokio::test]
async fn the_gateway_runs_on_the_compose_config_through_the_compose_broker() {
    let resolved = compose::resolved();
    let broker = start_compose_mosquitto(&resolved).await;
    let gw_service = Service::of(&resolved, "citygate");
    let dir = tempfile::tempdir().expect("tempdir");

    // The compose files as they are, except for the service host names, which only resolve
    // inside the compose network. InfluxDB is not there: the outbox keeps its points.
    let mut files: Vec<PathBuf> = gw_service
        .config_args()
        .iter()
        .map(|p| gw_service.host_path(p).expect("mounted"))
        .collect();
    let overlay = files.pop().expect("the compose overlay");
    let text = std::fs::read_to_string(&overlay).expect("read compose.toml");
    let text = moved(
        &text,
        "mqtt://mosquitto:1883",
        &format!("mqtt://127.0.0.1:{}", broker.port),
    );
    let text = moved(
        &text,
        "http://influxdb:8086",
        &format!("http://127.0.0.1:{}", common::mosquitto::free_port()),
    );
    let local_overlay = dir.path().join("compose.toml");
    std::fs::write(&local_overlay, text).expect("write overlay");
    files.push(local_overlay);

    let http_port = common::mosquitto::free_port();
    let log = dir.path().join("citygate.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_citygate"));
    cmd.arg("run");
    for f in &files {
        cmd.arg("-c").arg(f);
    }
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(gw_service.environment())
        // Single keys move through the environment, as an operator would override them.
        .env("CITYGATE__GATEWAY__DATA_DIR", dir.path().join("data"))
        .env("CITYGATE__HTTP__LISTEN", format!("127.0.0.1:{http_port}"));
    let mut gateway = GatewayChild {
        child: Some(common::process::spawn_logged(&mut cmd, &log, "citygate")),
        log,
    };
    let api = common::Api::at(format!("127.0.0.1:{http_port}"));
    let client = common::http_client();
    let log_path = gateway.log.clone();
    common::process::wait_answers(
        &client,
        &format!("{}/health", api.base),
        |s| s == 200,
        &mut gateway.child,
        "citygate",
        || std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
    .await;
    let status = common::wait_for_mqtt_status(
        &api,
        "mosquitto",
        common::STORE_DEADLINE,
        common::is_connected,
    )
    .await;
    assert!(
        common::is_connected(&status),
        "citygate does not connect to mosquitto as user citygate: {status}\n{}\n{}",
        gateway.log(),
        broker.log()
    );

    // An operator's client (user citygate may read alerts) waits for the alert event.
    let citygate_pw = broker.env["MQTT_CITYGATE_PASSWORD"].clone();
    let device_pw = broker.env["MQTT_DEVICE_PASSWORD"].clone();
    let (watch, mut watch_events) = mqtt_connect(
        broker.port,
        "deploy-watch",
        Some(("citygate", &citygate_pw)),
    )
    .await
    .expect("watcher logs in");
    watch
        .subscribe(
            "citygate/alerts/+/gas_detector/gd-deploy",
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .expect("subscribe");
    wait_packets(
        &mut watch_events,
        1,
        |p| matches!(p, rumqttc::Packet::SubAck(_)),
        "watcher subscribes",
    )
    .await;

    // A device past the second-level LEL alarm.
    let (dev, mut dev_events) =
        mqtt_connect(broker.port, "deploy-gd", Some(("devices", &device_pw)))
            .await
            .expect("device logs in");
    dev.publish(
        "city/qingcheng/gas_detector/gd-deploy",
        rumqttc::QoS::AtLeastOnce,
        false,
        r#"{"lel": 60}"#,
    )
    .await
    .expect("publish");
    wait_packets(
        &mut dev_events,
        1,
        |p| matches!(p, rumqttc::Packet::PubAck(_)),
        "device publishes",
    )
    .await;

    let event = tokio::time::timeout(common::STORE_DEADLINE, async {
        loop {
            match watch_events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("watcher: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no alert event on citygate/alerts/#:\n{}\n{}",
            gateway.log(),
            broker.log()
        )
    });
    assert_eq!(
        event.topic,
        "citygate/alerts/critical/gas_detector/gd-deploy"
    );
    let body: Value = serde_json::from_slice(&event.payload).expect("alert JSON");
    assert_eq!(body["event"], "raised", "{body}");
    assert_eq!(body["alert"]["sensor"], "gd-deploy", "{body}");
    assert_eq!(body["alert"]["value"], 60.0, "{body}");
    assert_eq!(body["alert"]["tags"]["district"], "qingcheng", "{body}");

    // Ingest over HTTP needs the API token from .env; reads are open.
    let token = &gw_service.environment()["CITYGATE_API_TOKEN"];
    let ingest = |auth: Option<String>| {
        let mut req = client
            .post(format!("{}/api/v1/ingest", api.base))
            .header("content-type", "application/json")
            .body(r#"{"sensor":"gd-deploy","lel":1}"#);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    assert_eq!(ingest(None).await.expect("ingest").status().as_u16(), 401);
    assert_eq!(
        ingest(Some(format!("Bearer {token}")))
            .await
            .expect("ingest")
            .status()
            .as_u16(),
        200
    );
    let (status, readings) = api
        .get("/api/v1/readings?sensor=gd-deploy&metric=lel&order=asc")
        .await;
    assert_eq!(status, 200, "{readings}");
    let values: Vec<f64> = readings["readings"]
        .as_array()
        .expect("readings")
        .iter()
        .filter_map(|r| r["value"].as_f64())
        .collect();
    assert_eq!(values, [60.0, 1.0], "{readings}");
}

/// A panel's queries with the type of the data source each one uses.
struct PanelQuery {
    panel: String,
    panel_type: String,
    source_type: String,
    text: String,
}

fn dashboard_queries(dashboard: &Value, sources: &[Yaml]) -> Vec<PanelQuery> {
    let source_type = |ds: &Value| -> String {
        let uid = ds["uid"].as_str().expect("data source uid");
        let found = sources
            .iter()
            .find(|s| s["uid"].as_str() == Some(uid))
            .unwrap_or_else(|| panic!("the dashboard uses data source {uid}, not provisioned"));
        let kind = found["type"].as_str().expect("type").to_owned();
        assert_eq!(ds["type"].as_str(), Some(kind.as_str()), "type of {uid}");
        kind
    };
    let mut panels: Vec<&Value> = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let ds = if t["datasource"].is_object() {
                &t["datasource"]
            } else {
                &p["datasource"]
            };
            let source_type = source_type(ds);
            let text = match source_type.as_str() {
                "influxdb" => t["query"].as_str(),
                "prometheus" => t["expr"].as_str(),
                other => panic!("unexpected data source type {other}"),
            }
            .unwrap_or_else(|| panic!("{}: a target without a query", p["title"]))
            .to_owned();
            out.push(PanelQuery {
                panel: p["title"].as_str().unwrap_or_default().to_owned(),
                panel_type: p["type"].as_str().unwrap_or_default().to_owned(),
                source_type,
                text,
            });
        }
    }
    out
}

/// One column of a `SHOW ...` answer.
async fn show(influx: &common::influxdb1::Influx1, q: &str, column: &str) -> BTreeSet<String> {
    influx
        .rows("citygate", q)
        .await
        .iter()
        .filter_map(|r| r.get(column).and_then(Value::as_str).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn dashboard_queries_name_measurements_fields_and_metrics_the_gateway_writes() {
    let resolved = compose::resolved();
    let grafana = Service::of(&resolved, "grafana");
    let sources = grafana_datasources(&grafana);
    let files = grafana_dashboards(&grafana);
    assert!(!files.is_empty(), "Grafana loads no dashboard");
    let mut queries = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read dashboard");
        let dashboard: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", f.display()));
        queries.extend(dashboard_queries(&dashboard, &sources));
    }

    let defaults = load_config(&[], &BTreeMap::new());
    let flux: Vec<(&PanelQuery, queries::FluxRefs)> = queries
        .iter()
        .filter(|q| q.source_type == "influxdb")
        .map(|q| (q, queries::flux_refs(&q.text)))
        .collect();
    let reading_kinds: BTreeSet<String> = flux
        .iter()
        .flat_map(|(_, r)| r.measurements.iter().cloned())
        .filter(|m| m != "alerts")
        .collect();
    for kind in &reading_kinds {
        assert!(
            defaults.catalog.contains_key(kind),
            "the dashboard reads measurement {kind}, not a sensor kind"
        );
    }
    // The three panels the issue asks for.
    assert!(
        reading_kinds.len() >= 3
            && flux
                .iter()
                .any(|(q, r)| q.panel_type == "timeseries" && !r.measurements.contains("alerts")),
        "readings per kind: {reading_kinds:?}"
    );
    assert!(
        flux.iter().any(|(q, r)| q.panel_type == "table"
            && r.measurements == BTreeSet::from(["alerts".to_owned()])
            && r.columns.contains("state")),
        "an active alerts table over measurement alerts"
    );
    let prom: Vec<&PanelQuery> = queries
        .iter()
        .filter(|q| q.source_type == "prometheus")
        .collect();
    assert!(
        prom.iter()
            .any(|q| queries::prom_metrics(&q.text).contains("citygate_outbox_points")),
        "an outbox depth panel"
    );

    // A real gateway writes one reading of every kind the dashboard shows (every metric of
    // the kind, mid-range), and an acknowledged alert, to a real InfluxDB.
    let influx = common::influxdb1::Influx1::start().await;
    influx.create_database("citygate").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut overlay = String::new();
    for kind in &reading_kinds {
        overlay.push_str(&format!(
            "[sensors.\"deploy-{kind}\"]\nkind = \"{kind}\"\ntags = {{ district = \"清城区\", site = \"北江清远站\" }}\n"
        ));
    }
    overlay.push_str(
        "[sensors.\"deploy-alarm\"]\nkind = \"gas_detector\"\ntags = { district = \"清城区\", site = \"化工园区\" }\n",
    );
    overlay.push_str(&format!(
        "[[sinks.influxdb]]\nname = \"influx1\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"citygate\"\nflush_interval = \"50ms\"\nretry_min = \"50ms\"\nretry_max = \"500ms\"\n",
        influx.url()
    ));
    let gw = common::start(dir.path(), &overlay).await;
    let api = common::Api::new(&gw);
    let ts = common::now_ms() - 60_000;
    for kind in &reading_kinds {
        let metrics: Vec<String> = defaults.catalog[kind]
            .metrics
            .iter()
            .map(|(name, m)| format!("\"{name}\":{}", (m.min + m.max) / 2.0))
            .collect();
        let body = format!(
            "{{\"sensor\":\"deploy-{kind}\",\"ts\":{ts},{}}}",
            metrics.join(",")
        );
        let (status, answer) = api.post("/api/v1/ingest", "application/json", body).await;
        assert_eq!(status, 200, "{kind}: {answer}");
    }
    let (status, answer) = api
        .post(
            "/api/v1/ingest",
            "application/json",
            format!(r#"{{"sensor":"deploy-alarm","ts":{ts},"lel":60}}"#),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (_, alerts) = api.get("/api/v1/alerts?sensor=deploy-alarm").await;
    let id = alerts["alerts"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("lel 60 raised no alert: {alerts}"))
        .to_owned();
    let (status, acked) = api
        .post(
            &format!("/api/v1/alerts/{id}/ack"),
            "application/json",
            r#"{"by":"值班员","comment":"crew sent"}"#,
        )
        .await;
    assert_eq!(status, 200, "{acked}");
    common::wait_health(&api, "the outbox to drain into InfluxDB", |h| {
        h["outbox"]["points"] == 0 && h["sinks"][0]["state"] == "ok"
    })
    .await;

    let measurements = show(&influx, "SHOW MEASUREMENTS", "name").await;
    for (q, refs) in &flux {
        let mut columns = BTreeSet::new();
        for m in &refs.measurements {
            assert!(
                measurements.contains(m),
                "{}: measurement {m} is not written (written: {measurements:?})",
                q.panel
            );
            let fields = show(
                &influx,
                &format!("SHOW FIELD KEYS FROM \"{m}\""),
                "fieldKey",
            )
            .await;
            let tags = show(&influx, &format!("SHOW TAG KEYS FROM \"{m}\""), "tagKey").await;
            for f in &refs.fields {
                assert!(
                    fields.contains(f),
                    "{}: {m} has no field {f} (fields: {fields:?})",
                    q.panel
                );
            }
            columns.extend(fields);
            columns.extend(tags);
        }
        for c in &refs.columns {
            assert!(
                columns.contains(c),
                "{}: column {c} is neither a tag nor a field of {:?} ({columns:?})",
                q.panel,
                refs.measurements
            );
        }
    }

    // Every metric and label the PromQL uses is on the gateway's /metrics.
    let (status, text) = api.get_text("/metrics").await;
    assert_eq!(status, 200);
    let exposition = common::prometheus::parse(&text).expect("/metrics parses");
    for q in prom {
        let metrics = queries::prom_metrics(&q.text);
        assert!(
            !metrics.is_empty(),
            "{}: no citygate metric in {}",
            q.panel,
            q.text
        );
        for m in &metrics {
            assert!(exposition.has(m), "{}: {m} is not on /metrics", q.panel);
        }
        for label in queries::prom_labels(&q.text) {
            assert!(
                exposition
                    .samples
                    .iter()
                    .any(|s| metrics.contains(&s.name) && s.labels.contains_key(&label)),
                "{}: no metric of {metrics:?} has label {label}",
                q.panel
            );
        }
    }
    gw.shutdown().await.expect("shutdown");
}

/// The Dockerfile with continuation lines joined, comments and blank lines dropped.
fn dockerfile_instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// `[package] name` and `[[bin]] name`s of a manifest.
fn manifest_names(path: &str) -> (String, Vec<String>) {
    let mut section = String::new();
    let mut package = None;
    let mut bins = Vec::new();
    for line in read(path).lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
        } else if let Some(v) = line.strip_prefix("name = ") {
            let v = v.trim_matches('"').to_owned();
            match section.as_str() {
                "[package]" => package = Some(v),
                "[[bin]]" => bins.push(v),
                _ => {}
            }
        }
    }
    (package.expect("[package] name"), bins)
}

/// The JSON-array (exec) form of an instruction's arguments.
fn exec_form(instruction: &str, keyword: &str) -> Vec<String> {
    let args = instruction
        .strip_prefix(keyword)
        .map(str::trim)
        .unwrap_or_default();
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{keyword} is not in exec form ({e}): {args}"))
}

#[test]
fn dockerfile_builds_both_binaries_in_stages_and_runs_as_a_non_root_user() {
    let lines = dockerfile_instructions();
    let stages: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    let builder = &lines[stages[0]];
    assert!(builder.starts_with("FROM rust:1-bookworm AS "), "{builder}");
    let last = *stages.last().expect("a stage");
    assert!(
        lines[last].starts_with("FROM debian:bookworm-slim"),
        "{}",
        lines[last]
    );
    let runtime = &lines[last..];

    let (core, core_bins) = manifest_names("Cargo.toml");
    let (sim, sim_bins) = manifest_names("simulators/Cargo.toml");
    let bins: Vec<String> = core_bins.into_iter().chain(sim_bins).collect();
    let build = lines[..last]
        .iter()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build in the builder stage");
    assert!(
        build.contains("--release") && build.contains("--locked"),
        "{build}"
    );
    let words: Vec<&str> = build.split_whitespace().collect();
    // The cargo command alone: `mkdir -p` follows it in the same RUN.
    let cargo: Vec<&str> = build[build.find("cargo build").unwrap_or_default()..]
        .split("&&")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let packages: BTreeSet<&str> = cargo
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    assert_eq!(packages, BTreeSet::from([core.as_str(), sim.as_str()]));
    let built: BTreeSet<&str> = words
        .iter()
        .filter_map(|w| w.strip_prefix("target/release/"))
        .collect();
    assert_eq!(
        built,
        bins.iter().map(String::as_str).collect(),
        "the binaries taken out of the build are the [[bin]]s of both crates"
    );
    let copied = runtime
        .iter()
        .find(|l| l.starts_with("COPY --from="))
        .expect("the runtime stage copies the binaries");
    for b in &bins {
        assert!(
            copied.contains(&format!("/{b} ")),
            "{b} is not copied: {copied}"
        );
    }

    // Non-root, with a fixed uid for volumes.
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let user = user.split(':').next().unwrap_or_default();
    assert!(!["root", "0", ""].contains(&user), "USER {user}");
    assert!(
        runtime
            .iter()
            .any(|l| l.contains("--uid ") && l.contains(user)),
        "{user} is created with a fixed uid"
    );
    assert!(runtime
        .iter()
        .any(|l| l.contains("ca-certificates") && l.contains("tzdata")));

    // The default command: `citygate run -c <the config the image ships>`, which loads.
    let entrypoint = exec_form(
        runtime
            .iter()
            .find(|l| l.starts_with("ENTRYPOINT"))
            .expect("ENTRYPOINT"),
        "ENTRYPOINT",
    );
    assert!(bins.contains(&entrypoint[0]), "{entrypoint:?}");
    let cmd = exec_form(
        runtime.iter().find(|l| l.starts_with("CMD")).expect("CMD"),
        "CMD",
    );
    assert_eq!(cmd[..2], ["run", "-c"], "{cmd:?}");
    let shipped = runtime
        .iter()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--"))
        .find_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts.last() == Some(&cmd[2].as_str())).then(|| repo(parts[0]))
        })
        .unwrap_or_else(|| panic!("CMD reads {}, which no COPY puts there", cmd[2]));
    let env = BTreeMap::new();
    check_config(std::slice::from_ref(&shipped), &env);
    let config = load_config(&[shipped], &env);
    let volume = runtime
        .iter()
        .find_map(|l| l.strip_prefix("VOLUME "))
        .expect("VOLUME");
    assert!(
        volume.contains(&format!("\"{}\"", config.gateway.data_dir.display())),
        "data_dir {} is the volume {volume}",
        config.gateway.data_dir.display()
    );
    let exposed: Vec<u16> = runtime
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().filter_map(|p| p.parse().ok()))
        .collect();
    assert!(exposed.contains(&config.http.listen.port()), "{exposed:?}");
    assert!(config.http.listen.ip().is_unspecified());

    let ignored: Vec<String> = read(".dockerignore").lines().map(str::to_owned).collect();
    for entry in ["target", "data", ".git", ".env"] {
        assert!(
            ignored.iter().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

#[test]
fn the_fleet_service_runs_citygate_sim_with_flags_it_has_and_the_device_login() {
    let resolved = compose::resolved();
    let sim = Service::of(&resolved, "simulator");
    assert_eq!(sim.entrypoint(), ["citygate-sim"]);
    let args = sim.command();
    let flag = |name: &str| -> String {
        args.windows(2)
            .find(|w| w[0] == name)
            .map(|w| w[1].clone())
            .unwrap_or_else(|| panic!("the simulator has no {name}: {args:?}"))
    };
    assert_eq!(url_host_port(&flag("--mqtt")), ("mosquitto".into(), 1883));
    assert_eq!(flag("--username"), "devices");
    let var = flag("--password-env");
    assert_eq!(
        sim.environment().get(&var),
        Service::of(&resolved, "mosquitto")
            .environment()
            .get("MQTT_DEVICE_PASSWORD"),
        "the fleet logs in with the devices password"
    );

    // The flags exist in the simulator as built from this tree.
    let exe = std::env::current_exe().expect("test exe");
    let bin_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "-q", "-p", "citygate-sim", "--bin", "citygate-sim"]);
    if bin_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.current_dir(ROOT).status().expect("cargo build");
    assert!(status.success(), "cargo build -p citygate-sim failed");
    let devices = Service::of(&resolved, "modbus-devices");
    assert_eq!(devices.entrypoint(), ["citygate-sim"]);
    for args in [args.clone(), devices.command()] {
        let help = Command::new(bin_dir.join("citygate-sim"))
            .arg(&args[0])
            .arg("--help")
            .output()
            .expect("citygate-sim --help");
        let help = String::from_utf8_lossy(&help.stdout);
        for a in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(a.as_str()),
                "citygate-sim {} has no {a}:\n{help}",
                args[0]
            );
        }
    }

    // The fleet plays the city's sensors: city.toml is the fleet of `--per-kind 7`
    // (tests/city_config.rs), and a smaller fleet would leave configured sensors silent, each
    // an offline alert once the deadman runs.
    assert_eq!(flag("--per-kind"), "7", "the fleet of city.toml");

    // The city's Modbus devices are where city.toml polls them: the device simulator listens
    // on that address inside the gateway's network namespace.
    let city = load_config(
        &[Path::new(ROOT).join("config/examples/city.toml")],
        &BTreeMap::new(),
    );
    let dev_args = devices.command();
    let listen = dev_args
        .windows(2)
        .find(|w| w[0] == "--listen")
        .map(|w| w[1].clone())
        .expect("modbus-devices --listen");
    assert!(!city.modbus.devices.is_empty());
    for d in &city.modbus.devices {
        assert_eq!(
            d.address,
            format!("tcp://{listen}"),
            "{} is polled where the devices listen",
            d.sensor
        );
    }
    assert_eq!(
        compose::scalar(&resolved["services"]["modbus-devices"]["network_mode"]),
        "service:citygate",
        "the devices share the gateway's network namespace"
    );
}

/// `key → values` of a unit file (a key may repeat).
fn unit_keys(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_owned();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry((section.clone(), k.trim().to_owned()))
                .or_default()
                .push(v.trim().to_owned());
        } else {
            panic!("not a unit file line: {line}");
        }
    }
    out
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let text = read("deploy/systemd/citygate.service");
    let keys = unit_keys(&text);
    let get = |section: &str, key: &str| -> Vec<String> {
        keys.get(&(section.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    for (key, want) in [
        ("User", "citygate"),
        ("StateDirectory", "citygate"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "true"),
        ("EnvironmentFile", "/etc/citygate/env"),
        (
            "ExecStart",
            "/usr/local/bin/citygate run -c /etc/citygate/citygate.toml",
        ),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(get("Service", key), [want], "[Service] {key}");
    }
    assert_eq!(get("Service", "TimeoutStopSec").len(), 1);
    assert_eq!(get("Install", "WantedBy"), ["multi-user.target"]);

    let version = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is needed to verify the unit: apt-get install systemd ({e})")
        });
    assert!(version.status.success());
    // Verify needs the binaries it names to exist: the built one stands in for the install.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("citygate.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/citygate", env!("CARGO_BIN_EXE_citygate")),
    )
    .expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("citygate.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
