//! What each fuzz target does with its input, shared by the cargo-fuzz targets
//! (`fuzz_targets/*.rs`) and the regression replay in `cargo test`
//! (`tests/it/fuzz_regressions.rs`), so a committed crash input is replayed by
//! exactly the code that found it.

use hasync::sync::delta;
use hasync::wire::{FrameReader, Msg};
use std::io::Write;

/// A byte stream from a hostile peer: frames read one by one, each decoded as a
/// message; a manifest is validated as the receiver would.
pub fn frames(data: &[u8]) {
    // Also as a session that negotiated compression: `Zstd` frames are decoded (bounded).
    for compressed in [false, true] {
        let mut rd = FrameReader::new(data);
        if compressed {
            rd.accept_compressed();
        }
        for _ in 0..64 {
            let Ok(frame) = rd.read_frame() else { break };
            if let Ok(Msg::Manifest(entries)) = Msg::decode(frame) {
                let _ = hasync::tree::manifest::validate(&entries);
            }
        }
    }
}

/// Any message that decodes re-encodes to bytes that decode to the same message.
pub fn message_roundtrip(data: &[u8]) {
    if let Ok(m) = Msg::decode(data) {
        let again = Msg::decode(&m.encode()).expect("re-encoded message must decode");
        assert_eq!(m, again);
    }
}

/// A signature from the wire: once accepted by `parse_signature`, indexing it
/// and diffing data against it must not panic. The first byte says how long
/// the signature part is (x 8 bytes); the rest is the new data.
pub fn signature_diff(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sig, new) = rest.split_at((n as usize * 8).min(rest.len()));
    let Ok(sig) = delta::parse_signature(sig.to_vec()) else {
        return;
    };
    let index = sig.index();
    let mut f = tempfile::tempfile().expect("temp file");
    f.write_all(new).expect("write temp file");
    let mut buf = Vec::new();
    let _ = delta::diff_file(&index, &f, new.len() as u64, &mut buf, |_| Ok(()), |_| {});
}

/// The block matcher end to end: the input is split into an old and a new
/// file (the first two bytes say where, and a third repeats the old data to
/// make blocks of it); the delta of new against old must rebuild new exactly.
pub fn delta_ops(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let cut = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 3);
    let (old, new) = data[3..].split_at(cut);
    // Repeat both sides so that they span several blocks (blocks are >= 1 KiB).
    let reps = 1 + data[2] as usize % 64;
    let old: Vec<u8> = old.iter().copied().cycle().take(old.len() * reps).collect();
    let mut new_rep: Vec<u8> = Vec::new();
    for i in 0..reps {
        new_rep.extend_from_slice(if i % 2 == 0 { new } else { &old[..] });
    }
    let (rebuilt, _) = delta::roundtrip(&old, &new_rep).expect("roundtrip");
    assert!(
        rebuilt == new_rep,
        "the delta does not rebuild the new data"
    );
}

/// Any text as a config file gives a config or a located error, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hasync::node::config::parse(text, std::path::Path::new("/etc/hasync/hasync.toml"));
    }
}
