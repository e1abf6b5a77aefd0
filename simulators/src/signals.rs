//! Building blocks for realistic signals: local time of day, diurnal shapes, bounded and
//! rate-limited noise, and a tipping-bucket rain counter.
//!
//! Every noise source here is *rate limited*: a reading may move by at most a fixed amount per
//! hour, whatever the reporting interval. A gateway's spike check compares consecutive readings,
//! so white noise sampled every 2 s would look like an impossible jump.

use crate::rng::SplitMix64;

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 86_400_000;
/// Guangdong is UTC+8 all year (no daylight saving).
const LOCAL_OFFSET_MS: i64 = 8 * HOUR_MS;

/// Local (UTC+8) hour of day in [0, 24).
pub(crate) fn local_hour(ts_ms: i64) -> f64 {
    (ts_ms + LOCAL_OFFSET_MS).rem_euclid(DAY_MS) as f64 / HOUR_MS as f64
}

/// Season in [-1, 1]: +1 around mid-July, -1 around mid-January.
pub(crate) fn season(ts_ms: i64) -> f64 {
    let day = ts_ms.rem_euclid(DAY_MS * 36_525 / 100) as f64 / DAY_MS as f64;
    ((day - 196.0) / 365.25 * std::f64::consts::TAU).cos()
}

/// Signed distance from `from` to `h` on the 24 h clock, in (-12, 12].
fn clock_delta(h: f64, from: f64) -> f64 {
    let d = (h - from).rem_euclid(24.0);
    if d > 12.0 {
        d - 24.0
    } else {
        d
    }
}

/// A bump centred at `center` o'clock with the given width in hours (1 at the centre).
pub(crate) fn bump(h: f64, center: f64, width: f64) -> f64 {
    let x = clock_delta(h, center) / width;
    (-x * x).exp()
}

/// Cosine with its maximum (+1) at `peak` o'clock.
pub(crate) fn daily_cos(h: f64, peak: f64) -> f64 {
    (clock_delta(h, peak) / 24.0 * std::f64::consts::TAU).cos()
}

/// 0 → 1 smoothly (cubic) as `x` goes from 0 to 1.
pub(crate) fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// 1 between `from` and `to` o'clock, ramping over `ramp` hours on each side (within the day).
pub(crate) fn plateau(h: f64, from: f64, to: f64, ramp: f64) -> f64 {
    smoothstep((h - from + ramp) / ramp) * smoothstep((to + ramp - h) / ramp)
}

/// Road traffic in [0, 1]: rush hours around 08:00 and 18:00, quiet before dawn.
pub(crate) fn traffic(h: f64) -> f64 {
    let t = 0.12
        + 0.85 * bump(h, 8.0, 1.3)
        + 0.8 * bump(h, 18.0, 1.6)
        + 0.35 * plateau(h, 10.0, 16.0, 1.5);
    t.min(1.0)
}

/// Sunlight in [0, 1], strongest shortly after 13:00.
pub(crate) fn daylight(h: f64) -> f64 {
    (((h - 6.5) / 13.0) * std::f64::consts::PI).sin().max(0.0)
}

/// Mean-reverting noise (a bounded Ornstein–Uhlenbeck walk) that never moves faster than
/// `max_rate_per_s`, so it stays below the spike limits at any reporting interval.
#[derive(Clone, Debug)]
pub(crate) struct Wander {
    x: f64,
    amp: f64,
    tau_s: f64,
    max_rate_per_s: f64,
}

impl Wander {
    /// `amp`: typical size; `tau_s`: how long a swing lasts; `max_rate_per_h`: the speed limit.
    pub(crate) fn new(rng: &mut SplitMix64, amp: f64, tau_s: f64, max_rate_per_h: f64) -> Self {
        Self {
            x: rng.signed() * amp,
            amp,
            tau_s,
            max_rate_per_s: max_rate_per_h / 3600.0,
        }
    }

    /// Advances by `dt_s` seconds and returns the new value, always within ±2.5 `amp`.
    pub(crate) fn step(&mut self, rng: &mut SplitMix64, dt_s: f64) -> f64 {
        if dt_s > 0.0 {
            let a = (dt_s / self.tau_s).min(1.0);
            let shock = rng.gauss() * self.amp * (2.0 * a).sqrt();
            let limit = self.max_rate_per_s * dt_s;
            let dx = (shock - self.x * a).clamp(-limit, limit);
            self.x = (self.x + dx).clamp(-2.5 * self.amp, 2.5 * self.amp);
        }
        self.x
    }

    pub(crate) fn value(&self) -> f64 {
        self.x
    }
}

/// A tipping-bucket rain gauge: it reports whole tips of `resolution` mm and carries the rest
/// to the next report, so the sum of reports equals the rain that fell.
#[derive(Clone, Debug)]
pub(crate) struct TippingBucket {
    resolution: f64,
    carried: f64,
}

impl TippingBucket {
    pub(crate) fn new(resolution: f64) -> Self {
        Self {
            resolution,
            carried: 0.0,
        }
    }

    /// Adds the rain since the last report and returns what this report shows.
    pub(crate) fn report(&mut self, mm: f64) -> f64 {
        self.carried += mm.max(0.0);
        let tips = (self.carried / self.resolution + 1e-9).floor();
        let shown = tips * self.resolution;
        self.carried = (self.carried - shown).max(0.0);
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hour_is_utc_plus_8() {
        // 2024-11-22T00:00:00Z is 08:00 in Guangdong.
        let ts = 1_732_233_600_000;
        assert!((local_hour(ts) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn traffic_peaks_at_rush_hours() {
        assert!(traffic(8.0) > 0.9);
        assert!(traffic(18.0) > 0.9);
        assert!(traffic(3.0) < 0.2);
        assert!(traffic(8.0) > traffic(12.0));
    }

    #[test]
    fn wander_respects_its_speed_limit_at_short_intervals() {
        let mut rng = SplitMix64::new(3);
        let mut w = Wander::new(&mut rng, 1.0, 600.0, 0.5);
        let mut last = w.value();
        for _ in 0..10_000 {
            let v = w.step(&mut rng, 2.0);
            assert!((v - last).abs() <= 0.5 / 3600.0 * 2.0 + 1e-12);
            last = v;
        }
    }

    #[test]
    fn tipping_bucket_loses_no_rain() {
        let mut b = TippingBucket::new(0.1);
        let shown: f64 = (0..100).map(|_| b.report(0.037)).sum();
        assert!((shown - 3.7).abs() < 0.1 + 1e-9, "{shown}");
        assert!(shown <= 3.7 + 1e-9);
    }
}
