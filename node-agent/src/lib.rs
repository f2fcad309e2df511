//! The Flame node agent.
//!
//! What: the per-node agent that registers its node with the control plane, pulls executor,
//! binding and task assignments from the Raft leader over `flame.agent.v1`, and runs
//! application instances as real processes driven through `flame.v1.Instance` over a Unix
//! socket.
//!
//! - [`config`]: flags, YAML file and `FLAME_*` variables, with detected capacity.
//! - [`agent`]: the runtime: leader discovery, the assignment stream, executor workers.
//! - [`cache`]: the node's object cache, which the agent runs unless told not to.
//! - [`instance`]: the host shim (launch, the three instance calls, stop).
//! - [`reaper`]: the agent as child subreaper, reaping orphaned grandchildren.
//! - [`task_timeout`]: the optional task timeout (application label and agent default).
//!
//! Caveat: the protocol contract this crate implements (agent side) is
//! `docs/agent-protocol.md`.

pub mod agent;
pub mod cache;
pub mod config;
pub mod instance;
pub mod reaper;
pub mod relay;
pub mod task_timeout;
