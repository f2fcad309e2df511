//! The release sweeper: removes installed packages of applications the cluster no longer has.
//!
//! What: [`run`] sweeps the agent's release directories ([`crate::instance::sweep_releases`])
//! shortly after an application drops out of the agent's assignments (the Runner unbinds, then
//! unregisters its application at once), shortly after start (a restarted agent cleans up what
//! it missed), and every [`SWEEP_INTERVAL`]. A release is kept while its application is
//! registered in the cluster or named by one of the agent's own assignments.
//!
//! Why a task of its own: the sweep asks a member for the application list and walks the file
//! system; neither may hold up the reconciler. The core only publishes the applications its
//! assignments name, on a `watch` channel.
//!
//! Caveats:
//! - The list comes from whichever member answers first, from its applied state; an application
//!   registered a moment ago may be missing on a lagging follower, which is why the agent's
//!   own assignments (from the leader) are kept too.
//! - When no member answers, nothing is removed; the next sweep tries again.

use crate::instance::{release_owners, releases_under, sweep_releases};
use flame_proto::v1::ListApplicationRequest;
use flame_proto::v1::frontend_client::FrontendClient;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Time between sweeps when nothing prompts one.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Wait after an application leaves the assignments, so its unregistration has landed.
pub const SWEEP_DELAY: Duration = Duration::from_secs(2);
/// Bound on asking one member for the application list.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Sweeps `<work_dir>/releases` until `assigned` closes (the core stopped).
pub async fn run(
    work_dir: PathBuf,
    endpoints: Vec<String>,
    mut assigned: watch::Receiver<BTreeSet<String>>,
) {
    let mut seen = assigned.borrow().clone();
    let mut next = Instant::now() + SWEEP_DELAY;
    loop {
        tokio::select! {
            changed = assigned.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = assigned.borrow_and_update().clone();
                if seen.difference(&now).next().is_some() {
                    next = next.min(Instant::now() + SWEEP_DELAY);
                }
                seen = now;
            }
            () = tokio::time::sleep_until(next) => {
                sweep_once(&work_dir, &endpoints, &assigned).await;
                next = Instant::now() + SWEEP_INTERVAL;
            }
        }
    }
}

/// One sweep: removes the releases of applications neither registered nor assigned.
async fn sweep_once(
    work_dir: &std::path::Path,
    endpoints: &[String],
    assigned: &watch::Receiver<BTreeSet<String>>,
) {
    let releases = releases_under(work_dir);
    let dir = releases.clone();
    let owners = tokio::task::spawn_blocking(move || release_owners(&dir))
        .await
        .unwrap_or_default();
    let registered = if owners.is_empty() {
        // Only leftovers can go; no need to ask the cluster.
        BTreeSet::new()
    } else {
        match registered_applications(endpoints).await {
            Some(names) => names,
            None => return,
        }
    };
    let keep: BTreeSet<String> = registered
        .into_iter()
        .chain(assigned.borrow().iter().cloned())
        .collect();
    let swept =
        tokio::task::spawn_blocking(move || sweep_releases(&releases, |app| keep.contains(app)))
            .await
            .unwrap_or_default();
    for (release, app) in &swept.releases {
        tracing::info!(%release, application = %app, "removed the release of an unregistered application");
    }
    if !swept.leftovers.is_empty() {
        tracing::info!(leftovers = ?swept.leftovers, "removed release leftovers");
    }
}

/// The names of the applications the first member to answer has; `None` when none answers.
async fn registered_applications(endpoints: &[String]) -> Option<BTreeSet<String>> {
    for endpoint in endpoints {
        let listed = tokio::time::timeout(LIST_TIMEOUT, async {
            let mut client = FrontendClient::connect(endpoint.clone()).await.ok()?;
            client
                .list_application(ListApplicationRequest {})
                .await
                .ok()
        })
        .await;
        if let Ok(Some(reply)) = listed {
            let names = reply
                .into_inner()
                .applications
                .into_iter()
                .filter_map(|a| a.metadata.map(|m| m.name))
                .collect();
            return Some(names);
        }
        tracing::debug!(%endpoint, "member did not list applications for the release sweep");
    }
    tracing::warn!("no member listed applications; releases are kept until the next sweep");
    None
}
