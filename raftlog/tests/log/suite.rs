//! openraft's own storage conformance suite, run against raftlog.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use raftlog::kv::{KvApp, KvConfig};
use raftlog::{LogStore, StateMachineStore, Storage};
use tempfile::TempDir;

struct Builder;

type Sm = StateMachineStore<KvConfig, KvApp>;

impl StoreBuilder<KvConfig, LogStore<KvConfig>, Sm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore<KvConfig>, Sm), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| raftlog::Error::io("tempdir", e).write_logs())?;
        let storage = Storage::new(dir.path(), "suite-cluster");
        let log = LogStore::open_in(&storage).map_err(|e| e.write_logs())?;
        let sm = StateMachineStore::open(&storage, KvApp).map_err(|e| e.write_sm())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_against_raftlog() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}
