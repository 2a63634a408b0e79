//! Output hygiene: file names with control characters (newline, CR, tab, ESC,
//! bytes 0x01-0x1f, 0x7f) or invalid UTF-8 never reach stdout or stderr raw,
//! in itemized lines, logs (debug level), dry runs, JSON, or errors. They are
//! escaped as `\n`, `\r`, `\t`, `\x1b`, `\xff` (rsync writes `\#ooo`; hasync
//! uses the `\x` form everywhere, and `\\` for a backslash in a name).

use crate::util::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

const NAMES: &[&[u8]] = &[
    b"nl\nforged: line",
    b"esc\x1b[31mred\x1b[0m",
    b"cr\rname",
    b"tab\tname",
    b"c\x01\x02\x07\x08\x1f",
    b"del\x7f",
    b"bad\xff\xfeutf8",
    b"back\\slash",
];

/// No control byte but the newline, and valid UTF-8 (invalid bytes are escaped).
fn assert_clean(what: &str, out: &[u8]) {
    for (i, &b) in out.iter().enumerate() {
        assert!(
            b == b'\n' || (b >= 0x20 && b != 0x7f),
            "{what}: raw control byte {b:#04x} at {i}: {:?}",
            String::from_utf8_lossy(out)
        );
    }
    let s = std::str::from_utf8(out).unwrap_or_else(|e| {
        panic!(
            "{what}: invalid UTF-8 ({e}): {:?}",
            String::from_utf8_lossy(out)
        )
    });
    // C1 controls (U+0080..U+009F) are terminal controls too.
    assert!(
        !s.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: {s:?}"
    );
}

fn tree(src: &std::path::Path) {
    let t = Tree::new(src);
    for (i, n) in NAMES.iter().enumerate() {
        let name = OsStr::from_bytes(n);
        t.file(name, format!("content {i}").as_bytes());
        t.dir(OsStr::from_bytes(&[b"dir-", *n].concat()));
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(b"target\n\x1b[2Jx\xff"), src.join("link"))
        .unwrap();
}

#[test]
fn control_characters_in_names_are_escaped_everywhere() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    tree(&src);
    let run = |args: &[&str], from: &std::path::Path, to: &std::path::Path| {
        let mut c = hasync();
        c.env("HASYNC_LOG", "debug")
            .arg("push")
            .arg(from)
            .arg(to)
            .args(args);
        c.output().unwrap()
    };
    // Dry run, then the real run, itemized, with debug logs.
    for (what, args) in [
        ("dry run", &["-vv", "--dry-run"][..]),
        ("push", &["-vv"][..]),
        ("json", &["--json"][..]),
    ] {
        let o = run(args, &src, &dst);
        assert!(o.status.success(), "{what}: {}", text(&o));
        assert_clean(&format!("{what} stdout"), &o.stdout);
        assert_clean(&format!("{what} stderr"), &o.stderr);
        if what == "dry run" {
            let out = String::from_utf8_lossy(&o.stdout);
            for escaped in [
                r"nl\nforged: line",
                r"esc\x1b[31m",
                r"cr\rname",
                r"tab\tname",
                r"c\x01\x02\x07\x08\x1f",
                r"del\x7f",
                r"bad\xff\xfeutf8",
                r"back\\slash",
                r"-> target\n\x1b[2Jx\xff",
            ] {
                assert!(out.contains(escaped), "{escaped} missing from:\n{out}");
            }
        }
    }
    assert_mirror(&src, &dst);
    // Deletions of such names (and a pull), itemized.
    for n in NAMES {
        std::fs::remove_file(src.join(OsStr::from_bytes(n))).unwrap();
    }
    let o = run(&["-vv", "--delete"], &src, &dst);
    assert!(o.status.success(), "{}", text(&o));
    assert_clean("delete stdout", &o.stdout);
    assert_clean("delete stderr", &o.stderr);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(r"*deleting"),
        "{}",
        text(&o)
    );
    let back = d.path().join("back");
    let mut c = hasync();
    let o = c
        .env("HASYNC_LOG", "debug")
        .arg("pull")
        .arg(&dst)
        .arg(&back)
        .arg("-vv")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_clean("pull stdout", &o.stdout);
    assert_clean("pull stderr", &o.stderr);
}

#[test]
fn a_top_level_error_naming_such_a_path_is_one_escaped_line() {
    let d = tempfile::tempdir().unwrap();
    let dst = d.path().join("dst");
    // A missing source named with control characters: the top-level error.
    let o = hasync()
        .arg("push")
        .arg(d.path().join(OsStr::from_bytes(b"missing\n\x1b[31m")))
        .arg(&dst)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_clean("missing stdout", &o.stdout);
    assert_clean("missing stderr", &o.stderr);
    assert_eq!(
        o.stderr.iter().filter(|&&b| b == b'\n').count(),
        1,
        "the error is one line: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(r"missing\n\x1b[31m"),
        "{}",
        text(&o)
    );
}
