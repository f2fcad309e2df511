//! Log setup for instance binaries.
//!
//! What: one call that installs a `tracing` subscriber writing to stderr, filtered by
//! `RUST_LOG`, else `FLAME_LOG`, else `info`.
//!
//! Why: the node agent sets both variables for every instance (spec section 7.2) and sends the
//! instance's stderr to a per-executor log file, so instances log to stderr and nowhere else.
//!
//! Caveat: a filter that does not parse falls back to `info` rather than failing the instance;
//! the fallback is reported on stderr.

use tracing_subscriber::EnvFilter;

/// Installs the stderr subscriber. Calling it twice is harmless: the second call does nothing.
pub fn init() {
    let directive = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("FLAME_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|e| {
        eprintln!("invalid log filter {directive:?} ({e}); using info");
        EnvFilter::new("info")
    });
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
