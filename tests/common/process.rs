//! What the harness's server processes (mosquitto, VictoriaMetrics, InfluxDB 1.x) share:
//! stopping with a signal, and waiting until one answers over HTTP.
#![allow(dead_code)]

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `cmd` with its stdout and stderr appended to `log` (appending keeps the log of earlier
/// runs across restarts); panics with `not_installed` (an install hint) when it cannot start.
pub fn spawn_logged(cmd: &mut Command, log: &Path, not_installed: &str) -> Child {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log handle"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{not_installed} ({e})"))
}

/// Sends `sig` (`"-TERM"`, `"-KILL"`) to the child, if it runs, and waits for it to exit.
pub fn signal(child: &mut Option<Child>, sig: &str) {
    if let Some(mut c) = child.take() {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(c.id().to_string())
            .status();
        let _ = c.wait();
    }
}

/// Polls `GET url` until its status passes `ok`. Panics, with the server's log, when the
/// child exits first or after 30 s (a failure guard, not a timing check).
pub async fn wait_answers(
    client: &reqwest::Client,
    url: &str,
    ok: impl Fn(u16) -> bool,
    child: &mut Option<Child>,
    what: &str,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.get(url).timeout(Duration::from_secs(2)).send().await;
        if matches!(&answer, Ok(r) if ok(r.status().as_u16())) {
            return;
        }
        if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
            *child = None;
            panic!(
                "{what} exited ({status}) before answering {url}; log:\n{}",
                log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not answer {url}; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
