//! What the client-library tests share: a real `ferry` process on a free loopback port and
//! its own temporary data directory, killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ferry` with two shards and one listener for `proto` (`amqp`, `mqtt`, ...);
/// returns once the port accepts connections.
pub fn start(proto: &str) -> Broker {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--shards", "2", "--listen", &format!("{proto}=127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ferry");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ferry did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker { child, port, _dir: dir }
}
