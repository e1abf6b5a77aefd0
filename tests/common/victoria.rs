//! A real VictoriaMetrics (single node, the Debian package's 1.79) for tests: a free port on
//! 127.0.0.1, a temporary `-storageDataPath`, `restart()` on the same port and data; killed
//! when dropped. It serves InfluxDB's `/api/v2/write`, so it stands in for InfluxDB 2 on the
//! write path; points are read back with `/api/v1/export`.
//!
//! Flags and why:
//! - `-dedup.minScrapeInterval=1ms`: VM keeps every duplicate sample otherwise, and a replayed
//!   point (same series, same timestamp) must be seen once, as InfluxDB would store it.
//! - `-retentionPeriod=100y`: VM silently drops samples older than its retention (default one
//!   month), which would look like data loss in a test with old timestamps.
//!
//! Reading back (measured on 1.79.5): a written point is not visible to `/api/v1/export` for up
//! to a second, for two reasons. New rows sit in a pending buffer until `/internal/force_flush`
//! (or the 1 s flusher), and export's default `end` is "now" rounded down to the second, which
//! hides points from the current second. `export()` therefore flushes first and asks for an
//! `end` far in the future; with both, a point is visible as soon as its write returned 204.
//!
//! VM names a series `<measurement>_<field>` (a field named `value` keeps the measurement
//! name), keeps tags as labels, ignores string fields and treats `db` as a label.
//!
//! Timing, measured with 1.79.5 on the 2 shared cores (5 runs): `start()` answers `/health` in
//! 85-105 ms on an empty data dir and 75-100 ms on `restart()`; `stop()` (SIGTERM, which
//! flushes to disk) takes 15-20 ms with a few points and up to 1.1 s right after a burst.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::mosquitto::free_port;

const NOT_INSTALLED: &str = "victoria-metrics is not installed: install the Debian package victoria-metrics (apt-get install victoria-metrics) or run scripts/test";

/// Far enough ahead that no test timestamp reaches it (2200-01-01, seconds).
const EXPORT_END_SECS: i64 = 7_258_118_400;

/// One series from `/api/v1/export`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `__name__`, e.g. `water_level_level` for measurement `water_level`, field `level`.
    pub name: String,
    /// Every label except `__name__`.
    pub labels: BTreeMap<String, String>,
    pub values: Vec<f64>,
    /// Milliseconds since the epoch, in the order VM returns them (ascending).
    pub timestamps: Vec<i64>,
}

pub struct Victoria {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    client: reqwest::Client,
}

fn victoria_bin() -> PathBuf {
    for p in [
        "/usr/bin/victoria-metrics",
        "/usr/local/bin/victoria-metrics",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    match Command::new("victoria-metrics").arg("-version").output() {
        Ok(_) => PathBuf::from("victoria-metrics"),
        Err(_) => panic!("{NOT_INSTALLED}"),
    }
}

impl Victoria {
    pub async fn start() -> Victoria {
        let dir = tempfile::tempdir().expect("tempdir for victoria-metrics");
        let mut vm = Victoria {
            dir,
            port: free_port(),
            child: None,
            client: super::http_client(),
        };
        vm.spawn().await;
        vm
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("victoria-metrics.log")
    }

    /// The server's own log (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "victoria-metrics is still running");
        let mut cmd = Command::new(victoria_bin());
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-retentionPeriod=100y");
        let child = super::process::spawn_logged(&mut cmd, &self.log_path(), NOT_INSTALLED);
        self.child = Some(child);
        let url = format!("{}/health", self.url());
        let log = self.log_path();
        super::process::wait_answers(
            &self.client,
            &url,
            |s| (200..300).contains(&s),
            &mut self.child,
            "victoria-metrics",
            || std::fs::read_to_string(&log).unwrap_or_default(),
        )
        .await;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `<url>/api/v2/write?org=&bucket=&precision=ms`, where the gateway's InfluxDB 2 sink
    /// writes (VM ignores org and bucket).
    pub fn write_url(&self) -> String {
        format!(
            "{}/api/v2/write?org=citygate&bucket=test&precision=ms",
            self.url()
        )
    }

    /// POSTs line protocol to `write_url()`; returns the status and the body.
    pub async fn write(&self, lines: &str) -> (u16, String) {
        let resp = self
            .client
            .post(self.write_url())
            .body(lines.to_owned())
            .send()
            .await
            .expect("write request to victoria-metrics");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("write answer body"))
    }

    fn signal(&mut self, sig: &str) {
        super::process::signal(&mut self.child, sig);
    }

    /// SIGTERM and wait for the exit: VM flushes its buffers to disk first, so everything it
    /// acknowledged is there after `restart()`. The port refuses connections meanwhile (a
    /// store outage).
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    /// Starts again on the same port with the same data directory (stops it first if running).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Every series matching the PromQL series `selector` (e.g. `{__name__=~"water_level_.*"}`
    /// or `{sensor="wl-1"}`), with the points written before this call.
    pub async fn export(&self, selector: &str) -> Vec<Series> {
        let flush = self
            .client
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await
            .expect("force_flush request");
        assert!(
            flush.status().is_success(),
            "force_flush answered {}",
            flush.status()
        );
        // GET with query parameters: 1.79's documented way; `end` explained in the module docs.
        let resp = self
            .client
            .get(format!("{}/api/v1/export", self.url()))
            .query(&[
                ("match[]", selector.to_owned()),
                ("start", "0".to_owned()),
                ("end", EXPORT_END_SECS.to_string()),
            ])
            .send()
            .await
            .expect("export request");
        let status = resp.status();
        let text = resp.text().await.expect("export body");
        assert!(
            status.is_success(),
            "export of {selector} answered {status}: {text}"
        );
        let mut series: Vec<Series> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_export_line)
            .collect();
        // VM returns series in no stable order.
        series.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        series
    }

    /// The number of samples in every series matching `selector`.
    pub async fn count_samples(&self, selector: &str) -> usize {
        self.export(selector)
            .await
            .iter()
            .map(|s| s.values.len())
            .sum()
    }

    /// Polls `count_samples(selector)` until it reaches `expected` or `deadline` passes;
    /// returns the last count. Only a hang guard: callers assert the exact count.
    pub async fn wait_for_samples(
        &self,
        selector: &str,
        expected: usize,
        deadline: Duration,
    ) -> usize {
        let until = Instant::now() + deadline;
        loop {
            let n = self.count_samples(selector).await;
            if n >= expected || Instant::now() > until {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One JSON line of `/api/v1/export`:
/// `{"metric":{"__name__":"m","k":"v"},"values":[1.5],"timestamps":[1700000000000]}`.
fn parse_export_line(line: &str) -> Series {
    // VM also writes non-finite values bare (`[+Inf]`), which is not JSON: quote them.
    let quoted = ["+Inf", "-Inf", "NaN"]
        .iter()
        .fold(line.to_owned(), |l, t| {
            l.replace(&format!("[{t}"), &format!("[\"{t}\""))
                .replace(&format!(",{t}"), &format!(",\"{t}\""))
        });
    let json: serde_json::Value = serde_json::from_str(&quoted)
        .unwrap_or_else(|e| panic!("export line is not JSON ({e}): {line}"));
    let mut labels: BTreeMap<String, String> = json["metric"]
        .as_object()
        .unwrap_or_else(|| panic!("export line without metric: {line}"))
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("label {k} is not a string: {line}"));
            (k.clone(), v.to_owned())
        })
        .collect();
    let name = labels
        .remove("__name__")
        .unwrap_or_else(|| panic!("export line without __name__: {line}"));
    let values = json["values"]
        .as_array()
        .unwrap_or_else(|| panic!("export line without values: {line}"))
        .iter()
        .map(|v| match v {
            serde_json::Value::Number(n) => n.as_f64().expect("finite number"),
            // VM writes non-finite values as strings ("NaN", "Inf", "-Inf").
            serde_json::Value::String(s) => s
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("value {s:?} is not a number: {line}")),
            other => panic!("value {other} is not a number: {line}"),
        })
        .collect();
    let timestamps = json["timestamps"]
        .as_array()
        .unwrap_or_else(|| panic!("export line without timestamps: {line}"))
        .iter()
        .map(|t| {
            t.as_i64()
                .unwrap_or_else(|| panic!("timestamp {t} is not an integer: {line}"))
        })
        .collect();
    Series {
        name,
        labels,
        values,
        timestamps,
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}
