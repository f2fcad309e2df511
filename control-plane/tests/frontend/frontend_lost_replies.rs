//! Claim: when the leader applies a write forwarded by a follower and its answer is lost on the
//! way back (the case request ids exist for: committed, reply lost), the follower sends the write
//! again and the client gets the first answer, with the write applied exactly once. This holds
//! for a client that sends no request id and never retries (flamepy): RegisterApplication,
//! CreateSession, CreateTask, CloseSession and UnregisterApplication each succeed once, where a
//! second apply would have answered "already exists", created a second task or "not found".
//!
//! How: three members run in this process (so the `forward-reply-lost` fail point, compiled in
//! by the `failpoints` feature, is shared with them) on loopback ports. The fail point drops the
//! leader's answer to the follower's forward exactly once per call; `LOST_REPLIES` shows it fired.
//!
//! Caveat: fail points are process-wide, so this file holds one test.

use anyhow::{Context, ensure};
use flame_control_plane::config::{Config, MemberConfig, Overrides};
use flame_control_plane::member::handle::LOST_REPLIES;
use flame_control_plane::{Listeners, serve};
use flame_proto::cluster::StatusRequest;
use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::v1;
use flame_proto::v1::frontend_client::FrontendClient;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(30);

/// Three members on loopback, their client URLs, and the switch that stops them.
struct Group {
    urls: Vec<String>,
    stop: watch::Sender<bool>,
    members: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

async fn start_group() -> anyhow::Result<Group> {
    let dir = tempfile::tempdir()?;
    let mut apis = Vec::new();
    let mut rafts = Vec::new();
    for _ in 0..3 {
        apis.push(TcpListener::bind("127.0.0.1:0").await?);
        rafts.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let members: Vec<MemberConfig> = (0..3)
        .map(|i| -> anyhow::Result<MemberConfig> {
            Ok(MemberConfig {
                id: i as u64 + 1,
                raft_addr: rafts[i].local_addr()?.to_string(),
                api_addr: apis[i].local_addr()?.to_string(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let urls = members
        .iter()
        .map(|m| format!("http://{}", m.api_addr))
        .collect();
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for (member, (api, raft)) in members.iter().zip(apis.into_iter().zip(rafts)) {
        let overrides = Overrides {
            id: Some(member.id),
            api_addr: Some(member.api_addr.clone()),
            raft_addr: Some(member.raft_addr.clone()),
            data_dir: Some(dir.path().join(format!("member-{}", member.id))),
            cluster_name: Some("lost-replies".into()),
            ..Overrides::default()
        };
        let mut config = Config::load(None, |_| None, &overrides)?;
        config.raft.members = members.clone();
        config.validate()?;
        let listeners = Listeners {
            api,
            raft,
            metrics: None,
        };
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve(config, listeners, shutdown).await {
                panic!("a member failed: {e}");
            }
        }));
    }
    Ok(Group {
        urls,
        stop,
        members: tasks,
        _dir: dir,
    })
}

/// The leader's id once one member reports it, and a follower's client.
async fn leader_and_follower(group: &Group) -> anyhow::Result<(u64, FrontendClient<Channel>)> {
    let started = Instant::now();
    loop {
        let channel = Channel::from_shared(group.urls[0].clone())?.connect_lazy();
        if let Ok(status) = ClusterClient::new(channel).status(StatusRequest {}).await
            && let Some(leader) = status.into_inner().leader_id
        {
            let follower = if leader == 1 { 2 } else { 1 };
            let url = group.urls[follower as usize - 1].clone();
            let client = FrontendClient::new(Channel::from_shared(url)?.connect_lazy());
            return Ok((leader, client));
        }
        ensure!(
            started.elapsed() < DEADLINE,
            "no leader within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `call` with the fail point armed to drop exactly one answer, and checks it did.
async fn with_a_lost_reply<T, F>(what: &str, call: F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let before = LOST_REPLIES.load(Ordering::SeqCst);
    fail::cfg("forward-reply-lost", "1*return").map_err(anyhow::Error::msg)?;
    let result = call.await;
    fail::remove("forward-reply-lost");
    let reply = result.with_context(|| format!("{what} failed although it was applied"))?;
    ensure!(
        LOST_REPLIES.load(Ordering::SeqCst) == before + 1,
        "{what}: the fail point did not drop an answer"
    );
    Ok(reply.into_inner())
}

fn ok(result: &v1::Result, what: &str) -> anyhow::Result<()> {
    ensure!(result.return_code == 0, "{what} answered {result:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_was_lost_is_sent_again_and_applied_once() -> anyhow::Result<()> {
    let group = start_group().await?;
    let (leader, mut client) = leader_and_follower(&group).await?;
    eprintln!("leader {leader}; writing through a follower");
    let spec = v1::ApplicationSpec {
        command: Some("/bin/true".into()),
        ..v1::ApplicationSpec::default()
    };
    let registered = with_a_lost_reply(
        "RegisterApplication",
        client.register_application(v1::RegisterApplicationRequest {
            name: "lost-app".into(),
            application: Some(spec),
        }),
    )
    .await?;
    ok(&registered, "RegisterApplication")?;
    let session = v1::SessionSpec {
        application: "lost-app".into(),
        ..v1::SessionSpec::default()
    };
    with_a_lost_reply(
        "CreateSession",
        client.create_session(v1::CreateSessionRequest {
            session_id: "lost-s".into(),
            session: Some(session),
        }),
    )
    .await?;
    let task = with_a_lost_reply(
        "CreateTask",
        client.create_task(v1::CreateTaskRequest {
            task: Some(v1::TaskSpec {
                session_id: "lost-s".into(),
                input: Some(b"once".to_vec()),
                output: None,
            }),
        }),
    )
    .await?;
    ensure!(task.metadata.map(|m| m.id).as_deref() == Some("1"));
    let listed = count_tasks(&mut client, "lost-s").await?;
    ensure!(listed == 1, "the session holds {listed} tasks, not 1");
    with_a_lost_reply(
        "CloseSession",
        client.close_session(v1::CloseSessionRequest {
            session_id: "lost-s".into(),
        }),
    )
    .await?;
    let unregistered = with_a_lost_reply(
        "UnregisterApplication",
        client.unregister_application(v1::UnregisterApplicationRequest {
            name: "lost-app".into(),
        }),
    )
    .await?;
    ok(&unregistered, "UnregisterApplication")?;
    let _ = group.stop.send(true);
    for member in group.members {
        member.await?;
    }
    Ok(())
}

async fn count_tasks(client: &mut FrontendClient<Channel>, session: &str) -> anyhow::Result<usize> {
    let mut stream = client
        .list_task(v1::ListTaskRequest {
            session_id: session.into(),
        })
        .await?
        .into_inner();
    let mut n = 0;
    while stream.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}
