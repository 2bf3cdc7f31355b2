//! Turns a `Record` into its rkyv-archived metadata bytes and back. Pure functions, used on
//! the shard thread (append) and by recovery. The body of an `Enqueue` is not archived: it is
//! written raw after the metadata and re-attached on decode (one copy into `Bytes`).

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::StorageError;
use crate::format::record_len;
use crate::record::{ArchivedRecord, Record, RecordKind, split_bodies};

/// Serializes `record`'s metadata into `buf` (cleared first) and returns it.
pub(crate) fn encode_meta(record: &Record, mut buf: AlignedVec) -> Result<AlignedVec, StorageError> {
    buf.clear();
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(record, buf).map_err(|e| StorageError::Encode(e.to_string()))
}

impl Record {
    /// Bytes this record takes in the log: header, metadata, body and padding.
    pub fn encoded_len(&self) -> Result<u64, StorageError> {
        let meta = encode_meta(self, AlignedVec::new())?;
        Ok(record_len(meta.len(), self.body().len()) as u64)
    }
}

/// Runs `f` on the archived metadata, validating it first. Copies into an aligned buffer only
/// when `meta` is not aligned for the archived type (never for records read from a mapping).
fn with_archived<T>(meta: &[u8], f: impl FnOnce(&ArchivedRecord) -> T) -> Result<T, rancor::Error> {
    if (meta.as_ptr() as usize).is_multiple_of(align_of::<ArchivedRecord>()) {
        let archived = rkyv::access::<ArchivedRecord, rancor::Error>(meta)?;
        return Ok(f(archived));
    }
    let mut aligned = AlignedVec::<16>::with_capacity(meta.len());
    aligned.extend_from_slice(meta);
    let archived = rkyv::access::<ArchivedRecord, rancor::Error>(&aligned)?;
    Ok(f(archived))
}

/// Decodes a checksum-valid record. Fails if the metadata does not validate or its variant
/// disagrees with the header's kind byte.
pub(crate) fn decode(kind: u8, meta: &[u8], body: &[u8]) -> Result<Record, String> {
    let mut record =
        with_archived(meta, rkyv::deserialize::<Record, rancor::Error>).and_then(|r| r).map_err(|e| e.to_string())?;
    if RecordKind::from_u8(kind) != Some(record.kind()) {
        return Err(format!("header kind {kind} does not match metadata {:?}", record.kind()));
    }
    match &mut record {
        Record::Enqueue(message) => message.body = bytes::Bytes::copy_from_slice(body),
        Record::TxPart { ops, bodies } => {
            *bodies = bytes::Bytes::copy_from_slice(body);
            split_bodies(ops, bodies)?;
        }
        _ if !body.is_empty() => return Err("body on a record kind that has none".to_owned()),
        _ => {}
    }
    Ok(record)
}

/// Best effort: the queues named by a record whose checksum failed, if its metadata still
/// validates structurally.
pub(crate) fn queues_of_damaged(meta: &[u8]) -> Vec<String> {
    with_archived(meta, |archived| archived.queue_names()).unwrap_or_default()
}
