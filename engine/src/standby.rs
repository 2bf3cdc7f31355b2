//! While a process is standby, MQTT clients that reach it are told where to go: MQTT 5 has a
//! reason code for exactly this ("Use another server", 0x9C, with the active's address in the
//! Server Reference property); an MQTT 3.1.1 client gets CONNACK 3, "Server unavailable".
//! Either way the connection is closed at once and the client's reconnect logic moves on, as
//! it does from the closed STOMP and AMQP ports (those protocols have no redirect a client
//! library acts on).
//!
//! A plain std thread with one listener, one connection at a time, each bounded in time and
//! bytes: it only ever reads one CONNECT. It is stopped, and its port closed, before the shards
//! of a process that takes over bind theirs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_mqtt::{ConnAck, Decoded, Packet, Properties, ReasonCode, Version};

use crate::lease::LeaseDir;

/// The most a standby reads of one CONNECT (a will message makes it large); bigger ones are
/// just closed.
const CONNECT_BYTES_MAX: usize = 64 * 1024;
/// How long a client gets to send its CONNECT.
const CONNECT_WAIT: Duration = Duration::from_millis(500);
/// How long the active's address, once read from the lease directory, is reused.
const REFERENCE_TTL: Duration = Duration::from_millis(500);
/// How often an idle accept loop looks at its stop flag.
const IDLE_POLL: Duration = Duration::from_millis(10);

/// The running redirector; [`Redirector::stop`] closes its port.
#[derive(Debug)]
pub struct Redirector {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Redirector {
    /// Listens on `addr` (this process's MQTT listener) until stopped. `None`, with a log
    /// line, when the port cannot be had: the standby then keeps it closed.
    pub fn start(addr: SocketAddr, lease: LeaseDir) -> Option<Redirector> {
        let listener = match reuseport_listener(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "standby cannot listen for MQTT redirects; the port stays closed");
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-standby-mqtt".to_owned())
            .spawn(move || serve(&listener, &lease, &stopped))
            .ok()?;
        tracing::info!(%addr, "standby answers MQTT clients with 'use another server'");
        Some(Redirector { stop, thread })
    }

    /// Stops answering and closes the port (before the shards bind it).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// A listener with SO_REUSEADDR and SO_REUSEPORT, as the shards bind theirs: the connections
/// it answered linger in TIME_WAIT on the port, and a shard's bind of it after a takeover is
/// refused unless those carry SO_REUSEPORT too.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn serve(listener: &TcpListener, lease: &LeaseDir, stop: &AtomicBool) {
    // Where the active is, read from the lease directory at most every REFERENCE_TTL: a crowd
    // of clients reconnecting at once must not turn into as many directory listings (NFS).
    let mut reference: Option<(Instant, Option<String>)> = None;
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let now = Instant::now();
                if reference.as_ref().is_none_or(|(at, _)| now.duration_since(*at) > REFERENCE_TTL) {
                    reference = Some((now, lease.active_listener("Mqtt")));
                }
                let active = reference.as_ref().and_then(|(_, r)| r.as_deref());
                if let Err(e) = redirect(stream, active) {
                    tracing::debug!(error = %e, "standby MQTT redirect");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(IDLE_POLL),
            Err(e) => {
                tracing::debug!(error = %e, "standby MQTT accept");
                std::thread::sleep(IDLE_POLL);
            }
        }
    }
}

/// Reads one CONNECT and answers it with the CONNACK for its protocol level.
fn redirect(mut stream: TcpStream, reference: Option<&str>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let deadline = Instant::now() + CONNECT_WAIT;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    let version = loop {
        match ferry_mqtt::decode(&buf, Version::V5, CONNECT_BYTES_MAX) {
            Ok(Decoded::Packet { packet: Packet::Connect(connect), .. }) => break connect.version,
            Ok(Decoded::Incomplete { .. }) => {}
            // Not a CONNECT, malformed, or too large: nothing to answer.
            Ok(Decoded::Packet { .. }) | Err(_) => return Ok(()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut out = Vec::new();
    ferry_mqtt::encode(&Packet::ConnAck(connack(reference)), version, &mut out);
    stream.set_write_timeout(Some(CONNECT_WAIT))?;
    stream.write_all(&out)
}

/// "Use another server" (MQTT 3.1.1 encodes it as 3, "Server unavailable"), naming the active.
fn connack(reference: Option<&str>) -> ConnAck {
    ConnAck {
        session_present: false,
        code: ReasonCode::USE_ANOTHER_SERVER,
        properties: Properties { server_reference: reference.map(str::to_owned), ..Properties::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(version: Version) -> Vec<u8> {
        let connect = ferry_mqtt::Connect {
            version,
            clean_start: true,
            keep_alive: 30,
            properties: Properties::default(),
            client_id: "c1".into(),
            will: None,
            username: None,
            password: None,
        };
        let mut out = Vec::new();
        ferry_mqtt::encode(&Packet::Connect(Box::new(connect)), version, &mut out);
        out
    }

    fn ask(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(bytes).expect("write");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read until the standby closes");
        got
    }

    #[test]
    fn v5_gets_use_another_server_with_the_active_address_and_v311_server_unavailable() {
        let data = tempfile::tempdir().expect("tempdir");
        let lease = LeaseDir::new(data.path()).expect("lease dir");
        lease.claim_for_test(1, "host h boot b pid 1 listen Stomp=127.0.0.1:61613,Mqtt=10.0.0.7:1883");
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        let redirector = Redirector::start(addr, lease).expect("listens");

        let got = ask(addr, &connect_bytes(Version::V5));
        let Ok(Decoded::Packet { packet: Packet::ConnAck(ack), .. }) = ferry_mqtt::decode(&got, Version::V5, 1024)
        else {
            panic!("no CONNACK: {got:?}");
        };
        assert_eq!(ack.code, ReasonCode::USE_ANOTHER_SERVER);
        assert_eq!(ack.properties.server_reference.as_deref(), Some("10.0.0.7:1883"));

        let got = ask(addr, &connect_bytes(Version::V3_1_1));
        assert_eq!(got, [0x20, 0x02, 0x00, 0x03], "3.1.1: CONNACK 'server unavailable'");

        assert!(ask(addr, b"GET / HTTP/1.1\r\n\r\n").is_empty(), "not MQTT: closed without an answer");
        redirector.stop();
        assert!(TcpStream::connect(addr).is_err(), "port closed after stop");
        // The answered connections linger in TIME_WAIT on the port; a shard taking over must
        // still be able to bind it.
        reuseport_listener(addr).expect("the port can be bound again after redirects");
    }
}
