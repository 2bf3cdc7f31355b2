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
/// returns once the port accepts connections from it. A port picked free can be taken again
/// before the broker binds it (other processes' outgoing connections share the range): then
/// the broker exits and another port is tried, so a busy machine does not fail the test.
pub fn start(proto: &str) -> Broker {
    for _ in 0..5 {
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
        let mut broker = Broker { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if broker.child.try_wait().expect("child status").is_some() {
                break;
            }
            // A connection to an unlistened port of the ephemeral range can connect to itself.
            let accepted = std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok_and(|s| s.local_addr().is_ok_and(|local| local.port() != port));
            if accepted {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = broker.child.kill();
    }
    panic!("ferry did not come up on any of 5 ports");
}
