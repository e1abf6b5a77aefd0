//! The pipeline per reading, for a realistic mix of every sensor kind and 10,000 sensors:
//! JSON decoding alone, validation + rules alone, and both together.
//!
//! `cargo bench --bench pipeline`; the figures go in BENCHMARKS.md. Under `cargo test` each
//! benchmark runs once, as a smoke test.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use citygate::catalog::Catalog;
use citygate::codec::{self, DecodeContext, Format};
use citygate::config::{load_with_env, Config};
use citygate::model::{Batch, Reading};
use citygate::pipeline::{Pipeline, Settings};
use citygate_sim::{Fleet, FleetConfig};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const SENSORS_PER_KIND: usize = 770; // × 13 kinds ≈ 10,000 sensors
const INTERVAL_MS: i64 = 60_000;
const START: i64 = 1_795_276_800_000; // 2026-11-22 00:00 Asia/Shanghai

fn config() -> Config {
    match load_with_env(&[], Some(Default::default())) {
        Ok(c) => c,
        Err(e) => panic!("default config: {e}"),
    }
}

/// One round of payloads: every sensor reports once. The `ts` field is taken out so that
/// each benchmark iteration can stamp the round with a later receive time and the pipeline
/// never sees the same timestamp twice (which would be rejected as a duplicate).
fn round_of_payloads() -> Vec<Bytes> {
    let mut fleet = Fleet::new(FleetConfig {
        per_kind: SENSORS_PER_KIND,
        interval_ms: INTERVAL_MS,
        seed: 7,
        incidents: false,
        start_ms: START,
    });
    // Sensors report at staggered moments within their interval: tick through one interval.
    (0..INTERVAL_MS / 100)
        .flat_map(|i| fleet.tick(START + i * 100))
        .map(|m| Bytes::from(strip_ts(&m.payload)))
        .collect()
}

fn strip_ts(payload: &str) -> String {
    let Some(start) = payload.find("\"ts\":") else {
        return payload.to_string();
    };
    let end = payload[start..]
        .find(',')
        .map_or(payload.len(), |e| start + e + 1);
    format!("{}{}", &payload[..start], &payload[end..])
}

fn decode_round(payloads: &[Bytes], received_at: i64, out: &mut Vec<Reading>) {
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

fn new_pipeline(config: &Config) -> Pipeline {
    let catalog = Arc::new(Catalog::from_config(config));
    Pipeline::new(catalog, Settings::from_config(config), START)
}

fn batch(readings: Vec<Reading>, received_at: i64) -> Batch {
    Batch {
        source: "bench".into(),
        received_at,
        readings,
        payloads: Vec::new(),
        dead_letters: Vec::new(),
        devices: Vec::new(),
    }
}

fn benches(c: &mut Criterion) {
    let config = config();
    let payloads = round_of_payloads();
    let mut readings = Vec::new();
    decode_round(&payloads, START, &mut readings);
    let per_round = readings.len() as u64;
    let bytes: usize = payloads.iter().map(Bytes::len).sum();
    eprintln!(
        "one round: {} sensors, {} payloads ({} bytes), {} readings",
        payloads.len(),
        payloads.len(),
        bytes,
        per_round
    );

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(per_round));
    g.sample_size(20);

    g.bench_function("json_decode", |b| {
        let mut out = Vec::with_capacity(readings.len());
        b.iter(|| {
            out.clear();
            decode_round(black_box(&payloads), START, &mut out);
            black_box(out.len())
        })
    });

    g.bench_function("validate_and_rules", |b| {
        let mut p = new_pipeline(&config);
        let mut round = 0i64;
        b.iter_batched(
            || {
                round += 1;
                let ts = START + round * INTERVAL_MS;
                let mut rs = readings.clone();
                for r in &mut rs {
                    r.ts = ts;
                }
                (batch(rs, ts), ts)
            },
            |(batch, now)| black_box(p.process(batch, now)),
            BatchSize::LargeInput,
        )
    });

    g.bench_function("json_decode_validate_and_rules", |b| {
        let mut p = new_pipeline(&config);
        let mut round = 0i64;
        b.iter(|| {
            round += 1;
            let ts = START + round * INTERVAL_MS;
            let mut rs = Vec::with_capacity(per_round as usize);
            decode_round(&payloads, ts, &mut rs);
            black_box(p.process(batch(rs, ts), ts))
        })
    });
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
