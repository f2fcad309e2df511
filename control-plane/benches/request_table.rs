//! What exactly-once client writes cost: the memory of the request table and the apply time of
//! a `Command::Once`, at a given request rate.
//!
//! How: two state machines apply the same stream of single-task CreateTasks (100-byte inputs),
//! one wrapped in `Command::Once` with a fresh request id each (as members send them), the
//! other bare. Leader time advances so that the stream runs at `--per-minute` requests per
//! minute (default 100,000) for `--minutes` (default 4, twice the 2-minute TTL, so the table
//! reaches its steady size). A counting allocator gives the heap of each machine; their
//! difference is the table. Apply times are medians of 1,000-command slices.
//!
//! Run: `cargo bench -p flame-control-plane --bench request_table [-- --per-minute N]`.

use bytes::Bytes;
use cap::Cap;
use flame_control_plane::state::requests::REQUEST_TTL_MS;
use flame_control_plane::state::{Command, NewTask, StateConfig, StateMachine};
use flame_proto::model::{ResourceRequirement, SessionSpec};
use std::alloc::System;
use std::time::Instant;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Commands per apply-time sample.
const SLICE: usize = 1_000;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn machine() -> StateMachine {
    let mut m = StateMachine::new(StateConfig::default());
    m.apply(0, Command::EnsureBuiltins);
    m.apply(
        0,
        Command::CreateSession {
            id: "bench".into(),
            spec: SessionSpec {
                application: "flmping".into(),
                common_data: None,
                min_instances: 0,
                max_instances: None,
                priority: 0,
                resreq: ResourceRequirement::default(),
            },
        },
    );
    m
}

fn create(input: &Bytes) -> Command {
    Command::CreateTasks {
        session_id: "bench".into(),
        tasks: vec![NewTask {
            input: Some(input.clone()),
            request_id: None,
        }],
        dispatch: None,
    }
}

/// Applies `total` commands built by `command(i)`, `per_minute` per minute of leader time;
/// returns the heap the machine grew by and the median microseconds per apply.
fn run(total: u64, per_minute: u64, command: impl Fn(u64) -> Command) -> (usize, f64) {
    let before = ALLOC.allocated();
    let mut m = machine();
    let mut samples = Vec::new();
    let mut slice = Instant::now();
    for i in 0..total {
        let now_ms = i64::try_from(i * 60_000 / per_minute).unwrap_or(i64::MAX);
        m.apply(now_ms, command(i));
        if (i + 1) % SLICE as u64 == 0 {
            samples.push(slice.elapsed().as_secs_f64() * 1e6 / SLICE as f64);
            slice = Instant::now();
        }
    }
    let grown = ALLOC.allocated().saturating_sub(before);
    samples.sort_by(f64::total_cmp);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0.0);
    let records = m.state().requests().len();
    if records > 0 {
        println!("  request ids remembered at the end: {records}");
    }
    drop(m);
    (grown, median)
}

fn main() {
    let per_minute = arg("--per-minute", 100_000).max(1);
    let minutes = arg("--minutes", 4).max(1);
    let total = per_minute * minutes;
    let input = Bytes::from(vec![7u8; 100]);
    println!(
        "{total} single-task CreateTasks at {per_minute}/min of leader time, request TTL {} s",
        REQUEST_TTL_MS / 1000
    );
    let (bare_heap, bare_us) = run(total, per_minute, |_| create(&input));
    let (once_heap, once_us) = run(total, per_minute, |i| Command::Once {
        request_id: uuid::Uuid::from_u128(u128::from(i) + 1).to_string(),
        command: Box::new(create(&input)),
    });
    let expected = per_minute * u64::try_from(REQUEST_TTL_MS / 60_000).unwrap_or(2);
    let table = once_heap.saturating_sub(bare_heap);
    println!("  heap without request ids: {:.1} MiB", mib(bare_heap));
    println!("  heap with request ids:    {:.1} MiB", mib(once_heap));
    println!(
        "  request table: {:.1} MiB, about {} bytes per remembered id ({expected} expected)",
        mib(table),
        table as u64 / expected.max(1)
    );
    println!(
        "  apply, median per command: {bare_us:.2} µs bare, {once_us:.2} µs with a request id"
    );
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}
