//! Snapshot files: building, reading and installing them.
//!
//! A snapshot is one file in `<data dir>/snapshots/`:
//!
//! ```text
//! "FLMSNAP\x01" | format version u32 | header length u32 | header (postcard)
//! | record* | 0x00 | crc32 u32
//! record = 0x01 | table index u32 | key length u32 | key | value length u32 | value
//! ```
//!
//! The header holds the cluster id, openraft's `SnapshotMeta` and the names of the tables. All
//! integers are little-endian; the CRC covers every byte before it.
//!
//! Building reads one redb read transaction (a consistent MVCC view, taken while the state
//! machine keeps applying) and streams rows straight to a temporary file, which is fsynced and
//! renamed to `current.snap`. Installing streams a received file into one write transaction that
//! replaces the tables; the transaction commits only if the whole file checks out, so an install
//! is all or nothing. Neither side ever holds a whole snapshot in memory.
//!
//! Caveat: only the newest snapshot is kept; building one that is not newer than `current.snap`
//! discards it.

use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::meta::{self, META};
use crate::{FORMAT_VERSION, FlameRaft, OLDEST_READABLE_VERSION};
use openraft::{LogId, SnapshotMeta, StoredMembership};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Directory of snapshot files inside a member's data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
const CURRENT: &str = "current.snap";
const MAGIC: &[u8; 8] = b"FLMSNAP\x01";
const KIND_END: u8 = 0;
const KIND_ROW: u8 = 1;

/// Keys of the state machine's own metadata, shared with the state-machine store.
pub(crate) const KEY_APPLIED: &str = "last_applied";
pub(crate) const KEY_MEMBERSHIP: &str = "last_membership";

/// openraft's snapshot metadata for a type configuration.
pub type Meta<C> = SnapshotMeta<u64, <C as openraft::RaftTypeConfig>::Node>;

/// One row of a snapshot: a key and value of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The table the row belongs to.
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A row as read from a file: the table's index in the header, key, value.
type Record = (usize, Vec<u8>, Vec<u8>);

/// What a snapshot file says about itself.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Header<C: FlameRaft> {
    cluster_id: String,
    meta: SnapshotMeta<u64, C::Node>,
    tables: Vec<String>,
}

/// The snapshot directory of one member.
pub struct SnapshotDir {
    path: PathBuf,
    cluster_id: String,
    /// Serialises replacing `current.snap`, so an older build never overwrites a newer install.
    swap: Mutex<()>,
    seq: AtomicU64,
}

impl SnapshotDir {
    /// Opens the directory, removing half-written files left by a crash.
    pub fn open(data_dir: &Path, cluster_id: &str) -> Result<Self> {
        let path = data_dir.join(SNAPSHOT_DIR);
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let entries = std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") || name.ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(SnapshotDir {
            path,
            cluster_id: cluster_id.into(),
            swap: Mutex::new(()),
            seq: AtomicU64::new(0),
        })
    }

    /// A fresh path for a file being built (`.tmp`) or received (`.part`).
    pub fn scratch_path(&self, suffix: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.path
            .join(format!("{}-{n}.{suffix}", std::process::id()))
    }

    /// The current snapshot's path and metadata, if there is one.
    pub fn current<C: FlameRaft>(&self) -> Result<Option<(PathBuf, Meta<C>)>> {
        let path = self.path.join(CURRENT);
        if !path.exists() {
            return Ok(None);
        }
        let reader = SnapshotReader::<C>::open(&path, &self.cluster_id)?;
        Ok(Some((path, reader.header.meta)))
    }

    /// Makes `file` the current snapshot. Unless `force`, a snapshot that is not newer than the
    /// current one is discarded instead; returns whether `file` became current.
    pub fn publish<C: FlameRaft>(
        &self,
        file: &Path,
        meta: &SnapshotMeta<u64, C::Node>,
        force: bool,
    ) -> Result<bool> {
        let _guard = self
            .swap
            .lock()
            .map_err(|_| Error::App("snapshot lock poisoned".into()))?;
        if !force
            && let Some((_, current)) = self.current::<C>()?
            && current.last_log_id >= meta.last_log_id
        {
            let _ = std::fs::remove_file(file);
            return Ok(false);
        }
        let target = self.path.join(CURRENT);
        std::fs::rename(file, &target).map_err(|e| Error::io(&target, e))?;
        sync_dir(&self.path)?;
        Ok(true)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The definition of application table `name`: raw byte keys and values.
pub(crate) fn table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Builds a snapshot of `db` into a temporary file of `dir`; returns its path and metadata.
pub fn build<C: FlameRaft>(
    db: &Database,
    dir: &SnapshotDir,
    tables: &[&str],
    snapshot_id: impl FnOnce(Option<LogId<u64>>) -> String,
) -> Result<(PathBuf, SnapshotMeta<u64, C::Node>)> {
    // Applies are committed without fsync; everything the snapshot holds must be durable before
    // the snapshot lets openraft purge the log it came from. The read transaction opens first and
    // the durable (empty) commit follows, since it persists every earlier commit: the other order
    // would let an apply that lands between the two into the snapshot without being durable,
    // and a crash after the purge would leave the state behind a log that no longer holds the
    // gap (review D1).
    let txn = db.begin_read()?;
    let mut barrier = db.begin_write()?;
    barrier.set_durability(redb::Durability::Immediate)?;
    barrier.commit()?;
    let (last_log_id, last_membership) = {
        let meta_table = txn.open_table(META)?;
        let applied: Option<LogId<u64>> = meta::get(&meta_table, KEY_APPLIED)?.flatten();
        let membership: StoredMembership<u64, C::Node> =
            meta::get(&meta_table, KEY_MEMBERSHIP)?.unwrap_or_default();
        (applied, membership)
    };
    let meta = SnapshotMeta {
        snapshot_id: snapshot_id(last_log_id),
        last_log_id,
        last_membership,
    };
    let path = dir.scratch_path("tmp");
    let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
    let mut out = Hashing::new(BufWriter::new(file));
    let header = Header::<C> {
        cluster_id: dir.cluster_id.clone(),
        meta: meta.clone(),
        tables: tables.iter().map(|t| t.to_string()).collect(),
    };
    let io = |e| Error::io(&path, e);
    let header = encode(&header)?;
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
    write_chunk(&mut out, &header).map_err(io)?;
    for (index, name) in tables.iter().enumerate() {
        let t = txn.open_table(table(name))?;
        for row in t.iter()? {
            let (k, v) = row?;
            out.write_all(&[KIND_ROW]).map_err(io)?;
            out.write_all(&(index as u32).to_le_bytes()).map_err(io)?;
            write_chunk(&mut out, k.value()).map_err(io)?;
            write_chunk(&mut out, v.value()).map_err(io)?;
        }
    }
    out.write_all(&[KIND_END]).map_err(io)?;
    let crc = out.hasher.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes()).map_err(io)?;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok((path, meta))
}

fn write_chunk(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("a snapshot key or value exceeds 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// A parsed snapshot header followed by a stream of records.
struct SnapshotReader<C: FlameRaft> {
    path: PathBuf,
    header: Header<C>,
    input: Hashing<BufReader<File>>,
    remaining: u64,
}

impl<C: FlameRaft> SnapshotReader<C> {
    fn open(path: &Path, cluster_id: &str) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut reader = SnapshotReader {
            path: path.into(),
            header: Header {
                cluster_id: String::new(),
                meta: SnapshotMeta::default(),
                tables: Vec::new(),
            },
            input: Hashing::new(BufReader::new(file)),
            remaining: size,
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(reader.corrupt("not a Flame snapshot (bad magic)"));
        }
        let version = reader.read_u32()?;
        if version > FORMAT_VERSION {
            return Err(Error::FormatTooNew {
                path: path.into(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version < OLDEST_READABLE_VERSION {
            return Err(Error::FormatTooOld {
                path: path.into(),
                found: version,
                supported: OLDEST_READABLE_VERSION,
            });
        }
        let header = reader.read_chunk()?;
        reader.header = decode(&header).map_err(|e| reader.corrupt(&format!("header: {e}")))?;
        if reader.header.cluster_id != cluster_id {
            return Err(Error::ClusterMismatch {
                path: path.into(),
                expected: cluster_id.into(),
                found: reader.header.cluster_id.clone(),
            });
        }
        Ok(reader)
    }

    fn corrupt(&self, detail: &str) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        if (buf.len() as u64) > self.remaining {
            return Err(self.corrupt("truncated"));
        }
        self.remaining -= buf.len() as u64;
        let path = self.path.clone();
        self.input.read_exact(buf).map_err(|e| Error::io(path, e))
    }

    fn read_u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_chunk(&mut self) -> Result<Vec<u8>> {
        let len = u64::from(self.read_u32()?);
        if len > self.remaining {
            return Err(self.corrupt("a record is longer than the rest of the file"));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads the next record: `Some((table index, key, value))`, or `None` at the verified end.
    fn next_record(&mut self) -> Result<Option<Record>> {
        let mut kind = [0u8; 1];
        self.read_exact(&mut kind)?;
        match kind[0] {
            KIND_ROW => {
                let index = self.read_u32()? as usize;
                if index >= self.header.tables.len() {
                    return Err(self.corrupt("a record names an unknown table"));
                }
                let key = self.read_chunk()?;
                let value = self.read_chunk()?;
                Ok(Some((index, key, value)))
            }
            KIND_END => {
                let expected = self.input.hasher.clone().finalize();
                let mut crc = [0u8; 4];
                if self.remaining != 4 {
                    return Err(self.corrupt("unexpected bytes around the checksum"));
                }
                let path = self.path.clone();
                self.input
                    .inner
                    .read_exact(&mut crc)
                    .map_err(|e| Error::io(path, e))?;
                if u32::from_le_bytes(crc) != expected {
                    return Err(self.corrupt("checksum mismatch"));
                }
                Ok(None)
            }
            _ => Err(self.corrupt("unknown record kind")),
        }
    }
}

/// Replaces the tables and the applied state inside `txn` with the snapshot at `path`.
///
/// Fails without side effects (the caller drops `txn`) if the file is damaged, belongs to
/// another cluster or does not match `expected`.
pub fn install<C: FlameRaft>(
    txn: &WriteTransaction,
    path: &Path,
    cluster_id: &str,
    tables: &[&str],
    expected: &SnapshotMeta<u64, C::Node>,
) -> Result<()> {
    let mut reader = SnapshotReader::<C>::open(path, cluster_id)?;
    if reader.header.meta != *expected {
        return Err(Error::SnapshotMismatch(format!(
            "{} holds snapshot {:?}, but {:?} was announced",
            path.display(),
            reader.header.meta,
            expected
        )));
    }
    if reader
        .header
        .tables
        .iter()
        .map(String::as_str)
        .ne(tables.iter().copied())
    {
        return Err(Error::SnapshotMismatch(format!(
            "snapshot tables {:?} differ from this state machine's {:?}",
            reader.header.tables, tables
        )));
    }
    for name in tables {
        txn.delete_table(table(name))?;
    }
    let mut open: Vec<_> = tables
        .iter()
        .map(|name| txn.open_table(table(name)))
        .collect::<Result<_, _>>()?;
    while let Some((index, key, value)) = reader.next_record()? {
        open[index].insert(key.as_slice(), value.as_slice())?;
    }
    drop(open);
    let mut meta_table = txn.open_table(META)?;
    meta_table.insert(KEY_APPLIED, encode(&expected.last_log_id)?.as_slice())?;
    meta_table.insert(
        KEY_MEMBERSHIP,
        encode(&expected.last_membership)?.as_slice(),
    )?;
    Ok(())
}

/// Reads every row of a snapshot file, checking its integrity; for tests and tools.
pub fn read_rows<C: FlameRaft>(path: &Path, cluster_id: &str) -> Result<(Meta<C>, Vec<Row>)> {
    let mut reader = SnapshotReader::<C>::open(path, cluster_id)?;
    let mut rows = Vec::new();
    while let Some((index, key, value)) = reader.next_record()? {
        let table = reader.header.tables[index].clone();
        rows.push(Row { table, key, value });
    }
    Ok((reader.header.meta.clone(), rows))
}

/// A reader or writer that keeps a CRC32 of every byte passing through.
struct Hashing<T> {
    inner: T,
    hasher: crc32fast::Hasher,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
