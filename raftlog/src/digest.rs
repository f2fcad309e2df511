//! State digests: one hash of a member's application tables, with the log id they were applied to.
//!
//! [`digest`] opens one read transaction (the same consistent MVCC view a snapshot build uses)
//! and feeds BLAKE3, table after table in the order given and each table in key order, with
//!
//! ```text
//! table index u32 | key length u64 | key | value length u64 | value
//! ```
//!
//! for every row (integers little-endian). The last applied log id comes from the `meta` table of
//! the same transaction, so the hash is exactly the state at that id. Only application tables
//! are hashed: membership and the database's own metadata are not.
//!
//! Members replay the same log, so two members' digests at the same applied log id must be
//! equal; digests at different applied ids say nothing. The chaos suite compares them to check
//! that the members of a group ended with the same state.
//!
//! Caveat: a digest reads every row; it is a tool for tests and operators, not for a hot path.

use crate::error::Result;
use crate::meta::{self, META};
use crate::snapshot::{KEY_APPLIED, table};
use openraft::LogId;
use redb::{Database, ReadableDatabase, ReadableTable};
use std::sync::Arc;

/// A hash of the application tables at one applied log id; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDigest {
    /// The last log id applied to the hashed state; `None` while nothing has been applied.
    pub applied: Option<LogId<u64>>,
    /// How many rows were hashed, over every table.
    pub rows: u64,
    /// The BLAKE3 hash of every row of every table (the layout is in the module docs).
    pub digest: [u8; 32],
}

/// Hashes every row of `tables` of `db`, in that order, from one read transaction.
pub fn digest(db: &Database, tables: &[&str]) -> Result<StateDigest> {
    let txn = db.begin_read()?;
    let applied: Option<LogId<u64>> = {
        let meta_table = txn.open_table(META)?;
        meta::get(&meta_table, KEY_APPLIED)?.flatten()
    };
    let mut hasher = blake3::Hasher::new();
    let mut rows = 0u64;
    for (index, name) in (0u32..).zip(tables) {
        let t = txn.open_table(table(name))?;
        for row in t.iter()? {
            let (k, v) = row?;
            hasher.update(&index.to_le_bytes());
            hash_chunk(&mut hasher, k.value());
            hash_chunk(&mut hasher, v.value());
            rows += 1;
        }
    }
    Ok(StateDigest {
        applied,
        rows,
        digest: *hasher.finalize().as_bytes(),
    })
}

/// Feeds a length-prefixed byte string, so row boundaries are part of the hash.
fn hash_chunk(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Computes the [`StateDigest`] of one state machine, usable after the store itself was handed
/// to openraft; cheap to clone.
#[derive(Clone)]
pub struct DigestHandle {
    db: Arc<Database>,
    tables: &'static [&'static str],
}

impl DigestHandle {
    pub(crate) fn new(db: Arc<Database>, tables: &'static [&'static str]) -> Self {
        DigestHandle { db, tables }
    }

    /// The digest of the state machine's current applied state. It scans the whole database:
    /// call it from a blocking thread in async code.
    pub fn digest(&self) -> Result<StateDigest> {
        digest(&self.db, self.tables)
    }

    /// The application tables the digest covers, in hashing order.
    pub fn tables(&self) -> &'static [&'static str] {
        self.tables
    }
}

impl std::fmt::Debug for DigestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestHandle")
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}
