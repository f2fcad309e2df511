//! `flmctl create` and `flmctl close`: open and close a session through the leader.
//!
//! What: `create -a <app> [-p <priority>] [-r cpu=N,mem=SIZE,gpu=N]` creates session
//! `<app>-<6 random [A-Za-z0-9]>` (the id flamepy and upstream flmctl generate, spec section
//! 4.1) and prints `Session <id> was created.`; `close -s <id>` prints `Session <id> was
//! closed.`. Both go through the SDK's [`Connection`], which finds the leader from any member
//! and retries through a failover; a retried create becomes a get-or-create with the same spec,
//! so it never makes two sessions.
//!
//! Caveat: the resource text is checked before anything is sent, so a typo costs no round trip.

use flame_proto::model::ResourceRequirement;
use flame_proto::v1;
use flame_sdk::client::{Connection, SessionOptions};
use rand::Rng as _;
use rand::distr::Alphanumeric;

/// Flags of `flmctl create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The application the session runs.
    #[arg(short, long = "app", visible_alias = "application")]
    app: String,
    /// Scheduling priority; 0 is the lowest.
    #[arg(short, long, default_value_t = 0)]
    priority: u32,
    /// Resources per instance, like `cpu=1,mem=1g,gpu=0`; keys left out keep their defaults.
    #[arg(short, long)]
    resreq: Option<String>,
}

/// Flags of `flmctl close`.
#[derive(clap::Args, Debug)]
pub struct CloseArgs {
    /// The session to close.
    #[arg(short, long)]
    session: String,
}

/// A fresh session id for `app`: `<app>-` and six random characters from `[A-Za-z0-9]`.
fn session_id(app: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(6)
        .map(char::from)
        .collect();
    format!("{app}-{suffix}")
}

/// The parsed `--resreq`, or one line naming the bad part.
fn resreq(text: Option<&str>) -> anyhow::Result<Option<v1::ResourceRequirement>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let parsed = ResourceRequirement::parse(text).map_err(|e| anyhow::anyhow!("--resreq: {e}"))?;
    Ok(Some(v1::ResourceRequirement::from(&parsed)))
}

/// Creates the session `args` describe; returns the line to print.
pub async fn create(conn: &Connection, args: &CreateArgs) -> anyhow::Result<String> {
    let options = SessionOptions {
        id: Some(session_id(&args.app)),
        priority: args.priority,
        resreq: resreq(args.resreq.as_deref())?,
        ..SessionOptions::new(args.app.clone())
    };
    let session = conn.create_session(&options).await?;
    Ok(format!("Session {} was created.\n", session.id()))
}

/// Closes the session `args` names; returns the line to print.
pub async fn close(conn: &Connection, args: &CloseArgs) -> anyhow::Result<String> {
    conn.close_session(&args.session).await?;
    Ok(format!("Session {} was closed.\n", args.session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_the_app_and_six_alphanumerics() {
        let id = session_id("flmping");
        let suffix = id.strip_prefix("flmping-").expect("prefix");
        assert_eq!(suffix.len(), 6, "{id}");
        assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    }

    #[test]
    fn a_bad_resreq_names_the_flag_and_the_bad_part() {
        let error = resreq(Some("cpu=two")).expect_err("bad cpu").to_string();
        assert!(
            error.starts_with("--resreq: ") && error.contains("'two'"),
            "{error}"
        );
        let parsed = resreq(Some("cpu=2,mem=1g")).expect("good").expect("some");
        assert_eq!((parsed.cpu, parsed.memory, parsed.gpu), (2, 1 << 30, 0));
    }
}
