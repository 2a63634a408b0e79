//! Which database a connection reaches, so that a replay never goes into the master's
//! own database. PostgreSQL gives every cluster a system identifier at `initdb`
//! (`pg_control_system()`); with the data directory and the database name it names one
//! database. The master sends the identity of its source with each replay request
//! ([`DbSource`]); the slave reads the identity of its own target just before running
//! psql and refuses when both are the same. A cluster copied file by file (a cloned VM,
//! `pg_basebackup`) keeps the system identifier: when it also sits at the same data
//! directory path, it cannot be told from the master's and is refused too (the message
//! says so).

use super::PgConn;
use super::pg::PgError;
use crate::wire::db::DbSource;

/// The query: the system identifier, the data directory (superusers and members of
/// `pg_read_all_settings` may read it; empty otherwise) and the database.
const SQL: &str = "SELECT system_identifier, \
     coalesce(current_setting('data_directory', true), ''), current_database() \
     FROM pg_control_system()";

impl PgConn {
    /// The identity of the database this connection reaches; `Err` is psql's message.
    pub fn identity(&self) -> Result<DbSource, PgError> {
        let out = self.query(SQL)?;
        parse(&out).ok_or(PgError::Unexpected {
            what: "to the query of the cluster's identity",
            answer: out,
        })
    }
}

fn parse(out: &str) -> Option<DbSource> {
    let rec = out.trim_end_matches(['\x1e', '\n']);
    let mut f = rec.split('\x1f');
    let id = f.next()?.trim().parse().ok()?;
    let data_directory = f.next()?.to_string();
    let database = f.next()?.to_string();
    f.next().is_none().then_some(DbSource {
        system_identifier: id,
        data_directory,
        database,
    })
}

/// Whether `a` and `b` are the same database: same system identifier and database
/// name, and the same data directory when both know it. An unknown source (identifier
/// 0, an older master) is never "the same".
pub fn same(a: &DbSource, b: &DbSource) -> bool {
    a.system_identifier != 0
        && a.system_identifier == b.system_identifier
        && a.database == b.database
        && (a.data_directory.is_empty()
            || b.data_directory.is_empty()
            || a.data_directory == b.data_directory)
}

/// The refusal when the replay target is the master's own database.
pub fn refusal(target: &DbSource, conn: &PgConn) -> String {
    format!(
        "refused: the replay target ({}) and the master's source are the same database \
         (database {:?} of the PostgreSQL cluster with system identifier {} at {}): a \
         replay would overwrite the master with its own dump. Nothing was replayed. Give the slave its own [db] section naming its own server (a local peer: \
         [node] peer_config = \"slave.toml\" on the master); a slave cluster copied from the \
         master's files (a cloned VM, pg_basebackup) at the same path has the same identity: \
         re-create it with initdb",
        conn.describe(),
        target.database,
        target.system_identifier,
        if target.data_directory.is_empty() {
            "an unknown data directory"
        } else {
            &target.data_directory
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(id: u64, dir: &str, db: &str) -> DbSource {
        DbSource {
            system_identifier: id,
            data_directory: dir.into(),
            database: db.into(),
        }
    }

    #[test]
    fn parses_psql_output() {
        assert_eq!(
            parse("7301\x1f/var/lib/pg\x1fasterisk\x1e"),
            Some(src(7301, "/var/lib/pg", "asterisk"))
        );
        assert_eq!(parse("x\x1f\x1fdb"), None);
        assert_eq!(parse("1\x1fa"), None);
    }

    #[test]
    fn same_needs_identifier_and_database_and_a_matching_known_directory() {
        let m = src(1, "/d", "asterisk");
        assert!(same(&m, &m));
        assert!(same(&m, &src(1, "", "asterisk")), "unknown dir: same");
        assert!(!same(&m, &src(1, "/other", "asterisk")), "a copy elsewhere");
        assert!(!same(&m, &src(2, "/d", "asterisk")));
        assert!(!same(&m, &src(1, "/d", "other")));
        assert!(!same(&src(0, "/d", "asterisk"), &src(0, "/d", "asterisk")));
    }
}
