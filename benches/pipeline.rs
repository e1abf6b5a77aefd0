//! The pipeline per reading, for a realistic mix of every sensor kind and 10,000 sensors:
//! decoding (JSON, SenML, line protocol), validation alone, rules alone, both, JSON decoding
//! with both, and the InfluxDB sink's line-protocol encoding of a round.
//!
//! `cargo bench --bench pipeline`; the figures go in BENCHMARKS.md. Every benchmark's
//! throughput is `Elements(readings per round)`, so criterion reports readings/s. Under
//! `cargo test` each benchmark runs once, as a smoke test.

mod support;

use std::hint::black_box;

use bytes::Bytes;
use citygate::codec::Format;
use citygate::config::Config;
use citygate::model::Reading;
use citygate::sinks::influxdb::line::encode_readings;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use support::*;

/// Benchmarks a pipeline built from `config` on rounds of `readings`, each round later than
/// the one before, so that its state carries on from round to round as in service.
fn bench_process(g: &mut BenchGroup, name: &str, config: &Config, readings: &[Reading]) {
    g.bench_function(name, |b| {
        let mut p = new_pipeline(config);
        let mut round = 0i64;
        b.iter_batched(
            || {
                round += 1;
                let (rs, ts) = stamped(readings, round);
                (batch(rs, ts), ts)
            },
            |(batch, now)| black_box(p.process(batch, now)),
            BatchSize::LargeInput,
        )
    });
}

type BenchGroup<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn benches(c: &mut Criterion) {
    let Workload {
        config,
        json: payloads,
        senml,
        line,
        readings,
        accepted,
    } = workload();
    let per_round = readings.len() as u64;
    let bytes: usize = payloads.iter().map(Bytes::len).sum();
    eprintln!(
        "one round: {} JSON payloads ({} bytes), {} readings",
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
    for (name, format, encoded) in [
        ("senml_decode", Format::Senml, &senml),
        ("line_decode", Format::Line, &line),
    ] {
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(readings.len());
            b.iter(|| {
                out.clear();
                decode_encoded(format, black_box(encoded), &mut out);
                black_box(out.len())
            })
        });
    }

    bench_process(&mut g, "validate", &config_without_rules(), &readings);

    g.bench_function("rules", |b| {
        // Round 1 goes through the whole pipeline, which registers the sensors; later rounds
        // of the accepted readings go through the rules only.
        let mut p = new_pipeline(&config);
        let (rs, ts) = stamped(&readings, 1);
        p.process(batch(rs, ts), ts);
        let mut round = 1i64;
        b.iter_batched(
            || {
                round += 1;
                stamped(&accepted, round).0
            },
            // The input goes out with the output, so that freeing it is not timed.
            |rs| {
                let out = p.evaluate_rules_only(&rs);
                (rs, out)
            },
            BatchSize::LargeInput,
        )
    });

    bench_process(&mut g, "validate_and_rules", &config, &readings);

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

    g.bench_function("line_protocol_encode", |b| {
        let mut out = Vec::with_capacity(accepted.len() * 64);
        b.iter(|| {
            out.clear();
            black_box(encode_readings(&mut out, black_box(&accepted)))
        })
    });
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
