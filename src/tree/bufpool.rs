//! A small process-wide pool of data buffers.
//!
//! File data moves in buffers of up to 1 MiB: a frame is read into one, the
//! rebuild writes it out, the hash thread hashes it. They are allocated on one
//! thread and finished with on another; left to the allocator, glibc's heap
//! was trimmed and grown again all the time (72,000 page faults, 280 MiB of
//! pages zeroed by the kernel, in the serve side of a 1 GiB copy). Buffers that
//! are done go back here and the next frame reuses one.

use std::sync::Mutex;

/// Buffers smaller than this are not worth keeping.
const MIN_CAPACITY: usize = 64 * 1024;
/// Most buffers kept (a few MiB).
const KEEP: usize = 8;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for `capacity` bytes, reused when one is free.
pub fn take(capacity: usize) -> Vec<u8> {
    if capacity >= MIN_CAPACITY {
        let reused = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(mut v) = reused {
            v.clear();
            v.reserve(capacity);
            return v;
        }
    }
    Vec::with_capacity(capacity)
}

/// Hand back a buffer that is no longer needed.
pub fn give(v: Vec<u8>) {
    if v.capacity() < MIN_CAPACITY {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < KEEP {
        pool.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_reused_empty() {
        let mut v = take(1 << 20);
        v.extend_from_slice(b"old bytes");
        give(v);
        // This buffer or another test's: empty, with the room asked for.
        let w = take(1 << 20);
        assert!(w.is_empty() && w.capacity() >= 1 << 20);
        give(vec![0; 10]); // too small to keep: dropped
    }
}
