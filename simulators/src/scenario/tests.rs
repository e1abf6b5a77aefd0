use std::collections::HashMap;

use super::*;

const START: i64 = 1_732_250_000_000;

#[test]
fn names_round_trip_and_every_scenario_documents_its_outcome() {
    for s in Scenario::ALL {
        assert_eq!(Scenario::parse(s.name()), Some(s));
        assert!(
            !s.expected_alerts().is_empty() || !s.expected_dead_letters().is_empty(),
            "{} documents nothing",
            s.name()
        );
        let text = s.describe();
        for a in s.expected_alerts() {
            assert!(text.contains(a.sensor), "{text}");
        }
    }
    assert_eq!(Scenario::parse("earthquake"), None);
}

#[test]
fn scripts_are_deterministic_ordered_and_end_at_the_timeline_end() {
    for s in Scenario::ALL {
        let script = s.script("city", START);
        assert_eq!(script, s.script("city", START), "{}", s.name());
        assert!(!script.messages.is_empty());
        assert!(script.messages.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let last = script.messages.last().map(|m| m.at_ms);
        assert!(
            last.is_some_and(|l| l <= s.duration_ms() && l >= s.duration_ms() - 3_600_000),
            "{}: last message at {last:?}",
            s.name()
        );
        for m in &script.messages {
            assert!(m.topic.starts_with("city/"), "{}", m.topic);
        }
    }
}

/// Each sensor's readings in a well-formed script come in time order, one per instant, so
/// the gateway evaluates every one of them (out-of-order readings skip the rules).
#[test]
fn each_sensor_reports_forward_in_time() {
    for s in [
        Scenario::Flood,
        Scenario::Pollution,
        Scenario::GasLeak,
        Scenario::MeterTamper,
        Scenario::Blackout,
    ] {
        let mut last: HashMap<String, i64> = HashMap::new();
        for m in s.script("city", START).messages {
            if let Some(prev) = last.insert(m.topic.clone(), m.at_ms) {
                assert!(
                    m.at_ms > prev,
                    "{}: {} twice at {}",
                    s.name(),
                    m.topic,
                    m.at_ms
                );
            }
        }
        assert_eq!(last.len(), s.sensors().len(), "{}", s.name());
    }
}

#[test]
fn flood_rain_totals_are_the_documented_ones() {
    let script = Scenario::Flood.script("city", START);
    let mut totals: HashMap<String, f64> = HashMap::new();
    for m in &script.messages {
        if !m.topic.ends_with("/senml") {
            continue;
        }
        let pack: serde_json::Value = serde_json::from_slice(&m.payload).expect("SenML is JSON");
        let sensor = pack[0]["bn"].as_str().unwrap_or("").to_string();
        *totals.entry(sensor).or_default() += pack[0]["v"].as_f64().unwrap_or(f64::NAN);
    }
    let total = |s: &str| totals.get(s).copied().unwrap_or(f64::NAN);
    assert!((total("rf-qc-01/") - 130.0).abs() < 1e-9);
    assert!((total("rf-qx-01/") - 70.0).abs() < 1e-9);
    assert!((total("rf-yd-01/") - 55.2).abs() < 1e-9);
}

#[test]
fn a_fast_replay_starts_in_the_past_and_a_slow_one_now() {
    let now = START;
    let d = Scenario::Flood.duration_ms();
    assert_eq!(start_for(Scenario::Flood, Pace::Unpaced, now), now - d);
    assert_eq!(
        start_for(Scenario::Flood, Pace::Speed(3600.0), now),
        now + d / 3600 - d
    );
    assert_eq!(start_for(Scenario::Flood, Pace::Speed(0.5), now), now);
}
