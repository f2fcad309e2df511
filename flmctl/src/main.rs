//! `flmctl`, the Flame command-line tool.
//!
//! It will list and view applications, sessions, executors and nodes, operate the Raft group
//! (status, membership, leadership transfer, snapshots), run benchmarks and start a local HA
//! cluster, against any member of the cluster.
//!
//! Caveat: only `--help` and `--version` exist yet; the SDK-and-flmctl issue adds the commands.

use clap::Parser;

/// The Flame command-line tool.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("flmctl has no commands yet; see `flmctl --help`.");
}
