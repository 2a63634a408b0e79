//! What each fuzz target does with its input, shared by the cargo-fuzz targets
//! (`fuzz_targets/*.rs`) and the regression replay in `cargo test`
//! (`tests/it/fuzz_regressions.rs`), so a committed crash input is replayed by
//! exactly the code that found it.

use hasync::delta;
use hasync::protocol::{FrameReader, Msg};
use std::io::Write;

/// A byte stream from a hostile peer: frames read one by one, each decoded as a
/// message; a manifest is validated as the receiver would.
pub fn frames(data: &[u8]) {
    let mut rd = FrameReader::new(data);
    for _ in 0..64 {
        let Ok(frame) = rd.read_frame() else { break };
        if let Ok(Msg::Manifest(entries)) = Msg::decode(frame) {
            let _ = hasync::manifest::validate(&entries);
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
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let _ = delta::diff_file(
        &index,
        &f,
        new.len() as u64,
        &mut buf,
        &mut out,
        |_| Ok(()),
        |_| {},
    );
}

/// The delta parser never panics on arbitrary bytes.
pub fn delta_ops(data: &[u8]) {
    let _ = delta::parse_delta(data);
}

/// Any text as a config file gives a config or a located error, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hasync::config::parse(text, std::path::Path::new("/etc/hasync/hasync.toml"));
    }
}
