//! The HTTP API's serving loop: hyper's HTTP/1.1 connection driver under the axum router,
//! with what `axum::serve` does not offer: a header-read timeout (a slowloris client that
//! sends its header a byte at a time is cut off), a whole-request timeout, an idle keep-alive
//! timeout, TLS (rustls on the ring provider, like the MQTT client), and a draining mode in
//! which changing calls get 503 while the gateway shuts down.
//!
//! Every connection is its own task. On stop the listener closes, each connection finishes
//! the request it is serving and closes, and after a grace period whatever is left is dropped.

use std::convert::Infallible;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::{Json, Router};
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::counter;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::config::{HttpConfig, HttpTlsConfig};

/// Why the HTTPS setup failed. Names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum ServeTlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds a malformed PEM certificate (http.tls.cert_file): {source}", path.display())]
    BadCertificate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate (http.tls.cert_file)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1) (http.tls.key_file)", path.display())]
    NoKey { path: PathBuf },
    #[error("the certificate and key do not make a TLS server: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, ServeTlsError> {
    std::fs::read(path).map_err(|source| ServeTlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the TLS acceptor from `[http.tls]`, at startup, so that a missing or broken file
/// stops the gateway with a clear error rather than failing every handshake.
pub fn tls_acceptor(cfg: &HttpTlsConfig) -> Result<TlsAcceptor, ServeTlsError> {
    let pem = read(&cfg.cert_file)?;
    // A malformed certificate fails the start: skipping it would serve a broken chain that
    // every client refuses.
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(&pem[..]))
        .collect::<Result<_, _>>()
        .map_err(|source| ServeTlsError::BadCertificate {
            path: cfg.cert_file.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServeTlsError::NoCertificate {
            path: cfg.cert_file.clone(),
        });
    }
    let pem = read(&cfg.key_file)?;
    let key = match rustls_pemfile::private_key(&mut BufReader::new(&pem[..])) {
        Ok(Some(k)) => k,
        _ => {
            return Err(ServeTlsError::NoKey {
                path: cfg.key_file.clone(),
            })
        }
    };
    // The provider is named, not taken from the process default, so that a second rustls
    // provider enabled by some other crate cannot make the builder ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // Only HTTP/1.1 is served: the timeouts above are HTTP/1.1's.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// How the loop serves.
#[derive(Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls: Option<TlsAcceptor>,
}

impl ServeOptions {
    /// The options `[http]` asks for, with the TLS acceptor built if `[http.tls]` is set.
    pub fn from_config(cfg: &HttpConfig) -> Result<ServeOptions, ServeTlsError> {
        Ok(ServeOptions {
            max_connections: cfg.max_connections,
            header_read_timeout: cfg.header_read_timeout.0,
            request_timeout: cfg.request_timeout.0,
            idle_timeout: cfg.idle_timeout.0,
            tls: cfg.tls.as_ref().map(tls_acceptor).transpose()?,
        })
    }
}

/// The signals the gateway's shutdown sends, in order: `draining` (changing calls get 503,
/// reads are still served), `release` (the router, and with it every handle into the
/// pipeline, is let go so that the pipeline can drain; every call gets 503 from then on),
/// and `stop` (the listener closes, connections finish and close). Between `release` and
/// `stop` the gateway commits and flushes, and a client gets a quick 503 rather than a
/// refused connection or a hang.
pub struct Signals {
    pub draining: watch::Receiver<bool>,
    pub release: watch::Receiver<bool>,
    pub stop: watch::Receiver<bool>,
}

struct Shared {
    /// `None` once released.
    router: std::sync::RwLock<Option<Router>>,
    opts: ServeOptions,
    draining: watch::Receiver<bool>,
}

/// Serves `router` on `listener` until `signals.stop` turns true, then waits (at most the
/// request timeout) for the requests in progress to finish.
pub async fn serve(listener: TcpListener, router: Router, opts: ServeOptions, signals: Signals) {
    let shared = Arc::new(Shared {
        router: std::sync::RwLock::new(Some(router)),
        opts,
        draining: signals.draining,
    });
    let mut stop = signals.stop.clone();
    let mut release = signals.release;
    let mut released = false;
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut release), if !released => {
                released = true;
                *shared.router.write().unwrap_or_else(|e| e.into_inner()) = None;
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    counter!("citygate_http_connections_total").increment(1);
                    // Finished connections not yet joined must not count against the cap.
                    while conns.try_join_next().is_some() {}
                    if conns.len() >= shared.opts.max_connections {
                        refuse(tcp, shared.opts.tls.is_some());
                        continue;
                    }
                    conns.spawn(connection(tcp, peer, shared.clone(), signals.stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close rather
                    // than spin on the error.
                    warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let grace = shared.opts.request_timeout + Duration::from_secs(1);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            connections = conns.len(),
            "HTTP connections still open after the grace period are dropped"
        );
        conns.abort_all();
    }
}

/// Answers a connection over `http.max_connections` with a 503 and closes it. The answer is
/// written only if the socket takes it at once (a fresh socket's buffer always has room for
/// it), so a client that does not read costs nothing; over TLS there is no handshake to spend
/// on it, so it is just closed. The write goes through the std socket: tokio's `try_write`
/// refuses without trying when its readiness for the new socket is not known yet, which
/// under load closed some refused connections without a word.
fn refuse(tcp: TcpStream, tls: bool) {
    crate::telemetry::record_http_rejected("too_many_connections");
    if !tls {
        const BODY: &str = r#"{"error":"too many HTTP connections (http.max_connections); try again later","reason":"too_many_connections"}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        if let Ok(mut std_tcp) = tcp.into_std() {
            // Still non-blocking, as tokio left it.
            let _ = std::io::Write::write(&mut std_tcp, answer.as_bytes());
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone), holding no borrow of the value.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    match shared.opts.tls.clone() {
        None => drive(tcp, peer, shared, stop).await,
        Some(acceptor) => {
            // The handshake is part of "sending the request header": a client that stalls
            // in it is cut off on the same clock.
            match tokio::time::timeout(shared.opts.header_read_timeout, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => drive(tls, peer, shared, stop).await,
                Ok(Err(e)) => {
                    counter!("citygate_http_tls_handshake_errors_total").increment(1);
                    debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    counter!("citygate_http_timeouts_total", "kind" => "tls_handshake")
                        .increment(1);
                    debug!(%peer, "TLS handshake timed out");
                }
            }
        }
    }
}

/// What the idle check needs to know about a connection.
struct Activity {
    born: Instant,
    /// Milliseconds since `born` of the last byte read or written.
    last_ms: AtomicU64,
    /// Requests whose response (body included) is not finished.
    in_flight: AtomicUsize,
    /// A byte came in since the last response ended: a request is on its way. hyper's
    /// header clock also runs while a keep-alive connection waits for its next request, so
    /// this tells a slow header (slowloris) from a connection that is merely idle.
    heard: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One request in flight, until its response body is done or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.heard.store(false, Ordering::Relaxed);
        self.0.touch();
    }
}

async fn drive<IO>(io: IO, peer: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        born: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        heard: AtomicBool::new(false),
    });
    let io = Tracked {
        inner: io,
        activity: activity.clone(),
    };
    let service = {
        let activity = activity.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |req| handle(req, peer, shared.clone(), activity.begin()))
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.opts.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = shared.opts.idle_timeout;
    let mut check =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A response no byte of which has moved for this long has a client that stopped reading
    // (a GET bigger than the socket buffers): the connection is dropped, since a graceful
    // close would wait for that response forever. Longer than the request timeout,
    // so a slow handler gets its 408 first, and than two SSE keepalives, so a reading SSE
    // client always shows progress. While stopping, a second is enough.
    let stall = (shared.opts.request_timeout + idle).max(2 * super::stream::KEEPALIVE);
    let mut closing = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    if e.is_timeout() && activity.heard.load(Ordering::Relaxed) {
                        counter!("citygate_http_timeouts_total", "kind" => "header_read").increment(1);
                        debug!(%peer, "closed a connection that did not send its request header in time");
                    } else if e.is_timeout() {
                        counter!("citygate_http_timeouts_total", "kind" => "idle").increment(1);
                    } else {
                        debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                break;
            }
            _ = check.tick() => {
                let in_flight = activity.in_flight.load(Ordering::Relaxed);
                let quiet = activity.idle_for();
                let stalled_after = if closing { Duration::from_secs(1) } else { stall };
                if in_flight > 0 && quiet >= stalled_after {
                    counter!("citygate_http_timeouts_total", "kind" => "response_stalled").increment(1);
                    debug!(%peer, "dropped a connection whose client stopped reading its response");
                    break;
                }
                if !closing && in_flight == 0 && quiet >= idle {
                    counter!("citygate_http_timeouts_total", "kind" => "idle").increment(1);
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = stopped(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    in_flight: InFlight,
) -> Result<Response<Body>, Infallible> {
    let mut req = req.map(Body::new);
    // What `into_make_service_with_connect_info` would give: handlers may extract the peer.
    req.extensions_mut().insert(ConnectInfo(peer));
    let draining = *shared.draining.borrow();
    let router = if draining && !matches!(*req.method(), Method::GET | Method::HEAD) {
        None
    } else {
        shared
            .router
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    };
    let response = if let Some(mut router) = router {
        match tokio::time::timeout(
            shared.opts.request_timeout,
            tower_service::Service::call(&mut router, req),
        )
        .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => {
                counter!("citygate_http_timeouts_total", "kind" => "request").increment(1);
                (
                    StatusCode::REQUEST_TIMEOUT,
                    [(axum::http::header::CONNECTION, "close")],
                    Json(json!({
                        "error": format!(
                            "the request was not completed within {:?} (http.request_timeout)",
                            shared.opts.request_timeout
                        ),
                        "reason": "request_timeout",
                    })),
                )
                    .into_response()
            }
        }
    } else {
        counter!("citygate_http_refused_while_stopping_total").increment(1);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            Json(json!({
                "error": "the gateway is shutting down; send this again later",
                "reason": "shutting_down",
            })),
        )
            .into_response()
    };
    let mut response = response;
    if draining {
        // No keep-alive while stopping: a client that reused an idle connection just as the
        // listener closed would get a reset and not know whether its POST was taken.
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    Ok(response.map(|body| {
        Body::new(Guarded {
            inner: body,
            _in_flight: in_flight,
        })
    }))
}

/// A response body that holds its request's [`InFlight`] until it is done, so that a long
/// response (the SSE stream) does not count as an idle connection.
struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's stream, noting every byte that moves for the idle check.
struct Tracked<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.heard.store(true, Ordering::Relaxed);
            self.activity.touch();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
