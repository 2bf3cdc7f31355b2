//! Exclusive use of a data directory by one `ferry` process. Two brokers writing the same
//! shard logs would corrupt each other, so start-up takes an exclusive `flock` on
//! `<data-dir>/ferry.lock` (holding our pid) and refuses to start when another live process
//! holds it. The kernel drops the lock when the process dies, `kill -9` included. On NFS
//! such locks are only advisory; the active/standby lease (ARCHITECTURE §5) replaces this.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, bail};

/// Holds the lock for as long as it lives (keep it for the life of the process).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Creates `dir` if needed and locks it for this process.
pub fn lock(dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    let path = dir.join("ferry.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        bail!(
            "data directory {} is in use by another ferry process (pid {}); give each broker its own --data-dir",
            dir.display(),
            holder.trim()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = lock(dir.path()).expect("first lock");
        // flock locks belong to the open file description, so a second open conflicts.
        let err = lock(dir.path()).expect_err("second lock refused");
        assert!(err.to_string().contains("in use by another ferry process"), "{err}");
        drop(first);
        lock(dir.path()).expect("free again");
    }
}
