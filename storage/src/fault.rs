//! Fault injection for the log's I/O seam (`Io`), for tests: [`FaultyIo`] wraps [`RealIo`]
//! and, following a [`FaultPlan`], fails the Nth sync with EIO, every preallocation from the
//! Nth on with ENOSPC, the Nth mapping with ENOMEM or the Nth unlink with EIO. It also keeps,
//! per segment file, an image of the bytes as the syncs so far left them on "disk", and which
//! directory entries a directory fsync made durable, so [`FaultyIo::crash`] can simulate a
//! power loss once the log is dropped: where a file differs from its durable image, a seeded
//! prefix of the new bytes survives (torn at any byte, a few garbage bytes at the tear) and
//! the rest reverts to the image; files no sync ever reached may lose their directory entry
//! or their length. Everything random comes from one seed through [`FaultRng`], and
//! operations are counted per kind over the `FaultyIo`'s life, so one seed and the same calls
//! replay one run exactly. Every injected failure is logged (`tracing`), kept as a
//! [`FaultEvent`] and named in the error it returns, with the seed and the operation's index.
//! Thread-safe (one mutex; tests only). Limits: it holds a copy of every file it syncs
//! (test-sized segments only); the crash model is a prefix model — bytes after the tear never
//! survive while earlier ones are lost — and a failed sync is modelled as "those bytes are
//! not durable", not as pages the kernel later drops from its cache.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::{fmt, io};

use crate::io::{Io, MmapRaw, RealIo};

/// A small seeded PRNG (SplitMix64): the only source of randomness of fault runs.
#[derive(Debug, Clone)]
pub struct FaultRng(u64);

impl FaultRng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> FaultRng {
        FaultRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

/// Which failures to inject. Indices count calls of one kind from 0 over the `FaultyIo`'s life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// This sync (msync of a range, fdatasync of a file or fsync of a directory, counted
    /// together) fails with EIO.
    pub sync_eio_at: Option<u64>,
    /// Every preallocation from this one on fails with ENOSPC (until the plan changes).
    pub allocate_enospc_from: Option<u64>,
    /// This mapping fails with ENOMEM.
    pub map_enomem_at: Option<u64>,
    /// This unlink fails with EIO.
    pub remove_eio_at: Option<u64>,
}

/// A kind of operation `FaultyIo` counts (and may fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultOp {
    /// `Io::create`.
    Create,
    /// `Io::allocate`.
    Allocate,
    /// `Io::map_writable`.
    Map,
    /// `Io::sync_range`, `Io::sync_file` and `Io::sync_dir`.
    Sync,
    /// `Io::remove`.
    Remove,
    /// `FaultyIo::crash`.
    Crash,
}

const OP_KINDS: usize = 6;

/// One injected failure or simulated crash: enough to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    /// The seed of the `FaultyIo` that injected it.
    pub seed: u64,
    /// The operation.
    pub op: FaultOp,
    /// Its index among operations of its kind.
    pub index: u64,
    /// The file or directory involved.
    pub path: PathBuf,
    /// What was injected (`"EIO"`, `"ENOSPC"`, a crash's tear ...).
    pub detail: String,
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "injected {} at {:?} #{} on {} (seed {}; replay with FERRY_FAULT_SEED={})",
            self.detail,
            self.op,
            self.index,
            self.path.display(),
            self.seed,
            self.seed
        )
    }
}

impl std::error::Error for FaultEvent {}

/// What [`FaultyIo::crash`] did to the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// The file and byte position of the tear, if any unsynced byte was lost.
    pub torn_at: Option<(PathBuf, usize)>,
    /// Random bytes written at the tear.
    pub garbled_bytes: usize,
    /// Unsynced bytes that survived the crash.
    pub kept_unsynced_bytes: usize,
    /// Unsynced bytes lost (garbled or zeroed).
    pub lost_bytes: usize,
    /// Files whose never-synced directory entry was dropped.
    pub removed: Vec<PathBuf>,
    /// Files whose never-synced length was dropped (left empty).
    pub emptied: Vec<PathBuf>,
}

/// What `FaultyIo` knows about one file it created, mapped or synced.
#[derive(Debug, Clone, Default)]
struct FileState {
    /// The file's bytes as far as syncs made them durable; beyond its length, zeros.
    image: Vec<u8>,
    /// A directory fsync made its entry durable (or it existed before we saw it).
    linked: bool,
}

impl FileState {
    fn durable(bytes: Vec<u8>) -> FileState {
        FileState { image: bytes, linked: true }
    }

    /// The durable byte at `at`.
    fn image_at(&self, at: usize) -> u8 {
        self.image.get(at).copied().unwrap_or(0)
    }

    /// Records that `bytes`, at `start`, are now durable.
    fn store(&mut self, start: usize, bytes: &[u8]) {
        let end = start + bytes.len();
        if self.image.len() < end {
            self.image.resize(end, 0);
        }
        self.image[start..end].copy_from_slice(bytes);
    }
}

#[derive(Debug)]
struct State {
    plan: FaultPlan,
    counts: [u64; OP_KINDS],
    rng: FaultRng,
    files: BTreeMap<PathBuf, FileState>,
    events: Vec<FaultEvent>,
}

/// An [`Io`] that injects the failures of a [`FaultPlan`] and simulates crashes, all driven
/// by one seed. See the module docs.
#[derive(Debug)]
pub struct FaultyIo {
    seed: u64,
    real: RealIo,
    state: Mutex<State>,
}

impl FaultyIo {
    /// A fault injector for `seed` following `plan`.
    pub fn new(seed: u64, plan: FaultPlan) -> FaultyIo {
        let state = State {
            plan,
            counts: [0; OP_KINDS],
            rng: FaultRng::new(seed ^ 0xFE77_F0A1_7000_0000),
            files: BTreeMap::new(),
            events: Vec::new(),
        };
        FaultyIo { seed, real: RealIo, state: Mutex::new(state) }
    }

    /// The seed this injector replays.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Replaces the plan (e.g. to free disk space again); counts keep running.
    pub fn set_plan(&self, plan: FaultPlan) {
        self.lock().plan = plan;
    }

    /// The current plan.
    pub fn plan(&self) -> FaultPlan {
        self.lock().plan
    }

    /// How many operations of kind `op` have been attempted so far (the next one's index).
    pub fn count(&self, op: FaultOp) -> u64 {
        self.lock().counts[op as usize]
    }

    /// Every failure injected and crash simulated so far, in order.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.lock().events.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one operation of kind `op` on `path`; returns the injected error if the plan
    /// says this one fails.
    fn begin(&self, op: FaultOp, path: &Path) -> Result<(), io::Error> {
        let mut state = self.lock();
        let index = state.counts[op as usize];
        state.counts[op as usize] += 1;
        let plan = state.plan;
        let injected = match op {
            FaultOp::Sync if plan.sync_eio_at == Some(index) => Some(("EIO", io::ErrorKind::Other)),
            FaultOp::Allocate if plan.allocate_enospc_from.is_some_and(|from| index >= from) => {
                Some(("ENOSPC", io::ErrorKind::StorageFull))
            }
            FaultOp::Map if plan.map_enomem_at == Some(index) => Some(("ENOMEM", io::ErrorKind::OutOfMemory)),
            FaultOp::Remove if plan.remove_eio_at == Some(index) => Some(("EIO", io::ErrorKind::Other)),
            _ => None,
        };
        let Some((detail, kind)) = injected else {
            return Ok(());
        };
        let event = FaultEvent { seed: self.seed, op, index, path: path.to_path_buf(), detail: detail.to_owned() };
        tracing::warn!(%event, "fault injected");
        state.events.push(event.clone());
        Err(io::Error::new(kind, event))
    }

    fn mark_synced(&self, path: &Path, start: usize, bytes: &[u8]) {
        let mut state = self.lock();
        state.files.entry(path.to_path_buf()).or_insert_with(|| FileState::durable(Vec::new())).store(start, bytes);
    }

    /// Simulates a power loss. Call it after the log and its jobs are dropped, then reopen.
    /// Of the bytes no sync covered (in file order, which is log order), a seeded prefix
    /// survives: the tear falls at any byte of that region, a few random bytes are written
    /// there, and the rest is zeroed. Files after the tear that no sync ever reached may lose
    /// their directory entry (if no directory fsync covered it) or their length. Afterwards,
    /// everything on disk counts as durable.
    pub fn crash(&self) -> io::Result<CrashReport> {
        self.crash_with(None)
    }

    /// Like [`FaultyIo::crash`], with the tear exactly `cut` bytes into the unsynced region
    /// (clamped to [`FaultyIo::unsynced_bytes`]; that value keeps everything).
    pub fn crash_at(&self, cut: usize) -> io::Result<CrashReport> {
        self.crash_with(Some(cut))
    }

    /// Bytes written that no sync has covered yet, over all files (what a crash may tear).
    pub fn unsynced_bytes(&self) -> usize {
        crash_files(&self.lock().files).iter().map(CrashFile::unsynced).sum()
    }

    fn crash_with(&self, cut: Option<usize>) -> io::Result<CrashReport> {
        let mut state = self.lock();
        let index = state.counts[FaultOp::Crash as usize];
        state.counts[FaultOp::Crash as usize] += 1;
        let files = crash_files(&std::mem::take(&mut state.files));
        let total: usize = files.iter().map(CrashFile::unsynced).sum();
        let cut = cut.unwrap_or_else(|| state.rng.below(total as u64 + 1) as usize).min(total);
        let mut report = CrashReport::default();
        tear_files(&files, cut, &mut state.rng, &mut report)?;
        let detail = format!(
            "crash: tear at {:?} (cut {cut} of {total} unsynced bytes), {} garbled, removed {:?}, emptied {:?}",
            report.torn_at, report.garbled_bytes, report.removed, report.emptied
        );
        let dir = files.first().and_then(|f| f.path.parent()).map(Path::to_path_buf).unwrap_or_default();
        let event = FaultEvent { seed: self.seed, op: FaultOp::Crash, index, path: dir, detail };
        tracing::warn!(%event, "simulated crash");
        state.events.push(event);
        Ok(report)
    }
}

/// The tracked files that still exist, in path (= log) order, as a crash would find them.
fn crash_files(files: &BTreeMap<PathBuf, FileState>) -> Vec<CrashFile> {
    let mut found = Vec::new();
    for (path, file) in files {
        let Ok(bytes) = std::fs::read(path) else {
            continue; // removed since (compaction, a failed roll)
        };
        let differs = |&(i, b): &(usize, &u8)| *b != file.image_at(i);
        let first = bytes.iter().enumerate().find(differs).map_or(bytes.len(), |(i, _)| i);
        let end = bytes.iter().enumerate().rev().find(differs).map_or(first, |(i, _)| i + 1);
        found.push(CrashFile { path: path.clone(), state: file.clone(), bytes, first, end });
    }
    found
}

/// One tracked file as found at a simulated crash.
#[derive(Debug)]
struct CrashFile {
    path: PathBuf,
    state: FileState,
    /// Its current bytes (what the page cache holds).
    bytes: Vec<u8>,
    /// `[first, end)` spans every byte that differs from the durable image.
    first: usize,
    end: usize,
}

impl CrashFile {
    fn unsynced(&self) -> usize {
        self.end - self.first
    }

    /// Writes the durable image back over `[from, self.end)`.
    fn revert(&self, from: usize) -> io::Result<()> {
        if from >= self.end {
            return Ok(());
        }
        let image: Vec<u8> = (from..self.end).map(|i| self.state.image_at(i)).collect();
        File::options().write(true).open(&self.path)?.write_all_at(&image, from as u64)
    }
}

/// Applies a crash whose tear falls `cut` bytes into the files' unsynced regions.
fn tear_files(files: &[CrashFile], cut: usize, rng: &mut FaultRng, report: &mut CrashReport) -> io::Result<()> {
    let mut left = cut;
    let mut torn = false;
    let mut removing = false;
    for file in files {
        let unsynced = file.unsynced();
        if !torn && left >= unsynced {
            left -= unsynced;
            report.kept_unsynced_bytes += unsynced;
            continue;
        }
        if !torn {
            torn = true;
            report.kept_unsynced_bytes += left;
            tear_at(file, file.first + left, rng, report)?;
            continue;
        }
        report.lost_bytes += unsynced;
        let never_synced = file.state.image.is_empty();
        if never_synced && !file.state.linked && (removing || rng.chance(1, 3)) {
            removing = true;
            std::fs::remove_file(&file.path)?;
            report.removed.push(file.path.clone());
        } else if never_synced && rng.chance(1, 3) {
            File::options().write(true).open(&file.path)?.set_len(0)?;
            report.emptied.push(file.path.clone());
        } else {
            file.revert(file.first)?;
        }
    }
    Ok(())
}

/// Tears `file` at byte `at`: up to 16 random bytes there, the durable image after.
fn tear_at(file: &CrashFile, at: usize, rng: &mut FaultRng, report: &mut CrashReport) -> io::Result<()> {
    let garbled = (rng.below(17) as usize).min(file.bytes.len() - at.min(file.bytes.len()));
    let noise: Vec<u8> = (0..garbled).map(|_| rng.next_u64() as u8).collect();
    File::options().write(true).open(&file.path)?.write_all_at(&noise, at as u64)?;
    file.revert(at + garbled)?;
    report.torn_at = Some((file.path.clone(), at));
    report.garbled_bytes = garbled;
    report.lost_bytes += file.end - at;
    Ok(())
}

impl Io for FaultyIo {
    fn create(&self, path: &Path) -> io::Result<File> {
        self.begin(FaultOp::Create, path)?;
        let file = self.real.create(path)?;
        self.lock().files.insert(path.to_path_buf(), FileState::default());
        Ok(file)
    }

    fn allocate(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.begin(FaultOp::Allocate, path)?;
        self.real.allocate(file, path, len)
    }

    fn map_writable(&self, file: &File, path: &Path) -> io::Result<MmapRaw> {
        self.begin(FaultOp::Map, path)?;
        let map = self.real.map_writable(file, path)?;
        self.lock().files.entry(path.to_path_buf()).or_insert_with(|| {
            // SAFETY: a fresh mapping of the whole file that nothing writes yet; read once here.
            FileState::durable(unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) }.to_vec())
        });
        Ok(map)
    }

    fn sync_range(&self, map: &MmapRaw, path: &Path, start: usize, len: usize) -> io::Result<()> {
        self.begin(FaultOp::Sync, path)?;
        self.real.sync_range(map, path, start, len)?;
        assert!(start.checked_add(len).is_some_and(|end| end <= map.len()), "sync beyond the mapping");
        // SAFETY: in bounds (asserted); the log wrote these bytes before it cut the sync and
        // writes nothing into a range it has handed to a sync.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr().add(start), len) };
        self.mark_synced(path, start, bytes);
        Ok(())
    }

    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()> {
        self.begin(FaultOp::Sync, path)?;
        self.real.sync_file(file, path)?;
        self.mark_synced(path, 0, &std::fs::read(path)?);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.begin(FaultOp::Sync, dir)?;
        let before: Vec<PathBuf> =
            self.lock().files.keys().filter(|path| path.parent() == Some(dir)).cloned().collect();
        self.real.sync_dir(dir)?;
        let mut state = self.lock();
        for path in before {
            if let Some(file) = state.files.get_mut(&path) {
                file.linked = true;
            }
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.begin(FaultOp::Remove, path)?;
        self.real.remove(path)?;
        self.lock().files.remove(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_a_pure_function_of_its_seed() {
        let a: Vec<u64> = (0..4).scan(FaultRng::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).scan(FaultRng::new(7), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, (0..4).scan(FaultRng::new(8), |r, _| Some(r.next_u64())).collect::<Vec<_>>());
        assert!((0..100).all(|_| FaultRng::new(3).below(10) < 10));
    }

    #[test]
    fn image_grows_and_reads_zero_beyond_its_end() {
        let mut state = FileState::default();
        state.store(4, b"ab");
        assert_eq!(state.image, b"\0\0\0\0ab");
        state.store(0, b"x");
        assert_eq!((state.image_at(0), state.image_at(5), state.image_at(99)), (b'x', b'b', 0));
    }
}
