//! Waiting on conditions and the sessions tests and benchmarks share.
//!
//! What: [`poll`] re-checks a condition every 50 ms until it yields a value or a deadline
//! passes, so no test sleeps and then asserts; [`ping_session_spec`] is the `flmping` session
//! the harness's tests and `task-bench` run (1 cpu and 1 GiB per executor).
//!
//! Caveat: `poll` checks once more after the deadline is seen only if the check itself ran
//! past it; a slow check can therefore overrun `limit` by its own duration.

use crate::HarnessError;
use flame_proto::v1;
use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it yields a value or `limit` passes; the timeout is
/// [`HarnessError::Timeout`] naming `what`, converted into the caller's error type.
pub async fn poll<T, E, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T, E>
where
    E: From<HarnessError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: limit,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `flmping` session spec with 1 cpu and 1 GiB per executor, between `min` and `max`
/// instances.
pub fn ping_session_spec(min: u32, max: Option<u32>) -> v1::SessionSpec {
    v1::SessionSpec {
        application: "flmping".into(),
        common_data: None,
        min_instances: min,
        max_instances: max,
        batch_size: 1,
        priority: 0,
        resreq: Some(v1::ResourceRequirement {
            cpu: 1,
            memory: 1 << 30,
            gpu: 0,
        }),
    }
}
