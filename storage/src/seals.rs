//! The seal manifest of a shard directory (ARCHITECTURE §5): for each leadership epoch that
//! has been taken over, the logical offset where that epoch's log ends. A process that claims
//! epoch M seals the previous writer's epoch at its last valid record before it writes anything
//! of its own, so that whatever a fenced writer (a paused or partitioned old active) appends
//! later lies beyond the seal and is ignored by every later recovery and reader.
//! File `seals`: one line per epoch, `<epoch> <end offset>`, replaced atomically (temp file,
//! fdatasync, rename, directory fsync). Read at open, written once per takeover. Limits: a
//! damaged manifest is an error (the broker must not guess where an epoch ends).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::io::Io;
use crate::segment::fsync_dir;
use crate::{Epoch, Offset};

const SEALS_FILE: &str = "seals";
const SEALS_TEMP: &str = "seals.tmp";

/// Where each sealed epoch's log ends, by epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seals {
    ends: BTreeMap<Epoch, Offset>,
}

impl Seals {
    /// Reads `<dir>/seals`; no file means no epoch was sealed yet.
    pub fn load(dir: &Path) -> Result<Seals, StorageError> {
        let path = dir.join(SEALS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Seals::default()),
            Err(e) => return Err(StorageError::io("read seals", &path, e)),
        };
        Seals::parse(&text).ok_or_else(|| {
            StorageError::io("parse seals", &path, std::io::Error::from(std::io::ErrorKind::InvalidData))
        })
    }

    fn parse(text: &str) -> Option<Seals> {
        let mut ends = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut fields = line.split_ascii_whitespace();
            let epoch = fields.next()?.parse().ok()?;
            let end = fields.next()?.parse().ok()?;
            if fields.next().is_some() {
                return None;
            }
            ends.insert(Epoch(epoch), Offset(end));
        }
        Some(Seals { ends })
    }

    /// The end of `epoch`'s log, when it was sealed.
    pub fn end_of(&self, epoch: Epoch) -> Option<Offset> {
        self.ends.get(&epoch).copied()
    }

    /// The end of the newest sealed epoch.
    pub fn max_end(&self) -> Option<Offset> {
        self.ends.values().max().copied()
    }

    /// Records that `epoch` ends at `end` and makes it durable in `dir` before returning.
    pub fn seal(&mut self, io: &dyn Io, dir: &Path, epoch: Epoch, end: Offset) -> Result<(), StorageError> {
        self.ends.insert(epoch, end);
        let temp: PathBuf = dir.join(SEALS_TEMP);
        let mut text = String::new();
        for (epoch, end) in &self.ends {
            text.push_str(&format!("{} {}\n", epoch.0, end.0));
        }
        let mut file = File::create(&temp).map_err(|e| StorageError::io("create seals", &temp, e))?;
        file.write_all(text.as_bytes()).map_err(|e| StorageError::io("write seals", &temp, e))?;
        io.sync_file(&file, &temp).map_err(|e| StorageError::io("fdatasync seals", &temp, e))?;
        drop(file);
        let path = dir.join(SEALS_FILE);
        io.rename(&temp, &path).map_err(|e| StorageError::io("rename seals", &temp, e))?;
        fsync_dir(io, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealIo;

    #[test]
    fn seals_survive_a_reload_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Seals::load(dir.path()).expect("empty"), Seals::default());
        let mut seals = Seals::default();
        seals.seal(&RealIo, dir.path(), Epoch(3), Offset(4096)).expect("seal 3");
        seals.seal(&RealIo, dir.path(), Epoch(4), Offset(8192)).expect("seal 4");
        let loaded = Seals::load(dir.path()).expect("load");
        assert_eq!(loaded.end_of(Epoch(3)), Some(Offset(4096)));
        assert_eq!(loaded.end_of(Epoch(4)), Some(Offset(8192)));
        assert_eq!(loaded.end_of(Epoch(5)), None);
        std::fs::write(dir.path().join(SEALS_FILE), "3 40x96\n").expect("damage");
        assert!(Seals::load(dir.path()).is_err());
    }
}
