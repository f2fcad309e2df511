//! The Flame node agent.
//!
//! What: the per-node agent that registers its node with the control plane, pulls executor,
//! binding and task assignments from the Raft leader, and runs application instances as real
//! processes driven through `flame.v1.Instance` over a Unix socket.
//!
//! Why a library first: [`instance`] (the host shim: launch, the three instance calls, stop)
//! is what the executor loop, recovery and the tests share.
//!
//! Caveat: only [`instance`] exists so far; registration, the assignment stream and the
//! executor loop come with the rest of the node-agent issue.

pub mod instance;
