//! Replaying only the rows that changed: what keeps a big database within seconds.
//!
//! A full replay empties every replicated table and loads every row again (on a 50 MB
//! script, psql alone takes ~4 s, most of the DB job's time). When the slave's database
//! is known to hold exactly the previous script (see the conditions below), the slave
//! instead writes a small script of its own from the two scripts it holds, the one it
//! replayed last and the new one: per table, the rows only the old one has are deleted
//! and the rows only the new one has are inserted, then the new script's `setval`s run;
//! in one transaction, as the full replay. Both scripts' rows are sorted the same way
//! ([`super::script`]), so one merge per table finds them.
//!
//! A row is matched by the text of its columns (`ROW(cols)::text`), which works for
//! every type (also those without an equality operator, such as `json`), and counted:
//! a row present twice and removed once is deleted once. Each delete checks that it
//! removed exactly the expected number of rows and raises otherwise, so a slave that
//! differs from the old script rolls back and gets the full replay instead.
//!
//! When: the slave's record says its last replay ([`super::digest::Replica`]) left the
//! database equal to that script (the fingerprint read back matched the script's own
//! rows), the cluster's commit token (`pg_current_snapshot()`, [`super::watch`]) has not
//! moved since (no write transaction since, in any database of the cluster), and the old
//! script is still there with its recorded hash. Anything else (another set of tables, a
//! schema replay, unsorted blocks) gives `None`: the full replay.

use std::io::{self, Write};

/// Scripts up to this size are held in memory (twice: the old and the new one) and may
/// be replayed incrementally; bigger ones are always replayed whole.
pub const MAX_SCRIPT: u64 = 512 * 1024 * 1024;

/// The incremental script of `old` -> `new`, or `None` when only a full replay will do.
/// Also returns the number of rows deleted and inserted.
pub fn script(old: &[u8], new: &[u8]) -> Option<(Vec<u8>, u64, u64)> {
    let (old, new) = (parse(old)?, parse(new)?);
    let old_tables: Vec<&[u8]> = old.iter().filter_map(Part::copy_line).collect();
    let new_tables: Vec<&[u8]> = new.iter().filter_map(Part::copy_line).collect();
    if old_tables != new_tables || !new.iter().any(|p| matches!(p, Part::Truncate)) {
        return None;
    }
    let mut old_rows = old.iter().filter_map(|p| match p {
        Part::Copy { rows, .. } => Some(rows),
        _ => None,
    });
    let mut out = Vec::new();
    let (mut deleted, mut inserted) = (0u64, 0u64);
    let mut n = 0usize;
    for part in &new {
        match part {
            Part::Truncate => {}
            Part::Line(l) => out.extend_from_slice(l),
            Part::Copy { line, rows } => {
                let before = old_rows.next()?;
                let (gone, added) = diff(before, rows)?;
                if gone.is_empty() && added.is_empty() {
                    continue;
                }
                n += 1;
                write_table(&mut out, n, line, &gone, &added).ok()?;
                deleted += gone.len() as u64;
                inserted += added.len() as u64;
            }
        }
    }
    Some((out, deleted, inserted))
}

/// One piece of a replay script.
enum Part<'a> {
    /// The header's `TRUNCATE TABLE ...;` statement (left out of the incremental script).
    Truncate,
    /// A `COPY ... FROM stdin;` line and its rows (each with its `\n`).
    Copy { line: &'a [u8], rows: Vec<&'a [u8]> },
    /// Anything else, `\n` included (settings, `setval`s, `\restrict`, comments).
    Line(&'a [u8]),
}

impl<'a> Part<'a> {
    fn copy_line(&self) -> Option<&'a [u8]> {
        match self {
            Part::Copy { line, .. } => Some(line),
            _ => None,
        }
    }
}

/// Splits a script into its parts; `None` when it does not look like one of ours.
fn parse(s: &[u8]) -> Option<Vec<Part<'_>>> {
    let mut parts = Vec::new();
    let mut lines = s.split_inclusive(|&b| b == b'\n');
    while let Some(l) = lines.next() {
        if l == b"TRUNCATE TABLE\n" {
            // Our header writes one table per line, the last one ending in ';'.
            loop {
                let t = lines.next()?;
                if t.ends_with(b";\n") {
                    break;
                }
            }
            parts.push(Part::Truncate);
        } else if l.starts_with(b"COPY ") && l.ends_with(b" FROM stdin;\n") {
            let mut rows = Vec::new();
            loop {
                let r = lines.next()?;
                if r == b"\\.\n" {
                    break;
                }
                rows.push(r);
            }
            parts.push(Part::Copy { line: l, rows });
        } else {
            parts.push(Part::Line(l));
        }
    }
    Some(parts)
}

/// Rows of a `COPY` block, each with its `\n`.
type Rows<'a> = Vec<&'a [u8]>;

/// The order of [`super::script`]'s sorted rows.
fn order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    super::script::numeric_key(a)
        .cmp(&super::script::numeric_key(b))
        .then_with(|| a.cmp(b))
}

/// Rows only in `old`, rows only in `new` (as multisets); `None` when a side is not
/// sorted (a block too big to sort is written in dump order).
fn diff<'a>(old: &[&'a [u8]], new: &[&'a [u8]]) -> Option<(Rows<'a>, Rows<'a>)> {
    use std::cmp::Ordering::*;
    let sorted = |v: &[&[u8]]| v.windows(2).all(|w| order(w[0], w[1]) != Greater);
    if !sorted(old) || !sorted(new) {
        return None;
    }
    let (mut i, mut j) = (0, 0);
    let (mut gone, mut added) = (Vec::new(), Vec::new());
    while i < old.len() || j < new.len() {
        let o = if i < old.len() && j < new.len() {
            order(old[i], new[j])
        } else if i < old.len() {
            Less
        } else {
            Greater
        };
        match o {
            Less => {
                gone.push(old[i]);
                i += 1;
            }
            Greater => {
                added.push(new[j]);
                j += 1;
            }
            Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    Some((gone, added))
}

/// The statements for one changed table: its removed rows into a temporary table, the
/// counted delete, then its new rows.
fn write_table(
    out: &mut Vec<u8>,
    n: usize,
    copy_line: &[u8],
    gone: &[&[u8]],
    added: &[&[u8]],
) -> io::Result<()> {
    let line = std::str::from_utf8(copy_line).map_err(io::Error::other)?;
    let head = line
        .strip_prefix("COPY ")
        .and_then(|l| l.strip_suffix(" FROM stdin;\n"))
        .ok_or_else(|| io::Error::other("not a COPY line"))?;
    // "public.users (id, name)": the table, then the column list in parentheses.
    let open = head
        .find(" (")
        .ok_or_else(|| io::Error::other("no column list"))?;
    let (table, cols) = (&head[..open], &head[open + 2..head.len() - 1]);
    if table.contains('\'') {
        return Err(io::Error::other("quote in a table name"));
    }
    let names = split_columns(cols);
    let row = |alias: &str| {
        let c: Vec<String> = names.iter().map(|c| format!("{alias}.{c}")).collect();
        format!("ROW({})::text", c.join(", "))
    };
    if !gone.is_empty() {
        let tmp = format!("hasync_gone_{n}");
        writeln!(
            out,
            "CREATE TEMPORARY TABLE {tmp} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA;"
        )?;
        writeln!(out, "COPY {tmp} ({cols}) FROM stdin;")?;
        for r in gone {
            out.extend_from_slice(r);
        }
        writeln!(out, "\\.")?;
        writeln!(
            out,
            "DO $hasync$ DECLARE n bigint; BEGIN \
             WITH want AS (SELECT {g} AS k, count(*) AS c FROM {tmp} g GROUP BY 1), \
             have AS (SELECT t.ctid AS id, {t} AS k, row_number() OVER (PARTITION BY {t}) AS i \
                      FROM {table} t WHERE {t} IN (SELECT k FROM want)), \
             gone AS (DELETE FROM {table} WHERE ctid IN \
                      (SELECT have.id FROM have JOIN want ON have.k = want.k AND have.i <= want.c) RETURNING 1) \
             SELECT count(*) INTO n FROM gone; \
             IF n <> {want} THEN RAISE EXCEPTION 'hasync: incremental replay of %: % of {want} rows to delete found', '{table}', n; END IF; \
             END $hasync$;",
            g = row("g"),
            t = row("t"),
            want = gone.len(),
        )?;
    }
    if !added.is_empty() {
        out.extend_from_slice(copy_line);
        for r in added {
            out.extend_from_slice(r);
        }
        writeln!(out, "\\.")?;
    }
    Ok(())
}

/// pg_dump's column list `id, "Order", "a, b"` split at the commas outside quotes.
fn split_columns(cols: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in cols.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(cols[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(cols[start..].trim());
    out
}

/// The per-table fingerprint of a script's rows, as [`super::digest::of_summary`] gives
/// it for a dump: what the slave's tables must read back as after replaying it.
pub fn digests(s: &[u8]) -> Option<Vec<crate::wire::db::TableDigest>> {
    let parts = parse(s)?;
    let mut summary = super::script::DumpSummary::default();
    for p in parts {
        if let Part::Copy { line, rows } = p {
            let name = super::script::copy_table(line.strip_suffix(b"\n").unwrap_or(line))?;
            let sum = rows
                .iter()
                .fold(0u128, |acc, r| super::script::row_sum(acc, r));
            summary.tables.push((name, rows.len() as u64));
            summary.checksums.push(sum);
        }
    }
    Some(super::digest::of_summary(&summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "\\set ON_ERROR_STOP on\nSET session_replication_role = replica;\n\
        TRUNCATE TABLE\n    public.a,\n    public.b;\n\
        COPY public.a (id, name) FROM stdin;\n1\tx\n2\ty\n2\ty\n3\tz\n\\.\n\
        COPY public.b (id) FROM stdin;\n7\n\\.\n\
        SELECT pg_catalog.setval('public.a_id_seq', 3, true);\n";

    #[test]
    fn only_changed_rows_travel_counted_and_setvals_follow() {
        let new = OLD
            .replace("2\ty\n2\ty\n3\tz\n", "2\ty\n3\tzz\n4\tw\n")
            .replace("'public.a_id_seq', 3", "'public.a_id_seq', 4");
        let (s, deleted, inserted) = script(OLD.as_bytes(), new.as_bytes()).unwrap();
        let s = String::from_utf8(s).unwrap();
        assert_eq!((deleted, inserted), (2, 2), "{s}");
        assert!(!s.contains("TRUNCATE"), "{s}");
        assert!(
            s.contains("COPY hasync_gone_1 (id, name) FROM stdin;\n2\ty\n3\tz\n\\.\n"),
            "{s}"
        );
        assert!(s.contains("IF n <> 2 THEN"), "{s}");
        assert!(
            s.contains("COPY public.a (id, name) FROM stdin;\n3\tzz\n4\tw\n\\.\n"),
            "{s}"
        );
        assert!(
            !s.contains("public.b (id)"),
            "unchanged tables are not touched: {s}"
        );
        assert!(s.contains("setval('public.a_id_seq', 4, true)"), "{s}");
        assert!(s.contains("ROW(t.id, t.name)::text"), "{s}");
    }

    #[test]
    fn quoted_columns_split_at_the_commas_outside_quotes() {
        assert_eq!(
            split_columns("id, \"Order\", \"a, b\""),
            ["id", "\"Order\"", "\"a, b\""]
        );
    }

    #[test]
    fn another_table_list_or_unsorted_rows_need_the_full_replay() {
        let new = OLD.replace("COPY public.b (id) FROM stdin;\n7\n\\.\n", "");
        assert!(script(OLD.as_bytes(), new.as_bytes()).is_none());
        let unsorted = OLD.replace("1\tx\n2\ty\n", "2\ty\n1\tx\n");
        assert!(script(unsorted.as_bytes(), OLD.as_bytes()).is_none());
        let schema = OLD.replace("TRUNCATE TABLE\n    public.a,\n    public.b;\n", "");
        assert!(script(OLD.as_bytes(), schema.as_bytes()).is_none());
        assert!(script(b"COPY public.a (id) FROM stdin;\n1\n", OLD.as_bytes()).is_none());
    }

    #[test]
    fn digests_of_a_script_equal_those_of_its_dump() {
        let d = digests(OLD.as_bytes()).unwrap();
        assert_eq!((d[0].table.as_str(), d[0].rows), ("public.a", 4));
        assert_eq!((d[1].table.as_str(), d[1].rows), ("public.b", 1));
        let mut s = super::super::script::DumpSummary::default();
        s.tables.push(("public.b".into(), 1));
        s.checksums.push(super::super::script::row_sum(0, b"7\n"));
        assert_eq!(super::super::digest::of_summary(&s)[0], d[1]);
    }
}
