//! The context of one apply: the state being changed, the config, the leader's time, and the
//! record of what changed.
//!
//! What: [`Tx`] bundles the [`State`] with a [`ChangeLog`] that every mutation reports to. The
//! change log yields two things: the [`Effect`]s of the response (in order, without duplicates)
//! and the [`Dirty`] set of objects persistence must write or delete in the same redb
//! transaction.
//!
//! Why one place: a change that is applied but not reported would be lost on restart or never
//! wake its watchers; funnelling reports through one type keeps both in step.
//!
//! Caveat: the change log records keys, not values; persistence reads the values from the state
//! after the command, so an object changed twice is written once, and a removed one is deleted.

use super::StateConfig;
use super::command::Effect;
use super::model::State;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Keys of the objects one command created, changed or removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Applications written or removed.
    pub applications: BTreeSet<String>,
    /// Session rows (spec, state, times, events, bind failures) written or removed.
    pub sessions: BTreeSet<String>,
    /// Session statistics rows (mean task duration) written or removed.
    pub session_stats: BTreeSet<String>,
    /// Task status rows written, by session.
    pub tasks: BTreeMap<String, BTreeSet<u64>>,
    /// Task input rows written (new tasks), by session.
    pub task_inputs: BTreeMap<String, BTreeSet<u64>>,
    /// Sessions removed with their tasks: the id and how many tasks it had.
    pub removed_sessions: Vec<(String, u64)>,
    /// Executors written or removed.
    pub executors: BTreeSet<String>,
    /// Nodes written or removed.
    pub nodes: BTreeSet<String>,
    /// Object drops appended or trimmed, by seq.
    pub object_drops: BTreeSet<u64>,
    /// The cluster CA was stored.
    pub cluster_ca: bool,
    /// Request records written or removed.
    pub requests: BTreeSet<String>,
}

impl Dirty {
    /// Forgets every recorded change.
    pub fn clear(&mut self) {
        *self = Dirty::default();
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self == &Dirty::default()
    }
}

/// Records the effects and dirty keys of one command.
#[derive(Debug)]
pub(crate) struct ChangeLog<'a> {
    dirty: &'a mut Dirty,
    effects: Vec<Effect>,
    seen: HashSet<Effect>,
}

impl ChangeLog<'_> {
    fn emit(&mut self, effect: Effect) {
        if self.seen.insert(effect.clone()) {
            self.effects.push(effect);
        }
    }

    /// An application was written.
    pub(crate) fn application_changed(&mut self, name: &str) {
        self.dirty.applications.insert(name.to_owned());
        self.emit(Effect::ApplicationChanged {
            name: name.to_owned(),
        });
    }

    /// An application was removed.
    pub(crate) fn application_removed(&mut self, name: &str) {
        self.dirty.applications.insert(name.to_owned());
        self.emit(Effect::ApplicationRemoved {
            name: name.to_owned(),
        });
    }

    /// A session's stored row changed (creation, state, events, bind failures).
    pub(crate) fn session_row_changed(&mut self, id: &str) {
        self.dirty.sessions.insert(id.to_owned());
        self.session_changed(id);
    }

    /// A session changed in a way its row does not store (counters).
    pub(crate) fn session_changed(&mut self, id: &str) {
        self.emit(Effect::SessionChanged {
            session_id: id.to_owned(),
        });
    }

    /// A session closed.
    pub(crate) fn session_closed(&mut self, id: &str) {
        self.session_row_changed(id);
        self.emit(Effect::SessionClosed {
            session_id: id.to_owned(),
        });
    }

    /// A session's statistics (mean task duration) changed; no effect, nobody watches them.
    pub(crate) fn session_stats_changed(&mut self, id: &str) {
        self.dirty.session_stats.insert(id.to_owned());
    }

    /// A session was removed with its `task_count` tasks.
    pub(crate) fn session_removed(&mut self, id: &str, task_count: u64) {
        self.dirty.sessions.insert(id.to_owned());
        self.dirty.session_stats.insert(id.to_owned());
        self.dirty
            .removed_sessions
            .push((id.to_owned(), task_count));
        self.emit(Effect::SessionRemoved {
            session_id: id.to_owned(),
        });
    }

    /// A task was created: its input and status rows are new.
    pub(crate) fn task_created(&mut self, session_id: &str, task_id: u64) {
        let inputs = self.dirty.task_inputs.entry(session_id.to_owned());
        inputs.or_default().insert(task_id);
        self.task_changed(session_id, task_id);
    }

    /// A task's status changed; its session's counters may have too.
    pub(crate) fn task_changed(&mut self, session_id: &str, task_id: u64) {
        let rows = self.dirty.tasks.entry(session_id.to_owned());
        rows.or_default().insert(task_id);
        self.emit(Effect::TaskChanged {
            session_id: session_id.to_owned(),
            task_id,
        });
        self.session_changed(session_id);
    }

    /// An executor was created or changed.
    pub(crate) fn executor_changed(&mut self, id: &str, node: &str) {
        self.dirty.executors.insert(id.to_owned());
        self.emit(Effect::ExecutorChanged {
            executor_id: id.to_owned(),
            node: node.to_owned(),
        });
    }

    /// An executor was removed.
    pub(crate) fn executor_removed(&mut self, id: &str, node: &str) {
        self.dirty.executors.insert(id.to_owned());
        self.emit(Effect::ExecutorRemoved {
            executor_id: id.to_owned(),
            node: node.to_owned(),
        });
    }

    /// A node was written.
    pub(crate) fn node_changed(&mut self, name: &str) {
        self.dirty.nodes.insert(name.to_owned());
        self.emit(Effect::NodeChanged {
            node: name.to_owned(),
        });
    }

    /// An object drop was appended or trimmed; no effect, caches poll the log.
    pub(crate) fn object_drop_changed(&mut self, seq: u64) {
        self.dirty.object_drops.insert(seq);
    }

    /// A request record was written or removed; no effect, only a repeat reads it.
    pub(crate) fn request_changed(&mut self, id: &str) {
        self.dirty.requests.insert(id.to_owned());
    }

    /// The cluster CA was stored; no effect, it is read when a certificate is requested.
    pub(crate) fn cluster_ca_changed(&mut self) {
        self.dirty.cluster_ca = true;
    }
}

/// One apply in progress.
#[derive(Debug)]
pub(crate) struct Tx<'a> {
    /// The state being changed.
    pub(crate) state: &'a mut State,
    /// The replicated configuration.
    pub(crate) config: &'a StateConfig,
    /// The leader's time for this apply (the [`super::Proposal`]'s `now_ms`): every timestamp
    /// the command records.
    pub(crate) now_ms: i64,
    /// Where every change is reported.
    pub(crate) log: ChangeLog<'a>,
}

impl<'a> Tx<'a> {
    /// Starts an apply at `now_ms` on `state`, recording changes into `dirty`.
    pub(crate) fn new(
        state: &'a mut State,
        config: &'a StateConfig,
        dirty: &'a mut Dirty,
        now_ms: i64,
    ) -> Self {
        Tx {
            state,
            config,
            now_ms,
            log: ChangeLog {
                dirty,
                effects: Vec::new(),
                seen: HashSet::new(),
            },
        }
    }

    /// Ends the apply, returning its effects in order.
    pub(crate) fn finish(self) -> Vec<Effect> {
        self.log.effects
    }
}
