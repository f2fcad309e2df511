//! The shutdown future every Flame binary hands to its library's `serve`: SIGINT or SIGTERM.
//!
//! Why here: the member, the node agent, the cache and `flmctl local up` all stop the same way,
//! and this is the one crate they all link.
//!
//! Caveat: when SIGTERM cannot be hooked (no signal driver), only Ctrl-C (SIGINT) stops the
//! process.

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
