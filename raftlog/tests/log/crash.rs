//! Crash safety: a child process appends and applies entries while the test SIGKILLs it at
//! random points, then reopens the stores and checks what survived.
//!
//! Claims, checked after every kill:
//! - every entry the flush callback acknowledged is in the log, with the content it was given;
//! - the log has no holes between the purge point and its end;
//! - the state machine equals the newest snapshot plus the replay of the log up to its last
//!   applied id, and equals what the scripted workload must produce at that id.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader};
use raftlog::kv::{self, KvApp, KvConfig, scripted_put};
use raftlog::snapshot::SnapshotDir;
use raftlog::{LogStore, StateMachineStore, Storage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const MIN_KILLS: usize = 200;
const DEADLINE: Duration = Duration::from_secs(300);
const CLUSTER: &str = "crash-cluster";

#[test]
fn acknowledged_entries_survive_sigkill_and_state_matches_log_replay() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::new(dir.path(), CLUSTER);
    let seed: u64 = match std::env::var("RAFTLOG_CRASH_SEED") {
        Ok(s) => s.parse()?,
        Err(_) => rand::random(),
    };
    eprintln!("crash test seed {seed} (set RAFTLOG_CRASH_SEED to replay)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (mut acked, mut kills, mut max_applied) = (0u64, 0usize, 0u64);
    while kills < MIN_KILLS {
        anyhow::ensure!(
            started.elapsed() < DEADLINE,
            "only {kills} kill points in {DEADLINE:?}"
        );
        let child_seed = rng.random::<u64>().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_raftlog-torture"))
            .args([
                dir.path().to_str().unwrap_or_default(),
                CLUSTER,
                &child_seed,
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        // One run in ten is killed at once, while it opens (and so recovers) the databases.
        let acks_before_kill = if rng.random_ratio(1, 10) {
            0
        } else {
            rng.random_range(1..=12)
        };
        acked = acked.max(read_acks(&mut stdout, acks_before_kill)?);
        kill(&mut child)?;
        acked = acked.max(read_acks(&mut stdout, usize::MAX)?);
        kills += 1;
        let applied = runtime.block_on(check(&storage, acked))?;
        max_applied = max_applied.max(applied);
    }
    eprintln!("{kills} kills, {acked} entries acknowledged, {max_applied} applied");
    anyhow::ensure!(max_applied > 0, "the workload never applied anything");
    Ok(())
}

/// Reads `READY`/`ACK` lines until `wanted` acks were seen or the pipe ends; returns the
/// highest acknowledged index.
fn read_acks(stdout: &mut BufReader<ChildStdout>, wanted: usize) -> anyhow::Result<u64> {
    let (mut seen, mut highest) = (0, 0);
    let mut line = String::new();
    while seen < wanted {
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            break;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("READY") => {}
            Some("ACK") => {
                highest = words.next().unwrap_or_default().parse()?;
                seen += 1;
            }
            // A line cut short by the kill.
            _ if !line.ends_with('\n') => break,
            _ => anyhow::bail!("unexpected line from the child: {line:?}"),
        }
    }
    Ok(highest)
}

fn kill(child: &mut Child) -> anyhow::Result<()> {
    child.kill()?;
    let status = child.wait()?;
    anyhow::ensure!(
        status.code().is_none(),
        "the child exited by itself: {status}"
    );
    Ok(())
}

/// Reopens the stores and checks every claim; returns the last applied index.
async fn check(storage: &Storage, acked: u64) -> anyhow::Result<u64> {
    let mut log = LogStore::<KvConfig>::open_in(storage)?;
    let mut sm = StateMachineStore::open(storage, KvApp)?;
    let state = log.get_log_state().await?;
    let last = state.last_log_id.map_or(0, |l| l.index);
    let purged = state.last_purged_log_id.map_or(0, |l| l.index);
    anyhow::ensure!(
        last >= acked,
        "entry {acked} was acknowledged but the log ends at {last}"
    );
    let entries = log.try_get_log_entries(purged + 1..=last).await?;
    anyhow::ensure!(
        entries.len() as u64 == last - purged,
        "hole in the log ({purged}, {last}]"
    );
    let mut logged = BTreeMap::new();
    for entry in entries {
        let index = entry.log_id.index;
        let EntryPayload::Normal(put) = entry.payload else {
            anyhow::bail!("entry {index} is not a normal entry");
        };
        anyhow::ensure!(
            put == scripted_put(index),
            "entry {index} has the wrong content"
        );
        logged.insert(index, put);
    }
    let applied = sm.applied_state().await?.0.map_or(0, |l| l.index);
    anyhow::ensure!(
        applied <= last,
        "applied {applied} is past the end of the log {last}"
    );

    let mut replayed = BTreeMap::new();
    let mut from = 1;
    if let Some((path, meta)) = SnapshotDir::open(&storage.dir, CLUSTER)?.current::<KvConfig>()? {
        let at = meta.last_log_id.map_or(0, |l| l.index);
        anyhow::ensure!(
            at <= applied,
            "snapshot at {at} is ahead of applied {applied}"
        );
        anyhow::ensure!(
            purged <= at,
            "log purged to {purged}, past the snapshot at {at}"
        );
        let (_, rows) = raftlog::snapshot::read_rows::<KvConfig>(&path, CLUSTER)?;
        replayed.extend(rows.into_iter().map(|r| (r.key, r.value)));
        from = at + 1;
    } else {
        anyhow::ensure!(purged == 0, "log purged to {purged} without a snapshot");
    }
    for index in from..=applied {
        let put = logged
            .get(&index)
            .expect("checked contiguous above")
            .clone();
        replayed.insert(put.key, put.value);
    }
    let stored: BTreeMap<_, _> = kv::dump(&sm.read()?)?.into_iter().collect();
    anyhow::ensure!(
        stored == replayed,
        "state machine differs from log replay at {applied}"
    );
    let scripted: BTreeMap<_, _> = (applied.saturating_sub(63).max(1)..=applied)
        .map(|i| (scripted_put(i).key, scripted_put(i).value))
        .collect();
    anyhow::ensure!(
        stored == scripted,
        "state machine differs from the script at {applied}"
    );
    drop(log);
    drop(sm);
    Ok(applied)
}
