//! Config fixture cases, Telegraf style: each `tests/cases/config/<name>/` holds a
//! `config.toml` and an `expected` file. `expected` is the word `ok` for a config that must
//! load, or the exact list of problems, one `path: message` per line, in the order the
//! loader reports them. The cases double as examples of what the loader says.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use citygate::catalog::spec::Levels;
use citygate::config::{load_with_env, Config, ConfigError, ConfigProblem, Source};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/config")
}

/// Loads a case's file with an empty environment, so the machine's variables cannot leak in.
fn load_case(dir: &Path) -> Result<Config, ConfigError> {
    load_with_env(
        &[Source::File(dir.join("config.toml"))],
        Some(HashMap::new()),
    )
}

fn outcome(result: &Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Ok(_) => vec!["ok".to_string()],
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_case_reports_exactly_its_expected_problems() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(cases_dir())
        .expect("tests/cases/config is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 10,
        "expected the fixture cases, found {}",
        dirs.len()
    );

    let mut failures = Vec::new();
    for dir in &dirs {
        let expected_text = fs::read_to_string(dir.join("expected"))
            .unwrap_or_else(|e| panic!("{}: no expected file: {e}", dir.display()));
        let expected: Vec<String> = expected_text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let actual = outcome(&load_case(dir));
        if actual != expected {
            failures.push(format!(
                "case {}:\n  expected:\n    {}\n  actual:\n    {}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                expected.join("\n    "),
                actual.join("\n    "),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_influxdb_example_config_loads() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/influxdb.toml");
    let config = match load_with_env(&[Source::File(file.clone())], Some(HashMap::new())) {
        Ok(c) => c,
        Err(e) => panic!("{} does not load:\n{e}", file.display()),
    };
    let names: Vec<&str> = config
        .sinks
        .influxdb
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["central", "archive"]);
    assert!(!config.sqlite.store_readings);
    assert_eq!(config.outbox.max_bytes, 2 << 30);
}

#[test]
fn built_in_defaults_load_without_problems() {
    let config = load_with_env(&[], Some(HashMap::new())).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = config.catalog.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "air_quality",
            "electricity_meter",
            "flow",
            "forest_fire",
            "gas_detector",
            "gas_meter",
            "landslide",
            "noise",
            "rainfall",
            "structural",
            "water_level",
            "water_meter",
            "water_quality",
        ]
    );
}

#[test]
fn good_case_keeps_each_stations_own_settings() {
    let config =
        load_case(&cases_dir().join("good_station_overrides")).unwrap_or_else(|e| panic!("{e}"));

    let gauge = &config.sensors["wl-beijiang-qy"];
    assert_eq!(gauge.kind, "water_level");
    assert_eq!(
        gauge.rules["level"].above,
        Some(Levels {
            warning: Some(12.0),
            critical: Some(15.0),
            ..Levels::default()
        })
    );
    assert_eq!(gauge.metrics["level"].max, Some(40.0));
    assert_eq!(
        config.sensors["wq-beijiang-01"].profile.as_deref(),
        Some("II")
    );
    assert_eq!(config.sensors["ns-g107-03"].profile.as_deref(), Some("4a"));

    let night = config.sensors["wm-0042"].rules["night_flow"]
        .schedule
        .as_deref()
        .unwrap_or_default();
    assert_eq!(night.len(), 1);
    assert_eq!(night[0].above.and_then(|l| l.warning), Some(0.5));

    // The file's kind-wide override merges into the built-in kind: the rainfall rules are
    // all still there, and the override sits beside them.
    let rainfall = &config.catalog["rainfall"];
    assert_eq!(rainfall.rules.len(), 3);
    assert_eq!(
        rainfall.overrides["rainstorm_3h"]
            .above
            .and_then(|l| l.major),
        Some(45.0)
    );
    assert_eq!(config.http.listen.port(), 8080);
    assert_eq!(config.http.listen.ip().to_string(), "0.0.0.0");
}

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn env_var_overrides_the_file() {
    let file = cases_dir().join("good_station_overrides/config.toml");
    let config = load_with_env(
        &[Source::File(file)],
        env(&[
            ("CITYGATE__HTTP__LISTEN", "127.0.0.1:9191"),
            ("CITYGATE__GATEWAY__BATCH_MAX", "250"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9191");
    assert_eq!(config.gateway.batch_max, 250);
    // Keys the environment does not name keep the file's and the defaults' values.
    assert_eq!(config.sensors["ns-g107-03"].profile.as_deref(), Some("4a"));
    assert_eq!(config.http.max_body_bytes, 1_048_576);
}

#[test]
fn bad_env_values_are_reported_at_their_key_path() {
    let file = cases_dir().join("good_station_overrides/config.toml");
    let err = load_with_env(
        &[Source::File(file)],
        env(&[
            ("CITYGATE__HTTP__MAX_BODY_BYTES", "lots"),
            ("CITYGATE__GATEWAY__TIMEZONE", "Mars/Olympus_Mons"),
        ]),
    )
    .err()
    .unwrap_or_else(|| panic!("bad environment values were accepted"));
    assert_eq!(
        err.problems,
        [
            ConfigProblem {
                path: "http.max_body_bytes".into(),
                message: "expected a whole number, found string \"lots\"".into(),
            },
            ConfigProblem {
                path: "gateway.timezone".into(),
                message: "unknown time zone \"Mars/Olympus_Mons\" (use an IANA name like \"Asia/Shanghai\")".into(),
            },
        ]
    );
}

#[test]
fn single_underscore_env_vars_are_not_config() {
    // CITYGATE_LOG and friends belong to the process, not to the config tree.
    let config = load_with_env(&[], env(&[("CITYGATE_HTTP__LISTEN", "not an address")]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
}

/// The example configs users copy from must load as they are, and every Modbus device in
/// them must become a configured sensor of its kind.
#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/modbus");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("config/examples/modbus is readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    for file in files {
        let config = match load_with_env(&[Source::File(file.clone())], Some(HashMap::new())) {
            Ok(c) => c,
            Err(e) => panic!("{} does not load:\n{e}", file.display()),
        };
        assert!(!config.modbus.devices.is_empty(), "{}", file.display());
        for d in &config.modbus.devices {
            let listed = config.sensors.get(&d.sensor).map(|s| s.kind.as_str());
            assert_eq!(listed, Some(d.kind.as_str()), "{}", file.display());
        }
    }
}

/// The pipeline keeps a rule's or a metric's index within its kind in 16 bits: a kind with one
/// more than 65,535 of either is refused at load, naming the key, instead of wrapping silently.
#[test]
fn a_kind_with_more_rules_or_metrics_than_16_bit_indices_hold_is_refused() {
    fn kind(metrics: usize, rules: usize) -> String {
        let mut toml = String::from("[catalog.big]\nname = { en = \"Big\" }\n");
        for m in 0..metrics {
            toml.push_str(&format!(
                "[catalog.big.metrics.m{m}]\nname = {{ en = \"m{m}\" }}\nunit = \"%\"\nmin = 0.0\nmax = 100.0\n"
            ));
        }
        for r in 0..rules {
            toml.push_str(&format!(
                "[[catalog.big.rules]]\nname = \"r{r}\"\nmetric = \"m0\"\nabove = {{ warning = {r}.0 }}\n"
            ));
        }
        toml
    }
    let load = |toml: String| {
        load_with_env(
            &[Source::Text {
                name: "big.toml".into(),
                toml,
            }],
            Some(HashMap::new()),
        )
    };

    let at_limit = load(kind(65_535, 65_535));
    assert!(
        at_limit.is_ok(),
        "65,535 metrics and rules must load: {:?}",
        at_limit.err()
    );

    let err = load(kind(65_536, 65_536))
        .err()
        .unwrap_or_else(|| panic!("a kind with 65,536 rules and metrics was accepted"));
    assert_eq!(
        outcome(&Err(err)),
        [
            "catalog.big.metrics: 65536 metrics; a kind may have at most 65535",
            "catalog.big.rules: 65536 rules; a kind may have at most 65535",
        ]
    );
}
