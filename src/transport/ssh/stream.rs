//! Bridges an exec'd SSH channel to the engine's blocking `Read`/`Write`.
//!
//! The engine writes into a bounded queue of byte chunks that the upload task
//! hands to the channel (no copy through a socket: a push moves every byte of
//! the files this way), and reads one end of a `UnixStream` pair that the
//! download task fills from the channel. The download task also
//! collects the remote's stderr and exit status (which `into_stream()` would
//! drop) and notices when the session dies, so that a blocked read or write
//! ends with an error instead of hanging.

use super::session::{ClientHandler, SessionState};
use crate::transport::{Closer, Connection, TransportError};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const STDERR_CAP: usize = 64 * 1024;
/// Chunks queued from the engine to the upload task, and the largest chunk:
/// up to 4 MiB in flight on our side of the channel.
const UPLOAD_QUEUE: usize = 16;
const UPLOAD_CHUNK: usize = 256 * 1024;
/// How long `finish` waits for the peer to exit once our side is done.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);
/// After the end of the peer's output, how long `finish_clean` waits for an exit status:
/// sshd sends a dead peer's status within about a millisecond of its output's end,
/// while a live serve is still freeing old copies (10-20 ms in a 1% run over 20,000
/// files), which every run used to wait out in full with 10 ms here.
const EXIT_GRACE: Duration = Duration::from_millis(3);

/// What the channel told us, shared between the pump tasks and the engine side.
#[derive(Default)]
struct ChanState {
    stderr: String,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
    /// The channel is over (closed by the peer, or the session died).
    closed: bool,
    /// The peer ended its output (it closed its stdout and stderr, or exited).
    eof: bool,
    /// Set when the session died instead of the channel closing normally.
    failure: Option<String>,
}

struct Shared {
    st: Mutex<ChanState>,
    cv: Condvar,
    /// Bytes moved either way (for stall detection).
    progress: AtomicU64,
    /// The download task waits for the engine to read; the upload task waits for the channel.
    down_blocked: AtomicBool,
    up_blocked: AtomicBool,
    /// "root@host:port", for messages.
    describe: String,
    remote_path: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ChanState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_closed(&self, timeout: Duration) -> MutexGuard<'_, ChanState> {
        self.wait_until(timeout, |st| st.closed)
    }

    fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&ChanState) -> bool,
    ) -> MutexGuard<'_, ChanState> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        while !done(&g) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        g
    }

    /// The error the peer's end amounts to, if any.
    fn peer_error(&self, st: &ChanState) -> Option<TransportError> {
        let stderr = st.stderr.clone();
        if let Some(sig) = &st.exit_signal {
            return Some(TransportError::PeerFailed {
                status: format!("killed by signal {sig}"),
                stderr,
            });
        }
        match st.exit_status {
            Some(0) => None,
            Some(n) => {
                let prog = self
                    .remote_path
                    .split_whitespace()
                    .last()
                    .unwrap_or("hasync");
                let missing = n == 127
                    || n == 126
                    || stderr.contains("command not found")
                    || (stderr.contains(prog) && stderr.contains("not found"));
                let status = if missing {
                    format!(
                        "exit status {n}: `{}` could not be run on {}; install hasync there, or point \
                         --remote-path (remote_path in the config) at it",
                        self.remote_path, self.describe
                    )
                } else {
                    format!("exit status {n}")
                };
                Some(TransportError::PeerFailed { status, stderr })
            }
            None => Some(match &st.failure {
                Some(f) => {
                    TransportError::Other(format!("ssh connection to {} lost: {f}", self.describe))
                }
                None => TransportError::PeerFailed {
                    status: "no exit status".into(),
                    stderr,
                },
            }),
        }
    }

    /// Turns an I/O failure (or an early end of stream) on the engine side into
    /// an error that says why: the link died, or the peer exited with an error.
    fn explain(&self, fallback: io::Error) -> io::Error {
        let st = self.wait_closed(Duration::from_secs(5));
        match (st.closed, self.peer_error(&st)) {
            (true, Some(e)) => {
                let kind = match e {
                    TransportError::Other(_) => io::ErrorKind::ConnectionAborted,
                    _ => io::ErrorKind::Other,
                };
                io::Error::new(kind, e.to_string())
            }
            _ => fallback,
        }
    }
}

/// Starts the pumps and returns the engine's view of the connection.
#[allow(clippy::too_many_arguments)] // one call site, each argument a distinct piece of the session
pub(crate) fn start(
    rt: &'static Runtime,
    handle: Arc<client::Handle<ClientHandler>>,
    session_state: Arc<Mutex<SessionState>>,
    channel: russh::Channel<client::Msg>,
    describe: String,
    remote_path: String,
    stall_limit: Duration,
    owns_session: bool,
) -> Result<Connection, TransportError> {
    let io_err = |e: io::Error| TransportError::Other(format!("local socket pair: {e}"));
    let (engine, pump) = UnixStream::pair().map_err(io_err)?;
    pump.set_nonblocking(true).map_err(io_err)?;
    let pump = {
        let _guard = rt.enter();
        tokio::net::UnixStream::from_std(pump).map_err(io_err)?
    };
    let (_, sock_w) = pump.into_split();
    let (up_tx, up_rx) = tokio::sync::mpsc::channel(UPLOAD_QUEUE);
    let (read_half, write_half) = channel.split();
    let shared = Arc::new(Shared {
        st: Mutex::new(ChanState::default()),
        cv: Condvar::new(),
        progress: AtomicU64::new(0),
        down_blocked: AtomicBool::new(false),
        up_blocked: AtomicBool::new(false),
        describe,
        remote_path,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let up = rt.spawn(upload(up_rx, write_half, shared.clone(), stop_rx));
    let down = rt.spawn(download(
        read_half,
        sock_w,
        shared.clone(),
        session_state.clone(),
        stop_tx.clone(),
    ));
    let watch = rt.spawn(monitor(
        handle.clone(),
        shared.clone(),
        session_state,
        stop_tx.clone(),
        down.abort_handle(),
        stall_limit,
    ));
    Ok(Connection {
        reader: Box::new(SshReader {
            sock: engine,
            shared: shared.clone(),
        }),
        writer: Box::new(SshWriter {
            tx: Some(up_tx),
            shared: shared.clone(),
        }),
        closer: Box::new(SshCloser {
            rt,
            shared,
            handle: Some(handle),
            owns_session,
            stop: stop_tx,
            tasks: vec![up, down, watch],
        }),
    })
}

/// Engine -> channel.
async fn upload(
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    chan: ChannelWriteHalf<client::Msg>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let data = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            d = rx.recv() => d,
        };
        let Some(data) = data else {
            // The engine's writer was dropped: no more input.
            let _ = chan.eof().await;
            return;
        };
        let n = data.len();
        shared.up_blocked.store(true, Ordering::Relaxed);
        let ok = tokio::select! {
            _ = stop.wait_for(|s| *s) => false,
            r = chan.data_bytes(data) => r.is_ok(),
        };
        shared.up_blocked.store(false, Ordering::Relaxed);
        if !ok {
            return;
        }
        shared.progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Channel -> engine, plus stderr, exit status and the channel's end.
async fn download(
    mut chan: ChannelReadHalf,
    mut sock: tokio::net::unix::OwnedWriteHalf,
    shared: Arc<Shared>,
    session_state: Arc<Mutex<SessionState>>,
    stop: watch::Sender<bool>,
) {
    let mut sock_ok = true;
    let mut failure = None;
    loop {
        match chan.wait().await {
            Some(ChannelMsg::Data { data }) => {
                if sock_ok {
                    shared.down_blocked.store(true, Ordering::Relaxed);
                    let r = sock.write_all(&data).await;
                    shared.down_blocked.store(false, Ordering::Relaxed);
                    shared
                        .progress
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if r.is_err() {
                        // The engine stopped reading; keep draining for stderr and status.
                        sock_ok = false;
                    }
                }
            }
            Some(ChannelMsg::ExtendedData { data, .. }) => {
                let mut st = shared.lock();
                if st.stderr.len() < STDERR_CAP {
                    st.stderr.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Some(ChannelMsg::Eof) => {
                let _ = sock.shutdown().await;
                sock_ok = false;
                shared.lock().eof = true;
                shared.cv.notify_all();
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                shared.lock().exit_status = Some(exit_status)
            }
            Some(ChannelMsg::ExitSignal {
                signal_name,
                error_message,
                ..
            }) => {
                let mut s = format!("{signal_name:?}");
                if !error_message.is_empty() {
                    s.push_str(&format!(" ({error_message})"));
                }
                shared.lock().exit_signal = Some(s);
            }
            Some(ChannelMsg::Failure) => {
                failure = Some("the server refused to run the command".to_string());
                break;
            }
            Some(ChannelMsg::Close) => break,
            Some(_) => {}
            None => {
                failure = Some(disconnect_reason(&session_state).await);
                break;
            }
        }
    }
    finalize(&shared, failure);
    // Stop the upload side; dropping both socket halves ends the engine's reads and writes.
    let _ = stop.send(true);
}

/// Why the session ended (the handler records it just after the channels go).
async fn disconnect_reason(session_state: &Mutex<SessionState>) -> String {
    for _ in 0..20 {
        let why = session_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .disconnect
            .clone();
        if let Some(w) = why {
            return w;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    "the connection closed".to_string()
}

/// Marks the channel over (once) and wakes whoever waits for it.
fn finalize(shared: &Shared, failure: Option<String>) {
    {
        let mut st = shared.lock();
        if st.closed {
            return;
        }
        if st.exit_status.is_none() && st.exit_signal.is_none() {
            st.failure = failure;
        }
        st.closed = true;
    }
    shared.cv.notify_all();
}

/// Watches the session itself. If it dies while the download task is stuck
/// (the engine not reading), or if nothing moves either way for `stall_limit`
/// while both directions wait (russh stops its whole event loop, keepalives
/// included, while a channel's queue is full), end everything so that no read
/// or write blocks forever.
async fn monitor(
    handle: Arc<client::Handle<ClientHandler>>,
    shared: Arc<Shared>,
    session_state: Arc<Mutex<SessionState>>,
    stop: watch::Sender<bool>,
    download: tokio::task::AbortHandle,
    stall_limit: Duration,
) {
    let mut last = (
        shared.progress.load(Ordering::Relaxed),
        tokio::time::Instant::now(),
    );
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if shared.lock().closed {
            return;
        }
        let why = if handle.is_closed() {
            // Give the download task a moment to see the end itself.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if shared.lock().closed {
                return;
            }
            disconnect_reason(&session_state).await
        } else {
            let now = tokio::time::Instant::now();
            let p = shared.progress.load(Ordering::Relaxed);
            let both_wait = shared.down_blocked.load(Ordering::Relaxed)
                && shared.up_blocked.load(Ordering::Relaxed);
            if p != last.0 || !both_wait {
                last = (p, now);
                continue;
            }
            if now - last.1 < stall_limit {
                continue;
            }
            format!(
                "stalled: no data moved either way for {}s while both sides waited \
                 (the peer stopped reading, or the link is down)",
                stall_limit.as_secs()
            )
        };
        download.abort();
        finalize(&shared, Some(why));
        let _ = stop.send(true);
        return;
    }
}

struct SshReader {
    sock: UnixStream,
    shared: Arc<Shared>,
}

impl Read for SshReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.sock.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    // End of stream: clean only if the peer exited well.
                    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream");
                    let e = self.shared.explain(eof);
                    return if e.kind() == io::ErrorKind::UnexpectedEof {
                        Ok(0)
                    } else {
                        Err(e)
                    };
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.shared.explain(e)),
            }
        }
    }
}

impl Drop for SshReader {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Read);
    }
}

struct SshWriter {
    /// `None` once the writer is shut down.
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    shared: Arc<Shared>,
}

impl Write for SshWriter {
    /// Queue a copy of `buf` for the upload task; waits while the queue is full.
    /// Called from plain threads (like every blocking call of this transport).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(UPLOAD_CHUNK);
        let sent = match &self.tx {
            Some(tx) => tx.blocking_send(buf[..n].to_vec()).is_ok(),
            None => false,
        };
        if sent {
            Ok(n)
        } else {
            let gone = io::Error::new(io::ErrorKind::BrokenPipe, "the SSH channel is closed");
            Err(self.shared.explain(gone))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct SshCloser {
    rt: &'static Runtime,
    shared: Arc<Shared>,
    handle: Option<Arc<client::Handle<ClientHandler>>>,
    /// Disconnect the session when this connection ends (else it is shared).
    owns_session: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SshCloser {
    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        // A session shared with others (SshSession, a transport's cache) stays up.
        if let Some(h) = self.handle.take().filter(|_| self.owns_session) {
            self.rt.spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    h.disconnect(russh::Disconnect::ByApplication, "", "en"),
                )
                .await;
            });
        }
    }
}

impl SshCloser {
    /// The error of a peer that did not finish within [`FINISH_TIMEOUT`].
    fn timed_out(&self) -> TransportError {
        TransportError::Other(format!(
            "the peer on {} did not finish within {}s",
            self.shared.describe,
            FINISH_TIMEOUT.as_secs()
        ))
    }
}

impl Closer for SshCloser {
    fn finish(mut self: Box<Self>) -> Result<(), TransportError> {
        let result = {
            let st = self.shared.wait_closed(FINISH_TIMEOUT);
            if st.closed {
                match self.shared.peer_error(&st) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            } else {
                Err(self.timed_out())
            }
        };
        self.shutdown();
        result
    }

    fn stderr(&self) -> String {
        self.shared.lock().stderr.clone()
    }

    /// After `Bye`, the end of the peer's output is enough: a serve closes it before
    /// it finishes freeing the old copies of what it received (~110 ms per replaced
    /// 256 MiB file on a `discard` mount), then exits 0. A peer that exited sends its
    /// status right behind the end of its output: [`EXIT_GRACE`] is left for it, and
    /// an error status still counts.
    fn finish_clean(mut self: Box<Self>) -> Result<(), TransportError> {
        let result = {
            drop(
                self.shared
                    .wait_until(FINISH_TIMEOUT, |st| st.closed || st.eof),
            );
            let st = self.shared.wait_closed(EXIT_GRACE);
            if st.closed || st.exit_status.is_some() || st.exit_signal.is_some() {
                self.shared.peer_error(&st).map_or(Ok(()), Err)
            } else if st.eof {
                Ok(())
            } else {
                Err(self.timed_out())
            }
        };
        self.shutdown();
        result
    }
}

impl Drop for SshCloser {
    fn drop(&mut self) {
        self.shutdown();
    }
}
