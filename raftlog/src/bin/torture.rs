//! `raftlog-torture`: appends and applies entries forever, printing what the flush callback
//! acknowledged, so a parent process can SIGKILL it at random points and check recovery.
//!
//! Protocol on stdout, one line each:
//! - `READY <last log index> <last applied index>` once the stores are open;
//! - `ACK <index>` after the entries up to `<index>` were reported flushed.
//!
//! Entry `i` always puts `raftlog::kv::scripted_put(i)`, so any reader can recompute what the log and the
//! state machine must hold. It also builds snapshots and purges the log now and then, so kills
//! land during snapshotting and purging too.
//!
//! Usage: `raftlog-torture <dir> <cluster id> <seed>`.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder};
use raftlog::kv::{KvApp, KvConfig, scripted_put};
use raftlog::{LogStore, StateMachineStore, Storage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write;

/// Apply this many entries between snapshots.
const SNAPSHOT_EVERY: u64 = 300;
/// Keep this many entries below a snapshot when purging.
const KEEP: u64 = 50;
/// Stop after this many entries, so a forgotten child cannot run forever.
const MAX_ENTRIES: u64 = 5_000_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, cluster, seed] = args.as_slice() else {
        anyhow::bail!("usage: raftlog-torture <dir> <cluster id> <seed>");
    };
    let seed: u64 = seed.parse()?;
    let storage = Storage::new(dir, cluster.as_str());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(storage, seed))
}

async fn run(storage: Storage, seed: u64) -> anyhow::Result<()> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut log = LogStore::<KvConfig>::open_in(&storage)?;
    let mut sm = StateMachineStore::open(&storage, KvApp)?;
    let state = log.get_log_state().await?;
    let mut next = state.last_log_id.map_or(1, |l| l.index + 1);
    let mut applied = sm.applied_state().await?.0.map_or(0, |l| l.index);
    let mut last_snapshot = applied;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {} {applied}", next - 1)?;
    out.flush()?;
    while next < MAX_ENTRIES {
        let count = rng.random_range(1..=32);
        let entries: Vec<Entry<KvConfig>> = (next..next + count).map(entry).collect();
        log.blocking_append(entries).await?;
        next += count;
        writeln!(out, "ACK {}", next - 1)?;
        out.flush()?;
        if rng.random_bool(0.7) {
            let upto = rng.random_range(applied + 1..next);
            let batch = log.try_get_log_entries(applied + 1..=upto).await?;
            anyhow::ensure!(
                batch.len() as u64 == upto - applied,
                "log has a hole before {upto}"
            );
            sm.apply(batch).await?;
            applied = upto;
        }
        if applied - last_snapshot >= SNAPSHOT_EVERY {
            let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
            if let Some(last) = snapshot.meta.last_log_id
                && last.index > KEEP
            {
                log.purge(log_id(last.index - KEEP)).await?;
            }
            last_snapshot = applied;
        }
    }
    Ok(())
}

/// The log id of entry `index` (one term, one leader).
fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

fn entry(index: u64) -> Entry<KvConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(scripted_put(index)),
    }
}
