//! The contract between raftlog and the application state machine it stores.
//!
//! raftlog knows nothing of sessions or tasks. An application keeps its replicated data in redb
//! tables of raw bytes (`&[u8] -> &[u8]`) that it names in [`App::tables`]; raftlog opens the
//! write transaction, hands it to [`App::apply`] for each entry of a batch, writes the last
//! applied log id and membership into the **same** transaction and commits it durably. Snapshots
//! carry exactly the named tables, so building and installing them needs no help from the app.
//!
//! Caveats:
//! - `apply` must be deterministic: the same entries on every member must produce the same
//!   tables and responses. Business failures (not found, invalid state) are part of the
//!   response, never an `Err`.
//! - An `Err` from `apply` or `restore` means something non-deterministic failed (I/O); openraft
//!   then stops the member rather than let it diverge.
//! - If a transaction fails after `apply` changed in-memory state, the member stops; the app
//!   does not need to roll its memory back.

use crate::FlameRaft;
use crate::error::Result;
use openraft::LogId;
use redb::{ReadTransaction, WriteTransaction};

/// An application state machine stored by raftlog.
pub trait App<C: FlameRaft>: Send + Sync + 'static {
    /// Names of the redb tables (raw bytes to raw bytes) holding all replicated state. raftlog
    /// creates them, snapshots them and replaces them on snapshot install.
    fn tables(&self) -> &'static [&'static str];

    /// Applies one normal entry inside the batch's write transaction.
    fn apply(&mut self, txn: &WriteTransaction, log_id: &LogId<u64>, data: C::D) -> Result<C::R>;

    /// The response for entries that carry no application data (blank and membership).
    fn noop_response(&self) -> C::R;

    /// Called after a batch of applies has committed durably; publish effects here (wake
    /// watchers, notify schedulers), never before the commit.
    fn committed(&mut self) {}

    /// Rebuilds any in-memory state from the tables: at open and after a snapshot install.
    fn restore(&mut self, txn: &ReadTransaction) -> Result<()>;
}
