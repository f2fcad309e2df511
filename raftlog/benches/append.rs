//! Append benchmark: entries/s and append-until-flushed latency for 1 KiB entries in batches of
//! 1, 16 and 256, next to this machine's fsync floor.
//!
//! Run with `cargo bench -p raftlog --bench append`. `RAFTLOG_BENCH_DIR` picks the directory
//! (default: a temporary directory under the system temp dir); put it on the disk you care about.

use comfy_table::Table;
use hdrhistogram::Histogram;
use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use raftlog::kv::{KvConfig, Put};
use raftlog::{LogStore, Storage};
use std::io::{Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const ENTRY_BYTES: usize = 1024;
const BATCHES: [u64; 3] = [1, 16, 256];
/// Each configuration runs until it has done this many appends and this much time, whichever
/// comes later, but never longer than `MAX_TIME`.
const MIN_APPENDS: u64 = 300;
const MIN_TIME: Duration = Duration::from_secs(3);
const MAX_TIME: Duration = Duration::from_secs(20);

fn entry(index: u64) -> Entry<KvConfig> {
    // A put whose encoded entry is about ENTRY_BYTES long.
    let value = vec![(index % 251) as u8; ENTRY_BYTES - 40];
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Put {
            key: index.to_be_bytes().to_vec(),
            value,
        }),
    }
}

struct Row {
    label: String,
    ops_per_sec: f64,
    entries_per_sec: f64,
    hist: Histogram<u64>,
}

fn bench_append(dir: &Path, batch: u64) -> anyhow::Result<Row> {
    let storage = Storage::new(dir.join(format!("batch-{batch}")), "bench");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut hist = Histogram::<u64>::new(3)?;
    let (appends, elapsed) = runtime.block_on(async {
        let mut log = LogStore::<KvConfig>::open_in(&storage)?;
        let mut next = 1;
        let started = Instant::now();
        let mut appends = 0u64;
        while (appends < MIN_APPENDS || started.elapsed() < MIN_TIME)
            && started.elapsed() < MAX_TIME
        {
            let entries: Vec<_> = (next..next + batch).map(entry).collect();
            next += batch;
            let t = Instant::now();
            log.blocking_append(entries).await?;
            hist.record(t.elapsed().as_micros() as u64)?;
            appends += 1;
        }
        anyhow::Ok((appends, started.elapsed()))
    })?;
    Ok(Row {
        label: format!("append, batch {batch}"),
        ops_per_sec: appends as f64 / elapsed.as_secs_f64(),
        entries_per_sec: (appends * batch) as f64 / elapsed.as_secs_f64(),
        hist,
    })
}

/// The floor any durable append pays: rewrite 4 KiB and fdatasync, like `dd oflag=dsync`.
fn bench_fsync(dir: &Path) -> anyhow::Result<Row> {
    let mut file = std::fs::File::create(dir.join("fsync-floor"))?;
    let block = vec![7u8; 4096];
    let mut hist = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    let mut ops = 0u64;
    while (ops < MIN_APPENDS || started.elapsed() < MIN_TIME) && started.elapsed() < MAX_TIME {
        let t = Instant::now();
        file.rewind()?;
        file.write_all(&block)?;
        file.sync_data()?;
        hist.record(t.elapsed().as_micros() as u64)?;
        ops += 1;
    }
    let rate = ops as f64 / started.elapsed().as_secs_f64();
    Ok(Row {
        label: "fsync floor (4 KiB write + fdatasync)".into(),
        ops_per_sec: rate,
        entries_per_sec: f64::NAN,
        hist,
    })
}

/// `dd oflag=dsync`, when dd is installed: the same floor measured by a tool everyone trusts.
fn dd_floor(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=500", "oflag=dsync"])
        .arg(format!("of={}", dir.join("dd-floor").display()))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .last()
        .map(|l| format!("dd bs=4k count=500 oflag=dsync: {l}"))
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` asks benches to list their tests.
    }
    let tmp = tempfile::tempdir_in(
        std::env::var("RAFTLOG_BENCH_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().to_string_lossy().into_owned()),
    )?;
    let mut rows = vec![bench_fsync(tmp.path())?];
    for batch in BATCHES {
        rows.push(bench_append(tmp.path(), batch)?);
    }
    let mut table = Table::new();
    table.set_header([
        "what",
        "appends/s",
        "entries/s",
        "p50 µs",
        "p99 µs",
        "max µs",
        "count",
    ]);
    for r in &rows {
        let entries = if r.entries_per_sec.is_nan() {
            "-".into()
        } else {
            format!("{:.0}", r.entries_per_sec)
        };
        table.add_row([
            r.label.clone(),
            format!("{:.0}", r.ops_per_sec),
            entries,
            r.hist.value_at_quantile(0.5).to_string(),
            r.hist.value_at_quantile(0.99).to_string(),
            r.hist.max().to_string(),
            r.hist.len().to_string(),
        ]);
    }
    println!(
        "raftlog append benchmark: {ENTRY_BYTES}-byte entries, Durability::Immediate, dir {}",
        tmp.path().display()
    );
    println!("{table}");
    if let Some(dd) = dd_floor(tmp.path()) {
        println!("{dd}");
    }
    Ok(())
}
