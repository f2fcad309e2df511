//! The small enums of the model: shims and the states of sessions, tasks, applications,
//! executors and nodes (spec sections 3.1 and 6).
//!
//! Each mirrors a `flame.v1` enum value for value; `convert.rs` maps between them. Caveat:
//! postcard encodes variants by position, so only ever append variants.

use serde::{Deserialize, Serialize};

/// How an application's instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Shim {
    /// A host process (the only shim Flame's node agent runs).
    #[default]
    Host,
    /// A WebAssembly module; sessions of such applications wait for a node that supports it.
    Wasm,
}

/// The state of a session: `Open → Closed` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SessionState {
    /// Accepting tasks.
    #[default]
    Open,
    /// Closed by CloseSession; never reopens.
    Closed,
}

/// The state of a task (spec section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for an executor of its session.
    #[default]
    Pending,
    /// Handed to an executor.
    Running,
    /// The instance returned `return_code == 0`. Terminal.
    Succeed,
    /// The instance returned non-zero, the invocation failed, or requeues were exhausted.
    /// Terminal.
    Failed,
    /// Still Pending when its session closed. Terminal. flamepy 0.6.0 cannot represent it.
    Cancelled,
}

impl TaskState {
    /// Every state, in wire order.
    pub const ALL: [TaskState; 5] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Succeed,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// True for Succeed, Failed and Cancelled, after which a task never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeed | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// The state of an application. Flame, like upstream, only ever uses Enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ApplicationState {
    /// Registered and usable.
    #[default]
    Enabled,
    /// Never set by any RPC; kept for wire completeness.
    Disabled,
}

/// The state of an executor (a resource slot on a node), as listed by ListExecutor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ExecutorState {
    /// Not known (wire value 0).
    #[default]
    Unknown,
    /// Created by the scheduler, not yet registered by its node agent.
    Void,
    /// Registered and not bound to a session.
    Idle,
    /// Being bound to a session.
    Binding,
    /// Bound to a session and running its tasks.
    Bound,
    /// Leaving its session.
    Unbinding,
    /// Being released from its node.
    Releasing,
    /// Released; the record is about to be deleted.
    Released,
}

/// The state of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum NodeState {
    /// Not known, or draining: its agent's connection ended and the drain timer runs.
    #[default]
    Unknown,
    /// Registered and heartbeating; may receive executors.
    Ready,
    /// Missed heartbeats or draining; receives no new executors.
    NotReady,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_succeed_failed_and_cancelled_are_terminal() {
        let terminal: Vec<TaskState> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [TaskState::Succeed, TaskState::Failed, TaskState::Cancelled]
        );
    }
}
