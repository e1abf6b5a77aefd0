//! The workload shared by `benches/pipeline.rs` and `examples/profile_pipeline.rs`: one round
//! of `citygate-sim`'s fleet (every sensor reports once) in each wire format, and helpers to
//! decode it and push it through the pipeline.
#![allow(dead_code)] // each user takes what it needs

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use citygate::catalog::Catalog;
use citygate::codec::{self, DecodeContext, Format, Precision};
use citygate::config::{load_with_env, Config};
use citygate::model::{Batch, Reading};
use citygate::pipeline::{Pipeline, Settings};
use citygate_sim::wire::{Report, WireFormat};
use citygate_sim::{Fleet, FleetConfig, SimMessage};

pub const SENSORS_PER_KIND: usize = 770; // × 13 kinds ≈ 10,000 sensors
pub const INTERVAL_MS: i64 = 60_000;
pub const START: i64 = 1_795_276_800_000; // 2026-11-22 00:00 Asia/Shanghai

pub fn config() -> Config {
    match load_with_env(&[], Some(Default::default())) {
        Ok(c) => c,
        Err(e) => panic!("default config: {e}"),
    }
}

/// The default config with every kind's rules taken out: the pipeline then validates,
/// registers and keeps per-series state, and evaluates nothing.
pub fn config_without_rules() -> Config {
    let mut c = config();
    for kind in c.catalog.values_mut() {
        kind.rules.clear();
    }
    c
}

/// One round of simulated reports: every sensor reports once, at staggered moments within
/// its interval.
/// Each simulated sensor's tags (`district`, `site`), by sensor id.
pub type TagsById = HashMap<String, Vec<(String, String)>>;

pub fn round_of_messages() -> (Vec<SimMessage>, TagsById) {
    let mut fleet = Fleet::new(FleetConfig {
        per_kind: SENSORS_PER_KIND,
        interval_ms: INTERVAL_MS,
        seed: 7,
        incidents: false,
        start_ms: START,
    });
    let tags = fleet
        .sensors()
        .iter()
        .map(|s| (s.id.clone(), s.tags.clone()))
        .collect();
    let messages = (0..INTERVAL_MS / 100)
        .flat_map(|i| fleet.tick(START + i * 100))
        .collect();
    (messages, tags)
}

/// A payload in one of the other wire formats, with the kind the route would give it
/// (SenML names no kind).
pub struct Encoded {
    pub payload: Bytes,
    pub kind: &'static str,
}

pub fn encode_round(messages: &[SimMessage], tags: &TagsById, format: WireFormat) -> Vec<Encoded> {
    messages
        .iter()
        .map(|m| {
            let report = Report {
                sensor: &m.sensor,
                kind: m.kind,
                ts_ms: m.ts_ms,
                tags: tags.get(&m.sensor).map_or(&[], Vec::as_slice),
                values: &m.values,
            };
            Encoded {
                payload: Bytes::from(report.encode(format)),
                kind: m.kind,
            }
        })
        .collect()
}

/// The `ts` field is taken out of the JSON payloads so that each benchmark iteration can
/// stamp the round with a later receive time and the pipeline never sees the same timestamp
/// twice (which would be rejected as a duplicate).
pub fn strip_ts(payload: &str) -> String {
    let Some(start) = payload.find("\"ts\":") else {
        return payload.to_string();
    };
    let end = payload[start..]
        .find(',')
        .map_or(payload.len(), |e| start + e + 1);
    format!("{}{}", &payload[..start], &payload[end..])
}

pub fn decode_round(payloads: &[Bytes], received_at: i64, out: &mut Vec<Reading>) {
    let mut errors = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let ctx = DecodeContext {
            received_at,
            payload: i as u32,
            ..DecodeContext::default()
        };
        if codec::decode(Format::Json, p, &ctx, out, &mut errors).is_err() || !errors.is_empty() {
            panic!("simulated payloads decode cleanly");
        }
    }
}

pub fn decode_encoded(format: Format, payloads: &[Encoded], out: &mut Vec<Reading>) {
    let mut errors = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let ctx = DecodeContext {
            received_at: START,
            payload: i as u32,
            kind: Some(p.kind),
            precision: Precision::Ns,
            ..DecodeContext::default()
        };
        let result = codec::decode(format, &p.payload, &ctx, out, &mut errors);
        if let Err(e) = result {
            panic!("simulated {format} payload decodes: {e}");
        }
        if let Some(e) = errors.first() {
            panic!("simulated {format} payload decodes: {e}");
        }
    }
}

pub fn new_pipeline(config: &Config) -> Pipeline {
    let catalog = Arc::new(Catalog::from_config(config));
    Pipeline::new(catalog, Settings::from_config(config), START)
}

pub fn batch(readings: Vec<Reading>, received_at: i64) -> Batch {
    Batch {
        source: "bench".into(),
        received_at,
        readings,
        payloads: Vec::new(),
        dead_letters: Vec::new(),
        devices: Vec::new(),
    }
}

/// The round's readings stamped with round `round`'s time.
pub fn stamped(readings: &[Reading], round: i64) -> (Vec<Reading>, i64) {
    let ts = START + round * INTERVAL_MS;
    let mut rs = readings.to_vec();
    for r in &mut rs {
        r.ts = ts;
    }
    (rs, ts)
}

/// One round in every form the benchmarks start from.
pub struct Workload {
    pub config: Config,
    /// citygate JSON, `ts` taken out (see [`strip_ts`]).
    pub json: Vec<Bytes>,
    pub senml: Vec<Encoded>,
    pub line: Vec<Encoded>,
    /// The JSON payloads decoded.
    pub readings: Vec<Reading>,
    /// The round's readings as the pipeline accepts them (kind resolved, tags set): what the
    /// sinks encode.
    pub accepted: Vec<Reading>,
}

pub fn workload() -> Workload {
    let config = config();
    let (messages, tags) = round_of_messages();
    let json: Vec<Bytes> = messages
        .iter()
        .map(|m| Bytes::from(strip_ts(&m.payload)))
        .collect();
    let senml = encode_round(&messages, &tags, WireFormat::Senml);
    let line = encode_round(&messages, &tags, WireFormat::Line);
    let mut readings = Vec::new();
    decode_round(&json, START, &mut readings);
    // Every format carries the same readings, so one throughput fits all the benchmarks.
    for (format, encoded) in [(Format::Senml, &senml), (Format::Line, &line)] {
        let mut out = Vec::new();
        decode_encoded(format, encoded, &mut out);
        assert_eq!(
            out.len(),
            readings.len(),
            "{format} carries the same readings"
        );
    }
    let accepted = {
        let mut p = new_pipeline(&config);
        let (rs, ts) = stamped(&readings, 1);
        p.process(batch(rs, ts), ts).accepted
    };
    assert_eq!(
        accepted.len(),
        readings.len(),
        "every simulated reading is accepted"
    );
    Workload {
        config,
        json,
        senml,
        line,
        readings,
        accepted,
    }
}
