//! What this cache does for the other caches: the [`PeerService`] of the node.

use super::CacheNode;
use crate::error::CacheResult;
use crate::key::{KeyPattern, ObjectKey};
use crate::object::{ObjectData, ObjectMeta, RecordMeta, SharedObject, ValueKind};
use crate::peer::proto::{OfferAnswer, OfferItem, StoreAck};
use crate::peer::server::PeerService;
use crate::store::{Installed, PatchOutcome};
use bytes::Bytes;

impl PeerService for CacheNode {
    fn max_payload(&self) -> u64 {
        // A replicated object carries its patches too.
        self.settings.max_object_size.saturating_mul(2)
    }

    fn head(&self, key: &ObjectKey) -> Option<ObjectMeta> {
        self.store.meta(key)
    }

    async fn object(&self, key: &ObjectKey) -> CacheResult<Option<SharedObject>> {
        self.local_object(key).await
    }

    async fn put(
        &self,
        key: ObjectKey,
        kind: ValueKind,
        named: bool,
        value: Bytes,
    ) -> CacheResult<ObjectMeta> {
        self.primary_put(key, kind, named, value).await
    }

    async fn patch(&self, key: ObjectKey, delta: Bytes) -> CacheResult<ObjectMeta> {
        self.primary_patch(key, delta).await
    }

    async fn store(&self, data: ObjectData) -> CacheResult<StoreAck> {
        Ok(match self.store.install(data).await? {
            Installed::Stored => StoreAck::Stored,
            Installed::Unchanged { .. } => StoreAck::Unchanged,
        })
    }

    async fn store_patch(
        &self,
        key: ObjectKey,
        base: RecordMeta,
        patch: RecordMeta,
        bytes: Bytes,
    ) -> CacheResult<StoreAck> {
        Ok(
            match self.store.append_patch(&key, &base, patch, bytes).await? {
                PatchOutcome::Applied(_) => StoreAck::Stored,
                PatchOutcome::NeedObject => StoreAck::NeedObject,
            },
        )
    }

    async fn delete(&self, pattern: KeyPattern, at_ms: i64) -> CacheResult<u64> {
        Ok(self.store.delete(&pattern, at_ms).await?.len() as u64)
    }

    fn list(&self, prefix: &str) -> Vec<ObjectMeta> {
        self.store.list(prefix)
    }

    fn offer(&self, items: &[OfferItem]) -> Vec<OfferAnswer> {
        items
            .iter()
            .map(|item| {
                if self.store.is_deleted(&item.key, item.stored_at_ms) {
                    OfferAnswer::Deleted
                } else if self
                    .store
                    .meta(&item.key)
                    .is_some_and(|m| m.version() >= item.version)
                {
                    OfferAnswer::Have
                } else {
                    OfferAnswer::Want
                }
            })
            .collect()
    }
}
