//! Rolling windows over reading time, for windowed rule aggregates.

use std::collections::VecDeque;

use crate::catalog::spec::Aggregate;

/// Most samples one window keeps: a day at one reading every 10 s. A device reporting faster
/// than that has its oldest samples dropped early (the aggregate then covers a shorter
/// span), so that no input rate can make a window's memory grow without bound.
pub const MAX_SAMPLES: usize = 8_640;

/// Samples within the last `len_ms` of reading time, with an O(1) amortised aggregate.
///
/// Sum and mean keep a running sum, recomputed from the samples now and then so that float
/// error from adding and subtracting cannot build up over months. Max and min keep a
/// monotonic deque beside the samples.
#[derive(Clone, Debug, Default)]
pub struct Window {
    samples: VecDeque<(i64, f64)>,
    sum: f64,
    extreme: VecDeque<(i64, f64)>,
    ops_since_resum: u32,
    /// Reading time of the first sample this window ever held: until a whole window has
    /// passed since then (after a restart, say) the aggregate is incomplete.
    pub first_ts: Option<i64>,
}

impl Window {
    /// Adds a sample, drops those that fell out of the window, and returns the aggregate.
    pub fn push(&mut self, ts: i64, value: f64, len_ms: i64, agg: Aggregate) -> f64 {
        self.first_ts.get_or_insert(ts);
        let cutoff = ts - len_ms;
        while let Some(&(t, v)) = self.samples.front() {
            if t > cutoff {
                break;
            }
            self.samples.pop_front();
            self.sum -= v;
            self.ops_since_resum += 1;
        }
        if self.samples.len() >= MAX_SAMPLES {
            if let Some((_, v)) = self.samples.pop_front() {
                self.sum -= v;
            }
        }
        self.samples.push_back((ts, value));
        self.sum += value;
        if self.ops_since_resum > 4096 {
            self.sum = self.samples.iter().map(|&(_, v)| v).sum();
            self.ops_since_resum = 0;
        }
        match agg {
            Aggregate::Sum => self.sum,
            Aggregate::Mean => self.sum / self.samples.len() as f64,
            Aggregate::Max | Aggregate::Min => {
                let oldest = self.samples.front().map_or(ts, |&(t, _)| t);
                while self
                    .extreme
                    .front()
                    .is_some_and(|&(t, _)| t <= cutoff || t < oldest)
                {
                    self.extreme.pop_front();
                }
                let dominated = |old: f64| match agg {
                    Aggregate::Max => old <= value,
                    _ => old >= value,
                };
                while self.extreme.back().is_some_and(|&(_, v)| dominated(v)) {
                    self.extreme.pop_back();
                }
                self.extreme.push_back((ts, value));
                self.extreme.front().map_or(value, |&(_, v)| v)
            }
        }
    }

    /// Whether the window has seen a whole window's worth of reading time.
    pub fn is_warm(&self, now_ts: i64, len_ms: i64) -> bool {
        self.first_ts.is_some_and(|f| now_ts - f >= len_ms)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn sum_drops_samples_older_than_the_window() {
        let mut w = Window::default();
        assert_eq!(w.push(0, 30.0, 3 * H, Aggregate::Sum), 30.0);
        assert_eq!(w.push(H, 30.0, 3 * H, Aggregate::Sum), 60.0);
        assert_eq!(w.push(2 * H, 30.0, 3 * H, Aggregate::Sum), 90.0);
        // the sample at 0 is exactly one window old and falls out
        assert_eq!(w.push(3 * H, 10.0, 3 * H, Aggregate::Sum), 70.0);
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn mean_max_min() {
        let mut mean = Window::default();
        let mut max = Window::default();
        let mut min = Window::default();
        let data = [(0, 5.0), (10, 9.0), (20, 1.0), (30, 4.0)];
        let mut got = vec![];
        for (t, v) in data {
            got.push((
                mean.push(t, v, 25, Aggregate::Mean),
                max.push(t, v, 25, Aggregate::Max),
                min.push(t, v, 25, Aggregate::Min),
            ));
        }
        assert_eq!(got[2], (5.0, 9.0, 1.0));
        // at t=30 the window (5, 30] holds 9, 1, 4
        assert_eq!(got[3], (14.0 / 3.0, 9.0, 1.0));
        assert_eq!(max.push(40, 2.0, 25, Aggregate::Max), 4.0);
    }

    #[test]
    fn warm_after_one_window() {
        let mut w = Window::default();
        w.push(1000, 1.0, 500, Aggregate::Sum);
        assert!(!w.is_warm(1200, 500));
        assert!(w.is_warm(1500, 500));
    }
}
