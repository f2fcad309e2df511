//! A node's desired state as the leader sends it (`Assignments`), and what it depends on.
//!
//! What: [`snapshot`] turns the replicated executors of one node into the protocol's
//! `ExecutorAssignment`s (docs/agent-protocol.md, "Assignments"): Void and Idle hold the slot,
//! Binding binds (with the application, session id and common data), Bound runs the tasks it
//! holds, in order (or stays warm with none), Unbinding unbinds, Releasing releases. Alongside it comes the
//! [`Interest`] of that snapshot: the node, the sessions, tasks and applications it was built
//! from, so a stream recomputes only when an applied batch touched one of them.
//!
//! Why: assignments are level-triggered; a stream compares each new snapshot with the last one
//! it sent and sends only differences, and the interest check keeps the cost of a batch that
//! concerns other nodes to one pass over its effects.
//!
//! Caveats:
//! - Executors are listed in id order (the state's order), so equal states give equal
//!   snapshots.
//! - An executor whose session is gone (removed after it closed) still gets its `binding` with
//!   the session id only, so the agent can tell what to leave.
//! - A snapshot carries every binding's common data and the input of every task an executor
//!   holds; with large payloads and many executors per node it can be large (the agent's
//!   decoding limit must allow executors × (2 × the payload limit + `cluster.dispatch.
//!   max_queued_bytes`)).

use crate::state::{Effect, ExecutorEntry, State};
use flame_proto::agent::{Binding, ExecutorAction, ExecutorAssignment, TaskAssignment};
use flame_proto::model::{ExecutorState, NodeState};
use std::collections::HashSet;

/// What a node's last snapshot was built from; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// The node.
    pub node: String,
    /// Sessions the node's executors are binding, bound to or leaving.
    pub sessions: HashSet<String>,
    /// Tasks the node's executors run, as `(session, task)`.
    pub tasks: HashSet<(String, u64)>,
    /// Applications of those sessions.
    pub applications: HashSet<String>,
}

impl Interest {
    /// True when one of `effects` may change the node's snapshot or its readiness.
    pub fn touched_by(&self, effects: &[Effect]) -> bool {
        effects.iter().any(|effect| match effect {
            Effect::ExecutorChanged { node, .. } | Effect::ExecutorRemoved { node, .. } => {
                *node == self.node
            }
            Effect::NodeChanged { node } => *node == self.node,
            Effect::TaskChanged {
                session_id,
                task_id,
            } => self.tasks.contains(&(session_id.clone(), *task_id)),
            Effect::SessionClosed { session_id } | Effect::SessionRemoved { session_id } => {
                self.sessions.contains(session_id)
            }
            Effect::ApplicationChanged { name } | Effect::ApplicationRemoved { name } => {
                self.applications.contains(name)
            }
            Effect::Restored => true,
            Effect::SessionChanged { .. } => false,
        })
    }
}

/// The desired state of node `node` in `state`, one assignment per executor in id order, and
/// what it depends on.
pub fn snapshot(state: &State, node: &str) -> (Vec<ExecutorAssignment>, Interest) {
    let mut interest = Interest {
        node: node.to_owned(),
        ..Interest::default()
    };
    let assignments = state
        .executor_entries()
        .filter(|e| e.executor.spec.node == node)
        .filter(|e| e.executor.state != ExecutorState::Released)
        .map(|e| assignment(state, e, &mut interest))
        .collect();
    (assignments, interest)
}

/// True when node `node` is absent or NotReady in `state`: its agent must register again.
pub fn must_register(state: &State, node: &str) -> bool {
    state
        .node(node)
        .is_none_or(|n| n.state == NodeState::NotReady)
}

/// One executor's assignment; records what it depends on in `interest`.
fn assignment(state: &State, e: &ExecutorEntry, interest: &mut Interest) -> ExecutorAssignment {
    let mut out = ExecutorAssignment::from(&e.executor);
    let action = ExecutorAction::from(e.executor.state);
    let needs_binding = matches!(
        action,
        ExecutorAction::Bind | ExecutorAction::Run | ExecutorAction::Unbind
    );
    if let (true, Some(session_id)) = (needs_binding, e.executor.session_id.as_deref()) {
        out.binding = Some(binding(state, session_id, interest));
    }
    if action == ExecutorAction::Run {
        for held in &e.tasks {
            if let Some(task) = state.task(&held.session_id, held.task_id) {
                interest
                    .tasks
                    .insert((held.session_id.clone(), held.task_id));
                out.tasks.push(TaskAssignment::from(task));
            }
        }
    }
    out
}

/// The binding of session `session_id`: with its application and common data when both exist.
fn binding(state: &State, session_id: &str, interest: &mut Interest) -> Binding {
    interest.sessions.insert(session_id.to_owned());
    let Some(session) = state.session(session_id) else {
        return Binding {
            application: None,
            session_id: session_id.to_owned(),
            common_data: None,
        };
    };
    interest
        .applications
        .insert(session.spec.application.clone());
    match state.application(&session.spec.application) {
        Some(app) => Binding::from((app, session)),
        None => Binding {
            application: None,
            session_id: session_id.to_owned(),
            common_data: session.spec.common_data.as_ref().map(|b| b.to_vec()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Assignment, BindResult, Command, NewTask, StateMachine};
    use bytes::Bytes;
    use flame_proto::model::{Node, ResourceRequirement, SessionSpec, Shim};

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            hostname: name.into(),
            state: NodeState::Unknown,
            capacity: ResourceRequirement::default(),
            allocatable: ResourceRequirement::default(),
            arch: "x86_64".into(),
            os: "linux".into(),
            addresses: Vec::new(),
            last_heartbeat_ms: 0,
            cache: None,
        }
    }

    /// A machine with node n1 and session s1 of flmping, which has two tasks.
    fn machine() -> StateMachine {
        let mut m = StateMachine::new(Default::default());
        let commands = vec![
            Command::EnsureBuiltins,
            Command::RegisterNode {
                node: node("n1"),
                agent_id: "a".into(),
            },
            Command::CreateSession {
                id: "s1".into(),
                spec: SessionSpec {
                    application: "flmping".into(),
                    common_data: Some(Bytes::from_static(b"ctx")),
                    min_instances: 0,
                    max_instances: None,
                    priority: 0,
                    resreq: ResourceRequirement::default(),
                },
            },
            Command::CreateTasks {
                session_id: "s1".into(),
                tasks: (0..2)
                    .map(|i| NewTask {
                        input: Some(Bytes::from(format!("in-{i}"))),
                        request_id: None,
                    })
                    .collect(),
                dispatch: None,
            },
        ];
        for command in commands {
            let r = m.apply(1, command);
            assert!(r.outcome.error().is_none(), "{r:?}");
        }
        m
    }

    fn create(m: &mut StateMachine, id: &str) {
        let r = m.apply(
            2,
            Command::CreateExecutor {
                id: id.into(),
                node: "n1".into(),
                resreq: ResourceRequirement::default(),
                shim: Shim::Host,
            },
        );
        assert!(r.outcome.error().is_none(), "{r:?}");
    }

    fn action(a: &ExecutorAssignment) -> ExecutorAction {
        ExecutorAction::try_from(a.action).unwrap_or(ExecutorAction::Idle)
    }

    #[test]
    fn each_executor_state_gets_the_protocol_action_and_payload() {
        let mut m = machine();
        create(&mut m, "e1");
        let (snap, _) = snapshot(m.state(), "n1");
        assert_eq!(snap.len(), 1);
        assert_eq!(action(&snap[0]), ExecutorAction::Idle);
        assert!(snap[0].binding.is_none());
        m.apply(
            0,
            Command::BindExecutor {
                id: "e1".into(),
                session_id: "s1".into(),
            },
        );
        let (snap, interest) = snapshot(m.state(), "n1");
        assert_eq!(action(&snap[0]), ExecutorAction::Bind);
        let binding = snap[0].binding.as_ref().expect("a binding");
        assert_eq!(binding.session_id, "s1");
        assert_eq!(binding.common_data.as_deref(), Some(&b"ctx"[..]));
        assert!(binding.application.is_some());
        assert!(interest.sessions.contains("s1"));
        assert!(interest.applications.contains("flmping"));
        m.apply(
            3,
            Command::BindCompleted {
                id: "e1".into(),
                session_id: "s1".into(),
                result: BindResult::Ok,
            },
        );
        let (snap, _) = snapshot(m.state(), "n1");
        assert_eq!(action(&snap[0]), ExecutorAction::Run);
        assert!(snap[0].tasks.is_empty(), "a warm executor runs nothing");
        m.apply(
            4,
            Command::AssignTasks {
                assignments: vec![Assignment {
                    executor_id: "e1".into(),
                    session_id: "s1".into(),
                    task_id: 2,
                }],
            },
        );
        let (snap, interest) = snapshot(m.state(), "n1");
        assert_eq!(snap[0].tasks.len(), 1);
        assert_eq!(snap[0].tasks[0].task_id, 2);
        assert_eq!(snap[0].tasks[0].input.as_deref(), Some(&b"in-1"[..]));
        assert!(interest.tasks.contains(&("s1".to_owned(), 2)));
        m.apply(0, Command::UnbindExecutor { id: "e1".into() });
        let (snap, _) = snapshot(m.state(), "n1");
        assert_eq!(action(&snap[0]), ExecutorAction::Unbind);
        assert!(snap[0].tasks.is_empty());
    }

    #[test]
    fn only_effects_on_the_node_or_what_it_depends_on_count() {
        let mut m = machine();
        create(&mut m, "e1");
        m.apply(
            0,
            Command::BindExecutor {
                id: "e1".into(),
                session_id: "s1".into(),
            },
        );
        let (_, interest) = snapshot(m.state(), "n1");
        let other = Effect::ExecutorChanged {
            executor_id: "x".into(),
            node: "n2".into(),
        };
        let counters = Effect::SessionChanged {
            session_id: "s1".into(),
        };
        assert!(!interest.touched_by(&[other.clone(), counters]));
        let mine = Effect::ExecutorRemoved {
            executor_id: "e1".into(),
            node: "n1".into(),
        };
        assert!(interest.touched_by(&[other, mine]));
        let closed = Effect::SessionClosed {
            session_id: "s1".into(),
        };
        assert!(interest.touched_by(&[closed]));
        assert!(interest.touched_by(&[Effect::Restored]));
    }

    #[test]
    fn other_nodes_and_unknown_nodes_get_nothing() {
        let mut m = machine();
        create(&mut m, "e1");
        assert!(snapshot(m.state(), "n2").0.is_empty());
        assert!(must_register(m.state(), "n2"));
        assert!(!must_register(m.state(), "n1"));
        m.apply(9, Command::MarkNodeNotReady { node: "n1".into() });
        assert!(must_register(m.state(), "n1"));
        assert!(snapshot(m.state(), "n1").0.is_empty());
    }
}
