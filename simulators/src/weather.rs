//! Rain for each district as a pure function of time, so a rain gauge and a river station in
//! the same district see the same storm, and the river answers it hours later.
//!
//! Time is cut into 6 h slots; a seeded hash decides whether a slot holds a shower, when it
//! starts, how long it lasts and how much falls. Showers are kept small enough (≤ 16 mm, two
//! at most in any 6 h) that no rain gauge passes a rainstorm signal in normal operation.

use crate::rng::{mix, unit_of};
use crate::signals::HOUR_MS;

const SLOT_MS: i64 = 6 * HOUR_MS;
const SHOWER_PROBABILITY: f64 = 0.15;
const MAX_SHOWER_MM: f64 = 16.0;
/// River response looks back this many times the time to peak. By then a shower's hydrograph
/// is below 1e-5 of its peak, so dropping it makes no visible step.
const RUNOFF_MEMORY_PEAKS: f64 = 10.0;

#[derive(Clone, Copy, Debug)]
struct Shower {
    start_ms: i64,
    duration_ms: i64,
    volume_mm: f64,
}

impl Shower {
    /// Rain fallen by `t` (triangular intensity, peaking mid-shower).
    fn fallen_by(&self, t: i64) -> f64 {
        let u = ((t - self.start_ms) as f64 / self.duration_ms as f64).clamp(0.0, 1.0);
        let frac = if u < 0.5 {
            2.0 * u * u
        } else {
            1.0 - 2.0 * (1.0 - u) * (1.0 - u)
        };
        self.volume_mm * frac
    }

    fn centre_ms(&self) -> i64 {
        self.start_ms + self.duration_ms / 2
    }
}

/// The weather of every district, derived from the fleet seed.
#[derive(Clone, Debug)]
pub(crate) struct Weather {
    seed: u64,
}

impl Weather {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed: mix(seed, 0x0057_4541_5448_4552),
        }
    }

    fn shower(&self, district: usize, slot: i64) -> Option<Shower> {
        let h = mix(mix(self.seed, district as u64), slot as u64);
        if unit_of(h) >= SHOWER_PROBABILITY {
            return None;
        }
        let h2 = mix(h, 1);
        let h3 = mix(h, 2);
        let h4 = mix(h, 3);
        let duration_ms = HOUR_MS / 2 + (unit_of(h2) * 2.5 * HOUR_MS as f64) as i64;
        let start_ms = slot * SLOT_MS + (unit_of(h3) * (SLOT_MS - duration_ms) as f64) as i64;
        let volume_mm = 2.0 + unit_of(h4) * (MAX_SHOWER_MM - 2.0);
        Some(Shower {
            start_ms,
            duration_ms,
            volume_mm,
        })
    }

    /// Rain (mm) that fell in the district during (t0, t1].
    pub(crate) fn rain_between(&self, district: usize, t0: i64, t1: i64) -> f64 {
        if t1 <= t0 {
            return 0.0;
        }
        (t0.div_euclid(SLOT_MS)..=t1.div_euclid(SLOT_MS))
            .filter_map(|slot| self.shower(district, slot))
            .map(|s| s.fallen_by(t1) - s.fallen_by(t0))
            .sum()
    }

    /// How much rain is currently draining to the river, in mm-equivalents: each shower adds a
    /// smooth hydrograph `V·x²·e^(2−2x)` (x = time since the shower / `peak_h`) that peaks at
    /// `V` after `peak_h` hours. Its steepest slope is 1.7·V/`peak_h` per hour, which keeps
    /// river levels within their physical rise rates.
    pub(crate) fn runoff(&self, district: usize, t: i64, lag_ms: i64, peak_h: f64) -> f64 {
        let t = t - lag_ms;
        let peak_ms = peak_h * HOUR_MS as f64;
        let memory_ms = (RUNOFF_MEMORY_PEAKS * peak_ms) as i64;
        ((t - memory_ms).div_euclid(SLOT_MS)..=t.div_euclid(SLOT_MS))
            .filter_map(|slot| self.shower(district, slot))
            .map(|s| {
                let x = (t - s.centre_ms()) as f64 / peak_ms;
                if x <= 0.0 {
                    0.0
                } else {
                    s.volume_mm * x * x * (2.0 - 2.0 * x).exp()
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rain_sums_match_over_any_split_and_stay_below_storm_signals() {
        let w = Weather::new(11);
        let start: i64 = 1_732_233_600_000;
        let end = start + 30 * 24 * HOUR_MS;
        let whole = w.rain_between(0, start, end);
        let mut parts = 0.0;
        let mut t = start;
        let mut max_3h: f64 = 0.0;
        let mut window: std::collections::VecDeque<f64> = Default::default();
        while t < end {
            let mm = w.rain_between(0, t, t + 10 * 60_000);
            parts += mm;
            window.push_back(mm);
            if window.len() > 18 {
                window.pop_front();
            }
            max_3h = max_3h.max(window.iter().sum());
            t += 10 * 60_000;
        }
        assert!(whole > 0.0, "a month without rain in Guangdong");
        assert!((whole - parts).abs() < 1e-6, "{whole} vs {parts}");
        assert!(
            max_3h < 50.0,
            "normal rain reached a rainstorm signal: {max_3h}"
        );
    }

    #[test]
    fn runoff_lags_the_rain() {
        let w = Weather::new(5);
        let start: i64 = 1_732_233_600_000;
        // find the first shower and check the river peaks well after its centre
        let slot = (0..1000)
            .map(|k| start.div_euclid(SLOT_MS) + k)
            .find_map(|s| w.shower(2, s).filter(|s| s.volume_mm > 8.0))
            .expect("some shower within 250 days");
        let at_centre = w.runoff(2, slot.centre_ms(), 0, 6.0);
        let later = w.runoff(2, slot.centre_ms() + 6 * HOUR_MS, 0, 6.0);
        assert!(later > at_centre + 1.0, "{at_centre} -> {later}");
    }
}
