//! Checks on one reading of a known metric, against the metric's catalog entry and the last
//! readings of the same series.

use crate::catalog::Metric;
use crate::model::{Reading, TsSource};

use super::Settings;

/// How many recent timestamps per series are remembered to catch duplicates that arrive out
/// of order. The store's primary key catches older ones.
const RECENT: usize = 4;

/// An empty place in the recent ring (and any offset that does not fit in one).
const FORGOTTEN: i32 = i32::MIN;

/// The state of one series (sensor × metric). One per metric of every sensor, so every
/// byte counts (72): the series' sensor-fault alert lives with the sensor's other alerts,
/// where its samples are is the profile's (`series_by_metric`), "no reading yet" is a run of
/// 0 rather than an `Option` around the last reading, and the recent ring's position shares a
/// word with the run's length.
pub(super) struct MetricState {
    /// The last reading that moved the series forward (not out of order, not a spike);
    /// meaningless while the run is 0.
    last_ts: i64,
    last_v: f64,
    /// Recent readings' value bits, to tell a replay from a conflicting duplicate, and their
    /// timestamps as offsets from `last_ts` (moved along with it): 16 bytes less per series
    /// than full timestamps. A reading more than 24 days (i32 milliseconds) from `last_ts` is
    /// not remembered, like one older than the last [`RECENT`]: the store's primary key
    /// keeps the first. Readings that far apart pass `validation.max_age` (7 days by
    /// default) only when it is raised past 24 days.
    recent_v: [u64; RECENT],
    recent_dt: [i32; RECENT],
    /// How long the current run of identical values has lasted: `last_ts` less its first
    /// reading's time, in milliseconds, stopping at [`MAX_RUN_SPAN_MS`] (config validation
    /// keeps `flatline_duration` under it).
    run_span: u32,
    /// The run's length (low 30 bits: 0 until the first reading, never 0 again after it,
    /// stopping at [`MAX_RUN`]) and where the recent ring writes next (top 2 bits).
    run_and_pos: u32,
}

/// Longest run [`MetricState`] counts; config validation keeps `flatline_count` at most this.
pub const MAX_RUN: u32 = (1 << 30) - 1;

/// Longest run span [`MetricState`] measures (about 49.7 days).
pub const MAX_RUN_SPAN_MS: u32 = u32::MAX;

const _: () = assert!(RECENT <= 4, "the ring position has two bits");

impl Default for MetricState {
    fn default() -> Self {
        MetricState {
            last_ts: 0,
            last_v: 0.0,
            recent_v: [0; RECENT],
            recent_dt: [FORGOTTEN; RECENT],
            run_span: 0,
            run_and_pos: 0,
        }
    }
}

impl MetricState {
    fn run(&self) -> u32 {
        self.run_and_pos & MAX_RUN
    }

    fn set_run(&mut self, run: u32) {
        self.run_and_pos = (self.run_and_pos & !MAX_RUN) | run.min(MAX_RUN);
    }

    fn recent_pos(&self) -> usize {
        (self.run_and_pos >> 30) as usize
    }

    fn set_recent_pos(&mut self, pos: usize) {
        self.run_and_pos = (self.run_and_pos & MAX_RUN) | ((pos as u32) << 30);
    }

    fn last(&self) -> Option<(i64, f64)> {
        (self.run() > 0).then_some((self.last_ts, self.last_v))
    }

    /// `ts` as an offset from `last_ts`, if it fits.
    fn offset(&self, ts: i64) -> Option<i32> {
        let dt = i32::try_from(ts.checked_sub(self.last_ts)?).ok()?;
        (dt != FORGOTTEN).then_some(dt)
    }

    /// The value bits of a remembered reading at `ts`.
    fn recent(&self, ts: i64) -> Option<u64> {
        let dt = self.offset(ts)?;
        let i = self.recent_dt.iter().position(|&d| d == dt)?;
        Some(self.recent_v[i])
    }

    fn remember(&mut self, ts: i64, value: f64) {
        let Some(dt) = self.offset(ts) else {
            return;
        };
        let pos = self.recent_pos() % RECENT;
        self.recent_dt[pos] = dt;
        self.recent_v[pos] = value.to_bits();
        self.set_recent_pos((pos + 1) % RECENT);
    }

    /// Moves the series forward to (`ts`, `value`), keeping the recent offsets' meaning.
    fn set_last(&mut self, ts: i64, value: f64) {
        // Clamped: past ±2³³ every offset (|dt| < 2³¹) falls out of range either way, and the
        // subtraction below cannot overflow.
        let shift = ts.saturating_sub(self.last_ts).clamp(-(1 << 33), 1 << 33);
        for dt in &mut self.recent_dt {
            let moved = i32::try_from(i64::from(*dt) - shift);
            *dt = match moved {
                Ok(d) if *dt != FORGOTTEN => d,
                _ => FORGOTTEN,
            };
        }
        // The run's first reading stays where it was: the span grows by the step.
        self.run_span =
            (i64::from(self.run_span) + shift).clamp(0, i64::from(MAX_RUN_SPAN_MS)) as u32;
        (self.last_ts, self.last_v) = (ts, value);
    }
}

/// The outcome of validation.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Good,
    /// Valid, but older than the latest reading of its series: stored, kept away from the
    /// stateful checks and rules, which assume time moves forward.
    OutOfOrder,
    /// The very reading again (same time, same value): an at-least-once redelivery. Passed
    /// on (the store keeps it once) but not evaluated again, and not an error.
    Replay,
    /// Plausible but doubtful. `threshold` is the limit involved, for the fault alert.
    Suspect {
        reason: &'static str,
        detail: String,
        threshold: f64,
    },
    /// Invalid: a dead letter. `fault` is set when the device itself is at fault (a counter
    /// going backwards) and a sensor-fault alert should be raised, with the limit involved.
    Reject {
        reason: &'static str,
        detail: String,
        fault: Option<f64>,
    },
}

fn reject(reason: &'static str, detail: String) -> Verdict {
    Verdict::Reject {
        reason,
        detail,
        fault: None,
    }
}

/// Human form of a timestamp for error messages.
pub fn fmt_ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn fmt_dur(ms: i64) -> String {
    let d = std::time::Duration::from_secs(ms.unsigned_abs() / 1000);
    humantime::format_duration(d).to_string()
}

pub(super) fn check(
    r: &Reading,
    metric: &Metric,
    st: &mut MetricState,
    s: &Settings,
    now: i64,
) -> Verdict {
    let name = &metric.name;
    if let Some(unit) = &r.unit {
        if !metric.accepts_unit(unit) {
            let mut known = vec![format!("{:?}", metric.unit.as_str())];
            known.extend(
                metric
                    .unit_aliases
                    .iter()
                    .map(|a| format!("{:?}", a.as_str())),
            );
            return reject(
                "wrong_unit",
                format!("{name} came in {unit:?}, expected {}", known.join(" or ")),
            );
        }
    }
    let v = r.value;
    if !v.is_finite() {
        return reject("not_finite", format!("{name} = {v} is not a finite number"));
    }
    if v < metric.min || v > metric.max {
        return reject(
            "out_of_range",
            format!(
                "{name} = {v} {} is outside the plausible range {}..{}",
                metric.unit, metric.min, metric.max
            ),
        );
    }
    if r.ts_source == TsSource::Device {
        if r.ts > now.saturating_add(s.max_future_skew_ms) {
            return reject(
                "future_timestamp",
                format!(
                    "timestamp {} is {} ahead of the gateway clock (allowed skew {})",
                    fmt_ts(r.ts),
                    fmt_dur(r.ts - now),
                    fmt_dur(s.max_future_skew_ms)
                ),
            );
        }
        if r.ts < now.saturating_sub(s.max_age_ms) {
            return reject(
                "stale_timestamp",
                format!(
                    "timestamp {} is {} old (validation.max_age is {})",
                    fmt_ts(r.ts),
                    fmt_dur(now - r.ts),
                    fmt_dur(s.max_age_ms)
                ),
            );
        }
    }
    let seen = st.recent(r.ts).or_else(|| {
        st.last()
            .filter(|(t, _)| *t == r.ts)
            .map(|(_, v)| v.to_bits())
    });
    if let Some(bits) = seen {
        if bits == v.to_bits() {
            return Verdict::Replay;
        }
        return reject(
            "duplicate",
            format!(
                "{name} of {} at {} was already received with another value ({} then {v})",
                r.sensor,
                fmt_ts(r.ts),
                f64::from_bits(bits)
            ),
        );
    }
    let Some((last_ts, last_v)) = st.last() else {
        // Last first: the recent offsets count from it.
        st.set_last(r.ts, v);
        st.remember(r.ts, v);
        st.set_run(1);
        st.run_span = 0;
        return Verdict::Good;
    };
    if r.ts < last_ts {
        st.remember(r.ts, v);
        return Verdict::OutOfOrder;
    }
    if metric.counter && v < last_v {
        let rolled = metric
            .rollover
            .is_some_and(|top| last_v >= top * 0.9 && v <= top * 0.1);
        if !rolled {
            return Verdict::Reject {
                reason: "counter_backwards",
                detail: format!(
                    "counter {name} went backwards from {last_v} to {v}{}",
                    match metric.rollover {
                        Some(top) => format!(" (not a rollover at {top})"),
                        None => " (no rollover declared)".to_string(),
                    }
                ),
                fault: Some(last_v),
            };
        }
    }
    st.remember(r.ts, v);
    if let Some(rate) = metric.max_rate_per_hour {
        // Judge changes over at least a minute, so that sensor noise on a device reporting
        // every second is not read as a physically impossible rate.
        let hours = (r.ts - last_ts).max(60_000) as f64 / 3_600_000.0;
        let change = (v - last_v).abs();
        if change > rate * hours {
            // The spike does not become the baseline: the next reading is judged against the
            // last plausible one, so a one-sample glitch does not taint the reading after it.
            // A real step change is accepted once enough time has passed to explain it.
            return Verdict::Suspect {
                reason: "spike",
                detail: format!(
                    "{name} changed by {} {} in {} (more than the {} per hour the process allows)",
                    round3(change),
                    metric.unit,
                    fmt_dur(r.ts - last_ts),
                    rate
                ),
                threshold: rate,
            };
        }
    }
    st.set_last(r.ts, v);

    let mut verdict = Verdict::Good;
    if metric.flatline {
        if v == last_v {
            // Stopping at MAX_RUN: the run must not wrap back to 0, "no reading yet".
            st.set_run(st.run().saturating_add(1));
        } else {
            st.set_run(1);
            st.run_span = 0;
        }
        if st.run() >= s.flatline_count && i64::from(st.run_span) >= s.flatline_ms {
            verdict = Verdict::Suspect {
                reason: "flatline",
                detail: format!(
                    "{name} has repeated {v} {} times over {} (stuck sensor?)",
                    st.run(),
                    fmt_dur(i64::from(st.run_span))
                ),
                threshold: f64::from(s.flatline_count),
            };
        }
    }
    verdict
}

/// Rounds for messages, so that 0.30000000000000004 reads as 0.3.
pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
