//! The seeded nemesis, one test per fault kind, five seeds each: flamepy-style clients that never
//! retry run sessions, tasks, reads, watches and application changes through every member while
//! the fault strikes twice; after healing, the checkers must find nothing lost, nothing
//! duplicated, every task terminal, counters right and equal on every member, equal state
//! digests, and linearizable reads (`chaos_tests::run`).
//!
//! Each run prints its seed and schedule; the summary table follows. Environment:
//! - `FLAME_CHAOS_SEEDS`: the seeds, as `3` or `1-20` or `4,9` (default `1-5`);
//! - `FLAME_CHAOS_WINDOW_SECS`: each run's workload window (default 8);
//! - `FLAME_CHAOS_FAULTS`: faults per run (default 2), for long soaks.
//!
//! The members run in network namespaces (`chaos_tests::net`), so these tests need root.

use super::support;
use anyhow::{Context, bail};
use chaos_tests::AgentOptions;
use chaos_tests::nemesis::FaultKind;
use chaos_tests::run::{RunConfig, RunReport, run, table};
use std::time::Duration;

/// The seeds to run, from `FLAME_CHAOS_SEEDS`.
fn seeds() -> anyhow::Result<Vec<u64>> {
    let spec = std::env::var("FLAME_CHAOS_SEEDS").unwrap_or_else(|_| "1-5".into());
    let mut seeds = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("FLAME_CHAOS_SEEDS: `{part}` is not a seed or a range like 1-5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) =
                    (a.parse().with_context(bad)?, b.parse().with_context(bad)?);
                seeds.extend(a..=b);
            }
            None => seeds.push(part.parse().with_context(bad)?),
        }
    }
    Ok(seeds)
}

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a number, not `{v}`")),
        Err(_) => Ok(default),
    }
}

/// Runs every seed against a fresh cluster with faults of `kind`, prints the table, and fails
/// naming each seed whose run found anything.
async fn every_seed(kind: FaultKind) -> anyhow::Result<()> {
    let window = Duration::from_secs(env_number("FLAME_CHAOS_WINDOW_SECS", 8)?);
    let faults = env_number("FLAME_CHAOS_FAULTS", 2)? as usize;
    let mut reports: Vec<RunReport> = Vec::new();
    let mut failures = Vec::new();
    for seed in seeds()? {
        let mut running = support::start_partitionable(kind.name(), &["node-a", "node-b"]).await?;
        let options = AgentOptions::new(&running.binaries);
        let mut config = RunConfig::new(seed, &[kind]);
        config.window = window;
        config.faults = faults;
        let report = match run(&mut running.cluster, &options, &config).await {
            Ok(report) => report,
            Err(e) => {
                let logs = member_logs(&running);
                bail!("seed {seed} ({}) could not finish: {e}{logs}", kind.name());
            }
        };
        if !report.passed() {
            let problems = report.problems().join("\n  ");
            failures.push(format!(
                "seed {seed}:\n  {problems}{}",
                member_logs(&running)
            ));
        }
        reports.push(report);
    }
    println!(
        "{} ({} faults per run):\n{}",
        kind.name(),
        faults,
        table(&reports)
    );
    if !failures.is_empty() {
        bail!("{} found problems:\n{}", kind.name(), failures.join("\n"));
    }
    Ok(())
}

fn member_logs(running: &support::Running) -> String {
    let mut text = String::new();
    for m in running.cluster.members() {
        text.push_str(&format!(
            "\n--- member {} log:\n{}",
            m.id,
            running.cluster.log_tail(m.id, 15)
        ));
    }
    text.push_str(&support::agent_logs(running));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkills() -> anyhow::Result<()> {
    every_seed(FaultKind::KillLeader).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_sigkills() -> anyhow::Result<()> {
    every_seed(FaultKind::KillFollower).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_pauses_past_the_election_timeout() -> anyhow::Result<()> {
    every_seed(FaultKind::PauseLeader).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_isolated_from_both_followers() -> anyhow::Result<()> {
    every_seed(FaultKind::IsolateLeader).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_follower_split_from_the_other_two() -> anyhow::Result<()> {
    every_seed(FaultKind::IsolateFollower).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_lossy_link() -> anyhow::Result<()> {
    every_seed(FaultKind::SlowLink).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_agent_sigkills() -> anyhow::Result<()> {
    every_seed(FaultKind::KillAgent).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restarts_of_every_member() -> anyhow::Result<()> {
    every_seed(FaultKind::RollingRestart).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_replaced_by_one_with_an_empty_disk() -> anyhow::Result<()> {
    every_seed(FaultKind::ReplaceMember).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_disk_fills() -> anyhow::Result<()> {
    every_seed(FaultKind::DiskFull).await
}
