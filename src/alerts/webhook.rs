//! `[[alerts.webhooks]]`: every alert event POSTed as one AlertMessage JSON, in `seq` order,
//! signed with HMAC-SHA256 so that the receiver can tell it came from this gateway.
//!
//! Headers: `X-Citygate-Signature: sha256=<hex HMAC of the exact body>`, `X-Citygate-Event`,
//! `X-Citygate-Seq` (the receiver's idempotency key: a retry or a restart can send an event
//! again, never skip one), `User-Agent: citygate/<version>`.
//!
//! | answer | what happens |
//! |---|---|
//! | 2xx | delivered |
//! | 5xx, 429, 408, timeout, connection error | retried with backoff (`Retry-After` honoured, at least `retry_min`) |
//! | 401, 403, 404, 410, a redirect | logged as an error, retried every `auth_retry`; the event is kept |
//! | any other 4xx | the receiver refuses this event for good: a `webhook_rejected` dead letter, and on |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::output::{
    count_delivery, message_json, record_delivery_seconds, wanted, AlertOutput, Common, Deliver,
    Delivered, Drain, Failure, OutputStatus, RetryPolicy, State,
};
use crate::app::{error_chain, now_ms};
use crate::config::{ConfigProblem, Dur};
use crate::model::{DeadLetter, Severity};
use crate::secret::{SecretError, SecretSource};
use crate::sinks::influxdb::client::{cut, plain_http_tls, read_body, retry_after};
use crate::sinks::influxdb::config::{parse_http_url, redact_url};
use crate::sinks::sqlite::SequencedEvent;
use crate::sources::mqtt::config::TlsConfig;
use crate::sources::mqtt::tls::{self, TlsError};

/// The dead-letter reason of an event a receiver refused for good.
pub const WEBHOOK_REJECTED: &str = "webhook_rejected";

/// Most of a refusal's response body kept in its dead letter.
const SNIPPET_MAX: usize = 512;

/// One webhook receiver.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A short name for logs, metrics and /health; unique among webhooks (it keys the
    /// webhook's delivery cursor, so renaming one starts it afresh at the newest event).
    pub name: String,
    /// Where events are POSTed: `http://` or `https://`. Credentials in it (basic auth) are
    /// sent but never logged.
    pub url: String,
    /// Name of the environment variable that holds the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File that holds the signing secret (a trailing newline is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Events of alerts below this severity are not sent (info, warning, major, critical).
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Limit on one request, from connecting to the end of the response.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// First delay after a temporary failure (5xx, 429, 408, timeout, connection error); it
    /// doubles, with jitter, up to `retry_max`. A `Retry-After` takes precedence.
    #[serde(default = "default_retry_min")]
    pub retry_min: Dur,
    /// Longest delay between retries.
    #[serde(default = "default_retry_max")]
    pub retry_max: Dur,
    /// Delay between retries after 401/403/404/410 or a redirect: these need an operator, so
    /// they are retried slowly and logged loudly; the events are kept.
    #[serde(default = "default_auth_retry")]
    pub auth_retry: Dur,
    /// TLS settings for an `https://` url: a CA file, a client certificate. Unset: system roots.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

pub(crate) fn default_min_severity() -> Severity {
    Severity::Info
}
fn default_timeout() -> Dur {
    Dur::secs(10)
}
fn default_retry_min() -> Dur {
    Dur::secs(1)
}
fn default_retry_max() -> Dur {
    Dur::secs(60)
}
fn default_auth_retry() -> Dur {
    Dur::secs(60)
}

impl WebhookConfig {
    fn secret_source(&self) -> SecretSource<'_> {
        SecretSource {
            name: "secret",
            env: self.secret_env.as_deref(),
            file: self.secret_file.as_deref(),
        }
    }

    /// Every problem serde cannot see, each at its key path under `at`
    /// (`alerts.webhooks[0]`). Name uniqueness is the caller's check.
    pub fn validate(&self, at: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut push = |key: &str, message: String| {
            problems.push(ConfigProblem {
                path: format!("{at}.{key}"),
                message,
            })
        };
        if self.name.trim().is_empty() {
            push("name", "must not be empty".into());
        }
        match check_url(&self.url) {
            Err(why) => push(
                "url",
                format!("invalid url {:?}: {why}", redact_webhook_url(&self.url)),
            ),
            Ok(false) if self.tls.is_some() => push(
                "tls",
                "is set but the url is http:// (use https:// for TLS)".into(),
            ),
            Ok(_) => {}
        }
        let secret = self.secret_source();
        if !secret.is_set() {
            push(
                "secret_env",
                "a webhook needs a signing secret: set secret_env or secret_file".into(),
            );
        }
        for (key, message) in secret.problems() {
            push(&key, message);
        }
        for (key, d) in [
            ("timeout", self.timeout),
            ("retry_min", self.retry_min),
            ("auth_retry", self.auth_retry),
        ] {
            if d.0.is_zero() {
                push(key, "must be longer than 0s".into());
            }
        }
        if self.retry_min.0 > self.retry_max.0 {
            push(
                "retry_max",
                format!("must not be shorter than retry_min ({})", self.retry_min),
            );
        }
        problems
    }
}

/// `Ok(true)` for https.
fn check_url(url: &str) -> Result<bool, String> {
    parse_http_url(url).map(|(_, https)| https)
}

/// Why a webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid url {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("secret: {0}")]
    Secret(#[source] SecretError),
    #[error("no signing secret: set secret_env or secret_file")]
    NoSecret,
    #[error("TLS: {0}")]
    Tls(#[source] TlsError),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// `sha256=<lowercase hex HMAC-SHA256 of body>`.
pub fn signature(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// What an HTTP status means for the event that got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Delivered,
    /// Try the same event again after a backoff.
    Retry(&'static str),
    /// An operator must act; the event is kept.
    Misconfigured,
    /// The receiver will never take this event.
    Rejected,
}

fn classify(status: reqwest::StatusCode) -> Answer {
    match status.as_u16() {
        _ if status.is_success() => Answer::Delivered,
        408 => Answer::Retry("timeout"),
        429 => Answer::Retry("throttled"),
        401 | 403 | 404 | 410 => Answer::Misconfigured,
        _ if status.is_server_error() => Answer::Retry("server_error"),
        _ if status.is_client_error() => Answer::Rejected,
        // A redirect (not followed: the url is wrong) or an informational answer.
        _ => Answer::Misconfigured,
    }
}

struct Webhook {
    output: String,
    http: reqwest::Client,
    url: Url,
    target: String,
    key: hmac::Key,
    min: Severity,
    common: Arc<Common>,
}

impl Webhook {
    fn new(cfg: &WebhookConfig, output: String, common: Arc<Common>) -> Result<Self, WebhookError> {
        let url_err = |why: String| WebhookError::Url {
            url: redact_webhook_url(&cfg.url),
            why,
        };
        let (url, https) = parse_http_url(&cfg.url).map_err(url_err)?;
        let secret = cfg
            .secret_source()
            .read()
            .map_err(WebhookError::Secret)?
            .ok_or(WebhookError::NoSecret)?;
        let tls = if https {
            let t = cfg.tls.clone().unwrap_or_default();
            tls::client_config(&t, &output).map_err(WebhookError::Tls)?
        } else {
            plain_http_tls()?
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(cfg.timeout.0.min(Duration::from_secs(10)))
            .timeout(cfg.timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("citygate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookError::Http)?;
        Ok(Webhook {
            output,
            http,
            url,
            target: redact_webhook_url(&cfg.url),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()),
            min: cfg.min_severity,
            common,
        })
    }

    /// POSTs one event; `Ok` when the event is done (delivered or dead-lettered).
    async fn post(&self, e: &SequencedEvent) -> Result<Option<DeadLetter>, Failure> {
        let body = Bytes::from(message_json(e, &self.common.board));
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let sig = signature(&self.key, &body);
        for (name, value) in [
            ("x-citygate-signature", sig),
            ("x-citygate-event", e.event.event.as_str().to_string()),
            ("x-citygate-seq", e.seq.to_string()),
        ] {
            // Hex, an event name and a number: always valid header values.
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        let started = Instant::now();
        let sent = self
            .http
            .post(self.url.clone())
            .headers(headers)
            .body(body.clone())
            .send()
            .await;
        record_delivery_seconds(&self.output, started.elapsed().as_secs_f64());
        let response = match sent {
            Ok(r) => r,
            Err(err) => {
                let timeout = err.is_timeout();
                return Err(Failure {
                    state: if timeout {
                        State::Retrying
                    } else {
                        State::Down
                    },
                    result: if timeout { "timeout" } else { "unreachable" },
                    // The target is already redacted; reqwest's own url is left out.
                    message: format!("{}: {}", self.target, error_chain(&err.without_url())),
                    retry_after: None,
                });
            }
        };
        let status = response.status();
        let answer = classify(status);
        if answer == Answer::Delivered {
            return Ok(None);
        }
        let wait = retry_after(response.headers());
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let snippet = cut(read_body(response).await.trim().to_string(), SNIPPET_MAX);
        let said = format!(
            "{} answered HTTP {} to event {}{}{}",
            self.target,
            status.as_u16(),
            e.seq,
            if snippet.is_empty() { "" } else { ": " },
            snippet
        );
        match answer {
            Answer::Delivered => Ok(None),
            Answer::Retry(result) => Err(Failure {
                state: State::Retrying,
                result,
                message: said,
                retry_after: wait,
            }),
            Answer::Misconfigured => Err(Failure {
                state: State::Misconfigured,
                result: "misconfigured",
                message: match location {
                    Some(to) => format!("{said} (redirects to {to}; set url to the final address)"),
                    None => said,
                },
                retry_after: None,
            }),
            Answer::Rejected => {
                tracing::warn!(output = %self.output, seq = e.seq, error = %said,
                    "the webhook refused an alert event for good; kept as a dead letter");
                let a = &e.event.alert;
                Ok(Some(DeadLetter {
                    received_at: now_ms(),
                    source: self.output.as_str().into(),
                    reason: WEBHOOK_REJECTED,
                    detail: said,
                    sensor: Some(a.sensor.clone()),
                    metric: Some(a.metric.clone()),
                    value: Some(a.value),
                    ts: Some(e.event.at),
                    raw: body,
                }))
            }
        }
    }
}

/// The webhook's [`Deliver`]: one POST at a time, in order (a receiver may rely on order).
struct WebhookDeliver(Arc<Webhook>);

impl Deliver for WebhookDeliver {
    fn deliver(
        &mut self,
        events: Arc<[SequencedEvent]>,
    ) -> impl std::future::Future<Output = Delivered> + Send + 'static {
        let hook = self.0.clone();
        async move { hook.deliver_page(&events).await }
    }
}

impl Webhook {
    async fn deliver_page(&self, events: &[SequencedEvent]) -> Delivered {
        let mut out = Delivered::default();
        for e in events {
            if !wanted(e, self.min) {
                out.done += 1;
                continue;
            }
            match self.post(e).await {
                Ok(None) => {
                    count_delivery(&self.output, "delivered", 1);
                    out.sent += 1;
                }
                Ok(Some(dead)) => {
                    count_delivery(&self.output, "rejected", 1);
                    out.dead_letters.push(dead);
                }
                Err(f) => {
                    out.failure = Some(f);
                    return out;
                }
            }
            out.done += 1;
        }
        out
    }
}

/// Reads the secret and builds the client (a missing secret or TLS file fails here), then
/// starts the webhook's drain from `cursor`.
pub(crate) fn start(
    cfg: &WebhookConfig,
    common: Arc<Common>,
    conn: rusqlite::Connection,
    cursor: i64,
) -> Result<AlertOutput, WebhookError> {
    let output = super::output::webhook_output(&cfg.name);
    let hook = Webhook::new(cfg, output.clone(), common.clone())?;
    let status = Arc::new(OutputStatus::new(
        &output,
        "webhook",
        hook.target.clone(),
        common.hub.clone(),
        cursor,
        None,
    ));
    tracing::info!(output = %output, url = %hook.target, min_severity = %cfg.min_severity, "delivering alerts to a webhook");
    let (stop, stopped) = watch::channel(false);
    let drain = Drain {
        deliver: WebhookDeliver(Arc::new(hook)),
        status: status.clone(),
        conn: Arc::new(std::sync::Mutex::new(conn)),
        common,
        retry: RetryPolicy {
            min: cfg.retry_min.0,
            max: cfg.retry_max.0,
            misconfigured: cfg.auth_retry.0,
        },
        stop: stopped,
    };
    let task = tokio::spawn(drain.run());
    Ok(AlertOutput::new(status, stop, vec![task]))
}

/// A webhook url as logs, `/health` and errors show it. Chat services put the hook's secret in
/// the query (DingTalk's `access_token=`, WeCom's `key=`) or in a long path segment (Feishu,
/// Slack): the query goes, and so does every path segment of 16 characters or more, besides
/// any `user:password@`. What is left still tells which service and which endpoint.
pub(crate) fn redact_webhook_url(url: &str) -> String {
    let url = redact_url(url);
    let (rest, had_query) = match url.split_once(['?', '#']) {
        Some((rest, _)) => (rest, true),
        None => (url.as_str(), false),
    };
    let path_start = rest
        .find("://")
        .map(|i| i + 3)
        .and_then(|h| rest[h..].find('/').map(|p| h + p));
    let mut out = match path_start {
        None => rest.to_string(),
        Some(p) => {
            let path: Vec<&str> = rest[p + 1..]
                .split('/')
                .map(|seg| if seg.len() >= 16 { "<redacted>" } else { seg })
                .collect();
            format!("{}/{}", &rest[..p], path.join("/"))
        }
    };
    if had_query {
        out.push_str("?<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_lose_their_secrets_for_display() {
        for (url, shown) in [
            (
                "https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef",
                "https://oapi.dingtalk.com/robot/send?<redacted>",
            ),
            (
                "https://open.feishu.cn/open-apis/bot/v2/hook/4e0b2f5c-0a1b-4c2d-9e8f-1234567890ab",
                "https://open.feishu.cn/open-apis/bot/v2/hook/<redacted>",
            ),
            (
                "https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX",
                "https://hooks.slack.com/services/T0001/B0002/<redacted>",
            ),
            (
                "http://ops:hunter2@alerts.example.org:9000/hook",
                "http://<redacted>@alerts.example.org:9000/hook",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(redact_webhook_url(url), shown, "{url}");
        }
    }
    use reqwest::StatusCode;

    #[test]
    fn the_signature_is_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn statuses_fall_into_the_documented_classes() {
        let class = |code: u16| classify(StatusCode::from_u16(code).expect("status"));
        for code in [200, 201, 202, 204] {
            assert_eq!(class(code), Answer::Delivered, "{code}");
        }
        for code in [500, 502, 503, 504] {
            assert_eq!(class(code), Answer::Retry("server_error"), "{code}");
        }
        assert_eq!(class(429), Answer::Retry("throttled"));
        assert_eq!(class(408), Answer::Retry("timeout"));
        for code in [401, 403, 404, 410, 301, 302, 307] {
            assert_eq!(class(code), Answer::Misconfigured, "{code}");
        }
        for code in [400, 409, 413, 415, 422] {
            assert_eq!(class(code), Answer::Rejected, "{code}");
        }
    }

    #[test]
    fn config_problems_name_their_keys_and_hide_credentials() {
        let cfg: WebhookConfig = serde_json::from_value(serde_json::json!({
            "name": " ", "url": "ftp://user:pw@hooks.example/x",
            "timeout": "0s", "retry_min": "10s", "retry_max": "1s"
        }))
        .expect("parses");
        let problems: Vec<String> = cfg
            .validate("alerts.webhooks[0]")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "alerts.webhooks[0].name: must not be empty",
                "alerts.webhooks[0].url: invalid url \"ftp://<redacted>@hooks.example/x\": the scheme must be http:// or https://, not ftp://",
                "alerts.webhooks[0].secret_env: a webhook needs a signing secret: set secret_env or secret_file",
                "alerts.webhooks[0].timeout: must be longer than 0s",
                "alerts.webhooks[0].retry_max: must not be shorter than retry_min (10s)",
            ]
        );
    }
}
