//! How `[db] schedule = "watch"` notices that the master committed something, cheaply
//! and at once. This module owns the question asked of the master every second (one
//! psql run of one read-only query) and what counts as "changed"; the daemon's poller
//! (`scheduler::daemon::db_watch`) asks it and starts the DB job.
//!
//! The answer is `pg_current_snapshot()`: `xmin:xmax:xip`, i.e. the oldest transaction
//! still running, the next transaction id to be assigned, and the ones in progress. A
//! transaction that writes gets a transaction id, and its commit (or abort) changes that
//! text at the very moment it ends: `xmax` moves past it, or it leaves `xip`/`xmin` (a
//! long transaction that ends after a younger one). Read-only transactions, including
//! this poll and pg_dump's, get no id and change nothing: an idle master never starts
//! a dump. Not chosen, and why:
//! - the cumulative statistics (`pg_stat_database.xact_commit`, `pg_stat_user_tables`
//!   n_tup_ins/upd/del) are flushed lazily on PostgreSQL 15 (a backend flushes at most
//!   once a second, an idle one up to 10 s later), so a commit can show up too late for
//!   the 10 s target; and `xact_commit` counts read-only transactions, this poll's own;
//! - `pg_current_wal_lsn()` also moves without any commit (checkpoints, standby
//!   snapshots, hint-bit full-page images, vacuum).
//!
//! The snapshot is the whole cluster's: a write in another database of the same server,
//! or in an excluded table, starts a run too. That run costs one dump and a hash on the
//! master (an unchanged dump is neither shipped nor replayed), and `[db] min_interval`
//! bounds how often it happens. So does autovacuum's ANALYZE of a table after many
//! changes (it writes pg_statistic): one more, unchanged, run.

use super::PgConn;

/// The query: the current snapshot as text; no transaction id is taken.
pub const SQL: &str = "SELECT pg_current_snapshot()::text";

/// How often the daemon asks.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(1);

impl PgConn {
    /// The master's commit token (see the module doc); `Err` names psql and its message.
    pub fn commit_token(&self) -> Result<String, super::pg::PgError> {
        let out = self.query(SQL)?;
        parse(&out).ok_or(super::pg::PgError::Unexpected {
            what: "to SELECT pg_current_snapshot()::text (PostgreSQL 13 or later)",
            answer: out,
        })
    }
}

/// `xmin:xmax:xip,...` from psql's unaligned output.
fn parse(out: &str) -> Option<String> {
    let t = out.trim_end_matches(['\x1e', '\n']).trim();
    let mut f = t.split(':');
    let (xmin, xmax, xip) = (f.next()?, f.next()?, f.next()?);
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = num(xmin)
        && num(xmax)
        && f.next().is_none()
        && xip.split(',').all(|x| x.is_empty() || num(x));
    ok.then(|| t.to_string())
}

/// What the poller remembers between two polls.
#[derive(Debug, Default)]
pub struct CommitWatch {
    last: Option<String>,
    /// Changes seen since the start.
    pub changes: u64,
}

impl CommitWatch {
    /// Takes one poll's token; `true` when it differs from the last one seen (the first
    /// poll only sets the baseline: what was committed before it is the first run's).
    pub fn saw(&mut self, token: String) -> bool {
        let changed = self.last.as_ref().is_some_and(|l| *l != token);
        self.last = Some(token);
        self.changes += u64::from(changed);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_only_a_difference_counts() {
        assert_eq!(parse("745:745:\x1e"), Some("745:745:".into()));
        assert_eq!(parse("740:746:740,742\n"), Some("740:746:740,742".into()));
        assert_eq!(parse(""), None);
        assert_eq!(parse("ERROR"), None);
        assert_eq!(parse("1:2:3:4"), None);
        let mut w = CommitWatch::default();
        assert!(!w.saw("1:1:".into()), "the first poll is the baseline");
        assert!(!w.saw("1:1:".into()));
        assert!(w.saw("1:2:".into()));
        // A long transaction ending after a younger one: xmax stays, xip changes.
        assert!(w.saw("1:3:1".into()));
        assert!(w.saw("3:3:".into()));
        assert_eq!(w.changes, 3);
    }
}
