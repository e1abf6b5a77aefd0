//! The InfluxDB HTTP client against an in-process stub: what it sends (path, query, auth,
//! gzip) and how it classifies each answer. Real servers (VictoriaMetrics, InfluxDB 1.x) are
//! exercised by the sink's end-to-end tests; these are about status codes.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use citygate::sinks::influxdb::client::{CheckError, InfluxClient, WriteOutcome};
use citygate::sinks::influxdb::config::InfluxConfig;

const TOKEN: &str = "tok-3f9a-SECRET";

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct StubState {
    /// Replies by path; a path not listed gets 404.
    replies: HashMap<String, Reply>,
    seen: Vec<Seen>,
}

#[derive(Clone, Default)]
struct Stub(Arc<Mutex<StubState>>);

impl Stub {
    fn set(&self, path: &str, r: Reply) {
        self.0
            .lock()
            .expect("stub lock")
            .replies
            .insert(path.to_string(), r);
    }

    fn seen(&self) -> Vec<Seen> {
        self.0.lock().expect("stub lock").seen.clone()
    }
}

async fn any(
    State(stub): State<Stub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri
        .query()
        .map(|q| url_pairs(q).into_iter().collect::<Vec<(String, String)>>())
        .unwrap_or_default();
    let r = {
        let mut s = stub.0.lock().expect("stub lock");
        s.seen.push(Seen {
            method,
            path: uri.path().to_string(),
            query,
            headers,
            body,
        });
        s.replies
            .get(uri.path())
            .cloned()
            .unwrap_or_else(|| reply(404, ""))
    };
    tokio::time::sleep(r.delay).await;
    let mut response = (
        StatusCode::from_u16(r.status).expect("valid status"),
        r.body,
    )
        .into_response();
    for (k, v) in r.headers {
        response
            .headers_mut()
            .insert(k, v.parse().expect("header value"));
    }
    response
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{q}"))
        .expect("query")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Starts a stub on a free port; returns it and its base URL.
async fn start_stub() -> (Stub, String) {
    let stub = Stub::default();
    let app = axum::Router::new().fallback(any).with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (stub, format!("http://{addr}"))
}

fn token_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    path
}

fn v2_config(url: &str, dir: &Path) -> InfluxConfig {
    serde_json::from_value(serde_json::json!({
        "url": url, "org": "city", "bucket": "citygate",
        "token_file": token_file(dir), "request_timeout": "2s"
    }))
    .expect("config")
}

fn v1_config(url: &str, dir: &Path) -> InfluxConfig {
    let pw = dir.join("pw");
    std::fs::write(&pw, "pw\n").expect("write pw");
    serde_json::from_value(serde_json::json!({
        "url": url, "api": "v1", "database": "citygate", "retention_policy": "autogen",
        "username": "citygate", "password_file": pw, "gzip": false
    }))
    .expect("config")
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

const LINES: &str = "noise,district=清城区,sensor=nz-1 laeq=55.5,quality=\"good\" 1767225600000\n\
                     flow,sensor=f-1 flow=3.2,quality=\"good\" 1767225600000\n";

#[tokio::test]
async fn v2_write_posts_gzipped_lines_with_a_token_under_the_path_prefix() {
    let (stub, base) = start_stub().await;
    stub.set("/influx/api/v2/write", reply(204, ""));
    let dir = tempfile::tempdir().expect("tempdir");
    let client =
        InfluxClient::new(&v2_config(&format!("{base}/influx"), dir.path())).expect("client");
    assert_eq!(client.write(LINES.as_bytes()).await, WriteOutcome::Written);

    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, Method::POST);
    assert_eq!(s.path, "/influx/api/v2/write");
    assert_eq!(
        s.query,
        [("org", "city"), ("bucket", "citygate"), ("precision", "ms")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        header(s, "authorization"),
        Some(format!("Token {TOKEN}").as_str())
    );
    assert_eq!(header(s, "content-encoding"), Some("gzip"));
    let mut body = String::new();
    flate2::read::GzDecoder::new(&s.body[..])
        .read_to_string(&mut body)
        .expect("gzip body");
    assert_eq!(body, LINES);
    assert_eq!(
        client.describe(),
        format!("InfluxDB v2 {base}/influx/ org=city bucket=citygate")
    );
}

#[tokio::test]
async fn v1_write_uses_db_rp_and_basic_auth_and_a_plain_body() {
    let (stub, base) = start_stub().await;
    stub.set("/write", reply(204, ""));
    let dir = tempfile::tempdir().expect("tempdir");
    let client = InfluxClient::new(&v1_config(&base, dir.path())).expect("client");
    assert_eq!(client.write(LINES.as_bytes()).await, WriteOutcome::Written);
    let seen = stub.seen();
    let s = &seen[0];
    assert_eq!(s.path, "/write");
    assert_eq!(
        s.query,
        [("db", "citygate"), ("rp", "autogen"), ("precision", "ms")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    // base64("citygate:pw")
    assert_eq!(header(s, "authorization"), Some("Basic Y2l0eWdhdGU6cHc="));
    assert_eq!(header(s, "content-encoding"), None);
    assert_eq!(&s.body[..], LINES.as_bytes());
}

#[tokio::test]
async fn every_status_class_maps_to_its_outcome() {
    let (stub, base) = start_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = InfluxClient::new(&v2_config(&base, dir.path())).expect("client");
    let with_header = |status, body: &str, name, value: &str| Reply {
        headers: vec![(name, value.to_string())],
        ..reply(status, body)
    };
    let cases = [
        (reply(204, ""), WriteOutcome::Written),
        (reply(200, "ok"), WriteOutcome::Written),
        (
            reply(
                400,
                r#"{"code":"invalid","message":"partial write: field type conflict: input field \"laeq\" on measurement \"noise\" is type string, already exists as type float dropped=1"}"#,
            ),
            WriteOutcome::Rejected {
                status: 400,
                message: "partial write: field type conflict: input field \"laeq\" on measurement \"noise\" is type string, already exists as type float dropped=1".into(),
            },
        ),
        (
            reply(422, r#"{"code":"unprocessable entity","message":"failure writing points"}"#),
            WriteOutcome::Rejected {
                status: 422,
                message: "failure writing points".into(),
            },
        ),
        (
            reply(413, r#"{"code":"request too large","message":"unable to read data: points batch is too large"}"#),
            WriteOutcome::TooLarge {
                message: "unable to read data: points batch is too large".into(),
            },
        ),
        (
            with_header(429, "slow down", "retry-after", "7"),
            WriteOutcome::Retry {
                reason: "throttled",
                message: "slow down".into(),
                retry_after: Some(Duration::from_secs(7)),
            },
        ),
        (
            reply(500, r#"{"code":"internal error","message":"engine: cache full"}"#),
            WriteOutcome::Retry {
                reason: "server_error",
                message: "engine: cache full".into(),
                retry_after: None,
            },
        ),
        (
            with_header(503, "", "retry-after", "30"),
            WriteOutcome::Retry {
                reason: "server_error",
                message: "HTTP 503 Service Unavailable".into(),
                retry_after: Some(Duration::from_secs(30)),
            },
        ),
        (
            reply(401, r#"{"code":"unauthorized","message":"unauthorized access"}"#),
            WriteOutcome::Auth {
                status: 401,
                message: "unauthorized access".into(),
            },
        ),
        (
            reply(403, r#"{"error":"user is not authorized to write to database"}"#),
            WriteOutcome::Auth {
                status: 403,
                message: "user is not authorized to write to database".into(),
            },
        ),
        (
            reply(404, r#"{"code":"not found","message":"bucket \"citygate\" not found"}"#),
            WriteOutcome::Misconfigured {
                status: 404,
                message: "bucket \"citygate\" not found".into(),
            },
        ),
        (
            reply(405, "method not allowed"),
            WriteOutcome::Misconfigured {
                status: 405,
                message: "method not allowed".into(),
            },
        ),
        (
            with_header(308, "", "location", "https://db.example/api/v2/write"),
            WriteOutcome::Misconfigured {
                status: 308,
                message: "the server redirects writes to https://db.example/api/v2/write; set url to the server itself".into(),
            },
        ),
    ];
    for (r, want) in cases {
        let status = r.status;
        stub.set("/api/v2/write", r);
        assert_eq!(client.write(b"m f=1 1\n").await, want, "HTTP {status}");
    }
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_the_time_until_it() {
    let (stub, base) = start_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = InfluxClient::new(&v2_config(&base, dir.path())).expect("client");
    let at = chrono::Utc::now() + chrono::Duration::seconds(120);
    stub.set(
        "/api/v2/write",
        Reply {
            headers: vec![(
                "retry-after",
                at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            )],
            ..reply(503, "")
        },
    );
    match client.write(b"m f=1 1\n").await {
        WriteOutcome::Retry {
            reason: "server_error",
            retry_after: Some(d),
            ..
        } => assert!(
            d > Duration::from_secs(60) && d <= Duration::from_secs(120),
            "{d:?}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_slower_than_request_timeout_is_a_timeout_retry() {
    let (stub, base) = start_stub().await;
    stub.set(
        "/api/v2/write",
        Reply {
            delay: Duration::from_secs(30),
            ..reply(204, "")
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = v2_config(&base, dir.path());
    cfg.request_timeout = citygate::config::Dur(Duration::from_millis(200));
    let client = InfluxClient::new(&cfg).expect("client");
    match client.write(b"m f=1 1\n").await {
        WriteOutcome::Retry {
            reason, message, ..
        } => {
            assert_eq!(reason, "timeout", "{message}");
            assert!(!message.contains(TOKEN));
        }
        other => panic!("{other:?}"),
    }
}

async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn a_closed_port_is_an_unreachable_retry_and_fails_the_check() {
    let url = closed_port_url().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = InfluxClient::new(&v2_config(&url, dir.path())).expect("client");
    match client.write(b"m f=1 1\n").await {
        WriteOutcome::Retry {
            reason,
            retry_after,
            message,
        } => {
            assert_eq!((reason, retry_after), ("unreachable", None), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match client.check().await {
        Err(CheckError::Unreachable { url: at, why }) => {
            assert_eq!(at, format!("{url}/health"));
            assert!(!why.contains(TOKEN));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn v2_check_tells_bad_token_unknown_org_and_unknown_bucket_apart() {
    let (stub, base) = start_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = InfluxClient::new(&v2_config(&base, dir.path())).expect("client");
    stub.set("/health", reply(200, r#"{"status":"pass"}"#));

    stub.set(
        "/api/v2/buckets",
        reply(200, r#"{"buckets":[{"id":"1","name":"citygate"}]}"#),
    );
    assert_eq!(client.check().await, Ok(()));
    let buckets = stub
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/v2/buckets")
        .expect("asked for buckets");
    assert_eq!(
        buckets.query,
        [("org", "city"), ("name", "citygate")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        header(&buckets, "authorization"),
        Some(format!("Token {TOKEN}").as_str())
    );

    stub.set("/api/v2/buckets", reply(200, r#"{"buckets":[]}"#));
    let err = client.check().await.expect_err("unknown bucket");
    assert_eq!(
        err,
        CheckError::UnknownBucket {
            url: format!("{base}/"),
            org: "city".into(),
            bucket: "citygate".into()
        }
    );
    assert_eq!(
        err.to_string(),
        format!("{base}/ has no bucket \"citygate\" in organization \"city\" (or the token may not read it)")
    );

    stub.set(
        "/api/v2/buckets",
        reply(
            401,
            r#"{"code":"unauthorized","message":"unauthorized access"}"#,
        ),
    );
    let err = client.check().await.expect_err("bad token");
    let token_path = dir.path().join("token");
    assert_eq!(
        err.to_string(),
        format!(
            "{base}/ refused the token from token_file {} (HTTP 401): unauthorized access",
            token_path.display()
        )
    );

    stub.set(
        "/api/v2/buckets",
        reply(
            404,
            r#"{"code":"not found","message":"organization name \"city\" not found"}"#,
        ),
    );
    assert!(matches!(
        client.check().await,
        Err(CheckError::UnknownOrg { ref org, .. }) if org == "city"
    ));

    // A write-only server (VictoriaMetrics) has no buckets API: that part is skipped.
    stub.set("/api/v2/buckets", reply(404, "unsupported path requested"));
    assert_eq!(client.check().await, Ok(()));
    stub.set(
        "/api/v2/buckets",
        reply(400, "unsupported path requested: \"/api/v2/buckets\""),
    );
    assert_eq!(client.check().await, Ok(()));

    stub.set(
        "/health",
        reply(503, r#"{"status":"fail","message":"starting"}"#),
    );
    assert!(matches!(
        client.check().await,
        Err(CheckError::Unexpected { ref message, .. }) if message == "unhealthy: starting"
    ));
}

#[tokio::test]
async fn v1_check_tells_bad_credentials_and_unknown_database_apart() {
    let (stub, base) = start_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = InfluxClient::new(&v1_config(&base, dir.path())).expect("client");
    stub.set("/ping", reply(204, ""));
    let databases = |names: &[&str]| {
        let values: Vec<serde_json::Value> = names.iter().map(|n| serde_json::json!([n])).collect();
        serde_json::json!({"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":values}]}]}).to_string()
    };

    stub.set("/query", reply(200, &databases(&["_internal", "citygate"])));
    assert_eq!(client.check().await, Ok(()));
    let q = stub
        .seen()
        .into_iter()
        .find(|s| s.path == "/query")
        .expect("queried");
    assert_eq!(q.query, [("q".to_string(), "SHOW DATABASES".to_string())]);
    assert_eq!(header(&q, "authorization"), Some("Basic Y2l0eWdhdGU6cHc="));

    stub.set("/query", reply(200, &databases(&["_internal"])));
    assert_eq!(
        client.check().await,
        Err(CheckError::UnknownDatabase {
            url: format!("{base}/"),
            database: "citygate".into()
        })
    );

    stub.set("/query", reply(401, r#"{"error":"authorization failed"}"#));
    let err = client.check().await.expect_err("bad password");
    assert!(
        err.to_string().starts_with(&format!(
            "{base}/ refused the user \"citygate\" with the password from password_file "
        )),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("(HTTP 401): authorization failed"),
        "{err}"
    );
}

#[tokio::test]
async fn neither_debug_nor_any_message_shows_the_token() {
    let (stub, base) = start_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = InfluxClient::new(&v2_config(&base, dir.path())).expect("client");
    let debug = format!("{client:?} {:?}", client.clone());
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("token_file"), "{debug}");
    assert!(!client.describe().contains(TOKEN));

    // A server that echoes the request does not count: the client's own text never has it.
    stub.set("/health", reply(200, ""));
    stub.set("/api/v2/buckets", reply(403, r#"{"message":"forbidden"}"#));
    let err = client.check().await.expect_err("forbidden");
    assert!(!format!("{err} {err:?}").contains(TOKEN), "{err:?}");
    stub.set("/api/v2/write", reply(401, ""));
    let outcome = client.write(b"m f=1 1\n").await;
    assert_eq!(
        outcome,
        WriteOutcome::Auth {
            status: 401,
            message: "HTTP 401 Unauthorized".into()
        }
    );
    assert!(!format!("{outcome:?}").contains(TOKEN));

    // A missing token file names the file, and an unset variable names the variable.
    let mut cfg = v2_config(&base, dir.path());
    cfg.token_file = Some(dir.path().join("nope"));
    let err = InfluxClient::new(&cfg).expect_err("missing token file");
    assert!(
        err.to_string().starts_with(&format!(
            "token: cannot read {}",
            dir.path().join("nope").display()
        )),
        "{err}"
    );
    cfg.token_file = None;
    cfg.token_env = Some("CITYGATE_TEST_INFLUX_TOKEN_UNSET_91C2".into());
    let err = InfluxClient::new(&cfg).expect_err("unset env");
    assert_eq!(
        err.to_string(),
        "token: environment variable CITYGATE_TEST_INFLUX_TOKEN_UNSET_91C2 is not set"
    );
}
