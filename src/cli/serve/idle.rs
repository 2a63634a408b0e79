//! The idle deadline of `hasync serve` after the handshake: a peer that is alive
//! but silent (it neither sends nor reads) must not hold a `serve` process, and
//! whatever it has open, forever. Keepalives end a dead link; this ends a live
//! one that stopped talking.
//!
//! Both ends of the connection are wrapped: each read or write marks itself
//! pending while it blocks, and records the time when it completes. The
//! watchdog ends the process (exit 3) when some I/O has been pending and none
//! has completed for the whole deadline. Local work (a scan, a psql replay)
//! has no I/O pending, so it never counts as idle, and a long transfer keeps
//! completing reads or writes.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default idle deadline, in seconds: generous, a peer may scan a big tree first.
pub const IDLE_TIMEOUT: f64 = 600.0;

/// What the watchdog looks at.
pub struct Activity {
    start: Instant,
    /// I/O calls blocked right now.
    pending: AtomicI64,
    /// When the last I/O call completed (ms since `start`).
    last_done_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            pending: AtomicI64::new(0),
            last_done_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn around<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let r = f();
        self.last_done_ms.store(self.now_ms(), Ordering::SeqCst);
        self.pending.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// How long I/O has been pending with nothing completing (zero when none is pending).
    fn stalled_for(&self) -> Duration {
        if self.pending.load(Ordering::SeqCst) <= 0 {
            return Duration::ZERO;
        }
        let idle = self
            .now_ms()
            .saturating_sub(self.last_done_ms.load(Ordering::SeqCst));
        Duration::from_millis(idle)
    }
}

/// A reader or writer that reports to an [`Activity`].
pub struct Watched<T> {
    pub inner: T,
    pub activity: Arc<Activity>,
}

impl<T: Read> Read for Watched<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        self.activity.around(|| inner.read(buf))
    }
}

impl<T: Write> Write for Watched<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        self.activity.around(|| inner.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        self.activity.around(|| inner.flush())
    }
}

/// Ends the process with exit 3 once the connection has been stalled for `timeout`.
pub fn watchdog(activity: Arc<Activity>, timeout: Duration) {
    std::thread::spawn(move || {
        let tick = (timeout / 10).clamp(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            std::thread::sleep(tick);
            if activity.stalled_for() >= timeout {
                eprintln!(
                    "hasync: error: the peer went silent: nothing sent or read for {:.1} s; giving up",
                    timeout.as_secs_f64()
                );
                std::process::exit(3);
            }
        }
    });
}
