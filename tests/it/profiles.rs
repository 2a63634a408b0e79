//! The shipped profiles (`profiles/*.toml`) and the Wazo drop-in, end to end: the real
//! binary against a temp tree laid out like a Wazo node (`root`) and its peer
//! (`peer_root`, `peer = "local"`), with `/etc/xivo/ha.conf` under the root; Wazo's
//! script names as symlinks to the binary; the Alation pull; the man page and
//! completions generated from the clap definition.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{bin, hasync, text};

pub(crate) fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

pub(crate) fn write(p: &Path, body: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

pub(crate) fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Every regular file under `root`, relative, as strings.
fn files(root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .collect()
}

#[test]
fn profiles_every_file_parses_and_validates() {
    let mut n = 0;
    for e in std::fs::read_dir(profiles_dir()).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(
            p.extension().and_then(|x| x.to_str()),
            Some("toml"),
            "{}: only configs belong in profiles/",
            p.display()
        );
        // `cron` loads and validates the whole file (every section) and reads no peer.
        let o = hasync().arg("-c").arg(&p).arg("cron").output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}: {}", p.display(), text(&o));
        n += 1;
    }
    assert!(n >= 4, "demo, wazo, alation, generic: {n}");
}

#[test]
fn profiles_generic_documents_every_key() {
    let text = read(&profiles_dir().join("generic.toml"));
    let keys = [
        // [node]
        "role",
        "role_from",
        "peer",
        "peer_from",
        "identity",
        "known_hosts",
        "remote_path",
        "state_dir",
        "sentinel_dir",
        "root",
        "peer_root",
        "peer_config",
        "timeout",
        "compress",
        "bwlimit",
        // [[sync]]
        "name",
        "paths",
        "exclude",
        "direction",
        "delete",
        "checksum",
        "max_delete",
        "schedule",
        "allow_empty_source",
        "jitter",
        "safety_pass",
        // [db]
        "kind",
        "database",
        "schema",
        "exclude_tables",
        "user",
        "with_schema",
        "host",
        "port",
        "run_as",
        "bin_dir",
        "master_chooses_slave_db",
        // [services]
        "units",
        "start",
        "stop",
        "status",
        "keep_going",
        "guard",
        // [check_master]
        "address",
        "probes",
        "mode",
        "interval",
        "fail_after",
        "recover_after",
        "hold_down",
        "witness",
        "copy_back",
        "stop_while_up",
        // [hooks], [daemon]
        "on_failure",
        "on_failover",
        "on_failback",
        "metrics_listen",
        "timezone",
        "retry_min",
        "retry_max",
        // [cluster]
        "dcs",
        "endpoints",
        "scope",
        "priority",
        "ttl",
        "loop_wait",
        "retry_timeout",
    ];
    for k in keys {
        let written = text.lines().any(|l| {
            let l = l.trim_start().trim_start_matches('#').trim_start();
            l.strip_prefix(k)
                .is_some_and(|r| r.trim_start().starts_with('='))
        });
        assert!(written, "generic.toml does not show {k} = ...");
    }
    for table in [
        "[node]",
        "[[sync]]",
        "[db]",
        "[services]",
        "[check_master]",
        "[hooks]",
        "[daemon]",
    ] {
        assert!(text.contains(table), "generic.toml has no {table}");
    }
}

/// A Wazo node and its peer under a temp dir: `master/` (this node's root), `slave/`
/// (the peer's root), and a test copy of profiles/wazo.toml pointed at them.
pub(crate) struct Wazo {
    pub(crate) dir: tempfile::TempDir,
}

const WAZO_DIRS: [&str; 6] = [
    "etc/asterisk/extensions_extra.d",
    "etc/xivo/asterisk",
    "var/lib/asterisk/agi-bin",
    "var/lib/asterisk/moh",
    "root/.config/wazo-auth-cli",
    "var/lib/wazo-auth-keys",
];

impl Wazo {
    pub(crate) fn new() -> Wazo {
        let w = Wazo {
            dir: tempfile::tempdir().unwrap(),
        };
        let m = w.root();
        for d in WAZO_DIRS {
            write(&m.join(d).join("a.conf"), &format!("{d}\n"));
        }
        write(&m.join("var/lib/asterisk/moh/default/x.wav"), "moh");
        // Not Wazo's: must not be copied.
        write(&m.join("etc/asterisk/sip.conf"), "not synced");
        write(&m.join("etc/xivo/other.conf"), "not synced");
        write(&m.join("var/lib/asterisk/astdb.sqlite3"), "not synced");
        for t in ["t1", "t2"] {
            let base = m.join("var/lib/wazo/sounds/tenants").join(t);
            write(&base.join("playback/hello.wav"), t);
            write(&base.join("acd/queue.wav"), t);
            write(&base.join("monitor/call-1.wav"), "recording");
            write(&base.join("recording/call-2.wav"), "recording");
            // Only the tenant's own monitor/recording dirs are excluded.
            write(&base.join("playback/monitor/kept.wav"), "kept");
        }
        std::fs::create_dir_all(w.slave()).unwrap();
        w.write_profile("");
        w
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    pub(crate) fn slave(&self) -> PathBuf {
        self.dir.path().join("slave")
    }

    pub(crate) fn cfg(&self) -> PathBuf {
        self.dir.path().join("hasync.toml")
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.dir.path().join("services.log")
    }

    /// profiles/wazo.toml with the node's paths under the temp dir, `peer = "local"`,
    /// services that log, and a master probe driven by the file `master-up`.
    fn write_profile(&self, check_extra: &str) {
        let mut doc: toml_edit::DocumentMut =
            read(&profiles_dir().join("wazo.toml")).parse().unwrap();
        let d = self.dir.path();
        let node = doc["node"].as_table_mut().unwrap();
        assert_eq!(node["role_from"].as_str(), Some("wazo"));
        assert_eq!(node["peer_from"].as_str(), Some("wazo"));
        assert_eq!(node["sentinel_dir"].as_str(), Some("/var/lib/wazo"));
        node.remove("peer_from");
        node.remove("identity");
        node.remove("known_hosts");
        node["peer"] = toml_edit::value("local");
        node["root"] = toml_edit::value("master");
        node["peer_root"] = toml_edit::value("slave");
        node["state_dir"] = toml_edit::value("state");
        node["sentinel_dir"] = toml_edit::value("master/var/lib/wazo");
        let log = self.log().display().to_string();
        let svc = doc["services"].as_table_mut().unwrap();
        let arr = |v: &[String]| toml_edit::value(v.iter().collect::<toml_edit::Array>());
        svc["start"] = arr(&[format!("echo start >> {log}; touch {}/up", d.display())]);
        svc["stop"] = arr(&[format!("echo stop >> {log}; rm -f {}/up", d.display())]);
        svc["status"] = toml_edit::value(format!("test -f {}/up", d.display()));
        svc["timeout"] = toml_edit::value("5s");
        let cm = doc["check_master"].as_table_mut().unwrap();
        cm["probes"] = arr(&[format!(
            "cmd:echo \"$HASYNC_MASTER\" >> {}/probed; test -f {}/master-up",
            d.display(),
            d.display()
        )]);
        cm["interval"] = toml_edit::value("100ms");
        cm["fail_after"] = toml_edit::value(2);
        cm["recover_after"] = toml_edit::value(2);
        cm["hold_down"] = toml_edit::value("0s");
        doc.remove("daemon");
        // The [db] job against a server that is not there (the DB job itself is tested
        // with real PostgreSQL in tests/it/db.rs).
        let db = doc["db"].as_table_mut().unwrap();
        db.remove("run_as");
        db["host"] = toml_edit::value(d.join("no-pg").display().to_string());
        db["bin_dir"] = toml_edit::value("/usr/lib/postgresql/15/bin");
        std::fs::write(self.cfg(), format!("{doc}{check_extra}")).unwrap();
    }

    pub(crate) fn ha_conf(&self, node_type: &str) {
        write(
            &self.root().join("etc/xivo/ha.conf"),
            &format!(r#"{{"node_type": "{node_type}", "remote_address": "10.9.9.9"}}"#),
        );
        // wazo-sysconfd keeps the sentinels in step with ha.conf.
        let s = self.root().join("var/lib/wazo");
        std::fs::create_dir_all(&s).unwrap();
        let _ = std::fs::remove_file(s.join("is-primary"));
        let _ = std::fs::remove_file(s.join("is-secondary"));
        match node_type {
            "master" => write(&s.join("is-primary"), ""),
            "slave" => write(&s.join("is-secondary"), ""),
            _ => {}
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        hasync()
            .arg("-c")
            .arg(self.cfg())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the binary under Wazo's script `name` (a symlink in the temp dir).
    pub(crate) fn script(&self, name: &str, args: &[&str]) -> Output {
        let link = self.dir.path().join("bin").join(name);
        if !link.exists() {
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            symlink(bin(), &link).unwrap();
        }
        Command::new(&link)
            .args(args)
            .env("HASYNC_CONFIG", self.cfg())
            .env("HASYNC_LOG", "warn")
            .output()
            .unwrap()
    }

    fn expected(&self, tenants: &[&str]) -> BTreeSet<String> {
        let mut e: BTreeSet<String> = WAZO_DIRS.iter().map(|d| format!("{d}/a.conf")).collect();
        e.insert("var/lib/asterisk/moh/default/x.wav".into());
        for t in tenants {
            for f in [
                "playback/hello.wav",
                "acd/queue.wav",
                "playback/monitor/kept.wav",
            ] {
                e.insert(format!("var/lib/wazo/sounds/tenants/{t}/{f}"));
            }
        }
        e
    }
}

#[test]
fn profiles_wazo_syncs_exactly_wazos_directories_and_new_tenants() {
    let w = Wazo::new();
    w.ha_conf("master");
    let o = w.run(&["status"]);
    assert!(
        text(&o).contains("role: master (from ha.conf node_type)"),
        "{}",
        text(&o)
    );
    let o = w.run(&["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(files(&w.slave()), w.expected(&["t1", "t2"]));
    // A new tenant on the master is picked up without a config change; a removed file
    // is removed on the slave; the slave's own recordings stay where they are.
    write(
        &w.root()
            .join("var/lib/wazo/sounds/tenants/t3/playback/hi.wav"),
        "t3",
    );
    write(
        &w.root()
            .join("var/lib/wazo/sounds/tenants/t3/monitor/c.wav"),
        "rec",
    );
    write(&w.root().join("etc/xivo/asterisk/b.conf"), "b");
    std::fs::remove_file(w.root().join("etc/xivo/asterisk/a.conf")).unwrap();
    let own = w
        .slave()
        .join("var/lib/wazo/sounds/tenants/t1/monitor/slave-call.wav");
    write(&own, "the slave's own recording");
    let o = w.run(&["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut want = w.expected(&["t1", "t2"]);
    want.remove("etc/xivo/asterisk/a.conf");
    want.insert("etc/xivo/asterisk/b.conf".into());
    want.insert("var/lib/wazo/sounds/tenants/t3/playback/hi.wav".into());
    want.insert("var/lib/wazo/sounds/tenants/t1/monitor/slave-call.wav".into());
    assert_eq!(files(&w.slave()), want);
}

#[test]
fn profiles_wazo_ha_conf_roles_behave_as_wazos_scripts() {
    let w = Wazo::new();
    // slave and disabled: no sync (Wazo has no sync cron line there); exit 0.
    for role in ["slave", "disabled"] {
        w.ha_conf(role);
        let o = w.run(&["sync"]);
        assert_eq!(o.status.code(), Some(0), "{role}: {}", text(&o));
        assert!(text(&o).contains("skipped"), "{role}: {}", text(&o));
        assert!(files(&w.slave()).is_empty(), "{role} synced");
    }
    // master and disabled: the master check does nothing.
    for role in ["master", "disabled"] {
        w.ha_conf(role);
        let o = w.run(&["check-master", "--once"]);
        assert_eq!(o.status.code(), Some(0), "{role}: {}", text(&o));
        assert_eq!(read(&w.log()), "", "{role} touched services");
        assert_eq!(read(&w.dir.path().join("probed")), "", "{role} probed");
    }
    // slave: the master (ha.conf's remote_address) is down -> services start.
    w.ha_conf("slave");
    for _ in 0..2 {
        let o = w.run(&["check-master", "--once"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    assert_eq!(read(&w.log()), "start\n");
    assert_eq!(read(&w.dir.path().join("probed")), "10.9.9.9\n10.9.9.9\n");
    // ha.conf without remote_address on a slave: an error naming the file.
    write(
        &w.root().join("etc/xivo/ha.conf"),
        r#"{"node_type": "slave"}"#,
    );
    let o = w.run(&["check-master", "--once"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("ha.conf") && text(&o).contains("remote_address"),
        "{}",
        text(&o)
    );
    write(&w.root().join("etc/xivo/ha.conf"), "{not json");
    let o = w.run(&["sync"]);
    assert!(text(&o).contains("etc/xivo/ha.conf"), "{}", text(&o));
}

#[test]
fn profiles_wazo_script_names_do_what_the_scripts_did() {
    let w = Wazo::new();
    w.ha_conf("master");
    // xivo-sync / wazo-sync: the file sync.
    let o = w.script("xivo-sync", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(files(&w.slave()), w.expected(&["t1", "t2"]));
    write(&w.root().join("etc/xivo/asterisk/b.conf"), "b");
    let o = w.script("wazo-sync", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(w.slave().join("etc/xivo/asterisk/b.conf").exists());
    // `-i` is `hasync init`: here it refuses, the test's peer being "local".
    let o = w.script("xivo-sync", &["-i"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("no remote peer to set up"),
        "{}",
        text(&o)
    );
    let o = w.script("xivo-sync", &["--bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("usage: xivo-sync [-i|--init]"),
        "{}",
        text(&o)
    );
    // xivo-master-slave-db-replication <slave_ip>: the [db] job (here its PostgreSQL is
    // missing: the dump fails, exit 1, as the script failed).
    let o = w.script("xivo-master-slave-db-replication", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("<slave_ip>"), "{}", text(&o));
    let o = w.script("xivo-master-slave-db-replication", &["10.9.9.9"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("db asterisk failed"), "{}", text(&o));
    // xivo-manage-slave-services start|stop: idempotent.
    for _ in 0..2 {
        let o = w.script("xivo-manage-slave-services", &["start"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let o = w.script("xivo-manage-slave-services", &["stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read(&w.log()), "start\nstop\n");
    let o = w.script("xivo-manage-slave-services", &["restart"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    std::fs::write(w.log(), "").unwrap();
    // xivo-check-master-status <master_ip>: nothing on the master...
    let o = w.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read(&w.log()), "");
    // ... on the slave, the given master is checked; down: one cron run (checks
    // `interval` apart up to fail_after) starts the services, as Wazo's did.
    w.ha_conf("slave");
    let o = w.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read(&w.log()), "start\n");
    assert_eq!(read(&w.dir.path().join("probed")), "10.1.2.3\n10.1.2.3\n");
    // Back: the next run stops them.
    write(&w.dir.path().join("master-up"), "");
    let o = w.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read(&w.log()), "start\nstop\n");
    // No longer secondary (sentinel gone, ha.conf disabled): nothing.
    w.ha_conf("disabled");
    std::fs::remove_file(w.dir.path().join("master-up")).unwrap();
    for _ in 0..3 {
        let o = w.script("xivo-check-master-status", &["10.1.2.3"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    assert_eq!(read(&w.log()), "start\nstop\n");
    let o = w.script("xivo-check-master-status", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn profiles_alation_slave_pulls_and_master_has_no_job() {
    let t = tempfile::tempdir().unwrap();
    let profile = read(&profiles_dir().join("alation.toml"));
    let cfg = |role: &str, root: &str, peer_root: &str| {
        let mut doc: toml_edit::DocumentMut = profile.parse().unwrap();
        let node = doc["node"].as_table_mut().unwrap();
        node["role"] = toml_edit::value(role);
        node["peer"] = toml_edit::value("local");
        node.remove("identity");
        node.remove("known_hosts");
        node["root"] = toml_edit::value(root);
        node["peer_root"] = toml_edit::value(peer_root);
        node["state_dir"] = toml_edit::value(format!("{role}-state"));
        let p = t.path().join(format!("{role}.toml"));
        std::fs::write(&p, doc.to_string()).unwrap();
        p
    };
    let job = toml::from_str::<toml::Value>(&profile).unwrap()["sync"][0].clone();
    assert_eq!(job["direction"].as_str(), Some("pull"));
    assert_eq!(job["schedule"].as_str(), Some("minutely"));
    let (primary, secondary) = (t.path().join("primary"), t.path().join("secondary"));
    write(&primary.join("etc/alation/alation.conf"), "conf");
    write(&primary.join("data/site_data/conf/site.json"), "{}");
    write(&primary.join("data/site_data/conf/run.pid"), "1");
    std::fs::create_dir_all(&secondary).unwrap();
    // The primary: its job is skipped, nothing moves.
    let master = cfg("master", "primary", "secondary");
    let o = hasync()
        .arg("-c")
        .arg(&master)
        .arg("sync")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("pull jobs run on the slave"),
        "{}",
        text(&o)
    );
    assert!(files(&secondary).is_empty());
    let o = hasync()
        .arg("-c")
        .arg(&master)
        .arg("cron")
        .output()
        .unwrap();
    assert!(text(&o).contains("* * * * *"), "{}", text(&o));
    // The secondary pulls the primary's configuration.
    let slave = cfg("slave", "secondary", "primary");
    let o = hasync().arg("-c").arg(&slave).arg("sync").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let want: BTreeSet<String> = ["etc/alation/alation.conf", "data/site_data/conf/site.json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(files(&secondary), want);
}

#[test]
fn profiles_man_page_names_every_command_and_matches_the_committed_one() {
    let o = hasync().args(["generate", "man"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let page = String::from_utf8(o.stdout).unwrap();
    for sub in [
        "push",
        "pull",
        "sync",
        "db\\-replicate",
        "init",
        "services",
        "check\\-master",
        "promote",
        "demote",
        "daemon",
        "status",
        "cron",
    ] {
        assert!(
            page.contains(&format!("hasync\\-{sub}(1)")),
            "man page lacks {sub}"
        );
    }
    for name in [
        "xivo\\-sync",
        "xivo\\-check\\-master\\-status",
        "/etc/hasync/hasync.toml",
    ] {
        assert!(page.contains(name), "man page lacks {name}");
    }
    let t = tempfile::tempdir().unwrap();
    let o = hasync()
        .args(["generate", "man", "--out"])
        .arg(t.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/man");
    let names = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let hint = "regenerate: cargo run -- generate man --out contrib/man";
    assert_eq!(names(t.path()), names(&committed), "{hint}");
    for n in names(t.path()) {
        assert_eq!(
            read(&t.path().join(&n)),
            read(&committed.join(&n)),
            "contrib/man/{n} is stale ({hint})"
        );
    }
    assert_eq!(read(&t.path().join("hasync.1")), page);
}

#[test]
fn profiles_completions_generate_for_bash_zsh_fish() {
    let t = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let o = hasync()
            .args(["generate", "completions", shell])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o));
        let s = String::from_utf8(o.stdout).unwrap();
        assert!(
            s.contains("check-master") && s.contains("db-replicate"),
            "{shell}: {s}"
        );
        let o = hasync()
            .args(["generate", "completions", shell, "--out"])
            .arg(t.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o));
    }
    assert_eq!(
        std::fs::read_dir(t.path()).unwrap().count(),
        3,
        "hasync.bash, _hasync, hasync.fish"
    );
    // The Debian package installs the committed copies.
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/completions");
    for n in ["hasync.bash", "_hasync", "hasync.fish"] {
        assert_eq!(
            read(&t.path().join(n)),
            read(&committed.join(n)),
            "contrib/completions/{n} is stale (regenerate: cargo run -- generate completions SHELL --out contrib/completions)"
        );
    }
    let o = hasync()
        .args(["generate", "completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn profiles_packaged_example_config_is_the_wazo_profile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let value = |p: &Path| -> toml::Value { toml::from_str(&read(p)).unwrap() };
    assert_eq!(
        value(&root.join("contrib/hasync.toml")),
        value(&root.join("profiles/wazo.toml")),
        "contrib/hasync.toml (the package's /etc/hasync/hasync.toml) must stay a copy of profiles/wazo.toml"
    );
    let o = hasync()
        .arg("-c")
        .arg(root.join("contrib/hasync.toml"))
        .arg("cron")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The Debian metadata installs what exists.
    let cargo: toml::Value = toml::from_str(&read(&root.join("Cargo.toml"))).unwrap();
    let assets = cargo["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap();
    for a in assets {
        let src = a[0].as_str().unwrap();
        if src.starts_with("target/") {
            continue;
        }
        let dir = root.join(Path::new(src).parent().unwrap());
        let pattern = Path::new(src).file_name().unwrap().to_str().unwrap();
        let found = std::fs::read_dir(&dir).unwrap().any(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            match pattern.split_once('*') {
                Some((pre, suf)) => n.starts_with(pre) && n.ends_with(suf),
                None => n == pattern,
            }
        });
        assert!(found, "package asset {src} does not exist");
    }
}

/// The IP argument of Wazo's scripts (`--peer-address`) over real SSH: the config's peer
/// host is replaced, its user and port kept.
#[test]
fn profiles_wazo_ip_argument_replaces_the_ssh_peer_host() {
    let sshd = crate::sshd::Sshd::shared();
    let w = Wazo::new();
    w.ha_conf("master");
    let kh = w.dir.path().join("known_hosts");
    sshd.write_known_hosts(&kh);
    let mut doc: toml_edit::DocumentMut = read(&w.cfg()).parse().unwrap();
    let node = doc["node"].as_table_mut().unwrap();
    // 192.0.2.1 (TEST-NET-1) is never reached: the argument says 127.0.0.1.
    node["peer"] = toml_edit::value(format!("root@192.0.2.1:{}", sshd.port));
    node["peer_root"] = toml_edit::value(w.slave().display().to_string());
    node["identity"] = toml_edit::value(sshd.client_key.display().to_string());
    node["known_hosts"] = toml_edit::value(kh.display().to_string());
    node["remote_path"] = toml_edit::value(bin().display().to_string());
    node["timeout"] = toml_edit::value("5s");
    std::fs::write(w.cfg(), doc.to_string()).unwrap();
    let o = w.run(&["--peer-address", "127.0.0.1", "sync", "asterisk"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        w.slave()
            .join("etc/asterisk/extensions_extra.d/a.conf")
            .exists()
    );
    let o = w.run(&["--peer-address", "not a host", "sync"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// On a Wazo node ha.conf is the truth: demote and promote rewrite its `node_type`
/// (keeping `remote_address`) and the sentinels, as Wazo's HA endpoint does, and the
/// jobs follow at once; a role.json left by promote never overrides a later ha.conf.
#[test]
fn profiles_wazo_promote_and_demote_rewrite_ha_conf_and_the_sentinels() {
    let w = Wazo::new();
    w.ha_conf("master");
    let ha = w.root().join("etc/xivo/ha.conf");
    let sentinels = w.root().join("var/lib/wazo");
    let node_type = || {
        let v: serde_json::Value = serde_json::from_str(&read(&ha)).unwrap();
        assert_eq!(v["remote_address"], "10.9.9.9", "{v}");
        v["node_type"].as_str().unwrap().to_string()
    };
    let o = w.run(&["demote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(node_type(), "slave");
    assert!(sentinels.join("is-secondary").exists() && !sentinels.join("is-primary").exists());
    let o = w.run(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&st["role"], &st["role_source"]),
        (&"slave".into(), &"ha_conf".into()),
        "{st}"
    );
    let o = w.run(&["sync"]);
    assert!(text(&o).contains("skipped"), "{}", text(&o));

    let o = w.run(&["promote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(node_type(), "master");
    assert!(sentinels.join("is-primary").exists() && !sentinels.join("is-secondary").exists());
    // Wazo's own tools change ha.conf later: hasync follows ha.conf, not its role.json.
    w.ha_conf("slave");
    let o = w.run(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["role"], "slave", "{st}");
}
