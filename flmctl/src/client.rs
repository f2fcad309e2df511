//! How flmctl reaches a cluster: the endpoint list and one-shot gRPC channels.
//!
//! What: endpoints come from `--endpoint` (comma-separated), else `FLAME_ENDPOINT`, else the
//! current context of `--config` / `~/.flame/flame.yaml`, else `http://127.0.0.1:8080`
//! ([`resolve`], the SDK's resolver); [`first_answer`] sends a read to each member in turn until one answers,
//! so any member serves flmctl. Every attempt is bounded by [`ATTEMPT`].
//!
//! Why: inspection commands must work against any member and fail with one readable line (with
//! a hint) when none answers, never hang or panic.
//!
//! Caveat: reads are not retried against the same member; writes use the SDK [`Connection`]
//! ([`connection`]), which does retry.

use anyhow::anyhow;
use flame_proto::v1::frontend_client::FrontendClient;
use flame_sdk::client::{Connection, resolve_endpoints};
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The limit of one RPC to one member.
pub const ATTEMPT: Duration = Duration::from_secs(3);

/// The members' endpoints: `explicit` (`--endpoint`), else `FLAME_ENDPOINT`, else the current
/// context of `config` (default `~/.flame/flame.yaml`), else `http://127.0.0.1:8080` — the
/// SDK's resolver, so flmctl and every other client reach the same cluster.
pub fn resolve(explicit: Option<&str>, config: Option<&Path>) -> anyhow::Result<Vec<String>> {
    resolve_endpoints(explicit, config).map_err(|e| {
        anyhow!(
            "{e}; hint: pass --endpoint http://HOST:PORT[,...], set FLAME_ENDPOINT or fix the \
             current context of --config"
        )
    })
}

/// A lazy channel to `url` with bounded connect and request times.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow!("invalid endpoint {url}: {e}; hint: use http://HOST:PORT"))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(ATTEMPT)
        .connect_lazy())
}

/// The one-line error for "no member answered", with a hint.
pub fn nobody_answered(endpoints: &[String], last: &str) -> anyhow::Error {
    anyhow!(
        "no Flame member answered at {}; is the cluster running? (flmctl local up) [last error: {last}]",
        endpoints.join(", ")
    )
}

/// Whether `status` means "this member could not be reached" rather than a domain answer.
pub fn is_unreachable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// Runs the read `op` against each member in turn and returns the first answer; a domain error
/// (not found, invalid argument, ...) is returned at once, an unreachable member is skipped.
pub async fn first_answer<T, F, Fut>(endpoints: &[String], op: F) -> anyhow::Result<T>
where
    F: FnMut(FrontendClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    first_answer_of(endpoints, FrontendClient::new, op).await
}

/// [`first_answer`] for any service: `client` makes the service's client from a channel.
pub async fn first_answer_of<C, T, F, Fut>(
    endpoints: &[String],
    client: fn(Channel) -> C,
    mut op: F,
) -> anyhow::Result<T>
where
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut last = String::from("no endpoint given");
    for url in endpoints {
        let c = client(channel(url)?);
        match tokio::time::timeout(ATTEMPT, op(c)).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(status)) if !is_unreachable(&status) => {
                return Err(anyhow!("{url}: {}", status.message()));
            }
            Ok(Err(status)) => last = format!("{url}: {}", status.message()),
            Err(_) => last = format!("{url}: no answer within {ATTEMPT:?}"),
        }
    }
    Err(nobody_answered(endpoints, &last))
}

/// An SDK connection to `endpoints` for writes: it finds the leader from any member and
/// retries through a failover.
pub fn connection(endpoints: &[String]) -> anyhow::Result<Connection> {
    Connection::new(endpoints).map_err(|e| anyhow!("{e}; hint: use http://HOST:PORT"))
}
