//! Probes: one question each to the master (or a witness), answered within a timeout.
//! - `icmp`: the system `ping` (iputils-ping; no raw socket in hasync itself). A timeout
//!   of a second or more is rounded down to whole seconds, `ping -c 1 -w SECS -i 0.2 -n
//!   <host>` (a request every 0.2 s until the first reply); below a second, one request,
//!   `ping -c 1 -W <timeout> -n <host>`. Exit 0 = up, exit 1 = no reply = down; anything else (exit 2:
//!   "Network is unreachable", unknown host, `ping` missing) is a local problem.
//! - `tcp:PORT`: a TCP connect to `address:PORT`. Connected = up; refused, reset or
//!   timed out = down (the host may answer ping while the service is dead).
//! - `http://host[:port]/path`: a plain HTTP/1.0 GET over a std TcpStream; a 2xx status
//!   within the timeout = up. `https://` runs `curl` (certificate checked); without curl
//!   the probe is "unknown" and says so.
//! - `cmd:COMMAND`: `sh -c COMMAND` with `HASYNC_MASTER` set; exit 0 = up.
//!
//! Errors that describe the slave itself (no route: ENETUNREACH, no address:
//! EADDRNOTAVAIL, network down) give [`ProbeResult::Local`]: they never count as "master
//! down". EHOSTUNREACH (no ARP answer, or a router's host-unreachable) is
//! [`ProbeResult::Unreachable`]: it counts as down only when a witness answered in the
//! same check, which proves the slave's own network works (see [`super::check`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::node::exec;

/// One probe's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeResult {
    Up,
    Down,
    /// EHOSTUNREACH: down if the slave's network is proven fine, else unknown.
    Unreachable,
    /// The slave's own problem, or the probe could not run: says nothing about the master.
    Local,
}

/// A probe's answer with the reason, for logs and `master.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub probe: String,
    pub target: String,
    pub result: ProbeResult,
    pub detail: String,
    pub duration_ms: u64,
}

/// Runs `probe` (as written in the config) against `address` within `timeout`.
pub fn run(probe: &str, address: &str, timeout: Duration) -> ProbeReport {
    let t0 = Instant::now();
    let (result, detail) = if probe == "icmp" {
        icmp(address, timeout)
    } else if let Some(port) = probe.strip_prefix("tcp:") {
        match port.parse::<u16>() {
            Ok(p) => tcp(address, p, timeout),
            Err(_) => (ProbeResult::Local, format!("{port:?} is not a port")),
        }
    } else if let Some(rest) = probe.strip_prefix("http://") {
        http(rest, timeout)
    } else if probe.starts_with("https://") {
        https(probe, timeout)
    } else if let Some(cmd) = probe.strip_prefix("cmd:") {
        command(cmd, address, timeout)
    } else {
        (ProbeResult::Local, format!("unknown probe {probe:?}"))
    };
    ProbeReport {
        probe: probe.to_string(),
        target: address.to_string(),
        result,
        detail,
        duration_ms: t0.elapsed().as_millis() as u64,
    }
}

/// `ping -c 1 -w SECS -i 0.2 -n host` when the timeout is a second or more: ping
/// sends an echo request every 0.2 s until the first reply or the deadline, so
/// one lost packet (a lossy link) does not fail the check; below a second,
/// `ping -c 1 -W secs` (one request; ping's -w only takes whole seconds).
pub fn icmp(host: &str, timeout: Duration) -> (ProbeResult, String) {
    let whole = timeout.as_secs();
    let (w, secs) = if whole >= 1 {
        ("-w", whole.to_string())
    } else {
        ("-W", format!("{:.3}", timeout.as_secs_f64().max(0.001)))
    };
    let args: Vec<&str> = if whole >= 1 {
        vec!["-c", "1", w, &secs, "-i", "0.2", "-n", host]
    } else {
        vec!["-c", "1", w, &secs, "-n", host]
    };
    // ping's own deadline bounds the wait; ours is a safety net (DNS, a stuck ping).
    match exec::run("ping", &args, &[], timeout + Duration::from_secs(2)) {
        Err(e) if e.kind() == ErrorKind::NotFound => (
            ProbeResult::Local,
            "the ping command is missing (install iputils-ping, or use tcp: probes)".into(),
        ),
        Err(e) => (ProbeResult::Local, format!("cannot run ping: {e}")),
        Ok(o) if o.success() => (ProbeResult::Up, "echo reply".into()),
        Ok(o) if o.code == Some(1) => (ProbeResult::Down, "no echo reply".into()),
        Ok(o) => {
            let last = o.output.lines().last().unwrap_or("").to_string();
            (ProbeResult::Local, format!("ping failed: {last}"))
        }
    }
}

/// Resolves `host:port` (IPv6 literals in brackets or bare).
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// How a connect or I/O error classifies.
fn classify(e: &std::io::Error) -> ProbeResult {
    match e.raw_os_error() {
        Some(libc::ENETUNREACH) | Some(libc::EADDRNOTAVAIL) | Some(libc::ENETDOWN) => {
            ProbeResult::Local
        }
        Some(libc::EHOSTUNREACH) => ProbeResult::Unreachable,
        _ => ProbeResult::Down,
    }
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, (ProbeResult, String)> {
    let addr = resolve(host, port).map_err(|m| (ProbeResult::Local, m))?;
    TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1)))
        .map_err(|e| (classify(&e), format!("connect to {addr}: {e}")))
}

/// Runs `attempt` up to three times, started a third of `timeout` apart, each
/// allowed to run until the common deadline; the first "up" wins. A lost packet
/// (a SYN the kernel would only resend after a second, a request dropped by a
/// lossy link) shows as silence until the deadline, so the later attempts cover
/// it; an early answer that is not "up" (connection refused, an HTTP error, a
/// local error) is definite and returned at once. A slow but healthy peer still
/// answers the first attempt.
fn hedged(
    timeout: Duration,
    attempt: impl Fn(Duration) -> (ProbeResult, String) + Send + Sync + 'static,
) -> (ProbeResult, String) {
    let attempt = std::sync::Arc::new(attempt);
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    let (mut started, mut answered) = (0u32, 0u32);
    let mut first: Option<(ProbeResult, String)> = None;
    loop {
        let now = Instant::now();
        if started < 3 && now >= t0 + timeout / 3 * started && now < deadline {
            let (tx, attempt) = (tx.clone(), attempt.clone());
            let left = deadline - now;
            std::thread::spawn(move || {
                let _ = tx.send(attempt(left));
            });
            started += 1;
            continue;
        }
        if answered == started && (started == 3 || now >= deadline) {
            break;
        }
        let until = if started < 3 && now < deadline {
            (t0 + timeout / 3 * started).min(deadline)
        } else {
            deadline + Duration::from_millis(50)
        };
        match rx.recv_timeout(until.saturating_duration_since(now)) {
            Ok((ProbeResult::Up, d)) => return (ProbeResult::Up, d),
            Ok(r) => {
                answered += 1;
                if Instant::now() + Duration::from_millis(20) < deadline {
                    return r; // early: a definite answer, not a lost packet
                }
                first.get_or_insert(r);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                if Instant::now() >= deadline + Duration::from_millis(50) =>
            {
                break;
            }
            Err(_) => {}
        }
    }
    first.unwrap_or((ProbeResult::Down, format!("no answer within {timeout:?}")))
}

/// A TCP connect to `host:port`.
pub fn tcp(host: &str, port: u16, timeout: Duration) -> (ProbeResult, String) {
    let host = host.to_string();
    hedged(timeout, move |left| match connect(&host, port, left) {
        Ok(_) => (ProbeResult::Up, format!("connected to port {port}")),
        Err(r) => r,
    })
}

/// `rest` is the URL after `http://`.
fn http(rest: &str, timeout: Duration) -> (ProbeResult, String) {
    let rest = rest.to_string();
    hedged(timeout, move |left| http_once(&rest, left))
}

/// One HTTP GET within `timeout`.
fn http_once(rest: &str, timeout: Duration) -> (ProbeResult, String) {
    let deadline = Instant::now() + timeout;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => return (ProbeResult::Local, format!("{p:?} is not a port")),
        },
        _ => (hostport, 80),
    };
    let mut s = match connect(host, port, timeout) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = s.set_read_timeout(Some(left));
    let _ = s.set_write_timeout(Some(left));
    let req = format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()) {
        return (ProbeResult::Down, format!("sending the request: {e}"));
    }
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() && !head[..n].contains(&b'\n') {
        match s.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return (ProbeResult::Down, format!("reading the answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let line = line.lines().next().unwrap_or("").to_string();
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status.len() == 3 && status.starts_with('2') {
        (ProbeResult::Up, line)
    } else if line.is_empty() {
        (ProbeResult::Down, "no HTTP answer".into())
    } else {
        (ProbeResult::Down, format!("not 2xx: {line}"))
    }
}

/// `curl -sS -o /dev/null -w %{http_code} --max-time T URL`.
fn https(url: &str, timeout: Duration) -> (ProbeResult, String) {
    let secs = format!("{:.3}", timeout.as_secs_f64());
    match exec::run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            &secs,
            url,
        ],
        &[],
        timeout + Duration::from_secs(2),
    ) {
        Err(e) if e.kind() == ErrorKind::NotFound => (
            ProbeResult::Local,
            "https probes need curl, which is missing (install curl, or probe with http:// or tcp:)".into(),
        ),
        Err(e) => (ProbeResult::Local, format!("cannot run curl: {e}")),
        Ok(o) => {
            let code = o.output.lines().last().unwrap_or("").trim().to_string();
            match o.code {
                Some(0) if code.starts_with('2') => (ProbeResult::Up, format!("HTTP {code}")),
                Some(0) => (ProbeResult::Down, format!("not 2xx: HTTP {code}")),
                // 6: cannot resolve, 2: curl itself failed: nothing known about the master.
                Some(2) | Some(6) => (ProbeResult::Local, format!("curl: {}", o.output)),
                _ => (ProbeResult::Down, format!("curl: {}", o.output)),
            }
        }
    }
}

fn command(cmd: &str, address: &str, timeout: Duration) -> (ProbeResult, String) {
    match exec::shell(cmd, &[("HASYNC_MASTER", address)], timeout) {
        Err(e) => (ProbeResult::Local, format!("cannot run sh: {e}")),
        Ok(o) if o.success() => (ProbeResult::Up, "exit 0".into()),
        Ok(o) => (ProbeResult::Down, o.describe(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn tcp_up_and_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(tcp("127.0.0.1", port, T).0, ProbeResult::Up);
        drop(l);
        assert_eq!(tcp("127.0.0.1", port, T).0, ProbeResult::Down);
    }

    #[test]
    fn http_needs_a_2xx() {
        for (answer, want) in [
            ("HTTP/1.0 200 OK\r\n\r\n", ProbeResult::Up),
            (
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
                ProbeResult::Down,
            ),
            ("", ProbeResult::Down),
        ] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let h = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer.as_bytes());
            });
            let r = run(&format!("http://127.0.0.1:{port}/health"), "x", T);
            assert_eq!(r.result, want, "{answer:?}: {r:?}");
            h.join().unwrap();
        }
    }

    #[test]
    fn cmd_probe_sees_the_master_address() {
        let r = run("cmd:test \"$HASYNC_MASTER\" = 10.1.2.3", "10.1.2.3", T);
        assert_eq!(r.result, ProbeResult::Up, "{r:?}");
        assert_eq!(run("cmd:exit 1", "m", T).result, ProbeResult::Down);
        assert_eq!(run("cmd:sleep 5", "m", T).result, ProbeResult::Down);
    }

    #[test]
    fn errors_about_the_slave_are_local() {
        let e = std::io::Error::from_raw_os_error(libc::ENETUNREACH);
        assert_eq!(classify(&e), ProbeResult::Local);
        let e = std::io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert_eq!(classify(&e), ProbeResult::Unreachable);
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(classify(&e), ProbeResult::Down);
        // An unresolvable name says nothing about the master.
        assert_eq!(
            tcp("no-such-host.invalid", 1, T).0,
            ProbeResult::Local,
            "resolution failure"
        );
    }
}
