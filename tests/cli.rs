//! The binary's commands: `check-config` lists every problem and exits non-zero, `run`
//! refuses to start on a bad config with the same list, `catalog` prints the kinds.

use std::process::{Command, Output};

fn citygate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_citygate"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the citygate binary runs")
}

const BAD: &str = r#"
[http]
listen = "127.0.0.1:0"
max_body_bytes = "lots"

[[catalog.water_quality.overrides.cod.above]]
nonsense = 1

[sensors.wq-0042]
kind = "water_qualty"
"#;

#[test]
fn check_config_lists_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, BAD).expect("write");
    let file = file.to_str().expect("utf-8 path");
    let out = citygate(&["check-config", "-c", file], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http.max_body_bytes: expected a whole number"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sensors.wq-0042.kind: unknown kind \"water_qualty\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("catalog.water_quality.overrides.cod.above"),
        "{stderr}"
    );

    // run refuses to start, with the same list
    let run = citygate(&["run", "-c", file], &[]);
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&run.stderr), stderr);
}

#[test]
fn check_config_accepts_the_defaults_and_reads_env_overrides() {
    let out = citygate(&["check-config"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("13 sensor kinds"));
    let out = citygate(
        &["check-config"],
        &[("CITYGATE__GATEWAY__TIMEZONE", "Mars/Olympus")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.timezone: unknown time zone"));
}

#[test]
fn catalog_prints_every_kind_in_both_languages() {
    let en = String::from_utf8_lossy(&citygate(&["catalog"], &[]).stdout).to_string();
    let zh =
        String::from_utf8_lossy(&citygate(&["catalog", "--lang", "zh"], &[]).stdout).to_string();
    for kind in citygate_sim::KINDS {
        assert!(en.contains(kind), "{kind} missing from the catalog table");
        assert!(
            zh.contains(kind),
            "{kind} missing from the Chinese catalog table"
        );
    }
    assert!(en.contains("GB 3838"));
    assert!(zh.contains("地表水水质"));
}
