//! File systems mounted inside a tree: `-x` / `--one-file-system` side by side with
//! rsync's `-x`, and the group flush covering every file system a run wrote to. Each
//! test runs its commands in a private mount namespace (`unshare --mount`), where it
//! mounts tmpfs file systems inside its temp trees; they vanish with the namespace.

use crate::util::*;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `script` with `sh -e` in a new mount namespace; `$HASYNC` is the binary.
fn in_namespace(script: &str, env: &[(&str, &str)]) -> Output {
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", script])
        .env("HASYNC", bin())
        .env_remove("HASYNC_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("unshare (util-linux) is missing");
    assert!(o.status.success(), "{script}\n{}", text(&o));
    o
}

/// Paths and contents only: a mount point's own attributes are the mounted root's.
fn names(root: &Path) -> Vec<(String, char, String)> {
    snapshot(root)
        .into_iter()
        .map(|(k, n)| (String::from_utf8_lossy(&k).into_owned(), n.kind, n.hash))
        .collect()
}

fn tree_with_a_mount(d: &Path) -> std::path::PathBuf {
    let src = d.join("src");
    Tree::new(&src)
        .file("top", b"top")
        .file("dir/b", b"b")
        .dir("mnt");
    src
}

#[test]
fn one_file_system_stops_at_mount_points_like_rsync_x() {
    let d = tempfile::tempdir().unwrap();
    let src = tree_with_a_mount(d.path());
    let (h, r, hall, rall) = (
        d.path().join("h"),
        d.path().join("r"),
        d.path().join("hall"),
        d.path().join("rall"),
    );
    let s = src.display();
    in_namespace(
        &format!(
            "mount -t tmpfs tmpfs {s}/mnt; mkdir {s}/mnt/sub; echo inside > {s}/mnt/inside; \
             echo deep > {s}/mnt/sub/deep; \
             \"$HASYNC\" push -x {s} {h}; rsync -a -x {s}/ {r}/; \
             \"$HASYNC\" push {s} {hall}; rsync -a {s}/ {rall}/",
            h = h.display(),
            r = r.display(),
            hall = hall.display(),
            rall = rall.display(),
        ),
        &[],
    );
    assert_eq!(names(&h), names(&r), "hasync -x differs from rsync -x");
    assert!(h.join("mnt").is_dir() && !h.join("mnt/inside").exists());
    assert_eq!(names(&hall), names(&rall), "without -x");
    assert!(hall.join("mnt/sub/deep").exists());
}

#[test]
fn one_file_system_never_deletes_beneath_a_mount_point_like_rsync_x() {
    let d = tempfile::tempdir().unwrap();
    let src = tree_with_a_mount(d.path());
    let mut dests = Vec::new();
    for name in ["h", "r"] {
        let dest = d.path().join(name);
        Tree::new(&dest).file("gone", b"old").dir("mnt");
        dests.push(dest);
    }
    let (h, r) = (dests[0].display(), dests[1].display());
    let o = in_namespace(
        &format!(
            "for t in {h} {r}; do mount -t tmpfs tmpfs $t/mnt; echo keep > $t/mnt/keep; done; \
             \"$HASYNC\" push -x --delete {s} {h}; rsync -a -x --delete {s}/ {r}/; \
             ls {h}/mnt {r}/mnt",
            s = src.display()
        ),
        &[],
    );
    // Both keep what is mounted in the destination (listed while it was mounted)...
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).matches("keep").count(),
        2,
        "{}",
        text(&o)
    );
    // ...and both delete what the source lacks on the destination's own file system.
    assert!(!dests[0].join("gone").exists() && !dests[1].join("gone").exists());
}

#[test]
fn the_group_flush_covers_a_file_system_mounted_in_the_destination() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    Tree::new(&src).file("mnt/inside", b"inside");
    let dest = d.path().join("dest");
    Tree::new(&dest).dir("mnt");
    let o = in_namespace(
        &format!(
            "mount -t tmpfs tmpfs {t}/mnt; \"$HASYNC\" pull {s} {t}; stat -c %d {t}/mnt; \
             cat {t}/mnt/inside",
            s = src.display(),
            t = dest.display()
        ),
        &[("HASYNC_LOG", "debug")],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let tmpfs = out
        .lines()
        .rev()
        .nth(1)
        .expect("stat's line")
        .trim()
        .to_string();
    assert!(out.trim_end().ends_with("inside"), "{}", text(&o));
    // The only file lives on the tmpfs: its group's flush must be the tmpfs's (a pull:
    // the receiver, which logs the groups, is this process).
    let log = String::from_utf8_lossy(&o.stderr);
    let group = log
        .lines()
        .find(|l| l.contains("installed a group"))
        .unwrap_or_else(|| panic!("no group logged: {log}"));
    let devices = group
        .split("(devices [")
        .nth(1)
        .and_then(|r| r.split(']').next());
    assert!(
        devices.is_some_and(|d| d.split(", ").any(|x| x == tmpfs)),
        "the flush missed the mounted file system (device {tmpfs}): {group}"
    );
}
