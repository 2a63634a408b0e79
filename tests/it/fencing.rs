//! Roles and fencing (issue 16), with the real binary: two nodes `a` and `b` on this
//! machine, each with its own config, root and state, each the other's `peer = "local"`
//! (`peer_config`: the serve child runs with the peer's own config, as over SSH). A push,
//! a pull and a DB replay to a peer whose role forbids it are refused and leave the peer
//! untouched; a master that was superseded by a promotion (an older role epoch) cannot
//! write until it is demoted; a running daemon obeys `demote` within a second; and the
//! failback of docs/master-check.md, with two real PostgreSQL servers and a copy-back
//! directory, ends with both nodes holding everything either side wrote.

use crate::db::{Case, Opts, json_of, stderr};
use crate::pg::{PG_BIN, Pg};
use crate::util::{hasync, snapshot, text, wait_for};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// A push job of the two managed directories, deleting on the receiver.
const PUSH_JOB: &str =
    "[[sync]]\nname = \"files\"\npaths = [\"/spool\", \"/etc/conf\"]\ndelete = true\n";

/// Two nodes in `dir`: `a.toml` and `b.toml`.
struct Pair {
    dir: PathBuf,
}

impl Pair {
    fn new(dir: &Path) -> Pair {
        for n in ["a", "b"] {
            for sub in ["spool", "etc/conf"] {
                std::fs::create_dir_all(dir.join(format!("{n}-root/{sub}"))).unwrap();
            }
        }
        Pair {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes node `me`'s config: `role`, its `[[sync]]` text, an optional `[db]`.
    fn node(&self, me: &str, role: &str, jobs: &str, db: Option<(&Pg, &str)>) -> PathBuf {
        let peer = if me == "a" { "b" } else { "a" };
        let d = self.dir.display();
        let db = db.map_or(String::new(), |(pg, name)| {
            format!(
                "[db]\nkind = \"postgres\"\ndatabase = \"{name}\"\nuser = \"postgres\"\n\
                 exclude_tables = [\"call_log\", \"public.cel\"]\nhost = \"{}\"\nport = {}\n\
                 bin_dir = \"{PG_BIN}\"\n",
                pg.sock.display(),
                pg.port
            )
        });
        let body = format!(
            r#"[node]
role = "{role}"
peer = "local"
peer_config = "{peer}.toml"
root = "{me}-root"
peer_root = "{peer}-root"
state_dir = "{me}-state"
sentinel_dir = "{me}-sentinels"
[services]
start = ["touch {d}/{me}-up"]
stop = ["rm -f {d}/{me}-up"]
status = "test -f {d}/{me}-up"
[check_master]
address = "127.0.0.1"
probes = ["cmd:test -e {d}/{peer}-alive"]
timeout = "2s"
fail_after = 1
recover_after = 1
hold_down = "0s"
copy_back = ["/spool"]
{jobs}
{db}"#
        );
        let p = self.cfg(me);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn cfg(&self, me: &str) -> PathBuf {
        self.dir.join(format!("{me}.toml"))
    }

    fn root(&self, me: &str) -> PathBuf {
        self.dir.join(format!("{me}-root"))
    }

    /// `hasync --config <me>.toml ARGS`.
    fn run(&self, me: &str, args: &[&str]) -> Output {
        hasync()
            .arg("--config")
            .arg(self.cfg(me))
            .args(args)
            .output()
            .unwrap()
    }

    fn status(&self, me: &str) -> serde_json::Value {
        let o = self.run(me, &["status", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

fn assert_code(o: &Output, code: i32, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    let all = text(o);
    for n in needles {
        assert!(all.contains(n), "{n:?} missing: {all}");
    }
}

#[test]
fn fence_refuses_push_pull_and_db_replay_to_a_peer_whose_role_forbids_it() {
    let c = Case::new("fence_roles", Pg::slave(), Opts::default());
    let p = Pair::new(c.dir.path());
    let a_db = Some((c.master, c.db.as_str()));
    let b_db = Some((c.slave, c.db.as_str()));
    std::fs::write(p.root("a").join("etc/conf/x"), b"a's").unwrap();
    std::fs::write(p.root("b").join("etc/conf/y"), b"b's own").unwrap();

    // Both nodes say master: a's push and a's DB replay are refused by b's serve.
    p.node("a", "master", PUSH_JOB, a_db);
    p.node("b", "master", PUSH_JOB, b_db);
    let before = snapshot(&p.root("b"));
    let o = p.run("a", &["sync"]);
    assert_code(
        &o,
        3,
        &["refused a push", "this node is", "master", "hasync demote"],
    );
    assert_eq!(snapshot(&p.root("b")), before, "b was written");
    let slave_before = c.slave_snapshot();
    let o = p.run("a", &["db-replicate", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(json_of(&o)["outcome"], "failed");
    assert!(stderr(&o).contains("refused"), "{}", text(&o));
    assert_eq!(c.slave_snapshot(), slave_before, "b's database was written");

    // Both nodes say slave: a's pull is refused by b's serve (b is not the master).
    let pull = PUSH_JOB.replace("delete = true", "delete = true\ndirection = \"pull\"");
    p.node("a", "slave", &pull, a_db);
    p.node("b", "slave", PUSH_JOB, b_db);
    let a_before = snapshot(&p.root("a"));
    let o = p.run("a", &["sync"]);
    assert_code(&o, 3, &["refused a pull", "pull from the master"]);
    assert_eq!(snapshot(&p.root("a")), a_before, "a was written");

    // With b the master, the same pull goes through: the fence only stops what is wrong.
    p.node("b", "master", PUSH_JOB, b_db);
    let o = p.run("a", &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read(p.root("a").join("etc/conf/y")).unwrap(),
        b"b's own"
    );
    assert!(!p.root("a").join("etc/conf/x").exists());
}

#[test]
fn fence_refuses_a_stale_epoch_master_until_it_is_demoted() {
    let t = tempfile::tempdir().unwrap();
    let p = Pair::new(t.path());
    p.node("a", "master", PUSH_JOB, None);
    p.node("b", "slave", PUSH_JOB, None);
    std::fs::write(p.root("a").join("spool/m1"), b"from a").unwrap();
    let o = p.run("a", &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(p.root("b").join("spool/m1").exists());

    // a is gone; b is promoted (epoch 1) and writes.
    let o = p.run("b", &["promote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(p.status("b")["role_epoch"], 1);
    std::fs::write(p.root("b").join("spool/b-new"), b"from b").unwrap();

    // a comes back, still master by its config, epoch 0: refused, b untouched.
    let before = snapshot(&p.root("b"));
    let o = p.run("a", &["sync"]);
    assert_code(&o, 3, &["stale master", "epoch 1", "hasync demote"]);
    assert_eq!(snapshot(&p.root("b")), before);
    let o = p.run("a", &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["role"], "master", "{st}");

    // After demote on a, normal sync resumes the other way, and a learns epoch 1.
    let o = p.run("a", &["demote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = p.run("b", &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read(p.root("a").join("spool/b-new")).unwrap(),
        b"from b"
    );
    let st = p.status("a");
    assert_eq!(
        (&st["role"], &st["role_source"]),
        (&"slave".into(), &"role_file".into()),
        "{st}"
    );
    assert_eq!(st["role_epoch"], 1, "{st}");
    let o = p.run("a", &["sync"]);
    assert_code(&o, 0, &["skipped"]);
}

#[test]
fn fence_a_running_daemon_obeys_demote_within_a_second() {
    let t = tempfile::tempdir().unwrap();
    let p = Pair::new(t.path());
    let watch = "[[sync]]\nname = \"w\"\npaths = [\"/spool\"]\nschedule = \"watch\"\nsafety_pass = \"manual\"\n";
    let cfg = p.node("a", "master", watch, None);
    p.node("b", "slave", watch, None);
    let log = t.path().join("a-daemon.log");
    let mut daemon = hasync()
        .env("HASYNC_LOG", "info")
        .arg("--config")
        .arg(&cfg)
        .arg("daemon")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::write(p.root("a").join("spool/before"), b"1").unwrap();
    wait_for(10, || p.root("b").join("spool/before").exists(), logged);

    let o = p.run("a", &["demote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t0 = Instant::now();
    // Status says slave at once (it reads the role now), the job line says why.
    let st = p.status("a");
    assert_eq!(st["role"], "slave", "{st}");
    assert!(st["jobs"][0]["skipped"].is_string(), "{st}");
    // The daemon notices within a second...
    while !logged().contains("not run on this node now") {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "not noticed: {}",
            logged()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let noticed = t0.elapsed();
    // ... and pushes nothing written after the demote.
    std::fs::write(p.root("a").join("spool/after"), b"2").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        !p.root("b").join("spool/after").exists(),
        "pushed after demote: {}",
        logged()
    );
    assert!(
        noticed < Duration::from_secs(1),
        "noticed after {noticed:?}: {}",
        logged()
    );
    eprintln!("daemon noticed the demote after {noticed:?}");
}

/// The failback of docs/master-check.md, end to end: the master a dies; b fails over
/// (its master check starts its services) and writes files under `copy_back` and rows
/// in its database; a returns and is refused; b's check fails back, copying the
/// copy_back paths to a first; a's DB job is refused (b's rows would be lost); the
/// operator keeps them (b promoted, a demoted: b's DB job replays them into a), then
/// gives mastership back to a. Both nodes end with everything either side wrote.
#[test]
fn fence_failback_loses_nothing_with_two_postgres_servers_and_copy_back() {
    let c = Case::new("fence_failback", Pg::slave(), Opts::default());
    let p = Pair::new(c.dir.path());
    let a_db = Some((c.master, c.db.as_str()));
    let b_db = Some((c.slave, c.db.as_str()));
    p.node("a", "master", PUSH_JOB, a_db);
    p.node("b", "slave", PUSH_JOB, b_db);
    let alive = c.dir.path().join("a-alive");
    std::fs::write(&alive, b"").unwrap();
    std::fs::write(p.root("a").join("spool/m1.wav"), b"a's message").unwrap();
    for args in [&["sync"][..], &["db-replicate"]] {
        let o = p.run("a", args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    c.assert_replicated();

    // 1. a dies; b's master check fails over.
    std::fs::remove_file(&alive).unwrap();
    let o = p.run("b", &["check-master", "--once", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(c.dir.path().join("b-up").exists(), "{}", text(&o));
    // 2. b serves, and writes.
    std::fs::write(p.root("b").join("spool/b-fo.wav"), b"left during failover").unwrap();
    c.slave.sql(
        &c.db,
        "INSERT INTO tenant (id, name) VALUES (100, 'added during failover')",
    );
    let b_files = snapshot(&p.root("b"));
    let b_rows = c.slave_snapshot();

    // 3. a returns: its push and its DB job are refused while b serves.
    std::fs::write(&alive, b"").unwrap();
    let o = p.run("a", &["sync"]);
    assert_code(
        &o,
        3,
        &["refused a push", "serving as master after a failover"],
    );
    let o = p.run("a", &["db-replicate"]);
    assert_code(&o, 3, &["refused the DB job"]);
    assert_eq!(snapshot(&p.root("b")), b_files);
    assert_eq!(c.slave_snapshot(), b_rows);

    // 4. b's check sees a up: copy-back to a first, then its services stop.
    let o = p.run("b", &["check-master", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!c.dir.path().join("b-up").exists());
    assert_eq!(
        std::fs::read(p.root("a").join("spool/b-fo.wav")).unwrap(),
        b"left during failover"
    );
    // 5. a's push now goes through, and deletes nothing b wrote (a has it too).
    let o = p.run("a", &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(p.root("b").join("spool/b-fo.wav").exists());
    assert!(p.root("b").join("spool/m1.wav").exists());

    // 6. a's DB job is refused by b's failback guard: b's rows would be discarded.
    let o = p.run("a", &["db-replicate"]);
    assert_code(
        &o,
        4,
        &[
            "written while it served as master",
            "--discard-failover-writes",
            "tenant",
        ],
    );
    assert_eq!(c.slave_snapshot(), b_rows);

    // 7. The operator keeps b's rows: b becomes master for a while, its DB job replays
    //    them into a.
    for (node, args) in [
        ("b", &["promote"][..]),
        ("a", &["demote"]),
        ("b", &["db-replicate"]),
    ] {
        let o = p.run(node, args);
        assert_eq!(o.status.code(), Some(0), "{node} {args:?}: {}", text(&o));
    }
    assert!(
        c.master
            .table(&c.db, "tenant")
            .contains("added during failover")
    );
    // 8. Mastership back to a (epoch 2): its jobs run again, nothing is refused.
    for (node, args) in [
        ("b", &["demote", "--copy-back"][..]),
        ("a", &["promote"]),
        ("a", &["sync"]),
        ("a", &["db-replicate"]),
    ] {
        let o = p.run(node, args);
        assert_eq!(o.status.code(), Some(0), "{node} {args:?}: {}", text(&o));
    }
    assert_eq!(p.status("a")["role_epoch"], 2);
    c.assert_replicated();
    for n in ["a", "b"] {
        let t = c.master.table(&c.db, "tenant");
        assert!(
            t.contains("added during failover") && t.contains("acme"),
            "{n}: {t}"
        );
        for f in ["spool/m1.wav", "spool/b-fo.wav"] {
            assert!(p.root(n).join(f).exists(), "{n} lacks {f}");
        }
    }
    assert!(
        c.slave
            .table(&c.db, "tenant")
            .contains("added during failover")
    );

    // The other way out: a second failover, rows written on b, and the operator
    // discards them from the master (`--discard-failover-writes`).
    std::fs::remove_file(&alive).unwrap();
    let o = p.run("b", &["check-master", "--once"]);
    assert!(c.dir.path().join("b-up").exists(), "{}", text(&o));
    c.slave.sql(
        &c.db,
        "INSERT INTO tenant (id, name) VALUES (101, 'discarded')",
    );
    std::fs::write(&alive, b"").unwrap();
    let o = p.run("b", &["check-master", "--once"]);
    assert!(!c.dir.path().join("b-up").exists(), "{}", text(&o));
    let o = p.run("a", &["db-replicate", "--force"]);
    assert_code(&o, 4, &["written while it served as master"]);
    assert!(c.slave.table(&c.db, "tenant").contains("discarded"));
    let o = p.run(
        "a",
        &["db-replicate", "--force", "--discard-failover-writes"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!c.slave.table(&c.db, "tenant").contains("discarded"));
    c.assert_replicated();
}

/// In pull mode the slave's own jobs are the danger: a slave that failed over and wrote
/// must not pull the returning master's tree over its writes. Its pull jobs wait for the
/// failback, which copies the `copy_back` paths to the master first.
#[test]
fn fence_a_failed_over_slave_does_not_pull_until_it_failed_back() {
    let t = tempfile::tempdir().unwrap();
    let p = Pair::new(t.path());
    let pull = PUSH_JOB.replace("delete = true", "delete = true\ndirection = \"pull\"");
    p.node("a", "master", &pull, None);
    p.node("b", "slave", &pull, None);
    let alive = t.path().join("a-alive");
    std::fs::write(p.root("a").join("spool/m1"), b"from a").unwrap();
    let o = p.run("b", &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(p.root("b").join("spool/m1").exists());

    // a is down: b fails over and records a message.
    let o = p.run("b", &["check-master", "--once"]);
    assert!(t.path().join("b-up").exists(), "{}", text(&o));
    std::fs::write(p.root("b").join("spool/b-fo"), b"from b").unwrap();
    // a is back, but b still serves: its pull is skipped, its message stays.
    std::fs::write(&alive, b"").unwrap();
    let o = p.run("b", &["sync"]);
    assert_code(&o, 0, &["skipped", "wait for the failback"]);
    assert!(p.root("b").join("spool/b-fo").exists());
    // The failback copies it to a; then b's pull keeps it (a has it too).
    let o = p.run("b", &["check-master", "--once"]);
    assert!(!t.path().join("b-up").exists(), "{}", text(&o));
    let o = p.run("b", &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read(p.root("b").join("spool/b-fo")).unwrap(),
        b"from b"
    );
    assert_eq!(
        std::fs::read(p.root("a").join("spool/b-fo")).unwrap(),
        b"from b"
    );
}

/// Over SSH, as on a real pair: the peer's key runs `hasync --config b.toml serve
/// --restrict` through the test's sshd, and that serve fences with b's own role.
#[test]
fn fence_over_ssh_uses_the_peers_own_config() {
    let sshd = crate::sshd::Sshd::start();
    let key = sshd.dir.path().join("fence_key");
    let pub_line = crate::sshd::keygen(&key);
    let kh = sshd.dir.path().join("known_hosts");
    sshd.write_known_hosts(&kh);
    let t = tempfile::tempdir().unwrap();
    let p = Pair::new(t.path());
    let bin = crate::util::bin();
    sshd.authorize(&format!(
        "command=\"{} --config {} serve --restrict\",no-pty,no-port-forwarding {pub_line}",
        bin.display(),
        p.cfg("b").display()
    ));
    let over_ssh = |role: &str| {
        let cfg = p.node("a", role, PUSH_JOB, None);
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "peer = \"local\"\npeer_config = \"b.toml\"\n",
            &format!(
                "peer = \"root@127.0.0.1:{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nremote_path = \"{}\"\n",
                sshd.port,
                key.display(),
                kh.display(),
                bin.display()
            ),
        );
        let text = text.replace(
            "peer_root = \"b-root\"",
            &format!("peer_root = \"{}\"", p.root("b").display()),
        );
        std::fs::write(&cfg, text).unwrap();
    };
    over_ssh("master");
    std::fs::write(p.root("a").join("spool/m1"), b"from a").unwrap();
    p.node("b", "master", PUSH_JOB, None);
    let before = snapshot(&p.root("b"));
    let o = p.run("a", &["sync"]);
    assert_code(&o, 3, &["refused a push", "hasync demote"]);
    assert_eq!(snapshot(&p.root("b")), before);
    p.node("b", "slave", PUSH_JOB, None);
    let o = p.run("a", &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(p.root("b").join("spool/m1").exists());
    // b is promoted (epoch 1): a, still master by its config, is stale.
    let o = p.run("b", &["promote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    p.node("b", "slave", PUSH_JOB, None); // its config says slave; role.json says master
    let o = p.run("a", &["sync"]);
    assert_code(&o, 3, &["stale master"]);
}
