//! Exclude patterns against git itself: for each pattern set, git's own answer
//! (`git check-ignore --no-index`, the patterns in `.git/info/exclude`) on a real tree
//! is compared with what hasync's scan keeps, file by file. Every disagreement is a bug
//! in hasync. The patterns are the cases of gitignore(5) and of git's wildmatch
//! documentation and tests (character classes, escapes, `**`, anchoring, negation,
//! trailing spaces), written here as facts about git's behaviour, not copied code.

use crate::util::*;
use hasync::sync::scan::{Excludes, scan};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Files of the test tree: names that the patterns below tell apart.
const FILES: &[&str] = &[
    "a-",
    "a_",
    "a]",
    "a[",
    "a1",
    "a2",
    "a3",
    "a4",
    "ab",
    "aB",
    "a b",
    "a\\",
    "a*b",
    "a?b",
    "aXb",
    "ab[",
    "a[]b",
    "[ab]",
    "abc",
    "-",
    "c",
    "m",
    "n",
    "o",
    "#hash",
    "!important",
    "foo",
    "foo ",
    "Foo",
    "foo.txt",
    "bar.TXT",
    "x/foo",
    "x/y/foo",
    "x/y/z/foo",
    "x/bar",
    "d/foo/bar",
    "d/foo/baz/qux",
    "a/b/c",
    "a/x/b/c",
    "a/x/y/b/c",
    "abd/def",
    "top/keep.me",
    "top/drop.me",
    "logs/app.log",
    "logs/important.log",
    "sub/logs/deep.log",
    "sp ace/file",
    "tab\tname",
    "1",
    "_",
    "%",
];

/// Each entry is one set of patterns (as lines of a gitignore file).
const PATTERN_SETS: &[&[&str]] = &[
    // Character classes and escapes (wildmatch).
    &["a[\\-_]"],
    &["a[\\]]"],
    &["a[\\1-\\3]"],
    &["[a-e-n]"],
    &["a[]-]"],
    &["a[]]"],
    &["a[-a]"],
    &["a[a-]"],
    &["a[!b]"],
    &["a[^b]"],
    &["a[!]]"],
    &["a[[:spaci:]]"],
    &["[[::]ab]"],
    &["a[[:alpha:]]"],
    &["a[[:digit:]]"],
    &["a[[:upper:]]"],
    &["a[[:lower:]]"],
    &["a[[:space:]]b"],
    &["a[[:punct:]]"],
    &["a[[:xdigit:]]"],
    &["a[[:alnum:][:punct:]]"],
    &["[[:digit:][:punct:]]"],
    &["a[\\\\]"],
    &["[\\]"],
    &["a[]"],
    &["ab["],
    &["a[]b"],
    &["a["],
    &["a\\[]b"],
    &["\\[ab]"],
    &["[[]ab]"],
    &["a[b-a]"],
    &["a[Z-a]"],
    &["a\\*b"],
    &["a\\?b"],
    &["a?b"],
    &["a*b"],
    &["\\a\\b"],
    &["a\\"],
    &["foo\\"],
    // Stars.
    &["*"],
    &["a*"],
    &["*b"],
    &["**"],
    &["***/foo"],
    &["**/foo"],
    &["**foo"],
    &["foo**"],
    &["x/**"],
    &["x/**/foo"],
    &["a/**/b/c"],
    &["a/**b/c"],
    &["a**/c"],
    &["/a**"],
    &["x**/foo"],
    &["d/f*/ba?"],
    &["d/foo/**/qux"],
    &["x/y**"],
    &["d/**/"],
    &["x/*/foo"],
    &["*/foo"],
    &["x*/foo"],
    // Anchoring, directories.
    &["/foo"],
    &["foo/"],
    &["foo"],
    &["/x/foo"],
    &["x/foo"],
    &["y/foo"],
    &["/a/b"],
    &["logs/"],
    &["logs"],
    &["/logs/"],
    &["sub/"],
    &["d/foo/"],
    &["*.log"],
    &["*.txt"],
    &["*.TXT"],
    &["sp ace/"],
    &["tab?name"],
    // Comments, escapes of '#' and '!', trailing spaces.
    &["#hash"],
    &["\\#hash"],
    &["\\!important"],
    &["foo "],
    &["foo\\ "],
    &["foo\\  "],
    &["a\\ b"],
    &["   "],
    &[""],
    // Negation and order.
    &["*.log", "!important.log"],
    &["logs/", "!logs/important.log"],
    &["top/*", "!top/keep.me"],
    &["top/", "!top/keep.me"],
    &["!foo", "foo"],
    &["foo", "!foo"],
    &["x/", "!x/foo"],
    &["x/*", "!x/y/"],
    &["*", "!*/", "!*.txt"],
    &["!"],
    &["!/foo"],
];

fn git_ignored(tree: &Path, patterns: &[&str]) -> BTreeSet<String> {
    let mut exclude = patterns.join("\n");
    exclude.push('\n');
    std::fs::write(tree.join(".git/info/exclude"), exclude).unwrap();
    let mut c = Command::new("git");
    c.current_dir(tree)
        .args(["check-ignore", "--no-index", "-z", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("git check-ignore");
    let input: Vec<u8> = FILES
        .iter()
        .flat_map(|f| [f.as_bytes(), b"\0"].concat())
        .collect();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    // Exit 1: nothing ignored.
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "git check-ignore failed: {out:?}"
    );
    out.stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

fn hasync_ignored(tree: &Path, patterns: &[&str]) -> Result<BTreeSet<String>, String> {
    let ex = Excludes::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
    let s = scan(tree, &ex).unwrap().unwrap();
    let kept: BTreeSet<String> = s
        .entries
        .iter()
        .map(|e| String::from_utf8(e.path.as_bytes().to_vec()).unwrap())
        .collect();
    Ok(FILES
        .iter()
        .filter(|f| !kept.contains(**f))
        .map(|f| f.to_string())
        .collect())
}

#[test]
fn excludes_match_git_check_ignore() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    let t = Tree::new(&tree);
    for f in FILES {
        t.file(f, b"x");
    }
    let git = Command::new("git")
        .args(["init", "-q"])
        .arg(&tree)
        .output()
        .expect("git is missing: scripts/test installs it (apt-get install git)");
    assert!(git.status.success(), "git init: {git:?}");
    let mut wrong = Vec::new();
    for set in PATTERN_SETS {
        let expected = git_ignored(&tree, set);
        // hasync scans the tree without .git (the git directory itself is excluded here).
        let mut with_git: Vec<&str> = vec!["/.git/"];
        with_git.extend_from_slice(set);
        match hasync_ignored(&tree, &with_git) {
            Ok(got) if got == expected => {}
            Ok(got) => wrong.push(format!(
                "{set:?}: git ignores {:?}, hasync {:?}",
                expected.difference(&got).collect::<Vec<_>>(),
                got.difference(&expected).collect::<Vec<_>>()
            )),
            Err(e) => wrong.push(format!("{set:?}: git accepts it, hasync refuses it: {e}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} pattern sets disagree with git:\n{}",
        wrong.len(),
        PATTERN_SETS.len(),
        wrong.join("\n")
    );
}
