//! The README's first command: `citygate demo` runs the binary with the simulated fleet, and
//! within its first minute alerts of every severity appear on the console and readings of
//! every kind are in its SQLite store. The fleet publishes over MQTT to the embedded broker
//! and the gateway consumes from it, so this runs the whole MQTT path.

use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn demo_raises_every_severity_within_a_minute_and_stores_every_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_citygate"))
        .args([
            "demo",
            "--duration-s",
            "60",
            "--listen",
            "127.0.0.1:0",
            "--broker-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the citygate binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    assert!(
        stdout.contains("SQLite store"),
        "the demo says where its store is:\n{stdout}"
    );
    assert!(
        stdout.contains("HTTP API     : http://127.0.0.1:"),
        "the demo says where its API is:\n{stdout}"
    );

    assert!(
        stdout.contains("MQTT broker  : mqtt://127.0.0.1:"),
        "the demo says where its broker is:\n{stdout}"
    );

    let severities: BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|w| ["INFO", "WARNING", "MAJOR", "CRITICAL"].contains(w))
        .collect();
    assert_eq!(
        severities,
        BTreeSet::from(["INFO", "WARNING", "MAJOR", "CRITICAL"]),
        "alerts of every severity within the first minute:\n{stdout}"
    );

    let db = rusqlite::Connection::open(dir.path().join("citygate.db")).expect("demo store");
    let mut stmt = db
        .prepare("SELECT DISTINCT kind FROM readings")
        .expect("query");
    let kinds: BTreeSet<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|k| k.expect("kind"))
        .collect();
    assert_eq!(
        kinds.len(),
        13,
        "readings of every kind are stored: {kinds:?}"
    );
    let dead: i64 = db
        .query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0))
        .expect("count");
    assert_eq!(dead, 0, "the simulated fleet sends only valid readings");
}
