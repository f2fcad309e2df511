//! Repair: every held object reaches its current holders, and copies this cache no longer
//! needs to hold are dropped.
//!
//! One pass: for each held object, compute its holders from the current directory; offer the
//! object (key, version, time stored) to each holder other than this cache, in batches. A
//! holder answers per object: it has it (this version or newer), it wants it (then this cache
//! sends the whole object), or a tombstone deleted it (then this cache deletes its copy too,
//! which is how a cache that missed a delete while it was down catches up). When this cache is
//! not among an object's holders and every holder confirmed it has the object, the local copy
//! is dropped.
//!
//! Why offers: they cost a few dozen bytes per object, so a pass over a settled cluster moves
//! no object bytes at all.
//!
//! Caveat: each holder of an object offers it, so a new holder may be sent the same object by
//! two caches; the second copy is answered `Unchanged`.

use super::CacheNode;
use crate::key::KeyPattern;
use crate::object::ObjectMeta;
use crate::peer::proto::{OfferAnswer, OfferItem};
use std::collections::{BTreeMap, HashMap};
use tracing::{debug, info, warn};

/// Objects offered per request.
const OFFER_BATCH: usize = 1000;

/// What one repair pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    /// Objects sent to a holder that lacked them.
    pub sent: u64,
    /// Local copies deleted because a holder had a tombstone for them.
    pub deleted: u64,
    /// Local copies dropped because this cache is no longer a holder.
    pub dropped: u64,
}

impl CacheNode {
    /// Runs one repair pass. See the module docs.
    pub async fn repair(&self) -> RepairReport {
        let mut report = RepairReport::default();
        let directory = self.directory();
        let Some(peers) = self.peers.get() else {
            return report;
        };
        let metas = self.store.list("");
        let mut offers: BTreeMap<String, Vec<&ObjectMeta>> = BTreeMap::new();
        let mut holders_of: HashMap<&crate::key::ObjectKey, (bool, usize)> = HashMap::new();
        for meta in &metas {
            let holders = directory.holders(&meta.key, self.settings.replicas);
            let mine = holders.iter().any(|m| directory.is_me(m));
            let others: Vec<_> = holders.iter().filter(|m| !directory.is_me(m)).collect();
            holders_of.insert(&meta.key, (mine, others.len()));
            for member in others {
                offers
                    .entry(member.peer_addr.clone())
                    .or_default()
                    .push(meta);
            }
        }
        let mut confirmed: HashMap<&crate::key::ObjectKey, usize> = HashMap::new();
        for (addr, metas) in offers {
            for batch in metas.chunks(OFFER_BATCH) {
                let items = batch
                    .iter()
                    .map(|m| OfferItem {
                        key: m.key.clone(),
                        version: m.version(),
                        stored_at_ms: m.stored_at_ms,
                    })
                    .collect();
                let answers = match peers.offer(&addr, items).await {
                    Ok(answers) => answers,
                    Err(e) => {
                        debug!(peer = %addr, error = %e, "repair could not reach a holder");
                        break;
                    }
                };
                for (meta, answer) in batch.iter().zip(answers) {
                    match answer {
                        OfferAnswer::Have => *confirmed.entry(&meta.key).or_default() += 1,
                        OfferAnswer::Want => {
                            report.sent += u64::from(self.send_copy(&addr, meta).await)
                        }
                        OfferAnswer::Deleted => {
                            report.deleted += u64::from(self.delete_copy(meta).await)
                        }
                    }
                }
            }
        }
        for meta in &metas {
            let (mine, others) = holders_of.get(&meta.key).copied().unwrap_or((true, 0));
            if !mine
                && others > 0
                && confirmed.get(&meta.key) == Some(&others)
                && self.store.drop_copy(&meta.key, meta.version()).await
            {
                report.dropped += 1;
            }
        }
        if report != RepairReport::default() {
            info!(
                sent = report.sent,
                deleted = report.deleted,
                dropped = report.dropped,
                "repair pass moved objects"
            );
        }
        report
    }

    async fn send_copy(&self, addr: &str, meta: &ObjectMeta) -> bool {
        let Some(peers) = self.peers.get() else {
            return false;
        };
        let object = match self.store.get(&meta.key).await {
            Ok(Some(object)) => object,
            _ => return false,
        };
        match peers.store(addr, &object).await {
            Ok(_) => {
                self.metrics.replica_writes.inc();
                true
            }
            Err(e) => {
                warn!(peer = %addr, key = %meta.key, error = %e, "repair could not send a copy");
                false
            }
        }
    }

    async fn delete_copy(&self, meta: &ObjectMeta) -> bool {
        let pattern = KeyPattern::Object(meta.key.clone());
        match self.store.delete(&pattern, meta.stored_at_ms).await {
            Ok(keys) => !keys.is_empty(),
            Err(e) => {
                warn!(key = %meta.key, error = %e, "repair could not delete a copy a holder says is deleted");
                false
            }
        }
    }
}
