//! Segment files: naming (`<20-digit base offset>-<20-digit epoch>.seg`), listing, creation with preallocation
//! and mapping, reopening and directory fsync — the fallible calls through the log's `Io`
//! seam (`crate::io`). Used on the shard thread at open and at a roll (both blocking).
//! Limits: a file is never truncated or shrunk (another process may have it mapped), only
//! grown; mapped memory is only valid while nobody else truncates the file (that would
//! SIGBUS, which we cannot guard against).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::StorageError;
use crate::format::{SEGMENT_HEADER_SIZE, SegmentHeader, fresh_salt};
use crate::io::Io;
use crate::seals::Seals;
use crate::{Epoch, Offset, SegmentId};

/// File name extension of segment files.
const SEGMENT_EXTENSION: &str = "seg";

/// Path of the segment of `epoch` whose first byte is at logical offset `base`. The epoch is
/// in the name so that a fenced writer rolling to the same base never replaces the file of the
/// epoch that took over.
pub(crate) fn segment_path(dir: &Path, base: Offset, epoch: Epoch) -> PathBuf {
    dir.join(format!("{:020}-{:020}.{SEGMENT_EXTENSION}", base.0, epoch.0))
}

/// A segment file found in a shard directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SegmentFile {
    pub base: Offset,
    pub epoch: Epoch,
    pub path: PathBuf,
}

/// Segment files in `dir`, sorted by base offset, then epoch. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("read_dir", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| StorageError::io("read_dir", dir, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXTENSION) {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        match parse_stem(stem) {
            Some((base, epoch)) => segments.push(SegmentFile { base, epoch, path }),
            None => {
                tracing::warn!(path = %path.display(), "ignoring file with a segment extension but no offset-epoch name")
            }
        }
    }
    segments.sort();
    Ok(segments)
}

/// `<20-digit base>-<20-digit epoch>`.
fn parse_stem(stem: &str) -> Option<(Offset, Epoch)> {
    let (base, epoch) = stem.split_once('-')?;
    if base.len() != 20 || epoch.len() != 20 {
        return None;
    }
    Some((Offset(base.parse().ok()?), Epoch(epoch.parse().ok()?)))
}

/// The segment currently appended to: mapped read-write, shared with in-flight `SyncJob`s.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub id: SegmentId,
    pub base: Offset,
    pub path: PathBuf,
    pub map: Arc<MmapRaw>,
    /// Next write position inside the segment (bytes from the file start).
    pub write_pos: usize,
    /// The header's checksum salt, stamped into every record's checksum.
    pub salt: u32,
}

impl ActiveSegment {
    /// A fresh segment in `map`, its header written with a new salt; nothing is appended yet.
    pub fn stamped(id: SegmentId, base: Offset, path: PathBuf, map: MmapRaw, epoch: Epoch, size_bytes: u32) -> Self {
        let salt = fresh_salt();
        let mut segment = ActiveSegment { id, base, path, map: Arc::new(map), write_pos: SEGMENT_HEADER_SIZE, salt };
        let header = SegmentHeader::new(epoch.0, base.0, id.0, size_bytes, salt);
        header.write_to(segment.bytes_mut(0, SEGMENT_HEADER_SIZE));
        segment
    }

    /// Mapped length of the segment file.
    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// The whole mapping, read-only.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `map.len()` bytes, valid while `self.map` lives; the only
        // writer is this shard thread through `bytes_mut`, which needs `&mut self`. SyncJobs
        // only msync, they never read or write the bytes. Another process truncating the file
        // is outside what we can guard (documented at the top of this file).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// `len` writable bytes at `pos`.
    pub fn bytes_mut(&mut self, pos: usize, len: usize) -> &mut [u8] {
        assert!(pos.checked_add(len).is_some_and(|end| end <= self.map.len()), "write beyond the segment");
        // SAFETY: in bounds (asserted above); `&mut self` makes this the only live slice into
        // the mapping in this process (see `bytes`).
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(pos), len) }
    }
}

/// A segment that is only read: kept for compaction bookkeeping, not mapped.
#[derive(Debug, Clone)]
pub(crate) struct SealedSegment {
    pub id: SegmentId,
    pub base: Offset,
    /// Base offset of the next segment: nothing of this segment reaches it.
    pub end: Offset,
    pub path: PathBuf,
}

/// Creates, preallocates, maps and stamps a fresh segment. The caller fsyncs the directory.
/// On failure the half-created file is removed (nobody has mapped it), so no sparse file is
/// left behind and a later roll can retry.
pub(crate) fn create_segment(
    io: &dyn Io,
    dir: &Path,
    base: Offset,
    id: SegmentId,
    epoch: Epoch,
    size_bytes: u32,
) -> Result<ActiveSegment, StorageError> {
    let path = segment_path(dir, base, epoch);
    let file = match io.create(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && is_half_created(&path) => {
            // An earlier roll to this base failed and could not remove its file: nobody has
            // mapped it and it holds no header, so replacing it loses nothing.
            tracing::warn!(path = %path.display(), "removing a half-created segment left by a failed roll");
            io.remove(&path).map_err(|e| StorageError::io("remove segment", &path, e))?;
            io.create(&path)
        }
        other => other,
    }
    .map_err(|e| StorageError::io("create segment", &path, e))?;
    let prepared = io
        .allocate(&file, &path, u64::from(size_bytes))
        .map_err(|e| StorageError::io("fallocate", &path, e))
        .and_then(|()| io.map_writable(&file, &path).map_err(|e| StorageError::io("mmap segment", &path, e)));
    let map = match prepared {
        Ok(map) => map,
        Err(error) => {
            drop(file);
            if let Err(e) = io.remove(&path) {
                tracing::error!(path = %path.display(), error = %e, "could not remove a half-created segment");
            }
            return Err(error);
        }
    };
    Ok(ActiveSegment::stamped(id, base, path, map, epoch, size_bytes))
}

/// True if the file at `path` has no segment header yet (all zeros or shorter than one): what
/// `create_segment` leaves when preallocation or mapping failed and so did the cleanup.
fn is_half_created(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(SEGMENT_HEADER_SIZE);
    file.take(SEGMENT_HEADER_SIZE as u64).read_to_end(&mut head).is_ok() && head.iter().all(|&b| b == 0)
}

/// Opens an existing segment read-write, growing it (never shrinking) to at least
/// `size_bytes`, and maps all of it.
pub(crate) fn open_writable(io: &dyn Io, path: &Path, size_bytes: u64) -> Result<MmapRaw, StorageError> {
    let file =
        OpenOptions::new().read(true).write(true).open(path).map_err(|e| StorageError::io("open segment", path, e))?;
    let len = file.metadata().map_err(|e| StorageError::io("stat segment", path, e))?.len();
    if len < size_bytes {
        tracing::warn!(path = %path.display(), len, size_bytes, "growing a short segment file");
        io.allocate(&file, path, size_bytes).map_err(|e| StorageError::io("fallocate", path, e))?;
    }
    io.map_writable(&file, path).map_err(|e| StorageError::io("mmap segment", path, e))
}

/// The `op` of [`open_sealed`]'s error when the file cannot be opened: an open that finds a
/// listed segment gone (`NotFound`) lists the directory again (`open::relist_if_vanished`).
pub(crate) const OPEN_SEALED_OP: &str = "open sealed segment";

/// Opens a sealed segment read-only and maps it; also fdatasyncs it, so that data a crashed
/// process left in the page cache is durable before recovery reports it as durable.
pub(crate) fn open_sealed(io: &dyn Io, path: &Path) -> Result<Option<MmapRaw>, StorageError> {
    let file = File::open(path).map_err(|e| StorageError::io(OPEN_SEALED_OP, path, e))?;
    io.sync_file(&file, path).map_err(|e| StorageError::io("fdatasync segment", path, e))?;
    map_read_only(&file, path)
}

/// Maps an open segment file read-only; `None` when it is empty.
pub(crate) fn map_read_only(file: &File, path: &Path) -> Result<Option<MmapRaw>, StorageError> {
    let len = file.metadata().map_err(|e| StorageError::io("stat segment", path, e))?.len();
    if len == 0 {
        return Ok(None);
    }
    let map = MmapOptions::new().map_raw_read_only(file).map_err(|e| StorageError::io("mmap segment", path, e))?;
    Ok(Some(map))
}

/// The bytes of a read-only segment mapping that its epoch's seal leaves readable (all when
/// the epoch is not sealed): what a fenced writer appended past the seal is never read.
pub(crate) fn readable<'m>(map: &'m MmapRaw, file: &SegmentFile, seals: &Seals) -> &'m [u8] {
    // SAFETY: `map.len()` bytes of a read-only mapping that outlives the borrow; nobody
    // truncates segment files, and what this process maps read-only it never writes.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
    &bytes[..seal_limit(file, seals).min(bytes.len())]
}

/// How many bytes of `file` its epoch's seal leaves readable (all when not sealed).
pub(crate) fn seal_limit(file: &SegmentFile, seals: &Seals) -> usize {
    seals
        .end_of(file.epoch)
        .map_or(usize::MAX, |end| usize::try_from(end.0.saturating_sub(file.base.0)).unwrap_or(usize::MAX))
}

/// Where the data of the segment file at `path` ends, as the file system knows it: past the
/// last byte that `SEEK_DATA`/`SEEK_HOLE` place in data (written blocks, or cached pages),
/// everything reads as zeros, so a scan need not read the preallocated rest of a segment.
/// The file's length when the file system cannot say (or the file is gone).
pub(crate) fn data_end_of(path: &Path) -> usize {
    use std::os::fd::AsRawFd;
    let Ok(file) = File::open(path) else { return usize::MAX };
    let len = file.metadata().map_or(u64::MAX, |m| m.len());
    let fd = file.as_raw_fd();
    let mut end = 0u64;
    loop {
        let from = i64::try_from(end).unwrap_or(i64::MAX);
        // SAFETY: lseek on a descriptor this function owns; no memory is passed.
        let data = unsafe { libc::lseek(fd, from, libc::SEEK_DATA) };
        if data < 0 {
            let none_after = std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
            return if none_after { usize::try_from(end).unwrap_or(usize::MAX) } else { usize::MAX };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return usize::MAX;
        }
        end = hole as u64;
        if end >= len {
            return usize::MAX;
        }
    }
}

/// fsyncs a directory so that created or removed entries in it are durable.
pub(crate) fn fsync_dir(io: &dyn Io, dir: &Path) -> Result<(), StorageError> {
    io.sync_dir(dir).map_err(|e| StorageError::io("fsync dir", dir, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn the_data_end_never_cuts_off_written_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.seg");
        let file = File::create(&path).expect("create");
        crate::io::RealIo.allocate(&file, &path, 1 << 20).expect("fallocate");
        assert!(data_end_of(&path) == 0 || data_end_of(&path) >= 1 << 20, "nothing written yet");
        file.write_all_at(&[7; 100], 8192).expect("write");
        file.sync_all().expect("sync");
        let end = data_end_of(&path);
        assert!(end >= 8192 + 100, "{end}");
        // Where the file system can tell, the preallocated rest is not data.
        eprintln!("data end {end} of {}", 1 << 20);
        assert_eq!(data_end_of(&dir.path().join("gone")), usize::MAX);
    }
}
