//! A failed replay's message, made readable: psql prints `psql:<stdin>:LINE: ERROR: ...`
//! then DETAIL/CONTEXT lines; this names the line of the replay script that failed and
//! quotes its statement (clipped), so the slave's answer says what failed and where
//! without opening the script. Control characters are escaped where the message is
//! shown (each line on its own).

use std::io::BufRead;
use std::path::Path;

/// Longest statement quoted.
const QUOTE: usize = 200;

/// The script line psql reported, from `psql:<stdin>:123: ERROR: ...`.
pub fn failed_line(message: &str) -> Option<u64> {
    message.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("psql:")?;
        let (_, rest) = rest.split_once(':')?;
        let (n, _) = rest.split_once(':')?;
        n.trim().parse().ok()
    })
}

/// The statement at line `n` (from 1) of `script`, clipped. psql reports a failed
/// `COPY` at the line of its data's end (`\.`): that names the `COPY` statement.
fn line_of(script: &Path, n: u64) -> Option<String> {
    let f = std::fs::File::open(script).ok()?;
    let mut r = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    let mut copy: Option<String> = None;
    let mut stmt = String::new();
    for _ in 0..n {
        buf.clear();
        if r.read_until(b'\n', &mut buf).ok()? == 0 {
            return None;
        }
        let l = String::from_utf8_lossy(&buf).trim_end().to_string();
        if copy.is_some() {
            stmt = copy.clone().unwrap_or_default();
            if l == "\\." {
                copy = None;
            }
        } else {
            if l.starts_with("COPY ") && l.ends_with(" FROM stdin;") {
                copy = Some(l.clone());
            }
            stmt = l;
        }
    }
    Some(match stmt.char_indices().nth(QUOTE) {
        Some((i, _)) => format!("{}...", &stmt[..i]),
        None => stmt,
    })
}

/// psql's message `e` about replaying `script`, with the failing statement named.
pub fn describe(e: &str, script: &Path) -> String {
    match failed_line(e).and_then(|n| Some((n, line_of(script, n)?))) {
        Some((n, stmt)) => format!("at line {n} of the replay script ({stmt}): {e}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_failing_line_and_quotes_it() {
        let msg = "psql failed (exit 3):\npsql:<stdin>:3: ERROR:  column \"x\" does not exist\nLINE 1: COPY t (x) FROM stdin;";
        assert_eq!(failed_line(msg), Some(3));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sql");
        std::fs::write(
            &p,
            format!(
                "a\nb\nCOPY t (x) FROM stdin;\n1\n\\.\n{}\n",
                "y".repeat(300)
            ),
        )
        .unwrap();
        let out = describe(msg, &p);
        assert!(
            out.starts_with("at line 3 of the replay script (COPY t (x) FROM stdin;): psql failed"),
            "{out}"
        );
        assert!(out.contains("\nLINE 1:"), "lines stay lines: {out}");
        assert_eq!(
            line_of(&p, 4).unwrap(),
            "COPY t (x) FROM stdin;",
            "a data row"
        );
        assert_eq!(
            line_of(&p, 5).unwrap(),
            "COPY t (x) FROM stdin;",
            "the end of data"
        );
        assert_eq!(line_of(&p, 6).unwrap().len(), QUOTE + 3);
        assert_eq!(describe("no line here", &p), "no line here");
    }
}
