//! A real mosquitto broker for tests: a free port, a temporary directory with its config,
//! persistence and log, optional TLS and password file; `restart()` keeps the port and the
//! persisted sessions; it is stopped when dropped.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const NOT_INSTALLED: &str = "mosquitto is not installed: run scripts/test (it installs it) or apt-get install mosquitto mosquitto-clients";

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files on disk.
pub struct TestPki {
    _dir: TempDir,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// A second CA that signed nothing here: the "wrong CA" for a client.
    pub other_ca_file: PathBuf,
}

impl TestPki {
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
            let key = KeyPair::generate().expect("CA key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).expect("CA self-signed");
            (cert.pem(), Issuer::new(params, key))
        }
        let dir = tempfile::tempdir().expect("tempdir for certificates");
        let (ca_pem, issuer) = ca("citygate test CA");
        let (other_pem, _) = ca("unrelated test CA");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write PEM");
            p
        };
        TestPki {
            ca_file: write("ca.pem", &ca_pem),
            cert_file: write("server.pem", &cert.pem()),
            key_file: write("server.key", &key.serialize_pem()),
            other_ca_file: write("other-ca.pem", &other_pem),
            _dir: dir,
        }
    }
}

/// What the broker is started with.
#[derive(Default, Clone)]
pub struct MosquittoOptions {
    /// Adds a TLS listener with these files (server cert + key, CA).
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// Users (name, password); when non-empty anonymous clients are refused.
    pub users: Vec<(String, String)>,
    /// `max_inflight_messages` per client (mosquitto's default is 20).
    pub max_inflight: Option<u16>,
    /// Logs every packet (`log_type debug`), for `unacked_deliveries`. Verbose: only for
    /// tests that move a few thousand messages.
    pub packet_log: bool,
}

impl MosquittoOptions {
    pub fn with_tls(mut self, pki: &TestPki) -> Self {
        self.tls = Some((
            pki.cert_file.clone(),
            pki.key_file.clone(),
            pki.ca_file.clone(),
        ));
        self
    }

    pub fn with_user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    pub fn with_packet_log(mut self) -> Self {
        self.packet_log = true;
        self
    }
}

pub struct Mosquitto {
    dir: TempDir,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

fn mosquitto_bin() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    match Command::new("mosquitto").arg("-h").output() {
        Ok(_) => PathBuf::from("mosquitto"),
        Err(_) => panic!("{NOT_INSTALLED}"),
    }
}

/// Panics with the install hint when the mosquitto command-line clients are missing.
pub fn require_clients() {
    if Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        panic!("{NOT_INSTALLED}");
    }
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(MosquittoOptions::default())
    }

    /// Starts on ports that were free a moment ago. Another test can take such a port
    /// before mosquitto binds it; then mosquitto exits with "Address already in use" and
    /// the start is tried again on new ports.
    pub fn start_with(opts: MosquittoOptions) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir for mosquitto");
        let mut m = Mosquitto {
            dir,
            port: 0,
            tls_port: None,
            child: None,
        };
        for attempt in 1.. {
            m.port = free_port();
            m.tls_port = opts.tls.as_ref().map(|_| free_port());
            m.write_conf(&opts);
            let log_start = m.log().len();
            match m.try_spawn() {
                Ok(()) => return m,
                // Only this attempt's part of the log says why it failed.
                Err(_)
                    if attempt < 5
                        && m.log()
                            .get(log_start..)
                            .is_some_and(|l| l.contains("Address already in use")) =>
                {
                    continue
                }
                Err(log) => panic!("mosquitto did not start; log:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn write_conf(&self, opts: &MosquittoOptions) {
        let dir = self.dir.path();
        let port = self.port;
        let mut conf = format!(
            "per_listener_settings false\n\
             user root\n\
             persistence true\n\
             persistence_location {dir}/\n\
             persistence_file mosquitto.db\n\
             autosave_interval 1\n\
             max_queued_messages 0\n\
             max_inflight_messages {inflight}\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             log_type subscribe\nlog_type unsubscribe\n\
             connection_messages true\n\
             listener {port} 127.0.0.1\n",
            dir = dir.display(),
            inflight = opts.max_inflight.unwrap_or(20),
        );
        if opts.packet_log {
            conf.push_str("log_type debug\n");
        }
        if let (Some((cert, key, ca)), Some(tls_port)) = (&opts.tls, self.tls_port) {
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                ca.display(),
                cert.display(),
                key.display()
            ));
        }
        if opts.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let pw = dir.join("passwd");
            std::fs::File::create(&pw).expect("create password file");
            for (user, pass) in &opts.users {
                let status = Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg(&pw)
                    .arg(user)
                    .arg(pass)
                    .status()
                    .unwrap_or_else(|_| panic!("{NOT_INSTALLED}"));
                assert!(status.success(), "mosquitto_passwd failed");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                pw.display()
            ));
        }
        let mut f = std::fs::File::create(dir.join("mosquitto.conf")).expect("conf");
        f.write_all(conf.as_bytes()).expect("write conf");
    }

    /// Starts the process and waits until it logs that it is running (after every listener
    /// is open) and its ports answer; `Err(log)` if it exits first.
    fn try_spawn(&mut self) -> Result<(), String> {
        let running_before = self.times_running();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{NOT_INSTALLED} ({e})"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        loop {
            let running = self.times_running() > running_before;
            if running
                && ports
                    .iter()
                    .all(|&port| TcpStream::connect(("127.0.0.1", port)).is_ok())
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "exited ({status}) before listening on {ports:?}\n{}",
                    self.log()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {ports:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many times the log says `mosquitto version ... running` (appended per start).
    fn times_running(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("mosquitto version") && l.ends_with(" running"))
            .count()
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("mosquitto did not start again; {log}");
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://localhost:<tls port>` (the certificate names localhost and 127.0.0.1).
    pub fn tls_url(&self) -> String {
        format!(
            "mqtts://localhost:{}",
            self.tls_port.expect("broker started without TLS")
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// From a packet log (`with_packet_log`): what the broker sent `client` since its last
    /// connection and never had acked, as "m<mid>" (with "d1" for a resend), and the counts.
    /// Says which side held a message that never arrived: the broker (never sent) or the
    /// connection and the client (sent, no PUBACK).
    pub fn unacked_deliveries(&self, client: &str) -> String {
        let log = self.log();
        let connected = format!(" as {client} (");
        let session = log
            .match_indices("New client connected from ")
            .filter(|&(at, _)| {
                log[at..]
                    .lines()
                    .next()
                    .is_some_and(|l| l.contains(&connected))
            })
            .last()
            .map_or(&log[..], |(at, _)| &log[at..]);
        let (sent_prefix, ack_prefix) = (
            format!("Sending PUBLISH to {client} ("),
            format!("Received PUBACK from {client} (Mid: "),
        );
        let mut open = std::collections::BTreeMap::<u16, String>::new();
        let (mut sent, mut acked) = (0, 0);
        for line in session.lines() {
            if let Some(rest) = line.split_once(&sent_prefix).map(|(_, r)| r) {
                // (d0, q1, r0, m12, 'topic', ... (n bytes))
                let flags: Vec<&str> = rest.split(", ").take(4).collect();
                if let Some(mid) = flags.get(3).and_then(|m| m.strip_prefix('m')?.parse().ok()) {
                    sent += 1;
                    open.insert(mid, flags[0].to_string());
                }
            } else if let Some(rest) = line.split_once(&ack_prefix).map(|(_, r)| r) {
                if let Some(mid) = rest.split([',', ')']).next().and_then(|m| m.parse().ok()) {
                    acked += 1;
                    open.remove(&mid);
                }
            }
        }
        let open: Vec<String> = open.iter().map(|(m, d)| format!("m{m}({d})")).collect();
        format!(
            "since the last connection the broker sent {client} {sent} PUBLISH and received \
             {acked} PUBACK; sent and never acked: {open:?}"
        )
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn signal(&mut self, sig: &str) {
        super::process::signal(&mut self.child, sig);
    }

    /// SIGTERM: mosquitto saves its persistence file, then exits.
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    /// SIGKILL: whatever was not autosaved (every second) is gone.
    pub fn kill(&mut self) {
        self.signal("-KILL");
    }

    /// Starts the broker again on the same ports with the same persistence.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker is still running");
        self.spawn();
    }

    /// SIGTERM, then start again on the same port with its persisted sessions.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
