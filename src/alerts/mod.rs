//! Alert delivery: the hub every output follows, and the JSON they all send.
//!
//! ```text
//! store thread ──commit──► alert_events (SQLite, seq) ──► outputs drain from their own cursor
//!      │                                                    (mqtt, webhook: nothing lost)
//!      └──publish──► AlertHub ──► SSE clients (live; a client that falls behind or resumes
//!                      │            with Last-Event-ID catches up from alert_events)
//!                      └──► head seq (watch): wakes the outputs
//! ```
//! The store's `alert_events.seq` orders everything: it is the SSE event id, the outputs'
//! cursor and the `seq` of every message. An event is published only after it is committed,
//! so no output can announce an alert that a crash would take back.

pub mod message;
pub mod mqtt;
pub mod output;
pub mod webhook;

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};

use crate::model::{Alert, AlertEvent, AlertState};
use crate::sinks::sqlite::SequencedEvent;

pub use message::{AlertMessage, AlertView};

/// Live events kept for slow SSE clients before they are told they lagged (they then catch up
/// from the store, so a lag costs a query, not an event).
const LIVE_CAPACITY: usize = 4096;

/// The active alerts and the newest committed event, shared by the store thread (writer) and
/// the outputs and SSE clients (readers).
pub struct AlertHub {
    state: Mutex<HubState>,
    live: broadcast::Sender<Arc<SequencedEvent>>,
    head: watch::Sender<i64>,
}

struct HubState {
    head: i64,
    /// The committed state of each active alert: the same allocation the pipeline and the
    /// board hold, keyed by the alert's own id (no copy of it).
    active: BTreeSet<ById>,
}

/// An active alert ordered and looked up by its id.
struct ById(Arc<Alert>);

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &ById) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &ById) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &ById) -> std::cmp::Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

/// The active set as of one event: everything after `seq` is news.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub seq: i64,
    /// Oldest first.
    pub alerts: Vec<Arc<Alert>>,
}

impl AlertHub {
    /// A hub starting from the store's state: its last event `head` and the active alerts.
    pub fn new(head: i64, active: Vec<Arc<Alert>>) -> AlertHub {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let (head_tx, _) = watch::channel(head);
        AlertHub {
            state: Mutex::new(HubState {
                head,
                active: active.into_iter().map(ById).collect(),
            }),
            live,
            head: head_tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Every update leaves the state whole before it can panic; a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in a commit: `alerts`, the committed state of the alerts it changed (the active
    /// set follows them, as the store's alerts table does), and its events, announced live;
    /// `last_seq` is the store's sequence number of the last event (they are consecutive, see
    /// `CommitStats::last_event_seq`), `None` when there are none.
    pub fn publish(&self, alerts: &[Arc<Alert>], last_seq: Option<i64>, events: &[AlertEvent]) {
        let last_seq = last_seq.filter(|_| !events.is_empty());
        if alerts.is_empty() && last_seq.is_none() {
            return;
        }
        let mut state = self.lock();
        for a in alerts {
            match a.state {
                AlertState::Active => {
                    state.active.replace(ById(a.clone()));
                }
                AlertState::Resolved => {
                    state.active.remove(a.id.as_str());
                }
            }
        }
        let Some(last_seq) = last_seq else { return };
        let first = last_seq - events.len() as i64 + 1;
        for (seq, e) in (first..).zip(events) {
            // Sent under the lock, so that `subscribe` sees each event either in its snapshot
            // or on its receiver, never both and never neither. No receivers is not an error.
            let _ = self.live.send(Arc::new(SequencedEvent {
                seq,
                event: e.clone(),
            }));
        }
        state.head = last_seq;
        drop(state);
        self.head.send_replace(last_seq);
    }

    /// The active set now and a receiver of every event after it.
    pub fn subscribe(&self) -> (Snapshot, broadcast::Receiver<Arc<SequencedEvent>>) {
        let state = self.lock();
        let rx = self.live.subscribe();
        (
            Snapshot {
                seq: state.head,
                alerts: sorted(&state),
            },
            rx,
        )
    }

    /// The newest committed event's sequence number; changes wake the outputs.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    pub fn head(&self) -> i64 {
        self.lock().head
    }

    /// The active alerts, oldest first.
    pub fn active(&self) -> Vec<Arc<Alert>> {
        sorted(&self.lock())
    }

    /// Whether any active alert passes `f` (looked at under the lock, nothing copied).
    pub fn any_active(&self, f: impl FnMut(&Alert) -> bool) -> bool {
        let mut f = f;
        self.lock().active.iter().any(|a| f(&a.0))
    }
}

fn sorted(state: &HubState) -> Vec<Arc<Alert>> {
    let mut alerts: Vec<Arc<Alert>> = state.active.iter().map(|a| a.0.clone()).collect();
    alerts.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertEventKind, Severity};

    fn alert(id: &str, state: AlertState, started_at: i64) -> Alert {
        Alert {
            id: id.into(),
            rule: "r".into(),
            sensor: "s".into(),
            kind: "water_level".into(),
            metric: "level".into(),
            severity: Severity::Warning,
            state,
            value: 1.0,
            threshold: 0.5,
            peak: 1.0,
            count: 1,
            started_at,
            updated_at: started_at,
            resolved_at: None,
            ack: None,
            message: String::new(),
        }
    }

    fn event(kind: AlertEventKind, a: Alert) -> AlertEvent {
        AlertEvent {
            event: kind,
            at: a.updated_at,
            alert: a,
        }
    }

    /// Publishes a commit of `events` with what the pipeline would store beside them: each
    /// alert's last state.
    fn commit(hub: &AlertHub, last: i64, events: &[AlertEvent]) {
        let mut alerts: Vec<Arc<Alert>> = Vec::new();
        for e in events {
            alerts.retain(|a| a.id != e.alert.id);
            alerts.push(Arc::new(e.alert.clone()));
        }
        hub.publish(&alerts, Some(last), events);
    }

    fn ids(alerts: &[Arc<Alert>]) -> Vec<&str> {
        alerts.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn a_subscriber_gets_each_event_in_its_snapshot_or_live_never_both() {
        let hub = AlertHub::new(10, vec![Arc::new(alert("a", AlertState::Active, 1))]);
        commit(
            &hub,
            12,
            &[
                event(AlertEventKind::Raised, alert("b", AlertState::Active, 2)),
                event(
                    AlertEventKind::Resolved,
                    alert("a", AlertState::Resolved, 1),
                ),
            ],
        );
        let (snap, mut rx) = hub.subscribe();
        assert_eq!(snap.seq, 12);
        assert_eq!(ids(&snap.alerts), ["b"]);
        assert!(
            rx.try_recv().is_err(),
            "events in the snapshot are not resent"
        );

        commit(
            &hub,
            13,
            &[event(
                AlertEventKind::Raised,
                alert("c", AlertState::Active, 3),
            )],
        );
        let e = rx.try_recv().expect("a live event after the snapshot");
        assert_eq!((e.seq, e.event.alert.id.as_str()), (13, "c"));
        assert_eq!(hub.head(), 13);
        assert_eq!(*hub.watch_head().borrow(), 13);
        assert_eq!(ids(&hub.active()), ["b", "c"]);
    }

    #[test]
    fn events_take_consecutive_numbers_ending_at_the_last() {
        let hub = AlertHub::new(0, vec![]);
        let (_, mut rx) = hub.subscribe();
        commit(
            &hub,
            7,
            &[
                event(AlertEventKind::Raised, alert("x", AlertState::Active, 1)),
                event(
                    AlertEventKind::Acknowledged,
                    alert("x", AlertState::Active, 1),
                ),
                event(
                    AlertEventKind::Resolved,
                    alert("x", AlertState::Resolved, 1),
                ),
            ],
        );
        let seqs: Vec<i64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [5, 6, 7]);
        assert_eq!(hub.active().len(), 0);
    }

    /// The hub keeps the committed alerts it is given, not copies: an update without an
    /// event (a repeated breach) replaces the alert, and moves neither the head nor the live
    /// feed.
    #[test]
    fn the_active_set_holds_the_committed_alerts_themselves() {
        let hub = AlertHub::new(0, vec![]);
        commit(
            &hub,
            1,
            &[event(
                AlertEventKind::Raised,
                alert("x", AlertState::Active, 1),
            )],
        );
        let (_, mut rx) = hub.subscribe();
        let mut updated = alert("x", AlertState::Active, 1);
        updated.count = 5;
        updated.value = 2.5;
        let updated = Arc::new(updated);
        hub.publish(std::slice::from_ref(&updated), None, &[]);
        let active = hub.active();
        assert_eq!(active.len(), 1);
        assert!(Arc::ptr_eq(&active[0], &updated), "shared, not copied");
        assert_eq!((active[0].count, active[0].value), (5, 2.5));
        assert_eq!(hub.head(), 1);
        assert!(rx.try_recv().is_err(), "an update is not an event");
        assert!(hub.any_active(|a| a.id == "x"));
        assert!(!hub.any_active(|a| a.id == "y"));

        // Events numbered but not given (a commit the caller had none for) change nothing.
        hub.publish(&[], Some(9), &[]);
        assert_eq!(hub.head(), 1);
    }
}
