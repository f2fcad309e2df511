//! Steps 2 and 3, bind and allocate: sessions that need instances get free executors first,
//! then new ones, one executor at a time in rank order (progressive filling).
//!
//! | Step | A session in rank order gets | Or, when impossible |
//! |---|---|---|
//! | Bind | a free executor (Idle or Void, no session, Ready node) whose resreq and shim equal the session's: the lowest-id one that last served the session's application (whose process may be kept for a warm switch), else the lowest-id one | leaves the bind step |
//! | Allocate | a new executor of its resreq on the least loaded Ready node with room, created and bound at once | leaves the allocate step |
//!
//! Only schedulable sessions (Open, below the bind retry limit) that need instances take part.
//! After each grant the session's rank is recomputed and it goes back in line while it still
//! needs instances; a session that cannot be served leaves the step, since nothing later in the
//! same step can make room for it (free executors and node room only shrink).
//!
//! Rank: the configured policies in order (`priority`: higher first; `drf`: lower dominant
//! share first), then fewer grants in this plan, then, with rotation on, waiting longer for
//! executors (per [`super::WarmTimers`]; so the slot a rotation frees goes to the session that
//! waited, not back to an older one), then older, then lower session id.
//!
//! Room on a node: the sizes of all its executors (any state but Released, this plan's
//! included) plus the new one fit within its allocatable in cpu, memory and gpu, and it holds
//! fewer than `max_executors_per_node` executors.
//!
//! Caveat: nodes run Host instances only, so sessions of applications with another shim (Wasm)
//! never get a new executor; they can only be bound to a matching free executor, which no node
//! creates.

use super::Policy;
use super::cycle::{Cycle, Demand};
use super::resources::Res;
use crate::state::Command;
use flame_proto::model::Shim;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The shims node agents run.
const NODE_SHIMS: [Shim; 1] = [Shim::Host];

/// How many generated ids in a row may be unusable before an executor is not created.
const ID_ATTEMPTS: usize = 8;

/// A session's place in line: lower ranks are served first.
pub(super) type Rank = (Vec<u64>, u32, i64, i64, String);

/// Step 2: binds free executors to sessions that need instances.
pub(super) fn bind(cycle: &mut Cycle<'_>, out: &mut Vec<Command>) {
    fill(cycle, out, &mut |cycle, i, out| bind_one(cycle, i, out));
}

/// Step 3: creates and binds executors for sessions that still need instances.
pub(super) fn allocate(
    cycle: &mut Cycle<'_>,
    new_id: &mut dyn FnMut() -> String,
    out: &mut Vec<Command>,
) {
    fill(cycle, out, &mut |cycle, i, out| {
        create_one(cycle, i, new_id, out)
    });
}

/// Serves sessions that need instances one grant at a time, lowest rank first, until every one
/// is satisfied or cannot be served by `grant` (which returns whether it granted).
fn fill(
    cycle: &mut Cycle<'_>,
    out: &mut Vec<Command>,
    grant: &mut dyn FnMut(&mut Cycle<'_>, usize, &mut Vec<Command>) -> bool,
) {
    let mut line: BinaryHeap<Reverse<(Rank, usize)>> = cycle
        .sessions
        .iter()
        .enumerate()
        .filter(|(_, d)| d.needs_more())
        .map(|(i, d)| Reverse((rank(cycle, d), i)))
        .collect();
    while let Some(Reverse((_, i))) = line.pop() {
        if !grant(cycle, i, out) {
            continue;
        }
        let Some(d) = cycle.sessions.get_mut(i) else {
            continue;
        };
        d.record_grant();
        if let Some(d) = cycle.sessions.get(i).filter(|d| d.needs_more()) {
            line.push(Reverse((rank(cycle, d), i)));
        }
    }
}

/// The rank of session demand `d`; see the module docs.
pub(super) fn rank(cycle: &Cycle<'_>, d: &Demand<'_>) -> Rank {
    let session = &d.entry.session;
    let mut policies = Vec::with_capacity(2);
    let mut keys = Vec::with_capacity(2);
    for policy in &cycle.config.policies {
        if policies.contains(policy) {
            continue;
        }
        policies.push(*policy);
        keys.push(match policy {
            Policy::Priority => u64::from(u32::MAX - session.spec.priority),
            // Shares are never negative, so their bit patterns order like their values.
            Policy::Drf => d.allocated.dominant_share(cycle.total).to_bits(),
        });
    }
    (
        keys,
        d.granted,
        // Only rotations need it (the freed slot must reach the waiter); without them the
        // older session goes first, as upstream.
        if cycle.config.rotation_wait_ms > 0 {
            d.waiting_since.unwrap_or(i64::MAX)
        } else {
            0
        },
        session.creation_time_ms,
        session.id.clone().into(),
    )
}

/// Binds a matching free executor to session `i`: the lowest-id one that last served its
/// application, else the lowest-id one.
fn bind_one(cycle: &mut Cycle<'_>, i: usize, out: &mut Vec<Command>) -> bool {
    let Some(d) = cycle.sessions.get(i) else {
        return false;
    };
    let fit = (d.resreq(), d.shim);
    let app = d.entry.session.spec.application.as_str();
    let Some(queue) = cycle.free.get_mut(&fit) else {
        return false;
    };
    let warm = queue
        .iter()
        .position(|id| cycle.free_app.get(id).is_some_and(|a| a == app));
    let Some(id) = queue.remove(warm.unwrap_or(0)) else {
        return false;
    };
    cycle.free_left.remove(id);
    out.push(Command::BindExecutor {
        id: id.to_owned(),
        session_id: d.id().to_owned(),
    });
    true
}

/// Creates an executor for session `i` on the best node with room and binds it.
fn create_one(
    cycle: &mut Cycle<'_>,
    i: usize,
    new_id: &mut dyn FnMut() -> String,
    out: &mut Vec<Command>,
) -> bool {
    let Some(d) = cycle.sessions.get(i) else {
        return false;
    };
    let (resreq, shim, session_id) = (d.resreq(), d.shim, d.id().to_owned());
    if !NODE_SHIMS.contains(&shim) {
        return false;
    }
    let size = Res::of(&resreq);
    let Some(node) = pick_node(cycle, size) else {
        return false;
    };
    let Some(id) = fresh_id(cycle, new_id) else {
        return false;
    };
    if let Some(room) = cycle.nodes.get_mut(node) {
        room.used = room.used.plus(size);
        room.executors = room.executors.saturating_add(1);
    }
    cycle.created.insert(id.clone());
    out.push(Command::CreateExecutor {
        id: id.clone(),
        node: node.to_owned(),
        resreq,
        shim,
    });
    out.push(Command::BindExecutor { id, session_id });
    true
}

/// The Ready node with room for `size` that is least loaded once it holds it (dominant share
/// of its allocatable), then by name.
fn pick_node<'s>(cycle: &Cycle<'s>, size: Res) -> Option<&'s str> {
    let max = cycle.config.max_executors_per_node;
    cycle
        .nodes
        .iter()
        .filter(|(_, room)| room.executors < max)
        .filter(|(_, room)| room.used.plus(size).within(room.allocatable))
        .min_by_key(|(name, room)| {
            let load = room.used.plus(size).dominant_share(room.allocatable);
            (load.to_bits(), **name)
        })
        .map(|(name, _)| *name)
}

/// A generated id that is not empty and names no executor of the state or of this plan.
fn fresh_id(cycle: &Cycle<'_>, new_id: &mut dyn FnMut() -> String) -> Option<String> {
    (0..ID_ATTEMPTS).map(|_| new_id()).find(|id| {
        !id.is_empty() && cycle.state.executor(id).is_none() && !cycle.created.contains(id)
    })
}
