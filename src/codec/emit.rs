//! Where decoders put their output: readings, capped item errors, and the context-derived parts
//! of a reading (kind, tags, receive time) shared by every format.

use compact_str::CompactString;

use super::error::CodecError;
use super::{DecodeContext, MAX_ITEM_ERRORS, MAX_READINGS_PER_PAYLOAD};
use crate::model::{Quality, Reading, Tags, TimestampMs, TsSource};

pub(crate) struct Emitter<'o, 'c, 'a> {
    pub ctx: &'c DecodeContext<'a>,
    pub out: &'o mut Vec<Reading>,
    errors: &'o mut Vec<CodecError>,
    readings_at_start: usize,
    recorded_errors: usize,
    suppressed_errors: usize,
    /// A fatal error raised from deep inside a serde visitor, which can only unwind with
    /// serde's own error type; the decoder returns this one instead.
    fatal: Option<CodecError>,
}

impl<'o, 'c, 'a> Emitter<'o, 'c, 'a> {
    pub fn new(
        ctx: &'c DecodeContext<'a>,
        out: &'o mut Vec<Reading>,
        errors: &'o mut Vec<CodecError>,
    ) -> Self {
        let readings_at_start = out.len();
        Emitter {
            ctx,
            out,
            errors,
            readings_at_start,
            recorded_errors: 0,
            suppressed_errors: 0,
            fatal: None,
        }
    }

    pub fn item_error(&mut self, e: CodecError) {
        if self.recorded_errors < MAX_ITEM_ERRORS {
            self.errors.push(e);
            self.recorded_errors += 1;
        } else {
            self.suppressed_errors += 1;
        }
    }

    /// Keeps `e` as the payload's fatal error and returns a serde error to unwind the parser.
    pub fn abort<E: serde::de::Error>(&mut self, e: CodecError) -> E {
        let unwind = E::custom(&e);
        self.fatal = Some(e);
        unwind
    }

    pub fn take_fatal(&mut self) -> Option<CodecError> {
        self.fatal.take()
    }

    /// Pushes a reading whose sensor, kind, time and tags may still be filled in by
    /// [`Emitter::complete_since`] once the rest of its item has been read.
    pub fn push(&mut self, metric: &str, value: f64) -> Result<(), CodecError> {
        if self.out.len() - self.readings_at_start >= MAX_READINGS_PER_PAYLOAD {
            return Err(CodecError::TooManyItems {
                limit: MAX_READINGS_PER_PAYLOAD,
            });
        }
        self.out.push(Reading {
            sensor: CompactString::const_new(""),
            kind: CompactString::const_new(""),
            metric: CompactString::from(metric),
            value,
            ts: self.ctx.received_at,
            ts_source: TsSource::Received,
            unit: None,
            tags: None,
            quality: Quality::Good,
            payload: self.ctx.payload,
        });
        Ok(())
    }

    /// Stamps the readings pushed since `start` with what their item said about them.
    pub fn complete_since(&mut self, start: usize, item: &ItemMeta) {
        let kind = item.kind.as_deref().or(self.ctx.kind).unwrap_or("");
        let kind = CompactString::from(kind);
        let (ts, ts_source) = match item.ts {
            Some(ts) => (ts, TsSource::Device),
            None => (self.ctx.received_at, TsSource::Received),
        };
        for r in &mut self.out[start..] {
            r.sensor.clone_from(&item.sensor);
            r.kind.clone_from(&kind);
            r.ts = ts;
            r.ts_source = ts_source;
            r.tags.clone_from(&item.tags);
        }
    }

    /// Drops readings of an item that turned out to be unusable.
    pub fn discard_since(&mut self, start: usize) {
        self.out.truncate(start);
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Merges an item's own tags with the route's. The item's win on a clash, as a device knows
    /// itself better than a route pattern does (Telegraf's global tags behave the same way).
    pub fn merge_tags(&self, mut own: Vec<(CompactString, CompactString)>) -> Option<Tags> {
        if own.is_empty() {
            return self.ctx.tags.clone();
        }
        // A stable sort keeps the payload's order among duplicate keys; the last one wins.
        own.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged: Vec<(CompactString, CompactString)> = Vec::with_capacity(own.len());
        for (k, v) in own {
            match merged.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => merged.push((k, v)),
            }
        }
        if let Some(route) = &self.ctx.tags {
            for (k, v) in route.iter() {
                if let Err(pos) = merged.binary_search_by(|(mk, _)| mk.cmp(k)) {
                    merged.insert(pos, (k.clone(), v.clone()));
                }
            }
        }
        Some(merged.into())
    }

    /// Records how many item errors were dropped by the cap.
    pub fn finish(self) {
        if self.suppressed_errors > 0 {
            self.errors.push(CodecError::TooManyErrors {
                suppressed: self.suppressed_errors,
            });
        }
    }
}

/// What one item (a JSON object, a line) says about all of its readings.
pub(crate) struct ItemMeta {
    pub sensor: CompactString,
    /// The item's own kind; the route's applies when it has none.
    pub kind: Option<CompactString>,
    /// The device's time; `None` stamps the readings with the receive time.
    pub ts: Option<TimestampMs>,
    pub tags: Option<Tags>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(CompactString, CompactString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn payload_tags_win_over_route_tags_and_come_out_sorted() {
        let ctx = DecodeContext {
            tags: Some(tags(&[("district", "route"), ("a", "1")]).into()),
            ..Default::default()
        };
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        let em = Emitter::new(&ctx, &mut out, &mut errors);
        let merged = em
            .merge_tags(tags(&[("z", "9"), ("district", "清城区"), ("z", "last")]))
            .map(|t| t.to_vec());
        assert_eq!(
            merged,
            Some(tags(&[("a", "1"), ("district", "清城区"), ("z", "last")]))
        );
        assert_eq!(em.merge_tags(Vec::new()), ctx.tags);
    }
}
