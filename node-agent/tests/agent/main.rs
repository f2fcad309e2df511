//! The node agent's agent tests (against a control-plane cluster), in one test binary: one module per former test file, so the
//! area links once.

#[path = "../common/mod.rs"]
mod common;

mod agent_bind_failure;
mod agent_cache;
mod agent_failover;
mod agent_lifecycle;
mod agent_task_timeout;
mod agent_warm_switch;
mod flamepy_service;
