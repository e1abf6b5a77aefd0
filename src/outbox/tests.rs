use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::sinks::sqlite::{Commit, SqliteStore};

fn cfg(max_bytes: u64, when_full: WhenFull) -> OutboxConfig {
    OutboxConfig {
        max_bytes,
        when_full,
        fsync: Fsync::Always,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: SqliteStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("citygate.db");
    let store = SqliteStore::open(&path).expect("open store");
    Fixture {
        _dir: dir,
        path,
        store,
    }
}

/// Commits an entry the way the store thread does: reserve, commit, appended.
fn push(store: &mut SqliteStore, outbox: &Outbox, text: &str, points: u64) -> i64 {
    let lines = text.lines().count() as u64;
    let mut entry = Append::compress(text.as_bytes(), lines, points, 1_000).expect("compress");
    let admit = outbox.reserve(entry.body.len() as u64);
    entry.drop_through = admit.drop_through;
    let stats = store
        .commit(&Commit {
            outbox: Some(&entry),
            ..Commit::default()
        })
        .expect("commit");
    let seq = stats.outbox_seq.expect("an outbox entry was appended");
    outbox.appended(entry.meta(seq), admit);
    seq
}

fn confirm(path: &std::path::Path, outbox: &Outbox, sink: usize, name: &str, seq: i64) {
    let mut conn = crate::sinks::sqlite::open_side_writer(path, Fsync::Always).expect("side");
    db::confirm(&mut conn, name, seq, &[], 64).expect("confirm");
    outbox.confirmed(sink, seq);
}

fn rows(path: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut stmt = conn
        .prepare("SELECT seq FROM outbox ORDER BY seq")
        .expect("prepare");
    let seqs = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<Vec<i64>, _>>()
        .expect("rows");
    seqs
}

#[test]
fn entries_come_back_in_order_and_leave_only_when_every_sink_confirmed() {
    let mut f = fixture();
    let outbox = Outbox::open(
        f.store.connection_mut(),
        cfg(1 << 30, WhenFull::Block),
        &["a", "b"],
    )
    .expect("open outbox");
    let s1 = push(
        &mut f.store,
        &outbox,
        "m,sensor=x v=1 1\nm,sensor=x v=2 2\n",
        2,
    );
    let s2 = push(&mut f.store, &outbox, "m,sensor=清城区 v=3 3\n", 1);
    assert!(s2 > s1);

    assert_eq!(
        outbox
            .next_range(0, 1 << 20, 10_000)
            .map(|r| (r.from, r.to)),
        Some((s1, s2))
    );
    // A limit smaller than one entry still yields that entry, and only it.
    assert_eq!(
        outbox.next_range(0, 1, 1).map(|r| (r.from, r.to, r.full)),
        Some((s1, s1, true))
    );
    let conn = rusqlite::Connection::open(&f.path).expect("open");
    let entries = db::read_range(&conn, s1, s2).expect("read");
    let texts: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8(e.text.clone()).expect("utf-8"))
        .collect();
    assert_eq!(
        texts,
        [
            "m,sensor=x v=1 1\nm,sensor=x v=2 2\n",
            "m,sensor=清城区 v=3 3\n"
        ]
    );
    assert_eq!(outbox.lag(0).points, 3);
    assert_eq!(outbox.lag(0).lines, 3);

    // What a sink prepares while it delivers s1: s2, a part-filled request.
    assert_eq!(
        outbox.range_after(s1, 1 << 20, 10_000),
        Some(Range {
            from: s2,
            to: s2,
            full: false
        })
    );
    confirm(&f.path, &outbox, 0, "a", s2);
    assert_eq!(outbox.lag(0).entries, 0);
    assert_eq!(outbox.next_range(0, 1 << 20, 10_000), None);
    // Sink b has not confirmed: both entries stay, on disk and in the depth.
    assert_eq!(rows(&f.path), vec![s1, s2]);
    assert_eq!(outbox.snapshot(0).points, 3);
    confirm(&f.path, &outbox, 1, "b", s1);
    assert_eq!(rows(&f.path), vec![s2]);
    assert_eq!(outbox.snapshot(0).points, 1);
    confirm(&f.path, &outbox, 1, "b", s2);
    assert!(rows(&f.path).is_empty());
    assert_eq!(outbox.snapshot(0).entries, 0);
}

#[test]
fn a_restart_finds_the_backlog_and_the_cursors() {
    let mut f = fixture();
    let (s1, s2);
    {
        let outbox = Outbox::open(
            f.store.connection_mut(),
            cfg(1 << 30, WhenFull::Block),
            &["a"],
        )
        .expect("open outbox");
        s1 = push(&mut f.store, &outbox, "m v=1 1\n", 1);
        s2 = push(&mut f.store, &outbox, "m v=2 2\n", 1);
        confirm(&f.path, &outbox, 0, "a", s1);
    }
    drop(f.store);
    let mut store = SqliteStore::open(&f.path).expect("reopen");
    let outbox = Outbox::open(
        store.connection_mut(),
        cfg(1 << 30, WhenFull::Block),
        &["a"],
    )
    .expect("reopen outbox");
    let lag = outbox.lag(0);
    assert_eq!((lag.cursor, lag.entries, lag.points), (s1, 1, 1));
    assert_eq!(
        outbox.next_range(0, 1 << 20, 100).map(|r| (r.from, r.to)),
        Some((s2, s2))
    );
    // A sequence number is never reused after the table empties.
    confirm(&f.path, &outbox, 0, "a", s2);
    let s3 = push(&mut store, &outbox, "m v=3 3\n", 1);
    assert!(s3 > s2);
}

#[test]
fn a_new_sink_gets_the_backlog_and_a_removed_sink_lets_go_of_it() {
    let mut f = fixture();
    let outbox = Outbox::open(
        f.store.connection_mut(),
        cfg(1 << 30, WhenFull::Block),
        &["a"],
    )
    .expect("open outbox");
    let s1 = push(&mut f.store, &outbox, "m v=1 1\n", 1);
    let s2 = push(&mut f.store, &outbox, "m v=2 2\n", 1);
    confirm(&f.path, &outbox, 0, "a", s1);
    drop(outbox);

    // "b" is added: it starts before the oldest entry still held (s2).
    let outbox = Outbox::open(
        f.store.connection_mut(),
        cfg(1 << 30, WhenFull::Block),
        &["a", "b"],
    )
    .expect("open outbox");
    assert_eq!(
        outbox.next_range(1, 1 << 20, 100).map(|r| (r.from, r.to)),
        Some((s2, s2))
    );
    drop(outbox);

    // "a" and "b" are both gone: no sink needs the entry, so it is deleted.
    let outbox = Outbox::open(f.store.connection_mut(), cfg(1 << 30, WhenFull::Block), &[])
        .expect("open outbox");
    assert!(!outbox.enabled());
    assert!(rows(&f.path).is_empty());
}

#[test]
fn a_full_outbox_holds_the_store_thread_until_a_sink_confirms() {
    let mut f = fixture();
    let text = "m,sensor=x v=1 1\n";
    let one = Append::compress(text.as_bytes(), 1, 1, 0)
        .expect("compress")
        .body
        .len() as u64;
    // Room for exactly two entries.
    let outbox = Outbox::open(
        f.store.connection_mut(),
        cfg(2 * one, WhenFull::Block),
        &["a"],
    )
    .expect("open outbox");
    let s1 = push(&mut f.store, &outbox, text, 1);
    push(&mut f.store, &outbox, text, 1);

    let (tx, rx) = mpsc::channel();
    let waiter = {
        let outbox = outbox.clone();
        std::thread::spawn(move || {
            let admit = outbox.reserve(one);
            tx.send(admit).expect("send");
        })
    };
    // Still held: nothing has been confirmed.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(outbox.snapshot(0).state, "full");
    confirm(&f.path, &outbox, 0, "a", s1);
    let admit = rx.recv().expect("reserve returns once there is room");
    assert_eq!(admit, Admit::default());
    waiter.join().expect("join");
    assert_eq!(outbox.snapshot(0).state, "ok");
}

#[test]
fn closing_releases_a_held_store_thread() {
    let mut f = fixture();
    let outbox = Outbox::open(f.store.connection_mut(), cfg(1, WhenFull::Block), &["a"])
        .expect("open outbox");
    push(&mut f.store, &outbox, "m v=1 1\n", 1);
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let outbox = outbox.clone();
        std::thread::spawn(move || tx.send(outbox.reserve(100)).expect("send"))
    };
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    outbox.close();
    assert_eq!(rx.recv().expect("released"), Admit::default());
    waiter.join().expect("join");
}

#[test]
fn drop_oldest_makes_room_counts_the_points_and_moves_every_cursor() {
    let mut f = fixture();
    let text = "m,sensor=x v=1 1\nm,sensor=x v=2 2\n";
    let one = Append::compress(text.as_bytes(), 2, 2, 0)
        .expect("compress")
        .body
        .len() as u64;
    let outbox = Outbox::open(
        f.store.connection_mut(),
        cfg(2 * one, WhenFull::DropOldest),
        &["a", "b"],
    )
    .expect("open outbox");
    let s1 = push(&mut f.store, &outbox, text, 2);
    let s2 = push(&mut f.store, &outbox, text, 2);
    let s3 = push(&mut f.store, &outbox, text, 2);
    assert_eq!(rows(&f.path), vec![s2, s3]);
    let snap = outbox.snapshot(0);
    assert_eq!((snap.dropped_points, snap.points, snap.entries), (2, 4, 2));
    for sink in 0..2 {
        assert_eq!(outbox.lag(sink).cursor, s1);
        assert_eq!(
            outbox
                .next_range(sink, 1 << 20, 100)
                .map(|r| (r.from, r.to)),
            Some((s2, s3))
        );
    }
    let conn = rusqlite::Connection::open(&f.path).expect("open");
    let cursors: Vec<i64> = conn
        .prepare("SELECT seq FROM outbox_cursors ORDER BY sink")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(cursors, vec![s1, s1]);
}

#[test]
fn confirming_keeps_the_dead_letters_of_refused_lines() {
    let mut f = fixture();
    let outbox = Outbox::open(
        f.store.connection_mut(),
        cfg(1 << 30, WhenFull::Block),
        &["a"],
    )
    .expect("open outbox");
    let s1 = push(&mut f.store, &outbox, "m v=1 1\n", 1);
    let letter = crate::model::DeadLetter::undecodable(
        "sink:a",
        5,
        "store_rejected",
        "the store refused the line: field type conflict".into(),
        bytes::Bytes::from_static(b"m v=1 1"),
    );
    let mut conn = crate::sinks::sqlite::open_side_writer(&f.path, Fsync::Always).expect("side");
    db::confirm(&mut conn, "a", s1, &[letter], 64).expect("confirm");
    let reader = crate::sinks::sqlite::SqliteReader::open(&f.path).expect("reader");
    let letters = reader
        .dead_letters(&crate::sinks::sqlite::DeadLetterQuery::default())
        .expect("query");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "store_rejected");
    assert_eq!(letters[0].source, "sink:a");
    assert!(rows(&f.path).is_empty());
}
