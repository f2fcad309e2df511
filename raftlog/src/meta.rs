//! Opening a redb file and checking that it is ours.
//!
//! Each database (the log and the state machine) carries a small `meta` table with the storage
//! format version and the cluster id it was created for. Opening checks both, so a member never
//! mixes another cluster's data into its own or misreads a newer format.
//!
//! Caveat: redb may panic on some kinds of damage it does not expect; opening is wrapped in
//! `catch_unwind` so a damaged file is an [`Error::Corrupt`], never a crash.

use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::{FORMAT_VERSION, OLDEST_READABLE_VERSION};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Key/value metadata kept in every raftlog database.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_FORMAT: &str = "format_version";
const KEY_CLUSTER: &str = "cluster_id";

/// Opens (or creates) the database at `path`, verifies its integrity, checks its format and
/// cluster id, and makes sure the given tables exist so readers never see "table does not exist".
///
/// Verification reads every page (redb checksums them), so start-up time grows with the file;
/// raftlog keeps files small by purging the log and the control plane by retention.
pub(crate) fn open_db(path: &Path, cluster_id: &str, tables: &[&str]) -> Result<Database> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.into(),
        detail,
    };
    if !path.exists() {
        create_atomically(path, cluster_id, tables)?;
    }
    // Everything that touches a possibly damaged file runs under catch_unwind, including the drop
    // of a database we refuse: redb writes on close and may panic on pages it cannot parse.
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<Database> {
        let mut db = Database::builder().create(path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => corrupt(detail),
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Db(format!(
                "{} is already open in another process or handle",
                path.display()
            )),
            other => corrupt(other.to_string()),
        })?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => return Err(corrupt("failed its integrity check".into())),
            Err(e) => return Err(corrupt(e.to_string())),
        }
        check_or_init(&db, path, cluster_id, tables)?;
        Ok(db)
    }));
    outcome.unwrap_or_else(|_| {
        Err(corrupt(
            "the storage engine failed while reading the file".into(),
        ))
    })
}

/// Creates and initialises a new database under a temporary name, then renames it into place,
/// so a crash during creation never leaves a half-written file at `path`.
fn create_atomically(path: &Path, cluster_id: &str, tables: &[&str]) -> Result<()> {
    let tmp = path.with_extension("redb.tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        let db = Database::builder().create(&tmp)?;
        check_or_init(&db, &tmp, cluster_id, tables)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn check_or_init(db: &Database, path: &Path, cluster_id: &str, tables: &[&str]) -> Result<()> {
    let stored = {
        let txn = db.begin_read()?;
        match txn.open_table(META) {
            Ok(meta) => read_identity(&meta)?,
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    match stored {
        Some((version, _)) if version > FORMAT_VERSION => {
            return Err(Error::FormatTooNew {
                path: path.into(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        Some((version, _)) if version < OLDEST_READABLE_VERSION => {
            return Err(Error::FormatTooOld {
                path: path.into(),
                found: version,
                supported: OLDEST_READABLE_VERSION,
            });
        }
        Some((_, found)) if found != cluster_id => {
            return Err(Error::ClusterMismatch {
                path: path.into(),
                expected: cluster_id.into(),
                found,
            });
        }
        _ => {}
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut meta = txn.open_table(META)?;
        if stored.is_none() {
            meta.insert(KEY_CLUSTER, encode(cluster_id)?.as_slice())?;
        }
        // New, or an older readable version upgraded in place: this binary writes the current
        // format from now on, so older binaries must refuse the file.
        if stored
            .as_ref()
            .is_none_or(|(version, _)| *version < FORMAT_VERSION)
        {
            meta.insert(KEY_FORMAT, encode(&FORMAT_VERSION)?.as_slice())?;
        }
        for name in tables {
            txn.open_table(TableDefinition::<&[u8], &[u8]>::new(name))?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn read_identity(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<(u32, String)>> {
    let Some(version) = meta.get(KEY_FORMAT)? else {
        return Ok(None);
    };
    let version: u32 = decode(version.value())?;
    let cluster = match meta.get(KEY_CLUSTER)? {
        Some(v) => decode(v.value())?,
        None => String::new(),
    };
    Ok(Some((version, cluster)))
}

/// Reads one postcard value from the meta table.
pub(crate) fn get<T: serde::de::DeserializeOwned>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match meta.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}
