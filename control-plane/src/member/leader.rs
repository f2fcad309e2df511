//! Duties that only the leader performs, restarted by every new leader from replicated state.
//!
//! - On winning an election: make sure the built-in applications exist (`EnsureBuiltins`), so a
//!   fresh cluster lists exactly `flmexec`, `flmping` and `flmrun`; and, when the applied state
//!   has no cluster CA, generate one and propose `SetClusterCa` (the first applied wins, so two
//!   leaders racing agree on one CA; see [`super::cache_ca`]).
//! - Periodically: purge closed sessions beyond `cluster.limits` (retention), by proposing
//!   `PurgeSessions` like any other write, each naming sessions of at most
//!   [`PURGE_TASKS_PER_COMMAND`] tasks together so no one apply stalls the group for long.
//! - Every second: mark NotReady the nodes whose agent has been silent for `raft.node_timeout_ms`
//!   ([`stale_nodes`]). The last heartbeat is replicated, and a new leader counts silence from
//!   no earlier than the moment it took over, so a node whose agent never comes back is marked
//!   NotReady by whichever member leads (upstream leaves it Ready forever), and a healthy agent
//!   gets a full timeout to find the new leader.
//!
//! Caveat: a duty that fails (for example because leadership moved mid-way) is simply tried
//! again by whichever member leads next; every duty is idempotent.

use super::cache_ca;
use super::handle::MemberHandle;
use super::proposer::now_ms;
use crate::config::Config;
use crate::state::{Command, Outcome, State, closed_sessions_to_purge};
use flame_proto::error::FlameError;
use flame_proto::model::{NodeName, NodeState};
use openraft::ServerState;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How often the leader checks retention.
const RETENTION_EVERY: Duration = Duration::from_secs(5);
/// How often the leader checks node heartbeats.
const NODE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The nodes to mark NotReady at `now_ms`: not NotReady yet, and silent for `timeout_ms`
/// counted from their last heartbeat, or from `leader_since_ms` if that is later.
pub fn stale_nodes(
    state: &State,
    now_ms: i64,
    leader_since_ms: i64,
    timeout_ms: i64,
) -> Vec<NodeName> {
    state
        .nodes()
        .filter(|n| n.state != NodeState::NotReady)
        .filter(|n| n.last_heartbeat_ms.max(leader_since_ms) + timeout_ms < now_ms)
        .map(|n| n.name.clone())
        .collect()
}

/// Runs the leader's duties until `stop` turns true.
pub async fn run(handle: MemberHandle, config: Config, mut stop: watch::Receiver<bool>) {
    let mut metrics = handle.raft.metrics();
    let mut led_term = None;
    let mut leader_since = None;
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    let mut node_check = tokio::time::interval(NODE_CHECK_EVERY);
    loop {
        let (state, term) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_term)
        };
        let leading = state == ServerState::Leader;
        if !leading {
            leader_since = None;
        } else if leader_since.is_none() {
            leader_since = Some(now_ms());
        }
        if leading && led_term != Some(term) {
            info!(term, "became leader");
            match on_election(&handle).await {
                Ok(()) => led_term = Some(term),
                Err(e) => warn!(term, error = %e, "an election duty failed; retrying"),
            }
        }
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = retention.tick(), if leading => purge_closed_sessions(&handle, &config).await,
            _ = node_check.tick(), if leading => {
                let since = leader_since.unwrap_or_else(now_ms);
                mark_stale_nodes(&handle, since, config.raft.node_timeout_ms as i64).await;
            }
        }
    }
}

/// The duties of a new leader: the built-in applications, then the cluster CA.
async fn on_election(handle: &MemberHandle) -> Result<(), FlameError> {
    handle.write(Command::EnsureBuiltins).await?;
    ensure_cluster_ca(handle).await
}

/// Creates the cluster CA when the applied state has none. The check runs after this leader's
/// EnsureBuiltins was applied, so the state includes everything committed before; a CA another
/// leader proposed meanwhile makes ours a no-op.
async fn ensure_cluster_ca(handle: &MemberHandle) -> Result<(), FlameError> {
    if handle.local().state.cluster_ca().is_some() {
        return Ok(());
    }
    let ca = tokio::task::spawn_blocking(|| cache_ca::generate_ca(SystemTime::now()))
        .await
        .map_err(|e| FlameError::Internal(format!("generating the cluster CA failed: {e}")))??;
    let command = Command::SetClusterCa {
        cert_pem: ca.cert_pem,
        key_pem: ca.key_pem,
    };
    match handle.write(command).await?.outcome {
        Outcome::ClusterCa(Ok(true)) => info!("created the cluster CA for cache peers"),
        Outcome::ClusterCa(Ok(false)) => debug!("another leader created the cluster CA first"),
        Outcome::ClusterCa(Err(e)) => return Err(e),
        other => {
            return Err(FlameError::Internal(format!(
                "SetClusterCa was answered with {other:?}"
            )));
        }
    }
    Ok(())
}

async fn mark_stale_nodes(handle: &MemberHandle, leader_since_ms: i64, timeout_ms: i64) {
    let view = handle.local();
    for node in stale_nodes(&view.state, now_ms(), leader_since_ms, timeout_ms) {
        let command = Command::MarkNodeNotReady {
            node: node.clone().into(),
        };
        match handle.write(command).await {
            Ok(_) => warn!(node = %node, timeout_ms, "node agent silent; marked NotReady"),
            Err(e) => warn!(node = %node, error = %e, "could not mark a silent node NotReady"),
        }
    }
}

async fn purge_closed_sessions(handle: &MemberHandle, config: &Config) {
    let limits = &config.cluster.limits;
    if limits.max_sessions.is_none() && limits.max_closed_session_age_secs.is_none() {
        return;
    }
    let view = handle.local();
    let max_age = limits.max_closed_session_age_secs.map(|s| s as i64 * 1000);
    let ids = closed_sessions_to_purge(&view.state, limits.max_sessions, max_age, now_ms());
    if ids.is_empty() {
        return;
    }
    for ids in purge_batches(&view.state, ids, PURGE_TASKS_PER_COMMAND) {
        let count = ids.len();
        match handle.write(Command::PurgeSessions { ids }).await {
            Ok(_) => info!(count, "purged closed sessions"),
            Err(e) => {
                warn!(error = %e, "retention purge failed");
                return;
            }
        }
    }
}

/// Most task rows one PurgeSessions deletes (a session with more goes alone): one apply
/// deletes them all, and every later write waits for it (review D7).
pub const PURGE_TASKS_PER_COMMAND: u64 = 100_000;

/// `ids` in order, cut into groups whose sessions hold at most `cap` tasks together; a session
/// over `cap` forms a group of its own.
pub fn purge_batches(state: &State, ids: Vec<String>, cap: u64) -> Vec<Vec<String>> {
    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut tasks: u64 = 0;
    for id in ids {
        let count = state.session_entry(&id).map_or(0, |s| s.task_count());
        match batches.last_mut() {
            Some(batch) if tasks.saturating_add(count) <= cap => {
                tasks += count;
                batch.push(id);
            }
            _ => {
                tasks = count;
                batches.push(vec![id]);
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateMachine;
    use flame_proto::model::Node;

    fn with_node(heartbeat_ms: i64) -> StateMachine {
        let mut m = StateMachine::new(Default::default());
        let node = Node {
            name: "n1".into(),
            hostname: "n1".into(),
            state: NodeState::Unknown,
            capacity: Default::default(),
            allocatable: Default::default(),
            arch: "x86_64".into(),
            os: "linux".into(),
            addresses: Vec::new(),
            last_heartbeat_ms: 0,
            cache: None,
        };
        m.apply(
            heartbeat_ms,
            Command::RegisterNode {
                node,
                agent_id: "a".into(),
            },
        );
        m
    }

    #[test]
    fn a_silent_node_is_stale_after_the_timeout_from_its_last_heartbeat() {
        let m = with_node(1_000);
        assert!(stale_nodes(m.state(), 1_500, 0, 1_000).is_empty());
        assert_eq!(
            stale_nodes(m.state(), 2_001, 0, 1_000),
            vec!["n1".to_string()]
        );
    }

    #[test]
    fn a_new_leader_counts_silence_from_when_it_took_over() {
        let m = with_node(1_000);
        // Took over at 5 s: the old heartbeat alone would make the node stale, but the agent
        // gets a full timeout to find the new leader.
        assert!(stale_nodes(m.state(), 5_500, 5_000, 1_000).is_empty());
        assert_eq!(
            stale_nodes(m.state(), 6_001, 5_000, 1_000),
            vec!["n1".to_string()]
        );
    }

    #[test]
    fn a_not_ready_node_is_not_marked_again() {
        let mut m = with_node(1_000);
        m.apply(3_000, Command::MarkNodeNotReady { node: "n1".into() });
        assert!(stale_nodes(m.state(), 100_000, 0, 1_000).is_empty());
    }

    fn with_sessions(tasks: &[usize]) -> StateMachine {
        let mut m = StateMachine::new(Default::default());
        m.apply(1, Command::EnsureBuiltins);
        for (n, count) in tasks.iter().enumerate() {
            let id = format!("s{n}");
            let spec = flame_proto::model::SessionSpec {
                application: "flmrun".into(),
                common_data: None,
                min_instances: 0,
                max_instances: None,
                priority: 0,
                resreq: Default::default(),
            };
            m.apply(
                2,
                Command::CreateSession {
                    id: id.clone(),
                    spec,
                },
            );
            let tasks = (0..*count)
                .map(|_| crate::state::NewTask {
                    input: None,
                    request_id: None,
                })
                .collect();
            m.apply(
                3,
                Command::CreateTasks {
                    session_id: id,
                    tasks,
                    dispatch: None,
                },
            );
        }
        m
    }

    #[test]
    fn a_purge_is_cut_into_commands_of_bounded_task_counts() {
        let m = with_sessions(&[40, 50, 30, 150, 10, 0]);
        let ids: Vec<String> = (0..6).map(|n| format!("s{n}")).collect();
        let batches = purge_batches(m.state(), ids.clone(), 100);
        let expected: Vec<Vec<&str>> =
            vec![vec!["s0", "s1"], vec!["s2"], vec!["s3"], vec!["s4", "s5"]];
        assert_eq!(batches, expected);
        assert_eq!(batches.concat(), ids, "every session once, in order");
    }
}
