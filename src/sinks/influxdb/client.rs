//! One InfluxDB server over HTTP: a write, its outcome classified so that the drain loop knows
//! whether to retry, split, or wait for an operator, and a startup check that says in one
//! sentence what is wrong.
//!
//! A write is one request with a complete body (never streamed), so the same bytes can be
//! sent again after any failure. Redirects are not followed: a write endpoint that redirects
//! (http to https, a moved proxy path) is a wrong `url`, and following it would hide that.

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

use super::config::{InfluxApi, InfluxConfig};
use crate::app::error_chain;
use crate::secret::{Secret, SecretError};
use crate::sources::mqtt::tls::{self, TlsError};

/// Most of an error response kept as its message.
const MESSAGE_MAX: usize = 1024;
/// Most of an error response read at all: a proxy's HTML error page need not be read whole.
const BODY_READ_MAX: usize = 64 * 1024;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid url {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("token: {0}")]
    Token(#[source] SecretError),
    #[error("password: {0}")]
    Password(#[source] SecretError),
    #[error("TLS: {0}")]
    Tls(#[source] TlsError),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("the token holds characters an HTTP header cannot carry (a stray control character?)")]
    TokenNotAHeader,
}

/// A request body, encoded and ready to send; cheap to clone for a retry.
#[derive(Clone, Debug)]
pub struct Body {
    bytes: bytes::Bytes,
    gzipped: bool,
}

/// What became of one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// 400 / 422 (a parse error, a field type conflict, "partial write"): the same body will
    /// never be accepted; the caller splits it to find the bad lines. `message` = the server's
    /// error text (InfluxDB 2 JSON `message`, 1.x JSON `error`, else the body, cut to ~1 KiB).
    Rejected {
        status: u16,
        message: String,
    },
    /// 413: split and resend.
    TooLarge {
        message: String,
    },
    /// Connection refused/reset, timeouts, 5xx, 429: the same body may succeed later.
    /// `reason` is a low-cardinality label: "unreachable", "timeout", "server_error",
    /// "throttled". `retry_after`: the `Retry-After` header (seconds or HTTP date), when
    /// present; a date in the past is zero.
    Retry {
        reason: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    /// 401 / 403.
    Auth {
        status: u16,
        message: String,
    },
    /// 404 (unknown bucket/database/org or wrong URL), a redirect, and any other 4xx: needs
    /// an operator.
    Misconfigured {
        status: u16,
        message: String,
    },
}

/// What the startup check found wrong. Messages name the url, org, bucket or database, never
/// the token or password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("cannot reach {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{url} refused the {credentials} (HTTP {status}): {message}")]
    BadCredentials {
        url: String,
        /// What was refused, e.g. "token from token_env INFLUX_TOKEN".
        credentials: String,
        status: u16,
        message: String,
    },
    #[error("{url} has no organization {org:?}: {message}")]
    UnknownOrg {
        url: String,
        org: String,
        message: String,
    },
    #[error(
        "{url} has no bucket {bucket:?} in organization {org:?} (or the token may not read it)"
    )]
    UnknownBucket {
        url: String,
        org: String,
        bucket: String,
    },
    #[error("{url} has no database {database:?} (or the user may not see it)")]
    UnknownDatabase { url: String, database: String },
    #[error("unexpected answer from {url}: {message}")]
    Unexpected { url: String, message: String },
}

enum Auth {
    None,
    Token(Secret),
    Basic {
        username: String,
        password: Option<Secret>,
    },
}

struct Inner {
    http: reqwest::Client,
    api: InfluxApi,
    /// The base URL, with a trailing slash so that `join` keeps a path prefix.
    base: Url,
    write_url: Url,
    org: String,
    bucket: String,
    database: String,
    retention_policy: Option<String>,
    auth: Auth,
    /// Where the credentials came from, for messages: "token from token_env INFLUX_TOKEN".
    credentials: String,
    gzip: bool,
}

/// A client for one InfluxDB server; cheap to clone. `Debug` never shows the credentials.
#[derive(Clone)]
pub struct InfluxClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for InfluxClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxClient")
            .field("target", &self.describe())
            .field("credentials", &self.inner.credentials)
            .field("gzip", &self.inner.gzip)
            .finish()
    }
}

impl InfluxClient {
    /// Reads the secret; builds reqwest with connect + request timeouts.
    pub fn new(cfg: &InfluxConfig) -> Result<InfluxClient, ClientError> {
        let url_err = |why: String| ClientError::Url {
            url: super::config::redact_url(&cfg.url),
            why,
        };
        let https = super::config::check_url(&cfg.url).map_err(url_err)?;
        let mut base = Url::parse(&cfg.url).map_err(|e| url_err(e.to_string()))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let org = cfg.org.clone().unwrap_or_default();
        let bucket = cfg.bucket.clone().unwrap_or_default();
        let database = cfg.database.clone().unwrap_or_default();
        let (auth, credentials) = match cfg.api {
            InfluxApi::V2 => {
                let source = cfg.token_source();
                match source.read().map_err(ClientError::Token)? {
                    Some(token) => {
                        if HeaderValue::from_str(&format!("Token {}", token.expose())).is_err() {
                            return Err(ClientError::TokenNotAHeader);
                        }
                        (Auth::Token(token), describe_source("token", cfg))
                    }
                    None => (Auth::None, "no token".to_string()),
                }
            }
            InfluxApi::V1 => match &cfg.username {
                Some(username) => {
                    let password = cfg
                        .password_source()
                        .read()
                        .map_err(ClientError::Password)?;
                    let what = if password.is_some() {
                        format!(
                            "user {username:?} with the {}",
                            describe_source("password", cfg)
                        )
                    } else {
                        format!("user {username:?} (no password)")
                    };
                    (
                        Auth::Basic {
                            username: username.clone(),
                            password,
                        },
                        what,
                    )
                }
                None => (Auth::None, "no credentials".to_string()),
            },
        };
        let mut write_url = base
            .join(match cfg.api {
                InfluxApi::V2 => "api/v2/write",
                InfluxApi::V1 => "write",
            })
            .map_err(|e| url_err(e.to_string()))?;
        {
            let mut q = write_url.query_pairs_mut();
            match cfg.api {
                InfluxApi::V2 => {
                    q.append_pair("org", &org).append_pair("bucket", &bucket);
                }
                InfluxApi::V1 => {
                    q.append_pair("db", &database);
                    if let Some(rp) = &cfg.retention_policy {
                        q.append_pair("rp", rp);
                    }
                }
            }
            q.append_pair("precision", "ms");
        }
        let tls = if https {
            let t = cfg.tls.clone().unwrap_or_default();
            tls::client_config(&t, &cfg.name).map_err(ClientError::Tls)?
        } else {
            plain_http_tls()?
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(cfg.connect_timeout.0)
            .timeout(cfg.request_timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("citygate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Http)?;
        Ok(InfluxClient {
            inner: Arc::new(Inner {
                http,
                api: cfg.api,
                base,
                write_url,
                org,
                bucket,
                database,
                retention_policy: cfg.retention_policy.clone(),
                auth,
                credentials,
                gzip: cfg.gzip,
            }),
        })
    }

    /// e.g. "InfluxDB v2 http://host:8086/ org=city bucket=citygate".
    pub fn describe(&self) -> String {
        let i = &self.inner;
        match i.api {
            InfluxApi::V2 => format!("InfluxDB v2 {} org={} bucket={}", i.base, i.org, i.bucket),
            InfluxApi::V1 => match &i.retention_policy {
                Some(rp) => format!("InfluxDB v1 {} db={} rp={rp}", i.base, i.database),
                None => format!("InfluxDB v1 {} db={}", i.base, i.database),
            },
        }
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let req = self.inner.http.request(method, url);
        match &self.inner.auth {
            Auth::None => req,
            Auth::Token(token) => {
                // `new` checked that the token makes a header value.
                let mut value = HeaderValue::from_str(&format!("Token {}", token.expose()))
                    .unwrap_or_else(|_| HeaderValue::from_static("Token"));
                value.set_sensitive(true);
                req.header(AUTHORIZATION, value)
            }
            Auth::Basic { username, password } => {
                req.basic_auth(username, password.as_ref().map(Secret::expose))
            }
        }
    }

    /// POSTs these lines (uncompressed, '\n'-separated) to
    /// /api/v2/write?org=&bucket=&precision=ms (v2, `Authorization: Token …`) or
    /// /write?db=&rp=&precision=ms (v1, basic auth); gzip body with `Content-Encoding: gzip`
    /// when configured (fast level).
    pub async fn write(&self, body: &[u8]) -> WriteOutcome {
        self.send(self.encode(body)).await
    }

    /// Encodes lines into a request body: gzipped when configured. CPU work, so the drain runs
    /// it off the async threads, while the request before is in flight.
    pub fn encode(&self, lines: &[u8]) -> Body {
        match self.inner.gzip.then(|| gzip(lines)) {
            Some(Ok(compressed)) => Body {
                bytes: compressed.into(),
                gzipped: true,
            },
            // Compressing into memory cannot fail; if it somehow did, plain is still right.
            Some(Err(_)) | None => Body {
                bytes: bytes::Bytes::copy_from_slice(lines),
                gzipped: false,
            },
        }
    }

    /// A body already gzipped (an outbox entry as stored), when this client sends gzip.
    pub fn gzipped(&self, gz: Vec<u8>) -> Option<Body> {
        self.inner.gzip.then(|| Body {
            bytes: gz.into(),
            gzipped: true,
        })
    }

    /// POSTs an encoded body (see [`InfluxClient::encode`]).
    pub async fn send(&self, body: Body) -> WriteOutcome {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if body.gzipped {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let payload = body.bytes;
        let sent = self
            .request(Method::POST, self.inner.write_url.clone())
            .headers(headers)
            .body(payload)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return transport_failure(&e),
        };
        let status = response.status();
        if status.is_success() {
            return WriteOutcome::Written;
        }
        let retry_after = retry_after(response.headers());
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let message = error_message(response).await;
        let code = status.as_u16();
        match code {
            400 | 422 => WriteOutcome::Rejected {
                status: code,
                message,
            },
            413 => WriteOutcome::TooLarge { message },
            408 => WriteOutcome::Retry {
                reason: "timeout",
                message,
                retry_after,
            },
            429 => WriteOutcome::Retry {
                reason: "throttled",
                message,
                retry_after,
            },
            401 | 403 => WriteOutcome::Auth {
                status: code,
                message,
            },
            _ if status.is_server_error() => WriteOutcome::Retry {
                reason: "server_error",
                message,
                retry_after,
            },
            _ if status.is_redirection() => WriteOutcome::Misconfigured {
                status: code,
                message: format!(
                    "the server redirects writes to {}; set url to the server itself",
                    location.as_deref().unwrap_or("another address")
                ),
            },
            _ => WriteOutcome::Misconfigured {
                status: code,
                message,
            },
        }
    }

    /// Startup check: is it reachable (v2 GET /health, v1 GET /ping), are the credentials
    /// right, does the bucket/database exist. v2: GET /api/v2/buckets?org=&name= (401/403 =
    /// bad token; 200 with no such bucket = unknown bucket; another 4xx = not served by this
    /// server, e.g. VictoriaMetrics: that part is skipped). v1: /query?q=SHOW DATABASES
    /// (401/403 = bad credentials; database missing = unknown database; not served: skipped).
    pub async fn check(&self) -> Result<(), CheckError> {
        match self.inner.api {
            InfluxApi::V2 => self.check_v2().await,
            InfluxApi::V1 => self.check_v1().await,
        }
    }

    fn url(&self, path: &str) -> Url {
        // `path` is a constant relative path; joining it onto a valid base cannot fail.
        self.inner
            .base
            .join(path)
            .unwrap_or_else(|_| self.inner.base.clone())
    }

    /// GETs `url`; a transport failure is `Unreachable`.
    async fn get(&self, url: &Url) -> Result<(StatusCode, String), CheckError> {
        let response = self
            .request(Method::GET, url.clone())
            .send()
            .await
            .map_err(|e| CheckError::Unreachable {
                url: url.to_string(),
                why: error_chain(&e),
            })?;
        let status = response.status();
        Ok((status, read_body(response).await))
    }

    fn base_str(&self) -> String {
        self.inner.base.to_string()
    }

    fn bad_credentials(&self, status: StatusCode, body: &str) -> CheckError {
        CheckError::BadCredentials {
            url: self.base_str(),
            credentials: self.inner.credentials.clone(),
            status: status.as_u16(),
            message: extract_message(body, status),
        }
    }

    async fn check_v2(&self) -> Result<(), CheckError> {
        let health = self.url("health");
        let (status, body) = self.get(&health).await?;
        if status.is_server_error() {
            return Err(CheckError::Unexpected {
                url: health.to_string(),
                message: format!("unhealthy: {}", extract_message(&body, status)),
            });
        }
        let mut buckets = self.url("api/v2/buckets");
        buckets
            .query_pairs_mut()
            .append_pair("org", &self.inner.org)
            .append_pair("name", &self.inner.bucket);
        let (status, body) = self.get(&buckets).await?;
        match status.as_u16() {
            200 => {
                let Ok(list) = serde_json::from_str::<BucketList>(&body) else {
                    // Not InfluxDB's answer: a compatible server that only writes.
                    return Ok(());
                };
                if list.buckets.iter().any(|b| b.name == self.inner.bucket) {
                    Ok(())
                } else {
                    Err(CheckError::UnknownBucket {
                        url: self.base_str(),
                        org: self.inner.org.clone(),
                        bucket: self.inner.bucket.clone(),
                    })
                }
            }
            401 | 403 => Err(self.bad_credentials(status, &body)),
            404 => {
                let message = extract_message(&body, status);
                // InfluxDB 2 says 404 "organization name \"x\" not found"; a server without
                // the buckets API says 404 too, with no such message.
                if message.contains("organization") {
                    Err(CheckError::UnknownOrg {
                        url: self.base_str(),
                        org: self.inner.org.clone(),
                        message,
                    })
                } else {
                    Ok(())
                }
            }
            _ if status.is_server_error() => Err(CheckError::Unexpected {
                url: buckets.to_string(),
                message: extract_message(&body, status),
            }),
            _ => Ok(()),
        }
    }

    async fn check_v1(&self) -> Result<(), CheckError> {
        let ping = self.url("ping");
        let (status, body) = self.get(&ping).await?;
        match status.as_u16() {
            401 | 403 => return Err(self.bad_credentials(status, &body)),
            _ if !status.is_success() => {
                return Err(CheckError::Unexpected {
                    url: ping.to_string(),
                    message: extract_message(&body, status),
                })
            }
            _ => {}
        }
        let mut query = self.url("query");
        query.query_pairs_mut().append_pair("q", "SHOW DATABASES");
        let (status, body) = self.get(&query).await?;
        match status.as_u16() {
            200 => {
                let Ok(answer) = serde_json::from_str::<QueryAnswer>(&body) else {
                    return Ok(());
                };
                let names = answer
                    .results
                    .iter()
                    .flat_map(|r| &r.series)
                    .flat_map(|s| &s.values)
                    .filter_map(|row| row.first()?.as_str());
                if names.into_iter().any(|n| n == self.inner.database) {
                    Ok(())
                } else {
                    Err(CheckError::UnknownDatabase {
                        url: self.base_str(),
                        database: self.inner.database.clone(),
                    })
                }
            }
            401 | 403 => Err(self.bad_credentials(status, &body)),
            _ if status.is_server_error() => Err(CheckError::Unexpected {
                url: query.to_string(),
                message: extract_message(&body, status),
            }),
            _ => Ok(()),
        }
    }
}

#[derive(serde::Deserialize)]
struct BucketList {
    buckets: Vec<BucketName>,
}

#[derive(serde::Deserialize)]
struct BucketName {
    name: String,
}

#[derive(serde::Deserialize)]
struct QueryAnswer {
    #[serde(default)]
    results: Vec<QueryResult>,
}

#[derive(serde::Deserialize)]
struct QueryResult {
    #[serde(default)]
    series: Vec<QuerySeries>,
}

#[derive(serde::Deserialize)]
struct QuerySeries {
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

fn describe_source(name: &str, cfg: &InfluxConfig) -> String {
    let (env, file) = match name {
        "token" => (&cfg.token_env, &cfg.token_file),
        _ => (&cfg.password_env, &cfg.password_file),
    };
    match (env, file) {
        (Some(var), _) => format!("{name} from {name}_env {var}"),
        (None, Some(path)) => format!("{name} from {name}_file {}", path.display()),
        (None, None) => format!("no {name}"),
    }
}

/// reqwest insists on a TLS configuration even for plain http (it has no provider of its
/// own here); this one is never used, and needs no certificate files or system roots.
pub(crate) fn plain_http_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth())
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

fn transport_failure(e: &reqwest::Error) -> WriteOutcome {
    let reason = if e.is_timeout() {
        "timeout"
    } else {
        "unreachable"
    };
    WriteOutcome::Retry {
        reason,
        message: error_chain(e),
        retry_after: None,
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.timestamp_millis() - crate::app::now_ms();
    Some(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
}

/// Reads at most [`BODY_READ_MAX`] bytes of a response body, lossily as text.
pub(crate) async fn read_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_READ_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                if body.is_empty() {
                    return format!("(the response body could not be read: {})", error_chain(&e));
                }
                break;
            }
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

async fn error_message(response: reqwest::Response) -> String {
    let status = response.status();
    let body = read_body(response).await;
    extract_message(&body, status)
}

/// The server's error text: InfluxDB 2's JSON `message`, 1.x's JSON `error`, else the body;
/// the status line when the body is empty. Cut to about [`MESSAGE_MAX`] bytes.
fn extract_message(body: &str, status: StatusCode) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        error: Option<String>,
    }
    let from_json = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .and_then(|e| e.message.or(e.error));
    let text = match from_json {
        Some(m) => m,
        None if body.trim().is_empty() => format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_string(),
        None => body.trim().to_string(),
    };
    cut(text, MESSAGE_MAX)
}

pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = crate::text::prefix_at_char(&text, max).len();
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_influx_json_or_the_body_and_are_cut() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            extract_message(
                r#"{"code":"invalid","message":"partial write: field type conflict"}"#,
                s
            ),
            "partial write: field type conflict"
        );
        assert_eq!(
            extract_message(r#"{"error":"unable to parse 'x': missing fields"}"#, s),
            "unable to parse 'x': missing fields"
        );
        assert_eq!(extract_message("  plain text\n", s), "plain text");
        assert_eq!(
            extract_message("", StatusCode::NOT_FOUND),
            "HTTP 404 Not Found"
        );
        let long = "清".repeat(1000);
        let m = extract_message(&long, s);
        assert!(m.len() <= MESSAGE_MAX + '…'.len_utf8() && m.ends_with('…'));
        assert!(m.starts_with("清清"));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("120"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date");
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("soon"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn gzip_round_trips() {
        let body = "noise,sensor=n laeq=55 1\n".repeat(100);
        let packed = gzip(body.as_bytes()).expect("gzip");
        let mut unpacked = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&packed[..]),
            &mut unpacked,
        )
        .expect("gunzip");
        assert_eq!(unpacked, body);
        assert!(packed.len() < body.len() / 4);
    }
}
