//! When to snapshot, and how much log to keep after one.
//!
//! openraft decides when to build a snapshot and when to purge the log; this policy is the one
//! place Flame sets those knobs, so every member uses the same values and they can be configured
//! in one section.
//!
//! Caveat: openraft purges only logs that every follower it replicates to has received, so a
//! lagging follower can keep the log longer than `keep_after_snapshot`.

use serde::{Deserialize, Serialize};

/// The snapshot and purge policy of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// Entries to keep in the log below the newest snapshot (lets slow followers catch up by log
    /// rather than by snapshot).
    pub keep_after_snapshot: u64,
    /// Largest chunk, in bytes, a snapshot is sent in.
    pub snapshot_chunk_bytes: u64,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            snapshot_every: 50_000,
            keep_after_snapshot: 10_000,
            snapshot_chunk_bytes: 1 << 20,
        }
    }
}

impl LogPolicy {
    /// Writes the policy into an openraft configuration.
    pub fn apply_to(&self, config: &mut openraft::Config) {
        config.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every);
        config.max_in_snapshot_log_to_keep = self.keep_after_snapshot;
        config.snapshot_max_chunk_size = self.snapshot_chunk_bytes;
        // Purge as soon as the policy allows, in batches no larger than what was kept.
        config.purge_batch_size = 1;
    }
}
