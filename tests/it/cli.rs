//! The command line: help, exit codes, config jobs, the demo profile, config errors.

use crate::util::*;

#[test]
fn help_documents_commands_and_exit_codes() {
    let out = ok(hasync().arg("--help").output().unwrap());
    for w in ["push", "pull", "sync", "Exit codes", "safety guard"] {
        assert!(out.contains(w), "--help lacks {w}: {out}");
    }
    let out = ok(hasync().args(["push", "--help"]).output().unwrap());
    for w in [
        "--delete",
        "--exclude",
        "--checksum",
        "--dry-run",
        "--json",
        "gitignore",
        "ssh://",
    ] {
        assert!(out.contains(w), "push --help lacks {w}: {out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = hasync().args(["push"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = hasync().args(["frobnicate"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("hasync.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn sync_runs_the_config_jobs_under_root_and_peer_root() {
    let d = tempfile::tempdir().unwrap();
    let master = Tree::new(&d.path().join("master"));
    master
        .file("etc/asterisk/extensions_extra.d/a.conf", b"[a]\n")
        .file("etc/asterisk/x.swp", b"swap");
    master.file("var/lib/asterisk/moh/default/m.wav", &pseudo(50_000, 3));
    let cfg = write_config(
        d.path(),
        r#"
[node]
role = "master"
peer = "local"
root = "master"
peer_root = "slave"
state_dir = "state"

[[sync]]
name = "asterisk"
paths = ["/etc/asterisk", "/var/lib/asterisk/moh"]
exclude = ["*.swp"]
"#,
    );
    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "--json"])
        .output()
        .unwrap();
    let j = json(&o);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(j["jobs"][0]["name"], "asterisk");
    assert_eq!(j["jobs"][0]["files_transferred"], 2, "{j}");
    let slave = d.path().join("slave");
    assert!(
        slave
            .join("etc/asterisk/extensions_extra.d/a.conf")
            .exists()
    );
    assert!(!slave.join("etc/asterisk/x.swp").exists());
    assert_mirror(
        &d.path().join("master/var/lib/asterisk/moh"),
        &slave.join("var/lib/asterisk/moh"),
    );
    // Unknown job names are a usage error.
    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// `hasync sync --compress[=LEVEL]` / `--no-compress` / `--bwlimit` override every job's
/// config for one run (a local peer is not compressed by default).
#[test]
fn sync_link_flags_override_the_config_for_one_run() {
    let d = tempfile::tempdir().unwrap();
    let text_file: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i} of a text config file\n").into_bytes())
        .collect();
    Tree::new(&d.path().join("master")).file("etc/conf/big.conf", &text_file);
    let cfg = write_config(
        d.path(),
        "[node]\nrole = \"master\"\npeer = \"local\"\nroot = \"master\"\npeer_root = \"slave\"\n\
         state_dir = \"state\"\n\n[[sync]]\nname = \"conf\"\npaths = [\"/etc/conf\"]\nchecksum = true\n",
    );
    let sync = |args: &[&str]| {
        let o = hasync()
            .arg("--config")
            .arg(&cfg)
            .arg("sync")
            .args(args)
            .output()
            .unwrap();
        (o.status.code(), json(&o), text(&o))
    };
    let (code, j, t) = sync(&["--json", "--compress=3"]);
    assert_eq!(code, Some(0), "{t}");
    let job = &j["jobs"][0];
    let (wire, raw) = (
        job["bytes_sent"].as_u64().unwrap(),
        job["bytes_sent_uncompressed"].as_u64().unwrap(),
    );
    assert!(wire * 4 < raw, "not compressed: {job}");
    std::fs::remove_dir_all(d.path().join("slave")).unwrap();
    let (code, j, t) = sync(&["--json"]);
    assert_eq!(code, Some(0), "{t}");
    let job = &j["jobs"][0];
    assert!(
        job["bytes_sent"].as_u64().unwrap() > text_file.len() as u64,
        "{job}"
    );
    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "--compress=99"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--compress=99"), "{}", text(&o));
    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .args(["sync", "--bwlimit", "fast"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--bwlimit"), "{}", text(&o));
}

#[test]
fn config_errors_name_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "[node]\nrole = \"master\"\npeer = \"local\"\n\n[[sync]]\nname = \"x\"\npaths = [\"etc/asterisk\"]\n",
    );
    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .arg("sync")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("hasync.toml:7") && err.contains("paths"),
        "{err}"
    );
    let o = hasync()
        .arg("--config")
        .arg(d.path().join("missing.toml"))
        .arg("sync")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
}

#[test]
fn the_demo_profile_mirrors_the_demo_tree() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Run on a copy so tests never touch the checkout.
    let d = tempfile::tempdir().unwrap();
    let copy = |from: &str| {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(repo.join(from))
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success());
    };
    copy("profiles");
    copy("fixtures");
    let out = ok(hasync()
        .arg("--config")
        .arg(d.path().join("profiles/demo.toml"))
        .arg("sync")
        .output()
        .unwrap());
    assert!(out.contains(">f+++++++++"), "{out}");
    let replica = d.path().join("target/demo/replica");
    assert!(
        replica.exists(),
        "the demo writes its replica beside the profiles: {out}"
    );
    let out = ok(hasync()
        .arg("--config")
        .arg(d.path().join("profiles/demo.toml"))
        .arg("sync")
        .output()
        .unwrap());
    assert!(
        !out.contains(">f+++++++++"),
        "second demo run should transfer nothing: {out}"
    );
}

#[test]
fn every_profile_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            hasync::node::config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
}

/// What hasync does not mirror is never silent: a warning per special file and per
/// hard-linked file (README "What is not mirrored"); the run still succeeds.
#[test]
fn special_files_and_hard_links_are_each_warned_about() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    Tree::new(&src).file("a", b"a").file("sub/b", b"b");
    std::fs::hard_link(src.join("a"), src.join("sub/a-again")).unwrap();
    let fifo = src.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let dest = d.path().join("dest");
    let o = hasync().arg("push").arg(&src).arg(&dest).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pipe: a device, FIFO or socket: not mirrored"),
        "{err}"
    );
    for p in ["a: a hard link", "sub/a-again: a hard link"] {
        assert!(err.contains(p), "{p}: {err}");
    }
    assert!(!dest.join("pipe").exists());
    assert_eq!(std::fs::read(dest.join("sub/a-again")).unwrap(), b"a");
}
