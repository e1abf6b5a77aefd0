//! Rolling windows over reading time, for windowed rule aggregates.
//!
//! The windowed rules of one metric share one buffer of samples ([`Series`]), kept as long as
//! the longest of their windows; each rule keeps only its running aggregate and where its
//! window starts in that buffer ([`WindowAgg`]). Air-quality stations, say, watch SO₂ over
//! 1 h and 24 h: one copy of the samples instead of one per rule, and a few words per rule.
//! At 100,000 sensors this is most of the gateway's memory (see BENCHMARKS.md).

use std::collections::VecDeque;

use crate::catalog::spec::Aggregate;

/// Most samples one window keeps: a day at one reading every 10 s. A device reporting faster
/// than that has its oldest samples dropped early (the aggregate then covers a shorter
/// span), so that no input rate can make a window's memory grow without bound.
pub const MAX_SAMPLES: usize = 8_640;

/// Reading time of "no sample yet".
const NEVER: i64 = i64::MIN;

/// A sample's position in the whole stream of its series, counted modulo 2³²: the samples
/// alive at once are far fewer than that (at most [`MAX_SAMPLES`] + 1), so a wrapping
/// distance from the oldest one is exact, and four bytes per rule instead of eight.
type Pos = u32;

/// Words (u32) before the first sample of a narrow buffer: the base its offsets count from.
const HEADER: usize = 2;
/// Words per sample: narrow (time offset, value), wide (time, value).
const NARROW: usize = 3;
const WIDE: usize = 4;
/// The smallest capacity, in samples. Capacities are powers of two, so that a position's
/// slot is `pos % capacity` whatever the wrap, and, from 4 up, a narrow buffer's length
/// (2 + 3 × capacity) is never a power of two while a wide one's (4 × capacity) always is:
/// the length says which it is.
const MIN_CAPACITY: usize = 4;

/// The samples of one metric within its longest window, shared by that metric's windowed
/// rules. Samples are addressed by their position in the whole stream (`dropped` counts
/// those already let go), so that a rule's start survives the buffer's trimming.
///
/// A ring of its own rather than a `VecDeque<(i64, f64)>`, one of these per windowed metric
/// of every sensor: 32 bytes instead of 48, and 12 bytes per sample instead of 16, the time
/// kept as a `u32` millisecond offset from a base at the buffer's head. When a sample does
/// not fit (the live samples would span more than 49 days) the buffer is rebased, or, if
/// that cannot help, turned wide (full `i64` times, 16 bytes a sample) until it empties:
/// every time stays exact.
#[derive(Clone, Debug)]
pub struct Series {
    /// Empty, or narrow (`HEADER` words of base, then `NARROW` words per slot), or wide
    /// (`WIDE` words per slot); see [`MIN_CAPACITY`]. Slot of position `p`: `p % capacity`.
    buf: Box<[u32]>,
    /// Reading time of the first sample this series ever held: until a whole window has
    /// passed since then (after a restart, say) an aggregate is incomplete.
    first_ts: i64,
    dropped: Pos,
    /// Samples held (at most [`MAX_SAMPLES`] + 1, between a push and its trim).
    len: u16,
    /// Where the windows of the metric's rules begin in the sensor's list of windows: here,
    /// where it fills padding, rather than in a table beside the series.
    first_window: u16,
}

fn join(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

fn split(x: u64) -> (u32, u32) {
    (x as u32, (x >> 32) as u32)
}

impl Series {
    pub fn new(first_window: u16) -> Series {
        Series {
            buf: Box::default(),
            first_ts: NEVER,
            dropped: 0,
            len: 0,
            first_window,
        }
    }

    pub fn first_window(&self) -> usize {
        usize::from(self.first_window)
    }

    fn is_wide(&self) -> bool {
        self.buf.len().is_power_of_two()
    }

    fn capacity(&self) -> usize {
        match self.buf.len() {
            0 => 0,
            n if n.is_power_of_two() => n / WIDE,
            n => (n - HEADER) / NARROW,
        }
    }

    fn base(&self) -> i64 {
        join(self.buf[0], self.buf[1]) as i64
    }

    /// The `i`th sample from the oldest; `i < len`.
    fn get(&self, i: usize) -> (i64, f64) {
        let slot = (self.dropped as usize).wrapping_add(i) & (self.capacity() - 1);
        if self.is_wide() {
            let w = &self.buf[slot * WIDE..][..WIDE];
            (join(w[0], w[1]) as i64, f64::from_bits(join(w[2], w[3])))
        } else {
            let w = &self.buf[HEADER + slot * NARROW..][..NARROW];
            let ts = self.base().wrapping_add(i64::from(w[0]));
            (ts, f64::from_bits(join(w[1], w[2])))
        }
    }

    /// Writes sample `i` from the oldest; its time must fit the buffer.
    fn set(&mut self, i: usize, ts: i64, value: f64) {
        let slot = (self.dropped as usize).wrapping_add(i) & (self.capacity() - 1);
        let (v_lo, v_hi) = split(value.to_bits());
        if self.is_wide() {
            let (t_lo, t_hi) = split(ts as u64);
            self.buf[slot * WIDE..][..WIDE].copy_from_slice(&[t_lo, t_hi, v_lo, v_hi]);
        } else {
            let off = ts.wrapping_sub(self.base()) as u32;
            self.buf[HEADER + slot * NARROW..][..NARROW].copy_from_slice(&[off, v_lo, v_hi]);
        }
    }

    /// Whether `ts` fits a narrow buffer as it is.
    fn fits(&self, ts: i64) -> bool {
        ts.checked_sub(self.base())
            .is_some_and(|off| u32::try_from(off).is_ok())
    }

    /// Lays the live samples out again in a buffer of `capacity` samples, narrow with the
    /// oldest time as base when `narrow_base` is given, else wide. O(len), and rare: on
    /// growth (amortised, as in a `Vec`), and when a time does not fit.
    fn relayout(&mut self, capacity: usize, narrow_base: Option<i64>) {
        let samples: Vec<(i64, f64)> = (0..self.len()).map(|i| self.get(i)).collect();
        self.buf = match narrow_base {
            Some(base) => {
                let mut buf = vec![0; HEADER + capacity * NARROW];
                (buf[0], buf[1]) = split(base as u64);
                buf.into_boxed_slice()
            }
            None => vec![0; capacity * WIDE].into_boxed_slice(),
        };
        for (i, &(ts, value)) in samples.iter().enumerate() {
            self.set(i, ts, value);
        }
    }

    /// Adds a sample; every rule of the metric then [`WindowAgg::push`]es it, and
    /// [`Series::trim`] lets go of what all of them have passed.
    pub fn push(&mut self, ts: i64, value: f64) {
        if self.first_ts == NEVER {
            self.first_ts = ts;
        }
        let len = self.len();
        if len == 0 && (self.buf.is_empty() || self.is_wide()) {
            // Narrow again once a wide buffer has emptied.
            self.relayout(self.capacity().max(MIN_CAPACITY), Some(ts));
        } else if !self.is_wide() && !self.fits(ts) {
            let (lo, hi) = (0..len)
                .map(|i| self.get(i).0)
                .fold((ts, ts), |(lo, hi), t| (lo.min(t), hi.max(t)));
            let span = hi.checked_sub(lo).and_then(|d| u32::try_from(d).ok());
            let narrow = span.is_some();
            self.relayout(self.capacity(), narrow.then_some(lo));
        }
        // The pipeline trims after every push, so `len` stays within MAX_SAMPLES + 1.
        debug_assert!(len < usize::from(u16::MAX), "a series was not trimmed");
        if len == self.capacity() {
            let base = (!self.is_wide()).then(|| self.base());
            self.relayout(self.capacity() * 2, base);
        }
        self.len += 1;
        self.set(len, ts, value);
    }

    /// Drops the samples older than `keep_ms`, the longest window of the metric's rules, at
    /// `ts` (every rule's window, being no longer, has already passed them), and any beyond
    /// [`MAX_SAMPLES`].
    pub fn trim(&mut self, ts: i64, keep_ms: i64) {
        let cutoff = ts.saturating_sub(keep_ms);
        while self.len > 0 {
            let (t, _) = self.get(0);
            if t > cutoff && self.len() <= MAX_SAMPLES {
                break;
            }
            self.len -= 1;
            self.dropped = self.dropped.wrapping_add(1);
        }
    }

    fn end(&self) -> Pos {
        self.dropped.wrapping_add(Pos::from(self.len))
    }

    /// Where `pos` is from the oldest sample.
    fn index(&self, pos: Pos) -> usize {
        pos.wrapping_sub(self.dropped) as usize
    }

    fn at(&self, pos: Pos) -> (i64, f64) {
        // A rule's start is never behind `dropped` (see `trim`); `(NEVER, 0)` would only
        // make a bug visible as an empty window rather than a panic.
        let i = self.index(pos);
        if i < self.len() {
            self.get(i)
        } else {
            (NEVER, 0.0)
        }
    }

    /// Whether the series has seen `len_ms` of reading time.
    pub fn is_warm(&self, now_ts: i64, len_ms: i64) -> bool {
        self.first_ts != NEVER && now_ts - self.first_ts >= len_ms
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The candidates a max or min window keeps (boxed and made on first use, so that the sums
/// and means, most rules, pay one word for it).
#[allow(clippy::box_collection)] // a Box is one word; a VecDeque, four
pub type Candidates = Option<Box<VecDeque<(i64, f64)>>>;

/// One rule's aggregate over the last `len_ms` of a [`Series`], in O(1) amortised.
///
/// Sum and mean keep a running sum, recomputed from the samples now and then so that float
/// error from adding and subtracting cannot build up over months. Max and min keep a
/// monotonic deque of candidates, which the caller keeps ([`Candidates`]): a rule that is not
/// windowed uses the same word for other things.
#[derive(Clone, Debug, Default)]
pub struct WindowAgg {
    sum: f64,
    /// Stream position of the oldest sample in this rule's window.
    start: Pos,
    ops_since_resum: u32,
}

impl WindowAgg {
    /// Takes the sample just pushed onto `series` (at `ts`), drops those that fell out of
    /// the window, and returns the aggregate.
    pub fn push(
        &mut self,
        series: &Series,
        len_ms: i64,
        agg: Aggregate,
        extreme: &mut Candidates,
    ) -> f64 {
        let end = series.end();
        if series.is_empty() {
            return 0.0;
        }
        let (ts, value) = series.get(series.len() - 1);
        let cutoff = ts.saturating_sub(len_ms);
        // Cannot happen (every rule of the metric passes a sample before `trim` lets it go);
        // caught in tests, and in a release build the window just starts at what is left.
        debug_assert!(
            series.index(self.start) < series.len(),
            "a rule fell behind its series"
        );
        if series.index(self.start) >= series.len() {
            self.start = series.dropped;
        }
        // The new sample is at `end - 1`; the window before it is [start, end - 1). Counted
        // as offsets from `dropped`, which do not wrap.
        let last = series.len() - 1;
        let mut first = series.index(self.start);
        while first < last {
            let (t, v) = series.get(first);
            if t > cutoff && last - first < MAX_SAMPLES {
                break;
            }
            first += 1;
            self.sum -= v;
            self.ops_since_resum += 1;
        }
        self.start = series.dropped.wrapping_add(first as Pos);
        self.sum += value;
        if self.ops_since_resum > 4096 {
            self.sum = (first..series.len()).map(|i| series.get(i).1).sum();
            self.ops_since_resum = 0;
        }
        match agg {
            Aggregate::Sum => self.sum,
            Aggregate::Mean => self.sum / end.wrapping_sub(self.start) as f64,
            Aggregate::Max | Aggregate::Min => {
                let oldest = series.at(self.start).0;
                let extreme = extreme.get_or_insert_with(Default::default);
                while extreme
                    .front()
                    .is_some_and(|&(t, _)| t <= cutoff || t < oldest)
                {
                    extreme.pop_front();
                }
                let dominated = |old: f64| match agg {
                    Aggregate::Max => old <= value,
                    _ => old >= value,
                };
                while extreme.back().is_some_and(|&(_, v)| dominated(v)) {
                    extreme.pop_back();
                }
                extreme.push_back((ts, value));
                extreme.front().map_or(value, |&(_, v)| v)
            }
        }
    }

    /// How many samples this rule's window holds.
    pub fn len(&self, series: &Series) -> usize {
        series.end().wrapping_sub(self.start) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    /// One rule alone on its series, as the old one-window-per-rule code was.
    struct Solo {
        series: Series,
        agg: WindowAgg,
        extreme: Candidates,
        len: i64,
    }

    impl Solo {
        fn new(len: i64) -> Solo {
            Solo {
                series: Series::new(0),
                agg: WindowAgg::default(),
                extreme: None,
                len,
            }
        }

        fn push(&mut self, ts: i64, v: f64, a: Aggregate) -> f64 {
            self.series.push(ts, v);
            let x = self.agg.push(&self.series, self.len, a, &mut self.extreme);
            self.series.trim(ts, self.len);
            x
        }
    }

    #[test]
    fn sum_drops_samples_older_than_the_window() {
        let mut w = Solo::new(3 * H);
        assert_eq!(w.push(0, 30.0, Aggregate::Sum), 30.0);
        assert_eq!(w.push(H, 30.0, Aggregate::Sum), 60.0);
        assert_eq!(w.push(2 * H, 30.0, Aggregate::Sum), 90.0);
        // the sample at 0 is exactly one window old and falls out
        assert_eq!(w.push(3 * H, 10.0, Aggregate::Sum), 70.0);
        assert_eq!(w.agg.len(&w.series), 3);
        assert_eq!(w.series.len(), 3);
    }

    #[test]
    fn mean_max_min() {
        let mut mean = Solo::new(25);
        let mut max = Solo::new(25);
        let mut min = Solo::new(25);
        let data = [(0, 5.0), (10, 9.0), (20, 1.0), (30, 4.0)];
        let mut got = vec![];
        for (t, v) in data {
            got.push((
                mean.push(t, v, Aggregate::Mean),
                max.push(t, v, Aggregate::Max),
                min.push(t, v, Aggregate::Min),
            ));
        }
        assert_eq!(got[2], (5.0, 9.0, 1.0));
        // at t=30 the window (5, 30] holds 9, 1, 4
        assert_eq!(got[3], (14.0 / 3.0, 9.0, 1.0));
        assert_eq!(max.push(40, 2.0, Aggregate::Max), 4.0);
    }

    #[test]
    fn warm_after_one_window() {
        let mut w = Solo::new(500);
        w.push(1000, 1.0, Aggregate::Sum);
        assert!(!w.series.is_warm(1200, 500));
        assert!(w.series.is_warm(1500, 500));
    }

    /// Rules of 1 h, 3 h and 24 h on one series give what each would alone, and the series
    /// keeps only the longest window's samples.
    #[test]
    fn rules_sharing_a_series_agree_with_rules_alone() {
        let lens = [H, 3 * H, 24 * H];
        let aggs = [
            Aggregate::Sum,
            Aggregate::Mean,
            Aggregate::Max,
            Aggregate::Min,
        ];
        let mut shared = Series::new(0);
        let mut rules: Vec<(i64, Aggregate, WindowAgg, Candidates, Solo)> = lens
            .iter()
            .flat_map(|&l| aggs.iter().map(move |&a| (l, a)))
            .map(|(l, a)| (l, a, WindowAgg::default(), None, Solo::new(l)))
            .collect();
        // every 7 minutes for three days, with a few readings out of order
        for i in 0..(3 * 24 * 60 / 7) {
            let ts = i * 7 * 60_000 - if i % 13 == 0 { 20 * 60_000 } else { 0 };
            let v = ((i * 37) % 101) as f64 / 10.0;
            shared.push(ts, v);
            for (l, a, agg, extreme, solo) in &mut rules {
                let got = agg.push(&shared, *l, *a, extreme);
                let want = solo.push(ts, v, *a);
                assert!(
                    (got - want).abs() < 1e-9,
                    "{a:?} over {l} ms at {ts}: {got} shared, {want} alone"
                );
                assert_eq!(agg.len(&shared), solo.agg.len(&solo.series));
            }
            shared.trim(ts, 24 * H);
        }
        assert!(
            shared.len() <= 24 * 60 / 7 + 2,
            "{} samples kept",
            shared.len()
        );
    }

    /// A device faster than MAX_SAMPLES per window: the series and every rule stay bounded.
    #[test]
    fn samples_are_capped() {
        let mut shared = Series::new(0);
        let mut day = WindowAgg::default();
        let mut hour = WindowAgg::default();
        for i in 0..(MAX_SAMPLES as i64 * 2) {
            shared.push(i * 1000, 1.0);
            assert!(day.push(&shared, 24 * H, Aggregate::Sum, &mut None) <= MAX_SAMPLES as f64);
            assert!(hour.push(&shared, H, Aggregate::Sum, &mut None) <= 3600.0);
            shared.trim(i * 1000, 24 * H);
        }
        assert_eq!(shared.len(), MAX_SAMPLES);
        assert_eq!(day.len(&shared), MAX_SAMPLES);
        assert_eq!(hour.len(&shared), 3600);
    }

    /// Stream positions are counted modulo 2³²: rules whose windows straddle the wrap give
    /// what the same rules give far from it.
    #[test]
    fn positions_wrap_past_u32_max() {
        let aggs = [
            Aggregate::Sum,
            Aggregate::Mean,
            Aggregate::Max,
            Aggregate::Min,
        ];
        let mut near = Series::new(0);
        let mut far = Series::new(0);
        near.dropped = u32::MAX - 50;
        let mut rules: Vec<_> = aggs
            .iter()
            .map(|&a| {
                let at_wrap = WindowAgg {
                    start: near.dropped,
                    ..WindowAgg::default()
                };
                (a, at_wrap, None, WindowAgg::default(), None)
            })
            .collect();
        for i in 0..400_i64 {
            let (ts, v) = (i * 60_000, ((i * 37) % 101) as f64);
            near.push(ts, v);
            far.push(ts, v);
            for (a, n, n_ext, f, f_ext) in &mut rules {
                let got = n.push(&near, H, *a, n_ext);
                let want = f.push(&far, H, *a, f_ext);
                assert_eq!(got, want, "{a:?} at {ts}");
                assert_eq!(n.len(&near), f.len(&far));
            }
            near.trim(ts, H);
            far.trim(ts, H);
        }
        assert!(near.dropped < 400, "the positions did wrap");
        assert_eq!(near.len(), 60);
    }

    /// The `VecDeque<(i64, f64)>` series and its rules' aggregate as they were before the
    /// ring of 12-byte samples, kept as the oracle the ring must agree with exactly.
    mod oracle {
        use std::collections::VecDeque;

        use super::super::MAX_SAMPLES;
        use crate::catalog::spec::Aggregate;

        #[derive(Default)]
        pub struct Series {
            pub samples: VecDeque<(i64, f64)>,
            pub dropped: u64,
        }

        impl Series {
            pub fn trim(&mut self, ts: i64, keep_ms: i64) {
                let cutoff = ts.saturating_sub(keep_ms);
                while let Some(&(t, _)) = self.samples.front() {
                    if t > cutoff && self.samples.len() <= MAX_SAMPLES {
                        break;
                    }
                    self.samples.pop_front();
                    self.dropped += 1;
                }
            }
        }

        #[derive(Default)]
        pub struct Rule {
            sum: f64,
            start: u64,
            ops: u32,
            extreme: VecDeque<(i64, f64)>,
        }

        impl Rule {
            pub fn push(&mut self, s: &Series, len_ms: i64, agg: Aggregate) -> (f64, usize) {
                let &(ts, value) = s.samples.back().expect("pushed");
                let cutoff = ts.saturating_sub(len_ms);
                let last = s.samples.len() - 1;
                let mut first = (self.start - s.dropped) as usize;
                while first < last {
                    let (t, v) = s.samples[first];
                    if t > cutoff && last - first < MAX_SAMPLES {
                        break;
                    }
                    first += 1;
                    self.sum -= v;
                    self.ops += 1;
                }
                self.start = s.dropped + first as u64;
                self.sum += value;
                if self.ops > 4096 {
                    self.sum = s.samples.range(first..).map(|&(_, v)| v).sum();
                    self.ops = 0;
                }
                let n = s.samples.len() - first;
                let x = match agg {
                    Aggregate::Sum => self.sum,
                    Aggregate::Mean => self.sum / n as f64,
                    Aggregate::Max | Aggregate::Min => {
                        let oldest = s.samples[first].0;
                        let e = &mut self.extreme;
                        while e.front().is_some_and(|&(t, _)| t <= cutoff || t < oldest) {
                            e.pop_front();
                        }
                        while e.back().is_some_and(|&(_, v)| match agg {
                            Aggregate::Max => v <= value,
                            _ => v >= value,
                        }) {
                            e.pop_back();
                        }
                        e.push_back((ts, value));
                        e.front().map_or(value, |&(_, v)| v)
                    }
                };
                (x, n)
            }
        }
    }

    /// How far apart the proptest's readings may be: a few in seconds, most in hours, some
    /// months apart, some before the last, and a few beyond any u32 offset either way.
    fn step() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => 0..60_000_i64,
            4 => 0..6 * H,
            1 => -6 * H..0,
            1 => 40 * 24 * H..80 * 24 * H,
            1 => -(80 * 24 * H)..-(40 * 24 * H),
            1 => Just(i64::from(u32::MAX)),
            1 => Just(i64::from(u32::MAX) + 1),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the times (out of order, months apart, past any 32-bit offset), the ring
        /// keeps the same samples as a `VecDeque` of full times and every rule's aggregate
        /// and length are bit for bit what they were.
        #[test]
        fn the_ring_agrees_with_a_deque_of_full_times(
            start in -(1_i64 << 45)..(1_i64 << 45),
            readings in proptest::collection::vec((step(), -1e6..1e6_f64), 1..400),
            long in prop_oneof![Just(24 * H), Just(60 * 24 * H), Just(1_i64 << 40)],
        ) {
            let lens = [H, 3 * H, long];
            let aggs = [Aggregate::Sum, Aggregate::Mean, Aggregate::Max, Aggregate::Min];
            let mut ring = Series::new(0);
            let mut deque = oracle::Series::default();
            let mut rules: Vec<_> = lens
                .iter()
                .flat_map(|&l| aggs.iter().map(move |&a| (l, a)))
                .map(|(l, a)| (l, a, WindowAgg::default(), None, oracle::Rule::default()))
                .collect();
            let mut ts = start;
            for (dt, v) in readings {
                ts += dt;
                ring.push(ts, v);
                deque.samples.push_back((ts, v));
                for (l, a, agg, extreme, want) in &mut rules {
                    let got = agg.push(&ring, *l, *a, extreme);
                    let (want, n) = want.push(&deque, *l, *a);
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "{:?} over {} at {}", a, l, ts);
                    prop_assert_eq!(agg.len(&ring), n);
                }
                ring.trim(ts, long);
                deque.trim(ts, long);
                let held: Vec<_> = (0..ring.len()).map(|i| ring.get(i)).collect();
                let want: Vec<_> = deque.samples.iter().copied().collect();
                prop_assert_eq!(held, want);
            }
        }
    }

    /// A series that went wide (samples more than 49 days apart) is narrow again once it
    /// has emptied, and a series past its rebase keeps its samples.
    #[test]
    fn wide_and_narrow_again() {
        let mut s = Series::new(0);
        s.push(0, 1.0);
        s.push(i64::from(u32::MAX) + 1, 2.0);
        assert!(s.is_wide());
        assert_eq!(s.get(0), (0, 1.0));
        assert_eq!(s.get(1), (i64::from(u32::MAX) + 1, 2.0));
        s.trim(i64::MAX, 1);
        assert!(s.is_empty());
        s.push(5, 3.0);
        assert!(!s.is_wide());
        assert_eq!(s.get(0), (5, 3.0));
        // out of order below the base: rebased, still narrow
        s.push(-1000, 4.0);
        assert!(!s.is_wide());
        assert_eq!((s.get(0), s.get(1)), ((5, 3.0), (-1000, 4.0)));
        // twelve bytes a sample, plus the base
        assert_eq!(s.buf.len(), HEADER + MIN_CAPACITY * NARROW);
    }
}
