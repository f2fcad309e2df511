//! Durable openraft storage on redb.
//!
//! raftlog implements openraft's storage-v2 traits for the Flame control plane:
//!
//! - [`LogStore`]: the Raft log, vote and committed pointer in `log.redb`. Appends are
//!   group-committed with `Durability::Immediate` before openraft's flush callback runs.
//! - [`StateMachineStore`]: the applied state in `sm.redb`, through the [`App`] trait, with the
//!   last applied log id and membership written in the same transaction as the data.
//! - [`snapshot`]: snapshots built from one consistent read transaction and streamed to a file
//!   record by record (a large state is never one buffer in memory), shipped in chunks by
//!   openraft, and installed in one transaction.
//! - [`policy`]: when to snapshot and how much log to keep afterwards.
//! - [`digest`]: one BLAKE3 hash of the application tables at the applied log id, which members
//!   that applied the same log id must agree on.
//!
//! Every database records the cluster id it belongs to and its format version; opening another
//! cluster's data or another format (newer, or older: there are no migrations) fails with a
//! clear [`Error`].
//!
//! Caveat: raftlog assumes one process owns a data directory; redb's file lock enforces it.

pub mod app;
mod codec;
pub mod digest;
pub mod error;
pub mod kv;
pub mod log_store;
mod meta;
pub mod policy;
pub mod snapshot;
pub mod state_machine;

pub use app::App;
pub use digest::{DigestHandle, StateDigest};
pub use error::{Error, Result};
pub use log_store::{LogReader, LogStore};
pub use policy::LogPolicy;
pub use state_machine::StateMachineStore;

use openraft::RaftTypeConfig;
use std::path::PathBuf;

/// The storage format version this binary writes.
///
/// - 2 (the control plane's object-cache support): nodes carry their cache endpoint,
///   UnregisterApplication carries its time, and the `object_drops` and `cluster_meta` tables
///   exist. Data of version 1 is not migrated.
/// - 3 (exactly-once client writes): log entries may hold the appended `Once` command and the
///   `requests` table exists. Version 2 data is a subset of it: a database of version 2 is
///   upgraded in place when opened (a binary of version 2 then refuses it), and version 2
///   snapshots are read as they are.
/// - 4 (the leader's time on the entry): a log entry is `Proposal { now_ms, commands }` and
///   commands carry no time of their own. Entries of version 3 cannot be read as version 4
///   (postcard is positional), so data of version 3 or older is refused, not migrated: start
///   the cluster on empty data directories.
/// - 5 (replicated retry limits): a log entry is `Proposal { now_ms, policy, commands }`, the
///   leader's retry limits on every entry. Version 4 entries cannot be read as version 5, so
///   data of version 4 or older is refused, as above.
pub const FORMAT_VERSION: u32 = 5;

/// The oldest storage format version this binary reads (see [`FORMAT_VERSION`]).
pub const OLDEST_READABLE_VERSION: u32 = 5;

/// The openraft type configurations raftlog can store: `u64` member ids, openraft's own
/// `Entry`, and snapshots as files.
pub trait FlameRaft:
    RaftTypeConfig<NodeId = u64, Entry = openraft::Entry<Self>, SnapshotData = tokio::fs::File>
{
}

impl<T> FlameRaft for T where
    T: RaftTypeConfig<NodeId = u64, Entry = openraft::Entry<T>, SnapshotData = tokio::fs::File>
{
}

/// Where a member keeps its data, and which cluster it belongs to.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The member's data directory; raftlog owns `log.redb`, `sm.redb` and `snapshots/` in it.
    pub dir: PathBuf,
    /// The cluster id every file in `dir` must carry.
    pub cluster_id: String,
}

impl Storage {
    /// Describes the storage of a member.
    pub fn new(dir: impl Into<PathBuf>, cluster_id: impl Into<String>) -> Self {
        Storage {
            dir: dir.into(),
            cluster_id: cluster_id.into(),
        }
    }
}
