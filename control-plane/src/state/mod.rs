//! The replicated state machine (in progress).
