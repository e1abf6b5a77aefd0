//! The durable outbox between the pipeline and the remote sinks.
//!
//! ```text
//! pipeline ──► store thread ──one SQLite transaction──► readings, alerts, dead letters (local)
//!                                                   └──► outbox entry (line protocol, gzipped)
//!                                                             │ each sink has its own cursor
//!                                                             ├──► [[sinks.influxdb]] "central"
//!                                                             └──► [[sinks.influxdb]] "backup"
//! ```
//! - **Durable.** An entry is written in the same transaction as the local store's commit,
//!   in the same SQLite file, so a batch is in both or in neither; a source is told its
//!   input is safe (the HTTP reply, the MQTT ack) only after that commit. With
//!   `fsync = "always"` the commit is on disk (survives power loss), with `"checkpoint"` in
//!   the page cache (survives `kill -9`).
//! - **Ordered, at least once.** Each sink reads entries in sequence order and moves its
//!   cursor (in the same file) only after the store confirmed them; an entry is deleted once
//!   every sink's cursor is past it. A crash between the store's confirmation and the cursor
//!   commit resends those entries: points carry their timestamps, and the store keeps one point
//!   per series and time, so nothing is counted twice.
//! - **Bounded.** [`Outbox::reserve`] holds the store thread while the entries on disk exceed
//!   `max_bytes` (`when_full = "block"`): the bounded channels behind it fill, and the sources
//!   stop taking input. With `"drop_oldest"` the oldest entries make room instead, counted.
//! - The local SQLite store is written in the commit itself, so its "cursor" is always at the
//!   head: it never lags and never needs the outbox.

pub mod config;
pub mod db;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::{Fsync, OutboxConfig, WhenFull};
pub use db::{Append, Entry, Meta};

use crate::model::TimestampMs;

/// The shared view of the outbox: an index of the entries on disk and each sink's cursor.
/// The store thread appends, the sink tasks confirm; the SQL lives in [`db`].
pub struct Outbox {
    cfg: OutboxConfig,
    state: Mutex<State>,
    /// Signalled when entries are deleted (room for a blocked store thread) or on close.
    room: Condvar,
    /// The newest entry's sequence number; sinks wait on it for new work.
    head: watch::Sender<i64>,
}

struct State {
    entries: VecDeque<Meta>,
    /// Each sink's cursor: the last entry it confirmed, in configured order.
    sinks: Vec<i64>,
    stored: u64,
    points: u64,
    full: bool,
    closing: bool,
    dropped_points: u64,
}

/// What the store thread may do with the next entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Admit {
    /// Delete the entries up to here first (`drop_oldest`).
    pub drop_through: Option<i64>,
    pub dropped_points: u64,
}

/// Consecutive entries `from..=to` for one request's worth of lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    /// The range reached a limit (more entries follow, or the lines or bytes are at the
    /// limit): a whole request, not a part-filled one.
    pub full: bool,
}

/// One sink's backlog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lag {
    pub cursor: i64,
    pub entries: u64,
    pub points: u64,
    pub lines: u64,
    /// Line-protocol bytes (uncompressed) waiting.
    pub raw_bytes: u64,
    /// When the oldest waiting entry was committed.
    pub oldest_at: Option<TimestampMs>,
}

/// The outbox as `/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// `"ok"`, or `"full"` while `when_full` applies.
    pub state: &'static str,
    pub entries: u64,
    pub points: u64,
    /// Compressed bytes on disk.
    pub bytes: u64,
    pub max_bytes: u64,
    pub when_full: &'static str,
    /// Seconds since the oldest entry still held was committed.
    pub oldest_age_seconds: Option<f64>,
    pub dropped_points: u64,
}

impl State {
    /// Removes the entries up to and including `seq` from the index; returns their points.
    fn pop_through(&mut self, seq: i64) -> u64 {
        let mut points = 0;
        while self.entries.front().is_some_and(|m| m.seq <= seq) {
            if let Some(m) = self.entries.pop_front() {
                self.stored -= m.stored;
                self.points -= m.points;
                points += m.points;
            }
        }
        points
    }

    /// The entries after `cursor` (the index is in sequence order).
    fn after(&self, cursor: i64) -> impl Iterator<Item = &Meta> {
        let start = self.entries.partition_point(|m| m.seq <= cursor);
        self.entries.range(start..)
    }
}

impl Outbox {
    /// Builds the index from what is on disk and reconciles the cursors with the configured
    /// `sinks` (see [`db::reconcile_cursors`]).
    pub fn open(
        conn: &mut rusqlite::Connection,
        cfg: OutboxConfig,
        sinks: &[&str],
    ) -> rusqlite::Result<Arc<Outbox>> {
        let rec = db::reconcile_cursors(conn, sinks)?;
        for name in &rec.removed_sinks {
            warn!(sink = %name, "a sink is no longer configured; its outbox cursor is removed");
        }
        if rec.orphaned_points > 0 {
            metrics::counter!("citygate_outbox_dropped_points_total")
                .increment(rec.orphaned_points);
            warn!(
                points = rec.orphaned_points,
                "outbox entries no configured sink needs any more were deleted (a sink was removed from the config)"
            );
        }
        let entries: VecDeque<Meta> = db::metas(conn)?.into();
        let stored = entries.iter().map(|m| m.stored).sum();
        let points = entries.iter().map(|m| m.points).sum();
        let head = entries.back().map_or(0, |m| m.seq);
        if !entries.is_empty() {
            info!(
                entries = entries.len(),
                points,
                bytes = stored,
                "outbox holds undelivered entries from an earlier run"
            );
        }
        let outbox = Outbox {
            cfg,
            state: Mutex::new(State {
                entries,
                sinks: rec.cursors,
                stored,
                points,
                full: false,
                closing: false,
                dropped_points: 0,
            }),
            room: Condvar::new(),
            head: watch::Sender::new(head),
        };
        outbox.publish_gauges(&outbox.lock());
        Ok(Arc::new(outbox))
    }

    /// True when there is a sink to deliver to; without one nothing is appended.
    pub fn enabled(&self) -> bool {
        !self.lock().sinks.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind; keep going with them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the store thread before it commits an entry of `stored` bytes. With
    /// `when_full = "block"` it waits while the outbox is full (the pipeline and the sources
    /// wait behind it); with `"drop_oldest"` it names the entries to delete to make room.
    /// An empty outbox always takes one entry, however large, and so does a closing one: the
    /// last batches of a shutdown are committed rather than lost.
    pub fn reserve(&self, stored: u64) -> Admit {
        let max = self.cfg.max_bytes;
        let mut st = self.lock();
        let fits = |st: &State| st.entries.is_empty() || st.stored + stored <= max;
        if fits(&st) || st.closing {
            return Admit {
                drop_through: None,
                dropped_points: 0,
            };
        }
        match self.cfg.when_full {
            WhenFull::Block => {
                st.full = true;
                self.publish_gauges(&st);
                warn!(
                    bytes = st.stored,
                    max_bytes = max,
                    "the outbox is full: holding the sources until a sink catches up"
                );
                while !fits(&st) && !st.closing {
                    st = self
                        .room
                        .wait_timeout(st, Duration::from_secs(1))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                st.full = false;
                self.publish_gauges(&st);
                info!(bytes = st.stored, "the outbox has room again");
                Admit {
                    drop_through: None,
                    dropped_points: 0,
                }
            }
            WhenFull::DropOldest => {
                let mut freed = 0;
                let mut points = 0;
                let mut through = None;
                for m in st.entries.iter() {
                    if st.stored - freed + stored <= max {
                        break;
                    }
                    freed += m.stored;
                    points += m.points;
                    through = Some(m.seq);
                }
                Admit {
                    drop_through: through,
                    dropped_points: points,
                }
            }
        }
    }

    /// Called by the store thread once an entry is committed.
    pub fn appended(&self, meta: Meta, admit: Admit) {
        let mut st = self.lock();
        if let Some(through) = admit.drop_through {
            // Count what is really gone: a sink may have confirmed some of these meanwhile.
            let dropped = st.pop_through(through);
            for s in st.sinks.iter_mut() {
                *s = (*s).max(through);
            }
            if dropped > 0 {
                st.dropped_points += dropped;
                metrics::counter!("citygate_outbox_dropped_points_total").increment(dropped);
                warn!(
                    points = dropped,
                    "the outbox is full and when_full = \"drop_oldest\": the oldest points were dropped"
                );
            }
        }
        st.stored += meta.stored;
        st.points += meta.points;
        st.entries.push_back(meta);
        self.publish_gauges(&st);
        drop(st);
        self.head.send_replace(meta.seq);
    }

    /// Called by a sink once [`db::confirm`] committed its cursor at `seq`: entries every
    /// sink has passed leave the index, making room. Returns the points the sink's cursor
    /// passed.
    pub fn confirmed(&self, sink: usize, seq: i64) -> u64 {
        let mut st = self.lock();
        let Some(&cursor) = st.sinks.get(sink) else {
            return 0;
        };
        let passed = st
            .after(cursor)
            .take_while(|m| m.seq <= seq)
            .map(|m| m.points)
            .sum();
        st.sinks[sink] = cursor.max(seq);
        let floor = st.sinks.iter().copied().min().unwrap_or(i64::MAX);
        st.pop_through(floor);
        self.publish_gauges(&st);
        drop(st);
        self.room.notify_all();
        passed
    }

    /// The entries after a sink's cursor, up to `max_raw` uncompressed bytes or `max_lines`
    /// lines (at least one entry when there is any).
    pub fn next_range(&self, sink: usize, max_raw: u64, max_lines: u64) -> Option<Range> {
        let st = self.lock();
        let cursor = *st.sinks.get(sink)?;
        Self::range_in(&st, cursor, max_raw, max_lines)
    }

    /// Like [`Outbox::next_range`], but after `seq` rather than after the cursor: the range a
    /// sink can prepare while the one up to `seq` is still being delivered.
    pub fn range_after(&self, seq: i64, max_raw: u64, max_lines: u64) -> Option<Range> {
        Self::range_in(&self.lock(), seq, max_raw, max_lines)
    }

    fn range_in(st: &State, after: i64, max_raw: u64, max_lines: u64) -> Option<Range> {
        let mut range: Option<Range> = None;
        let (mut raw, mut lines) = (0u64, 0u64);
        for m in st.after(after) {
            if let Some(r) = &mut range {
                if raw + m.raw_len > max_raw || lines + m.lines > max_lines {
                    r.full = true;
                    break;
                }
            }
            raw += m.raw_len;
            lines += m.lines;
            let from = range.map_or(m.seq, |r| r.from);
            range = Some(Range {
                from,
                to: m.seq,
                full: raw >= max_raw || lines >= max_lines,
            });
        }
        range
    }

    /// What a sink still has to deliver.
    pub fn lag(&self, sink: usize) -> Lag {
        let st = self.lock();
        let Some(&cursor) = st.sinks.get(sink) else {
            return Lag::default();
        };
        let mut lag = Lag {
            cursor,
            ..Lag::default()
        };
        for m in st.after(cursor) {
            lag.entries += 1;
            lag.points += m.points;
            lag.lines += m.lines;
            lag.raw_bytes += m.raw_len;
            lag.oldest_at.get_or_insert(m.created_at);
        }
        lag
    }

    /// Sink tasks wait on this for entries after their cursor.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Stops holding the store thread: during shutdown the last batches are committed even
    /// over the limit, rather than lost.
    pub fn close(&self) {
        self.lock().closing = true;
        self.room.notify_all();
    }

    pub fn snapshot(&self, now: TimestampMs) -> Snapshot {
        let st = self.lock();
        Snapshot {
            state: if st.full { "full" } else { "ok" },
            entries: st.entries.len() as u64,
            points: st.points,
            bytes: st.stored,
            max_bytes: self.cfg.max_bytes,
            when_full: self.cfg.when_full.as_str(),
            oldest_age_seconds: st.entries.front().map(|m| age_seconds(m.created_at, now)),
            dropped_points: st.dropped_points,
        }
    }

    fn publish_gauges(&self, st: &State) {
        metrics::gauge!("citygate_outbox_bytes").set(st.stored as f64);
        metrics::gauge!("citygate_outbox_points").set(st.points as f64);
        metrics::gauge!("citygate_outbox_entries").set(st.entries.len() as f64);
        metrics::gauge!("citygate_outbox_full").set(if st.full { 1.0 } else { 0.0 });
        metrics::gauge!("citygate_outbox_oldest_entry_timestamp_seconds").set(
            st.entries
                .front()
                .map_or(0.0, |m| m.created_at as f64 / 1000.0),
        );
    }
}

/// Seconds from `then` to `now` (epoch ms), never negative.
pub fn age_seconds(then: TimestampMs, now: TimestampMs) -> f64 {
    (now - then).max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests;
