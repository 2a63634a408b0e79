//! A hostile peer: a hand-written client speaking hasync's protocol to a real
//! `hasync serve`, sending malformed and malicious messages one by one. Each
//! must end in a clear protocol error, no panic, nothing written (or read)
//! outside the served root, and old files left intact.

use crate::util::*;
use hasync::tree::manifest::{Entry, Kind, Mtime};
use hasync::tree::path::RelPath;
use hasync::wire::frame::Enc;
use hasync::wire::{FrameReader, FrameWriter, Msg, Open, ServerRole, SessionOptions, Want};
use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

// Message tags, as documented in docs/ARCHITECTURE.md.
const MANIFEST: u8 = 10;

struct Peer {
    child: Child,
    rd: FrameReader<ChildStdout>,
    /// `None` once our side of the input is closed (end of input for the peer).
    wr: Option<FrameWriter<ChildStdin>>,
}

impl Peer {
    fn start() -> Peer {
        Peer::start_with(&[])
    }

    /// `hasync serve ARGS...` (e.g. `--allow DIR`, as a restricted key runs it).
    fn start_with(args: &[&std::ffi::OsStr]) -> Peer {
        let mut child = Command::new(bin())
            .arg("serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rd = FrameReader::new(child.stdout.take().unwrap());
        let wr = FrameWriter::new(child.stdin.take().unwrap());
        Peer {
            child,
            rd,
            wr: Some(wr),
        }
    }

    fn send(&mut self, m: &Msg) {
        self.raw(&m.encode());
    }

    /// Send a payload as one frame; the peer may already have hung up.
    fn raw(&mut self, payload: &[u8]) {
        let wr = self.wr.as_mut().expect("input still open");
        let _ = wr.write_frame(payload);
        let _ = wr.flush();
    }

    fn recv(&mut self) -> Option<Msg> {
        self.rd.read_frame().ok().and_then(|f| Msg::decode(f).ok())
    }

    fn hello(&mut self) {
        self.send(&Msg::Hello {
            major: hasync::wire::message::PROTO_MAJOR,
            minor: 0,
            software: "hostile".into(),
        });
        assert!(matches!(self.recv(), Some(Msg::HelloOk { .. })));
    }

    fn open(&mut self, role: ServerRole, root: &Path) {
        let root = root.as_os_str().as_encoded_bytes().to_vec();
        self.send(&Msg::Open(Open {
            role,
            root,
            options: SessionOptions {
                delete: true,
                ..Default::default()
            },
        }));
        match self.recv() {
            Some(Msg::OpenOk) => {}
            other => panic!("open refused: {other:?}"),
        }
    }

    /// Read until the peer's Error (returned) or the end of its output; then
    /// check it exited with a non-zero, non-panic status.
    fn expect_refusal(mut self) -> String {
        let mut error = String::new();
        for _ in 0..100_000 {
            match self.recv() {
                Some(Msg::Error { message, .. }) => {
                    error = message;
                    break;
                }
                Some(_) => continue,
                None => break,
            }
        }
        drop(self.wr.take());
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "serve accepted it; stderr: {stderr}");
        assert_ne!(status.code(), Some(101), "serve panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "serve panicked: {stderr}");
        if error.is_empty() {
            error = stderr;
        }
        assert!(!error.trim().is_empty(), "no error message");
        error
    }
}

fn root_entry() -> Entry {
    Entry {
        path: RelPath::root(),
        kind: Kind::Dir,
        size: 0,
        mtime: Mtime::from_nanos(0),
        mode: 0o755,
        uid: 0,
        gid: 0,
        target: vec![],
        hash: None,
    }
}

fn file_entry(p: &str, size: u64) -> Entry {
    Entry {
        path: RelPath::from_wire(p.as_bytes()).unwrap(),
        kind: Kind::File,
        size,
        mtime: Mtime::from_nanos(5),
        mode: 0o644,
        uid: 0,
        gid: 0,
        target: vec![],
        hash: None,
    }
}

/// A manifest frame with one raw (unvalidated) path after the root entry.
fn raw_manifest(path: &[u8], kind: u8) -> Vec<u8> {
    let mut e = Enc::tag(MANIFEST);
    e.u32(2);
    e.bytes(b"")
        .u8(1)
        .u64(0)
        .i64(0)
        .u32(0o755)
        .u32(0)
        .u32(0)
        .bytes(b"")
        .bool(false);
    e.bytes(path)
        .u8(kind)
        .u64(1)
        .i64(0)
        .u32(0o644)
        .u32(0)
        .u32(0)
        .bytes(b"")
        .bool(false);
    e.0
}

/// A fresh sandbox: `root` is served, everything else must stay untouched.
fn sandbox() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("a/b/root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("old"), b"old content").unwrap();
    (d, root)
}

fn assert_untouched(d: &Path) {
    let snap = snapshot(d);
    let names: Vec<String> = snap
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["", "a", "a/b", "a/b/root", "a/b/root/old"],
        "something was written"
    );
    assert_eq!(
        std::fs::read(d.join("a/b/root/old")).unwrap(),
        b"old content"
    );
}

#[test]
fn hostile_paths_in_the_manifest_are_refused() {
    for (path, why) in [
        (&b"../x"[..], ".."),
        (b"/etc/x", "absolute"),
        (b"a/../../x", ".."),
        (b"x\0y", "NUL"),
        (b"./x", "'.'"),
        (b"x//y", "empty"),
    ] {
        let (d, root) = sandbox();
        let mut p = Peer::start();
        p.hello();
        p.open(ServerRole::Receive, &root);
        p.raw(&raw_manifest(path, 0));
        let err = p.expect_refusal();
        assert!(
            err.contains("path") || err.contains("malformed"),
            "{why}: {err}"
        );
        assert_untouched(d.path());
    }
}

#[test]
fn symlink_then_file_beneath_it_is_refused() {
    let (d, root) = sandbox();
    let mut p = Peer::start();
    p.hello();
    p.open(ServerRole::Receive, &root);
    let link = Entry {
        kind: Kind::Symlink,
        target: d.path().join("a").as_os_str().as_encoded_bytes().to_vec(),
        ..file_entry("d", 0)
    };
    p.send(&Msg::Manifest(vec![
        root_entry(),
        link,
        file_entry("d/file", 4),
    ]));
    p.send(&Msg::ManifestEnd {
        count: 3,
        scan_errors: 0,
    });
    let err = p.expect_refusal();
    assert!(err.contains("beneath a symlink"), "{err}");
    assert_untouched(d.path());
}

#[test]
fn existing_symlink_on_the_receiver_is_never_written_through() {
    // The receiver already has d -> outside (say, from an earlier run); the sender
    // now claims d is a directory holding a file. The symlink is replaced, not followed.
    let (d, root) = sandbox();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
    let src = d.path().join("src");
    Tree::new(&src).file("d/file", b"payload");
    let o = hasync().arg("push").arg(&src).arg(&root).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote through the symlink"
    );
    assert_eq!(std::fs::read(root.join("d/file")).unwrap(), b"payload");
}

/// Start a push session whose manifest has `f` (size `size`) and read the receiver's request.
fn session_with_request(root: &Path, size: u64) -> (Peer, Want) {
    let mut p = Peer::start();
    p.hello();
    p.open(ServerRole::Receive, root);
    p.send(&Msg::Manifest(vec![root_entry(), file_entry("old", size)]));
    p.send(&Msg::ManifestEnd {
        count: 2,
        scan_errors: 0,
    });
    let want = loop {
        match p.recv() {
            Some(Msg::Want(w)) => break w,
            Some(_) => continue,
            None => panic!("no request from the receiver"),
        }
    };
    (p, want)
}

#[test]
fn delta_copying_outside_the_base_is_refused() {
    let (d, root) = sandbox();
    // An old copy of at least one block (smaller ones are asked for whole).
    let old = vec![b'o'; 4096];
    std::fs::write(root.join("old"), &old).unwrap();
    let (mut p, want) = session_with_request(&root, 5000);
    assert!(
        want.signature.is_some(),
        "a delta should be requested for a file with an old copy"
    );
    p.send(&Msg::FileBegin {
        idx: want.idx,
        delta: true,
    });
    p.send(&Msg::Copy {
        offset: 4000,
        len: 500,
    }); // the old file has 4096 bytes
    let err = p.expect_refusal();
    assert!(err.contains("outside the old file"), "{err}");
    std::fs::write(root.join("old"), b"old content").unwrap();
    assert_untouched(d.path());
}

#[test]
fn delta_for_a_file_requested_whole_is_refused() {
    let (d, root) = sandbox();
    // An old copy smaller than one block: the receiver asks for the file whole.
    std::fs::write(root.join("old"), b"old content").unwrap();
    let (mut p, want) = session_with_request(&root, 5000);
    assert!(
        want.signature.is_none(),
        "a small old copy is asked for whole"
    );
    p.send(&Msg::FileBegin {
        idx: want.idx,
        delta: true,
    });
    p.send(&Msg::Copy { offset: 0, len: 11 });
    let err = p.expect_refusal();
    assert!(err.contains("requested whole"), "{err}");
    assert_untouched(d.path());
}

#[test]
fn more_data_than_declared_is_refused() {
    let (d, root) = sandbox();
    let (mut p, want) = session_with_request(&root, 4);
    p.send(&Msg::FileBegin {
        idx: want.idx,
        delta: false,
    });
    p.send(&Msg::Data(vec![b'x'; 10]));
    let err = p.expect_refusal();
    assert!(err.contains("more than"), "{err}");
    assert_untouched(d.path());
}

#[test]
fn wrong_hash_never_replaces_the_old_file() {
    let (d, root) = sandbox();
    let (mut p, want) = session_with_request(&root, 4);
    p.send(&Msg::FileBegin {
        idx: want.idx,
        delta: false,
    });
    p.send(&Msg::Data(b"evil".to_vec()));
    p.send(&Msg::FileEnd {
        size: 4,
        hash: [0; 32],
    });
    // A delta request is retried whole once; answer the retry the same way.
    if let Some(Msg::Want(w)) = p.recv() {
        p.send(&Msg::FileBegin {
            idx: w.idx,
            delta: false,
        });
        p.send(&Msg::Data(b"evil".to_vec()));
        p.send(&Msg::FileEnd {
            size: 4,
            hash: [0; 32],
        });
    }
    drop(p.wr.take());
    let _ = p.child.wait();
    assert_untouched(d.path());
}

#[test]
fn unrequested_file_and_out_of_order_messages_are_refused() {
    let (d, root) = sandbox();
    let (mut p, _want) = session_with_request(&root, 4);
    p.send(&Msg::FileBegin {
        idx: 0,
        delta: false,
    }); // the root, never requested
    assert!(p.expect_refusal().contains("unrequested"));
    assert_untouched(d.path());

    let (d, root) = sandbox();
    let (mut p, _) = session_with_request(&root, 4);
    p.send(&Msg::Data(b"data before FileBegin".to_vec()));
    assert!(p.expect_refusal().contains("outside a file"));
    assert_untouched(d.path());

    let (d, root) = sandbox();
    let mut p = Peer::start();
    p.hello();
    p.open(ServerRole::Receive, &root);
    p.send(&Msg::FileEnd {
        size: 0,
        hash: [0; 32],
    });
    assert!(p.expect_refusal().contains("unexpected"));
    assert_untouched(d.path());
}

#[test]
fn signature_with_block_size_zero_is_refused_by_the_sender() {
    let (d, root) = sandbox();
    let mut p = Peer::start();
    p.hello();
    p.open(ServerRole::Send, &root);
    let idx = loop {
        match p.recv() {
            Some(Msg::Manifest(entries)) => {
                break entries.iter().position(|e| e.kind == Kind::File).unwrap() as u32;
            }
            Some(_) => continue,
            None => panic!("no manifest"),
        }
    };
    while !matches!(p.recv(), Some(Msg::ManifestEnd { .. }) | None) {}
    let mut sig = hasync::sync::delta::SIG_MAGIC.to_be_bytes().to_vec();
    sig.extend_from_slice(&0u32.to_be_bytes());
    sig.extend_from_slice(&8u32.to_be_bytes());
    p.send(&Msg::Want(Want {
        idx,
        signature: Some(sig),
    }));
    let err = p.expect_refusal();
    assert!(err.contains("block size"), "{err}");
    assert_untouched(d.path());
}

#[test]
fn request_for_a_non_file_entry_is_refused_by_the_sender() {
    let (d, root) = sandbox();
    let mut p = Peer::start();
    p.hello();
    p.open(ServerRole::Send, &root);
    while !matches!(p.recv(), Some(Msg::ManifestEnd { .. }) | None) {}
    p.send(&Msg::Want(Want {
        idx: 0,
        signature: None,
    })); // the root directory
    p.send(&Msg::Want(Want {
        idx: 999_999,
        signature: None,
    }));
    assert!(p.expect_refusal().contains("not a file"));
    assert_untouched(d.path());
}

#[test]
fn bad_versions_oversized_and_truncated_frames() {
    // Another major version.
    let mut p = Peer::start();
    p.send(&Msg::Hello {
        major: 99,
        minor: 0,
        software: "hasync 99.0".into(),
    });
    let err = p.expect_refusal();
    assert!(
        err.contains("protocol version mismatch") && err.contains("99"),
        "{err}"
    );

    // A peer of protocol 1 (fast_rsync's MD4 signatures): refused with the same message.
    let mut p = Peer::start();
    p.send(&Msg::Hello {
        major: 1,
        minor: 0,
        software: "hasync 0.1.0".into(),
    });
    let err = p.expect_refusal();
    assert!(
        err.contains("protocol version mismatch") && err.contains("speaks 1"),
        "{err}"
    );

    // Not hasync at all.
    let mut p = Peer::start();
    p.raw(b"\x01SSH-2.0-OpenSSH");
    assert!(p.expect_refusal().contains("not speaking hasync"));

    // A frame length of 4 GiB: refused before any allocation.
    use std::io::Write;
    let mut p = Peer::start();
    p.hello();
    {
        let mut w = RawWriter(p.wr.as_mut().unwrap());
        let _ = w.write_all(&u32::MAX.to_be_bytes());
        let _ = w.flush();
    }
    let err = p.expect_refusal();
    assert!(err.contains("exceeds the limit"), "{err}");

    // A truncated frame followed by end of input.
    let mut p = Peer::start();
    p.hello();
    {
        let mut w = RawWriter(p.wr.as_mut().unwrap());
        let _ = w.write_all(&[0, 0, 0, 50, 3, 0]);
        let _ = w.flush();
    }
    drop(p.wr.take()); // end of input in the middle of the frame
    assert!(p.expect_refusal().contains("truncated"));

    // Unknown message tag, and Open with a relative root.
    let mut p = Peer::start();
    p.hello();
    p.raw(&[200]);
    assert!(p.expect_refusal().contains("unknown message tag"));
    let mut p = Peer::start();
    p.hello();
    p.send(&Msg::Open(Open {
        role: ServerRole::Receive,
        root: b"relative/dir".to_vec(),
        options: SessionOptions::default(),
    }));
    assert!(p.expect_refusal().contains("not an absolute path"));
}

/// Writes raw bytes (no framing) through a FrameWriter's stream.
struct RawWriter<'a>(&'a mut FrameWriter<ChildStdin>);
impl std::io::Write for RawWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_raw(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[test]
fn restricted_serve_never_opens_a_root_through_a_symlink() {
    let (d, allowed) = sandbox();
    let outside = d.path().join("outside");
    // A symlink that an earlier (legitimate-looking) push could have mirrored.
    std::os::unix::fs::symlink(&outside, allowed.join("x")).unwrap();
    let allow = allowed.as_os_str();
    for target in [allowed.join("x"), allowed.join("x/deeper")] {
        let mut p = Peer::start_with(&["--allow".as_ref(), allow]);
        p.hello();
        let root = target.as_os_str().as_encoded_bytes().to_vec();
        p.send(&Msg::Open(Open {
            role: ServerRole::Receive,
            root,
            options: SessionOptions::default(),
        }));
        let err = p.expect_refusal();
        assert!(err.contains("is a symlink"), "{err}");
    }
    // Outside the allowed directory altogether.
    let mut p = Peer::start_with(&["--allow".as_ref(), allow]);
    p.hello();
    let root = outside.as_os_str().as_encoded_bytes().to_vec();
    p.send(&Msg::Open(Open {
        role: ServerRole::Send,
        root,
        options: SessionOptions::default(),
    }));
    assert!(
        p.expect_refusal()
            .contains("outside the directories this peer serves")
    );
    assert!(
        !outside.exists(),
        "something was created through the symlink"
    );
    // A real directory below the allowed one is served.
    std::fs::create_dir(allowed.join("real")).unwrap();
    let mut p = Peer::start_with(&["--allow".as_ref(), allow]);
    p.hello();
    p.open(ServerRole::Receive, &allowed.join("real/new"));
}

/// Sends a manifest holding one file `name` with `content` on an open Receive session,
/// answers the receiver's request, then ends the session and waits for the serve.
fn push_one_file(mut p: Peer, name: &str, content: &[u8]) {
    let size = content.len() as u64;
    p.send(&Msg::Manifest(vec![root_entry(), file_entry(name, size)]));
    p.send(&Msg::ManifestEnd {
        count: 2,
        scan_errors: 0,
    });
    while let Some(m) = p.recv() {
        match m {
            Msg::Want(w) => {
                p.send(&Msg::FileBegin {
                    idx: w.idx,
                    delta: false,
                });
                p.send(&Msg::Data(content.to_vec()));
                p.send(&Msg::FileEnd {
                    size,
                    hash: *blake3::hash(content).as_bytes(),
                });
            }
            Msg::Error { .. } | Msg::Done(_) => break,
            _ => {}
        }
    }
    drop(p.wr.take());
    let _ = p.child.wait();
}

/// A real push through a restricted serve (`hasync serve --allow ALLOW`).
fn restricted_push(allow: &Path, src: &Path, dest: &Path) -> Result<(), String> {
    let t = hasync::transport::local::LocalTransport {
        program: bin(),
        peer_config: None,
    };
    let args = ["--allow".to_string(), allow.display().to_string()];
    let mut c = hasync::sync::client::Client::connect(&t, &args).map_err(|e| e.to_string())?;
    let opts = SessionOptions {
        delete: true,
        ..Default::default()
    };
    let res = c.push(src, dest, &opts, &mut hasync::tree::report::Silent);
    res.map(|_| ()).map_err(|e| e.to_string())
}

fn assert_empty(dir: &Path) {
    let found: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    assert!(found.is_empty(), "written outside: {found:?}");
}

/// Two sessions with the same restricted key at once (SSH allows it): A opens a root
/// beneath `d`, then B mirrors a symlink over `d` before A sends its manifest. A must
/// keep writing where its root was when it was opened, never through the new symlink.
#[test]
fn a_concurrent_session_cannot_walk_a_restricted_root_out_through_a_symlink() {
    let (d, allowed) = sandbox();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(allowed.join("d")).unwrap();
    let allow = allowed.as_os_str();
    let mut a = Peer::start_with(&["--allow".as_ref(), allow]);
    a.hello();
    a.open(ServerRole::Receive, &allowed.join("d/sub"));
    // B: a legitimate-looking push that makes `d` a symlink to a directory outside.
    let src = d.path().join("src");
    Tree::new(&src).file("old", b"old content");
    std::os::unix::fs::symlink(&outside, src.join("d")).unwrap();
    restricted_push(&allowed, &src, &allowed).expect("B's push");
    assert!(allowed.join("d").is_symlink(), "B's push did not land");
    push_one_file(a, "pwned", b"pwned");
    assert_empty(&outside);
}

/// Nested `--allow` entries, in both orders: an inner allowed directory that a peer
/// replaced by a symlink (mirrored into the outer one) is never followed.
#[test]
fn nested_allows_never_follow_a_mirrored_symlink_in_either_order() {
    for inner_first in [false, true] {
        let (d, allowed) = sandbox();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let inner = allowed.join("inner");
        // What an earlier push into the outer directory could have left there.
        std::os::unix::fs::symlink(&outside, &inner).unwrap();
        let (first, second) = match inner_first {
            true => (inner.as_os_str(), allowed.as_os_str()),
            false => (allowed.as_os_str(), inner.as_os_str()),
        };
        let mut p = Peer::start_with(&["--allow".as_ref(), first, "--allow".as_ref(), second]);
        p.hello();
        p.send(&Msg::Open(Open {
            role: ServerRole::Receive,
            root: inner.join("x").as_os_str().as_encoded_bytes().to_vec(),
            options: SessionOptions::default(),
        }));
        let err = match p.recv() {
            Some(Msg::Error { message, .. }) => message,
            other => panic!("inner first: {inner_first}: not refused: {other:?}"),
        };
        assert!(err.contains("symlink"), "inner first: {inner_first}: {err}");
        assert_empty(&outside);
    }
}

/// `/x/data` allowed does not allow its prefix sibling `/x/database`.
#[test]
fn a_prefix_sibling_of_an_allowed_directory_is_outside() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let database = d.path().join("database");
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&database).unwrap();
    for role in [ServerRole::Receive, ServerRole::Send] {
        let mut p = Peer::start_with(&["--allow".as_ref(), data.as_os_str()]);
        p.hello();
        p.send(&Msg::Open(Open {
            role,
            root: database.as_os_str().as_encoded_bytes().to_vec(),
            options: SessionOptions::default(),
        }));
        let err = p.expect_refusal();
        assert!(err.contains("outside the directories"), "{err}");
    }
    assert_empty(&database);
}
