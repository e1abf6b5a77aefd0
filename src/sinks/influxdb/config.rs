//! `[[sinks.influxdb]]`: one InfluxDB (or compatible) store written over HTTP.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigProblem, Dur};
use crate::secret::SecretSource;
use crate::sources::mqtt::config::TlsConfig;

/// Which write API the server speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InfluxApi {
    /// `/api/v2/write` with org, bucket and a token: InfluxDB 2/3, VictoriaMetrics, QuestDB,
    /// GreptimeDB.
    #[default]
    #[serde(rename = "v2")]
    V2,
    /// `/write?db=&rp=` with basic auth: InfluxDB 1.x and the tools that speak its API.
    #[serde(rename = "v1")]
    V1,
}

impl InfluxApi {
    pub fn as_str(self) -> &'static str {
        match self {
            InfluxApi::V2 => "v2",
            InfluxApi::V1 => "v1",
        }
    }
}

/// One InfluxDB sink.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// A short name for logs, metrics labels and /health; unique among sinks.
    #[serde(default = "default_name")]
    pub name: String,
    /// Base URL, `http://` or `https://`; may carry a path prefix when the server sits behind
    /// a reverse proxy (`https://host/influx`). No credentials in it.
    pub url: String,
    /// `v2` (default) or `v1`.
    #[serde(default)]
    pub api: InfluxApi,
    /// v2: the organization.
    #[serde(default)]
    pub org: Option<String>,
    /// v2: the bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// v2: name of the environment variable that holds the API token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// v2: file that holds the API token (a trailing newline is ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// v1: the database.
    #[serde(default)]
    pub database: Option<String>,
    /// v1: the retention policy; unset: the database's default.
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// v1: user name for basic auth, if the server has auth enabled.
    #[serde(default)]
    pub username: Option<String>,
    /// v1: name of the environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// v1: file that holds the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Most lines per write request.
    #[serde(default = "default_batch_max_lines")]
    pub batch_max_lines: usize,
    /// Most bytes per write request, counted before compression.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Longest a partial batch (below `batch_max_lines`/`batch_max_bytes`) waits for more
    /// lines. At most one partial batch is written per interval; the first after a quiet
    /// interval is written at once.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: Dur,
    /// Limit on establishing the TCP (and TLS) connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Limit on one whole write request, from sending to the end of the response.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// First delay after a retryable failure (5xx, 429, timeout, unreachable); it doubles,
    /// with jitter, up to `retry_max`. A server's `Retry-After` takes precedence.
    #[serde(default = "default_retry_min")]
    pub retry_min: Dur,
    /// Longest delay between retries.
    #[serde(default = "default_retry_max")]
    pub retry_max: Dur,
    /// Delay between retries after 401/403/404 (bad token, unknown bucket): these need an
    /// operator, so they are retried slowly and logged loudly, and the data is kept.
    #[serde(default = "default_auth_retry")]
    pub auth_retry: Dur,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    #[serde(default = "default_gzip")]
    pub gzip: bool,
    /// TLS settings for `https://` URLs: CA file, client certificate. Unset: system roots.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_name() -> String {
    "influxdb".into()
}
fn default_batch_max_lines() -> usize {
    5000
}
fn default_batch_max_bytes() -> usize {
    1024 * 1024
}
fn default_flush_interval() -> Dur {
    Dur::secs(1)
}
fn default_connect_timeout() -> Dur {
    Dur::secs(5)
}
fn default_request_timeout() -> Dur {
    Dur::secs(30)
}
fn default_retry_min() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_retry_max() -> Dur {
    Dur::secs(60)
}
fn default_auth_retry() -> Dur {
    Dur::secs(60)
}
fn default_gzip() -> bool {
    true
}

impl InfluxConfig {
    pub(crate) fn token_source(&self) -> SecretSource<'_> {
        SecretSource {
            name: "token",
            env: self.token_env.as_deref(),
            file: self.token_file.as_deref(),
        }
    }

    pub(crate) fn password_source(&self) -> SecretSource<'_> {
        SecretSource {
            name: "password",
            env: self.password_env.as_deref(),
            file: self.password_file.as_deref(),
        }
    }

    /// Every problem serde cannot see, each at its key path under `at`
    /// (`sinks.influxdb[0]`). Name uniqueness across sinks is the caller's check.
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
                format!("invalid url {:?}: {why}", redact_url(&self.url)),
            ),
            Ok(https) => {
                if self.tls.is_some() && !https {
                    push(
                        "tls",
                        "is set but the url is http:// (use https:// for TLS)".into(),
                    );
                }
            }
        }
        let missing = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        let (token, password) = (self.token_source(), self.password_source());
        match self.api {
            InfluxApi::V2 => {
                if missing(&self.org) {
                    push("org", "is required with api = \"v2\"".into());
                }
                if missing(&self.bucket) {
                    push("bucket", "is required with api = \"v2\"".into());
                }
                if !token.is_set() {
                    push(
                        "token_env",
                        "api = \"v2\" needs a token: set token_env or token_file".into(),
                    );
                }
                for (key, value) in [
                    ("database", self.database.is_some()),
                    ("retention_policy", self.retention_policy.is_some()),
                    ("username", self.username.is_some()),
                    ("password_env", self.password_env.is_some()),
                    ("password_file", self.password_file.is_some()),
                ] {
                    if value {
                        push(key, "is for api = \"v1\"; this sink is v2".into());
                    }
                }
            }
            InfluxApi::V1 => {
                if missing(&self.database) {
                    push("database", "is required with api = \"v1\"".into());
                }
                if password.is_set() && self.username.is_none() {
                    push("username", "is required when a password is set".into());
                }
                for (key, value) in [
                    ("org", self.org.is_some()),
                    ("bucket", self.bucket.is_some()),
                    ("token_env", self.token_env.is_some()),
                    ("token_file", self.token_file.is_some()),
                ] {
                    if value {
                        push(key, "is for api = \"v2\"; this sink is v1".into());
                    }
                }
            }
        }
        for (key, message) in token.problems().into_iter().chain(password.problems()) {
            push(&key, message);
        }
        if self.batch_max_lines == 0 {
            push("batch_max_lines", "must be at least 1".into());
        }
        if self.batch_max_bytes == 0 {
            push("batch_max_bytes", "must be at least 1".into());
        }
        for (key, d) in [
            ("flush_interval", self.flush_interval),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
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

/// Checks a base URL; `Ok(true)` for https.
/// The url with any `user:password@` replaced, for messages: a password typed into the url by
/// mistake must not reach the log.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let host_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..host_end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// Parses an http:// or https:// url with a host; `true` for https. Shared by every
/// outbound HTTP client (sinks, webhooks), which add their own rules.
pub(crate) fn parse_http_url(url: &str) -> Result<(reqwest::Url, bool), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(format!(
                "the scheme must be http:// or https://, not {other}://"
            ))
        }
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the host is missing".into());
    }
    Ok((parsed, https))
}

pub(crate) fn check_url(url: &str) -> Result<bool, String> {
    let (parsed, https) = parse_http_url(url)?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "put credentials in token_env/token_file (v2) or username/password_env (v1), not in the url"
                .into(),
        );
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(
            "the url must not have a query or fragment: it is the base of /api/v2/write and /write"
                .into(),
        );
    }
    Ok(https)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> InfluxConfig {
        serde_json::from_value(json).expect("valid config")
    }

    fn problems(cfg: &InfluxConfig) -> Vec<String> {
        cfg.validate("sinks.influxdb[0]")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_fill_everything_but_the_url() {
        let cfg = parse(serde_json::json!({
            "url": "http://127.0.0.1:8086", "org": "city", "bucket": "b", "token_env": "T"
        }));
        assert_eq!(cfg.name, "influxdb");
        assert_eq!(cfg.api, InfluxApi::V2);
        assert_eq!((cfg.batch_max_lines, cfg.batch_max_bytes), (5000, 1 << 20));
        assert_eq!(cfg.flush_interval, Dur::secs(1));
        assert_eq!(cfg.connect_timeout, Dur::secs(5));
        assert_eq!(cfg.request_timeout, Dur::secs(30));
        assert_eq!(cfg.retry_min, Dur(Duration::from_millis(500)));
        assert_eq!(
            (cfg.retry_max, cfg.auth_retry),
            (Dur::secs(60), Dur::secs(60))
        );
        assert!(cfg.gzip && cfg.tls.is_none());
        assert_eq!(problems(&cfg), Vec::<String>::new());
    }

    #[test]
    fn durations_and_api_parse_the_human_way() {
        let cfg = parse(serde_json::json!({
            "url": "https://db.example/influx", "api": "v1", "database": "citygate",
            "retry_min": "250ms", "retry_max": "2m", "tls": { "insecure": true }
        }));
        assert_eq!(cfg.api, InfluxApi::V1);
        assert_eq!(cfg.retry_min, Dur(Duration::from_millis(250)));
        assert_eq!(cfg.retry_max, Dur::secs(120));
        assert_eq!(problems(&cfg), Vec::<String>::new());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<InfluxConfig>(serde_json::json!({
            "url": "http://h:8086", "tokn_env": "T"
        }))
        .expect_err("unknown key");
        assert!(
            err.to_string().contains("unknown field `tokn_env`"),
            "{err}"
        );
    }

    #[test]
    fn v2_reports_every_missing_piece_at_its_key() {
        let cfg = parse(serde_json::json!({
            "url": "ftp://user:pw@h", "org": " ", "database": "x",
            "batch_max_lines": 0, "batch_max_bytes": 0, "request_timeout": "0s",
            "retry_min": "10s", "retry_max": "1s"
        }));
        assert_eq!(
            problems(&cfg),
            [
                "sinks.influxdb[0].url: invalid url \"ftp://<redacted>@h\": the scheme must be http:// or https://, not ftp://",
                "sinks.influxdb[0].org: is required with api = \"v2\"",
                "sinks.influxdb[0].bucket: is required with api = \"v2\"",
                "sinks.influxdb[0].token_env: api = \"v2\" needs a token: set token_env or token_file",
                "sinks.influxdb[0].database: is for api = \"v1\"; this sink is v2",
                "sinks.influxdb[0].batch_max_lines: must be at least 1",
                "sinks.influxdb[0].batch_max_bytes: must be at least 1",
                "sinks.influxdb[0].request_timeout: must be longer than 0s",
                "sinks.influxdb[0].retry_max: must not be shorter than retry_min (10s)",
            ]
        );
    }

    #[test]
    fn v1_needs_a_database_and_a_user_for_its_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = parse(serde_json::json!({
            "url": "http://h:8086/", "api": "v1", "bucket": "b",
            "password_env": "PW", "password_file": dir.path().join("nope"),
        }));
        let missing = dir.path().join("nope");
        assert_eq!(
            problems(&cfg),
            [
                "sinks.influxdb[0].database: is required with api = \"v1\"".to_string(),
                "sinks.influxdb[0].username: is required when a password is set".into(),
                "sinks.influxdb[0].bucket: is for api = \"v2\"; this sink is v1".into(),
                "sinks.influxdb[0].password_file: set password_env or password_file, not both"
                    .into(),
                format!(
                    "sinks.influxdb[0].password_file: cannot read {}: No such file or directory (os error 2)",
                    missing.display()
                ),
            ]
        );
    }

    #[test]
    fn urls_with_credentials_queries_or_no_host_are_refused() {
        assert_eq!(check_url("http://127.0.0.1:8086"), Ok(false));
        assert_eq!(check_url("https://h/prefix/"), Ok(true));
        for (url, why) in [
            ("http://u:p@h:8086", "put credentials in"),
            ("http://h:8086/?db=x", "must not have a query"),
            ("h:8086", "the scheme must be"),
            ("not a url", "relative URL without a base"),
        ] {
            let err = check_url(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn tls_on_plain_http_is_a_mistake() {
        let cfg = parse(serde_json::json!({
            "url": "http://h:8086", "org": "o", "bucket": "b", "token_env": "T", "tls": {}
        }));
        assert_eq!(
            problems(&cfg),
            ["sinks.influxdb[0].tls: is set but the url is http:// (use https:// for TLS)"]
        );
    }
}
