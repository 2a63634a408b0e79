use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const FILE: &str = "/etc/hasync/hasync.toml";

/// The sample of INTERFACE.md, with real hook commands.
const SAMPLE: &str = r#"[node]
role = "master"
peer = "root@10.0.0.2"
identity = "/root/.ssh/hasync_ed25519"
known_hosts = "/var/lib/hasync/known_hosts"
remote_path = "hasync"
state_dir = "/var/lib/hasync"
sentinel_dir = "/var/lib/wazo"
root = "/"
peer_root = "/"

[[sync]]
name = "asterisk"
paths = ["/etc/asterisk/extensions_extra.d", "/var/lib/asterisk/moh"]
exclude = ["*.swp", "monitor/", "recording/"]
direction = "push"
delete = true
schedule = "hourly"

[db]
kind = "postgres"
database = "asterisk"
schema = "public"
exclude_tables = ["call_log", "cel", "queue_log"]
user = "postgres"
schedule = "hourly"

[services]
units = ["asterisk.service", "monit.service"]

[check_master]
address = "10.0.0.1"
probes = ["icmp", "tcp:5060", "http://10.0.0.1:9486/health"]
interval = "2s"
fail_after = 3
recover_after = 5
witness = ["10.0.0.254"]

[hooks]
on_failure = "mail -s hasync root"
on_failover = "logger failover"
on_failback = "logger failback"

[daemon]
metrics_listen = "127.0.0.1:9469"
"#;

const NODE: &str = "[node]\nrole = \"master\"\npeer = \"local\"\n";

fn ok(text: &str) -> Config {
    parse(text, Path::new(FILE)).unwrap_or_else(|e| panic!("should parse: {e}"))
}

/// Parses `text`, expects an error at `line` about `key`, returns the message.
fn err_at(text: &str, line: usize, key: &str) -> String {
    let e = parse(text, Path::new(FILE)).expect_err("should be refused");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{FILE}:{line}:")),
        "wrong file or line: {msg}"
    );
    assert!(
        msg.contains(&format!("\"{key}\"")),
        "key {key:?} not named: {msg}"
    );
    assert!(msg.contains('('), "no advice: {msg}");
    let d = e.diagnostic().expect("a diagnostic");
    assert_eq!(d.line, Some(line));
    assert_eq!(d.key.as_deref(), Some(key), "{msg}");
    msg
}

#[test]
fn sample_parses_with_every_field() {
    let c = ok(SAMPLE);
    assert_eq!(c.path, PathBuf::from(FILE));
    let n = &c.node;
    assert_eq!(n.role, Role::Master);
    assert_eq!(n.role_from, None);
    assert_eq!(
        n.peer,
        Peer::Ssh {
            user: Some("root".into()),
            host: "10.0.0.2".into(),
            port: None
        }
    );
    assert_eq!(
        n.identity.as_deref(),
        Some(Path::new("/root/.ssh/hasync_ed25519"))
    );
    assert_eq!(
        n.known_hosts.as_deref(),
        Some(Path::new("/var/lib/hasync/known_hosts"))
    );
    assert_eq!(n.remote_path, "hasync");
    assert_eq!(n.state_dir, Path::new("/var/lib/hasync"));
    assert_eq!(n.sentinel_dir, Path::new("/var/lib/wazo"));
    assert_eq!(
        (n.root.as_path(), n.peer_root.as_path()),
        (Path::new("/"), Path::new("/"))
    );

    assert_eq!(c.sync.len(), 1);
    let j = &c.sync[0];
    assert_eq!(j.name, "asterisk");
    assert_eq!(
        j.paths,
        [
            PathBuf::from("/etc/asterisk/extensions_extra.d"),
            PathBuf::from("/var/lib/asterisk/moh")
        ]
    );
    assert_eq!(j.exclude, ["*.swp", "monitor/", "recording/"]);
    assert_eq!(j.direction, Direction::Push);
    assert!(j.delete && !j.checksum && !j.allow_empty_source);
    assert_eq!((j.max_delete, &j.schedule), (None, &Schedule::Hourly));

    let db = c.db.as_ref().unwrap();
    assert_eq!(db.kind, DbKind::Postgres);
    assert_eq!(
        (db.database.as_str(), db.schema.as_str()),
        ("asterisk", "public")
    );
    assert_eq!(db.exclude_tables, ["call_log", "cel", "queue_log"]);
    assert_eq!(
        (db.user.as_str(), &db.schedule, db.with_schema),
        ("postgres", &Schedule::Hourly, false)
    );

    let s = c.services.as_ref().unwrap();
    assert_eq!(s.units, ["asterisk.service", "monit.service"]);
    assert!(s.start.is_empty() && s.stop.is_empty() && s.status.is_none());

    let cm = c.check_master.as_ref().unwrap();
    assert_eq!(cm.address, "10.0.0.1");
    assert_eq!(
        cm.probes,
        ["icmp", "tcp:5060", "http://10.0.0.1:9486/health"]
    );
    assert_eq!(
        (cm.interval, cm.fail_after, cm.recover_after),
        (Duration::from_secs(2), 3, 5)
    );
    assert_eq!(cm.witness, ["10.0.0.254"]);

    assert_eq!(c.hooks.on_failure.as_deref(), Some("mail -s hasync root"));
    assert_eq!(c.hooks.on_failover.as_deref(), Some("logger failover"));
    assert_eq!(c.hooks.on_failback.as_deref(), Some("logger failback"));
    assert_eq!(c.daemon.metrics_listen.as_deref(), Some("127.0.0.1:9469"));
    assert_eq!(c.job("asterisk"), Some(j));
    assert_eq!(c.job("nope"), None);
}

#[test]
fn defaults_of_a_minimal_config() {
    let c = ok(NODE);
    let n = &c.node;
    assert_eq!((n.role, &n.peer), (Role::Master, &Peer::Local));
    assert_eq!((n.identity.clone(), n.known_hosts.clone()), (None, None));
    assert_eq!(n.remote_path, "hasync");
    assert_eq!(n.state_dir, Path::new("/var/lib/hasync"));
    assert_eq!(n.sentinel_dir, Path::new("/var/lib/hasync"));
    assert_eq!(
        (n.root.as_path(), n.peer_root.as_path()),
        (Path::new("/"), Path::new("/"))
    );
    assert!(
        c.sync.is_empty() && c.db.is_none() && c.services.is_none() && c.check_master.is_none()
    );
    assert_eq!((c.hooks, c.daemon), (Hooks::default(), Daemon::default()));
}

#[test]
fn defaults_of_each_table() {
    let c = ok(&format!(
        "{NODE}[[sync]]\nname = \"a\"\npaths = [\"/srv/a/\"]\n[db]\nkind = \"postgres\"\ndatabase = \"x\"\n\
         [services]\nstart = [\"s\"]\nstop = [\"t\"]\n[check_master]\naddress = \"m\"\n"
    ));
    let j = &c.sync[0];
    assert_eq!(
        j.paths,
        [PathBuf::from("/srv/a")],
        "trailing slash normalised"
    );
    assert!(j.exclude.is_empty() && j.delete && !j.checksum && !j.allow_empty_source);
    assert_eq!(
        (j.direction, &j.schedule, j.max_delete),
        (Direction::Push, &Schedule::Manual, None)
    );
    let db = c.db.unwrap();
    assert_eq!(
        (db.schema.as_str(), db.user.as_str()),
        ("public", "postgres")
    );
    assert_eq!(
        (&db.schedule, db.with_schema, db.exclude_tables.len()),
        (&Schedule::Hourly, false, 0)
    );
    let s = c.services.unwrap();
    assert_eq!(
        (s.timeout, s.status, s.units.len()),
        (Duration::from_secs(60), None, 0)
    );
    let cm = c.check_master.unwrap();
    assert_eq!(cm.probes, ["icmp"]);
    assert_eq!(
        (cm.interval, cm.timeout, cm.hold_down),
        (
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(30)
        )
    );
    assert_eq!(
        (cm.fail_after, cm.recover_after, cm.mode),
        (3, 5, ProbeMode::All)
    );
    assert!(cm.witness.is_empty());
}

#[test]
fn every_optional_value_is_read() {
    let c = ok(&format!(
        "{NODE}[[sync]]\nname = \"b.1-x_y\"\npaths = [\"/srv/b\"]\ndirection = \"pull\"\ndelete = false\n\
         checksum = true\nmax_delete = 10\nschedule = \"*/5 * * * MON-FRI\"\nallow_empty_source = true\nnumeric_ids = true\n\
         [db]\nkind = \"postgres\"\ndatabase = \"x\"\nexclude_tables = [\"s.t\", \"_u$\"]\nwith_schema = true\nschedule = \"minutely\"\n\
         [services]\nstart = [\"a\", \"b\"]\nstop = [\"c\"]\nstatus = \"d\"\ntimeout = \"1m30s\"\n\
         [check_master]\naddress = \"m\"\ntimeout = \"500ms\"\nhold_down = \"1h\"\nmode = \"any\"\n"
    ));
    let j = &c.sync[0];
    assert_eq!(
        (j.direction, j.delete, j.checksum, j.max_delete),
        (Direction::Pull, false, true, Some(10))
    );
    assert_eq!(j.schedule, Schedule::Cron("*/5 * * * MON-FRI".into()));
    assert!(j.allow_empty_source && j.numeric_ids);
    assert!(!ok(&format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\n")).sync[0].numeric_ids);
    let db = c.db.unwrap();
    assert_eq!(
        (db.exclude_tables.len(), db.with_schema, db.schedule),
        (2, true, Schedule::Minutely)
    );
    let s = c.services.unwrap();
    assert_eq!(
        (s.start.len(), s.stop.len(), s.status.as_deref()),
        (2, 1, Some("d"))
    );
    assert_eq!(s.timeout, Duration::from_secs(90));
    let cm = c.check_master.unwrap();
    assert_eq!(
        (cm.timeout, cm.hold_down, cm.mode),
        (
            Duration::from_millis(500),
            Duration::from_secs(3600),
            ProbeMode::Any
        )
    );
}

#[test]
fn relative_node_paths_resolve_against_the_config_directory() {
    let text = "[node]\nrole_from = \"wazo\"\npeer = \"local\"\nroot = \"master\"\npeer_root = \"./slave\"\n\
                state_dir = \"state\"\nsentinel_dir = \"/abs\"\nidentity = \"keys/id\"\nknown_hosts = \"kh\"\n";
    let c = parse(text, Path::new("demo/master.toml")).unwrap();
    let n = &c.node;
    assert_eq!(
        (n.role, n.role_from.as_deref()),
        (Role::Disabled, Some("wazo"))
    );
    assert_eq!(n.root, Path::new("demo/master"));
    assert_eq!(n.peer_root, Path::new("demo/./slave"));
    assert_eq!(n.state_dir, Path::new("demo/state"));
    assert_eq!(n.sentinel_dir, Path::new("/abs"));
    assert_eq!(n.identity.as_deref(), Some(Path::new("demo/keys/id")));
    assert_eq!(n.known_hosts.as_deref(), Some(Path::new("demo/kh")));
    // A config named without a directory keeps relative paths relative.
    let c = parse(text, Path::new("master.toml")).unwrap();
    assert_eq!(c.node.root, Path::new("master"));
}

#[test]
fn local_and_peer_paths_join_under_the_roots() {
    let c = ok(
        "[node]\nrole = \"slave\"\npeer = \"local\"\nroot = \"/tmp/a\"\npeer_root = \"/tmp/b\"\n",
    );
    assert_eq!(
        c.local_path(Path::new("/etc/asterisk")),
        Path::new("/tmp/a/etc/asterisk")
    );
    assert_eq!(
        c.peer_path(Path::new("/etc/asterisk")),
        Path::new("/tmp/b/etc/asterisk")
    );
    assert_eq!(
        c.local_path(Path::new("/../../etc/x")),
        Path::new("/tmp/a/etc/x"),
        "never above root"
    );
    let c = ok(NODE);
    assert_eq!(
        c.local_path(Path::new("/etc/asterisk")),
        Path::new("/etc/asterisk")
    );
}

#[test]
fn peers_parse_and_print() {
    let ssh = |user: Option<&str>, host: &str, port| Peer::Ssh {
        user: user.map(Into::into),
        host: host.into(),
        port,
    };
    for (text, peer) in [
        ("local", Peer::Local),
        ("10.0.0.2", ssh(None, "10.0.0.2", None)),
        (
            "root@slave.example:2222",
            ssh(Some("root"), "slave.example", Some(2222)),
        ),
        ("root@[fe80::2]:22", ssh(Some("root"), "fe80::2", Some(22))),
        ("[::1]", ssh(None, "::1", None)),
        ("admin@fe80::2", ssh(Some("admin"), "fe80::2", None)),
    ] {
        assert_eq!(text.parse::<Peer>().as_ref(), Ok(&peer), "{text}");
        assert_eq!(peer.to_string().parse::<Peer>(), Ok(peer));
    }
    for bad in [
        "",
        "@h",
        "a@b@c",
        "h:0",
        "h:99999",
        "h:x",
        "[fe80::1",
        "[h]:1",
        "root@10.0.0.2:/x",
        "a b",
    ] {
        assert!(bad.parse::<Peer>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn missing_file_says_how_to_point_at_one() {
    let e = load(Path::new("/nonexistent/hasync.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read config /nonexistent/hasync.toml: No such file or directory (pass --config FILE or set HASYNC_CONFIG)"
    );
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hasync.toml");
    std::fs::write(&path, format!("{NODE}root = \"r\"\n")).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.path, path);
    assert_eq!(c.node.root, dir.path().join("r"));
}

#[test]
fn toml_syntax_errors_give_line_and_column() {
    let e = parse("[node]\nrole = \"master\"\npeer = local\n", Path::new(FILE)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{FILE}:3:8: TOML syntax error")),
        "{msg}"
    );
    let e = parse(&format!("{NODE}role = \"slave\"\n"), Path::new(FILE)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{FILE}:4:1: TOML syntax error")),
        "{e}"
    );
}

#[test]
fn unknown_keys_name_the_table_and_the_valid_keys() {
    let msg = err_at(&format!("{NODE}rolle = \"x\"\n"), 4, "rolle");
    assert!(
        msg.contains("[node] key") && msg.contains("`role_from`"),
        "{msg}"
    );
    let text = format!(
        "{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\n[[sync]]\nname = \"b\"\npaths = [\"/b\"]\n  exlude = []\n"
    );
    let msg = err_at(&text, 10, "exlude");
    assert!(
        msg.contains(&format!("{FILE}:10:3: [[sync]] #2 key")) && msg.contains("`exclude`"),
        "{msg}"
    );
    let msg = err_at(
        &format!("{NODE}[checkmaster]\naddress = \"x\"\n"),
        4,
        "checkmaster",
    );
    assert!(
        msg.starts_with(&format!("{FILE}:4:1: top-level key")),
        "header, not inside it: {msg}"
    );
    assert!(msg.contains("`check_master`"), "{msg}");
}

#[test]
fn wrong_types_and_missing_keys_are_located() {
    let msg = err_at(
        &format!("{NODE}[check_master]\naddress = \"m\"\ninterval = 2\n"),
        6,
        "interval",
    );
    assert!(
        msg.contains("[check_master] key") && msg.contains("\"2s\""),
        "{msg}"
    );
    err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = \"/a\"\n"),
        6,
        "paths",
    );
    let msg = err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\n[[sync]]\npaths = [\"/b\"]\n"),
        7,
        "name",
    );
    assert!(
        msg.contains("[[sync]] #2 key") && msg.contains("missing"),
        "{msg}"
    );
    err_at("[node]\nrole = \"master\"\n", 1, "peer");
    err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\nmax_delete = -1\n"),
        7,
        "max_delete",
    );
}

#[test]
fn relative_sync_path_is_refused() {
    let text = format!(
        "{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\n\n[[sync]]\nname = \"b\"\npaths = [\n  \"/b\",\n  \"etc/asterisk\",\n]\n"
    );
    let msg = err_at(&text, 12, "paths");
    assert_eq!(
        msg,
        format!(
            "{FILE}:12:3: [[sync]] #2 key \"paths\": \"etc/asterisk\" is not an absolute path (write it as it is on the node, e.g. \"/etc/asterisk\")"
        )
    );
}

#[test]
fn dotdot_and_root_sync_paths_are_refused() {
    let msg = err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/etc/../srv\"]\n"),
        6,
        "paths",
    );
    assert!(msg.contains("\"..\""), "{msg}");
    let msg = err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/\"]\n"),
        6,
        "paths",
    );
    assert!(msg.contains("whole file system"), "{msg}");
}

#[test]
fn empty_paths_are_refused() {
    let msg = err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = []\n"),
        6,
        "paths",
    );
    assert!(msg.contains("is empty"), "{msg}");
}

#[test]
fn job_names_must_be_unique_and_plain() {
    let text = format!(
        "{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\n[[sync]]\nname = \"a\"\npaths = [\"/b\"]\n"
    );
    let msg = err_at(&text, 8, "name");
    assert!(msg.contains("[[sync]] #1, line 5"), "{msg}");
    for bad in ["", "my job", "a/b", ".hidden", "-x", "é"] {
        err_at(
            &format!("{NODE}[[sync]]\nname = {bad:?}\npaths = [\"/a\"]\n"),
            5,
            "name",
        );
    }
}

#[test]
fn overlapping_paths_are_refused() {
    let two = |a: &str, b: &str| {
        format!(
            "{NODE}[[sync]]\nname = \"one\"\npaths = [{a:?}]\n[[sync]]\nname = \"two\"\npaths = [{b:?}]\n"
        )
    };
    let msg = err_at(&two("/etc/asterisk", "/etc/asterisk/x"), 9, "paths");
    assert!(
        msg.contains("is inside \"/etc/asterisk\" of job \"one\" ([[sync]] #1, line 6)"),
        "{msg}"
    );
    let msg = err_at(&two("/etc/asterisk/x", "/etc/asterisk/"), 9, "paths");
    assert!(msg.contains("contains"), "{msg}");
    let msg = err_at(&two("/srv/a", "/srv/./a"), 9, "paths");
    assert!(msg.contains("is also"), "{msg}");
    // Siblings sharing a name prefix do not overlap.
    ok(&two("/srv/a", "/srv/ab"));
    let msg = err_at(
        &format!("{NODE}[[sync]]\nname = \"one\"\npaths = [\"/srv\",\n \"/srv/a\"]\n"),
        7,
        "paths",
    );
    assert!(msg.contains("earlier in this job"), "{msg}");
}

#[test]
fn schedules_parse_or_explain() {
    for (s, want) in [
        ("hourly", Schedule::Hourly),
        ("minutely", Schedule::Minutely),
        ("watch", Schedule::Watch),
        ("manual", Schedule::Manual),
        ("0 * * * *", Schedule::Cron("0 * * * *".into())),
        (
            "0  0 1,15 jan-jun SUN",
            Schedule::Cron("0 0 1,15 jan-jun SUN".into()),
        ),
        ("0 */10 * * * *", Schedule::Cron("0 */10 * * * *".into())),
        ("@hourly", Schedule::Cron("@hourly".into())),
        ("0 12 * * 7", Schedule::Cron("0 12 * * 7".into())),
    ] {
        assert_eq!(s.parse::<Schedule>(), Ok(want.clone()), "{s}");
        assert_eq!(want.to_string().parse::<Schedule>(), Ok(want));
    }
    for bad in [
        "Hourly",
        "daily",
        "* * * *",
        "* * * * * * *",
        "0 0 30 2 *",
        "@reboot",
        "0 * * * FOO",
        "0 * * * ?",
        "0 *, * * *",
        "*/ * * * *",
    ] {
        assert!(bad.parse::<Schedule>().is_err(), "{bad:?} accepted");
    }
    let msg = err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\nschedule = \"* * * *\"\n"),
        7,
        "schedule",
    );
    assert!(msg.contains("5 or 6 fields"), "{msg}");
}

#[test]
fn db_watch_schedule_with_min_interval_and_safety_pass() {
    let db = |extra: &str| {
        format!("{NODE}[db]\nkind = \"postgres\"\ndatabase = \"d\"\nschedule = \"watch\"\n{extra}")
    };
    let c = ok(&db(""));
    let j = c.db.unwrap();
    assert_eq!(
        (&j.schedule, j.min_interval, &j.safety_pass),
        (&Schedule::Watch, super::DB_MIN_INTERVAL, &Schedule::Hourly)
    );
    let c = ok(&db("min_interval = \"2s\"\nsafety_pass = \"manual\"\n"));
    let j = c.db.unwrap();
    assert_eq!(
        (j.min_interval, &j.safety_pass),
        (Duration::from_secs(2), &Schedule::Manual)
    );
    let msg = err_at(&db("min_interval = \"often\"\n"), 8, "min_interval");
    assert!(msg.contains("often"), "{msg}");
    let msg = err_at(&db("safety_pass = \"watch\"\n"), 8, "safety_pass");
    assert!(msg.contains("cannot be"), "{msg}");
}

#[test]
fn durations_parse_or_explain() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    for bad in [
        "",
        "2",
        "s",
        "2 s",
        "1.5s",
        "2sec",
        "-1s",
        "99999999999999999999s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
    let msg = err_at(
        &format!("{NODE}[check_master]\naddress = \"m\"\nhold_down = \"30\"\n"),
        6,
        "hold_down",
    );
    assert!(msg.contains("\"500ms\""), "{msg}");
    err_at(
        &format!("{NODE}[services]\nunits = [\"u\"]\ntimeout = \"1 m\"\n"),
        6,
        "timeout",
    );
    err_at(
        &format!("{NODE}[check_master]\naddress = \"m\"\ninterval = \"0s\"\n"),
        6,
        "interval",
    );
}

#[test]
fn zero_counts_are_refused() {
    let msg = err_at(
        &format!("{NODE}[check_master]\naddress = \"m\"\nfail_after = 0\n"),
        6,
        "fail_after",
    );
    assert!(msg.contains("1 or more"), "{msg}");
    err_at(
        &format!("{NODE}[check_master]\naddress = \"m\"\n\nrecover_after = 0\n"),
        7,
        "recover_after",
    );
}

#[test]
fn services_are_units_or_commands() {
    let msg = err_at(
        &format!("{NODE}[services]\nunits = [\"a.service\"]\nstop = [\"x\"]\n"),
        6,
        "stop",
    );
    assert!(msg.contains("not both"), "{msg}");
    let msg = err_at(&format!("{NODE}[services]\nstart = [\"x\"]\n"), 4, "stop");
    assert!(msg.contains("missing"), "{msg}");
    let e = parse(
        &format!("{NODE}\n[services]\ntimeout = \"5s\"\n"),
        Path::new(FILE),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{FILE}:5:1: [services]: names no services")),
        "{e}"
    );
}

#[test]
fn roles_are_checked() {
    let msg = err_at("[node]\nrole = \"primary\"\npeer = \"local\"\n", 2, "role");
    assert!(
        msg.contains("\"master\", \"slave\" or \"disabled\""),
        "{msg}"
    );
    err_at(
        "[node]\nrole = \"master\"\nrole_from = \"wazo\"\npeer = \"local\"\n",
        3,
        "role_from",
    );
    err_at(
        "[node]\nrole_from = \"xivo\"\npeer = \"local\"\n",
        2,
        "role_from",
    );
    err_at("\n[node]\npeer = \"local\"\n", 2, "role");
}

#[test]
fn unparsable_peer_is_refused() {
    let msg = err_at(
        "[node]\nrole = \"master\"\npeer = \"root@10.0.0.2:ssh\"\n",
        3,
        "peer",
    );
    assert!(msg.contains("[user@]host[:port]"), "{msg}");
}

#[test]
fn peer_root_may_not_escape() {
    const SSH: &str = "[node]\nrole = \"master\"\npeer = \"root@10.0.0.2\"\n";
    let msg = err_at(
        &format!("{SSH}peer_root = \"/srv/../etc\"\n"),
        4,
        "peer_root",
    );
    assert!(msg.contains("escapes"), "{msg}");
    let msg = err_at(&format!("{SSH}peer_root = \"slave\"\n"), 4, "peer_root");
    assert!(msg.contains("relative"), "{msg}");
    let c = ok(&format!("{NODE}peer_root = \"../slave\"\n"));
    assert_eq!(c.node.peer_root, Path::new("/etc/slave"));
    err_at(&format!("{NODE}root = \"\"\n"), 4, "root");
    let c = ok(&format!(
        "{NODE}root = \"../master\"\npeer_root = \"slave\"\n"
    ));
    assert_eq!(c.node.root, Path::new("/etc/master"));
    assert_eq!(c.node.peer_root, Path::new("/etc/hasync/slave"));
}

#[test]
fn db_kind_and_table_names_are_checked() {
    let db =
        |extra: &str| format!("{NODE}[db]\nkind = \"postgres\"\ndatabase = \"asterisk\"\n{extra}");
    err_at(
        &format!("{NODE}[db]\nkind = \"mysql\"\ndatabase = \"asterisk\"\n"),
        5,
        "kind",
    );
    let msg = err_at(
        &db("exclude_tables = [\"cel\", \"call log\"]\n"),
        7,
        "exclude_tables",
    );
    assert!(msg.contains("\"call log\""), "{msg}");
    err_at(&db("exclude_tables = [\"a.b.c\"]\n"), 7, "exclude_tables");
    err_at(&db("exclude_tables = [\"1abc\"]\n"), 7, "exclude_tables");
    err_at(&db("schema = \"pub-lic\"\n"), 7, "schema");
    assert_eq!(
        ok(&db("exclude_tables = [\"public.cel\"]\n"))
            .db
            .unwrap()
            .exclude_tables,
        ["public.cel"]
    );
}

#[test]
fn db_connection_keys_default_and_are_checked() {
    let db =
        |extra: &str| format!("{NODE}[db]\nkind = \"postgres\"\ndatabase = \"asterisk\"\n{extra}");
    let d = ok(&db("")).db.unwrap();
    assert_eq!(
        (d.host, d.port, d.run_as, d.bin_dir),
        (None, None, None, None)
    );
    let d = ok(&db(
        "host = \"/run/postgresql\"\nport = 5433\nrun_as = \"postgres\"\nbin_dir = \"/usr/lib/postgresql/15/bin\"\n",
    ))
    .db
    .unwrap();
    assert_eq!(
        (d.host.as_deref(), d.port, d.run_as.as_deref()),
        (Some("/run/postgresql"), Some(5433), Some("postgres"))
    );
    assert_eq!(d.bin_dir.unwrap(), Path::new("/usr/lib/postgresql/15/bin"));
    err_at(&db("port = 0\n"), 7, "port");
    err_at(&db("host = \" \"\n"), 7, "host");
    err_at(&db("run_as = \"\"\n"), 7, "run_as");
    err_at(&db("bin_dir = \"bin\"\n"), 7, "bin_dir");
}

#[test]
fn probes_listen_address_and_hooks_are_checked() {
    let cm = |extra: &str| format!("{NODE}[check_master]\naddress = \"m\"\n{extra}");
    let msg = err_at(&cm("probes = [\"icmp\", \"udp:53\"]\n"), 6, "probes");
    assert!(msg.contains("\"tcp:PORT\""), "{msg}");
    err_at(&cm("probes = [\"tcp:0\"]\n"), 6, "probes");
    err_at(&cm("probes = []\n"), 6, "probes");
    err_at(&cm("mode = \"most\"\n"), 6, "mode");
    err_at(
        &format!("{NODE}[daemon]\nmetrics_listen = \"localhost\"\n"),
        5,
        "metrics_listen",
    );
    err_at(
        &format!("{NODE}[hooks]\non_failover = \" \"\n"),
        5,
        "on_failover",
    );
}

#[test]
fn inline_tables_are_located_too() {
    let text = "node = { role = \"master\", peer = \"local\" }\nsync = [\n  { name = \"a\", paths = [\"/a\"] },\n  { name = \"b\", paths = [\"b\"] },\n]\n";
    let msg = err_at(text, 4, "paths");
    assert!(msg.contains("[[sync]] #2 key"), "{msg}");
}

#[test]
fn copy_back_paths_and_cmd_probes() {
    let cm = |extra: &str| format!("{NODE}[check_master]\naddress = \"m\"\n{extra}");
    let c = ok(&cm(
        "probes = [\"cmd:systemctl is-active asterisk\", \"tcp:5060\"]\ncopy_back = [\"/var/spool/asterisk/voicemail/\"]\n",
    ));
    let m = c.check_master.unwrap();
    assert_eq!(m.probes[0], "cmd:systemctl is-active asterisk");
    assert_eq!(
        m.copy_back,
        vec![PathBuf::from("/var/spool/asterisk/voicemail")]
    );
    assert!(ok(&cm("")).check_master.unwrap().copy_back.is_empty());
    err_at(&cm("probes = [\"cmd: \"]\n"), 6, "probes");
    err_at(&cm("copy_back = [\"voicemail\"]\n"), 6, "copy_back");
    err_at(&cm("copy_back = [\"/\"]\n"), 6, "copy_back");
    err_at(&cm("copy_back = [\"/a/../b\"]\n"), 6, "copy_back");
}

#[test]
fn daemon_keys_jitter_and_safety_pass() {
    let c = ok(&format!(
        "{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\nschedule = \"watch\"\njitter = \"30s\"\n\
         [[sync]]\nname = \"b\"\npaths = [\"/b\"]\nschedule = \"*/2 * * * * *\"\nsafety_pass = \"manual\"\n\
         [daemon]\ntimezone = \"local\"\nretry_min = \"1s\"\nretry_max = \"10s\"\n"
    ));
    assert_eq!(c.sync[0].jitter, Duration::from_secs(30));
    assert_eq!(c.sync[0].safety_pass, Schedule::Hourly);
    assert_eq!(c.sync[1].safety_pass, Schedule::Manual);
    assert_eq!(
        c.daemon.timezone,
        crate::node::schedule::TimeZoneChoice::Local
    );
    assert_eq!(
        (c.daemon.retry_min, c.daemon.retry_max),
        (Duration::from_secs(1), Duration::from_secs(10))
    );
    let msg = err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\nschedule = \"61 * * * *\"\n"),
        7,
        "schedule",
    );
    assert!(msg.contains("out of range for the minute"), "{msg}");
    let msg = err_at(
        &format!(
            "{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\ndirection = \"pull\"\nschedule = \"watch\"\n"
        ),
        8,
        "schedule",
    );
    assert!(msg.contains("push"), "{msg}");
    let msg = err_at(
        &format!("{NODE}[daemon]\ntimezone = \"Europe/Paris\"\n"),
        5,
        "timezone",
    );
    assert!(msg.contains("local"), "{msg}");
    let msg = err_at(
        &format!("{NODE}[daemon]\nretry_min = \"1m\"\nretry_max = \"1s\"\n"),
        6,
        "retry_max",
    );
    assert!(msg.contains("retry_min"), "{msg}");
    err_at(
        &format!("{NODE}[[sync]]\nname = \"a\"\npaths = [\"/a\"]\njitter = \"soon\"\n"),
        7,
        "jitter",
    );
}

#[test]
fn peer_config_is_relative_to_the_config_and_only_for_a_local_peer() {
    let c = parse(
        "[node]\nrole = \"master\"\npeer = \"local\"\npeer_config = \"slave.toml\"\n",
        Path::new("/srv/pair/master.toml"),
    )
    .unwrap();
    assert_eq!(
        c.node.peer_config,
        Some(PathBuf::from("/srv/pair/slave.toml"))
    );
    let e = err_at(
        "[node]\nrole = \"master\"\npeer = \"root@10.0.0.2\"\npeer_config = \"slave.toml\"\n",
        4,
        "peer_config",
    );
    assert!(e.contains("local peer"), "{e}");
    let db = ok("[node]\nrole = \"master\"\npeer = \"local\"\n[db]\nkind = \"postgres\"\ndatabase = \"a\"\nmaster_chooses_slave_db = true\n")
        .db
        .unwrap();
    assert!(db.master_chooses_slave_db);
}

#[test]
fn compress_and_bwlimit_in_node_and_sync() {
    let c = ok(&format!(
        "{NODE}compress = \"off\"\nbwlimit = \"2M\"\n[[sync]]\nname = \"a\"\npaths = [\"/a\"]\n\
         compress = 9\nbwlimit = 500\n[[sync]]\nname = \"b\"\npaths = [\"/b\"]\n"
    ));
    assert_eq!((c.node.compress, c.node.bwlimit), (Compress::Off, 2 << 20));
    assert_eq!(c.sync[0].compress, Some(Compress::Level(9)));
    assert_eq!(c.sync[0].bwlimit, Some(500 * 1024));
    assert_eq!((c.sync[1].compress, c.sync[1].bwlimit), (None, None));
    let d = ok(NODE);
    assert_eq!((d.node.compress, d.node.bwlimit), (Compress::Auto, 0));
    let lines = NODE.lines().count();
    let m = err_at(
        &format!("{NODE}compress = \"max\"\n"),
        lines + 1,
        "compress",
    );
    assert!(m.contains("zstd level"), "{m}");
    let m = err_at(&format!("{NODE}bwlimit = \"fast\"\n"), lines + 1, "bwlimit");
    assert!(m.contains("KiB/s"), "{m}");
}

const FAN_OUT: &str = "[node]\nrole = \"master\"\npeer_root = \"/srv\"\nremote_path = \"/usr/bin/hasync\"\n\
    [[peer]]\nname = \"b\"\naddress = \"root@10.0.0.2\"\n\
    [[peer]]\nname = \"c\"\naddress = \"admin@10.0.0.3:2222\"\npeer_root = \"/\"\n";

#[test]
fn peer_tables_name_each_standby_and_inherit_the_node_defaults() {
    let c = ok(FAN_OUT);
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.peers[0].name, "b");
    assert_eq!(c.peers[0].peer_root, PathBuf::from("/srv"));
    assert_eq!(c.peers[0].remote_path, "/usr/bin/hasync");
    assert_eq!(c.peers[1].peer.to_string(), "admin@10.0.0.3:2222");
    assert_eq!(c.peers[1].peer_root, PathBuf::from("/"));
    // [node] holds the first peer, for code that talks to one peer at a time.
    assert_eq!(c.node.peer, c.peers[0].peer);
    let each = c.per_peer();
    assert_eq!(each.len(), 2);
    assert_eq!(each[1].node.peer_name.as_deref(), Some("c"));
    assert_eq!(each[1].node.peer, c.peers[1].peer);
    assert_eq!(
        each[1].peer_path(Path::new("/etc/x")),
        PathBuf::from("/etc/x")
    );
    assert_eq!(
        each[0].peer_path(Path::new("/etc/x")),
        PathBuf::from("/srv/etc/x")
    );
    assert_eq!(each[1].unit_name("web"), "web@c");
    // One peer in [node]: one config, its jobs keep their names.
    let one = ok(NODE);
    assert!(one.peers.is_empty());
    assert_eq!(one.per_peer(), vec![one.clone()]);
    assert_eq!(one.unit_name("web"), "web");
}

#[test]
fn peer_tables_are_refused_with_node_peer_a_duplicate_or_a_bad_name() {
    let both = format!("{NODE}[[peer]]\nname = \"b\"\naddress = \"root@10.0.0.2\"\n");
    let msg = err_at(&both, 3, "peer");
    assert!(msg.contains("[[peer]] tables"), "{msg}");
    let dup = format!("{FAN_OUT}[[peer]]\nname = \"b\"\naddress = \"root@10.0.0.4\"\n");
    let msg = err_at(&dup, 13, "name");
    assert!(
        msg.contains("already the name of [[peer]] number 1"),
        "{msg}"
    );
    let bad = FAN_OUT.replace("name = \"c\"", "name = \"c@d\"");
    let msg = err_at(&bad, 9, "name");
    assert!(msg.contains("peer name"), "{msg}");
    let addr = FAN_OUT.replace("admin@10.0.0.3:2222", "admin@10.0.0.3:http");
    err_at(&addr, 10, "address");
    let rel = FAN_OUT.replace("peer_root = \"/\"", "peer_root = \"srv\"");
    err_at(&rel, 11, "peer_root");
    let cfg_remote = FAN_OUT.replace("peer_root = \"/\"", "peer_config = \"c.toml\"");
    err_at(&cfg_remote, 11, "peer_config");
    let none = "[node]\nrole = \"master\"\n";
    let e = parse(none, Path::new(FILE)).unwrap_err().to_string();
    assert!(e.contains("[[peer]] table per standby"), "{e}");
}
