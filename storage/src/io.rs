//! The I/O seam: every system call of the log that can fail for reasons outside the program —
//! creating a segment file, preallocating it (ENOSPC), mapping it, msync/fdatasync of what was
//! written (EIO), directory fsync, unlink — goes through an [`Io`] held as `Arc<dyn Io>` by the
//! log and cloned into each `SyncJob` and `CompactJob`. [`RealIo`] does the real calls and is
//! what `LogConfig::new` installs; `crate::fault::FaultyIo` wraps it to inject seeded,
//! replayable failures in tests. Memory copies into a mapping are not behind the seam: a write
//! to mapped memory cannot fail, only the sync that follows it can. Methods are called on the
//! shard thread (create, allocate, map, at open and at a roll) and on blocking threads (syncs,
//! unlinks), so implementations are `Send + Sync`. Limits: none of its own; each method is one
//! blocking system call (or two, for the fallocate fallback).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

pub use memmap2::MmapRaw;
use memmap2::{Advice, MmapOptions};

/// The fallible system calls of the log. Every method returns the raw `io::Error`; the log
/// adds the operation and path when it wraps it in `StorageError::Io`.
pub trait Io: Send + Sync + Debug + 'static {
    /// Creates a new segment file (read-write, failing if it exists).
    fn create(&self, path: &Path) -> io::Result<File>;
    /// Reserves real blocks for bytes `[0, len)` of `file`, so its mapping never sits over a
    /// sparse file (a write into a hole on a full disk would be SIGBUS, not an error).
    fn allocate(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// Maps all of `file` read-write, shared, pre-faulted, without readahead (single-page
    /// page cache: see `RealIo::map_writable`).
    fn map_writable(&self, file: &File, path: &Path) -> io::Result<MmapRaw>;
    /// Makes bytes `[start, start + len)` of a writable mapping of `path` durable (msync).
    fn sync_range(&self, map: &MmapRaw, path: &Path, start: usize, len: usize) -> io::Result<()>;
    /// Makes the data of a whole file durable (fdatasync).
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Makes created or removed entries of a directory durable (fsync of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file within the log directory (a prepared spare becoming a segment).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
}

/// The system's page size: the pre-fault fallback touches one byte per page.
fn page_bytes() -> usize {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// The real system calls. Stateless.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealIo;

impl Io for RealIo {
    fn create(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).create_new(true).open(path)
    }

    fn allocate(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        let len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let fd = file.as_raw_fd();
        // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::fallocate(fd, 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
            return Err(err);
        }
        // SAFETY: as above. posix_fallocate returns the error number instead of setting errno.
        match unsafe { libc::posix_fallocate(fd, 0, len) } {
            0 => Ok(()),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }

    fn map_writable(&self, file: &File, _path: &Path) -> io::Result<MmapRaw> {
        let map = MmapOptions::new().map_raw(file)?;
        // No readahead on this mapping, so its page cache is made of single pages. Pre-faulting
        // with readahead (as `MAP_POPULATE` does) builds large folios, up to megabytes as it
        // ramps through the file; a write fault then dirties the whole folio and each sync
        // writes it all back. Measured (docs/PERFORMANCE.md, session 9): 16 producers at
        // window 1 fell from ~25k to ~11k msg/s as a segment filled, and recovered at each roll.
        map.advise(Advice::Random)?;
        // Pre-fault (read) every page now, on the thread preparing the segment, not on the
        // shard's first write to each page. Kernels before 5.14 lack MADV_POPULATE_READ
        // (EINVAL): touch each page instead. Any other error is the file's, and is returned.
        match map.advise(Advice::PopulateRead) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                for offset in (0..map.len()).step_by(page_bytes()) {
                    // SAFETY: `offset` is within the mapping, which lives until the end of
                    // this function at least; a volatile read of one byte of a readable shared
                    // mapping over allocated blocks.
                    unsafe { std::ptr::read_volatile(map.as_ptr().add(offset)) };
                }
            }
            Err(e) => return Err(e),
        }
        Ok(map)
    }

    fn sync_range(&self, map: &MmapRaw, _path: &Path, start: usize, len: usize) -> io::Result<()> {
        map.flush_range(start, len)
    }

    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` line of the mapping that starts at `addr`, from /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let start = format!("{addr:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines.find(|l| l.starts_with("VmFlags:")).expect("the mapping's VmFlags").to_owned()
    }

    #[test]
    fn a_writable_segment_mapping_has_no_readahead_and_is_prefaulted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let io = RealIo;
        let file = io.create(&path).expect("create");
        io.allocate(&file, &path, 1 << 20).expect("allocate");
        let map = io.map_writable(&file, &path).expect("map");
        // "rr": MADV_RANDOM, so the page cache under it is single pages, not large folios.
        let flags = vm_flags(map.as_ptr() as usize);
        assert!(flags.split_whitespace().any(|f| f == "rr"), "{flags}");
        assert!(flags.split_whitespace().any(|f| f == "sh"), "shared: {flags}");
        // Pre-faulted: every page is resident before the first write.
        let pages = map.len().div_ceil(page_bytes());
        let mut resident = vec![0u8; pages];
        // SAFETY: the mapping is live; `resident` has one byte per page of it.
        let rc = unsafe { libc::mincore(map.as_mut_ptr().cast(), map.len(), resident.as_mut_ptr()) };
        assert_eq!(rc, 0);
        assert!(resident.iter().all(|r| r & 1 == 1), "every page resident");
    }
}
