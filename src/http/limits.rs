//! Limits on what one HTTP client can take: ingest requests per remote address (a token
//! bucket each, 429 with `Retry-After` past it), SSE clients at once (503 past it), and the
//! body size (413; axum's `DefaultBodyLimit` enforces it, this makes its answer JSON and
//! counts it). Every rejection is counted in `citygate_http_rejected_total{reason}`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustc_hash::FxHashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::{ApiError, AppState};
use crate::app::now_ms;
use crate::config::HttpConfig;
use crate::limits::{Rate, TokenBucket};
use crate::telemetry;

/// Most client addresses with a bucket. Past it, the full buckets (clients that have been
/// quiet long enough to have every token back) are forgotten, which changes nothing for them;
/// if every bucket is in use (a spray of addresses), all are forgotten: the limit is lenient
/// for a moment rather than memory growing without bound.
const MAX_TRACKED: usize = 65_536;

/// The HTTP API's limits, built from `[http]`.
pub struct HttpLimits {
    ingest: Option<IpLimiter>,
    sse: Arc<Semaphore>,
    max_sse: usize,
    max_body_bytes: usize,
}

impl HttpLimits {
    pub fn from_config(c: &HttpConfig) -> HttpLimits {
        HttpLimits {
            ingest: Rate::new(c.ingest_rate_per_ip, c.ingest_burst_per_ip).map(IpLimiter::new),
            sse: Arc::new(Semaphore::new(c.max_sse_clients)),
            max_sse: c.max_sse_clients,
            max_body_bytes: c.max_body_bytes,
        }
    }

    /// A place on the SSE stream, held as long as the client stays; `Err` when all are taken.
    pub fn sse_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.sse.clone().try_acquire_owned().map_err(|_| {
            telemetry::record_http_rejected("too_many_sse_clients");
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "too_many_sse_clients",
                message: format!(
                    "the alert stream already has {} clients (http.max_sse_clients); try again later",
                    self.max_sse
                ),
            }
        })
    }
}

struct IpLimiter {
    rate: Rate,
    buckets: Mutex<FxHashMap<IpAddr, TokenBucket>>,
}

impl IpLimiter {
    fn new(rate: Rate) -> IpLimiter {
        IpLimiter {
            rate,
            buckets: Mutex::new(FxHashMap::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FxHashMap<IpAddr, TokenBucket>> {
        // A panic elsewhere while holding it leaves only counts behind: carry on with them.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a token for `ip`, or says how many milliseconds until it has one.
    fn take(&self, ip: IpAddr, now: i64) -> Result<(), u64> {
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, b| !b.is_full(&self.rate, now));
            // Still crowded: forget the least recently seen half. Not everyone at once, which
            // would hand a flooder spraying addresses a fresh burst on every one; and down to
            // half, so that this sweep comes once per MAX_TRACKED / 2 new addresses, not once
            // per address.
            if map.len() > MAX_TRACKED / 4 * 3 {
                warn!(
                    clients = map.len(),
                    "more clients are ingesting than the rate limiter tracks; forgetting the least recently seen half"
                );
                let mut seen: Vec<(i64, IpAddr)> =
                    map.iter().map(|(ip, b)| (b.last_seen(), *ip)).collect();
                let half = seen.len() / 2;
                seen.select_nth_unstable(half);
                for (_, ip) in &seen[..half] {
                    map.remove(ip);
                }
            }
        }
        map.entry(ip)
            .or_insert_with(|| TokenBucket::full(&self.rate, now))
            .take(&self.rate, now)
    }
}

/// The address a client is limited by: its IPv4 address, or its IPv6 /64 (one host usually
/// has a whole /64 to pick addresses from).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Middleware on the ingest routes: one token per request from the client's address.
pub async fn limit_ingest(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limiter) = &st.limits.ingest else {
        return next.run(req).await;
    };
    // Without the peer address (a server started without connect info) every client shares
    // the unspecified address's bucket: stricter, never unlimited.
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match limiter.take(client_key(ip), now_ms()) {
        Ok(()) => next.run(req).await,
        Err(wait_ms) => {
            telemetry::record_http_rejected("rate_limited");
            let retry_after_s = wait_ms.div_ceil(1000).max(1);
            let mut resp = ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: "rate_limited",
                message: format!(
                    "more than http.ingest_rate_per_ip ({} requests/s, burst {}) from this address; retry in {retry_after_s} s",
                    limiter.rate.per_second, limiter.rate.burst
                ),
            }
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            resp
        }
    }
}

/// Turns axum's plain-text 413 (a body over `http.max_body_bytes`) into the API's JSON error,
/// and counts it.
pub async fn body_limit_as_json(State(st): State<AppState>, resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return resp;
    }
    telemetry::record_http_rejected("body_too_large");
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        reason: "body_too_large",
        message: format!(
            "the request body is larger than http.max_body_bytes ({} bytes)",
            st.limits.max_body_bytes
        ),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "192.0.2.7".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn a_spray_of_addresses_does_not_grow_the_table_past_its_bound() {
        let limiter = IpLimiter::new(Rate::new(1.0, 2).expect("a limit"));
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            assert_eq!(limiter.take(ip, 0), Ok(()));
        }
        assert!(limiter.lock().len() <= MAX_TRACKED);
        // one address over its burst is still limited
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(limiter.take(ip, 0), Ok(()));
        assert_eq!(limiter.take(ip, 0), Ok(()));
        assert_eq!(limiter.take(ip, 0), Err(1000));
    }

    /// A sweep of the full table forgets the least recently seen clients, not the flooder
    /// that just spent its burst.
    #[test]
    fn a_full_table_forgets_the_oldest_clients_not_the_busy_one() {
        let limiter = IpLimiter::new(Rate::new(1.0, 2).expect("a limit"));
        let flooder: IpAddr = "198.51.100.1".parse().expect("ip");
        // the table fills at t = 0 with clients that spent their burst (so none is full and
        // free to forget), then the flooder at t = 1 ms
        for i in 0..(MAX_TRACKED as u32 - 1) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            let _ = limiter.take(ip, 0);
            let _ = limiter.take(ip, 0);
        }
        assert_eq!(limiter.take(flooder, 1), Ok(()));
        assert_eq!(limiter.take(flooder, 1), Ok(()));
        assert_eq!(limiter.lock().len(), MAX_TRACKED);
        // a new address makes room: half the table goes, the flooder stays and stays limited
        let newcomer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(limiter.take(newcomer, 2), Ok(()));
        let len = limiter.lock().len();
        assert!(len <= MAX_TRACKED / 2 + 1, "{len} tracked after the sweep");
        assert!(
            limiter.take(flooder, 2).is_err(),
            "the flooder got a fresh burst"
        );
    }
}
