//! Is some process already listening on this address? The shards bind with SO_REUSEPORT, which
//! would otherwise let a second broker (any process of the same user) join the port and
//! silently take a share of its connections. A trial bind is no answer either: it also trips
//! over connections a killed broker left closing on the port, which must not stop its restart.
//!
//! The kernel is asked for its LISTEN sockets only (netlink `sock_diag`): the answer costs
//! the same with 100,000 client connections on the host as with none, where reading
//! `/proc/net/tcp` (the fallback, when netlink is not allowed) lists every one of them and
//! takes a fifth of a second at 10,000 — time a takeover would spend before serving.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::bail;

/// How long a listener found on the port may take to go away before the port counts as taken.
/// A broker killed with `kill -9` and restarted at once: its process is gone, but the kernel
/// tears its io_uring down asynchronously, and the listening sockets that ring's pending
/// accepts hold live on for a few milliseconds more. A live broker's listener stays.
const DYING_LISTENER_WAIT: Duration = Duration::from_secs(2);
const DYING_LISTENER_POLL: Duration = Duration::from_millis(20);

/// Refuses `addr` when another process listens on an overlapping address and the same port
/// (and still does after [`DYING_LISTENER_WAIT`]).
pub(super) fn ensure_unused(addr: SocketAddr) -> anyhow::Result<()> {
    ensure_unused_within(addr, DYING_LISTENER_WAIT)
}

fn ensure_unused_within(addr: SocketAddr, wait: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut waited = false;
    loop {
        if !listened_on(addr) {
            if waited {
                tracing::info!(%addr, ms = started.elapsed().as_millis(), "a listener of an exiting process went away");
            }
            return Ok(());
        }
        waited = true;
        if Instant::now() >= deadline {
            bail!("{addr} is already in use by another process (another broker?): refusing to share it");
        }
        std::thread::sleep(DYING_LISTENER_POLL);
    }
}

fn listened_on(addr: SocketAddr) -> bool {
    match diag::listeners() {
        Ok(listening) => listening.iter().any(|&(ip, port)| overlaps(ip, port, addr)),
        Err(_) => proc_net_lists(addr),
    }
}

/// Whether a listener on `ip:port` shares `addr`'s port and overlaps its address (equal, or
/// either side the wildcard; IPv6 listeners are counted on the port alone).
fn overlaps(ip: IpAddr, port: u16, addr: SocketAddr) -> bool {
    port == addr.port()
        && (ip.is_unspecified() || addr.ip().is_unspecified() || ip.is_ipv6() || addr.is_ipv6() || ip == addr.ip())
}

fn proc_net_lists(addr: SocketAddr) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| text.lines().skip(1).any(|line| listens_on(line, addr)))
    })
}

/// Whether a `/proc/net/tcp{,6}` line is a LISTEN socket (state `0A`) overlapping `addr`.
fn listens_on(line: &str, addr: SocketAddr) -> bool {
    let mut fields = line.split_whitespace();
    let (Some(local), Some(_remote), Some(state)) = (fields.nth(1), fields.next(), fields.next()) else {
        return false;
    };
    let Some((ip_hex, port_hex)) = local.split_once(':') else { return false };
    let Ok(port) = u16::from_str_radix(port_hex, 16) else { return false };
    if state != "0A" {
        return false;
    }
    let ip = match u32::from_str_radix(ip_hex, 16) {
        // IPv4 entries are the address in host (little-endian) order.
        Ok(raw) if ip_hex.len() == 8 => IpAddr::from(raw.to_le_bytes()),
        _ if ip_hex.bytes().all(|b| b == b'0') => IpAddr::from([0u16; 8]),
        _ => IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1u16]),
    };
    overlaps(ip, port, addr)
}

/// The netlink `sock_diag` dump of TCP LISTEN sockets (linux/inet_diag.h).
mod diag {
    use std::net::IpAddr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN: u32 = 10;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct SockId {
        sport: [u8; 2],
        dport: [u8; 2],
        src: [u8; 16],
        dst: [u8; 16],
        interface: u32,
        cookie: [u32; 2],
    }

    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: SockId,
    }

    /// `inet_diag_msg`, up to the socket id (the rest is not needed).
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Reply {
        family: u8,
        state: u8,
        timer: u8,
        retrans: u8,
        id: SockId,
    }

    const _: () = assert!(size_of::<SockId>() == 48);
    const _: () = assert!(size_of::<Request>() == 16 + 56);
    const NLMSG_HDRLEN: usize = size_of::<libc::nlmsghdr>();

    /// Every TCP socket in LISTEN state on the host: (local address, port).
    pub(super) fn listeners() -> std::io::Result<Vec<(IpAddr, u16)>> {
        let mut found = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            dump(family, &mut found)?;
        }
        Ok(found)
    }

    fn dump(family: libc::c_int, found: &mut Vec<(IpAddr, u16)>) -> std::io::Result<()> {
        // SAFETY: a plain socket(2); the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let request = Request {
            header: libc::nlmsghdr {
                nlmsg_len: size_of::<Request>() as u32,
                nlmsg_type: SOCK_DIAG_BY_FAMILY,
                nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
                nlmsg_seq: 1,
                nlmsg_pid: 0,
            },
            family: family as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: 1 << TCP_LISTEN,
            id: SockId::default(),
        };
        // SAFETY: sends the bytes of a repr(C) request to the kernel (destination: the kernel,
        // the default for an unbound netlink socket's send).
        let sent = unsafe { libc::send(fd.as_raw_fd(), (&raw const request).cast(), size_of::<Request>(), 0) };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: receives into an owned buffer of the given length.
            let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if parse(&buf[..got as usize], family, found)? || got == 0 {
                return Ok(());
            }
        }
    }

    /// Reads one datagram of netlink messages; true once the dump is done.
    fn parse(mut data: &[u8], family: libc::c_int, found: &mut Vec<(IpAddr, u16)>) -> std::io::Result<bool> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed sock_diag reply");
        while data.len() >= NLMSG_HDRLEN {
            // SAFETY: at least a header's bytes are there; read unaligned.
            let header: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
            let len = header.nlmsg_len as usize;
            if len < NLMSG_HDRLEN || len > data.len() {
                return Err(bad());
            }
            match header.nlmsg_type {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => return Err(std::io::Error::other("sock_diag refused the dump")),
                SOCK_DIAG_BY_FAMILY if len >= NLMSG_HDRLEN + size_of::<Reply>() => {
                    // SAFETY: the message holds a whole `Reply`; read unaligned.
                    let reply: Reply = unsafe { std::ptr::read_unaligned(data[NLMSG_HDRLEN..].as_ptr().cast()) };
                    let ip = if family == libc::AF_INET {
                        IpAddr::from([reply.id.src[0], reply.id.src[1], reply.id.src[2], reply.id.src[3]])
                    } else {
                        IpAddr::from(reply.id.src)
                    };
                    if u32::from(reply.state) == TCP_LISTEN {
                        found.push((ip, u16::from_be_bytes(reply.id.sport)));
                    }
                }
                _ => {}
            }
            let aligned = (len + 3) & !3;
            data = data.get(aligned..).unwrap_or(&[]);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listening_socket_on_an_overlapping_address_counts() {
        let listen_any =
            "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1";
        let listen_lo =
            "   1: 0100007F:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1";
        let closing = "   2: 0100007F:07E8 0100007F:C9D8 04 00000000:00000000 00:00000000 00000000     0        0 0 3";
        let port = 0x07E8;
        let at = |a: &str| format!("{a}:{port}").parse::<SocketAddr>().expect("addr");
        assert!(listens_on(listen_any, at("127.0.0.1")));
        assert!(listens_on(listen_lo, at("127.0.0.1")));
        assert!(listens_on(listen_lo, at("0.0.0.0")));
        assert!(!listens_on(listen_lo, at("127.0.0.2")));
        assert!(!listens_on(listen_lo, "127.0.0.1:1".parse().expect("addr")));
        assert!(!listens_on(closing, at("127.0.0.1")), "a closing connection is no listener");
        assert!(!listens_on("garbage", "127.0.0.1:1".parse().expect("addr")));
    }

    /// The netlink dump sees a listener this test opens, on its address and port, and not a
    /// connection's ends; and `ensure_unused` refuses that port while it listens.
    #[test]
    fn the_kernel_reports_a_listener_and_no_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (_server, _) = listener.accept().expect("accept");
        let listening = diag::listeners().expect("sock_diag dump");
        assert!(listening.contains(&(addr.ip(), addr.port())), "{addr} not in {listening:?}");
        let client_port = client.local_addr().expect("addr").port();
        assert!(!listening.iter().any(|&(_, port)| port == client_port), "a connection reported as listening");
        assert!(ensure_unused_within(addr, Duration::ZERO).is_err());
        assert!(proc_net_lists(addr), "the /proc fallback agrees");
        drop(listener);
        assert!(ensure_unused_within(addr, Duration::ZERO).is_ok(), "closed listener still reported");
    }

    /// A listener that goes away while the check waits (a killed broker's, torn down late)
    /// does not refuse the port; one that stays does, once the wait is over.
    #[test]
    fn a_listener_that_goes_away_within_the_wait_does_not_count() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let started = Instant::now();
        assert!(ensure_unused_within(addr, Duration::from_millis(200)).is_err(), "a live listener counts");
        assert!(started.elapsed() >= Duration::from_millis(200), "refused only after the wait");
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(listener);
        });
        assert!(ensure_unused_within(addr, Duration::from_secs(5)).is_ok(), "gone within the wait");
        closer.join().expect("closer");
    }
}
