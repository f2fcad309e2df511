//! A snapshot install that a crash cut short is finished at the next open (review D2).
//!
//! An install writes the received snapshot into the tables, publishes it as `current.snap`, then
//! commits. A crash between the last two leaves a published snapshot ahead of the tables; the
//! test builds exactly that state (a member's snapshot copied into the data directory of
//! a member whose tables hold less) and checks that opening installs it, so the tables are never behind the only
//! snapshot the member can send.

use crate::support::entries;
use openraft::RaftSnapshotBuilder;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use raftlog::kv::{KvApp, KvConfig, dump};
use raftlog::snapshot::SNAPSHOT_DIR;
use raftlog::{LogStore, StateMachineStore, Storage};

#[tokio::test]
async fn a_snapshot_published_but_not_committed_is_installed_at_the_next_open() -> anyhow::Result<()>
{
    let (source, target) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let source = Storage::new(source.path(), "alpha");
    let mut log = LogStore::<KvConfig>::open_in(&source)?;
    let mut sm = StateMachineStore::open(&source, KvApp)?;
    log.blocking_append(entries(1..=300)).await?;
    sm.apply(entries(1..=300)).await?;
    let built = sm.get_snapshot_builder().await.build_snapshot().await?;
    let want = dump(&sm.read()?)?;

    // The crashed install: the target's tables hold less than the snapshot it published.
    let target = Storage::new(target.path(), "alpha");
    let mut behind = StateMachineStore::open(&target, KvApp)?;
    behind.apply(entries(1..=10)).await?;
    drop(behind);
    std::fs::copy(
        source.dir.join(SNAPSHOT_DIR).join("current.snap"),
        target.dir.join(SNAPSHOT_DIR).join("current.snap"),
    )?;

    let mut reopened = StateMachineStore::open(&target, KvApp)?;
    let (applied, _) = reopened.applied_state().await?;
    assert_eq!(applied, built.meta.last_log_id, "the tables caught up");
    assert_eq!(
        dump(&reopened.read()?)?,
        want,
        "the snapshot's rows are installed"
    );
    let current = reopened.get_current_snapshot().await?.expect("a snapshot");
    assert_eq!(current.meta, built.meta);

    // A published snapshot behind the tables (the normal state) is left alone.
    reopened.apply(entries(301..=310)).await?;
    drop(reopened);
    let again = StateMachineStore::open(&target, KvApp)?;
    assert_eq!(again.applied(), Some(entries(310..=310)[0].log_id));
    Ok(())
}
