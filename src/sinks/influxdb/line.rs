//! Readings and alert events as InfluxDB line protocol, millisecond precision.
//!
//! # Schema
//! **Readings**: one point per sensor, kind and timestamp.
//! - measurement: the sensor kind (`water_quality`, `air_quality`, ...), a catalog name (one
//!   starting with `#` or a tab would read as a comment or an indent);
//! - tags: `sensor=<id>` and the sensor's tags (`district`, `site`, route and device tags),
//!   sorted by key; tags with an empty key or value are left out (InfluxDB refuses them) and a
//!   tag named `sensor` never overrides the sensor id;
//! - fields: one float per metric (`ph=7.21`, `level=3`: no `i` suffix, so always a float,
//!   whatever the value), plus `quality="good"` or `"suspect"` (the worst of the point's
//!   readings); non-finite values are left out. Fields keep the readings' order, except that
//!   a metric starting with a tab or NUL never comes first (parsers skip those blanks before
//!   the fields): the next metric, or else the quality field, leads;
//! - timestamp: the reading's, in milliseconds.
//!
//! `water_quality,district=清城区,sensor=wq-001,site=north ph=7.21,turbidity=3.5,quality="good" 1767225600000`
//!
//! **Alert events**: measurement `alerts`; tags `event` (raised, escalated, deescalated,
//! resolved, acknowledged), `kind`, `metric`, `rule`, `sensor`, `severity`; fields `id`, `state`,
//! `message` (strings), `value`, `threshold`, `peak` (floats, left out when not finite),
//! `count` and `started_at` (integers, ms), `ack_by` and `ack_comment` (strings, once acked);
//! timestamp: the event's time.
//!
//! # Escaping
//! As the InfluxDB line-protocol reference says: a backslash before `,` and space in the
//! measurement; before `,`, `=` and space in tag keys, tag values and field keys; before `"`
//! and `\` in string field values. Non-ASCII text (清城区) is written as UTF-8, unescaped.
//!
//! A literal backslash in a measurement, tag or field key is written as is when the next
//! character is an ordinary one (`C:\temp` stays `C:\temp`, which every parser reads back
//! the same), and doubled when it comes last or before another backslash or an escaped
//! character, where a single one would escape the separator that follows. (InfluxDB's own
//! parser keeps a doubled backslash as two; the reference and VictoriaMetrics read one.)
//!
//! A newline or carriage return cannot be represented anywhere: a raw one ends the line. In
//! tags, keys and string fields each becomes the two characters `\n` (or `\r`): readable, and
//! the line stays whole. The stored text then shows a backslash and an `n` where the input had
//! a line break.

use std::io::Write as _;

use crate::model::{AlertEvent, Quality, Reading};

const MEASUREMENT_SPECIALS: Specials = Specials::new(b", ");
const KEY_SPECIALS: Specials = Specials::new(b",= ");

/// The characters a backslash escapes in one position, and a table of every byte `escape`
/// must look at (those, a backslash, CR and LF), so that the common case, text with none of
/// them, is one table lookup per byte and one copy.
struct Specials {
    escaped: &'static [u8],
    needs_care: [bool; 256],
}

impl Specials {
    const fn new(escaped: &'static [u8]) -> Specials {
        let mut needs_care = [false; 256];
        needs_care[b'\\' as usize] = true;
        needs_care[b'\n' as usize] = true;
        needs_care[b'\r' as usize] = true;
        let mut i = 0;
        while i < escaped.len() {
            needs_care[escaped[i] as usize] = true;
            i += 1;
        }
        Specials {
            escaped,
            needs_care,
        }
    }
}

/// Appends lines for accepted readings (kind already resolved, `tags` = the sensor's tags,
/// set by the pipeline). One line per run of consecutive readings with the same sensor, kind,
/// tags and ts (a metric already in the run starts a new line: no duplicate field keys).
/// Millisecond timestamps. Returns the number of lines written.
pub fn encode_readings(out: &mut Vec<u8>, readings: &[Reading]) -> usize {
    let mut lines = 0;
    let mut start = 0;
    while start < readings.len() {
        let first = &readings[start];
        let mut end = start + 1;
        while let Some(next) = readings.get(end) {
            let same_point = next.sensor == first.sensor
                && next.kind == first.kind
                && next.ts == first.ts
                && next.tags == first.tags;
            if !same_point || readings[start..end].iter().any(|r| r.metric == next.metric) {
                break;
            }
            end += 1;
        }
        if encode_point(out, &readings[start..end]) {
            lines += 1;
        }
        start = end;
    }
    lines
}

/// One line for readings of one point; false (nothing written) if no value is finite, since
/// a line needs at least one field and a quality alone says nothing.
fn encode_point(out: &mut Vec<u8>, run: &[Reading]) -> bool {
    if !run.iter().any(|r| r.value.is_finite()) {
        return false;
    }
    let first = &run[0];
    escape(out, &first.kind, &MEASUREMENT_SPECIALS);
    write_reading_tags(out, &first.sensor, first.tags.as_deref().unwrap_or(&[]));
    // Parsers skip the blanks between the tags and the fields (citygate's decoder and
    // VictoriaMetrics spaces and tabs, InfluxDB a NUL too), and no escape keeps them, so a
    // field key starting with one must not come first: a field whose key starts plainly
    // leads, or failing that the quality field (then no metric is called `quality`).
    let lead = run
        .iter()
        .position(|r| r.value.is_finite() && !starts_blank(&r.metric));
    out.push(b' ');
    if lead.is_none() {
        write_quality_field(out, run);
    }
    let others = run
        .iter()
        .enumerate()
        .filter(|&(i, r)| Some(i) != lead && r.value.is_finite())
        .map(|(_, r)| r);
    let mut has_quality_metric = false;
    for (n, r) in lead.map(|i| &run[i]).into_iter().chain(others).enumerate() {
        if n > 0 || lead.is_none() {
            out.push(b',');
        }
        escape(out, &r.metric, &KEY_SPECIALS);
        out.push(b'=');
        write_float(out, r.value);
        has_quality_metric |= r.metric == "quality";
    }
    // A metric called `quality` would clash with the field; the value wins, not the label.
    if lead.is_some() && !has_quality_metric {
        out.push(b',');
        write_quality_field(out, run);
    }
    write_timestamp(out, first.ts);
    true
}

/// `quality="good"` or `"suspect"`: the worst of the point's readings.
fn write_quality_field(out: &mut Vec<u8>, run: &[Reading]) {
    let worst = if run.iter().any(|r| r.quality == Quality::Suspect) {
        Quality::Suspect
    } else {
        Quality::Good
    };
    out.extend_from_slice(b"quality=\"");
    out.extend_from_slice(worst.as_str().as_bytes());
    out.push(b'"');
}

/// Whether a line-protocol parser would skip the first character as a blank.
fn starts_blank(key: &str) -> bool {
    matches!(key.as_bytes().first(), Some(b'\t' | b'\0'))
}

/// `sensor=<id>` merged in key order with the sensor's tags.
fn write_reading_tags(
    out: &mut Vec<u8>,
    sensor: &str,
    tags: &[(compact_str::CompactString, compact_str::CompactString)],
) {
    let usable = |(k, v): &&(compact_str::CompactString, compact_str::CompactString)| {
        !k.is_empty() && !v.is_empty() && k != "sensor"
    };
    let sorted = tags.is_sorted_by(|a, b| a.0 <= b.0);
    let mut owned;
    let tags: &[_] = if sorted {
        tags
    } else {
        // The pipeline hands sorted tags; sorting here is only a safety net.
        owned = tags.to_vec();
        owned.sort_by(|a, b| a.0.cmp(&b.0));
        &owned
    };
    let mut sensor_written = sensor.is_empty();
    let mut previous: Option<&str> = None;
    for (k, v) in tags.iter().filter(usable) {
        if previous == Some(k.as_str()) {
            continue; // a duplicate key: InfluxDB would refuse the line
        }
        previous = Some(k);
        if !sensor_written && k.as_str() > "sensor" {
            write_tag(out, "sensor", sensor);
            sensor_written = true;
        }
        write_tag(out, k, v);
    }
    if !sensor_written {
        write_tag(out, "sensor", sensor);
    }
}

fn write_tag(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(b',');
    escape(out, key, &KEY_SPECIALS);
    out.push(b'=');
    escape(out, value, &KEY_SPECIALS);
}

/// Appends one line to the `alerts` measurement for an alert event.
pub fn encode_alert_event(out: &mut Vec<u8>, e: &AlertEvent) {
    let a = &e.alert;
    out.extend_from_slice(b"alerts");
    // In key order, as InfluxDB prefers.
    for (key, value) in [
        ("event", e.event.as_str()),
        ("kind", a.kind.as_str()),
        ("metric", a.metric.as_str()),
        ("rule", a.rule.as_str()),
        ("sensor", a.sensor.as_str()),
        ("severity", a.severity.as_str()),
    ] {
        if !value.is_empty() {
            write_tag(out, key, value);
        }
    }
    out.extend_from_slice(b" id=");
    write_string(out, &a.id);
    out.extend_from_slice(b",state=");
    write_string(out, a.state.as_str());
    out.extend_from_slice(b",message=");
    write_string(out, &a.message);
    for (key, value) in [
        ("value", a.value),
        ("threshold", a.threshold),
        ("peak", a.peak),
    ] {
        if value.is_finite() {
            out.push(b',');
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            write_float(out, value);
        }
    }
    let count = i64::try_from(a.count).unwrap_or(i64::MAX);
    let _ = write!(out, ",count={count}i,started_at={}i", a.started_at);
    if let Some(ack) = &a.ack {
        out.extend_from_slice(b",ack_by=");
        write_string(out, &ack.by);
        out.extend_from_slice(b",ack_comment=");
        write_string(out, &ack.comment);
    }
    write_timestamp(out, e.at);
}

fn write_float(out: &mut Vec<u8>, v: f64) {
    // The text is as `Display` writes f64: the shortest that parses back to the same value,
    // and never an exponent, which every line-protocol parser reads as a float. ryu finds
    // shortest digits several times faster than `write!` (on an exact tie between two it may
    // pick the other last digit; both read back the same) but writes `2.0` for 2 and an
    // exponent outside 1e-5..1e21: the first is trimmed, the second (rare in telemetry) left
    // to `Display`.
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    if text.contains('e') {
        let _ = write!(out, "{v}");
        return;
    }
    out.extend_from_slice(text.strip_suffix(".0").unwrap_or(text).as_bytes());
}

fn write_timestamp(out: &mut Vec<u8>, ts: i64) {
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
    out.push(b'\n');
}

/// A measurement, tag key, tag value or field key; see the module docs.
fn escape(out: &mut Vec<u8>, text: &str, specials: &Specials) {
    let bytes = text.as_bytes();
    // Almost every name and tag needs no escaping: copy those whole rather than byte by byte.
    let Some(first) = bytes.iter().position(|&b| specials.needs_care[b as usize]) else {
        out.extend_from_slice(bytes);
        return;
    };
    out.extend_from_slice(&bytes[..first]);
    // Specials are ASCII, so byte-wise scanning never splits a multi-byte character.
    for (i, &b) in bytes.iter().enumerate().skip(first) {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' => {
                let lone = bytes.get(i + 1).is_some_and(|next| {
                    !matches!(next, b'\\' | b'\n' | b'\r') && !specials.escaped.contains(next)
                });
                if lone {
                    out.push(b'\\');
                } else {
                    out.extend_from_slice(b"\\\\");
                }
            }
            _ if specials.escaped.contains(&b) => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
}

/// A string field value, quoted.
fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &b in text.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            // An escaped backslash, then `n`: the text `\n`, see the module docs.
            b'\n' => out.extend_from_slice(b"\\\\n"),
            b'\r' => out.extend_from_slice(b"\\\\r"),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests;
