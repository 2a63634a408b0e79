//! Faults on the receiving host: a full disk, a directory that refuses writes.
//! Nothing already on the slave may be lost or half-written, the error must
//! name the file, and the rest of the run must still complete.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn temp_files(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hasync-tmp."))
        .collect()
}

#[test]
fn full_disk_mid_file_keeps_the_old_copy_and_says_so() {
    let disk = tempfile::tempdir().unwrap();
    let _tmpfs = TmpFs::mount(disk.path(), "6m");
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), disk.path().join("dst"));
    let old = pseudo(3 << 20, 1);
    Tree::new(&src).file("big.bin", &old).file("a.txt", b"a\n");
    ok(hasync().arg("push").arg(&src).arg(&dst).output().unwrap());
    // The new version does not fit beside the old one (a temp copy is needed).
    let new = pseudo(4 << 20, 2);
    std::fs::write(src.join("big.bin"), &new).unwrap();
    std::fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let o = hasync().arg("push").arg(&src).arg(&dst).output().unwrap();
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("big.bin"),
        "the error must name the file: {msg}"
    );
    assert!(msg.to_lowercase().contains("no space"), "{msg}");
    assert_eq!(
        std::fs::read(dst.join("big.bin")).unwrap(),
        old,
        "the old copy was damaged"
    );
    // The rest of the run completed.
    assert_eq!(std::fs::read(dst.join("a.txt")).unwrap(), b"changed\n");
    assert!(
        temp_files(&dst).is_empty(),
        "temp files left: {:?}",
        temp_files(&dst)
    );
    // Room again: the next run converges.
    std::fs::remove_file(dst.join("a.txt")).unwrap();
    let small = pseudo(1 << 20, 3);
    std::fs::write(src.join("big.bin"), &small).unwrap();
    ok(hasync().arg("push").arg(&src).arg(&dst).output().unwrap());
    assert_mirror(&src, &dst);
}

/// `chattr +i` on a directory: even root cannot create files in it.
struct Immutable(PathBuf);

impl Immutable {
    fn set(p: &Path) -> Immutable {
        let st = Command::new("chattr")
            .arg("+i")
            .arg(p)
            .status()
            .expect("chattr (e2fsprogs)");
        assert!(st.success(), "chattr +i failed on {}", p.display());
        Immutable(p.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn one_unwritable_directory_fails_only_its_files() {
    // On ext4 (the temp dir of the test host), not tmpfs: chattr needs it.
    let d = tempfile::tempdir_in("/var/tmp").unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    Tree::new(&src)
        .file("locked/old.txt", b"old\n")
        .file("open/x.txt", b"x\n");
    ok(hasync().arg("push").arg(&src).arg(&dst).output().unwrap());
    std::fs::write(src.join("locked/new.txt"), b"new\n").unwrap();
    std::fs::write(src.join("open/y.txt"), b"y\n").unwrap();
    std::fs::write(src.join("top.txt"), b"top\n").unwrap();
    let o = {
        let _lock = Immutable::set(&dst.join("locked"));
        hasync().arg("push").arg(&src).arg(&dst).output().unwrap()
    };
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("locked/new.txt"),
        "the error must name the file: {msg}"
    );
    assert_eq!(std::fs::read(dst.join("open/y.txt")).unwrap(), b"y\n");
    assert_eq!(std::fs::read(dst.join("top.txt")).unwrap(), b"top\n");
    assert_eq!(std::fs::read(dst.join("locked/old.txt")).unwrap(), b"old\n");
    assert!(!dst.join("locked/new.txt").exists());
    // Unlocked: the next run converges.
    ok(hasync().arg("push").arg(&src).arg(&dst).output().unwrap());
    assert_mirror(&src, &dst);
}
