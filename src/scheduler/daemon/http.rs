//! The daemon's tiny HTTP responder (`[daemon] metrics_listen`): `GET /metrics`
//! (Prometheus text format) and `GET /status` (the `hasync status --json` object).
//! Plain HTTP/1.0-style: one request per connection, answered and closed, on one
//! thread; requests are bounded in size and time so a stuck client cannot hold it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::node::config::Config;
use crate::scheduler::jobs::Job;
use crate::scheduler::state::DaemonState;
use crate::scheduler::status;

/// What the responder reports: the daemon's current config, jobs and plan.
pub(super) struct View {
    pub cfg: Arc<Config>,
    pub jobs: Vec<Arc<dyn Job>>,
    pub daemon: DaemonState,
}

pub(super) fn spawn(listener: TcpListener, view: Arc<Mutex<View>>) {
    let _ = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = answer(s, &view) {
                            tracing::debug!("metrics: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("metrics: accept: {e}"),
                }
            }
        });
}

fn answer(mut s: TcpStream, view: &Mutex<View>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (code, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            let r = report(view);
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                status::prometheus(&r),
            )
        }
        ("GET", "/status") => {
            let r = report(view);
            let json = serde_json::to_string_pretty(&r).unwrap_or_default();
            ("200 OK", "application/json", json + "\n")
        }
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "hasync daemon: see /metrics and /status\n".to_string(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    write!(
        s,
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

fn report(view: &Mutex<View>) -> status::StatusReport {
    let v = view.lock().unwrap_or_else(|e| e.into_inner());
    status::report(&v.cfg, &v.jobs, Some(&v.daemon), chrono::Utc::now())
}
