//! From a `pg_dump` to a replay script, and what a dump holds. The script is the dump
//! wrapped the way Wazo wraps it, minus the transaction statements (psql's
//! `--single-transaction` adds those, so a failure anywhere rolls everything back):
//! `SET session_replication_role = replica` (no triggers, no foreign-key checks while the
//! tables are refilled, so any order and cycles are fine), a `TRUNCATE` of every table
//! the dump has a `COPY` for, then the dump itself (its `COPY` blocks and `setval`
//! calls). The header is stable, and the rows of each `COPY` block are sorted (bytewise;
//! the order rows are loaded in means nothing to PostgreSQL), so hour-to-hour scripts
//! differ only where the data does: an `UPDATE` that moved a row on disk, a `VACUUM FULL`
//! or a `CLUSTER` on the master changes nothing in the script, and a changed row stays
//! where it was, which is what makes [`super::patch`] small.

use std::io::{self, BufRead, Write};

/// What a dump holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DumpSummary {
    /// Each table with a `COPY` block (qualified and quoted as pg_dump wrote it) and its row count.
    pub tables: Vec<(String, u64)>,
    /// `setval` calls (sequences set).
    pub sequences: u64,
    /// Size of the dump in bytes.
    pub bytes: u64,
    /// Per table (same order as `tables`): the order-independent checksum of its rows
    /// (see [`row_sum`]).
    #[serde(skip)]
    pub checksums: Vec<u128>,
}

/// Adds one row (its bytes as pg_dump wrote them, `\n` included) to a table's
/// checksum: the wrapping sum of the first 128 bits of each row's BLAKE3. It does not
/// depend on the order of the rows (so a block too large to sort still compares) and
/// counts duplicate rows.
pub fn row_sum(acc: u128, row: &[u8]) -> u128 {
    let h = blake3::hash(row);
    let b: [u8; 16] = h.as_bytes()[..16].try_into().expect("16 bytes");
    acc.wrapping_add(u128::from_le_bytes(b))
}

impl DumpSummary {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.1).sum()
    }
}

/// The table of a `COPY <table> [(cols)] FROM stdin;` line, as written (quoted identifiers kept).
pub(crate) fn copy_table(l: &[u8]) -> Option<String> {
    let rest = l.strip_prefix(b"COPY ")?;
    if !l.ends_with(b" FROM stdin;") {
        return None;
    }
    // The name ends at the first space outside double quotes.
    let mut in_quote = false;
    let mut end = rest.len();
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'"' => in_quote = !in_quote,
            b' ' if !in_quote => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let name = std::str::from_utf8(&rest[..end]).ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Writes the replay script's header: settings, and the `TRUNCATE` of `summary`'s
/// tables (unless `with_schema`: then the dump drops and recreates them itself).
pub fn write_header(
    summary: &DumpSummary,
    with_schema: bool,
    out: &mut impl Write,
) -> io::Result<()> {
    writeln!(
        out,
        "-- hasync DB replication: replay with psql --single-transaction -v ON_ERROR_STOP=1"
    )?;
    writeln!(out, "\\set ON_ERROR_STOP on")?;
    writeln!(out, "SET session_replication_role = replica;")?;
    // Readers on the slave that lock the same tables in another order can deadlock
    // with the TRUNCATE; let them be the victim (they retry a read), not the replay.
    // deadlock_timeout needs superuser: without it, the default applies.
    writeln!(
        out,
        "DO $$ BEGIN PERFORM set_config('deadlock_timeout', '30s', true); EXCEPTION WHEN insufficient_privilege THEN NULL; END $$;"
    )?;
    if !with_schema && !summary.tables.is_empty() {
        writeln!(out, "TRUNCATE TABLE")?;
        for (i, (t, _)) in summary.tables.iter().enumerate() {
            let sep = if i + 1 == summary.tables.len() {
                ";"
            } else {
                ","
            };
            writeln!(out, "    {t}{sep}")?;
        }
    }
    Ok(())
}

/// Writes the replay script's footer.
pub fn write_footer(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "\nSET session_replication_role = DEFAULT;")
}

/// Reads a plain-format dump in one pass and writes the script's body, returning what
/// the dump holds (tables, rows, sequences) for the header. The body is the dump with
/// each `COPY` block's rows sorted ([`Rows`]); with `with_schema`, its `DROP SCHEMA` is
/// left out and its `CREATE SCHEMA` made `IF NOT EXISTS`, since the schema also holds
/// the excluded tables.
///
/// Recent pg_dump releases (15.14 and later) frame their output with
/// `\restrict KEY` ... `\unrestrict KEY`, a fresh random key each time, so that a
/// hostile server cannot smuggle psql meta-commands into the dump. A fresh key would make
/// every hour's script differ, so the key is replaced with `restrict_key`, this node's
/// own secret (kept in the private work directory, never seen by the server): the
/// protection stays, and an unchanged database gives a byte-identical script.
pub fn write_body(
    dump: &mut impl BufRead,
    with_schema: bool,
    restrict_key: &str,
    out: &mut impl Write,
) -> io::Result<DumpSummary> {
    let mut s = DumpSummary::default();
    let mut line = Vec::new();
    let mut in_copy = false;
    let mut rows = Rows::default();
    loop {
        line.clear();
        let n = dump.read_until(b'\n', &mut line)?;
        if n == 0 {
            rows.write_sorted(out)?;
            break;
        }
        s.bytes += n as u64;
        let l = line.strip_suffix(b"\n").unwrap_or(&line);
        if in_copy {
            in_copy = l != b"\\.";
            if in_copy {
                if let Some(t) = s.tables.last_mut() {
                    t.1 += 1;
                }
                if let Some(c) = s.checksums.last_mut() {
                    *c = row_sum(*c, &line);
                }
                rows.push(&line, out)?;
                continue;
            }
            rows.write_sorted(out)?;
        } else if let Some(name) = copy_table(l) {
            s.tables.push((name, 0));
            s.checksums.push(0);
            in_copy = true;
        } else if l.starts_with(b"SELECT pg_catalog.setval(") {
            s.sequences += 1;
        } else if with_schema && l.starts_with(b"DROP SCHEMA IF EXISTS ") {
            // The schema also holds the excluded tables: keep it, drop only what the
            // dump recreates (its other DROP ... IF EXISTS lines).
            continue;
        } else if let Some(rest) = l.strip_prefix(b"CREATE SCHEMA ").filter(|_| with_schema) {
            out.write_all(b"CREATE SCHEMA IF NOT EXISTS ")?;
            out.write_all(rest)?;
            out.write_all(b"\n")?;
            continue;
        } else if l.starts_with(b"\\restrict ") {
            writeln!(out, "\\restrict {restrict_key}")?;
            continue;
        } else if l.starts_with(b"\\unrestrict ") {
            writeln!(out, "\\unrestrict {restrict_key}")?;
            continue;
        }
        out.write_all(&line)?;
    }
    Ok(s)
}

/// The rows of one `COPY` block, buffered to be written sorted; a block larger than
/// [`Rows::CAP`] is written in dump order instead (memory stays bounded).
///
/// The order: rows whose first column is a non-negative integer (an `id`, usually the
/// primary key) by that number, then the others bytewise; ties bytewise. Numeric order is
/// what a table freshly loaded in key order dumps as (so sorting is cheap), and what
/// the slave's primary-key index likes to be filled in.
#[derive(Default)]
struct Rows {
    data: Vec<u8>,
    /// (numeric key, start, end) of each row in `data`.
    spans: Vec<(u64, usize, usize)>,
    /// The block outgrew the cap: rows pass straight through.
    passthrough: bool,
}

impl Rows {
    const CAP: usize = 256 * 1024 * 1024;

    fn push(&mut self, row: &[u8], out: &mut impl Write) -> io::Result<()> {
        if self.passthrough {
            return out.write_all(row);
        }
        let start = self.data.len();
        self.data.extend_from_slice(row);
        self.spans.push((numeric_key(row), start, self.data.len()));
        if self.data.len() > Self::CAP {
            out.write_all(&self.data)?;
            self.clear();
            self.passthrough = true;
        }
        Ok(())
    }

    fn write_sorted(&mut self, out: &mut impl Write) -> io::Result<()> {
        let data = &self.data;
        self.spans.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| data[a.1..a.2].cmp(&data[b.1..b.2]))
        });
        for &(_, a, b) in &self.spans {
            out.write_all(&data[a..b])?;
        }
        self.clear();
        self.passthrough = false;
        Ok(())
    }

    fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
        if self.data.capacity() > 64 * 1024 * 1024 {
            self.data.shrink_to(0);
            self.spans.shrink_to(0);
        }
    }
}

/// A row's sort key: its first column's value if that is a non-negative integer below
/// `u64::MAX` (at most 19 digits), else `u64::MAX` (sorted after, bytewise).
pub(crate) fn numeric_key(row: &[u8]) -> u64 {
    let field = row
        .split(|&b| b == b'\t' || b == b'\n')
        .next()
        .unwrap_or(row);
    if field.is_empty() || field.len() > 19 || !field.iter().all(u8::is_ascii_digit) {
        return u64::MAX;
    }
    field.iter().fold(0u64, |v, &d| v * 10 + (d - b'0') as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\
        SET statement_timeout = 0;\n\
        COPY public.tenant (id, name, main_user) FROM stdin;\n10\tbar\t1\n2\tfoo\t\\N\n1\tacme\t1\nx\ty\tz\n\\.\n\n\
        COPY public.\"Odd Name\" (id) FROM stdin;\n\\.\n\n\
        SELECT pg_catalog.setval('public.tenant_id_seq', 2, true);\n\\unrestrict abc\n";

    /// The whole script of `dump` (header, body, footer) and the summary.
    fn script(dump: &str, with_schema: bool, key: &str) -> (String, DumpSummary) {
        let mut body = Vec::new();
        let s = write_body(&mut dump.as_bytes(), with_schema, key, &mut body).unwrap();
        let mut out = Vec::new();
        write_header(&s, with_schema, &mut out).unwrap();
        out.extend_from_slice(&body);
        write_footer(&mut out).unwrap();
        (String::from_utf8(out).unwrap(), s)
    }

    #[test]
    fn body_counts_tables_rows_and_sequences() {
        let (_, s) = script(DUMP, false, "k");
        assert_eq!(
            s.tables,
            vec![
                ("public.tenant".to_string(), 4),
                ("public.\"Odd Name\"".to_string(), 0)
            ]
        );
        assert_eq!((s.sequences, s.rows(), s.bytes), (1, 4, DUMP.len() as u64));
    }

    #[test]
    fn rows_sort_by_a_leading_number_then_bytewise() {
        let mut rows = Rows::default();
        let mut out = Vec::new();
        for r in [
            "10\ta\n", "9\tb\n", "-1\tc\n", "9\ta\n", "abc\n", "007\tz\n", "\\N\tn\n",
        ] {
            rows.push(r.as_bytes(), &mut out).unwrap();
        }
        rows.write_sorted(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "007\tz\n9\ta\n9\tb\n10\ta\n-1\tc\n\\N\tn\nabc\n"
        );
        assert_eq!(
            numeric_key(b"18446744073709551615\t"),
            u64::MAX,
            "20 digits"
        );
        assert_eq!(numeric_key(b"42"), 42);
    }

    #[test]
    fn script_truncates_every_copied_table_before_the_data() {
        let (text, _) = script(&format!("\\restrict abc\n{DUMP}"), false, "k3y");
        assert!(text.contains("\\restrict k3y\n") && text.contains("\\unrestrict k3y\n"));
        assert!(!text.contains("abc"), "{text}");
        let trunc = text.find("TRUNCATE TABLE\n    public.tenant,\n    public.\"Odd Name\";");
        let replica = text
            .find("SET session_replication_role = replica;")
            .unwrap();
        let copy = text.find("COPY public.tenant").unwrap();
        assert!(replica < trunc.unwrap() && trunc.unwrap() < copy, "{text}");
        assert!(
            text.contains(
                "COPY public.tenant (id, name, main_user) FROM stdin;\n1\tacme\t1\n2\tfoo\t\\N\n10\tbar\t1\nx\ty\tz\n\\.\n"
            ),
            "rows are sorted: {text}"
        );
        // No transaction control of its own: psql --single-transaction is the transaction.
        assert!(
            !text.lines().any(|l| {
                let l = l.trim().to_ascii_uppercase();
                l.starts_with("BEGIN")
                    || l.starts_with("COMMIT")
                    || l.starts_with("START TRANSACTION")
            }),
            "{text}"
        );

        let dump = format!("DROP SCHEMA IF EXISTS public;\nCREATE SCHEMA public;\n{DUMP}");
        let (text, _) = script(&dump, true, "k");
        assert!(
            !text.contains("TRUNCATE") && !text.contains("DROP SCHEMA"),
            "{text}"
        );
        assert!(
            text.contains("\nCREATE SCHEMA IF NOT EXISTS public;\n"),
            "{text}"
        );
    }
}
