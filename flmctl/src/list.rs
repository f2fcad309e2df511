//! `flmctl list -a|-s|-e|-n`: applications, sessions, executors and nodes, from any member.
//!
//! What: one `flame.v1.Frontend` listing call (to the first member that answers; nodes also
//! list the executors, for the cpu they hold) and upstream's
//! column layouts: applications `Name State Shim Tags Created Command`, sessions `ID State App
//! Resources Priority Pending Running Succeed Failed Created` (open first, then by id),
//! executors `ID State Session Node`, nodes `NAME HOSTNAME STATUS CPU ALLOC USED FREE MEMORY ARCH
//! OS` (cpu cores, what executors may hold, hold and have left).
//! `-o json|yaml` prints the same rows as structured data.
//!
//! Caveat: times are shown in UTC (`HH:MM:SS`); upstream shows local time.

use crate::client::first_answer;
use crate::output::{Rows, bytes, clock, or_dash};
use flame_proto::v1::{
    self, ExecutorState, ListApplicationRequest, ListExecutorRequest, ListNodesRequest,
    ListSessionRequest, NodeState, SessionState, Shim,
};
use serde_json::json;

/// What `flmctl list` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Registered applications.
    Applications,
    /// Sessions, open and closed.
    Sessions,
    /// Executors on every node.
    Executors,
    /// Nodes (hosts running a node agent).
    Nodes,
}

/// The rows of `kind`, read from the first member of `endpoints` that answers.
pub async fn list(endpoints: &[String], kind: Kind) -> anyhow::Result<Rows> {
    Ok(match kind {
        Kind::Applications => {
            let reply = first_answer(endpoints, |mut c| async move {
                c.list_application(ListApplicationRequest {}).await
            })
            .await?;
            applications(reply.into_inner().applications)
        }
        Kind::Sessions => {
            let reply = first_answer(endpoints, |mut c| async move {
                c.list_session(ListSessionRequest {}).await
            })
            .await?;
            sessions(reply.into_inner().sessions)
        }
        Kind::Executors => {
            let reply = first_answer(endpoints, |mut c| async move {
                c.list_executor(ListExecutorRequest {}).await
            })
            .await?;
            executors(reply.into_inner().executors)
        }
        Kind::Nodes => {
            let reply = first_answer(endpoints, |mut c| async move {
                c.list_nodes(ListNodesRequest {}).await
            })
            .await?;
            let held = first_answer(endpoints, |mut c| async move {
                c.list_executor(ListExecutorRequest {}).await
            })
            .await?;
            nodes(reply.into_inner().nodes, &held.into_inner().executors)
        }
    })
}

fn name(metadata: Option<&v1::Metadata>) -> String {
    metadata.map(|m| m.name.clone()).unwrap_or_default()
}

fn applications(mut apps: Vec<v1::Application>) -> Rows {
    apps.sort_by_key(|a| name(a.metadata.as_ref()));
    let mut rows = Rows {
        headers: vec!["Name", "State", "Shim", "Tags", "Created", "Command"],
        ..Rows::default()
    };
    for app in apps {
        let spec = app.spec.unwrap_or_default();
        let status = app.status.unwrap_or_default();
        let name = name(app.metadata.as_ref());
        let state = if status.state == v1::ApplicationState::Disabled as i32 {
            "Disabled"
        } else {
            "Enabled"
        };
        let shim = Shim::try_from(spec.shim).map_or("-", |s| s.as_str_name());
        let tags = (!spec.labels.is_empty()).then(|| spec.labels.join(", "));
        rows.cells.push(vec![
            name.clone(),
            state.into(),
            shim.into(),
            or_dash(tags.clone()),
            clock(status.creation_time),
            or_dash(spec.command.clone()),
        ]);
        rows.values.push(json!({
            "name": name, "state": state, "shim": shim, "tags": spec.labels,
            "creation_time": status.creation_time, "command": spec.command,
        }));
    }
    rows
}

/// `cpu=1,mem=1Gi,gpu=0`, or `-`.
fn resources(resreq: Option<&v1::ResourceRequirement>) -> String {
    resreq.map_or_else(
        || "-".to_owned(),
        |r| format!("cpu={},mem={},gpu={}", r.cpu, bytes(r.memory), r.gpu),
    )
}

fn sessions(mut sessions: Vec<v1::Session>) -> Rows {
    let key = |s: &v1::Session| {
        let closed = s.status.as_ref().is_some_and(|st| st.state != 0);
        let id = name(s.metadata.as_ref());
        (
            closed,
            id.parse::<u64>().ok().is_none(),
            id.parse::<u64>().ok(),
            id,
        )
    };
    sessions.sort_by_key(key);
    let mut rows = Rows {
        headers: vec![
            "ID",
            "State",
            "App",
            "Resources",
            "Priority",
            "Pending",
            "Running",
            "Succeed",
            "Failed",
            "Created",
        ],
        ..Rows::default()
    };
    for session in sessions {
        let spec = session.spec.unwrap_or_default();
        let st = session.status.unwrap_or_default();
        let id = name(session.metadata.as_ref());
        let state = SessionState::try_from(st.state).map_or("-", |s| s.as_str_name());
        let res = resources(spec.resreq.as_ref());
        rows.cells.push(vec![
            id.clone(),
            state.into(),
            spec.application.clone(),
            res.clone(),
            spec.priority.to_string(),
            st.pending.to_string(),
            st.running.to_string(),
            st.succeed.to_string(),
            st.failed.to_string(),
            clock(st.creation_time),
        ]);
        rows.values.push(json!({
            "id": id, "state": state, "application": spec.application, "resources": res,
            "priority": spec.priority, "pending": st.pending, "running": st.running,
            "succeed": st.succeed, "failed": st.failed, "cancelled": st.cancelled,
            "creation_time": st.creation_time,
        }));
    }
    rows
}

fn executors(mut executors: Vec<v1::Executor>) -> Rows {
    executors.sort_by_key(|e| name(e.metadata.as_ref()));
    let mut rows = Rows {
        headers: vec!["ID", "State", "Session", "Node"],
        ..Rows::default()
    };
    for executor in executors {
        let spec = executor.spec.unwrap_or_default();
        let status = executor.status.unwrap_or_default();
        let id = name(executor.metadata.as_ref());
        let state = ExecutorState::try_from(status.state)
            .map_or("-", |s| s.as_str_name().trim_start_matches("Executor"));
        rows.cells.push(vec![
            id.clone(),
            state.into(),
            or_dash(status.session_id.clone()),
            spec.node.clone(),
        ]);
        rows.values.push(json!({
            "id": id, "state": state, "session": status.session_id, "node": spec.node,
        }));
    }
    rows
}

/// Cpu held by executors (any state but Released), by node name.
fn cpu_held(executors: &[v1::Executor]) -> std::collections::HashMap<String, u64> {
    let mut held = std::collections::HashMap::new();
    for executor in executors {
        let released = executor.status.as_ref().map(|s| s.state)
            == Some(ExecutorState::ExecutorReleased as i32);
        if let (false, Some(spec)) = (released, executor.spec.as_ref()) {
            let cpu = spec.resreq.map_or(0, |r| r.cpu);
            *held.entry(spec.node.clone()).or_insert(0u64) += cpu;
        }
    }
    held
}

/// Nodes with their cores (CPU), what executors may hold (ALLOC: cores times the agent's
/// cpu overcommit), what executors hold (USED) and what is left (FREE), in cpu units: the
/// executor slots of `cpu=1` sessions.
fn nodes(mut nodes: Vec<v1::Node>, executors: &[v1::Executor]) -> Rows {
    nodes.sort_by_key(|n| name(n.metadata.as_ref()));
    let held = cpu_held(executors);
    let mut rows = Rows {
        headers: vec![
            "NAME", "HOSTNAME", "STATUS", "CPU", "ALLOC", "USED", "FREE", "MEMORY", "ARCH", "OS",
        ],
        ..Rows::default()
    };
    for node in nodes {
        let status = node.status.unwrap_or_default();
        let name = name(node.metadata.as_ref());
        let hostname = node.spec.map(|s| s.hostname).unwrap_or_default();
        let state = NodeState::try_from(status.state).map_or("Unknown", |s| s.as_str_name());
        let capacity = status.capacity.unwrap_or_default();
        let alloc = status.allocatable.map_or(capacity.cpu, |a| a.cpu);
        let used = held.get(&name).copied().unwrap_or(0);
        let free = alloc.saturating_sub(used);
        let info = status.info.unwrap_or_default();
        rows.cells.push(vec![
            name.clone(),
            hostname.clone(),
            state.into(),
            capacity.cpu.to_string(),
            alloc.to_string(),
            used.to_string(),
            free.to_string(),
            bytes(capacity.memory),
            info.arch.clone(),
            info.os.clone(),
        ]);
        rows.values.push(json!({
            "name": name, "hostname": hostname, "status": state, "cpu": capacity.cpu,
            "cpu_allocatable": alloc, "cpu_used": used, "cpu_free": free,
            "memory": capacity.memory, "arch": info.arch, "os": info.os,
        }));
    }
    rows
}
