//! The object model: an object is a base value plus patches, each a hashed, versioned record.
//!
//! What:
//! - [`ObjectMeta`]: everything about an object but its bytes (key, kind, time stored, the
//!   base record and each patch record, with versions, sizes and BLAKE3 hashes). It is small,
//!   always in memory, and what peers exchange to decide what to fetch.
//! - [`ObjectData`]: the meta with the bytes, immutable behind an `Arc`; a patch makes a new
//!   `ObjectData` sharing the old buffers.
//! - [`select`]: what a get with the client's version must send (spec Annex A): nothing, the
//!   missing patches, or everything.
//!
//! Why hashes per record: a record is checked where it is written, read from disk, and
//! received from a peer, so corruption anywhere is caught before a client sees it, and a patch
//! can be checked without the base.
//!
//! Caveat: native tables take no patches; a patch of one is refused by the coordinator.

use crate::key::ObjectKey;
use crate::wire::RecordKind;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A 32-byte BLAKE3 hash.
pub type Hash = [u8; 32];

/// The BLAKE3 hash of `bytes`.
pub fn hash(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

/// One stored record: the base or a patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The version this record brings the object to.
    pub version: u64,
    /// Its size in bytes.
    pub len: u64,
    /// BLAKE3 of its bytes.
    pub hash: Hash,
}

impl RecordMeta {
    /// The meta of `bytes` at `version`.
    pub fn of(version: u64, bytes: &[u8]) -> RecordMeta {
        RecordMeta {
            version,
            len: bytes.len() as u64,
            hash: hash(bytes),
        }
    }
}

/// What the base value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueKind {
    /// Opaque bytes.
    Blob,
    /// A native Arrow table (an IPC stream).
    Table,
}

/// An object without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The key.
    pub key: ObjectKey,
    /// Blob or table.
    pub kind: ValueKind,
    /// When the primary stored the base, Unix milliseconds of its clock. Deletes of the
    /// object's namespace compare against it.
    pub stored_at_ms: i64,
    /// The base record.
    pub base: RecordMeta,
    /// The patch records, in version order, each one version after the previous.
    pub patches: Vec<RecordMeta>,
}

impl ObjectMeta {
    /// The current version: the last patch's, else the base's.
    pub fn version(&self) -> u64 {
        self.patches.last().map_or(self.base.version, |p| p.version)
    }

    /// Base plus patch bytes.
    pub fn size(&self) -> u64 {
        self.base.len + self.patches.iter().map(|p| p.len).sum::<u64>()
    }

    /// The records in order, base first, with their kinds.
    pub fn records(&self) -> impl Iterator<Item = (RecordKind, &RecordMeta)> {
        std::iter::once((RecordKind::Base, &self.base))
            .chain(self.patches.iter().map(|p| (RecordKind::Patch, p)))
    }
}

/// An object with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectData {
    /// The meta.
    pub meta: ObjectMeta,
    /// The base bytes.
    pub base: Bytes,
    /// Each patch's bytes, in the order of `meta.patches`.
    pub patches: Vec<Bytes>,
}

impl ObjectData {
    /// A new object whose base is `bytes` at `version`.
    pub fn new(
        key: ObjectKey,
        kind: ValueKind,
        version: u64,
        stored_at_ms: i64,
        bytes: Bytes,
    ) -> ObjectData {
        ObjectData {
            meta: ObjectMeta {
                key,
                kind,
                stored_at_ms,
                base: RecordMeta::of(version, &bytes),
                patches: Vec::new(),
            },
            base: bytes,
            patches: Vec::new(),
        }
    }

    /// This object with `delta` appended as the next version's patch.
    pub fn with_patch(&self, delta: Bytes) -> ObjectData {
        let mut next = self.clone();
        next.meta
            .patches
            .push(RecordMeta::of(self.meta.version() + 1, &delta));
        next.patches.push(delta);
        next
    }

    /// The bytes of record `index` (0 = base, `i` = patch `i - 1`).
    pub fn record(&self, index: usize) -> Option<&Bytes> {
        match index {
            0 => Some(&self.base),
            i => self.patches.get(i - 1),
        }
    }

    /// Checks every record's size and hash; names the first that fails.
    pub fn verify(&self) -> Result<(), String> {
        if self.patches.len() != self.meta.patches.len() {
            return Err(format!(
                "{} has {} patch records but {} patches",
                self.meta.key,
                self.meta.patches.len(),
                self.patches.len()
            ));
        }
        for (i, (_, meta)) in self.meta.records().enumerate() {
            let bytes = self.record(i).map(Bytes::as_ref).unwrap_or_default();
            if bytes.len() as u64 != meta.len || hash(bytes) != meta.hash {
                return Err(format!(
                    "record v{} of {} does not match its hash",
                    meta.version, self.meta.key
                ));
            }
        }
        Ok(())
    }

    /// Bytes held in memory.
    pub fn size(&self) -> u64 {
        self.meta.size()
    }

    /// The response rows for `selection`.
    pub fn rows(&self, selection: Selection) -> Vec<(u64, RecordKind, Bytes)> {
        let patches = |from: usize| {
            self.meta.patches[from..]
                .iter()
                .zip(&self.patches[from..])
                .map(|(m, b)| (m.version, RecordKind::Patch, b.clone()))
        };
        match selection {
            Selection::NotModified => Vec::new(),
            Selection::PatchesFrom(from) => patches(from).collect(),
            Selection::Full => {
                std::iter::once((self.meta.base.version, RecordKind::Base, self.base.clone()))
                    .chain(patches(0))
                    .collect()
            }
        }
    }
}

/// A shared, immutable object.
pub type SharedObject = Arc<ObjectData>;

/// What a get must send, given the client's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The client is current: send nothing.
    NotModified,
    /// Send the patches from this index of `patches` on.
    PatchesFrom(usize),
    /// Send the base and every patch.
    Full,
}

/// The spec's rule: version 0 → full; the server's version → not modified; behind, with the
/// base not newer than the client's version → only the missing patches; otherwise full.
pub fn select(meta: &ObjectMeta, client_version: u64) -> Selection {
    let version = meta.version();
    if client_version == 0 || client_version > version {
        return Selection::Full;
    }
    if client_version == version {
        return Selection::NotModified;
    }
    if meta.base.version <= client_version {
        let from = meta
            .patches
            .iter()
            .position(|p| p.version > client_version)
            .unwrap_or(meta.patches.len());
        return Selection::PatchesFrom(from);
    }
    Selection::Full
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> ObjectData {
        let key = ObjectKey::parse("a/s/o").unwrap();
        ObjectData::new(key, ValueKind::Blob, 3, 0, Bytes::from_static(b"base"))
            .with_patch(Bytes::from_static(b"p4"))
            .with_patch(Bytes::from_static(b"p5"))
    }

    #[test]
    fn patches_advance_the_version_one_at_a_time() {
        let o = object();
        assert_eq!(o.meta.version(), 5);
        assert_eq!(
            o.meta.patches.iter().map(|p| p.version).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(o.meta.size(), 8);
        o.verify().unwrap();
    }

    #[test]
    fn a_get_sends_what_the_client_version_lacks() {
        let meta = object().meta;
        assert_eq!(select(&meta, 0), Selection::Full);
        assert_eq!(select(&meta, 5), Selection::NotModified);
        assert_eq!(select(&meta, 3), Selection::PatchesFrom(0));
        assert_eq!(select(&meta, 4), Selection::PatchesFrom(1));
        assert_eq!(
            select(&meta, 2),
            Selection::Full,
            "base newer than the client"
        );
        assert_eq!(
            select(&meta, 9),
            Selection::Full,
            "client ahead: the object was replaced"
        );
    }

    #[test]
    fn rows_follow_the_selection() {
        let o = object();
        let versions = |s| o.rows(s).iter().map(|r| (r.0, r.1)).collect::<Vec<_>>();
        assert_eq!(
            versions(Selection::Full),
            vec![
                (3, RecordKind::Base),
                (4, RecordKind::Patch),
                (5, RecordKind::Patch)
            ]
        );
        assert_eq!(
            versions(Selection::PatchesFrom(1)),
            vec![(5, RecordKind::Patch)]
        );
        assert!(versions(Selection::NotModified).is_empty());
    }

    #[test]
    fn a_changed_byte_fails_verification() {
        let mut o = object();
        o.patches[1] = Bytes::from_static(b"pX");
        assert!(o.verify().unwrap_err().contains("v5"));
    }
}
