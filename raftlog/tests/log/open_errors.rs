//! Opening data that is not ours, or not whole, fails with a clear error and never panics.

use crate::support::entries;
use openraft::RaftLogReader;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use raftlog::kv::{KvApp, KvConfig};
use raftlog::{Error, LogStore, StateMachineStore, Storage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Writes 200 entries to the log and applies them.
fn populate(storage: &Storage) -> anyhow::Result<()> {
    runtime().block_on(async {
        let mut log = LogStore::<KvConfig>::open_in(storage)?;
        let mut sm = StateMachineStore::open(storage, KvApp)?;
        log.blocking_append(entries(1..=200)).await?;
        sm.apply(entries(1..=200)).await?;
        Ok(())
    })
}

#[test]
fn opening_another_clusters_data_names_both_clusters() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    populate(&Storage::new(dir.path(), "alpha"))?;
    let other = Storage::new(dir.path(), "beta");
    let err = LogStore::<KvConfig>::open_in(&other)
        .err()
        .expect("log must refuse");
    assert!(
        matches!(&err, Error::ClusterMismatch { expected, found, .. }
        if expected == "beta" && found == "alpha"),
        "{err}"
    );
    assert!(err.to_string().contains("\"alpha\""), "{err}");
    let err = StateMachineStore::open(&other, KvApp)
        .err()
        .expect("sm must refuse");
    assert!(matches!(err, Error::ClusterMismatch { .. }), "{err}");
    Ok(())
}

#[test]
fn opening_a_newer_format_asks_for_a_newer_binary() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::new(dir.path(), "alpha");
    populate(&storage)?;
    {
        let db = redb::Database::open(dir.path().join("log.redb"))?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))?;
            meta.insert("format_version", postcard::to_stdvec(&99u32)?.as_slice())?;
        }
        txn.commit()?;
    }
    let err = LogStore::<KvConfig>::open_in(&storage)
        .err()
        .expect("must refuse");
    assert!(
        matches!(err, Error::FormatTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer binary"), "{err}");
    Ok(())
}

/// Writes `version` as the format version of both databases under `dir`.
fn set_format_version(dir: &std::path::Path, version: u32) -> anyhow::Result<()> {
    for file in ["log.redb", "sm.redb"] {
        let db = redb::Database::open(dir.join(file))?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))?;
            meta.insert("format_version", postcard::to_stdvec(&version)?.as_slice())?;
        }
        txn.commit()?;
    }
    Ok(())
}

/// The format version stored in `file` under `dir`.
fn format_version(dir: &std::path::Path, file: &str) -> anyhow::Result<u32> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(dir.join(file))?;
    let txn = db.begin_read()?;
    let meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))?;
    let value = meta.get("format_version")?.expect("a format version");
    Ok(postcard::from_bytes(value.value())?)
}

/// When the oldest readable version is the current one (no older format is upgradable), this
/// checks that data of that version opens and keeps the current version.
#[test]
fn the_oldest_readable_format_opens_and_is_upgraded_in_place() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::new(dir.path(), "alpha");
    populate(&storage)?;
    set_format_version(dir.path(), raftlog::OLDEST_READABLE_VERSION)?;
    const { assert!(raftlog::OLDEST_READABLE_VERSION <= raftlog::FORMAT_VERSION) };
    drop(LogStore::<KvConfig>::open_in(&storage)?);
    drop(StateMachineStore::open(&storage, KvApp)?);
    for file in ["log.redb", "sm.redb"] {
        assert_eq!(
            format_version(dir.path(), file)?,
            raftlog::FORMAT_VERSION,
            "{file}"
        );
    }
    Ok(())
}

#[test]
fn opening_an_older_format_is_refused_instead_of_misread() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::new(dir.path(), "alpha");
    populate(&storage)?;
    let old = raftlog::OLDEST_READABLE_VERSION - 1;
    set_format_version(dir.path(), old)?;
    let err = LogStore::<KvConfig>::open_in(&storage)
        .err()
        .expect("the log must refuse");
    assert!(
        matches!(err, Error::FormatTooOld { found, .. } if found == old),
        "{err}"
    );
    assert!(err.to_string().contains("does not migrate"), "{err}");
    let err = StateMachineStore::open(&storage, KvApp)
        .err()
        .expect("the state machine must refuse");
    assert!(matches!(err, Error::FormatTooOld { .. }), "{err}");
    Ok(())
}

#[test]
fn a_file_that_is_not_a_database_is_reported_corrupt() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("log.redb"),
        b"this is not a redb file at all",
    )?;
    let err = LogStore::<KvConfig>::open_in(&Storage::new(dir.path(), "alpha"))
        .err()
        .expect("must refuse");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    Ok(())
}

/// Opens and fully reads a store; any outcome but a panic is acceptable.
fn open_and_read(storage: &Storage) -> Result<(), String> {
    runtime().block_on(async {
        let mut log = LogStore::<KvConfig>::open_in(storage).map_err(|e| e.to_string())?;
        let state = log.get_log_state().await.map_err(|e| e.to_string())?;
        let last = state.last_log_id.map_or(0, |l| l.index);
        log.try_get_log_entries(0..=last)
            .await
            .map_err(|e| e.to_string())?;
        let mut sm = StateMachineStore::open(storage, KvApp).map_err(|e| e.to_string())?;
        sm.applied_state().await.map_err(|e| e.to_string())?;
        raftlog::kv::dump(&sm.read().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        Ok(())
    })
}

fn damage(pristine: &Path, target: &Path, file: &str, rng: &mut SmallRng) -> anyhow::Result<()> {
    for name in ["log.redb", "sm.redb"] {
        std::fs::copy(pristine.join(name), target.join(name))?;
    }
    let path = target.join(file);
    let mut bytes = std::fs::read(&path)?;
    if rng.random_bool(0.5) {
        bytes.truncate(rng.random_range(0..bytes.len()));
    } else {
        for _ in 0..rng.random_range(1..=16) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
    }
    std::fs::write(&path, bytes)?;
    Ok(())
}

#[test]
fn truncated_or_garbled_files_give_errors_not_panics() -> anyhow::Result<()> {
    let pristine = tempfile::tempdir()?;
    populate(&Storage::new(pristine.path(), "alpha"))?;
    let mut rng = SmallRng::seed_from_u64(7);
    let (mut errors, mut opened) = (0, 0);
    for round in 0..60 {
        let dir = tempfile::tempdir()?;
        let file = if round % 2 == 0 {
            "log.redb"
        } else {
            "sm.redb"
        };
        damage(pristine.path(), dir.path(), file, &mut rng)?;
        let storage = Storage::new(dir.path(), "alpha");
        let outcome = std::panic::catch_unwind(|| open_and_read(&storage));
        match outcome {
            Ok(Ok(())) => opened += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => anyhow::bail!("round {round}: damaging {file} made raftlog panic"),
        }
    }
    eprintln!("{errors} damaged files refused with an error, {opened} still readable");
    anyhow::ensure!(
        errors > 0,
        "no damage was ever detected; the test is not damaging anything"
    );
    Ok(())
}
