//! The state of one broker connection, for `/health` and the metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use metrics::{counter, gauge};
use serde::Serialize;

use crate::model::TimestampMs;

/// Shared between the connection's tasks and the HTTP API. Counters are monotonic.
#[derive(Debug)]
pub struct SourceStatus {
    pub name: String,
    pub url: String,
    connected: AtomicBool,
    last_error: Mutex<Option<(String, TimestampMs)>>,
    /// Publishes taken from the broker.
    pub received: AtomicU64,
    /// Publishes acknowledged after their commit.
    pub acked: AtomicU64,
    /// Publishes whose whole payload became a dead letter (no route, too large, undecodable).
    pub dead_lettered: AtomicU64,
    /// Of the dead-lettered, those whose topic matched no route.
    pub no_route: AtomicU64,
    /// Connection losses (and refused connection attempts).
    pub reconnects: AtomicU64,
}

/// A point-in-time copy, as `/health` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StatusSnapshot {
    pub name: String,
    pub url: String,
    pub connected: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<TimestampMs>,
    pub received: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    pub no_route: u64,
    pub reconnects: u64,
}

impl SourceStatus {
    pub fn new(name: &str, url: &str) -> SourceStatus {
        let s = SourceStatus {
            name: name.to_string(),
            url: url.to_string(),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            received: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            no_route: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        };
        gauge!("citygate_mqtt_connected", "connection" => s.name.clone()).set(0.0);
        s
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        gauge!("citygate_mqtt_connected", "connection" => self.name.clone()).set(if up {
            1.0
        } else {
            0.0
        });
    }

    pub fn set_error(&self, message: String, at: TimestampMs) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((message, at));
        }
    }

    pub fn last_error(&self) -> Option<(String, TimestampMs)> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn count_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        self.count("received", n);
    }

    pub fn count_acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
        self.count("acked", n);
    }

    pub fn count_dead_letter(&self, reason: &'static str) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if reason == "no_route" {
            self.no_route.fetch_add(1, Ordering::Relaxed);
        }
        self.count("dead_lettered", 1);
        counter!("citygate_mqtt_dead_letters_total", "connection" => self.name.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        counter!("citygate_mqtt_reconnects_total", "connection" => self.name.clone()).increment(1);
    }

    fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            counter!("citygate_mqtt_messages_total", "connection" => self.name.clone(), "outcome" => outcome)
                .increment(n);
        }
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let err = self.last_error();
        StatusSnapshot {
            name: self.name.clone(),
            url: self.url.clone(),
            connected: self.is_connected(),
            last_error_at: err.as_ref().map(|e| e.1),
            last_error: err.map(|e| e.0),
            received: self.received.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            no_route: self.no_route.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}
