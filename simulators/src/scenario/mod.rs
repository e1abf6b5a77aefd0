//! Scripted incidents an operator or a test can replay against a gateway running
//! `config/examples/city.toml`: `flood`, `pollution`, `gas-leak`, `meter-tamper`, `blackout`
//! and `bad-devices`.
//!
//! A scenario is a deterministic list of MQTT messages on a simulated timeline. Hours of
//! incident are compressed into seconds with synthetic timestamps (event time): the
//! timeline is placed so that its last reading is stamped about "now", inside the gateway's
//! `max_age` (7 d) and future-skew window. The gateway's rules run on reading time, so the
//! same script always raises the same alerts, whatever the replay speed. Only the deadman
//! (`blackout`) runs on the gateway's wall clock.
//!
//! Each scenario documents, as data, what the gateway should do with it:
//! [`Scenario::expected_alerts`] (every alert, with the highest severity it reaches and
//! whether it is still active at the end) and [`Scenario::expected_dead_letters`] (rejected
//! inputs by reason). The integration tests (`tests/scenarios.rs` in the gateway crate) hold
//! the gateway to exactly these, no more and no fewer.

mod scripts;

use std::fmt::Write as _;
use std::time::Duration;

use crate::publish::{PublishError, Publisher};
use crate::wire::{self, Report, WireFormat};

/// An alert severity, as the gateway names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

/// Whether an alert is still active when the scenario has played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FinalState {
    Active,
    Resolved,
}

impl FinalState {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalState::Active => "active",
            FinalState::Resolved => "resolved",
        }
    }
}

/// One alert a scenario raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExpectedAlert {
    pub sensor: &'static str,
    /// The catalog rule, or the gateway's own `sensor_fault` / `offline`.
    pub rule: &'static str,
    /// The metric (empty for `offline`).
    pub metric: &'static str,
    /// The highest severity the alert reaches.
    pub severity: Severity,
    pub final_state: FinalState,
    /// Why, for people.
    pub why: &'static str,
}

/// Rejected inputs of one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExpectedDeadLetters {
    /// The gateway's dead-letter reason code.
    pub reason: &'static str,
    pub count: u32,
    pub why: &'static str,
}

/// One MQTT message of a script.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptMessage {
    /// Position on the simulated timeline, ms after its start (for pacing).
    pub at_ms: i64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A scenario's messages, in the order they are published.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    /// Epoch ms of the timeline's zero.
    pub start_ms: i64,
    /// Length of the simulated timeline.
    pub duration_ms: i64,
    pub messages: Vec<ScriptMessage>,
}

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    Flood,
    Pollution,
    GasLeak,
    MeterTamper,
    Blackout,
    BadDevices,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Flood,
        Scenario::Pollution,
        Scenario::GasLeak,
        Scenario::MeterTamper,
        Scenario::Blackout,
        Scenario::BadDevices,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Flood => "flood",
            Scenario::Pollution => "pollution",
            Scenario::GasLeak => "gas-leak",
            Scenario::MeterTamper => "meter-tamper",
            Scenario::Blackout => "blackout",
            Scenario::BadDevices => "bad-devices",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line.
    pub fn summary(self) -> &'static str {
        scripts::summary(self)
    }

    /// What happens, for people.
    pub fn story(self) -> &'static str {
        scripts::story(self)
    }

    /// The sensors of `config/examples/city.toml` the scenario drives.
    pub fn sensors(self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = scripts::cast_of(self).iter().map(|s| s.id).collect();
        ids.dedup();
        ids
    }

    /// Every alert the gateway (running city.toml) raises for this scenario.
    pub fn expected_alerts(self) -> Vec<ExpectedAlert> {
        scripts::expected_alerts(self)
    }

    /// Every rejected input, by reason.
    pub fn expected_dead_letters(self) -> Vec<ExpectedDeadLetters> {
        scripts::expected_dead_letters(self)
    }

    /// Length of the simulated timeline.
    pub fn duration_ms(self) -> i64 {
        scripts::duration_ms(self)
    }

    /// The messages, on topics under `prefix` (`city` for the default routes), with the
    /// timeline starting at `start_ms`.
    pub fn script(self, prefix: &str, start_ms: i64) -> Script {
        let mut messages = Vec::new();
        scripts::write(
            self,
            &mut Writer {
                prefix,
                start_ms,
                out: &mut messages,
            },
        );
        // Stable: messages of one instant keep the order they were written in.
        messages.sort_by_key(|m| m.at_ms);
        Script {
            start_ms,
            duration_ms: self.duration_ms(),
            messages,
        }
    }

    /// The expectations as text: `scenario --list` and `scenario NAME --help`.
    pub fn describe(self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "{}: {}", self.name(), self.summary());
        let _ = writeln!(t, "{}", self.story());
        let _ = writeln!(
            t,
            "Simulated span: {}; sensors: {}",
            humanize(self.duration_ms()),
            self.sensors().join(", ")
        );
        let alerts = self.expected_alerts();
        if alerts.is_empty() {
            let _ = writeln!(t, "Expected alerts: none");
        } else {
            let _ = writeln!(t, "Expected alerts (highest severity, state at the end):");
            for a in alerts {
                // A rule named after its metric says it once.
                let metric = if a.metric.is_empty() || a.metric == a.rule {
                    String::new()
                } else {
                    format!("/{}", a.metric)
                };
                let _ = writeln!(
                    t,
                    "  {:<10} {:<26} {:<8} {:<8} {}",
                    a.sensor,
                    format!("{}{metric}", a.rule),
                    a.severity.as_str(),
                    a.final_state.as_str(),
                    a.why
                );
            }
        }
        let dead = self.expected_dead_letters();
        if !dead.is_empty() {
            let _ = writeln!(t, "Expected dead letters (reason × count):");
            for d in dead {
                let _ = writeln!(t, "  {:<17} × {:<3} {}", d.reason, d.count, d.why);
            }
        }
        t
    }
}

fn humanize(ms: i64) -> String {
    let mins = ms / 60_000;
    if mins >= 120 {
        format!("{} h", mins / 60)
    } else if mins >= 1 {
        format!("{mins} min")
    } else {
        format!("{} s", ms / 1000)
    }
}

/// A sensor of city.toml that plays in a scenario.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cast {
    pub id: &'static str,
    pub kind: &'static str,
    pub district: &'static str,
}

/// Collects a script's messages.
pub(crate) struct Writer<'a> {
    prefix: &'a str,
    start_ms: i64,
    out: &'a mut Vec<ScriptMessage>,
}

impl Writer<'_> {
    /// A report of `who` at `at_ms` on the timeline, stamped `start + at_ms`.
    pub fn report(&mut self, who: Cast, at_ms: i64, format: WireFormat, values: &[(&str, f64)]) {
        let tags = [("district".to_string(), who.district.to_string())];
        let report = Report {
            sensor: who.id,
            kind: who.kind,
            ts_ms: self.start_ms + at_ms,
            tags: &tags,
            values,
        };
        let payload = report.encode(format).into_bytes();
        self.raw(who, at_ms, format, payload);
    }

    /// Any payload on `who`'s topic for `format`.
    pub fn raw(&mut self, who: Cast, at_ms: i64, format: WireFormat, payload: Vec<u8>) {
        self.out.push(ScriptMessage {
            at_ms,
            topic: wire::topic(self.prefix, who.district, who.kind, who.id, format),
            payload,
        });
    }

    pub fn ts(&self, at_ms: i64) -> i64 {
        self.start_ms + at_ms
    }
}

/// How fast to play a script.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Simulated seconds per real second.
    Speed(f64),
    /// Everything at once (tests).
    Unpaced,
}

/// Publishes `script` in order, paced, and waits until the broker has acknowledged every
/// message (QoS 1) or every one is written (QoS 0).
pub async fn play(
    script: &Script,
    publisher: &mut Publisher,
    pace: Pace,
    flush_timeout: Duration,
) -> Result<(), PublishError> {
    let started = tokio::time::Instant::now();
    for m in &script.messages {
        if let Pace::Speed(speed) = pace {
            let due = Duration::from_secs_f64((m.at_ms.max(0) as f64 / 1000.0 / speed).max(0.0));
            tokio::time::sleep_until(started + due).await;
        }
        publisher
            .publish(m.topic.clone(), m.payload.clone())
            .await?;
    }
    publisher.flush(flush_timeout).await
}

/// Where to start a timeline played at `pace` so that its last reading is stamped about
/// `now_ms` and no reading is stamped ahead of the wall clock when it is sent.
pub fn start_for(scenario: Scenario, pace: Pace, now_ms: i64) -> i64 {
    let d = scenario.duration_ms();
    match pace {
        Pace::Speed(speed) if speed.is_finite() && speed > 0.0 => {
            // Faster than real time: start in the past by the time the replay saves. At or
            // below real time the wall clock stays ahead of every stamp anyway.
            let real_ms = (d as f64 / speed) as i64;
            now_ms + (real_ms - d).min(0)
        }
        _ => now_ms - d,
    }
}

#[cfg(test)]
mod tests;
