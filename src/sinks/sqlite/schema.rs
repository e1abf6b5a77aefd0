//! Opening connections and the schema with its migrations.
//!
//! The schema version lives in SQLite's `user_version`. Each entry of [`MIGRATIONS`] moves the
//! file one version up and runs in its own transaction, so a crash mid-migration leaves the
//! previous version intact. Never edit a released migration: append a new one.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::StoreError;

/// How long a connection waits for another connection's lock before giving up with
/// `SQLITE_BUSY`. The writer holds the lock for one commit (milliseconds), so this is ample;
/// it matters when a second process (a backup, the `sqlite3` shell) touches the file.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// After a large transaction (a prune) the WAL is truncated back to this size at the next
/// checkpoint instead of staying as large as the transaction made it.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The schema, one migration per version. Version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    "
    -- One point per series and time: a replayed reading is ignored, not counted twice.
    CREATE TABLE readings (
        sensor    TEXT    NOT NULL,
        metric    TEXT    NOT NULL,
        ts        INTEGER NOT NULL,
        kind      TEXT    NOT NULL,
        value     REAL    NOT NULL,
        quality   TEXT    NOT NULL,
        ts_source TEXT    NOT NULL,
        PRIMARY KEY (sensor, metric, ts)
    ) WITHOUT ROWID;
    -- Pruning by age and time-range queries that name no sensor.
    CREATE INDEX readings_ts ON readings (ts);

    CREATE TABLE alerts (
        id          TEXT    PRIMARY KEY NOT NULL,
        rule        TEXT    NOT NULL,
        sensor      TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        metric      TEXT    NOT NULL,
        severity    TEXT    NOT NULL,
        state       TEXT    NOT NULL,
        value       REAL    NOT NULL,
        threshold   REAL    NOT NULL,
        peak        REAL    NOT NULL,
        count       INTEGER NOT NULL,
        started_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        resolved_at INTEGER,
        ack_by      TEXT,
        ack_at      INTEGER,
        ack_comment TEXT,
        message     TEXT    NOT NULL
    );
    -- Active alerts at startup, listings by state newest first, pruning of resolved ones.
    CREATE INDEX alerts_state_started ON alerts (state, started_at);
    CREATE INDEX alerts_started ON alerts (started_at);

    CREATE TABLE alert_events (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT    NOT NULL,
        event    TEXT    NOT NULL,
        at       INTEGER NOT NULL,
        alert    TEXT    NOT NULL
    );
    CREATE INDEX alert_events_alert ON alert_events (alert_id, seq);
    CREATE INDEX alert_events_at ON alert_events (at);

    CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY,
        received_at INTEGER NOT NULL,
        source      TEXT    NOT NULL,
        reason      TEXT    NOT NULL,
        detail      TEXT    NOT NULL,
        sensor      TEXT,
        metric      TEXT,
        -- REAL, or the text 'NaN': SQLite would otherwise turn a NaN into NULL, and a NaN is
        -- exactly what some dead letters are about.
        value,
        ts          INTEGER,
        raw         BLOB    NOT NULL,
        -- The payload's length before truncation.
        raw_len     INTEGER NOT NULL
    );
    CREATE INDEX dead_letters_received ON dead_letters (received_at);
    CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);

    CREATE TABLE sensors (
        id        TEXT    PRIMARY KEY NOT NULL,
        kind      TEXT    NOT NULL,
        tags      TEXT    NOT NULL,
        last_seen INTEGER NOT NULL
    );
    ",
    // Version 2: the durable outbox (src/outbox/) between the pipeline and remote sinks.
    "
    -- AUTOINCREMENT: a sequence number is never reused, even after the table was emptied,
    -- so a sink's cursor can never point at a newer entry than the one it confirmed.
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at INTEGER NOT NULL,
        points     INTEGER NOT NULL,
        lines      INTEGER NOT NULL,
        -- Length of the line protocol before compression.
        raw_len    INTEGER NOT NULL,
        -- Gzip-compressed line protocol (a sink can send it as it is).
        body       BLOB    NOT NULL
    );
    -- Each sink's last confirmed entry.
    CREATE TABLE outbox_cursors (
        sink TEXT    PRIMARY KEY NOT NULL,
        seq  INTEGER NOT NULL
    );
    ",
    // Version 3: each alert output's last delivered `alert_events.seq` (src/alerts/output.rs).
    // Retention pruning keeps every event after the lowest of them.
    "
    CREATE TABLE alert_output_cursors (
        output TEXT    PRIMARY KEY NOT NULL,
        seq    INTEGER NOT NULL
    );
    ",
];

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Opens (creating if needed) the writer's connection: WAL mode, busy timeout, schema migrated.
///
/// # Durability: `synchronous = NORMAL`
/// In WAL mode a commit appends its pages to the `-wal` file with `write(2)` before `COMMIT`
/// returns, and with `NORMAL` SQLite calls `fsync` only when it checkpoints the WAL into the
/// database, not at every commit. So:
/// - a process crash (`kill -9`, panic, OOM kill) loses nothing that was committed: the pages
///   are in the OS page cache and reach the disk without the process;
/// - a power loss or kernel crash can lose the transactions committed since the last
///   checkpoint (at most about the last 1000 pages, the autocheckpoint size), rolling the
///   store back to an earlier consistent state. It never corrupts the file.
///
/// `FULL` would close that window at the price of one `fsync` per commit, which on the SD
/// cards and eMMC of field cabinets costs tens of milliseconds. The gateway's "nothing is lost"
/// promise is made against process crashes and store outages, and readings carry their own
/// timestamps so a device or broker replay after a power cut refills the gap without
/// duplicates; `NORMAL` is the better trade there.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(open_err)?;
    // Commits re-run the same few statements thousands of times; keep them all prepared.
    conn.set_prepared_statement_cache_capacity(32);
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens a read-only connection to a store a writer has already created.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // Query variants (which filters are present, the order) each get their own statement.
    conn.set_prepared_statement_cache_capacity(64);
    let found = user_version(&conn).map_err(open_err)?;
    if found != SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    // A negative or huge user_version is not ours; map it to a version no build supports.
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found = user_version(conn).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (found + 1..).zip(&MIGRATIONS[found as usize..]) {
        let migrate_err = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        // IMMEDIATE takes the write lock first, so two processes opening a fresh file cannot
        // both run the same migration; the loser re-checks the version under the lock.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(migrate_err)?;
        if user_version(&tx).map_err(migrate_err)? >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(migrate_err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(migrate_err)?;
        tx.commit().map_err(migrate_err)?;
    }
    Ok(())
}
