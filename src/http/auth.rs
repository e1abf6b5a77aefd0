//! Bearer-token auth (`[http.auth]`): changing calls need the token, reads only when
//! `protect_reads`. The token is compared in constant time and never logged.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::counter;

use super::{ApiError, AppState};
use crate::config::AuthConfig;
use crate::secret::{Secret, SecretError};

/// Why the API token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("the API token is only white space")]
    Blank,
}

#[derive(Debug, Default)]
pub struct Auth {
    token: Option<Secret>,
    protect_reads: bool,
}

impl Auth {
    /// Reads the token from its env var or file.
    pub fn from_config(c: &AuthConfig) -> Result<Auth, AuthError> {
        let token = match c.token_source().read()? {
            // Clients send the token trimmed (and it is compared trimmed): a stray space or
            // CR in the file would otherwise make every request a 403.
            Some(t) => match t.expose().trim() {
                "" => return Err(AuthError::Blank),
                trimmed => Some(Secret::new(trimmed)),
            },
            None => None,
        };
        Ok(Auth {
            token,
            protect_reads: c.protect_reads,
        })
    }

    /// True when a token is configured.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request with this method and path needs the token.
    fn guards(&self, method: &Method, path: &str) -> bool {
        if self.token.is_none() {
            return false;
        }
        // Probes, the API's own description and the console's page (which asks for the
        // token) stay open; everything else is data or changes data.
        let open = matches!(path, "/health" | "/ready" | "/api/v1/openapi.json")
            || !(path.starts_with("/api/") || path == "/metrics");
        if open {
            return false;
        }
        let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        !read || self.protect_reads
    }

    /// `Ok` if the request may go on.
    fn check(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .map(|t| t.trim_ascii());
        match presented {
            None => Err(ApiError {
                status: StatusCode::UNAUTHORIZED,
                reason: "unauthorized",
                message: "this call needs `Authorization: Bearer <token>` (see [http.auth])".into(),
            }),
            Some(t) if constant_time_eq(t, token.expose().as_bytes()) => Ok(()),
            Some(_) => Err(ApiError {
                status: StatusCode::FORBIDDEN,
                reason: "forbidden",
                message: "the bearer token is not the configured one".into(),
            }),
        }
    }
}

/// Compares without an early exit, so response times do not tell how much of a guess was
/// right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware in front of every route.
pub async fn require(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.auth.guards(req.method(), req.uri().path()) {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if let Err(e) = st.auth.check(header) {
            counter!("citygate_http_auth_failures_total", "reason" => e.reason).increment(1);
            let unauthorized = e.status == StatusCode::UNAUTHORIZED;
            let mut resp = e.into_response();
            if unauthorized {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            return resp;
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(protect_reads: bool) -> Auth {
        Auth {
            token: Some(Secret::new("s3cret")),
            protect_reads,
        }
    }

    #[test]
    fn changing_calls_need_the_token_reads_only_when_protected() {
        let a = auth(false);
        assert!(a.guards(&Method::POST, "/api/v1/alerts/x/ack"));
        assert!(a.guards(&Method::POST, "/api/v1/ingest"));
        assert!(!a.guards(&Method::GET, "/api/v1/alerts"));
        assert!(!a.guards(&Method::GET, "/"));
        let a = auth(true);
        assert!(a.guards(&Method::GET, "/api/v1/alerts/stream"));
        assert!(a.guards(&Method::GET, "/metrics"));
        assert!(!a.guards(&Method::GET, "/health"));
        assert!(!a.guards(&Method::GET, "/ready"));
        assert!(!a.guards(&Method::GET, "/api/v1/openapi.json"));
        assert!(!a.guards(&Method::GET, "/console/app.js"));
        assert!(!Auth::default().guards(&Method::POST, "/api/v1/ingest"));
    }

    #[test]
    fn the_configured_token_is_trimmed_and_a_blank_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        let config = |text: &str| {
            std::fs::write(&file, text).expect("write");
            AuthConfig {
                token_file: Some(file.clone()),
                ..AuthConfig::default()
            }
        };
        let a = Auth::from_config(&config(" s3cret \r\n")).expect("token");
        assert!(a.check(Some(b"Bearer s3cret")).is_ok());
        assert!(matches!(
            Auth::from_config(&config("  \n")),
            Err(AuthError::Blank)
        ));
    }

    #[test]
    fn no_token_is_401_and_a_wrong_one_403() {
        let a = auth(false);
        assert_eq!(a.check(None).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.check(Some(b"Basic czNjcmV0")).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            a.check(Some(b"Bearer s3cre")).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(a.check(Some(b"Bearer s3cret")).is_ok());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
