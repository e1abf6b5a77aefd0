//! `GET /api/v1/alerts/stream`: alerts as Server-Sent Events.
//!
//! A new client gets a `snapshot` of the active set (its id is the last event's seq), then each
//! event as it is committed (`alert`, id = its seq). A client that comes back with
//! `Last-Event-ID: n` gets every event after `n` from the store, in order, then the live ones:
//! no gap and no repeat. One that falls behind the live feed (a slow link) catches up from the
//! store the same way rather than losing events. If `n` is older than the store still keeps
//! (retention), or not one of this store's, the client gets a fresh snapshot instead.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::stream;
use metrics::gauge;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

use super::{ApiError, AppState};
use crate::alerts::{AlertMessage, AlertView};
use crate::sinks::sqlite::SequencedEvent;

/// Events read from the store per query while catching up.
const CATCH_UP_PAGE: usize = 1000;
/// Events queued for one client's socket.
const CLIENT_QUEUE: usize = 256;
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);

pub async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    // Taken before anything else and held by the feed task: the slot frees when the client
    // leaves or the gateway stops.
    let slot = st.limits.sse_slot()?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let (tx, rx) = mpsc::channel::<Event>(CLIENT_QUEUE);
    tokio::spawn(async move {
        let _slot = slot;
        let _client = ClientGauge::new();
        let mut stopping = st.stopping.clone();
        // The feed ends when the client leaves (its queue closes) or the gateway stops: an
        // open stream would otherwise hold the HTTP server's graceful shutdown forever.
        tokio::select! {
            result = feed(&st, last_id, &tx) => if let Err(Gone) = result {
                debug!("SSE client went away");
            },
            _ = tx.closed() => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    });
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<Event, Infallible>(e), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive")))
}

/// The client disconnected (or the gateway is stopping).
struct Gone;

/// Counts connected SSE clients.
struct ClientGauge;

impl ClientGauge {
    fn new() -> ClientGauge {
        gauge!("citygate_sse_clients").increment(1.0);
        ClientGauge
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        gauge!("citygate_sse_clients").decrement(1.0);
    }
}

async fn feed(st: &AppState, last_id: Option<i64>, tx: &mpsc::Sender<Event>) -> Result<(), Gone> {
    // Subscribe first: whatever is committed after this point is on `live`, and whatever
    // before it is in the snapshot or the store, so nothing falls between the two.
    let (snapshot, mut live) = st.hub.subscribe();
    let mut sent = match last_id {
        Some(n) if resumable(st, n, snapshot.seq).await => catch_up(st, n, tx).await?,
        _ => {
            let tags: Vec<_> = snapshot
                .alerts
                .iter()
                .map(|a| st.board.tags(&a.sensor))
                .collect();
            let views: Vec<AlertView<'_>> = snapshot
                .alerts
                .iter()
                .zip(&tags)
                .map(|(a, t)| AlertView::new(a, t.as_ref()))
                .collect();
            let data = json!({ "seq": snapshot.seq, "alerts": views }).to_string();
            send(
                tx,
                Event::default()
                    .event("snapshot")
                    .id(snapshot.seq.to_string())
                    .data(data),
            )
            .await?;
            snapshot.seq
        }
    };
    loop {
        match live.recv().await {
            Ok(e) if e.seq <= sent => {}
            Ok(e) if e.seq == sent + 1 => {
                send(tx, event(st, &e)).await?;
                sent = e.seq;
            }
            // A gap: the live feed got ahead of what was sent (possible right after a store
            // catch-up); the store has it all.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                sent = catch_up(st, sent, tx).await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Err(Gone),
        }
    }
}

/// Whether every event after `n` (up to the snapshot's `head`) is still in the store.
async fn resumable(st: &AppState, n: i64, head: i64) -> bool {
    if n < 0 || n > head {
        return false;
    }
    let reader = st.reader.clone();
    matches!(
        tokio::task::spawn_blocking(move || reader.alert_events_complete(n, head)).await,
        Ok(Ok(true))
    )
}

/// Sends every stored event after `from`, in order; returns the last seq sent.
async fn catch_up(st: &AppState, from: i64, tx: &mpsc::Sender<Event>) -> Result<i64, Gone> {
    let mut sent = from;
    loop {
        let reader = st.reader.clone();
        let page =
            tokio::task::spawn_blocking(move || reader.alert_events_after(sent, CATCH_UP_PAGE))
                .await;
        let page = match page {
            Ok(Ok(p)) => p,
            // The store cannot be read now: end the stream; the client reconnects with its
            // Last-Event-ID and resumes where it was.
            _ => return Err(Gone),
        };
        let full = page.len() == CATCH_UP_PAGE;
        for e in &page {
            send(tx, event(st, e)).await?;
            sent = e.seq;
        }
        if !full {
            return Ok(sent);
        }
    }
}

fn event(st: &AppState, e: &SequencedEvent) -> Event {
    let tags = st.board.tags(&e.event.alert.sensor);
    let msg = AlertMessage::new(e.seq, &e.event, tags.as_ref());
    Event::default()
        .event("alert")
        .id(e.seq.to_string())
        .data(msg.to_json())
}

async fn send(tx: &mpsc::Sender<Event>, e: Event) -> Result<(), Gone> {
    tx.send(e).await.map_err(|_| Gone)
}
