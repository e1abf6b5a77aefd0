//! The README's code blocks stay true: this test runs them.
//!
//! - `toml` blocks load as a config layer over the built-in defaults, with no problem.
//! - `json` blocks parse.
//! - `sh` blocks: every command is either run or named in [`NOT_RUN`] with the reason.
//!   `curl` commands run, as written, against a real gateway (only the address is changed to the
//!   test's port), and must get a 2xx; what they wrote is then checked in the API. `citygate
//!   check-config`/`catalog` run with the built binary, in a directory holding the README's
//!   files (a `toml` block whose first line is `# name.toml`). `citygate run -c FILE` and
//!   `cargo run -- run -c FILE` cannot serve here, so their config files go through
//!   `check-config` instead.
//!
//! A command of a program the test does not know fails it: a new kind of example has to be
//! taught here, or listed as not run with its reason.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The documents whose code blocks are run. README.md comes first: the later documents' commands
/// (metrics, backups) look at what its examples wrote.
const DOCS: &[&str] = &["README.md", "docs/operations.md"];

/// Programs whose README commands are not run here, and why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "cargo",
        "builds and runs the gateway itself (the run's config is checked, below)",
    ),
    ("scripts/test", "this test is part of it"),
    (
        "scripts/bench",
        "benchmarks run on their own (scripts/bench*)",
    ),
    (
        "scripts/soak",
        "a chaos soak of minutes to hours; scripts/test runs the short one",
    ),
    (
        "scripts/fuzz",
        "fuzzing runs on its own; scripts/test runs scripts/fuzz --smoke",
    ),
    (
        "scripts/gen-config-reference",
        "tests/config_reference.rs checks its output",
    ),
    (
        "scripts/callgrind-pipeline",
        "a profiling run under valgrind, minutes long",
    ),
    (
        "influx",
        "the InfluxDB 2 CLI is not installable here (see docs/deployment.md)",
    ),
    ("export", "sets the shell environment"),
    (
        "citygate-sim",
        "serves or publishes until stopped; tests/scenarios.rs and simulators/tests run it",
    ),
    ("mosquitto_sub", "subscribes until stopped"),
    ("mosquitto_pub", "needs the demo's broker running"),
    (
        "socat",
        "serial pty pairs are tested in simulators/tests/modbus_mbpoll.rs",
    ),
    ("mbpoll", "tested in simulators/tests/modbus_mbpoll.rs"),
    (
        "docker",
        "no Docker engine here; tests/deploy.rs checks the compose file",
    ),
    ("cp", "copies a file for the user"),
    ("sudo", "installs on the user's machine"),
    ("systemctl", "installs on the user's machine"),
];

#[derive(Debug)]
struct Block {
    lang: String,
    text: String,
    line: usize,
}

fn code_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("```") {
            match current.take() {
                Some(b) => blocks.push(b),
                None => {
                    current = Some(Block {
                        lang: rest.trim().to_string(),
                        text: String::new(),
                        line: i + 1,
                    })
                }
            }
        } else if let Some(b) = current.as_mut() {
            b.text.push_str(line);
            b.text.push('\n');
        }
    }
    assert!(current.is_none(), "a document has an unclosed code block");
    blocks
}

/// Shell commands of a block: continuation lines joined, comments dropped (a `#` that starts a
/// word outside quotes).
fn commands(sh: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in sh.lines() {
        let line = strip_comment(line);
        let line = line.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let cmd = pending.trim().to_string();
        pending.clear();
        if !cmd.is_empty() {
            out.push(cmd);
        }
    }
    out
}

fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

/// The files the README defines: `toml` blocks whose first line is `# name.toml`.
fn named_files(blocks: &[&Block]) -> HashMap<String, String> {
    blocks
        .iter()
        .filter(|b| b.lang == "toml")
        .filter_map(|b| {
            let first = b.text.lines().next()?.trim();
            let name = first.strip_prefix("# ")?.trim();
            (name.ends_with(".toml") && !name.contains(' '))
                .then(|| (name.to_string(), b.text.clone()))
        })
        .collect()
}

fn citygate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_citygate")
}

/// `citygate check-config -c FILE...` in `dir`; panics with its output unless it exits 0.
fn check_config(dir: &Path, files: &[&str], env: &[(String, String)], what: &str) {
    let mut cmd = Command::new(citygate_bin());
    cmd.current_dir(dir).arg("check-config");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    for f in files {
        cmd.arg("-c").arg(f);
    }
    let out = cmd.output().expect("run citygate");
    assert!(
        out.status.success(),
        "{what}: check-config failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The config files of a `run -c FILE -c FILE...` command line.
fn config_args(cmd: &str) -> Vec<&str> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "-c" || w[0] == "--config")
        .map(|w| w[1])
        .collect()
}

#[test]
fn readme_toml_blocks_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let pki = common::mosquitto::TestPki::generate();
    let files = tempfile::tempdir().expect("tempdir");
    for doc in DOCS {
        let text = std::fs::read_to_string(root.join(doc)).expect("read a doc");
        checked += check_blocks(doc, &code_blocks(&text), files.path(), &pki);
    }
    assert!(
        checked >= 5,
        "expected the README's config and JSON examples, found {checked}"
    );
}

/// Loads a document's toml blocks and parses its json blocks; returns how many it checked.
fn check_blocks(
    doc: &str,
    blocks: &[Block],
    files: &Path,
    pki: &common::mosquitto::TestPki,
) -> usize {
    let mut checked = 0;
    for b in blocks.iter().filter(|b| b.lang == "toml") {
        let source = citygate::config::Source::Text {
            name: format!("{doc} line {}", b.line),
            toml: with_files_in(&b.text, files, pki),
        };
        if let Err(e) = citygate::config::load_with_env(&[source], Some(HashMap::new())) {
            panic!(
                "the toml block at {doc} line {} does not load:\n{e}\n{}",
                b.line, b.text
            );
        }
        checked += 1;
    }
    for b in blocks.iter().filter(|b| b.lang == "json") {
        for (i, value) in serde_json::Deserializer::from_str(&b.text)
            .into_iter::<Value>()
            .enumerate()
        {
            if let Err(e) = value {
                panic!(
                    "json block at {doc} line {} (value {i}) does not parse: {e}\n{}",
                    b.line, b.text
                );
            }
        }
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_shell_commands_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut blocks = Vec::new();
    for doc in DOCS {
        let text = std::fs::read_to_string(root.join(doc)).expect("read a doc");
        blocks.extend(code_blocks(&text).into_iter().map(|b| (*doc, b)));
    }
    let backups = tempfile::tempdir().expect("tempdir");

    // The README's own files, next to a copy of nothing else: commands name them relative to
    // the repository (config/examples/...) or as the README wrote them (my-city.toml).
    let files_dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<&Block> = blocks.iter().map(|(_, b)| b).collect();
    for (name, text) in named_files(&plain) {
        std::fs::write(files_dir.path().join(&name), text).expect("write README file");
    }

    // A gateway for the curl examples. The README's examples carry fixed timestamps (late 2026),
    // so the test accepts old readings: the examples must not rot with the calendar.
    let data = tempfile::tempdir().expect("tempdir");
    let g = common::start(data.path(), "[validation]\nmax_age = \"36500d\"\n").await;
    let api = common::Api::new(&g);
    let addr = g.addr().to_string();
    // An alert for the ack example to acknowledge.
    let (status, _) = api
        .post(
            "/api/v1/ingest",
            "application/json",
            serde_json::json!({"sensor": "readme-gd", "kind": "gas_detector", "lel": 60.0})
                .to_string(),
        )
        .await;
    assert_eq!(status, 200);
    // The reply comes after the commit, so the alert is there.
    let (_, alerts) = api.get("/api/v1/alerts?sensor=readme-gd").await;
    let alert_id = alerts["alerts"][0]["id"]
        .as_str()
        .expect("an alert id")
        .to_string();

    let mut ran = Vec::new();
    for (doc, b) in blocks.iter().filter(|(_, b)| b.lang == "sh") {
        for cmd in commands(&b.text) {
            // `VAR=value command ...`: the assignments go to the command's environment.
            let assignments: Vec<(String, String)> = cmd
                .split_whitespace()
                .map_while(|w| {
                    let (k, v) = w.split_once('=')?;
                    (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                        .then(|| (k.to_string(), v.to_string()))
                })
                .collect();
            let cmd: String = cmd
                .split_whitespace()
                .skip(assignments.len())
                .collect::<Vec<_>>()
                .join(" ");
            let program = cmd.split_whitespace().next().unwrap_or("");
            let at = format!("{doc} line {}: {cmd}", b.line);
            if program == "sqlite3" {
                // The backup examples, on the live gateway's file, into a scratch directory.
                let cmd = cmd
                    .replace("/var/lib/citygate", &data.path().display().to_string())
                    .replace("/var/backups", &backups.path().display().to_string());
                let stdout = shell(&cmd, &at, &assignments);
                if cmd.contains("integrity_check") {
                    assert_eq!(stdout.trim(), "ok", "{at}");
                }
                ran.push(cmd);
            } else if program == "curl" {
                let cmd = cmd
                    .replace("http://127.0.0.1:8080", &format!("http://{addr}"))
                    .replace("localhost:8080", &addr)
                    .replace("<id>", &alert_id)
                    .replacen("curl", "curl --fail-with-body --max-time 30", 1);
                let mut env = assignments.clone();
                env.push(("CITYGATE_API_TOKEN".into(), "readme-token".into()));
                let body = shell(&cmd, &at, &env);
                // Ingest examples must have been taken, not merely answered.
                if cmd.contains("/api/v1/ingest") {
                    let answer: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|e| panic!("{at}\nanswer is not JSON ({e}): {body}"));
                    assert!(
                        answer["accepted"].as_u64().unwrap_or(0) >= 1 && answer["rejected"] == 0,
                        "{at}\nthe example reading was not accepted: {answer}"
                    );
                }
                ran.push(cmd);
            } else if program == "citygate" {
                let sub = cmd.split_whitespace().nth(1).unwrap_or("");
                match sub {
                    "check-config" => {
                        check_config(files_dir.path(), &config_args(&cmd), &assignments, &at)
                    }
                    "run" => {
                        let files: Vec<String> = config_args(&cmd)
                            .iter()
                            .map(|f| resolve(root, files_dir.path(), f))
                            .collect();
                        let files: Vec<&str> = files.iter().map(String::as_str).collect();
                        check_config(files_dir.path(), &files, &assignments, &at)
                    }
                    "catalog" => {
                        let out = Command::new(citygate_bin())
                            .args(
                                cmd.split_whitespace()
                                    .skip(1)
                                    .filter(|w| !w.starts_with('[')),
                            )
                            .output()
                            .expect("run citygate catalog");
                        assert!(out.status.success(), "{at}: failed");
                        assert!(
                            String::from_utf8_lossy(&out.stdout).contains("water_level"),
                            "{at}: the catalog lists no water_level"
                        );
                    }
                    "demo" => {}
                    other => panic!("{at}: teach tests/readme.rs to run `citygate {other}`"),
                }
                ran.push(cmd);
            } else if program == "cargo" && cmd.contains(" -- run ") {
                let files: Vec<String> = config_args(&cmd)
                    .iter()
                    .map(|f| resolve(root, files_dir.path(), f))
                    .collect();
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                if !files.is_empty() {
                    check_config(files_dir.path(), &files, &assignments, &at);
                    ran.push(cmd);
                }
            } else if !NOT_RUN
                .iter()
                .any(|(p, _)| program == *p || program.starts_with(&format!("{p}-")))
            {
                panic!("{at}\nteach tests/readme.rs to run `{program}`, or list it in NOT_RUN with the reason");
            }
        }
    }

    // What the examples wrote is in the gateway: the ingest examples' readings and the ack.
    let (_, readings) = api
        .get("/api/v1/readings?sensor=em-01&metric=voltage_a")
        .await;
    assert_eq!(readings["readings"][0]["value"], 231.2, "{readings}");
    let (_, alert) = api.get(&format!("/api/v1/alerts/{alert_id}")).await;
    // The backup taken while the gateway ran holds what was committed before it.
    let backup = backups.path().join("citygate.db");
    assert!(
        ran.iter().any(|c| c.contains(".backup")) && backup.exists(),
        "the backup example did not run: {ran:?}"
    );
    assert!(
        common::count(
            &backup,
            "SELECT count(*) FROM readings WHERE sensor = 'em-01'"
        ) >= 1,
        "the backup lacks the readings committed before it"
    );
    assert_eq!(alert["alert"]["ack"]["by"], "Li Wei", "{alert}");
    assert!(
        ran.iter().filter(|c| c.starts_with("curl")).count() >= 5,
        "the README's curl examples were not found: {ran:?}"
    );
    g.shutdown().await.expect("gateway stops");
}

/// The block with every absolute path it names (`"/etc/citygate/ca.pem"`) moved under `dir`,
/// where the file then exists: PEM files hold a real certificate or key (the config checks
/// that they load), other files a secret. The examples name the paths a user would use; the
/// test cannot write to /etc.
fn with_files_in(toml: &str, dir: &Path, pki: &common::mosquitto::TestPki) -> String {
    let mut out = toml.to_string();
    for quoted in toml.split('"').skip(1).step_by(2) {
        if !quoted.starts_with('/') || quoted.contains(' ') {
            continue;
        }
        let target = dir.join(quoted.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
        let name = quoted.rsplit('/').next().unwrap_or("");
        let source = if name.ends_with(".key") || name.contains("key") {
            Some(&pki.key_file)
        } else if name.ends_with(".pem") && name.contains("ca") {
            Some(&pki.ca_file)
        } else if name.ends_with(".pem") || name.ends_with(".crt") {
            Some(&pki.cert_file)
        } else {
            None
        };
        match source {
            Some(pem) => std::fs::copy(pem, &target).map(|_| ()),
            None => std::fs::write(&target, "readme-secret\n"),
        }
        .expect("write a file the example names");
        out = out.replace(
            &format!("\"{quoted}\""),
            &format!("{:?}", target.display().to_string()),
        );
    }
    out
}

/// Runs a documented command line with bash and returns its stdout; panics with its output
/// unless it succeeds (127: the program is not installed, say which package has it).
fn shell(cmd: &str, at: &str, env: &[(String, String)]) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(127) {
        panic!("{at}\n{stderr}scripts/test installs what the docs use: curl, sqlite3 (apt-get install curl sqlite3)");
    }
    assert!(out.status.success(), "{at}\nfailed: {stdout}{stderr}");
    stdout
}

/// A config path of a README command: the README's own file when it defines one by that
/// name, else a path in the repository.
fn resolve(root: &Path, files_dir: &Path, f: &str) -> String {
    let own = files_dir.join(f);
    if own.exists() {
        own.display().to_string()
    } else {
        root.join(f).display().to_string()
    }
}
