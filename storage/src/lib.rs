//! `ferry-storage`: the per-shard segmented, memory-mapped append log (§4 of ARCHITECTURE.md).
//! It owns the on-disk record format, appends, group-commit sync jobs, recovery (scan, torn
//! tail, quarantine, fold) and deletion of old segments. Plain synchronous Rust: a `ShardLog`
//! lives on one shard thread; its `SyncJob`s run on a blocking thread. No runtime, no async.
//! Limits: segment size between `SEGMENT_SIZE_BYTES_MIN` and `SEGMENT_SIZE_BYTES_MAX`; a
//! record must fit in one segment.
//!
//! Every system call that can fail (segment create, fallocate, mmap, msync/fdatasync,
//! directory fsync, unlink) goes through the [`Io`] seam in `LogConfig::io`: [`RealIo`] in
//! production, [`fault::FaultyIo`] in tests, which injects EIO, ENOSPC and ENOMEM and
//! simulates torn writes at a power loss, all replayable from one seed.

mod codec;
mod error;
pub mod fault;
mod fold;
mod format;
mod io;
mod log;
mod open;
mod record;
mod scan;
mod seals;
mod segment;
mod spare;
mod sync;
mod tail;
mod tentative;

pub use error::StorageError;
pub use fold::{Fold, Recovered, RecoveredQueue};
pub use io::{Io, MmapRaw, RealIo};
pub use log::{
    CompactFailed, CompactJob, CompactReport, Fence, LogConfig, SEGMENT_SIZE_BYTES_DEFAULT, SEGMENT_SIZE_BYTES_MAX,
    SEGMENT_SIZE_BYTES_MIN, ShardLog,
};
pub use record::{ArchivedRecord, ArchivedStoredMessage, Record, RecordKind, StoredMessage, TxOp};
pub use scan::replay;
pub use spare::{Spare, SpareJob};
pub use sync::SyncJob;
pub use tail::Tail;
pub use tentative::{Undecided, resolve_together};

/// Byte position in a shard's logical log; monotonic across segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

/// Leadership epoch stamped in every record and segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

/// Sequence number of a segment within a shard's log (0, 1, 2, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SegmentId(pub u64);
