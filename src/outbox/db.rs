//! The outbox's SQL: entries appended in the store's commit transaction, read and confirmed by
//! each sink on its own connection.

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::model::{DeadLetter, TimestampMs};

/// An entry as the in-memory index knows it (no body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub seq: i64,
    pub created_at: TimestampMs,
    pub points: u64,
    pub lines: u64,
    /// Line-protocol bytes before compression.
    pub raw_len: u64,
    /// Bytes of the compressed body on disk.
    pub stored: u64,
}

/// A new entry, compressed, before it has a sequence number.
#[derive(Clone, Debug)]
pub struct Append {
    pub created_at: TimestampMs,
    pub points: u64,
    pub lines: u64,
    pub raw_len: u64,
    pub body: Vec<u8>,
    /// Entries up to and including this sequence number are deleted in the same transaction
    /// (`when_full = "drop_oldest"`), and every cursor moves past them.
    pub drop_through: Option<i64>,
}

impl Append {
    /// Compresses line protocol for the outbox. Level 1: line protocol repeats itself (the
    /// same measurements, tags and field keys on every line), so even the fastest level
    /// shrinks it four- to eightfold, and the store thread must not wait on a slow encoder.
    /// Gzip, the format of a gzipped write request, so that a sink can send an entry as it is
    /// stored, without compressing it again.
    pub fn compress(
        lines_text: &[u8],
        lines: u64,
        points: u64,
        created_at: TimestampMs,
    ) -> std::io::Result<Append> {
        let mut enc = GzEncoder::new(
            Vec::with_capacity(lines_text.len() / 4 + 64),
            Compression::fast(),
        );
        enc.write_all(lines_text)?;
        Ok(Append {
            created_at,
            points,
            lines,
            raw_len: lines_text.len() as u64,
            body: enc.finish()?,
            drop_through: None,
        })
    }

    pub fn meta(&self, seq: i64) -> Meta {
        Meta {
            seq,
            created_at: self.created_at,
            points: self.points,
            lines: self.lines,
            raw_len: self.raw_len,
            stored: self.body.len() as u64,
        }
    }
}

/// Appends an entry inside the store's commit transaction; returns its sequence number.
pub(crate) fn append(tx: &Transaction<'_>, a: &Append) -> rusqlite::Result<i64> {
    if let Some(through) = a.drop_through {
        tx.prepare_cached("DELETE FROM outbox WHERE seq <= ?1")?
            .execute([through])?;
        tx.prepare_cached("UPDATE outbox_cursors SET seq = ?1 WHERE seq < ?1")?
            .execute([through])?;
    }
    tx.prepare_cached(
        "INSERT INTO outbox (created_at, points, lines, raw_len, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        a.created_at,
        a.points as i64,
        a.lines as i64,
        a.raw_len as i64,
        a.body
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Every entry's metadata, oldest first, to rebuild the in-memory index at startup.
pub fn metas(conn: &Connection) -> rusqlite::Result<Vec<Meta>> {
    let mut stmt = conn.prepare(
        "SELECT seq, created_at, points, lines, raw_len, length(body) FROM outbox ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Meta {
            seq: r.get(0)?,
            created_at: r.get(1)?,
            points: r.get::<_, i64>(2)?.max(0) as u64,
            lines: r.get::<_, i64>(3)?.max(0) as u64,
            raw_len: r.get::<_, i64>(4)?.max(0) as u64,
            stored: r.get::<_, i64>(5)?.max(0) as u64,
        })
    })?;
    rows.collect()
}

/// Makes the cursor table match the configured sinks: a new sink starts before the oldest
/// entry still held (it gets everything not yet deleted), a sink no longer configured loses
/// its cursor, and entries no remaining sink needs are deleted. Returns each sink's cursor,
/// in `sinks` order, and how many points were deleted because no sink needed them.
pub fn reconcile_cursors(conn: &mut Connection, sinks: &[&str]) -> rusqlite::Result<Reconciled> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let oldest: Option<i64> = tx.query_row("SELECT min(seq) FROM outbox", [], |r| r.get(0))?;
    let start = oldest.map_or(0, |s| s - 1);
    let mut removed = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT sink FROM outbox_cursors")?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for name in names {
            let name = name?;
            if !sinks.contains(&name.as_str()) {
                removed.push(name);
            }
        }
    }
    for name in &removed {
        tx.execute("DELETE FROM outbox_cursors WHERE sink = ?1", [name])?;
    }
    let mut cursors = Vec::with_capacity(sinks.len());
    for name in sinks {
        tx.execute(
            "INSERT INTO outbox_cursors (sink, seq) VALUES (?1, ?2) ON CONFLICT (sink) DO NOTHING",
            params![name, start],
        )?;
        let seq: i64 = tx.query_row(
            "SELECT seq FROM outbox_cursors WHERE sink = ?1",
            [name],
            |r| r.get(0),
        )?;
        cursors.push(seq);
    }
    let floor = cursors.iter().copied().min();
    let orphaned: i64 = match floor {
        Some(f) => tx.query_row(
            "SELECT coalesce(sum(points), 0) FROM outbox WHERE seq <= ?1",
            [f],
            |r| r.get(0),
        )?,
        None => tx.query_row("SELECT coalesce(sum(points), 0) FROM outbox", [], |r| {
            r.get(0)
        })?,
    };
    match floor {
        Some(f) => tx.execute("DELETE FROM outbox WHERE seq <= ?1", [f])?,
        None => tx.execute("DELETE FROM outbox", [])?,
    };
    tx.commit()?;
    Ok(Reconciled {
        cursors,
        removed_sinks: removed,
        orphaned_points: orphaned.max(0) as u64,
    })
}

/// What [`reconcile_cursors`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub cursors: Vec<i64>,
    pub removed_sinks: Vec<String>,
    /// Points deleted because no configured sink needs them any more (a sink was removed from
    /// the config, or none is left).
    pub orphaned_points: u64,
}

/// An entry read back for a sink.
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: i64,
    /// The line protocol, decompressed.
    pub text: Vec<u8>,
    /// The stored (gzipped) body.
    pub body: Vec<u8>,
    /// Set when the body cannot be decompressed (a damaged disk): why. The sink keeps the
    /// entry as a dead letter and goes on; one bad entry never blocks the queue.
    pub corrupt: Option<String>,
    pub lines: u64,
}

/// Reads the entries `from..=to`, decompressed, oldest first.
pub fn read_range(conn: &Connection, from: i64, to: i64) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, raw_len, body, lines FROM outbox WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let rows = stmt.query_map([from, to], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, raw_len, body, lines) = row?;
        let mut text = Vec::with_capacity(raw_len.max(0) as usize);
        let corrupt = match GzDecoder::new(body.as_slice()).read_to_end(&mut text) {
            Ok(_) => None,
            Err(e) => {
                text.clear();
                Some(e.to_string())
            }
        };
        out.push(Entry {
            seq,
            text,
            body,
            corrupt,
            lines: lines.max(0) as u64,
        });
    }
    Ok(out)
}

/// Records that a sink has delivered everything up to `seq`: its cursor moves, the dead
/// letters of lines the store refused are kept, and entries no sink needs any more are
/// deleted, all in one transaction. A crash before it commits resends those entries, which
/// the store takes as the same points again (one point per series and time).
pub fn confirm(
    conn: &mut Connection,
    sink: &str,
    seq: i64,
    dead_letters: &[DeadLetter],
    raw_max: usize,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    crate::sinks::sqlite::write_dead_letters(&tx, dead_letters, raw_max)?;
    tx.prepare_cached("UPDATE outbox_cursors SET seq = ?2 WHERE sink = ?1 AND seq < ?2")?
        .execute(params![sink, seq])?;
    tx.prepare_cached("DELETE FROM outbox WHERE seq <= (SELECT min(seq) FROM outbox_cursors)")?
        .execute([])?;
    tx.commit()
}
