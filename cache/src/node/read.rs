//! Reads: a client's get, served from this cache's copy or fetched from a holder.
//!
//! A cache that lacks the object walks the key's ranking (Ready caches first), asks each for
//! the object's meta, and fetches only the records the client's version lacks (nothing, the
//! missing patches, or everything) from the first that has it. A cache that cannot be reached,
//! or whose bytes do not match their hashes, is skipped for the next. When this cache is one of
//! the key's holders and fetched the whole object, it keeps the copy (read repair).

use super::CacheNode;
use crate::error::{CacheError, CacheResult};
use crate::key::ObjectKey;
use crate::object::{ObjectData, ObjectMeta, Selection, SharedObject, ValueKind, select};
use crate::wire::RecordKind;
use bytes::Bytes;

/// What a get sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Served {
    /// Rows of the get schema (none when the client is current).
    Rows {
        /// The object's version now.
        version: u64,
        /// `(version, kind, bytes)` per row.
        rows: Vec<(u64, RecordKind, Bytes)>,
    },
    /// A native Arrow table, as its stored IPC stream.
    Table {
        /// The object's version.
        version: u64,
        /// The IPC stream.
        ipc: Bytes,
    },
}

impl Served {
    /// Bytes of payload sent.
    pub fn len(&self) -> usize {
        match self {
            Served::Rows { rows, .. } => rows.iter().map(|r| r.2.len()).sum(),
            Served::Table { ipc, .. } => ipc.len(),
        }
    }

    /// Whether nothing is sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn served(object: &ObjectData, client_version: u64) -> Served {
    let selection = select(&object.meta, client_version);
    match object.meta.kind {
        ValueKind::Table if selection != Selection::NotModified => Served::Table {
            version: object.meta.version(),
            ipc: object.base.clone(),
        },
        _ => Served::Rows {
            version: object.meta.version(),
            rows: object.rows(selection),
        },
    }
}

/// The record indices (0 = base) a selection needs.
fn needed(meta: &ObjectMeta, selection: Selection) -> Vec<usize> {
    let records = meta.patches.len() + 1;
    match selection {
        Selection::NotModified => Vec::new(),
        Selection::PatchesFrom(from) => (from + 1..records).collect(),
        Selection::Full => (0..records).collect(),
    }
}

impl CacheNode {
    /// A client's get of `key`, whose caller has `client_version` (0 = nothing).
    pub async fn get(&self, key: &ObjectKey, client_version: u64) -> CacheResult<Served> {
        let result = match self.store.get(key).await? {
            Some(object) => {
                self.metrics.hits.inc();
                Ok(served(&object, client_version))
            }
            None => {
                self.metrics.misses.inc();
                self.fetch_remote(key, client_version).await
            }
        };
        if let Ok(served) = &result {
            self.metrics.bytes_out.inc_by(served.len() as u64);
        }
        result
    }

    /// The whole object from another cache (for a primary that must patch it), or `None`
    /// when no reachable cache has it.
    pub(super) async fn fetch_remote_object(
        &self,
        key: &ObjectKey,
    ) -> CacheResult<Option<ObjectData>> {
        match self.fetch_from_holders(key, 0).await {
            Ok((meta, records)) => Ok(Some(assemble(meta, records))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn fetch_remote(&self, key: &ObjectKey, client_version: u64) -> CacheResult<Served> {
        let (meta, records) = self.fetch_from_holders(key, client_version).await?;
        let selection = select(&meta, client_version);
        if selection == Selection::Full {
            let object = assemble(meta, records);
            self.keep_if_holder(&object).await;
            return Ok(served(&object, client_version));
        }
        let rows = needed(&meta, selection)
            .into_iter()
            .zip(records)
            .map(|(index, bytes)| (meta.patches[index - 1].version, RecordKind::Patch, bytes))
            .collect();
        Ok(Served::Rows {
            version: meta.version(),
            rows,
        })
    }

    /// Walks the key's ranking for a cache that has it; returns its meta and the records
    /// `client_version` needs.
    async fn fetch_from_holders(
        &self,
        key: &ObjectKey,
        client_version: u64,
    ) -> CacheResult<(ObjectMeta, Vec<Bytes>)> {
        let directory = self.directory();
        let Some(peers) = self.peers.get() else {
            return Err(CacheError::NotFound(key.to_string()));
        };
        let mut failures = Vec::new();
        let mut candidates: Vec<_> = directory
            .ranked(key)
            .into_iter()
            .filter(|m| !directory.is_me(m))
            .collect();
        // Caches that failed a moment ago are asked last, so a dead holder costs one timeout.
        candidates.sort_by_key(|m| peers.is_down(&m.peer_addr));
        for member in candidates {
            let meta = match peers.head(&member.peer_addr, key).await {
                Ok(Some(meta)) => meta,
                Ok(None) => continue,
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    failures.push(format!("{}: {e}", member.node));
                    continue;
                }
            };
            let indices = needed(&meta, select(&meta, client_version));
            match peers.fetch(&member.peer_addr, &meta, &indices).await {
                Ok(records) => {
                    self.metrics.peer_fetches.inc_by(records.len() as u64);
                    self.metrics
                        .peer_fetch_bytes
                        .inc_by(records.iter().map(|r| r.len() as u64).sum());
                    return Ok((meta, records));
                }
                // The holder deleted it between the head and the fetch (a get racing a delete):
                // it is simply not there any more, not unavailable.
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    tracing::warn!(node = %member.node, %key, error = %e, "fetching from a holder failed; trying the next");
                    failures.push(format!("{}: {e}", member.node));
                }
            }
        }
        if failures.is_empty() {
            return Err(CacheError::NotFound(key.to_string()));
        }
        Err(CacheError::Unavailable(format!(
            "object {key} is on no cache that answered; {}",
            failures.join("; ")
        )))
    }

    /// Keeps a fetched object when this cache is one of its holders.
    async fn keep_if_holder(&self, object: &ObjectData) {
        let directory = self.directory();
        let holders = directory.holders(&object.meta.key, self.settings.replicas);
        if holders.iter().any(|m| directory.is_me(m))
            && let Err(e) = self.store.install(object.clone()).await
        {
            tracing::debug!(key = %object.meta.key, error = %e, "could not keep a fetched copy");
        }
    }

    /// This cache's copy of `key` with its bytes (for peers' reads).
    pub(super) async fn local_object(&self, key: &ObjectKey) -> CacheResult<Option<SharedObject>> {
        self.store.get(key).await
    }
}

/// An object from its meta and all of its records.
fn assemble(meta: ObjectMeta, mut records: Vec<Bytes>) -> ObjectData {
    let base = if records.is_empty() {
        Bytes::new()
    } else {
        records.remove(0)
    };
    ObjectData {
        meta,
        base,
        patches: records,
    }
}
