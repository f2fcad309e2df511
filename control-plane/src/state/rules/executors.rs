//! Executor and node commands that reach other entities: binding checks the session and
//! records bind failures on it; an executor that leaves its session, is released or goes with
//! its node gives its tasks back. See the table in the rules module.

use super::tasks;
use crate::state::command::BindResult;
use crate::state::tx::Tx;
use crate::state::{executor, node, session};
use flame_proto::error::FlameError;
use flame_proto::model::{Executor, Node};

/// BindExecutor: binds an executor to an Open, unpaused session.
pub(crate) fn bind(tx: &mut Tx<'_>, id: &str, session_id: &str) -> Result<Executor, FlameError> {
    executor::entry(tx, id)?;
    session::check_bindable(tx, session_id)?;
    executor::bind(tx, id, session_id)
}

/// BindCompleted: Bound on success; Unbinding with session events 1001/1002 on failure.
pub(crate) fn bind_completed(
    tx: &mut Tx<'_>,
    id: &str,
    session_id: &str,
    result: BindResult,
) -> Result<Executor, FlameError> {
    let executor = executor::bind_completed(tx, id, session_id, &result)?;
    session::record_bind(tx, session_id, &executor, result);
    Ok(executor)
}

/// UnbindCompleted: → Idle without a session; tasks it still held are requeued.
pub(crate) fn unbind_completed(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    let (executor, held) = executor::unbind_completed(tx, id)?;
    tasks::requeue_lost(tx, &held, &format!("executor {id} left the session"));
    Ok(executor)
}

/// ExecutorReleased: deletes the executor; tasks it still held are requeued.
pub(crate) fn released(tx: &mut Tx<'_>, id: &str) -> Result<Executor, FlameError> {
    lost(tx, id, &format!("executor {id} was released"))
}

/// MarkNodeNotReady: the node becomes NotReady; if it expired now, its executors are deleted
/// and their tasks requeued.
pub(crate) fn mark_not_ready(tx: &mut Tx<'_>, name: &str) -> Result<Node, FlameError> {
    let (node, expired_now) = node::mark_not_ready(tx, name)?;
    if expired_now {
        let reason = format!("node {name} is not ready");
        for id in executor::on_node(tx, name) {
            let _ = lost(tx, &id, &reason);
        }
    }
    Ok(node)
}

/// Deletes executor `id` (the Released transition) and requeues the tasks it held with
/// `reason`.
fn lost(tx: &mut Tx<'_>, id: &str, reason: &str) -> Result<Executor, FlameError> {
    let (executor, held) = executor::remove(tx, id)?;
    tasks::requeue_lost(tx, &held, reason);
    Ok(executor)
}
