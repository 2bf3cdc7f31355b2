//! The next segment, made ready off the shard thread. A segment's file is named by its base
//! offset, which is known only at the roll, so a *spare* (`spare-<epoch>-<id>.tmp`) is created,
//! preallocated and mapped (with populate) by a [`SpareJob`] on a blocking thread; the roll
//! then only renames it and stamps its header. Without a spare the roll falls back to creating
//! the segment in place. Spares hold no data: `open` deletes any left over.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::error::StorageError;
use crate::io::Io;

const SPARE_EXTENSION: &str = "tmp";

/// A preallocated, mapped file waiting to become the next segment.
#[derive(Debug)]
pub struct Spare {
    pub(crate) path: PathBuf,
    pub(crate) map: MmapRaw,
}

/// Creates a spare; `Send`, run it on a blocking thread and hand the result to
/// `ShardLog::install_spare`.
#[derive(Debug)]
pub struct SpareJob {
    pub(crate) io: Arc<dyn Io>,
    pub(crate) path: PathBuf,
    pub(crate) size_bytes: u64,
}

impl SpareJob {
    pub fn run(self) -> Result<Spare, StorageError> {
        let file = self.io.create(&self.path).map_err(|e| StorageError::io("create spare", &self.path, e))?;
        let prepared = self
            .io
            .allocate(&file, &self.path, self.size_bytes)
            .map_err(|e| StorageError::io("fallocate spare", &self.path, e))
            .and_then(|()| {
                self.io.map_writable(&file, &self.path).map_err(|e| StorageError::io("mmap spare", &self.path, e))
            });
        match prepared {
            Ok(map) => Ok(Spare { path: self.path, map }),
            Err(error) => {
                drop(file);
                let _ = self.io.remove(&self.path);
                Err(error)
            }
        }
    }
}

/// Named by epoch too: a fenced writer's spare never collides with the new active's.
pub(crate) fn spare_path(dir: &Path, epoch: crate::Epoch, id: u64) -> PathBuf {
    dir.join(format!("spare-{:020}-{id:020}.{SPARE_EXTENSION}", epoch.0))
}

/// Deletes spares a previous process left (they never hold records).
pub(crate) fn remove_leftover_spares(io: &dyn Io, dir: &Path) -> Result<(), StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("read_dir", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| StorageError::io("read_dir", dir, e))?.path();
        let is_spare = path.extension().and_then(|e| e.to_str()) == Some(SPARE_EXTENSION)
            && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("spare-"));
        if is_spare {
            io.remove(&path).map_err(|e| StorageError::io("remove spare", &path, e))?;
        }
    }
    Ok(())
}
