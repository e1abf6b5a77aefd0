//! One device resolved from config, and one poll of it: run its read requests, decode every
//! field, and say what came of it.

use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;

use crate::codec::modbus::RegisterValue;
use crate::model::{DeadLetter, Reading, Tags, TimestampMs, TsSource};

use super::config::Table;
use super::field::{Field, Target};
use super::link::{CallError, Endpoint, Link, Words};
use super::plan::ReadRequest;

/// The `source` of Modbus batches and dead letters (a metrics label: never a device id).
pub const SOURCE: &str = "modbus";

/// A device ready to poll.
#[derive(Clone, Debug)]
pub struct Device {
    pub sensor: CompactString,
    pub kind: CompactString,
    pub endpoint: Endpoint,
    pub unit: u8,
    pub fields: Vec<Field>,
    pub requests: Vec<ReadRequest>,
    /// Tags from config, sorted by key; string fields add theirs.
    pub tags: Vec<(CompactString, CompactString)>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub offline_after_failures: u32,
    pub backoff_max: Duration,
}

/// What one poll produced.
#[derive(Debug, Default)]
pub struct Poll {
    pub readings: Vec<Reading>,
    pub dead_letters: Vec<DeadLetter>,
    /// Set when the device could not be reached (timeouts or transport errors after the
    /// retries): the poll counts as failed. Exceptions do not set it: the device answered.
    pub failure: Option<CallError>,
    /// Requests sent, retries included.
    pub requests: u32,
    /// Request errors by reason (timeouts, exceptions...), retries included.
    pub errors: Vec<&'static str>,
}

impl Device {
    /// Polls the device once over `link`. `tags` is the tag set of its readings; it is
    /// replaced when a string field reads differently from last time.
    pub async fn poll(&self, link: &mut Link, tags: &mut Tags, now: TimestampMs) -> Poll {
        let mut poll = Poll::default();
        let mut strings: Vec<(CompactString, CompactString)> = Vec::new();
        let mut values: Vec<(usize, f64)> = Vec::with_capacity(self.fields.len());
        for req in &self.requests {
            let words = match self.read(link, req, &mut poll).await {
                Ok(words) => words,
                Err(e) if e.device_answered() => {
                    for &i in &req.fields {
                        poll.dead_letters.push(self.dead_letter(
                            i,
                            req,
                            e.reason(),
                            e.to_string(),
                            now,
                        ));
                    }
                    continue;
                }
                Err(e) => {
                    poll.failure = Some(e);
                    break;
                }
            };
            for &i in &req.fields {
                let f = &self.fields[i];
                let decoded = match &words {
                    Words::Bits(bits) => req.slice(f, bits).map(|b| f.decode_bits(b)),
                    Words::Registers(regs) => req.slice(f, regs).map(|r| f.decode_words(r)),
                };
                let Some(decoded) = decoded else {
                    let why = "the response is shorter than the request".to_string();
                    poll.dead_letters.push(self.dead_letter(
                        i,
                        req,
                        "modbus_bad_response",
                        why,
                        now,
                    ));
                    continue;
                };
                match (decoded, &f.target) {
                    (Ok(RegisterValue::Number(value)), Target::Metric(_)) => {
                        values.push((i, value));
                    }
                    (Ok(RegisterValue::Text(text)), Target::Tag(name)) => {
                        strings.push((name.clone(), text.into()));
                    }
                    (Ok(_), _) => {
                        // resolve() pairs strings with tags and numbers with metrics.
                        let why = "the field's type does not fit its target".to_string();
                        poll.dead_letters
                            .push(self.dead_letter(i, req, "modbus_decode", why, now));
                    }
                    (Err(e), _) => {
                        poll.dead_letters.push(self.dead_letter(
                            i,
                            req,
                            e.reason(),
                            e.to_string(),
                            now,
                        ));
                    }
                }
            }
        }
        if !strings.is_empty() {
            let mut all = self.tags.clone();
            for (k, v) in strings {
                match all.iter_mut().find(|(key, _)| *key == k) {
                    Some(slot) => slot.1 = v,
                    None => all.push((k, v)),
                }
            }
            all.sort();
            if all[..] != tags[..] {
                *tags = Arc::from(all);
            }
        }
        for (i, value) in values {
            let Target::Metric(metric) = &self.fields[i].target else {
                continue;
            };
            poll.readings.push(Reading {
                sensor: self.sensor.clone(),
                kind: self.kind.clone(),
                metric: metric.clone(),
                value,
                ts: now,
                // The device keeps no time; the gateway stamps the poll.
                ts_source: TsSource::Received,
                unit: None,
                tags: (!tags.is_empty()).then(|| tags.clone()),
                quality: crate::model::Quality::Good,
                payload: 0,
            });
        }
        poll
    }

    /// One request, retried after timeouts and transport errors (each of which dropped the
    /// connection, so the retry reconnects). On a serial line the bus is kept silent for the
    /// inter-frame delay after every exchange.
    async fn read(
        &self,
        link: &mut Link,
        req: &ReadRequest,
        poll: &mut Poll,
    ) -> Result<Words, CallError> {
        let mut attempt = 0;
        loop {
            poll.requests += 1;
            let result = link.read(self.unit, req, self.timeout).await;
            if let Some(delay) = link.frame_delay() {
                tokio::time::sleep(delay).await;
            }
            match result {
                Ok(words) => return Ok(words),
                Err(e) => {
                    poll.errors.push(e.reason());
                    if e.device_answered() || attempt >= self.retries {
                        return Err(e);
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn dead_letter(
        &self,
        field: usize,
        req: &ReadRequest,
        reason: &'static str,
        why: String,
        now: TimestampMs,
    ) -> DeadLetter {
        let f = &self.fields[field];
        let (metric, what) = match &f.target {
            Target::Metric(m) => (Some(m.clone()), format!("metric {m}")),
            Target::Tag(t) => (None, format!("tag {t}")),
        };
        let detail = format!(
            "unit {} at {}: reading {} {}..{} for {what}: {why}",
            self.unit,
            self.endpoint,
            table_words(req.table),
            req.address,
            u32::from(req.address) + u32::from(req.count) - 1,
        );
        DeadLetter {
            received_at: now,
            source: SOURCE.into(),
            reason,
            detail,
            sensor: Some(self.sensor.clone()),
            metric,
            value: None,
            ts: Some(now),
            raw: bytes::Bytes::new(),
        }
    }
}

fn table_words(t: Table) -> &'static str {
    match t {
        Table::Coil => "coils",
        Table::DiscreteInput => "discrete inputs",
        Table::Input => "input registers",
        Table::Holding => "holding registers",
    }
}
