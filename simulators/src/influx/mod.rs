//! `citygate-sim influx-write`: POST N readings as line protocol to an InfluxDB-compatible
//! store (VictoriaMetrics, InfluxDB 2) as fast as it takes them, to measure the store's own
//! ingestion rate; or the same readings as citygate JSON to the gateway's HTTP ingest, to
//! fill its outbox. Both are used by `scripts/bench-influx`.
//!
//! Every request body is built (and gzipped) before the clock starts, so the rate measures
//! the server, not the generator: rate = N / time from the first request to the last 2xx.

mod client;
mod lines;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use client::{Connection, Endpoint, PostError, Reply};
pub use lines::{BenchReading, BenchReadings, BodyFormat, REPORT_INTERVAL_MS, VM_SERIES_REGEX};

/// The write path of the benchmark bucket, when the URL names no path.
pub const V2_WRITE_PATH: &str = "/api/v2/write?org=citygate&bucket=bench&precision=ms";
/// The gateway's ingest path, when the URL names no path.
pub const INGEST_PATH: &str = "/api/v1/ingest";

/// What to write and where.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// `http://host:port` (the default path of `format` is added) or a full URL.
    pub url: String,
    pub readings: BenchReadings,
    /// Readings per request.
    pub batch: u64,
    /// Requests in flight, one connection each.
    pub concurrency: usize,
    pub gzip: bool,
    pub format: BodyFormat,
    /// Per request.
    pub timeout: Duration,
}

/// What a write run achieved.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteReport {
    pub lines: u64,
    pub requests: u64,
    /// Request body bytes sent (after gzip).
    pub bytes: u64,
    /// From the first request to the last 2xx.
    pub seconds: f64,
    /// Wall clock (epoch seconds) of the last 2xx.
    pub last_at: f64,
    /// Readings the gateway's receipts counted as accepted and rejected (0 for a store,
    /// which answers 204 with no receipt).
    pub accepted: u64,
    pub rejected: u64,
}

impl WriteReport {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.lines as f64 / self.seconds
        } else {
            0.0
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Post(#[from] PostError),
    #[error("gzip: {0}")]
    Gzip(std::io::Error),
    #[error("--batch and --concurrency must be at least 1")]
    ZeroSize,
    #[error("a writer task failed: {0}")]
    Task(String),
}

/// Builds every request body of the run, in order.
pub fn bodies(opts: &WriteOptions) -> Result<Vec<Vec<u8>>, WriteError> {
    if opts.batch == 0 {
        return Err(WriteError::ZeroSize);
    }
    let r = &opts.readings;
    (0..r.lines)
        .step_by(opts.batch as usize)
        .map(|from| {
            let text = r.body(opts.format, from, (from + opts.batch).min(r.lines));
            if opts.gzip {
                gzip(text.as_bytes()).map_err(WriteError::Gzip)
            } else {
                Ok(text.into_bytes())
            }
        })
        .collect()
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    // The level the gateway's sink uses, so that both sides send the same bytes.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}

/// Sends every body, `concurrency` at a time; stops at the first failure.
pub async fn write(opts: &WriteOptions) -> Result<WriteReport, WriteError> {
    if opts.concurrency == 0 {
        return Err(WriteError::ZeroSize);
    }
    let endpoint = Endpoint::parse(&opts.url)?;
    let path = if endpoint.path == "/" {
        match opts.format {
            BodyFormat::Line => V2_WRITE_PATH.to_string(),
            BodyFormat::Json => INGEST_PATH.to_string(),
        }
    } else {
        endpoint.path.clone()
    };
    let content_type = match opts.format {
        BodyFormat::Line => "text/plain; charset=utf-8",
        BodyFormat::Json => "application/json",
    };
    let bodies = Arc::new(bodies(opts)?);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency {
        let (bodies, next, failed) = (bodies.clone(), next.clone(), failed.clone());
        let mut conn = Connection::new(&endpoint.authority, opts.timeout);
        let (path, gzip) = (path.clone(), opts.gzip);
        tasks.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let encoding = gzip.then_some("gzip");
                match conn.post(&path, content_type, encoding, body).await {
                    Ok(reply) => tally.add(&reply, body.len(), start.elapsed()),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(tally)
        });
    }
    let mut total = Tally::default();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(t)) => total.merge(t),
            Ok(Err(e)) => {
                first_error.get_or_insert(WriteError::Post(e));
            }
            Err(e) => {
                first_error.get_or_insert(WriteError::Task(e.to_string()));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let last_at = now - (start.elapsed() - total.last).as_secs_f64();
    Ok(WriteReport {
        lines: opts.readings.lines,
        requests: total.requests,
        bytes: total.bytes,
        seconds: total.last.as_secs_f64(),
        last_at,
        accepted: total.accepted,
        rejected: total.rejected,
    })
}

/// One writer's count.
#[derive(Default)]
struct Tally {
    requests: u64,
    bytes: u64,
    accepted: u64,
    rejected: u64,
    /// Since the start, when its last 2xx came.
    last: Duration,
}

impl Tally {
    fn add(&mut self, reply: &Reply, bytes: usize, at: Duration) {
        self.requests += 1;
        self.bytes += bytes as u64;
        self.last = self.last.max(at);
        // The gateway answers with a receipt; a store answers 204 with nothing.
        if let Ok(receipt) = serde_json::from_str::<serde_json::Value>(&reply.body) {
            let count = |k: &str| receipt.get(k).and_then(serde_json::Value::as_u64);
            self.accepted += count("accepted").unwrap_or(0);
            self.rejected += count("rejected").unwrap_or(0);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.last = self.last.max(other.last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// One request as a stub server saw it.
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    /// Serves requests on ONE connection, answering each with `reply`, until the client
    /// closes it; returns what it received.
    async fn stub(reply: &'static str) -> (String, tokio::task::JoinHandle<Vec<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let handle = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.expect("accept");
            let mut sock = BufReader::new(sock);
            let mut seen = Vec::new();
            loop {
                let mut head = String::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if sock.read_line(&mut line).await.expect("read") == 0 {
                        return seen;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content length");
                let mut body = vec![0; len];
                sock.read_exact(&mut body).await.expect("body");
                seen.push(Seen { head, body });
                sock.get_mut()
                    .write_all(reply.as_bytes())
                    .await
                    .expect("reply");
            }
        });
        (url, handle)
    }

    fn options(url: String, gzip: bool, format: BodyFormat) -> WriteOptions {
        WriteOptions {
            url,
            readings: BenchReadings {
                lines: 10,
                sensors: 4,
                start_ms: 1_795_305_600_000,
            },
            batch: 4,
            concurrency: 1,
            gzip,
            format,
            timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_gzipped_batches_over_one_connection() {
        let (url, server) = stub("HTTP/1.1 204 No Content\r\n\r\n").await;
        let report = write(&options(url, true, BodyFormat::Line))
            .await
            .expect("write");
        let seen = server.await.expect("server");
        assert_eq!((report.lines, report.requests), (10, 3));
        assert_eq!(seen.len(), 3, "three requests on the one connection");
        assert!(seen[0]
            .head
            .starts_with("POST /api/v2/write?org=citygate&bucket=bench&precision=ms HTTP/1.1\r\n"));
        assert!(seen[0].head.contains("Content-Encoding: gzip\r\n"));
        let mut lines = String::new();
        for s in &seen {
            flate2::read::GzDecoder::new(&s.body[..])
                .read_to_string(&mut lines)
                .expect("gunzip");
        }
        assert_eq!(lines.lines().count(), 10);
        assert_eq!(
            lines.lines().nth(5),
            Some("rainfall,district=清新区,sensor=rf-00001,site=s1 rainfall=0.2,quality=\"good\" 1795305660000")
        );
        assert_eq!(
            report.bytes,
            seen.iter().map(|s| s.body.len() as u64).sum::<u64>()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_the_gateway_receipts() {
        let receipt = r#"{"accepted":3,"rejected":1}"#;
        let reply: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{receipt}",
                receipt.len()
            )
            .into_boxed_str(),
        );
        let (url, server) = stub(reply).await;
        let report = write(&options(url, false, BodyFormat::Json))
            .await
            .expect("write");
        let seen = server.await.expect("server");
        assert!(seen[0].head.starts_with("POST /api/v1/ingest HTTP/1.1\r\n"));
        let first: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("JSON body");
        assert_eq!(first.as_array().map(Vec::len), Some(4));
        assert_eq!((report.accepted, report.rejected), (9, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stops_at_an_error_status_with_its_message() {
        let (url, server) =
            stub("HTTP/1.1 400 Bad Request\r\nContent-Length: 21\r\n\r\nfield type conflict x")
                .await;
        let err = write(&options(url, false, BodyFormat::Line))
            .await
            .expect_err("400");
        let seen = server.await.expect("server");
        assert_eq!(seen.len(), 1, "no request after the failure");
        match err {
            WriteError::Post(PostError::Status { code, body }) => {
                assert_eq!((code, body.as_str()), (400, "field type conflict x"));
            }
            other => panic!("expected HTTP 400, got {other}"),
        }
    }
}
