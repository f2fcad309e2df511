//! `flmctl`, the Flame command-line tool.
//!
//! It will list and view applications, sessions, executors and nodes, operate the Raft group
//! (status, membership, leadership transfer, snapshots), run benchmarks and start a local HA
//! cluster, against any member of the cluster.
//!
//! Caveat: only `--help` and `--version` work yet; the SDK-and-flmctl issue fills it in.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => println!("flmctl {}", env!("CARGO_PKG_VERSION")),
        _ => {
            println!("flmctl {}: the Flame command-line tool", env!("CARGO_PKG_VERSION"));
            println!("No commands are available yet.");
        }
    }
}
