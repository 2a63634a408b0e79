//! What the DB job replicates, read from the master's catalog: the schema's tables and
//! sequences, split into replicated and excluded (an excluded table's sequences are
//! excluded too: those it owns, found through `pg_depend`, and Wazo's `<table>_id_seq`),
//! and the pg_dump arguments that follow from it. `--dry-run` shows this plan.

use super::{DbError, PgConn};
use crate::node::config::DbJob;
use serde::Serialize;

/// One relation of the replicated schema, from the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Relation {
    pub name: String,
    /// The planner's estimate (`reltuples`); `None` when the table was never analyzed.
    pub rows_estimate: Option<u64>,
    pub bytes: u64,
}

/// What a run would replicate (`--dry-run`).
#[derive(Debug, Clone, Serialize)]
pub struct DbPlan {
    pub database: String,
    pub schema: String,
    pub with_schema: bool,
    pub tables: Vec<Relation>,
    pub sequences: Vec<String>,
    pub excluded_tables: Vec<Relation>,
    pub excluded_sequences: Vec<String>,
}

/// Reads the catalog of the master's database: the schema's tables and sequences, split
/// into replicated and excluded.
pub fn plan(job: &DbJob) -> Result<DbPlan, DbError> {
    let conn = PgConn::from_job(job);
    let sql = format!(
        "SELECT c.relkind::text, c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid), \
         coalesce((SELECT t.relname FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid \
           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1), '') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{}' AND c.relkind IN ('r', 'p', 'S') ORDER BY c.relname",
        job.schema
    );
    let out = conn.query(&sql).map_err(|source| DbError::Pg {
        doing: format!(
            "cannot read the catalog of {} on this node",
            conn.describe()
        ),
        source,
    })?;
    let excluded = excluded_names(job);
    let mut p = DbPlan {
        database: job.database.clone(),
        schema: job.schema.clone(),
        with_schema: job.with_schema,
        tables: vec![],
        sequences: vec![],
        excluded_tables: vec![],
        excluded_sequences: vec![],
    };
    for rec in out.split('\x1e').filter(|r| !r.trim().is_empty()) {
        let f: Vec<&str> = rec.trim_start_matches('\n').split('\x1f').collect();
        if f.len() != 5 {
            return Err(DbError::Dump(format!(
                "unexpected catalog row from psql: {rec:?}"
            )));
        }
        let (kind, name, owner) = (f[0], f[1].to_string(), f[4]);
        let rel = Relation {
            name: name.clone(),
            rows_estimate: f[2]
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| n as u64),
            bytes: f[3].parse().unwrap_or(0),
        };
        if kind == "S" {
            let of_excluded = excluded
                .iter()
                .any(|t| *t == owner || format!("{t}_id_seq") == name);
            if of_excluded {
                p.excluded_sequences.push(name);
            } else {
                p.sequences.push(name);
            }
        } else if excluded.contains(&name) {
            p.excluded_tables.push(rel);
        } else {
            p.tables.push(rel);
        }
    }
    Ok(p)
}

/// The excluded table names that live in the job's schema, as the catalog spells them
/// (unquoted identifiers fold to lower case).
fn excluded_names(job: &DbJob) -> Vec<String> {
    job.exclude_tables
        .iter()
        .filter_map(|t| match t.split_once('.') {
            Some((s, n)) if s.eq_ignore_ascii_case(&job.schema) => Some(n.to_lowercase()),
            Some(_) => None,
            None => Some(t.to_lowercase()),
        })
        .collect()
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// pg_dump's arguments for `job`, leaving out the excluded tables and their sequences.
pub(super) fn dump_args(job: &DbJob, plan: &DbPlan) -> Vec<String> {
    let mut a = vec![format!("--schema={}", quote_ident(&job.schema))];
    if job.with_schema {
        a.extend(["--clean", "--if-exists", "--no-owner", "--no-privileges"].map(String::from));
    } else {
        a.push("--data-only".into());
    }
    for t in excluded_names(job) {
        a.push(format!(
            "--exclude-table={}.{}",
            quote_ident(&job.schema),
            quote_ident(&t)
        ));
    }
    for s in &plan.excluded_sequences {
        a.push(format!(
            "--exclude-table={}.{}",
            quote_ident(&job.schema),
            quote_ident(s)
        ));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::config::{DbKind, Schedule};

    fn job(with_schema: bool) -> DbJob {
        DbJob {
            kind: DbKind::Postgres,
            database: "asterisk".into(),
            schema: "public".into(),
            exclude_tables: vec!["cel".into(), "public.Call_Log".into(), "other.x".into()],
            user: "postgres".into(),
            schedule: Schedule::Hourly,
            min_interval: crate::node::config::DB_MIN_INTERVAL,
            safety_pass: Schedule::Hourly,
            with_schema,
            host: None,
            port: None,
            run_as: None,
            bin_dir: None,
            master_chooses_slave_db: false,
            discard_failover_writes: false,
        }
    }

    #[test]
    fn excluded_tables_and_their_sequences_are_left_out_of_the_dump() {
        assert_eq!(excluded_names(&job(false)), ["cel", "call_log"]);
        let plan = DbPlan {
            database: "asterisk".into(),
            schema: "public".into(),
            with_schema: false,
            tables: vec![],
            sequences: vec![],
            excluded_tables: vec![],
            excluded_sequences: vec!["cel_id_seq".into(), "we\"ird".into()],
        };
        assert_eq!(
            dump_args(&job(false), &plan),
            [
                "--schema=\"public\"",
                "--data-only",
                "--exclude-table=\"public\".\"cel\"",
                "--exclude-table=\"public\".\"call_log\"",
                "--exclude-table=\"public\".\"cel_id_seq\"",
                "--exclude-table=\"public\".\"we\"\"ird\"",
            ]
        );
        let a = dump_args(&job(true), &plan);
        assert!(a.contains(&"--clean".to_string()) && !a.contains(&"--data-only".to_string()));
    }
}
