//! The bandwidth cap (`--bwlimit`): a token bucket on the bytes a side writes.
//!
//! Each side caps what it writes itself, below the frames (so on the compressed
//! bytes, the ones the link carries): the client its writes, the serve its own once
//! the client's `Link` said the rate (protocol 2.6), so both directions of a push and
//! of a pull are capped without waiting for the far side's buffers to fill. Writes
//! leave in slices of 10 ms of traffic and the bucket holds at most
//! [`BURST`] of it, so the link never sees a burst of more than about 50 ms worth,
//! and over any second the rate is the cap (tested to 5% over a real sshd).
//!
//! The rate is a shared [`Rate`] handle: the connection is wrapped once, and each
//! session sets (or clears) the rate before it starts.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How much traffic the bucket may save up (a burst after an idle moment).
pub const BURST: Duration = Duration::from_millis(50);
/// The size of one write, in time at the cap.
const SLICE: Duration = Duration::from_millis(10);

/// A cap in bytes per second shared by a connection and whoever sets it (0: none).
#[derive(Clone, Default, Debug)]
pub struct Rate(Arc<AtomicU64>);

impl Rate {
    pub fn set(&self, bytes_per_sec: u64) {
        self.0.store(bytes_per_sec, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A writer whose bytes go out no faster than its [`Rate`].
pub struct Throttled<W: Write> {
    inner: W,
    rate: Rate,
    /// Bytes that may be written now, and when that was computed, at which rate.
    tokens: f64,
    at: Instant,
    at_rate: u64,
}

impl<W: Write> Throttled<W> {
    pub fn new(inner: W, rate: Rate) -> Self {
        Throttled {
            inner,
            rate,
            tokens: 0.0,
            at: Instant::now(),
            at_rate: 0,
        }
    }

    /// Wait until `n` bytes may go at `rate`.
    fn wait(&mut self, n: usize, rate: u64) {
        let now = Instant::now();
        if rate != self.at_rate {
            // A new cap starts with an empty bucket: no burst at the start of a session.
            self.tokens = 0.0;
            self.at_rate = rate;
        } else {
            let cap = (rate as f64 * BURST.as_secs_f64()).max(n as f64);
            self.tokens = (self.tokens + rate as f64 * (now - self.at).as_secs_f64()).min(cap);
        }
        self.at = now;
        if self.tokens < n as f64 {
            let need = (n as f64 - self.tokens) / rate as f64;
            std::thread::sleep(Duration::from_secs_f64(need));
            let now = Instant::now();
            self.tokens += rate as f64 * (now - self.at).as_secs_f64();
            self.at = now;
        }
    }
}

impl<W: Write> Write for Throttled<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let rate = self.rate.get();
        if rate == 0 || buf.is_empty() {
            self.at_rate = 0;
            return self.inner.write(buf);
        }
        let slice = ((rate as f64 * SLICE.as_secs_f64()) as usize).clamp(512, 256 * 1024);
        let n = buf.len().min(slice);
        self.wait(n, rate);
        let done = self.inner.write(&buf[..n])?;
        self.tokens -= done as f64;
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records when each byte was written.
    struct Clock(Vec<(Instant, usize)>);
    impl Write for Clock {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.push((Instant::now(), b.len()));
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_rate_holds_and_no_100ms_window_bursts() {
        let rate = Rate::default();
        rate.set(4 << 20);
        let mut w = Throttled::new(Clock(Vec::new()), rate);
        let t0 = Instant::now();
        let chunk = vec![0u8; 256 * 1024];
        // 2 s worth, in writes of 256 KiB as the BufWriter above hands them.
        for _ in 0..32 {
            w.write_all(&chunk).unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        let got = (8 << 20) as f64 / secs;
        assert!(
            (got / (4 << 20) as f64 - 1.0).abs() < 0.05,
            "{got:.0} B/s for a cap of {} B/s",
            4 << 20
        );
        // Any 100 ms window carries at most 100 ms of traffic plus the burst and one slice.
        let log = &w.inner.0;
        let max = (4 << 20) as f64 * (0.1 + BURST.as_secs_f64() + SLICE.as_secs_f64());
        for (i, (t, _)) in log.iter().enumerate() {
            let n: usize = log[i..]
                .iter()
                .take_while(|(u, _)| *u - *t < Duration::from_millis(100))
                .map(|(_, n)| n)
                .sum();
            assert!((n as f64) <= max, "{n} bytes within 100 ms (max {max:.0})");
        }
    }

    #[test]
    fn no_rate_writes_straight_through() {
        let mut w = Throttled::new(Clock(Vec::new()), Rate::default());
        w.write_all(&[0; 1 << 20]).unwrap();
        assert_eq!(w.inner.0.len(), 1);
    }
}
