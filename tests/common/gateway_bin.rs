//! The gateway binary as a child process (`citygate run -c <file>`), for what only a real
//! process can show: `kill -9`, and what it writes to its log.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Api;

pub struct GatewayProcess {
    child: Option<Child>,
    base: PathBuf,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    pub http_port: u16,
    pub db: PathBuf,
}

impl GatewayProcess {
    /// Writes a config into `dir` (data there, HTTP on a port the gateway picks, no embedded
    /// broker, `overlay` after that) and starts the binary with `env` added to its
    /// environment. Its stderr (the log) is appended to `dir/gateway.log` across restarts.
    ///
    /// The gateway binds port 0 and the port is read from its log: a port picked here and
    /// handed over could be taken by another test in between (a test once talked to the
    /// gateway of the test running beside it). Restarts then ask for that same port, so an
    /// [`Api`] made before a restart still reaches the gateway.
    pub fn start(dir: &Path, overlay: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let base_file = dir.join("citygate-test-base.toml");
        let write_base = |port: u16| {
            let base = format!(
                "mqtt = []\n[broker]\nenabled = false\n[gateway]\ndata_dir = {:?}\ndeadman_interval = \"1h\"\n[alerts]\nconsole = false\n[alerts.mqtt]\nenabled = false\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
                dir.display().to_string()
            );
            std::fs::write(&base_file, base).expect("write config");
        };
        // Two files, as two layers: `mqtt = []` in the first clears the built-in connection,
        // and the overlay's `[[mqtt]]` (in one file they would clash) replaces it.
        write_base(0);
        let config = dir.join("citygate-test.toml");
        std::fs::write(&config, overlay).expect("write config");
        let mut g = GatewayProcess {
            child: None,
            base: base_file.clone(),
            config,
            log: dir.join("gateway.log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            http_port: 0,
            db: dir.join("citygate.db"),
        };
        let log_start = g.log().len();
        g.spawn();
        g.http_port = g.logged_port(log_start, "HTTP API listening", "addr=");
        write_base(g.http_port);
        g
    }

    /// The port of the address the process logged after `log_start` on its first line
    /// containing `marker`, as `key<address>` (e.g. `addr=127.0.0.1:4321`). Panics with the
    /// log after a minute, or if the process exits first. (A blocking wait: it runs once per
    /// start, for the few milliseconds the process takes to listen.)
    pub fn logged_port(&mut self, log_start: usize, marker: &str, key: &str) -> u16 {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            let port = log.get(log_start..).and_then(|new| {
                let line = new.lines().find(|l| l.contains(marker))?;
                let rest = &line[line.find(key)? + key.len()..];
                let addr = rest.split_whitespace().next()?;
                addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
            });
            if let Some(port) = port {
                return port;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the gateway exited ({status}) before it logged `{marker}`; log:\n{log}");
            }
            assert!(
                Instant::now() < until,
                "the gateway did not log `{marker} ... {key}<address>` within a minute; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open gateway log");
        // The port is read from an info line of citygate::app, whatever else the test or the
        // caller's RUST_LOG asks for.
        let filter = self
            .env
            .iter()
            .find(|(k, _)| k == "RUST_LOG")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".into());
        let child = Command::new(env!("CARGO_BIN_EXE_citygate"))
            .arg("run")
            .arg("-c")
            .arg(&self.base)
            .arg("-c")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", format!("{filter},citygate::app=info"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the citygate binary");
        self.child = Some(child);
    }

    pub fn api(&self) -> Api {
        Api::at(format!("127.0.0.1:{}", self.http_port))
    }

    /// Waits until `/health` answers (a failure guard: panics after a minute, with the log).
    pub async fn wait_ready(&mut self) {
        // No pooled connection left behind: a test of the connection cap counts them.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = Api {
            base: self.api().base,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = api.client.get(format!("{}/health", api.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the gateway exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < until,
                "the gateway did not answer /health; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no chance to flush or say goodbye to the broker.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and returns at once (see [`wait_exit`](Self::wait_exit)).
    pub fn sigterm(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Waits for the process to exit; `None` if it is still running at `deadline` (it is
    /// then killed, so that the test does not leave it behind).
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= until {
                self.kill9();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The config files the process runs with, in order.
    pub fn config_files(&self) -> [&Path; 2] {
        [&self.base, &self.config]
    }

    /// Starts the binary again with the same config and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the gateway is still running");
        let log_start = self.log().len();
        self.spawn();
        // Its old port, or a clear failure (not a neighbour's gateway answering on it).
        let port = self.logged_port(log_start, "HTTP API listening", "addr=");
        assert_eq!(
            port,
            self.http_port,
            "the restarted gateway listens elsewhere; log:\n{}",
            self.log()
        );
    }

    /// A field of the running process's `/proc/<pid>/status` in KiB, e.g. `VmHWM` (peak RSS)
    /// or `VmRSS`; `None` when it is not running or not on Linux.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
    }

    /// Peak RSS so far (VmHWM), in KiB; panics if it cannot be read, so that a test that
    /// reports memory never reports nothing.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM")
            .expect("VmHWM of the gateway from /proc/<pid>/status")
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
