//! The Raft log, vote and committed pointer, durable in redb.
//!
//! [`LogStore`] implements openraft's [`RaftLogStorage`]. Writes go to one background writer
//! thread, the single owner of every write transaction on the log database. It drains whatever
//! has queued up while the previous fsync ran and writes it all in **one** transaction with
//! `Durability::Immediate`: appends handed over together, and appends from consecutive calls,
//! share an fsync (group commit). Only after that commit returns does it call openraft's flush
//! callback.
//!
//! openraft requires appended entries to be readable as soon as `append` returns, before they are
//! durable. Entries waiting for the writer sit in an in-memory tail (encoded once, shared with the
//! writer); readers merge the tail over the database. The tail also holds the logical log state
//! (last log id, last purged id), so a truncation or purge is visible at once.
//!
//! Caveats:
//! - An I/O failure in the writer is reported to every pending and later operation; openraft
//!   then stops the member. Nothing is retried, because a half-written batch must not be
//!   acknowledged.
//! - Votes, truncations and purges wait for their own commit; only appends return early.

use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::meta::{self, META};
use crate::{FlameRaft, Storage};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;

/// The log entries, keyed by index.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// The most operations the writer puts into one transaction.
const MAX_BATCH_OPS: usize = 4096;

/// File name of the log database inside a member's data directory.
pub const LOG_FILE: &str = "log.redb";

type Bytes = Arc<[u8]>;

/// What readers and the writer share: the database and the not-yet-durable tail.
struct Shared {
    db: Database,
    path: PathBuf,
    tail: RwLock<Tail>,
}

/// The logical end of the log, plus appended entries the writer has not made durable yet.
#[derive(Default)]
struct Tail {
    entries: BTreeMap<u64, Bytes>,
    last_log_id: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
}

/// One operation for the writer thread, executed in submission order.
enum WriteOp<C: FlameRaft> {
    Append {
        entries: Vec<(u64, Bytes)>,
        callback: LogFlushed<C>,
    },
    Vote {
        vote: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
    },
    Committed {
        committed: Vec<u8>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<()>>,
    },
    Purge {
        upto: LogId<u64>,
        done: oneshot::Sender<Result<()>>,
    },
}

/// openraft log storage backed by redb; see the module docs.
///
/// Dropping it stops the writer thread after it has finished what was queued; the database file
/// closes once every [`LogReader`] is dropped too.
pub struct LogStore<C: FlameRaft> {
    shared: Arc<Shared>,
    writer: Option<mpsc::Sender<WriteOp<C>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<C: FlameRaft> Drop for LogStore<C> {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A cheap, cloneable reader of the log for openraft's replication tasks.
pub struct LogReader<C: FlameRaft> {
    shared: Arc<Shared>,
    _types: PhantomData<C>,
}

impl<C: FlameRaft> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            shared: self.shared.clone(),
            _types: PhantomData,
        }
    }
}

impl<C: FlameRaft> LogStore<C> {
    /// Opens (or creates) the log database in `dir` for cluster `cluster_id`.
    pub fn open(dir: &Path, cluster_id: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOG_FILE);
        let db = meta::open_db(&path, cluster_id, &[])?;
        let tail = load_tail::<C>(&db, &path)?;
        let shared = Arc::new(Shared {
            db,
            path,
            tail: RwLock::new(tail),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("raftlog-writer".into())
            .spawn(move || run_writer::<C>(&writer_shared, &rx))
            .map_err(|e| Error::io(&shared.path, e))?;
        Ok(LogStore {
            shared,
            writer: Some(tx),
            thread: Some(thread),
        })
    }

    /// Opens the log store of a [`Storage`] directory.
    pub fn open_in(storage: &Storage) -> Result<Self> {
        Self::open(&storage.dir, &storage.cluster_id)
    }

    fn reader(&self) -> LogReader<C> {
        LogReader {
            shared: self.shared.clone(),
            _types: PhantomData,
        }
    }

    fn submit(&self, op: WriteOp<C>) -> Result<()> {
        self.writer
            .as_ref()
            .and_then(|w| w.send(op).ok())
            .ok_or_else(|| Error::WriterStopped("the writer thread exited".into()))
    }

    async fn submit_and_wait(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<()>>) -> WriteOp<C>,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.submit(make(tx))?;
        rx.await
            .map_err(|_| Error::WriterStopped("the writer dropped the request".into()))?
    }
}

/// Reads the durable end of the log when the store opens.
fn load_tail<C: FlameRaft>(db: &Database, path: &Path) -> Result<Tail> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let (last_purged, last_entry) = {
        let meta = txn.open_table(META)?;
        let log = txn.open_table(LOG)?;
        let last_purged: Option<LogId<u64>> = meta::get(&meta, KEY_PURGED)?;
        let last_entry = match log.last()? {
            Some((_, v)) => Some(*decode::<Entry<C>>(v.value())?.get_log_id()),
            None => None,
        };
        (last_purged, last_entry)
    };
    txn.commit()?;
    if let (Some(purged), Some(last)) = (last_purged, last_entry)
        && last.index < purged.index
    {
        return Err(Error::Corrupt {
            path: path.into(),
            detail: format!("last entry {last} is below the purge point {purged}"),
        });
    }
    Ok(Tail {
        entries: BTreeMap::new(),
        last_log_id: last_entry.or(last_purged),
        last_purged,
    })
}

impl<C: FlameRaft> LogReader<C> {
    /// Entries in `range`, merged from the database and the in-memory tail.
    fn read_range(&self, start: u64, end_inclusive: u64) -> Result<Vec<Entry<C>>> {
        let tail = self.shared.tail.read().map_err(poisoned)?;
        let low = tail.last_purged.map_or(0, |p| p.index + 1).max(start);
        let high = tail.last_log_id.map_or(0, |l| l.index).min(end_inclusive);
        if tail.last_log_id.is_none() || low > high {
            return Ok(Vec::new());
        }
        let mut merged: BTreeMap<u64, Entry<C>> = BTreeMap::new();
        let first_in_tail = tail.entries.range(low..=high).next().map(|(i, _)| *i);
        let db_high = first_in_tail.map_or(high, |i| i.saturating_sub(1).min(high));
        if low <= db_high && first_in_tail != Some(low) {
            let txn = self.shared.db.begin_read()?;
            let log = txn.open_table(LOG)?;
            for row in log.range(low..=db_high)? {
                let (k, v) = row?;
                merged.insert(k.value(), decode(v.value())?);
            }
        }
        for (index, bytes) in tail.entries.range(low..=high) {
            merged.insert(*index, decode(bytes)?);
        }
        Ok(merged.into_values().collect())
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::WriterStopped("a log lock was poisoned by a panic".into())
}

fn bounds(range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => *e,
        Bound::Excluded(e) => e.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    Some((start, end))
}

impl<C: FlameRaft> RaftLogReader<C> for LogReader<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let Some((start, end)) = bounds(&range) else {
            return Ok(Vec::new());
        };
        self.read_range(start, end).map_err(|e| e.read_logs())
    }
}

impl<C: FlameRaft> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        self.reader().try_get_log_entries(range).await
    }
}

impl<C: FlameRaft> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let tail = self
            .shared
            .tail
            .read()
            .map_err(|e| poisoned(e).read_logs())?;
        Ok(LogState {
            last_purged_log_id: tail.last_purged,
            last_log_id: tail.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let vote = encode(vote).map_err(|e| e.write_vote())?;
        self.submit_and_wait(|done| WriteOp::Vote { vote, done })
            .await
            .map_err(|e| e.write_vote())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        read_meta(&self.shared.db, KEY_VOTE).map_err(|e| e.read_vote())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        let committed = encode(&committed).map_err(|e| e.write_logs())?;
        self.submit(WriteOp::Committed { committed })
            .map_err(|e| e.write_logs())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let stored: Option<Option<LogId<u64>>> =
            read_meta(&self.shared.db, KEY_COMMITTED).map_err(|e| e.read_logs())?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        let mut last = None;
        for entry in entries {
            let bytes: Bytes = encode(&entry).map_err(|e| e.write_logs())?.into();
            last = Some(*entry.get_log_id());
            encoded.push((entry.get_log_id().index, bytes));
        }
        {
            let mut tail = self
                .shared
                .tail
                .write()
                .map_err(|e| poisoned(e).write_logs())?;
            for (index, bytes) in &encoded {
                tail.entries.insert(*index, bytes.clone());
            }
            if last.is_some() {
                tail.last_log_id = last;
            }
        }
        self.submit(WriteOp::Append {
            entries: encoded,
            callback,
        })
        .map_err(|e| e.write_logs())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        {
            let mut tail = self
                .shared
                .tail
                .write()
                .map_err(|e| poisoned(e).write_logs())?;
            tail.entries.split_off(&log_id.index);
            if tail.last_log_id.is_some_and(|l| l.index >= log_id.index) {
                tail.last_log_id = self
                    .previous_log_id(&tail, log_id.index)
                    .map_err(|e| e.read_logs())?;
            }
        }
        let from = log_id.index;
        self.submit_and_wait(|done| WriteOp::Truncate { from, done })
            .await
            .map_err(|e| e.write_logs())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        {
            let mut tail = self
                .shared
                .tail
                .write()
                .map_err(|e| poisoned(e).write_logs())?;
            tail.entries = tail.entries.split_off(&(log_id.index + 1));
            tail.last_purged = Some(log_id);
            if tail.last_log_id.is_none_or(|l| l.index < log_id.index) {
                tail.last_log_id = Some(log_id);
            }
        }
        self.submit_and_wait(|done| WriteOp::Purge { upto: log_id, done })
            .await
            .map_err(|e| e.write_logs())
    }
}

impl<C: FlameRaft> LogStore<C> {
    /// The log id just before `index`, after a truncation at `index`.
    fn previous_log_id(&self, tail: &Tail, index: u64) -> Result<Option<LogId<u64>>> {
        if index == 0 || tail.last_purged.is_some_and(|p| p.index >= index - 1) {
            return Ok(tail.last_purged);
        }
        if let Some(bytes) = tail.entries.get(&(index - 1)) {
            let entry: Entry<C> = decode(bytes)?;
            return Ok(Some(*entry.get_log_id()));
        }
        let txn = self.shared.db.begin_read()?;
        let log = txn.open_table(LOG)?;
        match log.get(index - 1)? {
            Some(v) => Ok(Some(*decode::<Entry<C>>(v.value())?.get_log_id())),
            None => Ok(tail.last_purged),
        }
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    meta::get(&meta, key)
}

/// The writer thread: group-commits queued operations until the store is dropped.
fn run_writer<C: FlameRaft>(shared: &Shared, rx: &mpsc::Receiver<WriteOp<C>>) {
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = match &failed {
            Some(reason) => Err(Error::WriterStopped(reason.clone())),
            None => write_batch(shared, &batch),
        };
        if let Err(e) = &result {
            tracing::error!(path = %shared.path.display(), error = %e, "log write failed");
            failed.get_or_insert_with(|| e.to_string());
        }
        complete(shared, batch, result);
    }
}

fn write_batch<C: FlameRaft>(shared: &Shared, batch: &[WriteOp<C>]) -> Result<()> {
    let mut txn = shared.db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        for op in batch {
            match op {
                WriteOp::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        log.insert(*index, &**bytes)?;
                    }
                }
                WriteOp::Vote { vote, .. } => {
                    meta.insert(KEY_VOTE, vote.as_slice())?;
                }
                WriteOp::Committed { committed } => {
                    meta.insert(KEY_COMMITTED, committed.as_slice())?;
                }
                WriteOp::Truncate { from, .. } => {
                    log.retain_in(*from.., |_, _| false)?;
                }
                WriteOp::Purge { upto, .. } => {
                    log.retain_in(..=upto.index, |_, _| false)?;
                    meta.insert(KEY_PURGED, encode(upto)?.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// Acknowledges a written batch: drops durable entries from the tail, then wakes everyone.
fn complete<C: FlameRaft>(shared: &Shared, batch: Vec<WriteOp<C>>, result: Result<()>) {
    if result.is_ok()
        && let Ok(mut tail) = shared.tail.write()
    {
        for op in &batch {
            if let WriteOp::Append { entries, .. } = op {
                for (index, bytes) in entries {
                    if tail
                        .entries
                        .get(index)
                        .is_some_and(|b| Arc::ptr_eq(b, bytes))
                    {
                        tail.entries.remove(index);
                    }
                }
            }
        }
    }
    let error = result.err().map(|e| e.to_string());
    let outcome = || match &error {
        None => Ok(()),
        Some(reason) => Err(Error::WriterStopped(reason.clone())),
    };
    for op in batch {
        match op {
            WriteOp::Append { callback, .. } => {
                let io = outcome().map_err(|e| std::io::Error::other(e.to_string()));
                callback.log_io_completed(io);
            }
            WriteOp::Vote { done, .. }
            | WriteOp::Truncate { done, .. }
            | WriteOp::Purge { done, .. } => {
                let _ = done.send(outcome());
            }
            WriteOp::Committed { .. } => {}
        }
    }
}
