//! The nemesis: a fault schedule derived from one `u64` seed, and the code that injects each
//! fault into a running [`Cluster`] and heals it.
//!
//! A schedule is a list of [`Step`]s: when the fault starts (from the start of the workload),
//! which fault with which parameters, and how long it holds. Roles ("the leader", "the first
//! follower") are resolved when the step runs, so the same seed makes the same schedule in
//! every run even though which member leads differs. [`Schedule::describe`] prints it; a run
//! prints its seed and schedule first, so a failure can be repeated with that seed.
//!
//! Caveats: a fault's exact instant depends on the machine's timing, so the same seed repeats
//! the schedule and the requests, not the interleaving; partitions and slow links need a
//! cluster started with [`Cluster::start_partitionable`].

use crate::{AgentOptions, Cluster, HarnessError};
use flame_proto::cluster::{AddLearnerRequest, ChangeMembershipRequest, Member};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::time::Duration;

/// The kinds of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL the leader, restart it after the hold.
    KillLeader,
    /// SIGKILL a follower, restart it after the hold.
    KillFollower,
    /// SIGSTOP the leader past the election timeout, then SIGCONT.
    PauseLeader,
    /// Cut the leader off from both followers (clients still reach it), then heal.
    IsolateLeader,
    /// Cut one follower off from the other two members: a 1 | 2 split.
    IsolateFollower,
    /// Make a member's link slow and lossy (a token-bucket rate limit and random drops).
    SlowLink,
    /// SIGKILL a node agent and its instances, restart it after the hold.
    KillAgent,
    /// Restart every member in turn, waiting for each to catch up.
    RollingRestart,
    /// Remove a follower and add a fresh member with an empty disk in its place.
    ReplaceMember,
    /// Restart a follower unable to grow any file (a full disk); it must exit, and is
    /// restarted normally after the hold.
    DiskFull,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::PauseLeader,
        FaultKind::IsolateLeader,
        FaultKind::IsolateFollower,
        FaultKind::SlowLink,
        FaultKind::KillAgent,
        FaultKind::RollingRestart,
        FaultKind::ReplaceMember,
        FaultKind::DiskFull,
    ];

    /// The kind's name as `FLAME_CHAOS_FAULTS` spells it.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::IsolateFollower => "isolate-follower",
            FaultKind::SlowLink => "slow-link",
            FaultKind::KillAgent => "kill-agent",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::ReplaceMember => "replace-member",
            FaultKind::DiskFull => "disk-full",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One fault with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The kind.
    pub kind: FaultKind,
    /// Which follower or agent (an index into the followers or agents when the step runs).
    pub which: usize,
    /// Rate (kbit/s) and loss (%) of a slow link, for [`FaultKind::SlowLink`].
    pub link: (u32, u32),
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// When the fault starts, from the start of the workload.
    pub at: Duration,
    /// The fault.
    pub fault: Fault,
    /// How long it holds before it is healed.
    pub hold: Duration,
}

/// The faults of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it came from.
    pub seed: u64,
    /// The steps, in time order, none overlapping.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// The schedule of `seed`: `count` faults drawn from `kinds` within `window`, each held
    /// 1.5–3.5 s (past the election timeout), with at least a second between them.
    pub fn new(seed: u64, kinds: &[FaultKind], count: usize, window: Duration) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut steps = Vec::new();
        let mut at = Duration::from_millis(rng.random_range(800..2_000));
        for _ in 0..count {
            if kinds.is_empty() || at >= window {
                break;
            }
            let kind = kinds[rng.random_range(0..kinds.len())];
            let fault = Fault {
                kind,
                which: rng.random_range(0..2),
                link: (rng.random_range(300..3_000), rng.random_range(1..15)),
            };
            let hold = Duration::from_millis(rng.random_range(1_500..3_500));
            steps.push(Step { at, fault, hold });
            at += hold + Duration::from_millis(rng.random_range(1_000..2_500));
        }
        Schedule { seed, steps }
    }

    /// The schedule as lines of text.
    pub fn describe(&self) -> String {
        let mut text = format!("seed {}:", self.seed);
        for step in &self.steps {
            text.push_str(&format!("\n  {step}"));
        }
        text
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f_ = &self.fault;
        write!(f, "at {:>5} ms {}", self.at.as_millis(), f_.kind.name())?;
        match f_.kind {
            FaultKind::KillFollower | FaultKind::IsolateFollower | FaultKind::KillAgent => {
                write!(f, " #{}", f_.which)?
            }
            FaultKind::ReplaceMember | FaultKind::DiskFull => write!(f, " follower #{}", f_.which)?,
            FaultKind::SlowLink => write!(
                f,
                " {} kbit/s loss {}% on {}",
                f_.link.0,
                f_.link.1,
                if f_.which == 0 {
                    "the leader"
                } else {
                    "a follower"
                }
            )?,
            _ => {}
        }
        write!(f, " for {} ms", self.hold.as_millis())
    }
}

/// A fault in effect, to be healed.
#[derive(Debug)]
pub enum Injected {
    /// Members killed, to restart.
    Killed(Vec<u64>),
    /// A member paused, to resume.
    Paused(u64),
    /// The network was changed, to heal.
    Network,
    /// An agent killed, to restart.
    AgentKilled(String),
    /// Nothing left to heal (the fault completed as it ran).
    Done,
}

/// Bound on waiting for a leader or a catch-up during a fault.
const SETTLE: Duration = Duration::from_secs(30);

/// The leader and the followers (running members) as the members report them now.
pub async fn roles(cluster: &Cluster) -> Result<(u64, Vec<u64>), HarnessError> {
    let voters = voters(cluster).await;
    let leader = cluster.wait_for_leader(&voters, SETTLE).await?;
    let followers = voters.into_iter().filter(|id| *id != leader).collect();
    Ok((leader, followers))
}

/// The voters, as the first member that answers reports them.
async fn voters(cluster: &Cluster) -> Vec<u64> {
    for m in cluster.members() {
        if let Some(status) = cluster.status(m.id).await
            && !status.voters.is_empty()
        {
            return status.voters.iter().map(|v| v.id).collect();
        }
    }
    cluster.members().iter().map(|m| m.id).collect()
}

/// Starts `fault` on `cluster`; returns what [`heal`] must undo.
pub async fn inject(cluster: &mut Cluster, fault: &Fault) -> Result<Injected, HarnessError> {
    let (leader, followers) = roles(cluster).await?;
    let follower = followers[fault.which % followers.len().max(1)];
    Ok(match fault.kind {
        FaultKind::KillLeader => {
            cluster.kill(leader)?;
            Injected::Killed(vec![leader])
        }
        FaultKind::KillFollower => {
            cluster.kill(follower)?;
            Injected::Killed(vec![follower])
        }
        FaultKind::PauseLeader => {
            cluster.pause(leader)?;
            Injected::Paused(leader)
        }
        FaultKind::IsolateLeader => {
            network(cluster)?.isolate(leader, &followers)?;
            Injected::Network
        }
        FaultKind::IsolateFollower => {
            let rest: Vec<u64> = followers
                .iter()
                .copied()
                .filter(|f| *f != follower)
                .collect();
            let others: Vec<u64> = rest.into_iter().chain([leader]).collect();
            network(cluster)?.isolate(follower, &others)?;
            Injected::Network
        }
        FaultKind::SlowLink => {
            let target = if fault.which == 0 { leader } else { follower };
            let (rate, loss) = fault.link;
            network(cluster)?.degrade(target, rate, loss)?;
            Injected::Network
        }
        FaultKind::KillAgent => kill_agent(cluster, fault.which)?,
        FaultKind::RollingRestart => {
            rolling_restart(cluster, leader, &followers).await?;
            Injected::Done
        }
        FaultKind::ReplaceMember => {
            replace(cluster, leader, follower).await?;
            Injected::Done
        }
        FaultKind::DiskFull => {
            cluster.kill(follower)?;
            let limit = largest_file(&cluster.member(follower)?.data_dir)?;
            cluster.spawn_with_file_limit(follower, limit)?;
            Injected::Killed(vec![follower])
        }
    })
}

/// Undoes `injected`: restarts members, or agents with `agents`' options, resumes, heals the
/// network.
pub async fn heal(
    cluster: &mut Cluster,
    injected: Injected,
    agents: &AgentOptions,
) -> Result<(), HarnessError> {
    match injected {
        Injected::Killed(ids) => {
            for id in ids {
                // A disk-full member may still run if it never hit its limit.
                cluster.kill(id)?;
                cluster.spawn(id)?;
            }
        }
        Injected::Paused(id) => cluster.resume(id)?,
        Injected::Network => network(cluster)?.heal()?,
        Injected::AgentKilled(name) => cluster.start_agent(&name, agents)?,
        Injected::Done => {}
    }
    Ok(())
}

fn network(cluster: &Cluster) -> Result<&crate::net::Netns, HarnessError> {
    cluster.network().ok_or_else(|| HarnessError::Process {
        id: 0,
        message: "network faults need Cluster::start_partitionable".into(),
    })
}

fn kill_agent(cluster: &mut Cluster, which: usize) -> Result<Injected, HarnessError> {
    let names: Vec<String> = cluster.agents().iter().map(|a| a.name.clone()).collect();
    let Some(name) = names.get(which % names.len().max(1)).cloned() else {
        return Ok(Injected::Done);
    };
    cluster.kill_agent(&name)?;
    Ok(Injected::AgentKilled(name))
}

/// Restarts the followers, then the leader, each after the one before caught up.
async fn rolling_restart(
    cluster: &mut Cluster,
    leader: u64,
    followers: &[u64],
) -> Result<(), HarnessError> {
    for id in followers.iter().copied().chain([leader]) {
        let target = match cluster.status(id).await {
            Some(s) => s.applied,
            None => 0,
        };
        cluster.kill(id)?;
        cluster.spawn(id)?;
        cluster.wait_applied(id, target, SETTLE).await?;
    }
    Ok(())
}

/// Removes `old` from the voters and adds a fresh member (empty disk, next id) in its place.
async fn replace(cluster: &mut Cluster, leader: u64, old: u64) -> Result<(), HarnessError> {
    let voters = voters(cluster).await;
    let keep: Vec<u64> = voters.iter().copied().filter(|v| *v != old).collect();
    admin_call(cluster, leader, |mut admin| {
        let voters = keep.clone();
        async move {
            let request = ChangeMembershipRequest {
                voters,
                retain: false,
            };
            admin.change_membership(request).await
        }
    })
    .await?;
    cluster.kill(old)?;
    let new = cluster.add_member()?;
    let m = cluster.member(new)?;
    let member = Member {
        id: new,
        raft_addr: m.raft_addr.to_string(),
        api_addr: m.api_addr.to_string(),
    };
    admin_call(cluster, leader, |mut admin| {
        let request = AddLearnerRequest {
            member: Some(member.clone()),
            blocking: true,
        };
        async move { admin.add_learner(request).await }
    })
    .await?;
    let all: Vec<u64> = voters
        .into_iter()
        .filter(|v| *v != old)
        .chain([new])
        .collect();
    admin_call(cluster, leader, |mut admin| {
        let voters = all.clone();
        async move {
            let request = ChangeMembershipRequest {
                voters,
                retain: false,
            };
            admin.change_membership(request).await
        }
    })
    .await
}

/// Runs an admin call on the current leader (which may have moved since `leader` was read).
async fn admin_call<F, Fut, T>(cluster: &Cluster, leader: u64, call: F) -> Result<(), HarnessError>
where
    F: Fn(flame_proto::cluster::cluster_client::ClusterClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut target = leader;
    for _ in 0..5 {
        match call(cluster.admin(target)?).await {
            Ok(_) => return Ok(()),
            Err(status) => {
                tracing::info!(%status, target, "admin call failed; finding the leader again");
                target = roles(cluster).await?.0;
            }
        }
    }
    Err(HarnessError::Process {
        id: target,
        message: "an admin call kept failing on the leader".into(),
    })
}

/// The size of the largest file under `dir`.
pub fn largest_file(dir: &std::path::Path) -> Result<u64, HarnessError> {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        largest = largest.max(if meta.is_dir() {
            largest_file(&entry.path())?
        } else {
            meta.len()
        });
    }
    Ok(largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_schedule_and_another_seed_differs() {
        let kinds = FaultKind::ALL;
        let window = Duration::from_secs(20);
        let a = Schedule::new(7, &kinds, 4, window);
        assert_eq!(a, Schedule::new(7, &kinds, 4, window));
        assert_ne!(a, Schedule::new(8, &kinds, 4, window));
    }

    #[test]
    fn steps_start_inside_the_window_and_do_not_overlap() {
        for seed in 0..200 {
            let s = Schedule::new(seed, &FaultKind::ALL, 5, Duration::from_secs(12));
            assert!(!s.steps.is_empty());
            for pair in s.steps.windows(2) {
                assert!(pair[0].at + pair[0].hold < pair[1].at, "{}", s.describe());
            }
            assert!(s.steps.iter().all(|st| st.at < Duration::from_secs(12)));
        }
    }

    #[test]
    fn every_kind_has_a_name_that_parses_back() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(FaultKind::parse("meteor"), None);
    }
}
