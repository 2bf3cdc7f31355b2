//! The admin HTTP endpoint (ARCHITECTURE §7; default `127.0.0.1:8161`, `--listen
//! admin=ADDR`): what an operator or a load balancer's health check asks a process —
//! is it the active or a standby, of which epoch, since when.
//!
//! - `GET /api/status`: JSON `{"role", "epoch", "lease", "shards", "listeners", "uptime_s"}`.
//! - `GET /metrics`: the same as Prometheus text (`ferry_active`, `ferry_epoch`, ...).
//! - `GET /healthz`: 200 on the active, 503 on a standby (for health checks that route
//!   traffic to whichever of a pair serves).
//!
//! It answers in every role, standby included, from its own std thread (the shards may not
//! be running yet). One request per connection, bounded in bytes and time. Loopback by
//! default: it has no authentication yet.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::lease::LeaseDir;

/// The largest request head read.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long a client gets to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(2);

/// A process's role, as the admin endpoint reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Starting = 0,
    Standby = 1,
    Active = 2,
    Stopping = 3,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::Active => "active",
            Role::Stopping => "stopping",
        }
    }

    fn from_u8(value: u8) -> Role {
        match value {
            1 => Role::Standby,
            2 => Role::Active,
            3 => Role::Stopping,
            _ => Role::Starting,
        }
    }
}

/// What the endpoint reports; the main thread updates role and epoch as they change.
#[derive(Debug)]
pub struct Status {
    role: AtomicU8,
    epoch: AtomicU64,
    started: Instant,
    lease: LeaseDir,
    shards: u16,
    listeners: String,
}

impl Status {
    pub fn new(lease: LeaseDir, shards: u16, listeners: String) -> Arc<Status> {
        Arc::new(Status {
            role: AtomicU8::new(Role::Starting as u8),
            epoch: AtomicU64::new(0),
            started: Instant::now(),
            lease,
            shards,
            listeners,
        })
    }

    pub fn set(&self, role: Role, epoch: Option<u64>) {
        if let Some(epoch) = epoch {
            self.epoch.store(epoch, Ordering::SeqCst);
        }
        self.role.store(role as u8, Ordering::SeqCst);
    }

    fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::SeqCst))
    }

    fn json(&self) -> String {
        let lease = self.lease.describe().unwrap_or_else(|e| format!("unreadable: {e}"));
        format!(
            "{{\"role\":\"{}\",\"epoch\":{},\"lease\":\"{}\",\"shards\":{},\"listeners\":\"{}\",\"uptime_s\":{}}}\n",
            self.role().name(),
            self.epoch.load(Ordering::SeqCst),
            escape(&lease),
            self.shards,
            escape(&self.listeners),
            self.started.elapsed().as_secs()
        )
    }

    fn metrics(&self) -> String {
        let role = self.role();
        format!(
            "# HELP ferry_active 1 when this process holds the lease and serves.\n# TYPE ferry_active gauge\n\
             ferry_active {}\n# HELP ferry_epoch The lease epoch this process holds (0: none yet).\n\
             # TYPE ferry_epoch gauge\nferry_epoch {}\n# HELP ferry_shards Shards of this process.\n\
             # TYPE ferry_shards gauge\nferry_shards {}\n# HELP ferry_uptime_seconds Since the process started.\n\
             # TYPE ferry_uptime_seconds counter\nferry_uptime_seconds {}\n\
             # HELP ferry_connections_parked Idle connections parked without a task (see runtime::park).\n\
             # TYPE ferry_connections_parked gauge\nferry_connections_parked {}\n\
             # HELP ferry_log_syncs_total Group commits (log syncs) completed, all shards.\n\
             # TYPE ferry_log_syncs_total counter\nferry_log_syncs_total {}\n\
             # HELP ferry_log_sync_released_total Receipts, confirms and other completions released by those syncs.\n\
             # TYPE ferry_log_sync_released_total counter\nferry_log_sync_released_total {}\n\
             # HELP ferry_log_sync_waits_total Group commits that first waited for the producers the previous one released.\n\
             # TYPE ferry_log_sync_waits_total counter\nferry_log_sync_waits_total {}\n\
             {}# HELP ferry_connections Connections each shard serves (see runtime::spread).\n\
             # TYPE ferry_connections gauge\n{}",
            u8::from(role == Role::Active),
            self.epoch.load(Ordering::SeqCst),
            self.shards,
            self.started.elapsed().as_secs(),
            crate::runtime::parked_total(),
            crate::journal::SYNCS_TOTAL.load(Ordering::Relaxed),
            crate::journal::SYNC_RELEASED_TOTAL.load(Ordering::Relaxed),
            crate::gather::WAITS_TOTAL.load(Ordering::Relaxed),
            crate::sync_time::SYNC_TIMES.render(),
            per_shard_connections()
        )
    }
}

/// `ferry_connections{shard="N"} COUNT` lines, one per shard.
fn per_shard_connections() -> String {
    let counts = crate::runtime::connections_per_shard();
    counts.iter().enumerate().map(|(shard, n)| format!("ferry_connections{{shard=\"{shard}\"}} {n}\n")).collect()
}

/// JSON string escaping for the few characters that need it.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Binds `addr` (an error when it is taken) and serves from a background thread for the
/// life of the process.
pub fn start(addr: SocketAddr, status: Arc<Status>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} for admin"))?;
    std::thread::Builder::new()
        .name("ferry-admin".to_owned())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &status) {
                            tracing::debug!(error = %e, "admin request");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "admin accept");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })
        .context("starting the admin thread")?;
    tracing::info!(%addr, "admin endpoint listening (/api/status, /metrics, /healthz)");
    Ok(())
}

fn answer(mut stream: TcpStream, status: &Status) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_WAIT;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() > REQUEST_BYTES_MAX {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large or slow\n",
            );
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    if method != b"GET" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", "only GET\n");
    }
    match path {
        b"/api/status" | b"/" => respond(&mut stream, "200 OK", "application/json", &status.json()),
        b"/metrics" => respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &status.metrics()),
        b"/healthz" if status.role() == Role::Active => respond(&mut stream, "200 OK", "text/plain", "active\n"),
        b"/healthz" => {
            respond(&mut stream, "503 Service Unavailable", "text/plain", &format!("{}\n", status.role().name()))
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_WAIT))?;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        let mut got = String::new();
        s.read_to_string(&mut got).expect("read");
        got
    }

    #[test]
    fn reports_role_and_epoch_as_they_change() {
        let data = tempfile::tempdir().expect("tempdir");
        let lease = LeaseDir::new(data.path()).expect("lease dir");
        let status = Status::new(lease, 2, "Stomp=127.0.0.1:1".into());
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr")
        };
        start(addr, status.clone()).expect("start");
        status.set(Role::Standby, None);
        let standby = get(addr, "GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(standby.starts_with("HTTP/1.1 200"), "{standby}");
        assert!(standby.contains("\"role\":\"standby\",\"epoch\":0,\"lease\":\"no epoch claimed yet\""), "{standby}");
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503"));
        status.set(Role::Active, Some(7));
        assert!(get(addr, "GET /api/status HTTP/1.1\r\n\r\n").contains("\"role\":\"active\",\"epoch\":7"));
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(metrics.contains("\nferry_active 1\n") && metrics.contains("\nferry_epoch 7\n"), "{metrics}");
        assert!(get(addr, "POST /api/status HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        // A head that never ends: refused once it passes the limit (exactly what was read was
        // sent, so the close is orderly).
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(REQUEST_BYTES_MAX + 8 - 19));
        assert_eq!(huge.len(), REQUEST_BYTES_MAX + 8);
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
    }
}
