//! `cache-bench`: throughput and latency of the object cache, between real `flame-cache`
//! processes on loopback.
//!
//! Build and run: `cargo build --release -p flame-cache -p flame-bench --bins &&
//! target/release/cache-bench` (it starts `flame-cache` from its own directory; with
//! `--python <venv python>` it also times flamepy 0.6.0).
//!
//! Figures, each the median of `--runs` runs:
//! 1. **QUIC remote get**: 256 MiB fetched from a cache process over the peer protocol (ranged
//!    streams in parallel, BLAKE3 checked), by a peer client in this process, exactly the code
//!    a cache runs when it lacks an object.
//! 2. **Flight get through the other cache**: a Rust Flight client reads the 256 MiB object
//!    through the cache that does not hold it (QUIC fetch there, then Flight with ZSTD).
//! 3. **flamepy put and get** of 256 MiB through Flight (with `--python`).
//! 4. **4 KiB gets**: 16 clients, each its own connection, for `--seconds`: ops/s and p50/p99.
//! 5. **Puts with a replica**: 16 clients putting 4 KiB objects with 2 replicas, and 64 MiB
//!    puts with 2 replicas, each acknowledged only once both caches hold it.
//!
//! Hash checks are always on (they are not optional in the cache).

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use comfy_table::Table;
use flame_cache::CacheClient;
use flame_cache::ca::{self, CaPem};
use flame_cache::key::ObjectKey;
use flame_cache::peer::client::{PeerTuning, Peers};
use flame_cache::peer::tls::PeerIdentity;
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Object cache throughput and latency between flame-cache processes")]
struct Args {
    /// Runs per large-object figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds per small-object figure.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients in the small-object figures.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// A Python with flamepy 0.6.0, to time flamepy's put and get.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Only the QUIC remote get (figure 1), for quick iterations on the peer transport.
    #[arg(long)]
    quic_only: bool,
}

const MIB: f64 = (1 << 20) as f64;

/// Two `flame-cache` processes that know each other.
struct Pair {
    children: Vec<Child>,
    flight: Vec<String>,
    peers: Vec<String>,
    _dir: tempfile::TempDir,
    ca: CaPem,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_pair(binary: &Path, replicas: usize) -> anyhow::Result<Pair> {
    let dir = tempfile::tempdir()?;
    let ca = ca::generate_ca(std::time::SystemTime::now())?;
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem)?;
    let flight: Vec<u16> = (0..2).map(|_| free_port()).collect::<Result<_, _>>()?;
    let peer: Vec<u16> = (0..2).map(|_| free_port()).collect::<Result<_, _>>()?;
    let mut children = Vec::new();
    for i in 0..2 {
        let (cert, key) = ca::issue_identity(&ca, &format!("c{i}"))?;
        std::fs::write(dir.path().join(format!("c{i}.pem")), cert)?;
        std::fs::write(dir.path().join(format!("c{i}.key")), key)?;
        let other = 1 - i;
        let child = Command::new(binary)
            .args(["--node", &format!("c{i}")])
            .args(["--listen", &format!("127.0.0.1:{}", flight[i])])
            .args(["--peer-listen", &format!("127.0.0.1:{}", peer[i])])
            .args([
                "--storage",
                &dir.path().join(format!("s{i}")).display().to_string(),
            ])
            .args([
                "--replicas",
                &replicas.to_string(),
                "--max-memory",
                "2g",
                "--max-object-size",
                "512m",
            ])
            .args([
                "--peer",
                &format!(
                    "c{other}=127.0.0.1:{}@grpc://127.0.0.1:{}",
                    peer[other], flight[other]
                ),
            ])
            .args([
                "--peer-cert",
                &dir.path().join(format!("c{i}.pem")).display().to_string(),
            ])
            .args([
                "--peer-key",
                &dir.path().join(format!("c{i}.key")).display().to_string(),
            ])
            .args([
                "--peer-ca",
                &dir.path().join("ca.pem").display().to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        children.push(child);
    }
    Ok(Pair {
        children,
        flight: flight
            .iter()
            .map(|p| format!("grpc://127.0.0.1:{p}"))
            .collect(),
        peers: peer.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        _dir: dir,
        ca,
    })
}

async fn connect(endpoint: &str) -> anyhow::Result<CacheClient> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match CacheClient::connect(endpoint).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => bail!("{endpoint} never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A peer client of the pair's CA, as a third cache would have.
fn peer_client(pair: &Pair) -> anyhow::Result<Peers> {
    let (cert, key) = ca::issue_identity(&pair.ca, "bench")?;
    let identity = PeerIdentity::from_pem(&cert, &key, &pair.ca.cert_pem)?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(Peers::new(
        flame_cache::peer::endpoint(socket, &identity)?,
        PeerTuning::default(),
    ))
}

/// Figures 1 and 2: the 256 MiB object held by one cache only.
async fn large_remote(pair: &Pair, args: &Args, table: &mut Table) -> anyhow::Result<()> {
    let runs = args.runs;
    let big = random_bytes(256 << 20, 1);
    let a = connect(&pair.flight[0]).await?;
    let b = connect(&pair.flight[1]).await?;
    let reference = a.put("bench/big", big.clone()).await?;
    let key = ObjectKey::parse(&reference.key)?;
    let peers = peer_client(pair)?;
    let (holder, other) = match peers.head(&pair.peers[0], &key).await? {
        Some(_) => (0, &b),
        None => (1, &a),
    };
    let meta = peers
        .head(&pair.peers[holder], &key)
        .await?
        .context("the holder lost the object")?;
    let mut quic = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let records = peers.fetch(&pair.peers[holder], &meta, &[0]).await?;
        quic.push(256.0 / started.elapsed().as_secs_f64());
        eprintln!("QUIC remote get: {:.0} MiB/s", quic[quic.len() - 1]);
        anyhow::ensure!(records[0] == big, "the QUIC fetch returned other bytes");
    }
    table.add_row(vec![
        "QUIC remote get, 256 MiB, cache process -> peer".to_string(),
        format!("{:.0} MiB/s", median(quic)),
    ]);
    if args.quic_only {
        return Ok(());
    }
    let mut flight = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let (_, bytes) = other.get_bytes(&reference.key).await?;
        flight.push(256.0 / started.elapsed().as_secs_f64());
        anyhow::ensure!(
            bytes.len() == big.len(),
            "the Flight get returned {} bytes",
            bytes.len()
        );
    }
    table.add_row(vec![
        "Flight get through the non-holder (QUIC + Flight), 256 MiB".to_string(),
        format!("{:.0} MiB/s", median(flight)),
    ]);
    Ok(())
}

/// Figure 3: flamepy's put and get of 256 MiB.
fn flamepy(pair: &Pair, python: &Path, runs: usize, table: &mut Table) -> anyhow::Result<()> {
    let script = r#"
import os, sys, time, statistics
from flamepy import cache
data = os.urandom(256 << 20)
puts, gets = [], []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter(); ref = cache.put_object("bench/py", data); puts.append(time.perf_counter() - t)
    ref = cache.ObjectRef(endpoint=ref.endpoint, key=ref.key, version=0)
    t = time.perf_counter(); back = cache.get_object(ref); gets.append(time.perf_counter() - t)
    assert back == data
print(256 / statistics.median(puts), 256 / statistics.median(gets))
"#;
    let output = Command::new(python)
        .args(["-c", script, &runs.to_string()])
        .env("FLAME_CACHE_ENDPOINT", &pair.flight[0])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "flamepy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<f64> = text
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    anyhow::ensure!(figures.len() == 2, "flamepy printed {text:?}");
    table.add_row(vec![
        "flamepy put, 256 MiB".to_string(),
        format!("{:.0} MiB/s", figures[0]),
    ]);
    table.add_row(vec![
        "flamepy get, 256 MiB".to_string(),
        format!("{:.0} MiB/s", figures[1]),
    ]);
    Ok(())
}

/// Runs `clients` loops of `op` for `seconds`; returns ops/s and the latency histogram (µs).
async fn closed_loop<F, Fut>(
    clients: Vec<CacheClient>,
    seconds: u64,
    op: F,
) -> anyhow::Result<(f64, Histogram<u64>)>
where
    F: Fn(CacheClient, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new(3)?;
                let mut i = 0_u64;
                while Instant::now() < until {
                    let t = Instant::now();
                    op(client.clone(), c, i).await?;
                    histogram.record(t.elapsed().as_micros() as u64)?;
                    i += 1;
                }
                anyhow::Ok(histogram)
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new(3)?;
    for task in tasks {
        total.add(task.await??)?;
    }
    Ok((total.len() as f64 / started.elapsed().as_secs_f64(), total))
}

/// Figures 4 and 5, on a pair with two replicas.
async fn small_objects(pair: &Pair, args: &Args, table: &mut Table) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for c in 0..args.clients {
        clients.push(connect(&pair.flight[c % 2]).await?);
    }
    let value = random_bytes(4096, 2);
    let mut keys = Vec::new();
    for i in 0..256 {
        keys.push(
            clients[i % clients.len()]
                .put("bench/small", value.clone())
                .await?
                .key,
        );
    }
    let keys = std::sync::Arc::new(keys);
    let (gets, histogram) = closed_loop(clients.clone(), args.seconds, move |client, c, i| {
        let keys = keys.clone();
        async move {
            let key = &keys[(c * 7919 + i as usize) % keys.len()];
            client.get(key, 0).await?;
            Ok(())
        }
    })
    .await?;
    let latency = |h: &Histogram<u64>| {
        format!(
            "p50 {} µs, p99 {} µs",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99)
        )
    };
    table.add_row(vec![
        format!("4 KiB gets, {} clients", args.clients),
        format!("{gets:.0} ops/s ({})", latency(&histogram)),
    ]);
    let put_value = value.clone();
    let (puts, histogram) = closed_loop(clients.clone(), args.seconds, move |client, _, _| {
        let value = put_value.clone();
        async move {
            client.put("bench/puts", value).await?;
            Ok(())
        }
    })
    .await?;
    table.add_row(vec![
        format!("4 KiB puts with a replica, {} clients", args.clients),
        format!("{puts:.0} ops/s ({})", latency(&histogram)),
    ]);
    let large = random_bytes(64 << 20, 3);
    let mut rates = Vec::new();
    for _ in 0..args.runs {
        let started = Instant::now();
        clients[0].put("bench/large", large.clone()).await?;
        rates.push(64.0 / started.elapsed().as_secs_f64());
    }
    table.add_row(vec![
        "64 MiB puts with a replica".to_string(),
        format!("{:.0} MiB/s", median(rates)),
    ]);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = std::env::current_exe()?.with_file_name("flame-cache");
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build it with `cargo build --release -p flame-cache`",
        binary.display()
    );
    let mut table = Table::new();
    table.set_header(vec!["figure", "median"]);
    {
        let pair = start_pair(&binary, 1)?;
        large_remote(&pair, &args, &mut table).await?;
        if let Some(python) = &args.python {
            flamepy(&pair, python, args.runs.min(3), &mut table)?;
        }
    }
    if !args.quic_only {
        let pair = start_pair(&binary, 2)?;
        small_objects(&pair, &args, &mut table).await?;
    }
    println!("{table}");
    let _ = MIB;
    Ok(())
}
