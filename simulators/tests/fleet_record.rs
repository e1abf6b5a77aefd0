//! `citygate-sim fleet --record`: the acknowledgement record the chaos soak (scripts/soak)
//! reconciles against. Against a real mosquitto (persistence on) that is restarted while the
//! fleet publishes, every message the fleet sent must end up acknowledged and recorded exactly
//! once, and every recorded reading must be one a subscriber received with that value.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOT_INSTALLED: &str =
    "mosquitto and mosquitto_sub are needed: apt-get install mosquitto mosquitto-clients (scripts/test does)";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mosquitto(conf: &Path, port: u16) -> Killed {
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(NOT_INSTALLED);
    wait_port(port);
    Killed(child)
}

fn terminate(mut c: Killed) {
    // SIGTERM, so that mosquitto saves its sessions before it exits.
    let _ = Command::new("kill")
        .args(["-TERM", &c.0.id().to_string()])
        .status();
    let _ = c.0.wait();
}

#[test]
fn every_message_sent_across_a_broker_restart_is_recorded_once_after_its_puback() {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "citygate-sim-record-{}-{}",
        std::process::id(),
        free_port()
    )));
    std::fs::create_dir_all(dir.0.join("db")).expect("temp dir");
    let port = free_port();
    let user = String::from_utf8(
        Command::new("id")
            .arg("-un")
            .output()
            .expect("id -un")
            .stdout,
    )
    .expect("user name");
    let conf = dir.0.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nuser {}\n",
            dir.0.join("db").display(),
            user.trim()
        ),
    )
    .expect("mosquitto.conf");
    let broker = mosquitto(&conf, port);

    // A persistent QoS 1 subscriber: it gets what the broker queued while it was away.
    let mut sub = Killed(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-v", "-q", "1", "-t", "city/#"])
            .args(["-c", "-i", "record-test-sub"])
            // It exits by itself after this long, and so flushes its (piped, buffered) output.
            .args(["-W", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect(NOT_INSTALLED),
    );
    let out = sub.0.stdout.take().expect("subscriber stdout");
    let received = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(500));

    let record = dir.0.join("acked.csv");
    let fleet = Command::new(env!("CARGO_BIN_EXE_citygate-sim"))
        .args(["fleet", "--mqtt", &format!("mqtt://127.0.0.1:{port}")])
        .args(["--qos", "1", "--per-kind", "1", "--interval-ms", "250"])
        .args(["--duration-s", "6", "--client-id", "record-test-fleet"])
        .arg("--record")
        .arg(&record)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("citygate-sim fleet");
    let mut fleet = Killed(fleet);
    std::thread::sleep(Duration::from_secs(2));
    terminate(broker);
    std::thread::sleep(Duration::from_millis(700));
    let broker = mosquitto(&conf, port);

    let stderr = fleet.0.stderr.take().expect("fleet stderr");
    let log: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = fleet.0.wait().expect("fleet exit");
    assert!(status.success(), "fleet failed:\n{}", log.join("\n"));
    let sent: usize = log
        .iter()
        .find_map(|l| {
            l.strip_prefix("citygate-sim: done, ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .expect("the fleet's summary line");
    assert!(
        log.iter().any(|l| l.contains("retrying")),
        "the broker restart was not noticed:\n{}",
        log.join("\n")
    );

    // The subscriber catches up and exits at its -W timeout.
    let received = received.join().expect("subscriber thread");
    drop(sub);
    terminate(broker);
    let mut got: HashMap<(String, String, i64), f64> = HashMap::new();
    for line in &received {
        let Some((_, payload)) = line.split_once(' ') else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(payload).expect("a JSON payload");
        let sensor = v["sensor"].as_str().expect("sensor").to_string();
        let ts = v["ts"].as_i64().expect("ts");
        for (k, x) in v.as_object().expect("object") {
            if let Some(x) = x.as_f64().filter(|_| k != "ts") {
                got.insert((sensor.clone(), k.clone(), ts), x);
            }
        }
    }

    let text = std::fs::read_to_string(&record).expect("the record file");
    let mut messages = HashSet::new();
    let mut lines = HashSet::new();
    let mut missing = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 4, "record line {line:?}");
        let ts: i64 = f[2].parse().expect("ts");
        let value: f64 = f[3].parse().expect("value");
        assert!(lines.insert(line.to_string()), "{line:?} recorded twice");
        messages.insert((f[0].to_string(), ts));
        let key = (f[0].to_string(), f[1].to_string(), ts);
        if got.get(&key) != Some(&value) {
            missing.push(line.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} recorded readings not received by the subscriber ({} received): {:?}",
        missing.len(),
        lines.len(),
        got.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(sent > 20, "only {sent} messages sent");
    assert_eq!(
        messages.len(),
        sent,
        "every message sent is acknowledged and recorded (persistent session, resent after the restart)"
    );
}
