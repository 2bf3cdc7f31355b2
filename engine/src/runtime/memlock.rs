//! Sizes glommio's registered I/O memory to the memlock limit. Each executor registers
//! `io_memory` on its rings; without CAP_IPC_LOCK that is charged to RLIMIT_MEMLOCK (8 MiB on
//! our machines, not raisable), so `3 × io_memory × shards` must fit or glommio logs ENOMEM
//! and runs without registered buffers. Ferry's sockets don't use those buffers, so a small
//! size costs nothing; we warn rather than fail when the limit is tight (STACK-NOTES). A
//! quarter of the limit per executor (not a third) leaves room for the rings' own pages.

/// glommio refuses to start an executor below this memlock limit.
pub const GLOMMIO_MEMLOCK_MIN_BYTES: u64 = 512 * 1024;
const IO_MEMORY_BYTES_MAX: usize = 2 * 1024 * 1024;
const IO_MEMORY_BYTES_MIN: usize = 64 * 1024;

/// The current RLIMIT_MEMLOCK soft limit in bytes (`u64::MAX` when unlimited).
pub fn memlock_limit_bytes() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; RLIMIT_MEMLOCK is a valid resource.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY { u64::MAX } else { limit.rlim_cur }
}

/// Whether this process holds CAP_IPC_LOCK (bit 14 of the effective set).
pub fn has_ipc_lock() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// The io_memory per executor, plus a warning to log when the limit forces a compromise.
pub fn io_memory_for(shards: u16, memlock_bytes: u64, ipc_lock: bool) -> (usize, Option<String>) {
    if ipc_lock || memlock_bytes == u64::MAX {
        return (IO_MEMORY_BYTES_MAX, None);
    }
    let per_executor = memlock_bytes / (4 * u64::from(shards.max(1)));
    let size = usize::try_from(per_executor).unwrap_or(IO_MEMORY_BYTES_MAX).min(IO_MEMORY_BYTES_MAX);
    let size = size & !4095;
    if size < IO_MEMORY_BYTES_MIN {
        let warning = format!(
            "RLIMIT_MEMLOCK is {memlock_bytes} bytes for {shards} shards without CAP_IPC_LOCK: \
             glommio will run without registered I/O buffers (harmless for sockets)"
        );
        return (IO_MEMORY_BYTES_MIN, Some(warning));
    }
    (size, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_the_8_mib_limit() {
        let (size, warn) = io_memory_for(2, 8 << 20, false);
        assert!(3 * 2 * size as u64 <= 8 << 20);
        assert!(warn.is_none());
        let (size, _) = io_memory_for(2, 8 << 20, true);
        assert_eq!(size, IO_MEMORY_BYTES_MAX);
    }

    #[test]
    fn many_shards_warn_instead_of_failing() {
        let (size, warn) = io_memory_for(64, 8 << 20, false);
        assert_eq!(size, IO_MEMORY_BYTES_MIN);
        assert!(warn.is_some());
    }
}
