//! Watch mode and signals.

use super::*;
use crate::util::*;
use std::time::{Duration, Instant};

#[test]
fn watch_delivers_new_files_subtrees_renames_and_a_burst_then_sigterm_exits_0() {
    // On a tmpfs: the 10,000-file burst would otherwise measure this VM's ext4
    // (creating and deleting many inodes is slow right after other tests did).
    let d = tempfile::tempdir().unwrap();
    let _tmpfs = crate::util::TmpFs::mount(d.path(), "512m");
    let cfg = setup(d.path(), WATCH_JOB);
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    let t = Tree::new(&src);
    t.file("before-start", b"written while no daemon ran");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    wait_for(10, || mirrored(&src, &dst), log);

    t.file("new.txt", b"hello");
    let t0 = Instant::now();
    wait_for(5, || mirrored(&src, &dst), log);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "slow: {:?}",
        t0.elapsed()
    );

    // A subtree created at once (its inner directories are not watched yet).
    t.file("a/b/c/d/deep.txt", b"deep")
        .file("a/b/x.bin", &pseudo(100_000, 1));
    wait_for(5, || mirrored(&src, &dst), log);

    // Renames of a file and of a directory.
    std::fs::rename(src.join("new.txt"), src.join("renamed.txt")).unwrap();
    std::fs::rename(src.join("a/b"), src.join("a/moved")).unwrap();
    wait_for(5, || mirrored(&src, &dst), log);

    // A burst of 10,000 files in 50 directories.
    for i in 0..10_000 {
        t.file(
            format!("burst/{:02}/f{i:05}", i % 50),
            format!("{i}").as_bytes(),
        );
    }
    wait_for(30, || mirrored(&src, &dst), log);

    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(
        temps(d.path()).is_empty(),
        "temp files left: {:?}",
        temps(d.path())
    );
    assert!(!d.path().join("state/daemon.json").exists());
}

#[test]
fn sighup_with_a_broken_config_keeps_running_and_a_second_daemon_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), WATCH_JOB);
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    let t = Tree::new(&src);
    t.file("one", b"1");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    wait_for(10, || mirrored(&src, &dst), log);

    let o = hasync()
        .arg("--config")
        .arg(&cfg)
        .arg("daemon")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("already runs"), "{}", text(&o));

    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace("schedule = \"watch\"", "schedule = \"every tuesday\""),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for(
        5,
        || daemon.log().contains("keeping the current configuration"),
        log,
    );
    assert!(
        daemon.log().contains("schedule"),
        "the reason is logged: {}",
        daemon.log()
    );
    // Still running, still watching.
    t.file("two", b"2");
    wait_for(5, || mirrored(&src, &dst), log);

    // A good config is taken: a second job appears.
    std::fs::write(
        &cfg,
        format!("{good}\n[[sync]]\nname = \"more\"\npaths = [\"/more\"]\nschedule = \"watch\"\nsafety_pass = \"manual\"\n"),
    )
    .unwrap();
    Tree::new(&d.path().join("m/more")).file("m", b"m");
    daemon.signal(libc::SIGHUP);
    wait_for(
        5,
        || daemon.log().contains("configuration reloaded (2 jobs)"),
        log,
    );
    wait_for(
        5,
        || mirrored(&d.path().join("m/more"), &d.path().join("s/more")),
        log,
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn sigterm_during_a_run_lets_it_finish_and_leaves_no_temp_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), WATCH_JOB);
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    Tree::new(&src).file("small", b"s");
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    wait_for(10, || mirrored(&src, &dst), log);
    let starts = |l: &str| l.matches("starting (watch)").count();
    let before = starts(&daemon.log());
    // Written outside the tree, then renamed in: one event, a complete file.
    std::fs::write(d.path().join("m/big"), pseudo(96 << 20, 7)).unwrap();
    std::fs::rename(d.path().join("m/big"), src.join("big")).unwrap();
    wait_for(10, || starts(&daemon.log()) > before, log);
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        temps(d.path()).is_empty(),
        "temp files left: {:?}",
        temps(d.path())
    );
    if log.contains("waiting for 1 runs in progress") {
        // Stopped mid-run: the run finished first.
        assert!(mirrored(&src, &dst), "{log}");
    }
}

#[test]
fn a_watched_directory_created_or_recreated_later_is_watched_again() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(
        d.path(),
        &format!("{WATCH_JOB}\n[daemon]\nretry_min = \"100ms\"\nretry_max = \"1s\"\n"),
    );
    let (src, dst) = (d.path().join("m/data"), d.path().join("s/data"));
    std::fs::remove_dir(&src).unwrap();
    let daemon = Daemon::start(&cfg);
    let log = || daemon.log();
    // Missing source: refused (never wipes the mirror), retried.
    wait_for(10, || daemon.log().contains("cannot watch"), log);
    wait_for(10, || daemon.log().contains("does not exist"), log);
    Tree::new(&src).file("a", b"a");
    wait_for(10, || mirrored(&src, &dst), log);
    Tree::new(&src).file("b", b"b");
    wait_for(5, || mirrored(&src, &dst), log);
    // Deleted and created again: a new directory, watched again.
    std::fs::rename(&src, d.path().join("m/old")).unwrap();
    Tree::new(&src).file("c", b"c");
    wait_for(10, || mirrored(&src, &dst), log);
    Tree::new(&src).file("d", b"d");
    let t0 = Instant::now();
    wait_for(5, || mirrored(&src, &dst), log);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "not watched: {}",
        log()
    );
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
}
