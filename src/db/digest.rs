//! What a replicated table holds, in a form both nodes compute the same way: its row
//! count and an order-independent checksum of its rows as pg_dump writes them (`COPY`
//! text format, with pg_dump's own output settings and `TimeZone` UTC on both nodes).
//! The master has it from its dump for free ([`super::script::DumpSummary`]); the
//! slave takes it with a data-only pg_dump of the replicated tables right after each
//! replay (the check that the replay gave exactly the dump: Wazo compares checksums of
//! the dumps the same way) and records it in `state_dir/db-replica.json`. Asked later
//! (`DbCheck`), it takes it again: any difference means its data changed since (a write
//! during a failover, a restore, a rebuilt database), and the master replays even if
//! its own dump did not change.

use super::PgConn;
use super::script::{self, DumpSummary};
use crate::wire::db::TableDigest;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The tables of a dump summary as digests.
pub fn of_summary(s: &DumpSummary) -> Vec<TableDigest> {
    s.tables
        .iter()
        .zip(&s.checksums)
        .map(|((t, rows), c)| TableDigest {
            table: t.clone(),
            rows: *rows,
            checksum: format!("{c:032x}"),
        })
        .collect()
}

/// The replicated `tables` as the database of `conn` holds them now (one data-only
/// pg_dump of those tables, in one snapshot). A table the database lacks is absent.
pub fn of_database(
    conn: &PgConn,
    tables: &[String],
) -> Result<Vec<TableDigest>, super::pg::PgError> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<String> = vec!["--data-only".into()];
    for t in tables {
        args.push("-t".into());
        args.push(t.clone());
    }
    let mut summary = DumpSummary::default();
    let mut consume = |out: &mut dyn std::io::Read| {
        let mut r = std::io::BufReader::with_capacity(1 << 20, out);
        summary = script::write_body(&mut r, false, "digest", &mut std::io::sink())?;
        Ok(())
    };
    conn.dump(&args, &mut consume)?;
    Ok(of_summary(&summary))
}

/// The tables that differ between `a` and `b` (missing on either side, other rows or
/// checksum), by name.
pub fn differences(a: &[TableDigest], b: &[TableDigest]) -> Vec<String> {
    let find = |v: &[TableDigest], t: &str| v.iter().find(|d| d.table == t).cloned();
    let mut out: Vec<String> = a
        .iter()
        .filter(|d| find(b, &d.table).as_ref() != Some(*d))
        .map(|d| d.table.clone())
        .collect();
    out.extend(
        b.iter()
            .filter(|d| find(a, &d.table).is_none())
            .map(|d| d.table.clone()),
    );
    out
}

/// A short list of table names for messages: the first few, then how many more.
pub fn list(tables: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = tables[..tables.len().min(SHOWN)].join(", ");
    if tables.len() > SHOWN {
        s.push_str(&format!(" and {} more", tables.len() - SHOWN));
    }
    s
}

/// The slave's record of its last replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// BLAKE3 (hex) of the script replayed.
    pub replayed_hash: String,
    pub replayed_unix: u64,
    /// The tables right after that replay.
    pub tables: Vec<TableDigest>,
    /// The cluster's commit token (`pg_current_snapshot()`) right after that replay.
    #[serde(default)]
    pub token: String,
    /// The tables read back equal the script's rows, and the script is kept
    /// (`db-replayed.sql`): the next replay may send only the changed rows.
    #[serde(default)]
    pub equal_to_script: bool,
    /// How that replay went: `rows`, `script`, or `script (the incremental replay was
    /// rolled back: why)`.
    #[serde(default)]
    pub replayed_as: String,
}

/// `state_dir/db-replica.json`, next to the staging directory (which the master's
/// block-delta push mirrors, so nothing else may live in it).
pub fn record_path(staging: &Path) -> PathBuf {
    staging.with_file_name("db-replica.json")
}

pub fn load(staging: &Path) -> Option<Replica> {
    serde_json::from_slice(&std::fs::read(record_path(staging)).ok()?).ok()
}

/// Writes the record atomically (temp file, fsync, rename).
pub fn save(staging: &Path, r: &Replica) -> std::io::Result<()> {
    let p = record_path(staging);
    let dir = p.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".db-replica.")
        .tempfile_in(dir)?;
    tmp.write_all(&serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&p).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(t: &str, rows: u64, c: &str) -> TableDigest {
        TableDigest {
            table: t.into(),
            rows,
            checksum: c.into(),
        }
    }

    #[test]
    fn differences_name_changed_and_missing_tables() {
        let a = [d("a", 1, "x"), d("b", 2, "y"), d("c", 0, "0")];
        let b = [d("a", 1, "x"), d("b", 2, "z"), d("e", 0, "0")];
        assert_eq!(differences(&a, &b), ["b", "c", "e"]);
        assert!(differences(&a, &a).is_empty());
        let names: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        assert_eq!(list(&names), "t0, t1, t2, t3, t4 and 2 more");
    }

    #[test]
    fn row_order_does_not_change_a_checksum_but_a_row_does() {
        let sum = |rows: &[&str]| {
            rows.iter()
                .fold(0u128, |acc, r| script::row_sum(acc, r.as_bytes()))
        };
        assert_eq!(sum(&["1\ta\n", "2\tb\n"]), sum(&["2\tb\n", "1\ta\n"]));
        assert_ne!(sum(&["1\ta\n", "2\tb\n"]), sum(&["1\ta\n", "2\tc\n"]));
        assert_ne!(
            sum(&["1\ta\n"]),
            sum(&["1\ta\n", "1\ta\n"]),
            "duplicates count"
        );
    }
}
