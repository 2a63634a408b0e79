//! The WAN kit over a real sshd (issue 20): zstd compression negotiated per session
//! and the bandwidth cap, measured by a TCP forwarder between the client and sshd
//! that logs when each byte went by, in each direction.

use crate::sshd::Sshd;
use crate::util::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes seen by the forwarder: (when, how many), per direction.
type Log = Arc<Mutex<Vec<(Instant, usize)>>>;

/// A TCP forwarder to sshd that records its traffic.
struct Meter {
    port: u16,
    up: Log,
    down: Log,
}

impl Meter {
    fn start(to: u16) -> Meter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, down): (Log, Log) = Default::default();
        let (u, dn) = (up.clone(), down.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(("127.0.0.1", to)).unwrap();
                forward(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    u.clone(),
                );
                forward(server, client, dn.clone());
            }
        });
        Meter { port, up, down }
    }

    fn clear(&self) {
        self.up.lock().unwrap().clear();
        self.down.lock().unwrap().clear();
    }
}

fn forward(mut from: TcpStream, mut to: TcpStream, log: Log) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            log.lock().unwrap().push((Instant::now(), n));
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

fn total(log: &Log) -> u64 {
    log.lock().unwrap().iter().map(|(_, n)| *n as u64).sum()
}

/// `hasync push|pull` through the meter, with `extra` arguments; returns the `--json` stats.
fn run(sshd: &Sshd, m: &Meter, d: &Path, verb: &str, extra: &[&str]) -> serde_json::Value {
    let remote = format!(
        "ssh://root@127.0.0.1:{}{}",
        m.port,
        d.join("peer").display()
    );
    let local = d.join("local");
    let (a, b) = match verb {
        "push" => (local.display().to_string(), remote),
        _ => (remote, local.display().to_string()),
    };
    let out = ok(hasync()
        .args([verb, &a, &b, "--delete", "--json", "--identity"])
        .arg(&sshd.client_key)
        .arg("--known-hosts")
        .arg(d.join("kh"))
        .arg("--remote-path")
        .arg(bin())
        .args(extra)
        .output()
        .unwrap());
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

fn setup(sshd: &Sshd, m: &Meter, d: &Path) {
    let key = sshd
        .host_key_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>();
    std::fs::write(
        d.join("kh"),
        format!("[127.0.0.1]:{} {}\n", m.port, key.join(" ")),
    )
    .unwrap();
}

/// Config-file-like text: lines of a few hundred distinct words.
fn config_text(n: usize, seed: u64) -> Vec<u8> {
    let raw = pseudo(n, seed);
    let mut v = Vec::with_capacity(n);
    for (i, b) in raw.iter().enumerate() {
        v.extend_from_slice(
            format!("key_{} = value{}\n", b % 97, (b >> 3) as usize + i % 5).as_bytes(),
        );
        if v.len() >= n {
            break;
        }
    }
    v.truncate(n);
    v
}

#[test]
fn compression_over_ssh_shrinks_text_not_random_data_and_reports_both_sizes() {
    let sshd = Sshd::shared();
    let m = Meter::start(sshd.port);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(sshd, &m, d);
    let text_tree = || {
        let t = Tree::new(&d.join("local"));
        for i in 0..300 {
            t.file(format!("etc/f{i}.conf"), &config_text(6000, i));
        }
    };
    text_tree();
    // Default over SSH: compressed; the text shrinks at least 3x on the wire.
    let s = run(sshd, &m, d, "push", &[]);
    assert_mirror(&d.join("local"), &d.join("peer"));
    let (sent, raw) = (
        s["bytes_sent"].as_u64().unwrap(),
        s["bytes_sent_uncompressed"].as_u64().unwrap(),
    );
    assert!(raw > 1_800_000 && sent * 3 < raw, "sent {sent} of {raw}");
    assert!(
        total(&m.up) < raw / 2,
        "the link carried {} of {raw}",
        total(&m.up)
    );

    // Random data goes as it is (no bigger than raw, nearly equal); a pull too.
    std::fs::remove_dir_all(d.join("local")).unwrap();
    std::fs::remove_dir_all(d.join("peer")).unwrap();
    Tree::new(&d.join("peer")).file("noise.bin", &pseudo(4 << 20, 9));
    let s = run(sshd, &m, d, "pull", &[]);
    assert_mirror(&d.join("peer"), &d.join("local"));
    let (got, raw) = (
        s["bytes_received"].as_u64().unwrap(),
        s["bytes_received_uncompressed"].as_u64().unwrap(),
    );
    // (Small frames may cost a few bytes more compressed than raw: the stream's headers.)
    assert!(
        got <= raw + 256 && got * 100 > raw * 99,
        "noise: {got} of {raw}"
    );

    // --no-compress: both sizes equal, and the text costs its full size.
    std::fs::remove_dir_all(d.join("peer")).unwrap();
    text_tree();
    m.clear();
    let s = run(sshd, &m, d, "push", &["--no-compress"]);
    assert_eq!(s["bytes_sent"], s["bytes_sent_uncompressed"]);
    assert!(total(&m.up) > 1_800_000 + (4 << 20), "{}", total(&m.up));
}

/// The forwarder's bytes over the busy part of a run: (average rate, most bytes in
/// any 100 ms window).
fn rate_of(log: &Log) -> (f64, usize) {
    let log = log.lock().unwrap();
    // The bulk of it: from the first 64 KiB to the last 64 KiB (the handshake and the
    // session's end, which waits for the receiver to install, are not the cap's).
    let all: usize = log.iter().map(|(_, n)| n).sum();
    let mut seen = 0;
    let marks: Vec<usize> = log
        .iter()
        .map(|(_, n)| {
            seen += n;
            seen
        })
        .collect();
    let start = marks.iter().position(|&c| c > 64 * 1024).unwrap();
    let end = marks.iter().rposition(|&c| c < all - 64 * 1024).unwrap();
    let log = &log[start..=end];
    let bytes: usize = log.iter().map(|(_, n)| n).sum();
    let secs = (log.last().unwrap().0 - log[0].0).as_secs_f64();
    let mut burst = 0;
    for (i, (t, _)) in log.iter().enumerate() {
        let n: usize = log[i..]
            .iter()
            .take_while(|(u, _)| *u - *t < Duration::from_millis(100))
            .map(|(_, n)| n)
            .sum();
        burst = burst.max(n);
    }
    (bytes as f64 / secs, burst)
}

#[test]
fn bwlimit_caps_push_and_pull_over_ssh_within_5_percent_without_bursts() {
    let sshd = Sshd::shared();
    let m = Meter::start(sshd.port);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(sshd, &m, d);
    let cap = 1u64 << 20;
    // Push: 10 s at 1 MiB/s, random data (compression on does not change the wire rate).
    Tree::new(&d.join("local")).file("a.bin", &pseudo(10 << 20, 1));
    let t0 = Instant::now();
    run(sshd, &m, d, "push", &["--bwlimit", "1M"]);
    let took = t0.elapsed();
    assert_mirror(&d.join("local"), &d.join("peer"));
    let (rate, burst) = rate_of(&m.up);
    eprintln!(
        "push: {rate:.0} B/s ({:.4}x the cap), at most {burst} bytes in 100 ms",
        rate / cap as f64
    );
    assert!(
        (rate / cap as f64 - 1.0).abs() < 0.05,
        "push: {rate:.0} B/s on the link for a cap of {cap} ({took:?})"
    );
    assert!(
        burst as f64 <= cap as f64 * 0.2,
        "push: {burst} bytes within 100 ms"
    );
    // Pull: the serve caps its own writes (told by Link); 5 s.
    m.clear();
    std::fs::remove_dir_all(d.join("local")).unwrap();
    std::fs::remove_dir_all(d.join("peer")).unwrap();
    Tree::new(&d.join("peer")).file("b.bin", &pseudo(5 << 20, 2));
    run(sshd, &m, d, "pull", &["--bwlimit", "1024"]);
    assert_mirror(&d.join("peer"), &d.join("local"));
    let (rate, burst) = rate_of(&m.down);
    eprintln!(
        "pull: {rate:.0} B/s ({:.4}x the cap), at most {burst} bytes in 100 ms",
        rate / cap as f64
    );
    assert!(
        (rate / cap as f64 - 1.0).abs() < 0.05,
        "pull: {rate:.0} B/s on the link for a cap of {cap}"
    );
    assert!(
        burst as f64 <= cap as f64 * 0.2,
        "pull: {burst} bytes within 100 ms"
    );
}

/// A fake serve that answers `Hello` as protocol 2.`minor` (with its `Role` unasked
/// from 2.7), records the next frame, then the tags of what follows without ever
/// answering `Open` (up to `ManifestEnd`, or 3 s of silence).
struct FakeServe {
    minor: u16,
    first: Arc<Mutex<Vec<u8>>>,
    after: Arc<Mutex<Vec<u8>>>,
}

impl FakeServe {
    fn new(minor: u16) -> FakeServe {
        FakeServe {
            minor,
            first: Default::default(),
            after: Default::default(),
        }
    }
}

struct NoCloser;
impl hasync::transport::Closer for NoCloser {
    fn finish(self: Box<Self>) -> Result<(), hasync::transport::TransportError> {
        Ok(())
    }
    fn stderr(&self) -> String {
        String::new()
    }
}

impl hasync::transport::Transport for FakeServe {
    fn connect(
        &self,
        _: &[String],
    ) -> Result<hasync::transport::Connection, hasync::transport::TransportError> {
        use hasync::wire::{FrameReader, FrameWriter, Msg, message};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (minor, first, after) = (self.minor, self.first.clone(), self.after.clone());
        std::thread::spawn(move || {
            let mut rd = FrameReader::new(b.try_clone().unwrap());
            let mut wr = FrameWriter::new(b.try_clone().unwrap());
            assert!(matches!(hasync::wire::recv(&mut rd), Ok(Msg::Hello { .. })));
            let ok = Msg::HelloOk {
                major: message::PROTO_MAJOR,
                minor,
                software: "hasync (fake)".into(),
            };
            hasync::wire::send(&mut wr, &ok).unwrap();
            let me = Msg::Role(hasync::node::role::unknown_node());
            let eager = minor >= message::MINOR_EAGER_ROLE;
            if eager {
                hasync::wire::send(&mut wr, &me).unwrap();
            }
            wr.flush().unwrap();
            let mut frame = rd.read_frame().unwrap().to_vec();
            // A 2.5 or later client sends its role first (the fence): answer as a
            // serve without a config (before 2.7), and take the next frame.
            if let Ok(Msg::Role(_)) = Msg::decode(&frame) {
                if !eager {
                    hasync::wire::send(&mut wr, &me).unwrap();
                    wr.flush().unwrap();
                }
                frame = rd.read_frame().unwrap().to_vec();
            }
            *first.lock().unwrap() = frame;
            // What the client sends without an answer to its `Open` (compressed after a
            // `Link` that asked for it).
            rd.accept_compressed();
            b.set_read_timeout(Some(std::time::Duration::from_secs(3)))
                .unwrap();
            let mut tags = Vec::new();
            while tags.last() != Some(&MANIFEST_END) {
                match rd.read_frame() {
                    Ok(f) => tags.push(f.first().copied().unwrap_or(0)),
                    Err(_) => break,
                }
            }
            *after.lock().unwrap() = tags;
            let err = Msg::Error {
                code: message::code::PEER,
                message: "fake serve: done".into(),
            };
            let _ = hasync::wire::send(&mut wr, &err);
        });
        Ok(hasync::transport::Connection {
            reader: Box::new(a.try_clone().unwrap()),
            writer: Box::new(a),
            closer: Box::new(NoCloser),
        })
    }
    fn describe(&self) -> String {
        "fake serve".into()
    }
    fn is_remote(&self) -> bool {
        true
    }
}

/// A 2.5 serve (the version before compression) is never sent `Link` nor a compressed
/// frame, even over a remote transport where compression is on by default; a 2.6
/// serve is told the level and the cap before `Open`.
#[test]
fn an_older_serve_gets_no_link_and_no_compression_a_current_one_is_told() {
    use hasync::wire::Msg;
    let dir = tempfile::tempdir().unwrap();
    Tree::new(&dir.path().join("src")).file("a.txt", b"a\n");
    for minor in [5, hasync::wire::message::MINOR_COMPRESS] {
        let t = FakeServe::new(minor);
        let mut c = hasync::sync::client::Client::connect(&t, &[]).unwrap();
        c.link.bwlimit = 4096;
        let r = c.push(
            &dir.path().join("src"),
            Path::new("/nowhere"),
            &Default::default(),
            &mut hasync::tree::report::Silent,
        );
        assert!(r.is_err());
        let first = Msg::decode(&t.first.lock().unwrap()).unwrap();
        if minor < hasync::wire::message::MINOR_COMPRESS {
            assert!(matches!(first, Msg::Open(_)), "2.{minor}: {first:?}");
        } else {
            assert_eq!(
                first,
                Msg::Link {
                    compress: 3,
                    bwlimit: 4096
                }
            );
        }
    }
}

/// The tag of `ManifestEnd`.
const MANIFEST_END: u8 = 11;

/// Latency: a push sends its manifest right after `Open`, in the same round trip, to
/// serves of every minor version (the fake never answers `Open`); a 2.7 serve's `Role`
/// comes with `HelloOk`, and the client's own gets no answer (the fake would hang a
/// client that waited for one). The refusal that replaces `OpenOk` is what the push
/// reports.
#[test]
fn a_push_sends_its_manifest_without_waiting_for_open_ok() {
    use hasync::wire::Msg;
    let dir = tempfile::tempdir().unwrap();
    Tree::new(&dir.path().join("src"))
        .file("a.txt", b"a\n")
        .file("sub/b.txt", b"b\n");
    for minor in [5, 6, hasync::wire::message::PROTO_MINOR] {
        let t = FakeServe::new(minor);
        let mut c = hasync::sync::client::Client::connect(&t, &[]).unwrap();
        let r = c.push(
            &dir.path().join("src"),
            Path::new("/nowhere"),
            &Default::default(),
            &mut hasync::tree::report::Silent,
        );
        let e = r.expect_err("the fake refuses").to_string();
        assert!(e.contains("fake serve: done"), "2.{minor}: {e}");
        let first = Msg::decode(&t.first.lock().unwrap()).unwrap();
        assert!(
            matches!(first, Msg::Link { .. } | Msg::Open(_)),
            "2.{minor}: {first:?}"
        );
        let after = t.after.lock().unwrap().clone();
        assert_eq!(
            after.last(),
            Some(&MANIFEST_END),
            "2.{minor}: the client stopped before its manifest (tags {after:?})"
        );
    }
}

/// A refused `Open` with a manifest far bigger than a pipe's buffer behind it (the
/// serve stops reading): the push reports the serve's reason, not a broken pipe.
#[test]
fn a_refused_push_with_a_big_manifest_reports_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let t = Tree::new(&src);
    for i in 0..3000u64 {
        let name: String = pseudo(40, i)
            .iter()
            .map(|b| (b'a' + b % 26) as char)
            .collect();
        t.file(format!("d{}/{name}-{i}.conf", i % 7), b"x");
    }
    std::fs::write(dir.path().join("blocker"), b"a file").unwrap();
    let out = hasync()
        .arg("push")
        .arg(&src)
        .arg(dir.path().join("blocker/dest"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot create the destination") && err.contains("Not a directory"),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("broken pipe"), "{err}");
}

/// `.hasync-tmp.*` files under `root` (the partial places), with their sizes.
fn temps(root: &Path) -> Vec<(String, u64)> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".hasync-tmp."))
        .map(|e| (e.path().display().to_string(), e.metadata().unwrap().len()))
        .collect()
}

/// A first copy of a big file cut at 40% (the client killed: the link is gone), then
/// run again: the rerun sends only the rest, the partial never shows under the final
/// name nor is mirrored, and nothing of it is left after success. Push (the serve is
/// the receiver, it sees the connection drop) and pull (the killed client was the
/// receiver).
#[test]
fn an_interrupted_big_copy_resumes_and_costs_at_most_1_05x_the_file() {
    let sshd = Sshd::shared();
    let m = Meter::start(sshd.port);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(sshd, &m, d);
    let size = 64usize << 20;
    for verb in ["push", "pull"] {
        let _ = std::fs::remove_dir_all(d.join("local"));
        let _ = std::fs::remove_dir_all(d.join("peer"));
        let (src, dst) = match verb {
            "push" => (d.join("local"), d.join("peer")),
            _ => (d.join("peer"), d.join("local")),
        };
        Tree::new(&src).file("big/video.bin", &pseudo(size, 5));
        std::fs::create_dir_all(dst.join("big")).unwrap();
        m.clear();
        let remote = format!(
            "ssh://root@127.0.0.1:{}{}",
            m.port,
            d.join("peer").display()
        );
        let local = d.join("local").display().to_string();
        let (a, b) = if verb == "push" {
            (local, remote)
        } else {
            (remote, local)
        };
        let mut child = hasync()
            .args([verb, &a, &b, "--bwlimit", "16M", "--identity"])
            .arg(&sshd.client_key)
            .arg("--known-hosts")
            .arg(d.join("kh"))
            .arg("--remote-path")
            .arg(bin())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let log = if verb == "push" { &m.up } else { &m.down };
        let t0 = Instant::now();
        while total(log) < (size as u64) * 4 / 10 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{verb}: ended before the cut"
            );
            assert!(t0.elapsed() < Duration::from_secs(60), "{verb}: too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // The serve of a push notices the cut a moment later.
        let t1 = Instant::now();
        while temps(&dst).iter().map(|t| t.1).sum::<u64>() < (size as u64) / 4 {
            assert!(
                t1.elapsed() < Duration::from_secs(10),
                "{verb}: no partial: {:?}",
                temps(&dst)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !dst.join("big/video.bin").exists(),
            "{verb}: a partial under the final name"
        );
        let cut = total(&m.up) + total(&m.down);
        std::thread::sleep(Duration::from_millis(300));
        let s = run(sshd, &m, d, verb, &[]);
        assert_mirror(&src, &dst);
        assert!(temps(&dst).is_empty(), "{verb}: left {:?}", temps(&dst));
        let all = total(&m.up) + total(&m.down);
        let ratio = all as f64 / size as f64;
        eprintln!(
            "{verb}: {cut} bytes before the cut, {} after, {ratio:.3}x the file; matched {}",
            all - cut,
            s["bytes_matched"]
        );
        assert!(
            s["bytes_matched"].as_u64().unwrap() > (size as u64) / 4,
            "{verb}: {s}"
        );
        assert!(
            ratio <= 1.05,
            "{verb}: {all} bytes on the link for a {size}-byte file ({ratio:.3}x)"
        );
    }
}
