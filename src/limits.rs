//! Rate limits against hostile or broken input: a token bucket, driven by the caller's clock
//! (the pipeline has none of its own), shared by the per-sensor MQTT limit and the per-IP HTTP
//! ingest limit.

use crate::model::TimestampMs;

/// A sustained rate with a burst allowance. `per_second == 0` means no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens a bucket holds: what an idle client may spend at once.
    pub burst: f64,
}

impl Rate {
    pub fn new(per_second: f64, burst: u32) -> Option<Rate> {
        (per_second > 0.0 && per_second.is_finite()).then(|| Rate {
            per_second,
            // A burst below one token would never admit anything.
            burst: f64::from(burst).max(1.0),
        })
    }
}

/// One client's bucket. It starts full, so a client that was quiet may burst.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    at: TimestampMs,
}

impl TokenBucket {
    pub fn full(rate: &Rate, now: TimestampMs) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: &Rate, now: TimestampMs) {
        // A clock that steps back adds nothing, and the bucket re-anchors at the new time:
        // keeping the old one would refill nothing until the clock caught up again (an hour,
        // after an NTP step of an hour).
        let elapsed_ms = (now - self.at).max(0);
        self.tokens = (self.tokens + elapsed_ms as f64 * rate.per_second / 1000.0).min(rate.burst);
        self.at = now;
    }

    /// Takes one token, or says how many milliseconds until one is there.
    pub fn take(&mut self, rate: &Rate, now: TimestampMs) -> Result<(), u64> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            // Less a hair, so that float residue does not round 1.000…1 ms up to 2.
            Err((missing * 1000.0 / rate.per_second - 1e-6).ceil().max(1.0) as u64)
        }
    }

    /// When the bucket was last used (the caller's clock).
    pub fn last_seen(&self) -> TimestampMs {
        self.at
    }

    /// Whether the bucket has refilled completely: forgetting it then changes nothing.
    pub fn is_full(&self, rate: &Rate, now: TimestampMs) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= rate.burst
    }
}

/// A bucket made on first use, kept in the bucket's own 16 bytes (an `Option` would take 24):
/// the pipeline keeps one per sensor, 100,000s of them, most never used. "Not made" is a NaN
/// token count, which a made bucket never has (its rate and burst are finite, its count
/// clamped to the burst).
#[derive(Clone, Copy, Debug)]
pub struct LazyBucket(TokenBucket);

impl Default for LazyBucket {
    fn default() -> Self {
        LazyBucket(TokenBucket {
            tokens: f64::NAN,
            at: 0,
        })
    }
}

impl LazyBucket {
    /// The bucket, made full now if it was not made yet.
    pub fn get_or_full(&mut self, rate: &Rate, now: TimestampMs) -> &mut TokenBucket {
        if self.0.tokens.is_nan() {
            self.0 = TokenBucket::full(rate, now);
        }
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_the_rate() {
        let rate = Rate::new(2.0, 3).expect("a limit");
        let mut b = TokenBucket::full(&rate, 0);
        for _ in 0..3 {
            assert_eq!(b.take(&rate, 0), Ok(()));
        }
        assert_eq!(b.take(&rate, 0), Err(500), "one token every 500 ms");
        assert_eq!(b.take(&rate, 499), Err(1));
        assert_eq!(b.take(&rate, 500), Ok(()));
        assert!(!b.is_full(&rate, 500));
        assert!(b.is_full(&rate, 2000), "3 tokens back after 1.5 s");
        // never more than the burst, however long it was idle
        for _ in 0..3 {
            assert_eq!(b.take(&rate, 1_000_000), Ok(()));
        }
        assert!(b.take(&rate, 1_000_000).is_err());
    }

    #[test]
    fn a_clock_stepping_back_adds_nothing() {
        let rate = Rate::new(1.0, 1).expect("a limit");
        let mut b = TokenBucket::full(&rate, 10_000);
        assert_eq!(b.take(&rate, 10_000), Ok(()));
        // an hour back: nothing is added by the step itself...
        assert!(b.take(&rate, 10_000 - 3_600_000).is_err());
        // ...but the bucket refills from the new time on, not from the old one
        assert_eq!(b.take(&rate, 10_000 - 3_600_000 + 1_000), Ok(()));
        assert!(b.take(&rate, 10_000 - 3_600_000 + 1_500).is_err());
    }

    #[test]
    fn a_lazy_bucket_is_made_full_on_first_use_and_kept() {
        let rate = Rate::new(1.0, 2).expect("a limit");
        let mut lazy = LazyBucket::default();
        assert_eq!(lazy.get_or_full(&rate, 5_000).take(&rate, 5_000), Ok(()));
        assert_eq!(lazy.get_or_full(&rate, 5_000).take(&rate, 5_000), Ok(()));
        // Spent, not made again: the third token comes a second later.
        assert_eq!(lazy.get_or_full(&rate, 5_000).take(&rate, 5_000), Err(1000));
        assert_eq!(lazy.get_or_full(&rate, 6_000).last_seen(), 5_000);
        assert_eq!(std::mem::size_of::<LazyBucket>(), 16);
    }

    #[test]
    fn zero_is_no_limit() {
        assert_eq!(Rate::new(0.0, 10), None);
        assert_eq!(Rate::new(f64::NAN, 10), None);
    }
}
