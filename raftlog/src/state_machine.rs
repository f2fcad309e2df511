//! The state-machine store: applied data, last applied log id and membership in `sm.redb`.
//!
//! [`StateMachineStore`] implements openraft's [`RaftStateMachine`]. Each `apply` call is one
//! redb write transaction holding the application's changes for every entry of the batch plus the
//! last applied log id and membership, so after a crash the applied state is exactly the replay
//! of the log up to the recorded id, never a mix.
//!
//! **Durability.** Apply transactions are committed without fsync (`Durability::None`): every
//! applied entry is already durable in the log, so a crash merely rolls the state machine back to
//! an older consistent point, and openraft re-applies the entries after it from the log at start.
//! That keeps one fsync off every write's path. What makes it safe is that the log is never
//! purged past what the state machine holds durably: building a snapshot (the only thing that
//! lets openraft purge) first makes every applied transaction durable, and installing a
//! snapshot is durable. Clean shutdown is durable too (redb commits on close).
//!
//! **Install order.** A received snapshot is checked and written into the tables, then
//! published as `current.snap`, then committed; `open` installs a published snapshot that is
//! ahead of the tables, which only a crash between the last two steps leaves behind.
//!
//! Snapshots are delegated to [`crate::snapshot`]: building runs on a blocking thread from a
//! consistent read transaction while applies continue; receiving writes openraft's chunks into a
//! `.part` file; installing replaces the tables in one transaction and then asks the app to
//! [`App::restore`] its memory.
//!
//! Caveat: the store is owned by openraft once the Raft instance starts; the application shares
//! its state with readers itself (for example by publishing immutable snapshots from
//! [`App::committed`]). [`StateMachineStore::digest_handle`], taken before, keeps hashing the
//! applied state ([`crate::digest`]).

use crate::app::App;
use crate::codec::encode;
use crate::digest::DigestHandle;
use crate::error::{Error, Result};
use crate::meta::{self, META};
use crate::snapshot::{self, KEY_APPLIED, KEY_MEMBERSHIP, SnapshotDir};
use crate::{FlameRaft, Storage};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use redb::{Database, Durability, ReadableDatabase};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

/// File name of the state-machine database inside a member's data directory.
pub const SM_FILE: &str = "sm.redb";

/// openraft state machine backed by redb and an [`App`]; see the module docs.
pub struct StateMachineStore<C: FlameRaft, A: App<C>> {
    db: Arc<Database>,
    storage: Storage,
    snapshots: Arc<SnapshotDir>,
    app: A,
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, C::Node>,
    /// Files handed out by `begin_receiving_snapshot`, by (device, inode).
    incoming: HashMap<(u64, u64), PathBuf>,
}

impl<C: FlameRaft, A: App<C>> StateMachineStore<C, A> {
    /// Opens (or creates) the state machine of `storage` and restores `app` from it.
    pub fn open(storage: &Storage, mut app: A) -> Result<Self> {
        std::fs::create_dir_all(&storage.dir).map_err(|e| Error::io(&storage.dir, e))?;
        let path = storage.dir.join(SM_FILE);
        let db = meta::open_db(&path, &storage.cluster_id, app.tables())?;
        let snapshots = SnapshotDir::open(&storage.dir, &storage.cluster_id)?;
        finish_install::<C>(&db, &snapshots, &storage.cluster_id, app.tables())?;
        let (applied, membership) = {
            let txn = db.begin_read()?;
            let meta_table = txn.open_table(META)?;
            let applied: Option<LogId<u64>> = meta::get(&meta_table, KEY_APPLIED)?.flatten();
            let membership = meta::get(&meta_table, KEY_MEMBERSHIP)?.unwrap_or_default();
            app.restore(&txn)?;
            (applied, membership)
        };
        Ok(StateMachineStore {
            db: Arc::new(db),
            storage: storage.clone(),
            snapshots: Arc::new(snapshots),
            app,
            applied,
            membership,
            incoming: HashMap::new(),
        })
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The last applied log id.
    pub fn applied(&self) -> Option<LogId<u64>> {
        self.applied
    }

    /// A handle that computes this state machine's [`StateDigest`](crate::StateDigest); it keeps
    /// working after the store is handed to openraft.
    pub fn digest_handle(&self) -> DigestHandle {
        DigestHandle::new(self.db.clone(), self.app.tables())
    }

    /// A read transaction on the state-machine database, for inspection by tools and tests.
    pub fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    fn apply_batch(&mut self, entries: Vec<Entry<C>>) -> Result<Vec<C::R>> {
        let mut txn = self.db.begin_write()?;
        // Not fsynced: the log is durable, so a crash only rolls the state machine back to an
        // older consistent point that openraft re-applies from (see the module docs).
        txn.set_durability(Durability::None)?;
        let mut responses = Vec::with_capacity(entries.len());
        let mut applied = self.applied;
        let mut membership = self.membership.clone();
        for entry in entries {
            applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(self.app.noop_response()),
                EntryPayload::Normal(data) => {
                    responses.push(self.app.apply(&txn, &entry.log_id, data)?);
                }
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(self.app.noop_response());
                }
            }
        }
        {
            let mut meta_table = txn.open_table(META)?;
            meta_table.insert(KEY_APPLIED, encode(&applied)?.as_slice())?;
            meta_table.insert(KEY_MEMBERSHIP, encode(&membership)?.as_slice())?;
        }
        txn.commit()?;
        self.applied = applied;
        self.membership = membership;
        self.app.committed();
        Ok(responses)
    }

    async fn open_current(&self) -> Result<Option<Snapshot<C>>> {
        let Some((path, meta)) = self.snapshots.current::<C>()? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }

    /// Takes the received file as our own `.part` file, copying it if it is not one of ours.
    async fn claim_received(&mut self, mut file: tokio::fs::File) -> Result<PathBuf> {
        file.flush()
            .await
            .map_err(|e| Error::io("received snapshot", e))?;
        let mut file = file.into_std().await;
        let md = file
            .metadata()
            .map_err(|e| Error::io("received snapshot", e))?;
        if let Some(path) = self.incoming.remove(&(md.dev(), md.ino())) {
            return Ok(path);
        }
        let path = self.snapshots.scratch_path("part");
        let target = path.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            use std::io::Seek;
            file.rewind().map_err(|e| Error::io(&target, e))?;
            let mut out = std::fs::File::create(&target).map_err(|e| Error::io(&target, e))?;
            std::io::copy(&mut file, &mut out).map_err(|e| Error::io(&target, e))?;
            Ok(())
        })
        .await
        .map_err(|e| Error::App(format!("snapshot copy task failed: {e}")))??;
        Ok(path)
    }

    async fn install(
        &mut self,
        meta: &SnapshotMeta<u64, C::Node>,
        file: tokio::fs::File,
    ) -> Result<()> {
        let path = self.claim_received(file).await?;
        let db = self.db.clone();
        let snapshots = self.snapshots.clone();
        let cluster_id = self.storage.cluster_id.clone();
        let tables = self.app.tables();
        let expected = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            snapshot::install::<C>(&txn, &path, &cluster_id, tables, &expected)?;
            // Published before the tables commit: a crash in between leaves the snapshot ahead
            // of the tables, which `open` finishes installing. The other order would leave the
            // tables ahead of the only snapshot, behind the log's purge point, so a lagging
            // follower could never be caught up from this member (review D2).
            snapshots.publish::<C>(&path, &expected, true)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| Error::App(format!("snapshot install task failed: {e}")))??;
        for (_, stale) in self.incoming.drain() {
            let _ = std::fs::remove_file(stale);
        }
        let txn = self.db.begin_read()?;
        self.app.restore(&txn)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        tracing::info!(last_log_id = ?meta.last_log_id, id = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }
}

impl<C: FlameRaft, A: App<C>> RaftStateMachine<C> for StateMachineStore<C, A> {
    type SnapshotBuilder = SnapshotBuilder<C>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, C::Node>), StorageError<u64>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.apply_batch(entries).map_err(|e| {
            tracing::error!(error = %e, "apply failed; the member stops rather than diverge");
            e.write_sm()
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            tables: self.app.tables(),
            _types: std::marker::PhantomData,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<u64>> {
        let path = self.snapshots.scratch_path("part");
        let open = async {
            let file = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .await?;
            let md = file.metadata().await?;
            Ok::<_, std::io::Error>((file, md))
        };
        let (file, md) = open.await.map_err(|e| Error::io(&path, e).snapshot())?;
        self.incoming.insert((md.dev(), md.ino()), path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, C::Node>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<u64>> {
        self.install(meta, *snapshot).await.map_err(|e| {
            tracing::error!(error = %e, "snapshot install failed");
            e.snapshot()
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        self.open_current().await.map_err(|e| e.snapshot())
    }
}

/// Finishes an install that a crash cut between publishing the snapshot and committing its
/// tables (see `install`): a published snapshot ahead of the applied state is installed again,
/// durably. Nothing else leaves `current.snap` ahead: a build snapshots applied state.
fn finish_install<C: FlameRaft>(
    db: &Database,
    snapshots: &SnapshotDir,
    cluster_id: &str,
    tables: &[&str],
) -> Result<()> {
    let Some((path, meta)) = snapshots.current::<C>()? else {
        return Ok(());
    };
    let applied: Option<LogId<u64>> = {
        let txn = db.begin_read()?;
        let meta_table = txn.open_table(META)?;
        meta::get(&meta_table, KEY_APPLIED)?.flatten()
    };
    if meta.last_log_id <= applied {
        return Ok(());
    }
    tracing::warn!(
        snapshot = ?meta.last_log_id,
        ?applied,
        "installing the snapshot a crash published but did not commit"
    );
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    snapshot::install::<C>(&txn, &path, cluster_id, tables, &meta)?;
    txn.commit()?;
    Ok(())
}

/// Builds snapshots off the apply path, from a consistent read transaction.
pub struct SnapshotBuilder<C: FlameRaft> {
    db: Arc<Database>,
    snapshots: Arc<SnapshotDir>,
    tables: &'static [&'static str],
    _types: std::marker::PhantomData<C>,
}

impl<C: FlameRaft> SnapshotBuilder<C> {
    async fn build(&mut self) -> Result<Snapshot<C>> {
        let db = self.db.clone();
        let snapshots = self.snapshots.clone();
        let tables = self.tables;
        let meta = tokio::task::spawn_blocking(move || -> Result<_> {
            let (path, meta) = snapshot::build::<C>(&db, &snapshots, tables, snapshot_id)?;
            snapshots.publish::<C>(&path, &meta, false)?;
            Ok(meta)
        })
        .await
        .map_err(|e| Error::App(format!("snapshot build task failed: {e}")))??;
        let (path, current) = self
            .snapshots
            .current::<C>()?
            .ok_or_else(|| Error::App("the snapshot vanished after it was built".into()))?;
        if current.last_log_id < meta.last_log_id {
            return Err(Error::App(
                "a newer snapshot was replaced by an older one".into(),
            ));
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        tracing::info!(last_log_id = ?current.last_log_id, id = %current.snapshot_id, "built snapshot");
        Ok(Snapshot {
            meta: current,
            snapshot: Box::new(file),
        })
    }
}

/// A unique snapshot id: the log id it covers plus the build time.
fn snapshot_id(last: Option<LogId<u64>>) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    match last {
        Some(id) => format!(
            "{}-{}-{}-{nanos}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => format!("empty-{nanos}"),
    }
}

impl<C: FlameRaft> RaftSnapshotBuilder<C> for SnapshotBuilder<C> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<u64>> {
        self.build().await.map_err(|e| e.snapshot())
    }
}
