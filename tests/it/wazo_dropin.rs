//! The Wazo drop-in on a node shaped like a real one (issue 19): Wazo's script names run
//! from a bare cron (`env -i PATH=/usr/bin:/bin`), and the Wazo profile's services run
//! Wazo's exact `xivo-manage-slave-services` sequences. Wazo's commands (wazo-service,
//! xivo-update-config, dhcpd-update, update-rc.d...) cannot run here: recording fakes on
//! PATH stand in for them, each appending its name and arguments to one log;
//! `wazo-service` keeps its groups' state in files so that `status all` answers as the
//! real one (the "wazo" group inside "default", `disable` keeping "wazo" off).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::profiles::{Wazo, profiles_dir, read, write};
use crate::util::{bin, text};

/// What cron gives a job: Wazo's cron files set no PATH.
const CRON_PATH: &str = "/usr/bin:/bin";

/// xivo-manage-slave-services start, as Wazo's script runs it.
const START: [&str; 9] = [
    "xivo-create-config",
    "xivo-update-config",
    "dhcpd-update -dr",
    "service isc-dhcp-server start",
    "update-rc.d isc-dhcp-server defaults",
    "wazo-confgen asterisk/pjsip.conf --invalidate",
    "wazo-service enable",
    "wazo-service start",
    "wazo-agentd-cli -c relog all --timeout 60",
];

/// xivo-manage-slave-services stop.
const STOP: [&str; 5] = [
    "wazo-service stop wazo",
    "wazo-service disable",
    "update-rc.d isc-dhcp-server remove",
    "service isc-dhcp-server stop",
    "wazo-service start",
];

const FAKES: [&str; 9] = [
    "xivo-create-config",
    "xivo-update-config",
    "dhcpd-update",
    "service",
    "update-rc.d",
    "wazo-confgen",
    "wazo-agentd-cli",
    "systemctl",
    "wazo-service",
];

/// A Wazo test node whose [services] are the shipped profile's, run against the fakes.
struct Node {
    w: Wazo,
}

impl Node {
    fn new() -> Node {
        let w = Wazo::new();
        let n = Node { w };
        let shipped: toml_edit::DocumentMut =
            read(&profiles_dir().join("wazo.toml")).parse().unwrap();
        let mut doc: toml_edit::DocumentMut = read(&n.w.cfg()).parse().unwrap();
        doc["services"] = shipped["services"].clone();
        doc["services"]["timeout"] = toml_edit::value("10s");
        std::fs::write(n.w.cfg(), doc.to_string()).unwrap();
        let (log, st) = (n.calls().display().to_string(), n.groups());
        std::fs::create_dir_all(&st).unwrap();
        let st = st.display();
        for f in FAKES {
            let body = if f == "wazo-service" {
                format!(
                    "case \"$1\" in\n\
                     status) test -f {st}/wazo && test -f {st}/default ;;\n\
                     start) test -f {st}/disabled || touch {st}/wazo; touch {st}/default ;;\n\
                     stop) rm -f {st}/wazo; test \"$2\" = wazo || rm -f {st}/default ;;\n\
                     enable) rm -f {st}/disabled ;;\n\
                     disable) touch {st}/disabled ;;\n\
                     esac\n"
                )
            } else {
                String::new()
            };
            let p = n.fakes().join(f);
            write(
                &p,
                &format!("#!/bin/sh\necho \"{f}${{*:+ $*}}\" >> {log}\n{body}"),
            );
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        n
    }

    fn fakes(&self) -> PathBuf {
        self.w.dir.path().join("fakes")
    }

    fn calls(&self) -> PathBuf {
        self.w.dir.path().join("calls")
    }

    /// wazo-service's state: files `wazo`, `default` (running groups), `disabled`.
    fn groups(&self) -> PathBuf {
        self.w.dir.path().join("groups")
    }

    /// Every Wazo service runs (a node just made slave, or a failed-over one).
    fn all_running(&self) {
        for g in ["wazo", "default"] {
            write(&self.groups().join(g), "");
        }
        let _ = std::fs::remove_file(self.groups().join("disabled"));
    }

    fn group(&self, g: &str) -> bool {
        self.groups().join(g).exists()
    }

    /// The calls since the last `take`, without the status queries.
    fn take(&self) -> (Vec<String>, usize) {
        let all = read(&self.calls());
        let _ = std::fs::remove_file(self.calls());
        let status = all
            .lines()
            .filter(|l| *l == "wazo-service status all")
            .count();
        let steps = all
            .lines()
            .filter(|l| *l != "wazo-service status all")
            .map(str::to_string)
            .collect();
        (steps, status)
    }

    /// Wazo's script `name` as cron runs it, with the fakes first on PATH.
    fn script(&self, name: &str, args: &[&str]) -> Output {
        script(
            &self.w,
            name,
            args,
            &format!("{}:{CRON_PATH}", self.fakes().display()),
        )
    }

    fn master_up(&self, up: bool) {
        let p = self.w.dir.path().join("master-up");
        if up {
            write(&p, "");
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    fn master_json(&self) -> serde_json::Value {
        serde_json::from_str(&read(&self.w.dir.path().join("state/master.json"))).unwrap()
    }
}

/// Runs the binary as Wazo's script `name` (a symlink) with nothing but `PATH` and the
/// config in its environment, like a cron job.
fn script(w: &Wazo, name: &str, args: &[&str], path: &str) -> Output {
    let link = w.dir.path().join("bin").join(name);
    if !link.exists() {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(bin(), &link).unwrap();
    }
    Command::new(&link)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("HASYNC_CONFIG", w.cfg())
        .output()
        .unwrap()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn wazo_services_start_and_stop_run_wazos_exact_sequences() {
    let n = Node::new();
    let o = n.script("xivo-manage-slave-services", &["start"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (steps, status) = n.take();
    assert_eq!(steps, strs(&START));
    assert!(status >= 1, "the guard is `wazo-service status all`");
    assert!(n.group("wazo") && n.group("default") && !n.group("disabled"));
    // The guard: everything runs, so a second start does nothing but ask.
    let o = n.script("xivo-manage-slave-services", &["start"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take(), (vec![], 1));
    // A crashed wazo-calld next to a running Asterisk: `status all` fails, start runs all.
    std::fs::remove_file(n.groups().join("wazo")).unwrap();
    let o = n.script("xivo-manage-slave-services", &["start"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take().0, strs(&START));
    // Stop: the "wazo" group off and disabled, DHCP off at boot, the management back.
    let o = n.script("xivo-manage-slave-services", &["stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take().0, strs(&STOP));
    assert!(!n.group("wazo") && n.group("default") && n.group("disabled"));
    // Stop is not guarded, as in Wazo: it runs again in full.
    let o = n.script("xivo-manage-slave-services", &["stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take().0, strs(&STOP));
    // A failing step does not end the start (Wazo's script has no `set -e`); the run
    // reports it.
    write(
        &n.fakes().join("dhcpd-update"),
        &format!(
            "#!/bin/sh\necho \"dhcpd-update $*\" >> {}\nexit 4\n",
            n.calls().display()
        ),
    );
    let o = n.script("xivo-manage-slave-services", &["start"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("dhcpd-update -dr"), "{}", text(&o));
    assert_eq!(n.take().0, strs(&START));
}

#[test]
fn wazo_check_stops_at_the_first_check_and_restarts_dead_services() {
    let n = Node::new();
    n.w.ha_conf("slave");
    // A node just made slave still runs everything; the master answers: the first
    // check stops the services (Wazo's check stops them at every run).
    n.all_running();
    n.master_up(true);
    let o = n.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take().0, strs(&STOP));
    assert!(!n.group("wazo"), "the wazo group stays off");
    assert_eq!(n.master_json()["services_active"], false);
    // Every later check that sees the master up runs the stop again, like Wazo's.
    let o = n.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take().0, strs(&STOP));
    // The master goes: one cron run (fail_after checks) starts everything.
    n.master_up(false);
    let o = n.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take().0, strs(&START));
    // Nothing on stderr, so cron mails root nothing every minute of an outage.
    assert!(o.stderr.is_empty(), "{}", text(&o));
    assert_eq!(n.master_json()["services_active"], true);
    // Still down, everything runs: nothing to do.
    let o = n.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(n.take().0.is_empty());
    // The services die while failed over (a crash, a reboot): the next check sees the
    // real status and starts them again.
    std::fs::remove_file(n.groups().join("wazo")).unwrap();
    let o = n.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take().0, strs(&START));
    assert!(n.group("wazo"));
    assert_eq!(n.master_json()["services_active"], true);
    // The master is back: stopped at once (no recover_after, no hold-down).
    n.master_up(true);
    let o = n.script("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(n.take().0, strs(&STOP));
    // Two failbacks: the first check's stop of a running slave, and this one.
    assert_eq!(n.master_json()["failbacks"], 2);
    // systemctl is never what decides or acts on a Wazo node.
    assert!(
        !read(&n.calls()).contains("systemctl"),
        "{}",
        read(&n.calls())
    );
}

/// Every one of Wazo's script names run with only `PATH=/usr/bin:/bin`, as Wazo's cron
/// lines run them: what hasync starts still finds the sbin directories.
#[test]
fn wazo_every_script_name_works_from_a_bare_cron() {
    // The premise: cron's PATH alone does not find runuser (in /usr/sbin or /sbin).
    let o = Command::new("/bin/sh")
        .args(["-c", "command -v runuser"])
        .env_clear()
        .env("PATH", CRON_PATH)
        .output()
        .unwrap();
    assert!(!o.status.success(), "runuser found on {CRON_PATH}");
    let w = Wazo::new();
    let paths = w.dir.path().join("paths");
    let mut doc: toml_edit::DocumentMut = read(&w.cfg()).parse().unwrap();
    let rec = format!("echo \"$PATH\" >> {}", paths.display());
    let arr = |v: &[String]| toml_edit::value(v.iter().collect::<toml_edit::Array>());
    let d = w.dir.path().display().to_string();
    doc["services"]["start"] = arr(&[format!("{rec}; touch {d}/up")]);
    doc["services"]["stop"] = arr(&[format!("{rec}; rm -f {d}/up")]);
    doc["db"]["run_as"] = toml_edit::value("postgres");
    std::fs::write(w.cfg(), doc.to_string()).unwrap();
    let want = "/usr/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin";
    let run = |name: &str, args: &[&str]| script(&w, name, args, CRON_PATH);
    w.ha_conf("master");
    for name in ["xivo-sync", "wazo-sync"] {
        let o = run(name, &[]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
    }
    assert!(w.slave().join("etc/xivo/asterisk/a.conf").exists());
    // The DB job finds runuser (and runs pg_dump through it); it fails on the missing
    // server, as the test set it up.
    let o = run("xivo-master-slave-db-replication", &["10.9.9.9"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("db asterisk failed")
            && text(&o).contains("psql failed (exit 2)")
            && text(&o).contains("psql: error: connection")
            && !text(&o).contains("cannot run runuser"),
        "{}",
        text(&o)
    );
    let o = run("xivo-manage-slave-services", &["start"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run("xivo-manage-slave-services", &["stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    w.ha_conf("slave");
    let o = run("xivo-check-master-status", &["10.1.2.3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read(&paths), format!("{want}\n{want}\n{want}\n"));
    assert!(Path::new(&d).join("up").exists());
}

/// wazo-sync's own answers: `--init` as `-i`, exit 1 off the master, exit 0 "not
/// synchronizing" without its key.
#[test]
fn wazo_sync_names_accept_and_exit_as_wazo_sync() {
    let w = Wazo::new();
    w.ha_conf("master");
    for flag in ["-i", "--init"] {
        let o = w.script("xivo-sync", &[flag]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", text(&o));
        assert!(
            text(&o).contains("no remote peer to set up"),
            "{}",
            text(&o)
        );
    }
    for role in ["slave", "disabled"] {
        w.ha_conf(role);
        let o = w.script("wazo-sync", &[]);
        assert_eq!(o.status.code(), Some(1), "{role}: {}", text(&o));
        assert!(
            text(&o).contains("not a master node"),
            "{role}: {}",
            text(&o)
        );
    }
    w.ha_conf("master");
    let mut doc: toml_edit::DocumentMut = read(&w.cfg()).parse().unwrap();
    doc["node"]["identity"] = toml_edit::value("no-such-key");
    std::fs::write(w.cfg(), doc.to_string()).unwrap();
    let o = w.script("wazo-sync", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("not synchronizing"), "{}", text(&o));
    assert!(!w.slave().join("etc/xivo/asterisk/a.conf").exists());
}
