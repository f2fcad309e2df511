//! `flmexec-service`: the instance binary of the built-in `flmexec` application.
//!
//! What: serves [`flame_sdk::builtin::exec::ExecService`] on `FLAME_INSTANCE_ENDPOINT` until
//! SIGTERM. Why thin: all behaviour lives in the library, where it is tested.
//! Caveat: exits non-zero with the reason on stderr when the endpoint is missing or taken.

use flame_sdk::builtin::exec::ExecService;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flame_sdk::logging::init();
    flame_sdk::service::run(ExecService::new()).await?;
    Ok(())
}
