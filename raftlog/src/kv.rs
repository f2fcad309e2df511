//! A minimal key-value application, used by raftlog's tests, benchmark and torture driver.
//!
//! It exists so raftlog can be exercised end to end (openraft's storage suite, crash tests, a
//! single-node Raft) without depending on the control plane. Each command puts one value; the
//! response is the length of the value it replaced.
//!
//! Caveat: not meant for production use; the control plane has its own application.

use crate::app::App;
use crate::error::Result;
use openraft::LogId;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

/// The one table of the key-value application.
pub const KV_TABLE: &str = "kv";
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new(KV_TABLE);

/// Put `value` under `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// The key.
    pub key: Vec<u8>,
    /// The new value.
    pub value: Vec<u8>,
}

/// The length of the value a put replaced, if there was one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// Length of the previous value.
    pub previous_len: Option<u64>,
}

openraft::declare_raft_types!(
    /// openraft types for the key-value application.
    pub KvConfig:
        D = Put,
        R = PutResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<KvConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The key-value application; it keeps nothing in memory.
#[derive(Debug, Default)]
pub struct KvApp;

impl App<KvConfig> for KvApp {
    fn tables(&self) -> &'static [&'static str] {
        &[KV_TABLE]
    }

    fn apply(
        &mut self,
        txn: &WriteTransaction,
        _log_id: &LogId<u64>,
        put: Put,
    ) -> Result<PutResponse> {
        let mut table = txn.open_table(KV)?;
        let previous = table.insert(put.key.as_slice(), put.value.as_slice())?;
        Ok(PutResponse {
            previous_len: previous.map(|v| v.value().len() as u64),
        })
    }

    fn noop_response(&self) -> PutResponse {
        PutResponse::default()
    }

    fn restore(&mut self, _txn: &ReadTransaction) -> Result<()> {
        Ok(())
    }
}

/// Every key and value of the key-value table, in key order.
pub fn dump(txn: &ReadTransaction) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let table = txn.open_table(KV)?;
    let mut rows = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        rows.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(rows)
}

/// The put that scripted workloads (the torture driver, benchmarks) write as entry `index`: one
/// of 64 keys, and a value whose length and bytes derive from `index`, so a checker can recompute
/// what the log and the state machine must hold.
pub fn scripted_put(index: u64) -> Put {
    let len = 8 + (index % 200) as usize;
    let value = index
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect();
    Put {
        key: (index % 64).to_be_bytes().to_vec(),
        value,
    }
}
