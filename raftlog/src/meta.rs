//! Opening a redb file and checking that it is ours.
//!
//! Each database (the log and the state machine) carries a small `meta` table with the storage
//! format version and the cluster id it was created for. Opening checks both, so a member never
//! mixes another cluster's data into its own or misreads a newer format.
//!
//! Caveat: redb may panic on some kinds of damage it does not expect; opening is wrapped in
//! `catch_unwind` so a damaged file is an [`Error::Corrupt`], never a crash.

use crate::FORMAT_VERSION;
use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Key/value metadata kept in every raftlog database.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_FORMAT: &str = "format_version";
const KEY_CLUSTER: &str = "cluster_id";

/// Opens (creating if needed) the database at `path`, checks its format and cluster id, and
/// makes sure the given tables exist so readers never see "table does not exist".
pub(crate) fn open_db(path: &Path, cluster_id: &str, tables: &[&str]) -> Result<Database> {
    let opened = catch_unwind(AssertUnwindSafe(|| Database::builder().create(path)));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)))) => {
            return Err(Error::Corrupt {
                path: path.into(),
                detail,
            });
        }
        Ok(Err(e)) => {
            return Err(Error::Corrupt {
                path: path.into(),
                detail: e.to_string(),
            });
        }
        Err(_) => {
            return Err(Error::Corrupt {
                path: path.into(),
                detail: "the storage engine could not read the file".into(),
            });
        }
    };
    let checked = catch_unwind(AssertUnwindSafe(|| {
        check_or_init(&db, path, cluster_id, tables)
    }));
    match checked {
        Ok(result) => result.map(|()| db),
        Err(_) => Err(Error::Corrupt {
            path: path.into(),
            detail: "the storage engine failed while reading the metadata".into(),
        }),
    }
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
            meta.insert(KEY_FORMAT, encode(&FORMAT_VERSION)?.as_slice())?;
            meta.insert(KEY_CLUSTER, encode(cluster_id)?.as_slice())?;
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
