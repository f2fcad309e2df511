//! The rules layer: what one command does to more than one entity.
//!
//! What: the entity modules (`application`, `session`, `task`, `executor`, `node`, with
//! `cache` for the object-drop log) each change their own objects through their transition
//! function and import none of the others. A command whose effect crosses entities is carried
//! out here, one file per command family, by calling the entities' functions in order: checks
//! first, so a refused command changes nothing, then the changes.
//!
//! The cross-entity rules, all in one table:
//!
//! | Command | Entity change | Knock-on changes (in order) | File |
//! |---|---|---|---|
//! | UnregisterApplication | application removed | every session of it removed (below); object drop `<app>/*` | [`applications`] |
//! | CloseSession (Open → Closed) | session Closed | its Pending tasks Cancelled; its Binding/Bound executors Unbinding; object drop `<app>/<id>` | [`sessions`] |
//! | DeleteSession, PurgeSessions, session removal | session removed with its tasks | its Binding/Bound executors Unbinding | [`sessions`] |
//! | CreateTasks | tasks created (request ids resolved first) | the session must accept tasks (checked first, only if one is new); with a dispatch policy, the new tasks are dealt to the session's executors with room | [`tasks`] |
//! | AssignTasks, dispatch, refill | task Pending → Running | the executor (checked first: Bound, of the task's session) holds the task | [`tasks`] |
//! | CompleteTasks | task Running → Succeed/Failed | the executor (checked first: holds the task) forgets it; the session learns the duration; with a refill policy, each reporting executor is topped up | [`tasks`] |
//! | RequeueTasks | task Running → Pending (or Failed at the retry limit) | the executor holding it forgets it | [`tasks`] |
//! | BindExecutor | executor → Binding | the session is checked first (Open, not paused) | [`executors`] |
//! | BindCompleted | executor → Bound / Unbinding | the session's bind-failure count and events (1001, 1002) | [`executors`] |
//! | UnbindCompleted | executor → Idle | tasks it still held: the head requeued (charged), the rest given back | [`executors`] |
//! | ExecutorReleased | executor deleted | the same requeue of the tasks it held | [`executors`] |
//! | MarkNodeNotReady (node expires now) | node NotReady | each of its executors deleted, with the same requeue | [`executors`] |
//!
//! Why a separate layer: applying one command used to move back and forth between the entity
//! files, so these rules were written down nowhere in one place. Here a newcomer who wants to
//! change what happens when a session closes finds one table and one function.
//!
//! Caveat: functions here may only call entity modules and each other; they read the state
//! through the entities' queries and never bypass an entity's transition function.

pub(crate) mod applications;
pub(crate) mod executors;
pub(crate) mod sessions;
pub(crate) mod tasks;
