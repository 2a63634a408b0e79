//! The DB job never replays into the wrong database: the master's own (a slave config
//! naming the master's server, the master's config leaking into the local serve child,
//! a slave without `[db]` told to use the master's settings), nor into a database a
//! slave without `[db]` did not choose. Each attempt runs while pgbench commits
//! TPC-B transactions on the master; nothing may be lost: pgbench's count of committed
//! transactions equals the rows of its history table afterwards (one row each).

use crate::db::{Case, Opts, json_of, stderr};
use crate::pg::{PG_BIN, Pg};
use crate::util::{hasync, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A `[db]` section for database `db` on the server at `sock`:`port`.
fn db_section(db: &str, sock: &Path, port: u16, extra: &str) -> String {
    format!(
        "[db]\nkind = \"postgres\"\ndatabase = \"{db}\"\nuser = \"postgres\"\nhost = \"{}\"\n\
         port = {port}\nbin_dir = \"{PG_BIN}\"\n{extra}",
        sock.display()
    )
}

/// A master config in `dir` named `name`, with more `[node]` lines.
fn master_cfg(c: &Case, name: &str, node_extra: &str, db_extra: &str) -> PathBuf {
    let p = c.dir.path().join(name);
    std::fs::write(
        &p,
        format!(
            "[node]\nrole = \"master\"\npeer = \"local\"\nstate_dir = \"state-{name}\"\n{node_extra}\n{}",
            db_section(&c.db, &c.master.sock, c.master.port, db_extra)
        ),
    )
    .unwrap();
    p
}

fn replicate(cfg: &Path, env_config: Option<&Path>) -> Output {
    let mut cmd = hasync();
    if let Some(e) = env_config {
        cmd.env("HASYNC_CONFIG", e);
    } else {
        cmd.arg("--config").arg(cfg);
    }
    cmd.args(["db-replicate", "--json"]).output().unwrap()
}

fn pgbench(pg: &Pg) -> Command {
    let mut c = Command::new(Path::new(PG_BIN).join("pgbench"));
    c.arg("-h")
        .arg(&pg.sock)
        .args(["-p", &pg.port.to_string(), "-U", "postgres"]);
    c
}

/// pgbench's "number of transactions actually processed: N".
fn processed(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in pgbench's output: {out}"))
}

fn assert_refused(o: &Output, code: i32, needle: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    let j = json_of(o);
    assert_eq!(j["outcome"], "failed", "{j}");
    let err = stderr(o);
    assert!(err.contains(needle), "{needle:?} missing: {err}");
}

#[test]
fn db_replay_into_the_masters_own_database_is_refused_under_pgbench_load() {
    let c = Case::new("t_self", Pg::slave(), Opts::default());
    let m = c.master;
    let init = pgbench(m)
        .args(["-i", "-q", "-s", "1", &c.db])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init));
    // 1: a slave config whose [db] names the master's server (through a symlinked
    // socket directory, so the two configs do not look alike).
    let alias = c.dir.path().join("sock-alias");
    std::os::unix::fs::symlink(&m.sock, &alias).unwrap();
    std::fs::write(
        c.dir.path().join("wrong-slave.toml"),
        format!(
            "[node]\nrole = \"slave\"\npeer = \"local\"\nstate_dir = \"wrong-state\"\n\n{}",
            db_section(&c.db, &alias, m.port, "")
        ),
    )
    .unwrap();
    let via_wrong_slave = master_cfg(&c, "m1.toml", "peer_config = \"wrong-slave.toml\"", "");
    // 2: the case: the master's config given as $HASYNC_CONFIG, no peer_config.
    let via_env = master_cfg(&c, "m2.toml", "", "");
    // 3: no slave config at all, the master allowed to choose: it proposes its own socket.
    let proposing = master_cfg(&c, "m3.toml", "", "master_chooses_slave_db = true\n");
    // 4: no slave config, no permission to choose.
    let plain = master_cfg(&c, "m4.toml", "", "");

    let bench = pgbench(m)
        .args(["-n", "-c", "2", "-T", "8", &c.db])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = replicate(&via_wrong_slave, None);
    assert_refused(&o, 3, "are the same database");
    let o = replicate(&via_env, Some(&via_env));
    assert_refused(&o, 2, "has no [db] section");
    let o = replicate(&proposing, None);
    assert_refused(&o, 3, "are the same database");
    let o = replicate(&plain, None);
    assert_refused(&o, 2, "master_chooses_slave_db");
    let out = bench.wait_with_output().unwrap();
    assert!(out.status.success(), "pgbench: {}", text(&out));
    let committed = processed(&String::from_utf8_lossy(&out.stdout));
    assert!(committed > 100, "pgbench committed only {committed}");
    let history: u64 = m
        .sql(&c.db, "SELECT count(*) FROM pgbench_history")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(history, committed, "transactions lost on the master");
    // Nothing else was touched either: the master's tables still hold their rows.
    assert_eq!(m.sql(&c.db, "SELECT count(*) FROM users").trim(), "3000");
}

#[test]
fn db_hasync_config_still_names_the_local_peers_config() {
    let c = Case::new("t_envcfg", Pg::slave(), Opts::default());
    // $HASYNC_CONFIG naming another file than --config is the peer's config, as before.
    let m2 = master_cfg(
        &c,
        "m2.toml",
        "",
        "exclude_tables = [\"call_log\", \"cel\"]\n",
    );
    let o = hasync()
        .env("HASYNC_CONFIG", c.slave_cfg())
        .arg("--config")
        .arg(&m2)
        .args(["db-replicate", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json_of(&o)["outcome"], "replayed");
    c.assert_replicated();
}

/// A failed replay's message names psql (not runuser), the script line and its
/// statement, and keeps psql's lines as lines (no literal `\n`).
pub(crate) fn assert_psql_error_shape(err: &str, statement: &str) {
    assert!(err.contains("psql failed (exit 3)"), "{err}");
    assert!(!err.contains("runuser failed"), "{err}");
    assert!(
        err.contains("of the replay script (") && err.contains(statement),
        "the failing statement is not named: {err}"
    );
    assert!(
        err.contains("\n    "),
        "psql's lines are not shown as lines: {err}"
    );
    assert!(!err.contains("\\n"), "escaped newlines: {err}");
}

#[test]
fn db_replay_error_through_runuser_names_psql_and_the_statement() {
    let c = Case::new("t_err_lines", Pg::slave(), Opts::default());
    let cfg = std::fs::read_to_string(c.slave_cfg()).unwrap();
    std::fs::write(
        c.slave_cfg(),
        cfg.replace("bin_dir = ", "run_as = \"postgres\"\nbin_dir = "),
    )
    .unwrap();
    c.slave.sql(
        &c.db,
        "ALTER TABLE line ADD CONSTRAINT short_number CHECK (length(number) < 4)",
    );
    let o = c.run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("violates check constraint"), "{err}");
    assert_psql_error_shape(&err, "COPY public.line");
}

#[test]
fn db_drifted_slave_is_corrected_without_a_master_change() {
    let c = Case::new("t_drift", Pg::slave(), Opts::default());
    let run = |want: &str| {
        let o = c.run(&["--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let j = json_of(&o);
        assert_eq!(j["outcome"], want, "{j}");
        if want == "replayed" {
            assert_eq!(j["verify"]["ok"], true, "{j}");
            assert_eq!(j["verify"]["tables"].as_array().unwrap().len(), 4, "{j}");
        }
        c.assert_replicated();
        crate::db::excluded_untouched(&c);
        j
    };
    run("replayed");
    run("unchanged");
    // Written during a failover: one row changed on the slave.
    c.slave.sql(
        &c.db,
        "UPDATE users SET name = 'written-on-slave' WHERE id = 7",
    );
    let j = run("replayed");
    let why = j["reason"].as_str().unwrap();
    assert!(
        why.contains("changed since its last replay") && why.contains("public.users"),
        "{j}"
    );
    run("unchanged");
    // Rebuilt empty (the replicated tables; the excluded ones keep their rows).
    c.slave
        .sql(&c.db, "TRUNCATE tenant, users, line, voicemail");
    let j = run("replayed");
    assert!(
        j["reason"].as_str().unwrap().contains("public.tenant"),
        "{j}"
    );
    // The slave lost its record (a reinstall) but holds the data: replayed once to
    // record it, then unchanged.
    std::fs::remove_file(c.dir.path().join("slave-state/db-replica.json")).unwrap();
    let j = run("replayed");
    assert!(j["reason"].as_str().unwrap().contains("no record"), "{j}");
    run("unchanged");
    // The text output says why.
    c.slave.sql(&c.db, "DELETE FROM line WHERE id = 3");
    let o = c.run(&[]);
    let out = crate::util::ok(o);
    assert!(
        out.contains("replayed (")
            && out.contains("the slave's data changed since its last replay"),
        "{out}"
    );
    assert!(out.contains("verified: 4 tables equal the dump"), "{out}");
}
