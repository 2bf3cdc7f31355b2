//! Who holds a claim: the `host H boot B pid P listen L` line an epoch file carries, written
//! by the process that claimed it and read by standbys and by the same broker restarting after
//! a crash (which takes its lease back at once when its old process is gone). Plain data and
//! two system calls (`gethostname`, `kill(pid, 0)`); no I/O of the lease directory.

/// What a claim file says about its process: `host H boot B pid P listen L`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub(super) host: String,
    pub(super) boot: String,
    pub(super) pid: i32,
    pub(super) listen: String,
}

impl Owner {
    /// This process, serving `listen` (its listener list, as text).
    pub fn this(listen: &str) -> Owner {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        Owner {
            host: hostname(),
            boot: boot.trim().to_owned(),
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            listen: listen.replace(char::is_whitespace, ""),
        }
    }

    pub(super) fn parse(text: &str) -> Option<Owner> {
        let mut words = text.split_whitespace();
        let mut field = |name: &str| (words.next()? == name).then(|| words.next()).flatten().map(str::to_owned);
        Some(Owner {
            host: field("host")?,
            boot: field("boot")?,
            pid: field("pid")?.parse().ok()?,
            listen: field("listen").unwrap_or_default(),
        })
    }

    /// A restart of the same broker after a crash: same host, same boot, same listeners, and
    /// the process is gone — it can acknowledge nothing, so there is no expiry to wait for.
    /// (A reused pid looks alive: then the lease simply expires.) A standby on other ports or
    /// another host always waits for expiry.
    pub(super) fn is_dead_restart_of(&self, me: &Owner) -> bool {
        if self.host != me.host || self.boot != me.boot || self.listen != me.listen || self.boot.is_empty() {
            return false;
        }
        // SAFETY: signal 0 only checks that the pid exists; nothing is sent.
        let rc = unsafe { libc::kill(self.pid, 0) };
        rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {} boot {} pid {} listen {}", self.host, self.boot, self.pid, self.listen)
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
