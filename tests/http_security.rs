//! The HTTP API's hardening, against a real gateway over real sockets: a slow-header
//! (slowloris) client and an idle keep-alive connection are closed by the server while normal
//! clients are served, a request whose body never arrives gets 408, HTTPS serves /health to a
//! client that trusts the test CA and refuses plain HTTP, and while the gateway is stopping an
//! ingest gets 503 rather than a hang.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::mosquitto::TestPki;
use common::{start, Api};

/// Far longer than any timeout under test: only a server that never closes fails it.
const DEADLINE: Duration = Duration::from_secs(30);

/// The value of `citygate_http_timeouts_total{kind="<kind>"}` in /metrics (0 if absent).
async fn timeouts(api: &Api, kind: &str) -> u64 {
    let (status, text) = api.get_text("/metrics").await;
    assert_eq!(status, 200, "{text}");
    let prefix = format!("citygate_http_timeouts_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse::<f64>().expect("a number") as u64)
        .unwrap_or(0)
}

/// Reads until the server closes the connection (Ok with what it sent) or the deadline.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Option<Vec<u8>> {
    let until = Instant::now() + deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_client_is_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(
        dir.path(),
        "[http]\nheader_read_timeout = \"1s\"\nidle_timeout = \"20s\"\n",
    )
    .await;
    let api = Api::new(&g);
    let before = timeouts(&api, "header_read").await;

    let mut slow = TcpStream::connect(g.addr()).await.expect("connect");
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: citygate\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(200)
    );
    let until = Instant::now() + DEADLINE;
    let mut sent = 0;
    let mut closed = false;
    let mut served_meanwhile = 0;
    while Instant::now() < until && sent < request.len() {
        if slow
            .write_all(&request.as_bytes()[sent..sent + 1])
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        sent += 1;
        // A normal client is answered while the slow one holds its connection.
        let (status, health) = api.get("/health").await;
        assert_eq!(status, 200, "{health}");
        served_meanwhile += 1;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(250), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!(
                "the server answered a header that never ended: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "the slow client was not cut off ({sent} of {} bytes sent)",
        request.len()
    );
    assert!(sent < request.len(), "the whole header went through");
    assert!(served_meanwhile > 0);
    assert!(
        timeouts(&api, "header_read").await > before,
        "the cut-off is counted"
    );
    g.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(
        dir.path(),
        "[http]\nheader_read_timeout = \"20s\"\nidle_timeout = \"1s\"\n",
    )
    .await;
    let api = Api::new(&g);
    let before = timeouts(&api, "idle").await;
    let mut conn = TcpStream::connect(g.addr()).await.expect("connect");
    conn.write_all(b"GET /ready HTTP/1.1\r\nHost: citygate\r\n\r\n")
        .await
        .expect("send");
    // The answer comes, then nothing more: the server ends the idle connection.
    let got = read_until_closed(&mut conn, DEADLINE)
        .await
        .expect("the idle connection was not closed before the deadline");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        timeouts(&api, "idle").await > before,
        "the close is counted"
    );
    g.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_arrives_gets_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), "[http]\nrequest_timeout = \"1s\"\n").await;
    let api = Api::new(&g);
    let before = timeouts(&api, "request").await;
    let mut conn = TcpStream::connect(g.addr()).await.expect("connect");
    conn.write_all(
        b"POST /api/v1/ingest HTTP/1.1\r\nHost: citygate\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"sensor\"",
    )
    .await
    .expect("send");
    let got = read_until_closed(&mut conn, DEADLINE)
        .await
        .expect("no answer before the deadline");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"reason\":\"request_timeout\""), "{text}");
    assert!(
        timeouts(&api, "request").await > before,
        "the timeout is counted"
    );
    g.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_health_and_refuses_plain_http() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(
        dir.path(),
        &format!(
            "[http.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            pki.cert_file.display().to_string(),
            pki.key_file.display().to_string()
        ),
    )
    .await;
    let port = g.addr().port();
    let _ = common::http_client();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_file).expect("CA file"))
        .expect("CA PEM");
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("TLS client");
    let resp = client
        .get(format!("https://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect("an HTTPS request to a server the test CA signed");
    assert_eq!(resp.status().as_u16(), 200);
    let health: serde_json::Value = resp.json().await.expect("JSON");
    assert!(health.get("status").is_some(), "{health}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = common::http_client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .timeout(DEADLINE)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that does not trust the CA is refused too.
    let untrusted = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.other_ca_file).expect("CA"))
                .expect("PEM"),
        )
        .tls_built_in_root_certs(false)
        .build()
        .expect("client")
        .get(format!("https://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(untrusted.is_err(), "{untrusted:?}");
    g.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_file_fails_the_start_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("cert.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let config = citygate::config::load_with_env(
        &[citygate::config::Source::Text {
            name: "t".into(),
            toml: format!(
                "mqtt = []\n[broker]\nenabled = false\n[gateway]\ndata_dir = {:?}\n[alerts.mqtt]\nenabled = false\n[http.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                dir.path().display().to_string(),
                not_pem.display().to_string(),
                not_pem.display().to_string()
            ),
        }],
        Some(Default::default()),
    )
    .expect("config loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = match citygate::app::Gateway::start(config, Some(listener)).await {
        Ok(_) => panic!("started with a broken certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("http.tls") && err.contains("holds no PEM certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_stopping_ingest_gets_503_and_reads_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), "").await;
    let api = Api::new(&g);
    let t = common::now_ms() - 60_000;
    let body = format!(r#"[{{"sensor":"wl-stop-1","kind":"water_level","ts":{t},"level":1.5}}]"#);
    let (status, receipt) = api
        .post("/api/v1/ingest", "application/json", body.clone())
        .await;
    assert_eq!(
        (status, receipt["accepted"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );
    g.stop_taking_input();
    let (status, answer) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["reason"], "shutting_down");
    let (status, _) = api.get("/health").await;
    assert_eq!(status, 200);
    let db = g.db_path().to_path_buf();
    g.shutdown().await.expect("clean shutdown");
    assert_eq!(
        common::count(
            &db,
            "SELECT count(*) FROM readings WHERE sensor = 'wl-stop-1'"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_cannot_finish_gives_up_after_its_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), "").await;
    // A source that never lets go of its handle keeps the pipeline from draining.
    let held = g.ingest();
    let result = tokio::time::timeout(DEADLINE, g.shutdown_within(Duration::from_secs(1)))
        .await
        .expect("shutdown_within returned before the deadline");
    let err = format!("{:#}", result.expect_err("the shutdown cannot finish"));
    assert!(
        err.contains("did not finish within 1s")
            && err.contains("committing the pipeline's last batches"),
        "{err}"
    );
    drop(held);
}
