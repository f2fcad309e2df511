//! The request limits and defaults every service of a member applies.
//!
//! What: [`Limits`] (payload size, default resources, the dispatch policy of agent reports, open
//! watches)
//! and the two size rules derived from it, [`decoding_limit`] and [`batch_payload_limit`].
//!
//! Why here: the client API (`frontend`) and the agents' service (`agents`) both bound their
//! requests by these; they belong to the member's core, which both services depend on, rather
//! than to one of the services.

use crate::state::DispatchPolicy;
use flame_proto::model::ResourceRequirement;

/// Room for everything in a request besides its one large payload (ids, spec fields).
const ENVELOPE_SLACK: usize = 1 << 20;

/// The default of `cluster.limits.max_watches`: open WatchTask streams per member.
pub const DEFAULT_MAX_WATCHES: usize = 65_536;

/// The total input of one CreateTasks call may be this many times the payload limit.
pub const BATCH_PAYLOAD_FACTOR: usize = 4;

/// Request limits and defaults every service of a member applies.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest task input, task output or common data.
    pub max_payload_bytes: usize,
    /// The resource request of sessions that do not give one.
    pub default_resreq: ResourceRequirement,
    /// How deep executor queues may be, put in the CompleteTasks commands of agent reports.
    pub dispatch: DispatchPolicy,
    /// Most WatchTask streams open at once on this member.
    pub max_watches: usize,
}

/// The decoding limit of a server whose requests carry payloads of up to `payload` bytes:
/// the payload plus 1 MiB, so a payload slightly over the limit still decodes and gets the
/// `TooLarge` error that names the limit.
pub fn decoding_limit(payload: usize) -> usize {
    payload.saturating_add(ENVELOPE_SLACK)
}

/// The largest total input of one CreateTasks call (and of one agent report's outputs).
pub fn batch_payload_limit(limits: &Limits) -> usize {
    limits
        .max_payload_bytes
        .saturating_mul(BATCH_PAYLOAD_FACTOR)
}
