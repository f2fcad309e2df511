//! Checkers that judge the client histories a chaos run recorded, once the run is over: they see
//! only what clients invoked, when, and what they were answered, never the cluster's insides.

pub mod final_state;
pub mod linearizability;
pub mod models;
