//! Retry delays: exponential with jitter. Used for MQTT reconnects (rumqttc reconnects on the
//! next `poll` after an error, at once; without a delay a down or refusing broker would be
//! hammered in a tight loop) and for retried store writes.

use std::time::Duration;

/// Delays of successive attempts: `min`, doubling up to `max`, each drawn at random
/// from the upper half of its step (but never below `min`) so that many gateways restarted
/// together do not reconnect in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The step before jitter: `min * 2^attempt`, capped at `max`.
    fn step(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt; `unit` in [0, 1) is the jitter draw.
    fn delay_with(&mut self, unit: f64) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter = half.mul_f64(unit.clamp(0.0, 1.0));
        (half + jitter).max(self.min).min(self.max)
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delay_with(rand::random::<f64>())
    }

    /// After a success the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn grows_exponentially_and_caps_at_max() {
        let mut b = Backoff::new(MS(500), Duration::from_secs(30));
        // With the largest jitter draw every delay is its full step.
        let steps: Vec<Duration> = (0..10).map(|_| b.delay_with(1.0)).collect();
        assert_eq!(
            steps,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000].map(MS)
        );
    }

    #[test]
    fn jitter_stays_within_half_step_and_min() {
        let mut b = Backoff::new(MS(500), MS(8000));
        // The smallest draw gives half the step, but never less than min.
        let lows: Vec<Duration> = (0..6).map(|_| b.delay_with(0.0)).collect();
        assert_eq!(lows, [500, 500, 1000, 2000, 4000, 4000].map(MS));
        let mut b = Backoff::new(MS(100), MS(1000));
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(d >= MS(100) && d <= MS(1000), "{d:?} out of bounds");
        }
    }

    #[test]
    fn reset_starts_over_from_min() {
        let mut b = Backoff::new(MS(200), MS(5000));
        for _ in 0..5 {
            b.delay_with(1.0);
        }
        b.reset();
        assert_eq!(b.delay_with(1.0), MS(200));
        assert_eq!(b.delay_with(1.0), MS(400));
    }

    #[test]
    fn survives_huge_attempt_counts() {
        let mut b = Backoff::new(MS(500), Duration::from_secs(30));
        b.attempt = u32::MAX - 1;
        assert_eq!(b.delay_with(1.0), Duration::from_secs(30));
        assert_eq!(b.delay_with(1.0), Duration::from_secs(30));
    }
}
