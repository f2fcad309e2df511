//! State digests: equal for the same state at the same applied log id, different when one row
//! differs, and taken at the store's own applied log id.

use crate::support::entries;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use raftlog::kv::{KvApp, KvConfig, Put, scripted_put};
use raftlog::{StateMachineStore, Storage};

type Sm = StateMachineStore<KvConfig, KvApp>;

fn open(dir: &tempfile::TempDir) -> anyhow::Result<Sm> {
    Ok(StateMachineStore::open(
        &Storage::new(dir.path(), "digest"),
        KvApp,
    )?)
}

#[tokio::test]
async fn stores_fed_the_same_entries_have_equal_digests_at_their_applied_id() -> anyhow::Result<()>
{
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (mut a, mut b) = (open(&a)?, open(&b)?);
    assert_eq!(
        a.digest_handle().digest()?.applied,
        None,
        "nothing applied yet"
    );
    a.apply(entries(1..=100)).await?;
    b.apply(entries(1..=100)).await?;
    let (da, db) = (a.digest_handle().digest()?, b.digest_handle().digest()?);
    assert_eq!(da, db);
    assert_eq!(
        da.applied,
        a.applied(),
        "the digest is of the applied state"
    );
    assert_eq!(da.rows, 64, "the scripted workload writes 64 keys");
    Ok(())
}

#[tokio::test]
async fn one_different_row_changes_the_digest() -> anyhow::Result<()> {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (mut a, mut b) = (open(&a)?, open(&b)?);
    a.apply(entries(1..=100)).await?;
    // The last entry puts another value under the same key: one row differs.
    let mut changed = entries(1..=100);
    changed[99].payload = EntryPayload::Normal(Put {
        key: scripted_put(100).key,
        value: b"another value".to_vec(),
    });
    b.apply(changed).await?;
    let (da, db) = (a.digest_handle().digest()?, b.digest_handle().digest()?);
    assert_eq!((da.applied, da.rows), (db.applied, db.rows));
    assert_ne!(da.digest, db.digest);

    // The handle follows the store's later applies.
    let handle = a.digest_handle();
    let next: Entry<KvConfig> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), 101),
        payload: EntryPayload::Blank,
    };
    a.apply([next]).await?;
    let later = handle.digest()?;
    assert_eq!(later.applied, a.applied());
    assert_eq!(later.digest, da.digest, "a blank entry changes no row");
    Ok(())
}
