//! Helpers for integration tests: run the real `hasync` binary against temp
//! trees, build trees, and compare them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hasync"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn hasync() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("HASYNC_CONFIG").env("HASYNC_LOG", "warn");
    c
}

/// Where the other end of a sync lives: the local child transport or the test sshd.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Local,
    Ssh,
}

impl Target {
    /// The location argument for `dir` on the peer.
    pub fn loc(self, dir: &Path) -> String {
        match self {
            Target::Local => dir.display().to_string(),
            Target::Ssh => format!(
                "ssh://root@127.0.0.1:{}{}",
                crate::sshd::Sshd::shared().port,
                dir.display()
            ),
        }
    }

    /// Extra arguments the transport needs.
    pub fn args(self) -> Vec<String> {
        match self {
            Target::Local => vec![],
            Target::Ssh => {
                let sshd = crate::sshd::Sshd::shared();
                let kh = sshd.dir.path().join("client_known_hosts");
                if !kh.exists() {
                    sshd.write_known_hosts(&kh);
                }
                vec![
                    "--identity".into(),
                    sshd.client_key.display().to_string(),
                    "--known-hosts".into(),
                    kh.display().to_string(),
                    "--remote-path".into(),
                    bin().display().to_string(),
                ]
            }
        }
    }

    /// `hasync push SRC <peer DEST> ARGS...`
    pub fn push(self, src: &Path, dest: &Path, args: &[&str]) -> Output {
        let mut c = hasync();
        c.arg("push")
            .arg(src)
            .arg(self.loc(dest))
            .args(args)
            .args(self.args());
        c.output().expect("run hasync")
    }

    /// `hasync pull <peer SRC> DEST ARGS...`
    pub fn pull(self, src: &Path, dest: &Path, args: &[&str]) -> Output {
        let mut c = hasync();
        c.arg("pull")
            .arg(self.loc(src))
            .arg(dest)
            .args(args)
            .args(self.args());
        c.output().expect("run hasync")
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Assert success and return stdout.
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "hasync failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Parse the `--json` stats object from stdout.
pub fn json(o: &Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&o.stdout);
    let line = s
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no JSON output: {}", text(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}\n{}", text(o)))
}

/// What a tree holds, per relative path: everything a mirror must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub size: u64,
    pub mode: u32,
    /// Seconds and nanoseconds (any time the file system holds: no overflow).
    pub mtime: (i64, i64),
    pub target: Vec<u8>,
    pub hash: String,
}

pub type Snapshot = BTreeMap<Vec<u8>, Node>;

/// Snapshot a tree (the root itself under the empty path), skipping our temp files if `skip_temps`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let md = e.path().symlink_metadata().unwrap();
        let ft = md.file_type();
        let (kind, target, hash) = if ft.is_symlink() {
            (
                'l',
                std::fs::read_link(e.path())
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
                String::new(),
            )
        } else if ft.is_dir() {
            ('d', vec![], String::new())
        } else {
            let data = std::fs::read(e.path()).unwrap();
            ('f', vec![], blake3::hash(&data).to_hex().to_string())
        };
        out.insert(
            rel,
            Node {
                kind,
                size: if kind == 'f' { md.len() } else { 0 },
                mode: md.mode() & 0o7777,
                mtime: (md.mtime(), md.mtime_nsec()),
                target,
                hash,
            },
        );
    }
    out
}

/// Assert that `dst` mirrors `src` exactly (contents, kinds, modes, mtimes, symlink targets).
pub fn assert_mirror(src: &Path, dst: &Path) {
    let (a, b) = (snapshot(src), snapshot(dst));
    for (p, n) in &a {
        match b.get(p) {
            None => panic!("missing in mirror: {}", String::from_utf8_lossy(p)),
            Some(m) => {
                // Symlink mtimes are mirrored too; the root's mtime as well.
                assert_eq!(n, m, "differs: {:?}", String::from_utf8_lossy(p));
            }
        }
    }
    for p in b.keys() {
        assert!(
            a.contains_key(p),
            "extra in mirror: {}",
            String::from_utf8_lossy(p)
        );
    }
}

/// Build trees tersely.
pub struct Tree(pub PathBuf);

impl Tree {
    pub fn new(root: &Path) -> Tree {
        std::fs::create_dir_all(root).unwrap();
        Tree(root.to_path_buf())
    }
    pub fn p(&self, rel: impl AsRef<OsStr>) -> PathBuf {
        self.0.join(Path::new(rel.as_ref()))
    }
    pub fn file(&self, rel: impl AsRef<OsStr>, data: &[u8]) -> &Self {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        self
    }
    pub fn dir(&self, rel: impl AsRef<OsStr>) -> &Self {
        std::fs::create_dir_all(self.p(rel)).unwrap();
        self
    }
    pub fn link(&self, rel: impl AsRef<OsStr>, target: &str) -> &Self {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &p).unwrap();
        self
    }
    pub fn mode(&self, rel: impl AsRef<OsStr>, mode: u32) -> &Self {
        std::fs::set_permissions(self.p(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }
    pub fn mtime(&self, rel: impl AsRef<OsStr>, secs: i64) -> &Self {
        let f = std::fs::File::options()
            .write(true)
            .open(self.p(rel))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
            .unwrap();
        self
    }
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for gigabytes.
pub fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A tmpfs mounted on `dir` for one test (root only); unmounted on drop.
pub struct TmpFs(PathBuf);

impl TmpFs {
    pub fn mount(dir: &Path, size: &str) -> TmpFs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "cannot mount a tmpfs on {} (the tests run as root)",
            dir.display()
        );
        TmpFs(dir.to_path_buf())
    }
}

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Polls `cond` every 20 ms until it holds, or panics after `secs` with `what()`.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let t0 = std::time::Instant::now();
    // Poll fast at first, then back off: a check of a big tree costs CPU the daemon needs.
    let mut pause = std::time::Duration::from_millis(20);
    while !cond() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(secs),
            "timed out after {secs}s: {}",
            what()
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(300));
    }
}
