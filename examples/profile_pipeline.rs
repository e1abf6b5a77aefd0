//! A driver for profilers: runs one stage of the pipeline benchmark's workload (one round of
//! 10,000 simulated sensors, see `benches/support`) for a number of rounds, with nothing else
//! in the loop, so that callgrind's instruction counts can be read per reading.
//!
//! ```sh
//! cargo build --profile bench --example profile_pipeline
//! valgrind --tool=callgrind target/release/examples/profile_pipeline validate_and_rules 5
//! ```
//!
//! Stages: `json_decode`, `senml_decode`, `line_decode`, `validate`, `rules`,
//! `validate_and_rules`, `line_protocol_encode`. Run it again with `setup-only` after the
//! rounds: it then prepares everything (the same inputs for the same rounds) and runs no
//! stage. The difference between the two counts, divided by the readings printed, is the
//! stage's cost per reading without the workload's setup.

#[path = "../benches/support/mod.rs"]
mod support;

use std::hint::black_box;

use citygate::codec::Format;
use citygate::sinks::influxdb::line::encode_readings;
use support::*;

const STAGES: [&str; 7] = [
    "json_decode",
    "senml_decode",
    "line_decode",
    "validate",
    "rules",
    "validate_and_rules",
    "line_protocol_encode",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let stage = args.next().unwrap_or_else(|| "validate_and_rules".into());
    let rounds: i64 = match args.next().map(|n| n.parse()) {
        None => 5,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("rounds: {e}");
            std::process::exit(2);
        }
    };
    if !STAGES.contains(&stage.as_str()) {
        eprintln!("unknown stage {stage:?}; stages: {}", STAGES.join(", "));
        std::process::exit(2);
    }
    let setup_only = args.next().as_deref() == Some("setup-only");
    let w = workload();
    let per_round = w.readings.len() as i64;
    // Pipelines are built (and warmed with round 1, which registers the sensors) and the
    // rounds' inputs stamped whatever the stage, so that a `setup-only` run costs the same
    // but for the measured rounds.
    let with_rules = {
        let mut p = new_pipeline(&w.config);
        let (rs, ts) = stamped(&w.readings, 1);
        p.process(batch(rs, ts), ts);
        p
    };
    let mut without_rules = {
        let mut p = new_pipeline(&config_without_rules());
        let (rs, ts) = stamped(&w.readings, 1);
        p.process(batch(rs, ts), ts);
        p
    };
    let mut p = with_rules;
    let inputs: Vec<Vec<_>> = (0..rounds)
        .map(|i| {
            let source = if stage == "rules" {
                &w.accepted
            } else {
                &w.readings
            };
            stamped(source, i + 2).0
        })
        .collect();
    if setup_only {
        black_box((&inputs, &mut p, &mut without_rules));
        println!("{stage}: setup only, {rounds} rounds of {per_round} readings prepared");
        return;
    }
    run_stages(&stage, inputs, &w, &mut p, &mut without_rules);
    println!(
        "{stage}: {rounds} rounds × {per_round} readings = {} readings",
        rounds * per_round
    );
}

/// The measured rounds, in a function of their own so that callgrind can collect them alone:
/// `--toggle-collect='*run_stages*'`.
#[inline(never)]
fn run_stages(
    stage: &str,
    inputs: Vec<Vec<citygate::model::Reading>>,
    w: &Workload,
    p: &mut citygate::pipeline::Pipeline,
    without_rules: &mut citygate::pipeline::Pipeline,
) {
    let mut out = Vec::with_capacity(w.readings.len() * 64);
    let mut readings = Vec::with_capacity(w.readings.len());
    for (i, rs) in inputs.into_iter().enumerate() {
        let ts = START + (i as i64 + 2) * INTERVAL_MS;
        match stage {
            "json_decode" => {
                readings.clear();
                decode_round(&w.json, START, &mut readings);
            }
            "senml_decode" => {
                readings.clear();
                decode_encoded(Format::Senml, &w.senml, &mut readings);
            }
            "line_decode" => {
                readings.clear();
                decode_encoded(Format::Line, &w.line, &mut readings);
            }
            "validate" => {
                black_box(without_rules.process(batch(rs, ts), ts));
            }
            "rules" => {
                black_box(p.evaluate_rules_only(&rs));
            }
            "validate_and_rules" => {
                black_box(p.process(batch(rs, ts), ts));
            }
            "line_protocol_encode" => {
                out.clear();
                black_box(encode_readings(&mut out, &w.accepted));
            }
            other => unreachable!("stage {other:?} was checked in main"),
        }
    }
    black_box((&out, &readings));
}
