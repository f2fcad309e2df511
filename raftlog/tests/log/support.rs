//! Helpers shared by the log tests.

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use raftlog::kv::{KvConfig, scripted_put};

/// Entries `range` of term 1, each the scripted put of its index.
pub fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry<KvConfig>> {
    range
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
            payload: EntryPayload::Normal(scripted_put(i)),
        })
        .collect()
}
