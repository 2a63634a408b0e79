//! The daemon's tiny HTTP responder (`[daemon] metrics_listen`): `GET /` (the status
//! page, [`super::page`]), `GET /metrics` (Prometheus text format), `GET /status` (the
//! `hasync status --json` object) and the health endpoints of [`crate::scheduler::health`]
//! (`/primary`, `/replica?lag=`, `/health`, `/role`; GET or HEAD). `[daemon]
//! health_listen` is a second listener with the health endpoints only.
//! Plain HTTP/1.0-style: one request per connection, answered and closed, on one
//! thread per listener; requests are bounded in size (8 KiB of head) and time (2 s to
//! read, 2 s to write) so a stuck client cannot hold it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::node::config::Config;
use crate::scheduler::health;
use crate::scheduler::jobs::Job;
use crate::scheduler::state::DaemonState;
use crate::scheduler::status;

/// What the responder reports: the daemon's current config, jobs and plan.
pub(super) struct View {
    pub cfg: Arc<Config>,
    pub jobs: Vec<Arc<dyn Job>>,
    pub daemon: DaemonState,
}

/// Which endpoints a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Surface {
    /// `metrics_listen`: everything.
    Full,
    /// `health_listen`: the health endpoints only.
    Health,
}

pub(super) fn spawn(listener: TcpListener, view: Arc<Mutex<View>>, surface: Surface) {
    let _ = std::thread::Builder::new()
        .name(format!("http {surface:?}").to_lowercase())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = answer(s, &view, surface) {
                            tracing::debug!("http: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("http: accept: {e}"),
                }
            }
        });
}

/// One answer: status line, content type, body.
struct Reply {
    code: &'static str,
    ctype: &'static str,
    body: String,
}

fn text(code: &'static str, body: impl Into<String>) -> Reply {
    let mut body = body.into();
    body.push('\n');
    Reply {
        code,
        ctype: "text/plain; charset=utf-8",
        body,
    }
}

fn health_reply(a: health::Answer) -> Reply {
    text(
        if a.ok {
            "200 OK"
        } else {
            "503 Service Unavailable"
        },
        a.why,
    )
}

fn read_head(s: &mut TcpStream) -> std::io::Result<String> {
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
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn answer(mut s: TcpStream, view: &Mutex<View>, surface: Surface) -> std::io::Result<()> {
    let head = read_head(&mut s)?;
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let reply = match method {
        "GET" | "HEAD" => route(path, query, view, surface),
        _ => text("405 Method Not Allowed", "only GET and HEAD"),
    };
    let Reply { code, ctype, body } = reply;
    write!(
        s,
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        s.write_all(body.as_bytes())?;
    }
    s.flush()
}

/// The value of `key` in a query string (`lag=60s&x=y`), if present.
fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn route(path: &str, query: &str, view: &Mutex<View>, surface: Surface) -> Reply {
    let cfg = view.lock().unwrap_or_else(|e| e.into_inner()).cfg.clone();
    match (path, surface) {
        ("/health", _) => text("200 OK", "ok"),
        ("/role", _) => text("200 OK", health::role_line(&cfg)),
        ("/primary", _) => health_reply(health::primary(&cfg)),
        ("/replica", _) => match query_value(query, "lag").map(health::parse_lag) {
            Some(Err(e)) => text("400 Bad Request", format!("lag: {e}")),
            Some(Ok(lag)) => health_reply(health::replica(&cfg, Some(lag), chrono::Utc::now())),
            None => health_reply(health::replica(&cfg, None, chrono::Utc::now())),
        },
        ("/metrics", Surface::Full) => Reply {
            code: "200 OK",
            ctype: "text/plain; version=0.0.4; charset=utf-8",
            body: status::prometheus(&report(view)) + &crate::cluster::status::prometheus(&cfg),
        },
        ("/status", Surface::Full) => {
            let json = serde_json::to_string_pretty(&report(view)).unwrap_or_default();
            Reply {
                code: "200 OK",
                ctype: "application/json",
                body: json + "\n",
            }
        }
        ("/", Surface::Full) => Reply {
            code: "200 OK",
            ctype: "text/html; charset=utf-8",
            body: super::page::render(&cfg, &report(view)),
        },
        _ => text("404 Not Found", "not found"),
    }
}

fn report(view: &Mutex<View>) -> status::StatusReport {
    let v = view.lock().unwrap_or_else(|e| e.into_inner());
    status::report(&v.cfg, &v.jobs, Some(&v.daemon), chrono::Utc::now())
}
