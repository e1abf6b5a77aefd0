//! The state of each polled device, for `/health`, tests and the metrics.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use metrics::{counter, gauge};
use serde::Serialize;

use crate::model::TimestampMs;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Shared between a device's task and the HTTP API. Counters are monotonic.
#[derive(Debug)]
pub struct DeviceStatus {
    pub sensor: String,
    pub address: String,
    pub unit: u8,
    state: AtomicU8,
    pub polls: AtomicU64,
    pub failed_polls: AtomicU64,
    pub requests: AtomicU64,
    pub reconnects: AtomicU64,
    last: Mutex<Last>,
}

#[derive(Debug, Default)]
struct Last {
    poll_at: Option<TimestampMs>,
    ok_at: Option<TimestampMs>,
    error: Option<(String, TimestampMs)>,
    tags: std::collections::BTreeMap<String, String>,
}

/// A point-in-time copy, as `/health` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeviceSnapshot {
    pub sensor: String,
    pub address: String,
    pub unit: u8,
    /// `unknown` until the first poll, then `up` or `down` (offline: failed
    /// `offline_after_failures` polls in a row).
    pub state: &'static str,
    pub polls: u64,
    pub failed_polls: u64,
    pub requests: u64,
    pub reconnects: u64,
    pub last_poll_at: Option<TimestampMs>,
    pub last_ok_at: Option<TimestampMs>,
    pub last_error: Option<String>,
    pub last_error_at: Option<TimestampMs>,
    /// The tags its readings carry: config tags and the strings read from it (a serial
    /// number, say).
    pub tags: std::collections::BTreeMap<String, String>,
}

impl DeviceStatus {
    pub fn new(sensor: &str, address: &str, unit: u8) -> DeviceStatus {
        DeviceStatus {
            sensor: sensor.to_string(),
            address: address.to_string(),
            unit,
            state: AtomicU8::new(UNKNOWN),
            polls: AtomicU64::new(0),
            failed_polls: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last: Mutex::new(Last::default()),
        }
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// Records a poll; `error` is set when it failed (or a field could not be read).
    pub fn record_poll(&self, at: TimestampMs, failed: bool, error: Option<String>) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        counter!("citygate_modbus_polls_total", "result" => if failed { "failed" } else { "ok" })
            .increment(1);
        if failed {
            self.failed_polls.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut last) = self.last.lock() {
            last.poll_at = Some(at);
            if !failed {
                last.ok_at = Some(at);
            }
            if let Some(e) = error {
                last.error = Some((e, at));
            }
        }
    }

    /// Marks the device up or down; the `citygate_modbus_devices_up` gauge follows.
    pub fn set_up(&self, up: bool) {
        let new = if up { UP } else { DOWN };
        let old = self.state.swap(new, Ordering::Relaxed);
        if old == new {
            return;
        }
        if new == UP {
            gauge!("citygate_modbus_devices_up").increment(1.0);
        } else if old == UP {
            gauge!("citygate_modbus_devices_up").decrement(1.0);
        }
    }

    /// Records the tags the device's readings now carry.
    pub fn set_tags(&self, tags: &[(compact_str::CompactString, compact_str::CompactString)]) {
        if let Ok(mut last) = self.last.lock() {
            last.tags = tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
    }

    pub fn snapshot(&self) -> DeviceSnapshot {
        let (poll_at, ok_at, error, tags) = match self.last.lock() {
            Ok(l) => (l.poll_at, l.ok_at, l.error.clone(), l.tags.clone()),
            Err(_) => (None, None, None, Default::default()),
        };
        DeviceSnapshot {
            sensor: self.sensor.clone(),
            address: self.address.clone(),
            unit: self.unit,
            state: match self.state.load(Ordering::Relaxed) {
                UP => "up",
                DOWN => "down",
                _ => "unknown",
            },
            polls: self.polls.load(Ordering::Relaxed),
            failed_polls: self.failed_polls.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_poll_at: poll_at,
            last_ok_at: ok_at,
            last_error: error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: error.map(|(_, at)| at),
            tags,
        }
    }
}

impl Drop for DeviceStatus {
    fn drop(&mut self) {
        // Tests start and stop many gateways in one process, all sharing one recorder.
        if self.state.load(Ordering::Relaxed) == UP {
            gauge!("citygate_modbus_devices_up").decrement(1.0);
        }
    }
}
