//! Timestamp conversions shared by the decoders. Every result is milliseconds since the Unix
//! epoch, UTC, within years 1..=9999 so that any later formatting of it cannot fail.

use super::Precision;
use crate::model::TimestampMs;

/// 0001-01-01T00:00:00Z.
pub(crate) const MIN_TS_MS: TimestampMs = -62_135_596_800_000;
/// 9999-12-31T23:59:59.999Z.
pub(crate) const MAX_TS_MS: TimestampMs = 253_402_300_799_999;

pub(crate) const OUT_OF_RANGE: &str = "outside the years 1 to 9999";

fn in_range(ms: TimestampMs) -> Option<TimestampMs> {
    (MIN_TS_MS..=MAX_TS_MS).contains(&ms).then_some(ms)
}

/// Epoch milliseconds as a JSON number; fractions of a millisecond are rounded.
pub(crate) fn from_ms_f64(ms: f64) -> Option<TimestampMs> {
    let rounded = ms.round();
    // The range check on the float keeps the cast below exact and in range.
    if !(MIN_TS_MS as f64..=MAX_TS_MS as f64).contains(&rounded) {
        return None;
    }
    Some(rounded as TimestampMs)
}

/// Epoch seconds as a float (SenML).
pub(crate) fn from_secs_f64(secs: f64) -> Option<TimestampMs> {
    from_ms_f64(secs * 1000.0)
}

/// An RFC 3339 date-time, e.g. `2024-11-22T12:33:20+08:00`, to epoch milliseconds.
pub(crate) fn parse_rfc3339(text: &str) -> Option<TimestampMs> {
    let dt = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    in_range(dt.timestamp_millis())
}

/// A line-protocol integer timestamp in the given precision. Sub-millisecond parts are
/// floored, so that a point never moves to a later millisecond than it happened in.
pub(crate) fn from_precision(value: i64, precision: Precision) -> Option<TimestampMs> {
    let ms = match precision {
        Precision::Ns => value.div_euclid(1_000_000),
        Precision::Us => value.div_euclid(1_000),
        Precision::Ms => value,
        Precision::S => value.checked_mul(1_000)?,
    };
    in_range(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_offsets_are_applied() {
        assert_eq!(
            parse_rfc3339("2024-11-22T12:33:20+08:00"),
            Some(1_732_250_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-11-22T04:33:20.123Z"),
            Some(1_732_250_000_123)
        );
        assert_eq!(parse_rfc3339("2024-11-22 04:33:20"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn precisions_floor_to_milliseconds() {
        assert_eq!(
            from_precision(1_732_250_000_123_999_999, Precision::Ns),
            Some(1_732_250_000_123)
        );
        assert_eq!(from_precision(-1, Precision::Ns), Some(-1));
        assert_eq!(
            from_precision(1_732_250_000_123_456, Precision::Us),
            Some(1_732_250_000_123)
        );
        assert_eq!(
            from_precision(1_732_250_000, Precision::S),
            Some(1_732_250_000_000)
        );
        assert_eq!(from_precision(i64::MAX, Precision::S), None);
        assert_eq!(from_precision(i64::MAX, Precision::Ms), None);
    }

    #[test]
    fn float_milliseconds_are_rounded_and_bounded() {
        assert_eq!(from_ms_f64(1_732_250_000_000.6), Some(1_732_250_000_001));
        assert_eq!(from_ms_f64(f64::NAN), None);
        assert_eq!(from_ms_f64(f64::INFINITY), None);
        assert_eq!(from_ms_f64(1e300), None);
        assert_eq!(from_secs_f64(1_732_250_000.5), Some(1_732_250_000_500));
    }
}
