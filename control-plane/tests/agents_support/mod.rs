//! Shared machinery of the node-agent protocol tests: a three-process cluster (optionally with a
//! short `raft.node_timeout_ms`), the fake agent ([`fake`]), and Frontend helpers for sessions
//! and tasks of `flmping`.
//!
//! Caveat: every wait polls a condition with a deadline.

#![allow(dead_code)] // Each test binary uses a part of this module.

pub mod fake;

use crate::frontend_support::{collect, eventually, frontend, state_of, tasks};
use anyhow::bail;
use chaos_tests::Cluster;
use flame_proto::cluster::{CreateTasksRequest, TaskSubmission};
use flame_proto::v1;

/// A started cluster with its roles.
pub struct Running {
    /// The three member processes.
    pub cluster: Cluster,
    /// The leader when the cluster settled.
    pub leader: u64,
    /// The other two members.
    pub followers: [u64; 2],
}

impl Running {
    /// Client API URLs of every member, leader last (so agents start at a follower).
    pub fn urls(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = vec![self.followers[0], self.followers[1], self.leader];
        ids.dedup();
        ids.iter()
            .map(|id| Ok(self.cluster.member(*id)?.url()))
            .collect()
    }

    /// The client API URL of member `id`.
    pub fn url(&self, id: u64) -> anyhow::Result<String> {
        Ok(self.cluster.member(id)?.url())
    }
}

/// Starts three members of cluster `name` (with `node_timeout_ms` if given), waits for a
/// leader and the built-in applications.
pub async fn start(name: &str, node_timeout_ms: Option<u64>) -> anyhow::Result<Running> {
    let timeout = node_timeout_ms.map(|ms| ms.to_string());
    let flags: Vec<&str> = match &timeout {
        Some(ms) => vec!["--node-timeout-ms", ms],
        None => Vec::new(),
    };
    let started = crate::frontend_support::start_with(name, &flags).await?;
    Ok(Running {
        cluster: started.cluster,
        leader: started.leader,
        followers: started.followers,
    })
}

/// Creates session `id` of `flmping` (cpu 1, 1 GiB per executor, no minimum) through member
/// `via`.
pub async fn ping_session(run: &Running, via: u64, id: &str) -> anyhow::Result<()> {
    let mut c = frontend(&run.cluster, via)?;
    c.create_session(v1::CreateSessionRequest {
        session_id: id.into(),
        session: Some(v1::SessionSpec {
            application: "flmping".into(),
            common_data: Some(b"common".to_vec()),
            min_instances: 0,
            max_instances: None,
            batch_size: 1,
            priority: 0,
            resreq: Some(v1::ResourceRequirement {
                cpu: 1,
                memory: 1 << 30,
                gpu: 0,
            }),
        }),
    })
    .await?;
    Ok(())
}

/// The input of task number `n` (from 0) in the tests.
pub fn input(n: usize) -> Vec<u8> {
    format!("in-{n}").into_bytes()
}

/// Creates `count` tasks with inputs `in-0`, `in-1`, ... in session `id` through member `via`.
pub async fn create_tasks(run: &Running, via: u64, id: &str, count: usize) -> anyhow::Result<()> {
    create_tasks_from(run, via, id, 0, count).await
}

/// Creates `count` tasks with inputs `in-<first>`, ... in session `id` through member `via`.
pub async fn create_tasks_from(
    run: &Running,
    via: u64,
    id: &str,
    first: usize,
    count: usize,
) -> anyhow::Result<()> {
    let request = CreateTasksRequest {
        session_id: id.into(),
        tasks: (first..first + count)
            .map(|n| TaskSubmission {
                input: Some(input(n)),
                request_id: format!("r-{n}"),
            })
            .collect(),
    };
    let created = tasks(&run.cluster, via)?.create_tasks(request).await?;
    if created.get_ref().tasks.len() != count {
        bail!(
            "created {} tasks, expected {count}",
            created.get_ref().tasks.len()
        );
    }
    Ok(())
}

/// Every task of session `id`, read through member `via`.
pub async fn list_tasks(run: &Running, via: u64, id: &str) -> anyhow::Result<Vec<v1::Task>> {
    let mut c = frontend(&run.cluster, via)?;
    let stream = c
        .list_task(v1::ListTaskRequest {
            session_id: id.into(),
        })
        .await?
        .into_inner();
    collect(stream).await
}

/// Waits until all `count` tasks of session `id` are in `state` (read through `via`).
pub async fn wait_tasks(
    run: &Running,
    via: u64,
    id: &str,
    count: usize,
    state: v1::TaskState,
) -> anyhow::Result<Vec<v1::Task>> {
    eventually(
        &format!("{count} tasks of {id} to be {state:?}"),
        || async move {
            let Ok(listed) = list_tasks(run, via, id).await else {
                return Ok(None);
            };
            let done = listed.len() == count && listed.iter().all(|t| state_of(t) == state);
            Ok(done.then_some(listed))
        },
    )
    .await
}

/// The session `id` read through member `via`.
pub async fn session(run: &Running, via: u64, id: &str) -> anyhow::Result<v1::Session> {
    let mut c = frontend(&run.cluster, via)?;
    let s = c
        .get_session(v1::GetSessionRequest {
            session_id: id.into(),
        })
        .await?;
    Ok(s.into_inner())
}

/// The events of a wire task as `(code, message)`.
pub fn events(task: &v1::Task) -> Vec<(i32, String)> {
    task.status
        .as_ref()
        .map(|s| {
            s.events
                .iter()
                .map(|e| (e.code, e.message.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// A fake agent configuration for node `node` against every member of `run`.
pub fn agent_config(
    run: &Running,
    node: &str,
    agent_id: &str,
    behaviour: fake::Behaviour,
) -> anyhow::Result<fake::AgentConfig> {
    Ok(fake::AgentConfig {
        node: node.into(),
        agent_id: agent_id.into(),
        members: run.urls()?,
        behaviour,
        task_delay: std::time::Duration::ZERO,
    })
}
