use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use compact_str::CompactString;
use tempfile::TempDir;

use super::*;
use crate::model::{Ack, AlertEventKind, AlertState, Severity};

fn temp_store() -> (TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    // A nested path checks that open creates the directories.
    let path = dir.path().join("data").join("nested").join("citygate.db");
    let store = SqliteStore::open(&path).expect("open store");
    (dir, path, store)
}

fn readings_commit(readings: &[Reading]) -> Commit<'_> {
    Commit {
        readings,
        raw_max: 64,
        ..Commit::default()
    }
}

fn all_readings(reader: &SqliteReader) -> Vec<StoredReading> {
    reader
        .readings(&ReadingQuery {
            order: Order::OldestFirst,
            ..ReadingQuery::default()
        })
        .expect("query readings")
}

fn alert(id: &str, state: AlertState, started_at: i64, updated_at: i64) -> Alert {
    Alert {
        id: id.into(),
        rule: "ph_class_iii".into(),
        sensor: "wq-beijiang-01".into(),
        kind: "water_quality".into(),
        metric: "ph".into(),
        severity: Severity::Warning,
        state,
        value: 9.4,
        threshold: 9.0,
        peak: 9.4,
        count: 1,
        started_at,
        updated_at,
        resolved_at: (state == AlertState::Resolved).then_some(updated_at),
        ack: None,
        message: "pH 9.4 above 9".into(),
    }
}

fn dead_letter(received_at: i64, reason: &'static str, raw: &[u8]) -> DeadLetter {
    DeadLetter {
        received_at,
        source: "mqtt:field".into(),
        reason,
        detail: format!("{reason} at byte 3"),
        sensor: Some("wq-beijiang-01".into()),
        metric: Some("ph".into()),
        value: Some(17.0),
        ts: Some(received_at - 5),
        raw: Bytes::copy_from_slice(raw),
    }
}

fn sensor(id: &str, kind: &str, tags: &[(&str, &str)], last_seen: i64) -> SensorRecord {
    SensorRecord {
        id: id.into(),
        kind: kind.into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        last_seen,
    }
}

#[test]
fn readings_read_back_exactly() {
    let (_dir, path, mut store) = temp_store();
    let mut suspect = Reading::new("aq-qingcheng-02", "air_quality", "pm25", 0.1 + 0.2, 2_000);
    suspect.quality = Quality::Suspect;
    suspect.ts_source = TsSource::Received;
    let readings = vec![
        Reading::new("wl-jiangkou", "water_level", "level", -3.25, 1_000),
        suspect,
        Reading::new(
            "em-substation-7",
            "electricity_meter",
            "energy_total",
            1.0e12 + 0.5,
            3_000,
        ),
    ];
    let stats = store.commit(&readings_commit(&readings)).expect("commit");
    assert_eq!(stats.readings_inserted, 3);
    assert_eq!(stats.duplicates, 0);

    let reader = SqliteReader::open(&path).expect("open reader");
    let got = all_readings(&reader);
    let expected: Vec<StoredReading> = readings
        .iter()
        .map(|r| StoredReading {
            sensor: r.sensor.clone(),
            kind: r.kind.clone(),
            metric: r.metric.clone(),
            value: r.value,
            ts: r.ts,
            quality: r.quality,
            ts_source: r.ts_source,
        })
        .collect();
    assert_eq!(got, expected);
    // Bit for bit, not just approximately.
    assert_eq!(got[1].value.to_bits(), (0.1f64 + 0.2).to_bits());
}

#[test]
fn reading_filters_order_and_limit() {
    let (_dir, path, mut store) = temp_store();
    let readings: Vec<Reading> = (0..10)
        .flat_map(|i| {
            [
                Reading::new("n-1", "noise", "laeq", 50.0 + i as f64, i * 1000),
                Reading::new("n-2", "noise", "laeq", 60.0 + i as f64, i * 1000),
            ]
        })
        .collect();
    store.commit(&readings_commit(&readings)).expect("commit");
    let reader = SqliteReader::open(&path).expect("open reader");

    // from is inclusive, to exclusive; newest first by default.
    let got = reader
        .readings(&ReadingQuery {
            sensor: Some("n-1".into()),
            metric: Some("laeq".into()),
            from: Some(3000),
            to: Some(6000),
            ..ReadingQuery::default()
        })
        .expect("query");
    let ts: Vec<i64> = got.iter().map(|r| r.ts).collect();
    assert_eq!(ts, vec![5000, 4000, 3000]);
    assert_eq!(got[0].value, 55.0);

    let got = reader
        .readings(&ReadingQuery {
            limit: Some(3),
            ..ReadingQuery::default()
        })
        .expect("query");
    let keys: Vec<(&str, i64)> = got.iter().map(|r| (r.sensor.as_str(), r.ts)).collect();
    assert_eq!(keys, vec![("n-2", 9000), ("n-1", 9000), ("n-2", 8000)]);

    let got = reader
        .readings(&ReadingQuery {
            metric: Some("pm25".into()),
            ..ReadingQuery::default()
        })
        .expect("query");
    assert!(got.is_empty());
}

#[test]
fn duplicate_points_are_ignored_and_counted() {
    let (_dir, path, mut store) = temp_store();
    let first = vec![
        Reading::new("rg-1", "rainfall", "rainfall", 4.5, 1_000),
        Reading::new("rg-1", "rainfall", "rainfall", 2.0, 2_000),
    ];
    let stats = store.commit(&readings_commit(&first)).expect("commit");
    assert_eq!((stats.readings_inserted, stats.duplicates), (2, 0));

    // A replay of the first point with another value, a new point, and the new point again
    // in the same batch.
    let replay = vec![
        Reading::new("rg-1", "rainfall", "rainfall", 99.0, 1_000),
        Reading::new("rg-1", "rainfall", "rainfall", 1.0, 3_000),
        Reading::new("rg-1", "rainfall", "rainfall", 1.0, 3_000),
    ];
    let stats = store.commit(&readings_commit(&replay)).expect("commit");
    assert_eq!((stats.readings_inserted, stats.duplicates), (1, 2));

    let reader = SqliteReader::open(&path).expect("open reader");
    let values: Vec<(i64, f64)> = all_readings(&reader)
        .iter()
        .map(|r| (r.ts, r.value))
        .collect();
    // The first point keeps its first value: a replay never rewrites history.
    assert_eq!(values, vec![(1_000, 4.5), (2_000, 2.0), (3_000, 1.0)]);
}

#[test]
fn dead_letters_keep_reason_and_truncated_raw() {
    let (_dir, path, mut store) = temp_store();
    let long = "x".repeat(100);
    let mut nan = dead_letter(3_000, "not_finite", b"{\"ph\": NaN}");
    nan.value = Some(f64::NAN);
    let mut bad_utf8 = dead_letter(4_000, "invalid_utf8", b"ok\xff\xfeok");
    bad_utf8.sensor = None;
    bad_utf8.metric = None;
    bad_utf8.value = None;
    bad_utf8.ts = None;
    let letters = vec![
        dead_letter(1_000, "out_of_range", b"{\"ph\": 17}"),
        dead_letter(2_000, "invalid_json", long.as_bytes()),
        nan,
        bad_utf8,
    ];
    let stats = store
        .commit(&Commit {
            dead_letters: &letters,
            raw_max: 64,
            ..Commit::default()
        })
        .expect("commit");
    assert_eq!(stats.dead_letters, 4);

    let reader = SqliteReader::open(&path).expect("open reader");
    let got = reader
        .dead_letters(&DeadLetterQuery::default())
        .expect("query");
    let reasons: Vec<&str> = got.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec!["invalid_utf8", "not_finite", "invalid_json", "out_of_range"]
    );

    let utf8 = &got[0];
    assert_eq!(utf8.raw, "ok\u{fffd}\u{fffd}ok");
    assert_eq!((utf8.raw_len, utf8.raw_truncated), (6, false));
    assert_eq!(
        (&utf8.sensor, &utf8.metric, utf8.value, utf8.ts),
        (&None, &None, None, None)
    );

    let nan = &got[1];
    assert!(nan.value.is_some_and(f64::is_nan), "{:?}", nan.value);

    let truncated = &got[2];
    assert_eq!(truncated.raw, "x".repeat(64));
    assert_eq!((truncated.raw_len, truncated.raw_truncated), (100, true));
    assert_eq!(truncated.detail, "invalid_json at byte 3");

    let range = &got[3];
    assert_eq!(range.raw, "{\"ph\": 17}");
    assert_eq!(range.source, "mqtt:field");
    assert_eq!(range.sensor.as_deref(), Some("wq-beijiang-01"));
    assert_eq!(range.metric.as_deref(), Some("ph"));
    assert_eq!((range.value, range.ts), (Some(17.0), Some(995)));
    assert_eq!(range.received_at, 1_000);

    let only = reader
        .dead_letters(&DeadLetterQuery {
            reason: Some("invalid_json".into()),
            limit: None,
        })
        .expect("query");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].received_at, 2_000);
}

/// The `received_at` of every stored dead letter, oldest first.
fn dead_letter_times(path: &std::path::Path) -> Vec<i64> {
    let reader = SqliteReader::open(path).expect("open reader");
    let mut got: Vec<i64> = reader
        .dead_letters(&DeadLetterQuery {
            limit: Some(MAX_LIMIT),
            ..DeadLetterQuery::default()
        })
        .expect("query")
        .iter()
        .map(|d| d.received_at)
        .collect();
    got.sort_unstable();
    got
}

fn commit_dead_letters(store: &mut SqliteStore, times: std::ops::Range<i64>) -> CommitStats {
    let letters: Vec<DeadLetter> = times.map(|t| dead_letter(t, "out_of_range", b"")).collect();
    store
        .commit(&Commit {
            dead_letters: &letters,
            raw_max: 64,
            ..Commit::default()
        })
        .expect("commit")
}

#[test]
fn dead_letters_past_the_cap_lose_the_oldest() {
    let (_dir, path, mut store) = temp_store();
    store.set_max_dead_letters(3);

    let stats = commit_dead_letters(&mut store, 1..6);
    assert_eq!((stats.dead_letters, stats.dead_letters_dropped), (5, 2));
    assert_eq!(dead_letter_times(&path), vec![3, 4, 5]);

    let stats = commit_dead_letters(&mut store, 6..8);
    assert_eq!((stats.dead_letters, stats.dead_letters_dropped), (2, 2));
    assert_eq!(dead_letter_times(&path), vec![5, 6, 7]);

    // A commit without dead letters leaves them alone.
    let stats = store
        .commit(&readings_commit(&[Reading::new(
            "wl-1",
            "water_level",
            "level",
            1.0,
            1_000,
        )]))
        .expect("commit");
    assert_eq!(stats.dead_letters_dropped, 0);
    assert_eq!(dead_letter_times(&path), vec![5, 6, 7]);
}

#[test]
fn without_a_cap_every_dead_letter_stays() {
    let (_dir, path, mut store) = temp_store();
    let stats = commit_dead_letters(&mut store, 1..2_001);
    assert_eq!((stats.dead_letters, stats.dead_letters_dropped), (2_000, 0));
    assert_eq!(dead_letter_times(&path), (1..2_001).collect::<Vec<_>>());
}

#[test]
fn prune_caps_dead_letters_other_writers_added() {
    let (_dir, path, mut store) = temp_store();
    store.set_max_dead_letters(2);
    commit_dead_letters(&mut store, 100..102);
    // A sink's dead letters, through its own connection, as src/outbox/db.rs writes them.
    let mut side = open_side_writer(&path, crate::outbox::Fsync::Always).expect("side writer");
    let tx = side.transaction().expect("begin");
    let letters: Vec<DeadLetter> = (102..105)
        .map(|t| dead_letter(t, "rejected_by_store", b""))
        .collect();
    write_dead_letters(&tx, &letters, 64).expect("write");
    tx.commit().expect("commit");
    assert_eq!(dead_letter_times(&path).len(), 5);

    // Nothing is old enough for retention; the cap alone removes the three oldest.
    let pruned = store.prune(0).expect("prune");
    assert_eq!((pruned.dead_letters, pruned.dead_letters_over_cap), (0, 3));
    assert_eq!(dead_letter_times(&path), vec![103, 104]);
}

#[test]
fn alert_upsert_update_resolve() {
    let (_dir, path, mut store) = temp_store();
    let raised = alert("a-1", AlertState::Active, 1_000, 1_000);
    let other = alert("a-2", AlertState::Active, 1_500, 1_500);
    store
        .commit(&Commit {
            alerts: &[Arc::new(raised.clone()), Arc::new(other.clone())],
            ..Commit::default()
        })
        .expect("commit raise");
    assert_eq!(
        store.active_alerts().expect("active"),
        vec![raised.clone(), other.clone()]
    );

    let mut escalated = raised.clone();
    escalated.severity = Severity::Critical;
    escalated.value = 10.5;
    escalated.peak = 10.5;
    escalated.threshold = 10.0;
    escalated.count = 3;
    escalated.updated_at = 2_000;
    escalated.ack = Some(Ack {
        by: "值班员 Li".into(),
        at: 2_100,
        comment: "crew sent".into(),
    });
    store
        .commit(&Commit {
            alerts: &[Arc::new(escalated.clone())],
            ..Commit::default()
        })
        .expect("commit escalate");
    let reader = SqliteReader::open(&path).expect("open reader");
    assert_eq!(reader.alert("a-1").expect("read"), Some(escalated.clone()));

    let mut resolved = escalated.clone();
    resolved.state = AlertState::Resolved;
    resolved.resolved_at = Some(3_000);
    resolved.updated_at = 3_000;
    let stats = store
        .commit(&Commit {
            alerts: &[Arc::new(resolved.clone())],
            ..Commit::default()
        })
        .expect("commit resolve");
    assert_eq!(stats.alerts, 1);

    assert_eq!(store.active_alerts().expect("active"), vec![other.clone()]);
    assert_eq!(reader.alert("a-1").expect("read"), Some(resolved.clone()));
    assert_eq!(reader.alert("a-404").expect("read"), None);
    let by_state = |state| {
        reader
            .alerts(&AlertQuery {
                state,
                ..Default::default()
            })
            .expect("query alerts")
    };
    assert_eq!(by_state(AlertFilter::Active), vec![other.clone()]);
    assert_eq!(by_state(AlertFilter::Resolved), vec![resolved.clone()]);
    // Newest (latest started) first.
    assert_eq!(by_state(AlertFilter::All), vec![other, resolved]);
    let counts = reader.counts().expect("counts");
    assert_eq!((counts.alerts, counts.active_alerts), (2, 1));
}

#[test]
fn alert_events_come_back_in_order() {
    let (_dir, path, mut store) = temp_store();
    let raised = alert("a-1", AlertState::Active, 1_000, 1_000);
    let mut escalated = raised.clone();
    escalated.severity = Severity::Major;
    escalated.updated_at = 2_000;
    let mut resolved = escalated.clone();
    resolved.state = AlertState::Resolved;
    resolved.updated_at = 3_000;
    resolved.resolved_at = Some(3_000);
    let event = |event, alert: &Alert| AlertEvent {
        event,
        at: alert.updated_at,
        alert: alert.clone(),
    };
    let noise = event(
        AlertEventKind::Raised,
        &alert("a-2", AlertState::Active, 1_500, 1_500),
    );
    let first = vec![
        event(AlertEventKind::Raised, &raised),
        noise.clone(),
        event(AlertEventKind::Escalated, &escalated),
    ];
    let second = vec![event(AlertEventKind::Resolved, &resolved)];
    let stats = store
        .commit(&Commit {
            alerts: &[Arc::new(escalated.clone()), Arc::new(noise.alert.clone())],
            events: &first,
            ..Commit::default()
        })
        .expect("commit");
    assert_eq!(stats.events, 3);
    store
        .commit(&Commit {
            alerts: &[Arc::new(resolved.clone())],
            events: &second,
            ..Commit::default()
        })
        .expect("commit");

    let reader = SqliteReader::open(&path).expect("open reader");
    let history = reader.alert_events("a-1").expect("events");
    assert_eq!(
        history,
        vec![first[0].clone(), first[2].clone(), second[0].clone()]
    );
    assert_eq!(reader.alert_events("a-2").expect("events"), vec![noise]);
    assert!(reader.alert_events("a-404").expect("events").is_empty());
}

#[test]
fn prune_removes_only_old_rows_and_keeps_active_alerts() {
    let (_dir, path, mut store) = temp_store();
    let cutoff = 10_000;
    let readings = vec![
        Reading::new("wl-1", "water_level", "level", 1.0, cutoff - 1),
        Reading::new("wl-1", "water_level", "level", 2.0, cutoff),
        Reading::new("wl-1", "water_level", "level", 3.0, cutoff + 1),
    ];
    let letters = vec![
        dead_letter(cutoff - 5, "out_of_range", b"old"),
        dead_letter(cutoff + 5, "out_of_range", b"new"),
    ];
    // Active for ages: must survive any prune.
    let ancient_active = alert("active-old", AlertState::Active, 1, 2);
    let old_resolved = alert("resolved-old", AlertState::Resolved, 100, 200);
    let new_resolved = alert("resolved-new", AlertState::Resolved, 100, cutoff + 100);
    let alerts = [
        Arc::new(ancient_active.clone()),
        Arc::new(old_resolved.clone()),
        Arc::new(new_resolved.clone()),
    ];
    let events: Vec<AlertEvent> = alerts
        .iter()
        .map(|a| AlertEvent {
            event: AlertEventKind::Raised,
            at: a.started_at,
            alert: Alert::clone(a),
        })
        .collect();
    store
        .commit(&Commit {
            readings: &readings,
            dead_letters: &letters,
            alerts: &alerts,
            events: &events,
            sensors: &[sensor("wl-1", "water_level", &[], 1)],
            raw_max: 64,
            outbox: None,
        })
        .expect("commit");

    let stats = store.prune(cutoff).expect("prune");
    assert_eq!(
        stats,
        PruneStats {
            readings: 1,
            dead_letters: 1,
            dead_letters_over_cap: 0,
            alerts: 1,
            alert_events: 1,
        }
    );

    let reader = SqliteReader::open(&path).expect("open reader");
    let ts: Vec<i64> = all_readings(&reader).iter().map(|r| r.ts).collect();
    assert_eq!(ts, vec![cutoff, cutoff + 1]);
    let letters = reader
        .dead_letters(&DeadLetterQuery::default())
        .expect("dl");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].raw, "new");
    let mut ids: Vec<String> = reader
        .alerts(&AlertQuery::default())
        .expect("alerts")
        .into_iter()
        .map(|a| a.id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["active-old", "resolved-new"]);
    assert_eq!(reader.alert_events("active-old").expect("ev").len(), 1);
    assert_eq!(reader.alert_events("resolved-new").expect("ev").len(), 1);
    assert!(reader.alert_events("resolved-old").expect("ev").is_empty());
    assert_eq!(reader.sensors().expect("sensors").len(), 1);
    assert_eq!(store.active_alerts().expect("active"), vec![ancient_active]);
}

#[test]
fn everything_survives_a_reopen() {
    let (_dir, path, mut store) = temp_store();
    let readings = vec![Reading::new("gd-1", "gas_detector", "lel", 12.5, 5_000)];
    let letters = vec![dead_letter(5_000, "unknown_sensor", b"raw")];
    let active = alert("a-1", AlertState::Active, 4_000, 5_000);
    let events = vec![AlertEvent {
        event: AlertEventKind::Raised,
        at: 4_000,
        alert: active.clone(),
    }];
    let sensors = vec![sensor(
        "gd-1",
        "gas_detector",
        &[("site", "plant-3")],
        5_000,
    )];
    store
        .commit(&Commit {
            readings: &readings,
            dead_letters: &letters,
            alerts: &[Arc::new(active.clone())],
            events: &events,
            sensors: &sensors,
            raw_max: 64,
            outbox: None,
        })
        .expect("commit");
    drop(store);

    // A reader works with no writer open too (the WAL has been checkpointed away).
    let reader = SqliteReader::open(&path).expect("open reader");
    assert_eq!(reader.alert("a-1").expect("alert"), Some(active.clone()));
    let store = SqliteStore::open(&path).expect("reopen store");
    assert_eq!(store.active_alerts().expect("active"), vec![active]);
    let got = all_readings(&reader);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].sensor.as_str(), got[0].value), ("gd-1", 12.5));
    assert_eq!(reader.alert_events("a-1").expect("events"), events);
    assert_eq!(reader.sensors().expect("sensors"), sensors);
    assert_eq!(
        reader.counts().expect("counts"),
        StoreCounts {
            readings: 1,
            alerts: 1,
            active_alerts: 1,
            alert_events: 1,
            dead_letters: 1,
            sensors: 1,
        }
    );
}

#[test]
fn reader_sees_commits_while_the_writer_is_open() {
    let (_dir, path, mut store) = temp_store();
    let reader = SqliteReader::open(&path).expect("open reader");
    assert_eq!(reader.counts().expect("counts"), StoreCounts::default());

    for i in 0..3 {
        let readings = vec![Reading::new("fl-1", "flow", "flow", i as f64, i * 60_000)];
        store.commit(&readings_commit(&readings)).expect("commit");
        let got = all_readings(&reader);
        assert_eq!(got.len() as i64, i + 1);
        assert_eq!(got.last().map(|r| r.value), Some(i as f64));
    }
}

#[test]
fn sensor_registry_keeps_the_newest_record() {
    let (_dir, path, mut store) = temp_store();
    let commit_sensors = |store: &mut SqliteStore, sensors: &[SensorRecord]| {
        store
            .commit(&Commit {
                sensors,
                ..Commit::default()
            })
            .expect("commit sensors");
    };
    commit_sensors(
        &mut store,
        &[sensor("wm-1", "water_meter", &[("district", "old")], 1_000)],
    );
    commit_sensors(
        &mut store,
        &[sensor("wm-1", "water_meter", &[("district", "new")], 2_000)],
    );
    // A late, older record neither rolls last_seen back nor restores old tags; an empty kind
    // keeps the known one.
    commit_sensors(
        &mut store,
        &[
            sensor("wm-1", "", &[("district", "stale")], 1_500),
            sensor("wm-2", "gas_meter", &[], 10),
        ],
    );
    commit_sensors(&mut store, &[sensor("wm-2", "", &[("route", "r9")], 20)]);

    let reader = SqliteReader::open(&path).expect("open reader");
    assert_eq!(
        reader.sensors().expect("sensors"),
        vec![
            sensor("wm-1", "water_meter", &[("district", "new")], 2_000),
            sensor("wm-2", "gas_meter", &[("route", "r9")], 20),
        ]
    );
}

#[test]
fn chinese_tags_round_trip() {
    let (_dir, path, mut store) = temp_store();
    let record = sensor(
        "wl-北江-01",
        "water_level",
        &[
            ("district", "清城区"),
            ("river", "北江"),
            ("site", "飞来峡水利枢纽 \"坝前\" \\ 站"),
        ],
        1_000,
    );
    store
        .commit(&Commit {
            sensors: std::slice::from_ref(&record),
            readings: &[Reading::new(
                "wl-北江-01",
                "water_level",
                "level",
                24.1,
                1_000,
            )],
            ..Commit::default()
        })
        .expect("commit");
    let reader = SqliteReader::open(&path).expect("open reader");
    assert_eq!(reader.sensors().expect("sensors"), vec![record]);
    let got = reader
        .readings(&ReadingQuery {
            sensor: Some("wl-北江-01".into()),
            ..ReadingQuery::default()
        })
        .expect("query");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sensor, CompactString::from("wl-北江-01"));
}

#[test]
fn a_commit_is_all_or_nothing() {
    let (_dir, path, mut store) = temp_store();
    let readings = vec![
        Reading::new("aq-1", "air_quality", "o3", 80.0, 1_000),
        Reading::new("aq-1", "air_quality", "o3", f64::NAN, 2_000),
    ];
    let letters = vec![dead_letter(1_000, "out_of_range", b"x")];
    let err = store
        .commit(&Commit {
            readings: &readings,
            dead_letters: &letters,
            ..Commit::default()
        })
        .expect_err("a NaN reading must be refused");
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    assert!(!err.is_retryable());

    let mut bad_alert = alert("a-1", AlertState::Active, 1, 1);
    bad_alert.peak = f64::INFINITY;
    let err = store
        .commit(&Commit {
            readings: &readings[..1],
            alerts: &[Arc::new(bad_alert.clone())],
            ..Commit::default()
        })
        .expect_err("a non-finite alert must be refused");
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");

    let reader = SqliteReader::open(&path).expect("open reader");
    assert_eq!(reader.counts().expect("counts"), StoreCounts::default());
}

#[test]
fn a_corrupt_row_is_an_error_not_a_panic() {
    let (_dir, path, mut store) = temp_store();
    store
        .commit(&Commit {
            readings: &[Reading::new("n-1", "noise", "laeq", 55.0, 1_000)],
            alerts: &[Arc::new(alert("a-1", AlertState::Active, 1, 1))],
            events: &[AlertEvent {
                event: AlertEventKind::Raised,
                at: 1,
                alert: alert("a-1", AlertState::Active, 1, 1),
            }],
            ..Commit::default()
        })
        .expect("commit");
    let tamper = rusqlite::Connection::open(&path).expect("open raw");
    tamper
        .execute_batch(
            "UPDATE readings SET quality = 'excellent';
             UPDATE alerts SET severity = 'apocalyptic';
             UPDATE alert_events SET alert = '{not json';",
        )
        .expect("tamper");
    drop(tamper);

    let reader = SqliteReader::open(&path).expect("open reader");
    let err = reader
        .readings(&ReadingQuery::default())
        .expect_err("bad quality");
    assert!(
        matches!(
            err,
            StoreError::Sqlite {
                op: "query readings",
                ..
            }
        ),
        "{err:?}"
    );
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        cause.as_deref().is_some_and(|c| c.contains("excellent")),
        "{cause:?}"
    );
    assert!(store.active_alerts().is_err());
    assert!(reader.alert("a-1").is_err());
    assert!(reader.alert_events("a-1").is_err());
}

#[test]
fn schema_version_is_checked() {
    let (_dir, path, store) = temp_store();
    drop(store);
    let raw = rusqlite::Connection::open(&path).expect("open raw");
    raw.pragma_update(None, "user_version", 99).expect("bump");
    drop(raw);
    let err = SqliteStore::open(&path).expect_err("newer schema");
    assert!(
        matches!(err, StoreError::SchemaVersion { found: 99, .. }),
        "{err:?}"
    );
    let err = SqliteReader::open(&path).expect_err("newer schema");
    assert!(
        matches!(err, StoreError::SchemaVersion { found: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn reader_needs_an_existing_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.db");
    let err = SqliteReader::open(&path).expect_err("no file");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(!path.exists(), "a reader must not create the file");
}

#[test]
fn commit_of_ten_thousand_readings() {
    let (_dir, path, mut store) = temp_store();
    let readings: Vec<Reading> = (0..10_000)
        .map(|i| {
            Reading::new(
                &format!("em-{:03}", i % 100),
                "electricity_meter",
                "active_power",
                i as f64 * 0.5,
                1_700_000_000_000 + (i / 100) * 1000,
            )
        })
        .collect();
    let started = Instant::now();
    let stats = store.commit(&readings_commit(&readings)).expect("commit");
    let elapsed = started.elapsed();
    println!(
        "commit of {} readings took {elapsed:?} ({:.0} readings/s, debug build)",
        readings.len(),
        readings.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(stats.readings_inserted, 10_000);
    let reader = SqliteReader::open(&path).expect("open reader");
    assert_eq!(reader.counts().expect("counts").readings, 10_000);
    let last = reader
        .readings(&ReadingQuery {
            sensor: Some("em-099".into()),
            limit: Some(1),
            ..ReadingQuery::default()
        })
        .expect("query");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].value, 9_999.0 * 0.5);

    let started = Instant::now();
    let stats = store.commit(&readings_commit(&readings)).expect("replay");
    println!(
        "replay of 10000 duplicate readings took {:?}",
        started.elapsed()
    );
    assert_eq!((stats.readings_inserted, stats.duplicates), (0, 10_000));
}

/// A commit with nothing in it (the null sink's usual batch) succeeds without a transaction:
/// it returns at once even while another connection holds the write lock, where a commit with
/// one reading waits out the busy timeout and fails as busy.
#[test]
fn an_empty_commit_needs_no_write_lock() {
    let (_dir, path, mut store) = temp_store();
    store
        .connection_mut()
        .busy_timeout(std::time::Duration::from_millis(50))
        .expect("busy timeout");
    let other = rusqlite::Connection::open(&path).expect("second connection");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the other connection takes the write lock");

    let stats = store
        .commit(&Commit {
            raw_max: 64,
            ..Commit::default()
        })
        .expect("an empty commit needs no lock");
    assert_eq!(stats.readings_inserted, 0);
    assert_eq!(stats.last_event_seq, None);
    assert_eq!(stats.outbox_seq, None);

    let one = [Reading::new("wl-1", "water_level", "level", 2.5, 1_000)];
    let err = store
        .commit(&readings_commit(&one))
        .expect_err("a commit with a reading needs the lock the other connection holds");
    assert!(err.is_retryable(), "{err}");

    other.execute_batch("ROLLBACK").expect("release the lock");
    let stats = store
        .commit(&readings_commit(&one))
        .expect("the commit goes through once the lock is free");
    assert_eq!(stats.readings_inserted, 1);
}
