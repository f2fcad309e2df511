//! One chaos run: the workload's clients against a cluster while the nemesis injects a seeded
//! schedule of faults, then, once every fault is healed, the checkers over the history and the
//! members' final state; and the summary table of many runs.
//!
//! A run, in order:
//! 1. prints its seed and schedule ([`Schedule::describe`]);
//! 2. starts [`RunConfig::clients`] workload clients (each picks members at random, never
//!    retries) and runs the schedule: inject, hold, heal;
//! 3. stops the clients at the end of the window and waits for a leader;
//! 4. waits up to [`RunConfig::terminal_bound`] for every task to be terminal (and the
//!    counters read at rest: a session read and its task listing are two reads);
//! 5. checks: lost acknowledged writes, duplicate tasks, session counters on every member,
//!    equal final state on every member, equal state digests at one applied index, and
//!    linearizable session and task reads.
//!
//! Caveat: the cluster and its agents are the caller's ([`Cluster::start_partitionable`] for
//! network faults); a run leaves them running, healed, for the caller to drop.

use crate::checker::final_state::{self, Final};
use crate::checker::models;
use crate::history::{Clock, History};
use crate::nemesis::{self, FaultKind, Schedule, Step};
use crate::workload::{self, WorkloadConfig};
use crate::{AgentOptions, Cluster, HarnessError, poll};
use flame_proto::cluster::StateDigestRequest;
use std::time::Duration;
use tokio::sync::watch;

/// The shape of one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The seed: the fault schedule and every client's choices derive from it.
    pub seed: u64,
    /// The kinds of fault to draw from.
    pub kinds: Vec<FaultKind>,
    /// How many faults (at most: they must start inside the window).
    pub faults: usize,
    /// How long the workload runs.
    pub window: Duration,
    /// How many clients.
    pub clients: u64,
    /// The clients' shape (its seed is replaced by [`RunConfig::seed`]).
    pub workload: WorkloadConfig,
    /// How long after the faults every task must be terminal.
    pub terminal_bound: Duration,
    /// Search budget of the linearizability checker, per key.
    pub budget: u64,
    /// Whether the members purge closed sessions (retention): the checkers then accept a
    /// closed session, and its tasks, vanishing.
    pub retention: bool,
}

impl RunConfig {
    /// A run of `seed` with faults of `kinds`: two faults in a 12 s window, six clients (three
    /// keep to one member each, three roam; see [`crate::workload`]).
    pub fn new(seed: u64, kinds: &[FaultKind]) -> RunConfig {
        RunConfig {
            seed,
            kinds: kinds.to_vec(),
            faults: 2,
            window: Duration::from_secs(12),
            clients: 6,
            workload: WorkloadConfig {
                seed,
                max_calls: 5_000,
                max_task_ms: 100,
                max_pad: 2_048,
                max_think_ms: 20,
            },
            terminal_bound: Duration::from_secs(60),
            budget: 1_000_000,
            retention: false,
        }
    }
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The schedule it ran.
    pub schedule: Schedule,
    /// Faults injected (and healed).
    pub injected: usize,
    /// Operations recorded.
    pub ops: usize,
    /// Operations acknowledged.
    pub acknowledged: usize,
    /// Operations whose fate the client could not know.
    pub unknown: usize,
    /// Acknowledged writes missing at the end.
    pub lost: Vec<String>,
    /// Tasks created twice.
    pub duplicates: Vec<String>,
    /// Tasks not terminal within the bound.
    pub not_terminal: Vec<String>,
    /// Session counters that disagree with their tasks, on any member.
    pub counters: Vec<String>,
    /// Members whose final state or digest differs from the others'.
    pub diverged: Vec<String>,
    /// Non-linearizable keys.
    pub nonlinearizable: Vec<String>,
    /// The longest time without an acknowledged write.
    pub longest_write_gap: Duration,
    /// The members' memory and files, sampled after every healed fault.
    pub samples: Vec<Sample>,
}

/// The members' resident memory and data files at one moment of a run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the workload started.
    pub at: Duration,
    /// Per running member: `(id, resident set KiB, bytes under its data directory)`.
    pub members: Vec<(u64, u64, u64)>,
}

impl Sample {
    /// The members' sample now.
    pub fn take(cluster: &mut Cluster, at: Duration) -> Sample {
        let ids: Vec<u64> = cluster.members().iter().map(|m| m.id).collect();
        let mut members = Vec::new();
        for id in ids {
            let rss = cluster.pid(id).and_then(resident_kib);
            let data = cluster.member(id).ok().map(|m| dir_bytes(&m.data_dir));
            if let (Some(rss), Some(data)) = (rss, data) {
                members.push((id, rss, data));
            }
        }
        Sample { at, members }
    }
}

/// `VmRSS` of process `pid`, KiB.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl RunReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// Every finding, one per line, at most ten per check.
    pub fn problems(&self) -> Vec<String> {
        let groups = [
            ("lost", &self.lost),
            ("duplicate", &self.duplicates),
            ("not terminal", &self.not_terminal),
            ("counters", &self.counters),
            ("diverged", &self.diverged),
            ("not linearizable", &self.nonlinearizable),
        ];
        groups
            .into_iter()
            .flat_map(|(what, found)| found.iter().take(10).map(move |f| format!("{what}: {f}")))
            .collect()
    }
}

/// The summary table of `reports`.
pub fn table(reports: &[RunReport]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header([
        "seed",
        "faults",
        "injected",
        "ops",
        "acked",
        "unknown",
        "lost",
        "dups",
        "not terminal",
        "counters",
        "diverged",
        "non-lin",
        "max write gap ms",
    ]);
    for r in reports {
        let kinds: Vec<&str> = r
            .schedule
            .steps
            .iter()
            .map(|s| s.fault.kind.name())
            .collect();
        table.add_row([
            r.schedule.seed.to_string(),
            kinds.join(","),
            r.injected.to_string(),
            r.ops.to_string(),
            r.acknowledged.to_string(),
            r.unknown.to_string(),
            r.lost.len().to_string(),
            r.duplicates.len().to_string(),
            r.not_terminal.len().to_string(),
            r.counters.len().to_string(),
            r.diverged.len().to_string(),
            r.nonlinearizable.len().to_string(),
            r.longest_write_gap.as_millis().to_string(),
        ]);
    }
    table.to_string()
}

/// Runs `config` against `cluster` (agents restarted with `agents`); see the module docs.
pub async fn run(
    cluster: &mut Cluster,
    agents: &AgentOptions,
    config: &RunConfig,
) -> Result<RunReport, HarnessError> {
    let schedule = Schedule::new(config.seed, &config.kinds, config.faults, config.window);
    println!("chaos run, {}", schedule.describe());
    let (history, injected, samples) =
        workload_under_faults(cluster, agents, config, &schedule).await?;
    let (leader, _) = nemesis::roles(cluster).await?;
    let channel = cluster.channel(leader)?;
    let what = "every task of the run to be terminal, with its session's counters";
    let end = poll(what, config.terminal_bound, || {
        let (channel, history) = (channel.clone(), &history);
        async move {
            let end = final_state::read_final(channel, history).await.ok();
            // At rest: every task terminal, and the counters read after the last change (a
            // GetSession and the ListTask after it are two reads, so a task finishing between
            // them shows as a mismatch that the next poll no longer has).
            let at_rest = |e: &Final| {
                e.not_terminal().is_empty() && final_state::counter_mismatches(e).is_empty()
            };
            Ok::<_, HarnessError>(end.filter(at_rest))
        }
    })
    .await;
    let end = match end {
        Ok(end) => end,
        Err(_) => final_state::read_final(channel, &history)
            .await
            .map_err(|e| checker_error(format!("final read through the leader: {e}")))?,
    };
    let (counters, diverged) = compare_members(cluster, &history, &end).await?;
    Ok(RunReport {
        schedule,
        injected,
        ops: history.ops.len(),
        acknowledged: history.acknowledged(),
        unknown: history.unknown(),
        lost: final_state::lost(&history, &end, config.retention),
        duplicates: final_state::duplicates(&end),
        not_terminal: end.not_terminal(),
        counters,
        diverged,
        nonlinearizable: models::violations(&history, config.budget, config.retention),
        longest_write_gap: Duration::from_nanos(history.longest_write_gap()),
        samples,
    })
}

/// What the workload left: the merged history, the faults injected, the samples taken.
type Outcomes = (History, usize, Vec<Sample>);

/// Runs the clients for the window while the nemesis runs `schedule`.
async fn workload_under_faults(
    cluster: &mut Cluster,
    agents: &AgentOptions,
    config: &RunConfig,
    schedule: &Schedule,
) -> Result<Outcomes, HarnessError> {
    let clock = Clock::start();
    let (stop, stopped) = watch::channel(false);
    let (voters, members) = watch::channel(voter_channels(cluster).await?);
    let workload = WorkloadConfig {
        seed: config.seed,
        ..config.workload.clone()
    };
    let clients: Vec<_> = (0..config.clients)
        .map(|n| {
            let client =
                workload::client(n, members.clone(), workload.clone(), clock, stopped.clone());
            tokio::spawn(client)
        })
        .collect();
    let started = tokio::time::Instant::now();
    let mut samples = vec![Sample::take(cluster, Duration::ZERO)];
    let mut injected = 0;
    let mut failure = None;
    for step in &schedule.steps {
        tokio::time::sleep_until(started + step.at).await;
        if let Err(why) = strike(cluster, agents, step).await {
            failure = Some(why);
            break;
        }
        injected += 1;
        samples.push(Sample::take(cluster, started.elapsed()));
        // After a replacement the clients must find the new member (and drop the old one).
        let _ = voters.send(voter_channels(cluster).await?);
    }
    tokio::time::sleep_until(started + config.window).await;
    let _ = stop.send(true);
    let mut parts = Vec::new();
    for client in clients {
        parts.push(
            client
                .await
                .map_err(|e| checker_error(format!("a client panicked: {e}")))?,
        );
    }
    samples.push(Sample::take(cluster, started.elapsed()));
    match failure {
        Some(why) => Err(checker_error(why)),
        None => Ok((History::merge(parts), injected, samples)),
    }
}

/// Injects `step`'s fault, holds it, heals it; a failure names the step.
async fn strike(cluster: &mut Cluster, agents: &AgentOptions, step: &Step) -> Result<(), String> {
    let fault = nemesis::inject(cluster, &step.fault)
        .await
        .map_err(|e| format!("injecting `{step}`: {e}"))?;
    tokio::time::sleep(step.hold).await;
    nemesis::heal(cluster, fault, agents)
        .await
        .map_err(|e| format!("healing `{step}`: {e}"))
}

/// Channels to the current voters.
async fn voter_channels(
    cluster: &Cluster,
) -> Result<Vec<(u64, tonic::transport::Channel)>, HarnessError> {
    let (leader, followers) = nemesis::roles(cluster).await?;
    let mut ids: Vec<u64> = std::iter::once(leader).chain(followers).collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|id| Ok((id, cluster.channel(id)?)))
        .collect()
}

/// Counter mismatches on any voter, and voters whose final state or digest differs.
async fn compare_members(
    cluster: &Cluster,
    history: &History,
    reference: &Final,
) -> Result<(Vec<String>, Vec<String>), HarnessError> {
    let (leader, followers) = nemesis::roles(cluster).await?;
    let mut counters = Vec::new();
    let mut diverged = Vec::new();
    for id in std::iter::once(leader).chain(followers) {
        let end = final_state::read_final(cluster.channel(id)?, history)
            .await
            .map_err(|e| checker_error(format!("final read through member {id}: {e}")))?;
        counters.extend(
            final_state::counter_mismatches(&end)
                .into_iter()
                .map(|c| format!("member {id}: {c}")),
        );
        diverged.extend(
            final_state::differences(reference, &end)
                .into_iter()
                .map(|d| format!("member {id}: {d}")),
        );
    }
    diverged.extend(digests_differ(cluster).await?);
    Ok((counters, diverged))
}

/// Waits until every voter reports a state digest at one applied index, then compares them;
/// the differences found (or that no common index came within the bound).
async fn digests_differ(cluster: &Cluster) -> Result<Vec<String>, HarnessError> {
    let (leader, followers) = nemesis::roles(cluster).await?;
    let ids: Vec<u64> = std::iter::once(leader).chain(followers).collect();
    let what = "every member's state digest at one applied index";
    let at_one_index = poll(what, Duration::from_secs(30), || {
        let ids = &ids;
        async move {
            let mut digests = Vec::new();
            for id in ids {
                let reply = cluster
                    .admin(*id)?
                    .state_digest(StateDigestRequest {})
                    .await;
                let reply =
                    reply.map_err(|e| checker_error(format!("digest of member {id}: {e}")))?;
                digests.push((*id, reply.into_inner()));
            }
            let index = digests[0].1.applied_index;
            Ok::<_, HarnessError>(
                digests
                    .iter()
                    .all(|(_, d)| d.applied_index == index)
                    .then_some(digests),
            )
        }
    })
    .await;
    let digests = match at_one_index {
        Ok(digests) => digests,
        Err(HarnessError::Timeout { .. }) => {
            return Ok(vec![format!("no common applied index within 30 s")]);
        }
        Err(e) => return Err(e),
    };
    let (first_id, first) = &digests[0];
    Ok(digests
        .iter()
        .filter(|(_, d)| d.digest != first.digest || d.rows != first.rows)
        .map(|(id, d)| {
            format!(
                "member {id}: digest at index {} differs from member {first_id}'s ({} rows vs {})",
                d.applied_index, d.rows, first.rows
            )
        })
        .collect())
}

fn checker_error(message: String) -> HarnessError {
    HarnessError::Process { id: 0, message }
}
