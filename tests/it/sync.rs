//! The sync engine's correctness matrix, run over every transport
//! (the local child process and SSH against the test sshd).

use crate::util::*;
use std::path::Path;

macro_rules! matrix {
    ($($name:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $name() { super::$name(crate::util::Target::Local) } )*
        }
        mod over_ssh {
            $( #[test] fn $name() { super::$name(crate::util::Target::Ssh) } )*
        }
    };
}

matrix!(
    mirrors_contents_modes_mtimes_symlinks,
    mirrors_changes_deletions_and_kind_changes,
    pull_mirrors_the_peer_tree,
    odd_names,
    excludes_are_not_sent_nor_deleted,
    second_run_is_a_no_op,
    delta_rebuilds_exactly_and_sends_little,
    file_sizes,
    dry_run_changes_nothing,
    guards_refuse_to_wipe_the_mirror,
    checksum_finds_same_size_same_mtime_changes,
    a_non_empty_directory_is_replaced_only_with_delete,
    far_mtimes_round_trip_exactly_on_ext4,
    far_mtimes_round_trip_exactly_on_tmpfs,
);

fn sample(root: &Path) -> Tree {
    let t = Tree::new(root);
    t.file("a.txt", b"hello\n")
        .file("dir/b.bin", &pseudo(100_000, 1))
        .file("dir/sub/c", b"")
        .file("secret", b"s")
        .mode("secret", 0o600)
        .file("script.sh", b"#!/bin/sh\n")
        .mode("script.sh", 0o755)
        .mtime("a.txt", 1_000_000_000)
        .dir("empty/nested/deeper")
        .link("rel-link", "dir/b.bin")
        .link("abs-link", "/etc/passwd")
        .link("dangling", "does/not/exist")
        .link("dir/up", "../a.txt")
        .link("dirlink", "dir");
    std::fs::set_permissions(
        t.p("dir/sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    t
}

fn mirrors_contents_modes_mtimes_symlinks(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    sample(&src);
    let out = ok(t.push(&src, &dst, &["--delete"]));
    assert!(out.contains(">f+++++++++ a.txt"), "{out}");
    assert!(out.contains("cL+++++++++ abs-link -> /etc/passwd"), "{out}");
    assert_mirror(&src, &dst);
    // Symlinks are copied as symlinks, never followed.
    assert!(
        dst.join("dirlink")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

fn mirrors_changes_deletions_and_kind_changes(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let s = sample(&src);
    ok(t.push(&src, &dst, &["--delete"]));
    // Change everything that can change.
    s.file("a.txt", b"changed content\n");
    std::fs::remove_file(s.p("secret")).unwrap();
    s.mode("script.sh", 0o700);
    std::fs::remove_file(s.p("rel-link")).unwrap();
    s.link("rel-link", "a.txt");
    std::fs::remove_dir_all(s.p("dir/sub")).unwrap();
    s.file("dir/sub", b"now a file");
    std::fs::remove_file(s.p("dirlink")).unwrap();
    s.dir("dirlink/inside").file("dirlink/inside/f", b"f");
    std::fs::remove_dir_all(s.p("empty")).unwrap();
    s.file("new/deep/file", b"new");
    let o = t.push(&src, &dst, &["--delete", "--json"]);
    let j = json(&o);
    assert!(o.status.success(), "{}", text(&o));
    assert!(j["files_deleted"].as_u64().unwrap() >= 4, "{j}");
    assert_mirror(&src, &dst);
    // Without --delete, extra files on the mirror stay.
    std::fs::write(dst.join("extra"), b"x").unwrap();
    ok(t.push(&src, &dst, &[]));
    assert!(dst.join("extra").exists());
    ok(t.push(&src, &dst, &["--delete"]));
    assert!(!dst.join("extra").exists());
}

fn pull_mirrors_the_peer_tree(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    sample(&src);
    ok(t.pull(&src, &dst, &["--delete"]));
    assert_mirror(&src, &dst);
    std::fs::write(src.join("a.txt"), b"pulled again").unwrap();
    std::fs::remove_file(src.join("secret")).unwrap();
    let o = t.pull(&src, &dst, &["--delete"]);
    let out = ok(o);
    assert!(out.contains("*deleting secret"), "{out}");
    assert_mirror(&src, &dst);
}

fn odd_names(t: Target) {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let s = Tree::new(&src);
    s.file("with space", b"1")
        .file("new\nline", b"2")
        .file("-rf", b"3")
        .file("--delete", b"4")
        .file(OsStr::from_bytes(b"latin1-\xe9t\xe9"), b"5")
        .file("tab\there", b"6")
        .file("ünïcødé ✓", b"7")
        .file("\x1b[31mred", b"8");
    s.file("n".repeat(255), b"long name");
    let deep: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
    s.file(format!("{}/leaf", deep.join("/")), b"deep");
    let out = ok(t.push(&src, &dst, &["--delete"]));
    // Control characters are escaped in the itemized output.
    assert!(out.contains("new\\nline"), "{out}");
    assert!(out.contains("\\x1b[31mred"), "{out}");
    assert!(!out.contains('\x1b'), "raw escape in output");
    assert_mirror(&src, &dst);
}

fn excludes_are_not_sent_nor_deleted(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let s = Tree::new(&src);
    s.file("keep.conf", b"k")
        .file("x.swp", b"s")
        .file("a/b/c.swp", b"s")
        .file("cache/big", b"c")
        .file("top", b"t")
        .file("a/top", b"t2");
    s.file("a/keep.swp", b"kept by negation");
    let args = [
        "--delete",
        "--exclude",
        "*.swp",
        "--exclude",
        "cache/",
        "--exclude",
        "/top",
        "--exclude",
        "!keep.swp",
    ];
    ok(t.push(&src, &dst, &args));
    assert!(dst.join("keep.conf").exists());
    assert!(!dst.join("x.swp").exists() && !dst.join("a/b/c.swp").exists());
    assert!(!dst.join("cache").exists());
    assert!(!dst.join("top").exists() && dst.join("a/top").exists());
    assert!(dst.join("a/keep.swp").exists());
    // Excluded files on the mirror are left alone, even with --delete.
    std::fs::write(dst.join("local.swp"), b"mine").unwrap();
    ok(t.push(&src, &dst, &args));
    assert!(dst.join("local.swp").exists());
}

fn second_run_is_a_no_op(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    sample(&src);
    ok(t.push(&src, &dst, &["--delete"]));
    let before = snapshot(&dst);
    let o = t.push(&src, &dst, &["--delete", "--json"]);
    let j = json(&o);
    assert_eq!(j["files_transferred"], 0, "{j}");
    assert_eq!(j["files_deleted"], 0, "{j}");
    assert_eq!(j["bytes_literal"], 0, "{j}");
    assert_eq!(
        snapshot(&dst),
        before,
        "a no-op run changed the mirror (mtimes included)"
    );
    let out = ok(t.push(&src, &dst, &["--delete"]));
    assert_eq!(
        out.lines().count(),
        1,
        "only the summary line expected: {out}"
    );
}

fn delta_rebuilds_exactly_and_sends_little(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let s = Tree::new(&src);
    let mut data = pseudo(24 << 20, 7);
    s.file("big", &data);
    ok(t.push(&src, &dst, &[]));
    // Random inserts, deletions and overwrites.
    let mut rng = 12345u64;
    let mut next = |m: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng as usize) % m
    };
    for i in 0..8 {
        let at = next(data.len() - 70_000);
        match i % 3 {
            0 => data
                .splice(at..at, pseudo(1000 + next(5000), i))
                .for_each(drop),
            1 => data.drain(at..at + 1000 + next(5000)).for_each(drop),
            _ => data[at..at + 65536].copy_from_slice(&pseudo(65536, 100 + i)),
        }
    }
    s.file("big", &data);
    let o = t.push(&src, &dst, &["--json"]);
    let j = json(&o);
    assert_eq!(
        std::fs::read(dst.join("big")).unwrap(),
        data,
        "rebuilt file differs"
    );
    let literal = j["bytes_literal"].as_u64().unwrap();
    let matched = j["bytes_matched"].as_u64().unwrap();
    assert!(
        literal < 1 << 20,
        "sent {literal} literal bytes for ~300 KiB of changes: {j}"
    );
    assert!(matched > 20 << 20, "{j}");
    assert!(
        j["bytes_sent"].as_u64().unwrap() + j["bytes_received"].as_u64().unwrap() < 2 << 20,
        "{j}"
    );
}

fn file_sizes(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let s = Tree::new(&src);
    for (i, n) in [
        0usize,
        1,
        511,
        4095,
        4096,
        65537,
        1 << 20,
        (1 << 20) + 1,
        9 << 20,
    ]
    .iter()
    .enumerate()
    {
        s.file(format!("f{n}"), &pseudo(*n, i as u64));
    }
    ok(t.push(&src, &dst, &["--delete"]));
    assert_mirror(&src, &dst);
    // Growing and shrinking files go through the delta path.
    s.file("f4096", &pseudo(10_000, 1));
    s.file("f1048576", &pseudo(1000, 2));
    s.file("f0", b"no longer empty");
    ok(t.push(&src, &dst, &["--delete"]));
    assert_mirror(&src, &dst);
}

fn dry_run_changes_nothing(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let s = sample(&src);
    let o = t.push(&src, &dst, &["--dry-run", "--delete"]);
    let out = ok(o);
    assert!(out.contains(">f+++++++++ a.txt"), "{out}");
    assert!(!dst.exists(), "dry run created the destination");
    ok(t.push(&src, &dst, &["--delete"]));
    s.file("a.txt", b"different");
    std::fs::write(dst.join("extra"), b"x").unwrap();
    let before = snapshot(&dst);
    let o = t.push(&src, &dst, &["--dry-run", "--delete", "--json", "-v"]);
    let j = json(&o);
    assert_eq!(j["files_transferred"], 1, "{j}");
    assert_eq!(j["files_deleted"], 1, "{j}");
    assert_eq!(snapshot(&dst), before, "dry run changed the mirror");
}

fn guards_refuse_to_wipe_the_mirror(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    sample(&src);
    ok(t.push(&src, &dst, &["--delete"]));
    let before = snapshot(&dst);
    // Missing source.
    let o = t.push(&d.path().join("nope"), &dst, &["--delete"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not exist"),
        "{}",
        text(&o)
    );
    // Empty source.
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = t.push(&empty, &dst, &["--delete"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--allow-empty-source"),
        "{}",
        text(&o)
    );
    // --max-delete.
    std::fs::remove_file(src.join("a.txt")).unwrap();
    std::fs::remove_file(src.join("secret")).unwrap();
    let o = t.push(&src, &dst, &["--delete", "--max-delete", "1"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(snapshot(&dst), before, "a refused run changed the mirror");
    // Explicitly allowed.
    let o = t.push(&empty, &dst, &["--delete", "--allow-empty-source"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(snapshot(&dst).len(), 1);
}

fn checksum_finds_same_size_same_mtime_changes(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let s = Tree::new(&src);
    s.file("f", b"aaaa").mtime("f", 1_500_000_000);
    ok(t.push(&src, &dst, &[]));
    s.file("f", b"bbbb").mtime("f", 1_500_000_000);
    let j = json(&t.push(&src, &dst, &["--json"]));
    assert_eq!(
        j["files_transferred"], 0,
        "quick check should not see it: {j}"
    );
    let o = t.push(&src, &dst, &["--json", "--checksum"]);
    assert_eq!(json(&o)["files_transferred"], 1, "{}", text(&o));
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"bbbb");
}

/// A 1 GiB file (sparse on the source, so the test costs disk only on the replica)
/// mirrors exactly, then a few changed bytes travel as a small delta.
#[test]
fn a_1_gib_file_mirrors_exactly_and_its_delta_is_small() {
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir_in("/var/tmp").unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("big")).unwrap();
    f.set_len(1 << 30).unwrap();
    for (i, off) in [0u64, 123_456_789, 700 << 20, (1 << 30) - 4096]
        .iter()
        .enumerate()
    {
        f.write_all_at(&pseudo(4096, i as u64), *off).unwrap();
    }
    drop(f);
    ok(Target::Local.push(&src, &dst, &[]));
    assert_mirror(&src, &dst);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("big"))
        .unwrap();
    f.write_all_at(b"changed", 500 << 20).unwrap();
    drop(f);
    let j = json(&Target::Local.push(&src, &dst, &["--json"]));
    assert_mirror(&src, &dst);
    assert!(j["bytes_literal"].as_u64().unwrap() < 1 << 20, "{j}");
}

/// Syncing reads the source tree without touching its access times (`O_NOATIME`,
/// as root), so a run does not dirty the inode of every file and directory it
/// reads. A control file read the ordinary way proves this file system does update
/// access times (relatime: an atime older than the mtime is refreshed on read).
#[test]
fn reading_the_source_leaves_its_access_times_alone() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (O_NOATIME on any file); run scripts/test as root"
    );
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let t = Tree::new(&src);
    t.file("f", &pseudo(50_000, 3))
        .file("d/g", b"g")
        .file("control", b"c");
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    let age = |rel: &str| {
        let f = std::fs::File::open(t.p(rel)).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(old))
            .unwrap();
    };
    let atime = |rel: &str| std::fs::metadata(t.p(rel)).unwrap().atime();
    for rel in ["f", "d/g", "d", "control", ""] {
        age(rel);
    }
    std::fs::read(t.p("control")).unwrap();
    assert_ne!(
        atime("control"),
        1_000_000,
        "this file system does not update access times on read; the test proves nothing here"
    );
    let untouched = |when: &str| {
        for rel in ["f", "d/g", "d", ""] {
            assert_eq!(
                atime(rel),
                1_000_000,
                "the {when} changed the access time of {rel:?}"
            );
        }
    };
    ok(Target::Local.push(&src, &dst, &["--delete"]));
    untouched("first copy");
    // A changed file is read again for its delta.
    t.file("f", &pseudo(60_000, 3));
    age("f");
    age("");
    ok(Target::Local.push(&src, &dst, &["--delete"]));
    untouched("delta run");
    assert_mirror(&src, &dst);
}

/// rsync refuses to replace a non-empty directory by another kind of entry without
/// `--delete` ("cannot delete non-empty directory"); with it, everything removed is a
/// deletion: itemized, counted and held by `--max-delete`.
fn a_non_empty_directory_is_replaced_only_with_delete(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    Tree::new(&src)
        .file("keep", b"k")
        .file("x", b"now a file")
        .link("y", "keep")
        .file("z", b"was an empty dir");
    Tree::new(&dst)
        .file("x/a", b"a")
        .file("x/sub/b", b"b")
        .file("y/inner/f", b"f")
        .dir("z");
    let o = t.push(&src, &dst, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("cannot delete non-empty directory x"), "{all}");
    assert!(all.contains("cannot delete non-empty directory y"), "{all}");
    assert!(dst.join("x/a").exists() && dst.join("x/sub/b").exists());
    assert!(dst.join("y/inner/f").exists());
    // The empty directory was replaced, and that removal was shown and counted.
    assert!(dst.join("z").is_file());
    assert!(all.contains("*deleting z"), "{all}");
    // --max-delete holds the removals too: nothing changes.
    let o = t.push(&src, &dst, &["--delete", "--max-delete", "6"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(dst.join("x/sub/b").exists());
    // --dry-run lists every path that would go and counts it.
    let o = t.push(&src, &dst, &["--delete", "--dry-run"]);
    let out = ok(o);
    for p in ["x/sub/b", "x/sub", "x/a", "x", "y/inner/f", "y/inner", "y"] {
        assert!(out.contains(&format!("*deleting {p}\n")), "{p}: {out}");
    }
    let j = json(&t.push(&src, &dst, &["--delete", "--dry-run", "--json"]));
    assert_eq!(j["files_deleted"], 7, "{j}");
    assert!(dst.join("x/sub/b").exists(), "the dry run changed nothing");
    let j = json(&t.push(&src, &dst, &["--delete", "--json"]));
    assert_eq!(j["files_deleted"], 7, "{j}");
    assert_mirror(&src, &dst);
}

/// Sets the mtime of `p` (file, directory or the symlink itself) to `secs.nanos`,
/// any `i64` seconds, with coreutils' `touch`.
fn touch_at(p: &Path, secs: i64, nanos: u32) {
    let st = std::process::Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(match (secs, nanos) {
            // touch reads "@-5.25" as -(5.25): write secs + nanos/1e9 that way.
            (s, n) if s < 0 && n > 0 => format!("@-{}.{:09}", -(s + 1), 1_000_000_000 - n),
            (s, n) => format!("@{s}.{n:09}"),
        })
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "touch {}", p.display());
    let md = p.symlink_metadata().unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (md.mtime(), md.mtime_nsec()),
        (secs, i64::from(nanos)),
        "the file system of {} does not hold this time",
        p.display()
    );
}

/// Issue 17 point 2: files, a directory and a symlink dated 1901, 1938, 2100 and 2300
/// (and, on tmpfs, which holds any i64 seconds, years 5138 and -1199): mirrored to the
/// nanosecond, push and pull, and a second run sends nothing. Before the fix the
/// serve side panicked (debug build: `secs * 1_000_000_000` overflowed in the scan).
fn far_mtimes(t: Target, base: &Path, times: &[(i64, u32)]) {
    let (src, dst, back) = (base.join("src"), base.join("dst"), base.join("back"));
    let s = Tree::new(&src);
    for (i, &(secs, nanos)) in times.iter().enumerate() {
        s.file(format!("f{i}"), format!("file {i}").as_bytes())
            .link(format!("l{i}"), "f0")
            .file(format!("d{i}/inner"), b"x");
        touch_at(&s.p(format!("f{i}")), secs, nanos);
        touch_at(&s.p(format!("l{i}")), secs, nanos);
        touch_at(&s.p(format!("d{i}/inner")), secs, nanos);
        touch_at(&s.p(format!("d{i}")), secs, nanos);
    }
    touch_at(&src, times[0].0, times[0].1);
    ok(t.push(&src, &dst, &["--delete"]));
    assert_mirror(&src, &dst);
    let j = json(&t.push(&src, &dst, &["--delete", "--json"]));
    assert_eq!(j["files_transferred"], 0, "{j}");
    assert_eq!(j["meta_updated"], 0, "{j}");
    assert_eq!(j["other_created"], 0, "{j}");
    ok(t.pull(&dst, &back, &["--delete"]));
    assert_mirror(&src, &back);
    let j = json(&t.pull(&dst, &back, &["--delete", "--json"]));
    assert_eq!(j["files_transferred"], 0, "{j}");
    assert_eq!(j["meta_updated"], 0, "{j}");
}

/// 1901-12-15, 1938-01-01, 2100-01-01, 2300-01-01: inside ext4's range (1901-12-13 to
/// 2446-05-10 with 256-byte inodes; the tests' /tmp is ext4), outside i64 nanoseconds
/// for 1901 and 2300.
const FAR_TIMES: [(i64, u32); 4] = [
    (-2_147_385_600, 1),
    (-1_009_843_200, 999_999_999),
    (4_102_444_800, 0),
    (10_413_792_000, 123_456_789),
];

fn far_mtimes_round_trip_exactly_on_ext4(t: Target) {
    let d = tempfile::tempdir().unwrap();
    far_mtimes(t, d.path(), &FAR_TIMES);
}

fn far_mtimes_round_trip_exactly_on_tmpfs(t: Target) {
    let d = tempfile::tempdir().unwrap();
    let _fs = TmpFs::mount(d.path(), "16m");
    let mut times = FAR_TIMES.to_vec();
    times.extend([(100_000_000_000, 7), (-100_000_000_000, 0)]);
    far_mtimes(t, d.path(), &times);
}
