//! A hostile RECEIVER: a hand-written client that opens a session where a real
//! `hasync serve` is the sender (`Open{role: Send}`, i.e. a pull) and then sends
//! malformed or malicious requests. Each case must end in a clear protocol
//! error from serve (an `Error` message, else its stderr), with no panic, in
//! bounded time, and no byte of a secret file that lies outside the served
//! root (and is reachable through a symlink inside it) in anything serve sent.
//! (`hostile.rs` covers the other direction: a hostile sender.)

use crate::util::*;
use hasync::tree::manifest::{Entry, Kind};
use hasync::wire::frame::Enc;
use hasync::wire::{FrameReader, FrameWriter, Msg, Open, ServerRole, SessionOptions, Want};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WANT: u8 = 12;
const SIG_MAGIC: u32 = hasync::sync::delta::SIG_MAGIC;
/// fast_rsync's MD4 signature format (protocol 1).
const MD4_MAGIC: u32 = 0x7273_0136;
/// Each case must be over well within this (a hung serve is killed at this point and the test fails).
const CASE_LIMIT: Duration = Duration::from_secs(10);

struct Sandbox {
    _d: tempfile::TempDir,
    root: PathBuf,
    secret: Vec<u8>,
}

/// `<d>/secret` outside the root, `<d>/root/{a, sub/, sub/b, link -> ../secret}`.
fn sandbox() -> Sandbox {
    let d = tempfile::tempdir().unwrap();
    let secret = pseudo(64 * 1024, 0x5EC2E7);
    std::fs::write(d.path().join("secret"), &secret).unwrap();
    let root = d.path().join("root");
    let t = Tree::new(&root);
    t.file("a", &pseudo(200_000, 1))
        .file("sub/b", b"small file b")
        .link("link", "../secret");
    Sandbox {
        _d: d,
        root,
        secret,
    }
}

struct Peer {
    child: Child,
    rd: FrameReader<ChildStdout>,
    wr: Option<FrameWriter<ChildStdin>>,
    /// Every payload serve sent, for the secret check.
    seen: Vec<u8>,
    started: Instant,
    watchdog_stop: Arc<AtomicBool>,
}

impl Peer {
    fn start() -> Peer {
        let mut child = Command::new(bin())
            .arg("serve")
            .env("HASYNC_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rd = FrameReader::new(child.stdout.take().unwrap());
        let wr = FrameWriter::new(child.stdin.take().unwrap());
        // A serve that hangs is killed, so the test fails instead of hanging.
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, pid) = (stop.clone(), child.id());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < CASE_LIMIT {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        });
        Peer {
            child,
            rd,
            wr: Some(wr),
            seen: Vec::new(),
            started: Instant::now(),
            watchdog_stop: stop,
        }
    }

    fn raw(&mut self, payload: &[u8]) {
        let wr = self.wr.as_mut().expect("input open");
        let _ = wr.write_frame(payload);
        let _ = wr.flush();
    }

    fn send(&mut self, m: &Msg) {
        self.raw(&m.encode());
    }

    fn unframed(&mut self, bytes: &[u8]) {
        let wr = self.wr.as_mut().expect("input open");
        let _ = wr.write_raw(bytes);
        let _ = wr.flush();
    }

    fn recv(&mut self) -> Option<Msg> {
        let f = self.rd.read_frame().ok()?;
        self.seen.extend_from_slice(f);
        Msg::decode(f).ok()
    }

    fn hello(&mut self) {
        self.hello_as(0);
    }

    /// `Hello` as protocol 2.`minor`; `HelloOk`, and from 2.7 the serve's `Role` with it.
    fn hello_as(&mut self, minor: u16) {
        self.send(&Msg::Hello {
            major: hasync::wire::message::PROTO_MAJOR,
            minor,
            software: "hostile receiver".into(),
        });
        assert!(matches!(self.recv(), Some(Msg::HelloOk { .. })));
        if minor >= hasync::wire::message::MINOR_EAGER_ROLE {
            // A 2.7 serve sends its role with HelloOk, unasked.
            assert!(matches!(self.recv(), Some(Msg::Role(_))), "minor {minor}");
        }
    }

    /// `Open{Send}` of `root` (a pull), not waiting for the answer.
    fn open_send(&mut self, root: &Path) {
        self.send(&Msg::Open(Open {
            role: ServerRole::Send,
            root: root.as_os_str().as_encoded_bytes().to_vec(),
            options: SessionOptions::default(),
        }));
    }

    /// Hello, `Open{Send}` of `root`, and the whole manifest.
    fn pull(root: &Path) -> (Peer, Vec<Entry>) {
        let mut p = Peer::start();
        p.hello();
        p.open_send(root);
        assert!(matches!(p.recv(), Some(Msg::OpenOk)), "open refused");
        let mut entries = Vec::new();
        loop {
            match p.recv() {
                Some(Msg::Manifest(v)) => entries.extend(v),
                Some(Msg::ManifestEnd { .. }) => break,
                Some(Msg::Item(_)) => {}
                other => panic!("expected the manifest, got {other:?}"),
            }
        }
        (p, entries)
    }

    /// Read everything until serve's `Error` (returned) or end of output, then
    /// check: non-zero exit, no panic, bounded time, no secret byte sent.
    fn expect_refusal(mut self, secret: &[u8]) -> String {
        let mut error = String::new();
        loop {
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
        // Drain whatever is left, for the secret check.
        let mut rest = Vec::new();
        let mut out = self.child.stdout.take();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut rest);
        }
        self.seen.extend_from_slice(&rest);
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = self.child.wait().unwrap();
        self.watchdog_stop.store(true, Ordering::SeqCst);
        let took = self.started.elapsed();
        assert!(
            took < CASE_LIMIT,
            "serve took {took:?} (limit {CASE_LIMIT:?})"
        );
        assert!(!status.success(), "serve accepted it; stderr: {stderr}");
        assert_ne!(status.code(), Some(101), "serve panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "serve panicked: {stderr}");
        assert_no_secret(&self.seen, secret);
        assert_no_secret(stderr.as_bytes(), secret);
        if error.is_empty() {
            error = stderr;
        }
        assert!(!error.trim().is_empty(), "no error message");
        error
    }
}

/// No 32-byte window of the secret appears in `hay`.
fn assert_no_secret(hay: &[u8], secret: &[u8]) {
    for at in (0..secret.len() - 32).step_by(4096) {
        let needle = &secret[at..at + 32];
        assert!(
            !hay.windows(32).any(|w| w == needle),
            "bytes of the secret file (offset {at}) were sent"
        );
    }
}

fn idx(entries: &[Entry], path: &str) -> u32 {
    entries
        .iter()
        .position(|e| e.path.as_bytes() == path.as_bytes())
        .unwrap_or_else(|| panic!("{path} not in the manifest")) as u32
}

fn want(idx: u32, signature: Option<Vec<u8>>) -> Msg {
    Msg::Want(Want { idx, signature })
}

/// A signature header (magic, block size, hash size) followed by `body` bytes.
fn sig(block: u32, hash: u32, body: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + body);
    v.extend_from_slice(&SIG_MAGIC.to_be_bytes());
    v.extend_from_slice(&block.to_be_bytes());
    v.extend_from_slice(&hash.to_be_bytes());
    v.extend(std::iter::repeat_n(0xA5u8, body));
    v
}

fn assert_has(msg: &str, what: &str) {
    assert!(
        msg.to_lowercase().contains(&what.to_lowercase()),
        "expected {what:?} in the error: {msg}"
    );
}

#[test]
fn want_out_of_range_is_refused() {
    let s = sandbox();
    let (mut p, entries) = Peer::pull(&s.root);
    p.send(&want(entries.len() as u32 + 5, None));
    assert_has(&p.expect_refusal(&s.secret), "not a file");
    let (mut p, _) = Peer::pull(&s.root);
    p.send(&want(u32::MAX, None));
    assert_has(&p.expect_refusal(&s.secret), "not a file");
}

#[test]
fn want_for_a_directory_or_a_symlink_is_refused_and_the_secret_stays_unread() {
    let s = sandbox();
    for (path, with_sig) in [("sub", false), ("", false), ("link", false), ("link", true)] {
        let (mut p, entries) = Peer::pull(&s.root);
        let i = idx(&entries, path);
        assert_ne!(entries[i as usize].kind, Kind::File);
        p.send(&want(i, with_sig.then(|| sig(1024, 6, 10 * 10))));
        assert_has(&p.expect_refusal(&s.secret), "not a file");
    }
}

#[test]
fn the_same_file_asked_twice_is_refused() {
    let s = sandbox();
    // Whole then whole.
    let (mut p, entries) = Peer::pull(&s.root);
    let a = idx(&entries, "a");
    p.send(&want(a, None));
    p.send(&want(a, None));
    assert_has(&p.expect_refusal(&s.secret), "twice");
    // Delta, whole (the receiver's legitimate retry), then a third time.
    let (mut p, _) = Peer::pull(&s.root);
    p.send(&want(a, Some(sig(1024, 6, 10 * 4))));
    p.send(&want(a, None));
    p.send(&want(a, None));
    assert_has(&p.expect_refusal(&s.secret), "twice");
    // Delta then delta.
    let (mut p, _) = Peer::pull(&s.root);
    p.send(&want(a, Some(sig(1024, 6, 10 * 4))));
    p.send(&want(a, Some(sig(1024, 6, 10 * 4))));
    assert_has(&p.expect_refusal(&s.secret), "twice");
}

#[test]
fn bad_signatures_are_refused() {
    let s = sandbox();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("block size 0", sig(0, 6, 10 * 4), "block size"),
        ("block size 1", sig(1, 6, 10 * 4), "block size"),
        ("huge block size", sig(u32::MAX, 6, 10 * 4), "block size"),
        ("hash size 0", sig(1024, 0, 4 * 4), "hash size"),
        ("hash size 200", sig(1024, 200, 204), "hash size"),
        ("ragged length", sig(1024, 6, 10 * 4 + 3), "length"),
        ("header only, cut", sig(1024, 6, 0)[..7].to_vec(), "bounds"),
        (
            "bad magic",
            {
                let mut v = sig(1024, 6, 10);
                v[0] = 0;
                v
            },
            "format",
        ),
        (
            "the old MD4 format",
            {
                let mut v = sig(1024, 6, 10);
                v[..4].copy_from_slice(&MD4_MAGIC.to_be_bytes());
                v
            },
            "format",
        ),
        (
            "oversized (> 8 MiB)",
            sig(1024, 6, 8 * 1024 * 1024 + 10 * 3),
            "bounds",
        ),
    ];
    for (name, signature, expect) in cases {
        let (mut p, entries) = Peer::pull(&s.root);
        p.send(&want(idx(&entries, "a"), Some(signature)));
        let msg = p.expect_refusal(&s.secret);
        assert_has(&msg, "signature");
        assert!(
            msg.to_lowercase().contains(expect),
            "{name}: expected {expect:?} in: {msg}"
        );
    }
}

#[test]
fn an_absurd_block_count_costs_bounded_time_and_no_panic() {
    // The largest signature allowed (8 MiB: ~800,000 blocks) for a 200 kB file: legal
    // on the wire (an old copy may be larger than the new file), so serve answers it;
    // it must do so in bounded time and memory, then the session goes on as usual.
    let s = sandbox();
    let (mut p, entries) = Peer::pull(&s.root);
    let body = (8 * 1024 * 1024 - 12) / 10 * 10;
    let mut signature = sig(512, 6, 0);
    signature.extend_from_slice(&pseudo(body, 77));
    p.send(&want(idx(&entries, "a"), Some(signature)));
    // Then a hostile ending: a request after WantsEnd.
    p.send(&Msg::WantsEnd);
    p.send(&want(idx(&entries, "sub/b"), None));
    let msg = p.expect_refusal(&s.secret);
    assert_has(&msg, "after WantsEnd");
}

#[test]
fn requests_after_wants_end_are_refused() {
    let s = sandbox();
    let (mut p, entries) = Peer::pull(&s.root);
    p.send(&Msg::WantsEnd);
    p.send(&want(idx(&entries, "a"), None));
    assert_has(&p.expect_refusal(&s.secret), "after WantsEnd");
    let (mut p, _) = Peer::pull(&s.root);
    p.send(&Msg::WantsEnd);
    p.send(&Msg::WantsEnd);
    assert_has(&p.expect_refusal(&s.secret), "after WantsEnd");
}

#[test]
fn unknown_tags_and_wrong_messages_are_refused() {
    let s = sandbox();
    for payload in [vec![99u8], vec![255u8, 1, 2, 3], vec![], vec![WANT, 0, 0]] {
        let (mut p, _) = Peer::pull(&s.root);
        p.raw(&payload);
        assert_has(&p.expect_refusal(&s.secret), "protocol error");
    }
    // A sender-only message from the receiver.
    let (mut p, _) = Peer::pull(&s.root);
    p.send(&Msg::FileBegin {
        idx: 0,
        delta: false,
    });
    assert_has(&p.expect_refusal(&s.secret), "unexpected FileBegin");
    // A trailing byte after a valid Want.
    let (mut p, entries) = Peer::pull(&s.root);
    let mut e = Enc::tag(WANT);
    e.u32(idx(&entries, "a")).bool(false).u8(0);
    p.raw(&e.0);
    assert_has(&p.expect_refusal(&s.secret), "trailing");
}

#[test]
fn a_huge_frame_is_refused_before_it_is_read() {
    let s = sandbox();
    let (mut p, _) = Peer::pull(&s.root);
    p.unframed(&u32::MAX.to_be_bytes());
    assert_has(&p.expect_refusal(&s.secret), "exceeds the limit");
    // Announced 16 MiB, 3 bytes sent, then the connection closes: truncated.
    let (mut p, _) = Peer::pull(&s.root);
    p.unframed(&(16u32 * 1024 * 1024).to_be_bytes());
    p.unframed(&[WANT, 0, 0]);
    drop(p.wr.take());
    assert_has(&p.expect_refusal(&s.secret), "truncated");
}

#[test]
fn garbage_after_the_handshake_is_refused() {
    let s = sandbox();
    // Before Open: something that is not a frame at all.
    let mut p = Peer::start();
    p.hello();
    p.unframed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_has(&p.expect_refusal(&s.secret), "protocol error");
    // Before Open: a valid frame of junk.
    let mut p = Peer::start();
    p.hello();
    p.raw(&pseudo(1000, 3));
    assert_has(&p.expect_refusal(&s.secret), "protocol error");
    // After the manifest: random frames.
    for seed in 0..8u64 {
        let (mut p, _) = Peer::pull(&s.root);
        let junk = pseudo(50 + seed as usize * 37, 100 + seed);
        p.raw(&junk);
        assert_has(&p.expect_refusal(&s.secret), "protocol error");
    }
}

#[test]
fn a_root_outside_or_through_a_symlink_is_refused_under_allow() {
    // Pull side of the restricted key: a root outside --allow, or reached through a
    // symlink below it, is refused before anything is scanned.
    let s = sandbox();
    let base = s.root.parent().unwrap();
    for root in [
        base.to_path_buf(),
        s.root.join("link"),
        PathBuf::from("/etc"),
    ] {
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--allow")
            .arg(&s.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut wr = FrameWriter::new(child.stdin.take().unwrap());
        let mut rd = FrameReader::new(child.stdout.take().unwrap());
        for m in [
            Msg::Hello {
                major: hasync::wire::message::PROTO_MAJOR,
                minor: 0,
                software: "x".into(),
            },
            Msg::Open(Open {
                role: ServerRole::Send,
                root: root.as_os_str().as_encoded_bytes().to_vec(),
                options: SessionOptions::default(),
            }),
        ] {
            wr.write_frame(&m.encode()).unwrap();
        }
        wr.flush().unwrap();
        let mut seen = Vec::new();
        let mut error = None;
        while let Ok(f) = rd.read_frame() {
            seen.extend_from_slice(f);
            if let Ok(Msg::Error { message, .. }) = Msg::decode(f) {
                error = Some(message);
            }
        }
        drop(wr);
        let status = child.wait().unwrap();
        assert!(!status.success());
        let error = error.expect("an Error message");
        assert!(
            error.contains("outside") || error.contains("symlink"),
            "{}: {error}",
            root.display()
        );
        assert_no_secret(&seen, &s.secret);
    }
}

/// A peer of protocol 2.0/2.1 (one node upgraded before the other) gets the
/// fixed-width manifest; a current one gets the compact encoding; both decode to
/// the same entries, and the compact one is the smaller.
#[test]
fn an_older_peer_gets_the_fixed_width_manifest_a_current_one_the_compact() {
    let s = sandbox();
    let mut seen = Vec::new();
    for minor in [0, hasync::wire::message::PROTO_MINOR] {
        let mut p = Peer::start();
        p.hello_as(minor);
        p.open_send(&s.root);
        assert!(matches!(p.recv(), Some(Msg::OpenOk)));
        let (mut tags, mut bytes, mut entries) = (Vec::new(), 0, Vec::new());
        loop {
            let frame = p.rd.read_frame().expect("a frame").to_vec();
            match Msg::decode(&frame).expect("a valid message") {
                Msg::Manifest(v) => {
                    tags.push(frame[0]);
                    bytes += frame.len();
                    entries.extend(v);
                }
                Msg::ManifestEnd { .. } => break,
                other => panic!("expected the manifest, got {other:?}"),
            }
        }
        p.send(&Msg::WantsEnd);
        p.send(&Msg::Done(Default::default()));
        p.send(&Msg::Bye);
        drop(p.wr.take());
        let status = p.child.wait().unwrap();
        p.watchdog_stop.store(true, Ordering::SeqCst);
        let mut stderr = String::new();
        let _ = p.child.stderr.take().unwrap().read_to_string(&mut stderr);
        assert!(status.success(), "serve failed for minor {minor}: {stderr}");
        seen.push((tags, bytes, entries));
    }
    let (old, new) = (&seen[0], &seen[1]);
    assert!(
        old.0.iter().all(|&t| t == 10),
        "older peer got tags {:?}",
        old.0
    );
    assert!(
        new.0.iter().all(|&t| t == 14),
        "current peer got tags {:?}",
        new.0
    );
    assert_eq!(old.2, new.2);
    assert_eq!(old.2.len(), 5, "{:?}", old.2);
    assert!(new.1 < old.1, "compact {} vs fixed {} bytes", new.1, old.1);
}

/// `Signing` (2.7) is a hint: each entry may be announced once, a hint for something
/// that is not a file reads nothing, and a hinted file is then sent as usual.
#[test]
fn signing_hints_are_bounded_and_harmless() {
    let s = sandbox();
    let (mut p, entries) = Peer::pull(&s.root);
    let a = idx(&entries, "a");
    p.send(&Msg::Signing { idx: a });
    p.send(&Msg::Signing { idx: a });
    assert_has(&p.expect_refusal(&s.secret), "announced entry");
    let (mut p, entries) = Peer::pull(&s.root);
    p.send(&Msg::Signing {
        idx: entries.len() as u32 + 3,
    });
    assert_has(&p.expect_refusal(&s.secret), "out of range");
    // A hint for the symlink to the secret, then a whole file: the session ends well.
    let (mut p, entries) = Peer::pull(&s.root);
    p.send(&Msg::Signing {
        idx: idx(&entries, "link"),
    });
    p.send(&Msg::Signing { idx: a });
    p.send(&want(a, None));
    p.send(&Msg::WantsEnd);
    let mut data = 0;
    loop {
        match p.recv() {
            Some(Msg::Data(d)) => data += d.len(),
            Some(Msg::FileEnd { .. }) => break,
            Some(Msg::Error { message, .. }) => panic!("serve refused: {message}"),
            Some(_) => {}
            None => panic!("serve ended the session"),
        }
    }
    assert_eq!(data, 200_000);
    assert_no_secret(&p.seen, &s.secret);
    p.send(&Msg::Done(Default::default()));
    p.send(&Msg::Bye);
    drop(p.wr.take());
    let status = p.child.wait().unwrap();
    p.watchdog_stop.store(true, Ordering::SeqCst);
    assert!(status.success());
}

/// The handshake of each minor version: a 2.7 client gets the serve's `Role` with
/// `HelloOk` and no answer to its own; a 2.5/2.6 client gets it as the answer to its
/// `Role`; an older one never sees a `Role`.
#[test]
fn the_serve_role_comes_with_hello_ok_for_a_current_client_and_when_asked_for_an_older_one() {
    let s = sandbox();
    for minor in [0, 6, hasync::wire::message::PROTO_MINOR] {
        let mut p = Peer::start();
        p.hello_as(minor);
        if minor >= 5 {
            p.send(&Msg::Role(hasync::node::role::unknown_node()));
            if minor < hasync::wire::message::MINOR_EAGER_ROLE {
                assert!(matches!(p.recv(), Some(Msg::Role(_))), "minor {minor}");
            }
        }
        p.open_send(&s.root);
        let next = p.recv();
        assert!(matches!(next, Some(Msg::OpenOk)), "minor {minor}: {next:?}");
        drop(p.wr.take());
        let _ = p.child.wait();
        p.watchdog_stop.store(true, Ordering::SeqCst);
    }
}
