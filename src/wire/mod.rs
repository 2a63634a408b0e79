//! hasync's wire protocol: frames, messages, and the handshake.
//!
//! A connection starts with `Hello`/`HelloOk` (magic, major and minor
//! version); a peer of another major version is refused with a message that
//! names both versions. Then the client opens sessions one after another
//! (`Open` ... `Done`) and ends with `Bye`. See docs/ARCHITECTURE.md for the
//! message flow of a session.

pub mod compress;
pub mod db;
pub mod frame;
pub mod manifest_wire;
pub mod message;
pub mod throttle;

pub use frame::{FrameReader, FrameWriter, ProtocolError};
pub use message::{Msg, Open, ServerRole, SessionOptions, Want};

use std::io::{Read, Write};

/// Read and decode one message.
pub fn recv<R: Read>(r: &mut FrameReader<R>) -> Result<Msg, ProtocolError> {
    // File data is read into its own buffer: no copy on the way to the disk.
    let m = match r.read_frame_or_body(message::tag::DATA, message::MAX_DATA_CHUNK)? {
        frame::Frame::Payload(p) => Msg::decode(p)?,
        frame::Frame::Body(b) => Msg::Data(b),
    };
    if !r.open_pending {
        return Ok(m);
    }
    r.open_pending = false;
    match m {
        Msg::OpenOk => recv(r),
        Msg::Error { .. } => Ok(m),
        other => Err(frame::malformed(format!(
            "expected OpenOk or Error after Open, got {}",
            other.name()
        ))),
    }
}

/// Like [`recv`], but the entries of a manifest batch go one by one to `each`
/// as they are decoded (no vector of up to 65,536 entries): `None` for a batch.
pub fn recv_entries<R: Read, E: From<ProtocolError>>(
    r: &mut FrameReader<R>,
    each: impl FnMut(&crate::tree::manifest::Entry) -> Result<(), E>,
) -> Result<Option<Msg>, E> {
    use message::tag::{MANIFEST, MANIFEST_COMPACT};
    match r.read_frame_or_body(message::tag::DATA, message::MAX_DATA_CHUNK)? {
        frame::Frame::Payload(p) if matches!(p.first(), Some(&(MANIFEST | MANIFEST_COMPACT))) => {
            let mut d = frame::Dec::new(&p[1..]);
            let compact = p[0] == MANIFEST_COMPACT;
            manifest_wire::decode_each(&mut d, compact, message::MAX_BATCH, each)?;
            d.end("Manifest")?;
            Ok(None)
        }
        frame::Frame::Payload(p) => Ok(Some(Msg::decode(p)?)),
        frame::Frame::Body(b) => Ok(Some(Msg::Data(b))),
    }
}

/// Encode and write one message (not flushed).
pub fn send<W: Write>(w: &mut FrameWriter<W>, m: &Msg) -> Result<(), ProtocolError> {
    w.write_frame(&m.encode())?;
    Ok(())
}

/// This build's software string, sent in the handshake.
pub fn software() -> String {
    format!("hasync {}", env!("CARGO_PKG_VERSION"))
}

/// Check the peer's version numbers; `Err` carries a message for people.
pub fn check_version(major: u16, software: &str) -> Result<(), String> {
    if major != message::PROTO_MAJOR {
        return Err(format!(
            "protocol version mismatch: this side ({}) speaks protocol {}, the peer ({software}) speaks {major}; install the same major version of hasync on both nodes",
            self::software(),
            message::PROTO_MAJOR
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(msgs: &[Msg]) -> FrameReader<std::io::Cursor<Vec<u8>>> {
        let mut bytes = Vec::new();
        let mut w = FrameWriter::new(&mut bytes);
        for m in msgs {
            send(&mut w, m).unwrap();
        }
        drop(w);
        FrameReader::new(std::io::Cursor::new(bytes))
    }

    /// After a pipelined `Open`, `recv` takes the `OpenOk` out of the stream, hands back
    /// the `Error` that replaced it, and refuses anything else.
    #[test]
    fn a_pipelined_open_answer_is_taken_out_of_the_stream() {
        let mut r = stream(&[Msg::OpenOk, Msg::WantsEnd, Msg::OpenOk]);
        r.expect_open_ok();
        assert!(matches!(recv(&mut r), Ok(Msg::WantsEnd)));
        assert!(!r.open_pending());
        assert!(
            matches!(recv(&mut r), Ok(Msg::OpenOk)),
            "only the first is skipped"
        );
        let refusal = Msg::Error {
            code: message::code::FENCED,
            message: "refused".into(),
        };
        let mut r = stream(std::slice::from_ref(&refusal));
        r.expect_open_ok();
        assert_eq!(recv(&mut r).unwrap(), refusal);
        let mut r = stream(&[Msg::WantsEnd]);
        r.expect_open_ok();
        let e = recv(&mut r).unwrap_err().to_string();
        assert!(e.contains("expected OpenOk"), "{e}");
    }
}
