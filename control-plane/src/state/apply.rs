//! The apply path: one exhaustive `match` from a [`Command`] to the function that carries it
//! out.
//!
//! What: commands that change one entity go straight to its module (`application`, `session`,
//! `executor`, `node`, `cache`); commands whose effects cross entities go to the rules layer
//! (`rules`), whose module doc tables every cross-entity rule; `Once` goes through the request
//! table, which applies the wrapped command with [`apply`] itself.
//!
//! Why one match: adding a command is a compile error here until it is handled, and every
//! command's entry point is one line away from its name.
//!
//! Caveat: the time of every change is `tx.now_ms` (the entry's `Proposal`); no function on
//! this path reads a clock, an RNG or the member's configuration beyond `tx.config`.

use super::cache::{self, ClusterCa};
use super::command::{Command, Outcome};
use super::rules::{applications, executors, sessions, tasks};
use super::tx::Tx;
use super::{application, executor, node, requests, session};

/// Applies one command to `tx` and returns its business outcome.
pub(crate) fn apply(tx: &mut Tx<'_>, command: Command) -> Outcome {
    use Command as C;
    match command {
        C::EnsureBuiltins => application::ensure_builtins(tx),
        C::RegisterApplication { name, spec } => {
            Outcome::Application(application::register(tx, name, spec))
        }
        C::UpdateApplication { name, spec } => {
            Outcome::Application(application::update(tx, &name, spec))
        }
        C::UnregisterApplication { name } => Outcome::Done(applications::unregister(tx, &name)),
        C::CreateSession { id, spec } => Outcome::Session(session::create(tx, id, spec)),
        C::OpenSession { id, spec } => Outcome::Session(session::open(tx, id, spec)),
        C::CloseSession { id } => Outcome::Session(sessions::close(tx, &id)),
        C::DeleteSession { id } => Outcome::Session(sessions::delete(tx, &id)),
        C::PurgeSessions { ids } => Outcome::Purged(sessions::purge(tx, ids)),
        C::CreateTasks {
            session_id,
            tasks,
            dispatch,
        } => Outcome::Tasks(tasks::create(tx, &session_id, tasks, dispatch)),
        C::AssignTasks { assignments } => Outcome::TaskUpdates(tasks::assign_all(tx, assignments)),
        C::CompleteTasks { results, refill } => {
            Outcome::TaskUpdates(tasks::complete_all(tx, results, refill.as_ref()))
        }
        C::RequeueTasks { tasks, reason } => {
            Outcome::TaskUpdates(tasks::requeue_all(tx, tasks, &reason))
        }
        C::RegisterNode { node, agent_id } => Outcome::Node(node::register(tx, node, agent_id)),
        C::Heartbeat { node } => Outcome::Node(node::heartbeat(tx, &node)),
        C::NodeDisconnected { node } => Outcome::Node(node::disconnected(tx, &node)),
        C::MarkNodeNotReady { node } => Outcome::Node(executors::mark_not_ready(tx, &node)),
        C::CreateExecutor {
            id,
            node,
            resreq,
            shim,
        } => Outcome::Executor(executor::create(tx, id, node, resreq, shim)),
        C::RegisterExecutor { id } => Outcome::Executor(executor::register(tx, &id)),
        C::BindExecutor { id, session_id } => {
            Outcome::Executor(executors::bind(tx, &id, &session_id))
        }
        C::BindCompleted {
            id,
            session_id,
            result,
        } => Outcome::Executor(executors::bind_completed(tx, &id, &session_id, result)),
        C::UnbindExecutor { id } => Outcome::Executor(executor::unbind(tx, &id)),
        C::YieldExecutor { id } => Outcome::Executor(executor::yield_session(tx, &id)),
        C::UnbindCompleted { id } => Outcome::Executor(executors::unbind_completed(tx, &id)),
        C::ReleaseExecutor { id } => Outcome::Executor(executor::release(tx, &id)),
        C::ExecutorReleased { id } => Outcome::Executor(executors::released(tx, &id)),
        C::SetClusterCa { cert_pem, key_pem } => {
            Outcome::ClusterCa(cache::set_cluster_ca(tx, ClusterCa { cert_pem, key_pem }))
        }
        C::Once {
            request_id,
            command,
        } => requests::apply_once(tx, request_id, *command, apply),
    }
}
