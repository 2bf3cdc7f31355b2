//! The `ferry` binary as an operator starts it: without CAP_IPC_LOCK under the machine's
//! memlock limit, with more shards than CPUs, stopping cleanly on SIGTERM, refusing
//! listeners for protocols this build does not serve, and refusing a port another broker
//! already listens on. Real processes, loopback only, every
//! wait bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now, never one handed to another test of this process: the tests
/// run in parallel, and the kernel may give two binds in a row the same ephemeral port. Two
/// tests sharing one saw each other's broker (a connection reset by a broker stopping on
/// SIGTERM, in CI).
fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Waits (up to 10 s) for the broker to log that it is ready, and keeps draining its stderr.
/// A test connects only then: in CI a connect to the port before the broker had bound it once
/// succeeded (nothing of this test listened there yet, `ss` showed no listener a moment later)
/// and was then reset, failing the test before the broker had even opened its log.
fn wait_ready(broker: &mut Broker) {
    let stderr = broker.0.as_mut().and_then(|child| child.stderr.take()).expect("broker stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("ferry is ready") {
            return;
        }
        seen.push(line);
    }
    panic!("the broker did not log that it is ready within 10 s:\n{}", seen.join("\n"));
}

fn connect_with_retry(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("broker never listened on {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn stomp_roundtrip(port: u16) -> String {
    let mut s = connect_with_retry(port);
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:a\ndestination:/queue/startup\n\n\0SEND\ndestination:/queue/startup\n\nhi\0")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("MESSAGE") {
        let n = s.read(&mut buf).expect("read before timeout");
        assert!(n > 0, "broker closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A broker that is killed if the test fails before stopping it (a panicking test must not
/// leave a broker running for hours, as one did).
struct Broker(Option<Child>);

impl Broker {
    fn take(mut self) -> Child {
        self.0.take().expect("broker already taken")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop(broker: Broker) -> std::process::ExitStatus {
    let mut child = broker.take();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ferry(dir: &std::path::Path, port: u16, shards: &str, drop_ipc_lock: bool) -> Broker {
    let bin = env!("CARGO_BIN_EXE_ferry");
    let mut cmd = if drop_ipc_lock {
        let mut c = Command::new("setpriv");
        c.args(["--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", bin]);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg("--data-dir").arg(dir).args(["--shards", shards, "--listen", &format!("stomp=127.0.0.1:{port}")]);
    Broker(Some(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn ferry")))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn starts_without_ipc_lock_with_more_shards_than_cpus_and_stops_on_sigterm() {
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    let drop_cap = is_root() && setpriv;
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let shards = (cpus * 2 + 1).to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = ferry(dir.path(), port, &shards, drop_cap);
    wait_ready(&mut child);
    let reply = stomp_roundtrip(port);
    assert!(reply.contains("CONNECTED") && reply.contains("\n\nhi\0"), "{reply}");
    let status = stop(child);
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
    if !drop_cap {
        eprintln!("note: ran with CAP_IPC_LOCK (not root or no setpriv)");
    }
}

#[test]
fn unbuilt_protocols_and_bad_config_are_refused_with_a_message() {
    let bin = env!("CARGO_BIN_EXE_ferry");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "openwire=127.0.0.1:61616"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not built yet"), "{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[limits]\nframe_size_bytes_maxx = 5\n").expect("write");
    let out = Command::new(bin).arg("--config").arg(&config).output().expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("frame_size_bytes_maxx"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_broker_on_a_port_in_use_is_refused_and_the_first_keeps_serving() {
    let (first_dir, second_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let port = free_port();
    let mut first = ferry(first_dir.path(), port, "2", false);
    wait_ready(&mut first);
    assert!(stomp_roundtrip(port).contains("CONNECTED"));
    let second = ferry(second_dir.path(), port, "2", false);
    let out = second.take().wait_with_output().expect("second broker exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second broker on the same port must not start");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stomp_roundtrip(port).contains("CONNECTED"), "the first broker still serves");
    assert!(stop(first).success());
}
