//! The `flame.v1` Frontend and the batch `Tasks` service of a three-process cluster, driven
//! with the generated Rust clients through the leader and through a follower: applications,
//! sessions, tasks (single, batch, request-id deduplication), reads, watches, and the rules of
//! closed sessions and unregistering (the remaining checklist errors are in
//! `frontend_errors.rs`).
//!
//! Tasks stay Pending here: there are no node agents, so closing a session is what ends them
//! (Cancelled), and that is what the watches observe.

use crate::frontend_support;

use anyhow::{Context, ensure};
use flame_proto::cluster::{CreateTasksRequest, TaskSubmission};
use flame_proto::v1;
use flame_proto::v1::frontend_client::FrontendClient;
use frontend_support::*;
use tonic::Code;
use tonic::transport::Channel;

type Client = FrontendClient<Channel>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_works_through_the_leader_and_through_a_follower() -> anyhow::Result<()> {
    let run = start("frontend-api").await?;
    for (who, id) in [("leader", run.leader), ("follower", run.followers[0])] {
        let log = || run.cluster.log_tail(id, 30);
        scenario(&run, id, who)
            .await
            .with_context(|| format!("through the {who} (member {id}); its log:\n{}", log()))?;
    }
    watch_on_a_follower_sees_writes_made_through_the_leader(&run).await
}

async fn scenario(run: &Running, id: u64, prefix: &str) -> anyhow::Result<()> {
    let mut c = frontend(&run.cluster, id)?;
    let app = format!("{prefix}-app");
    let sid = format!("{prefix}-s1");
    applications(&mut c, &app).await.context("applications")?;
    sessions(&mut c, &app, &sid).await.context("sessions")?;
    let mut batch = tasks(&run.cluster, id)?;
    create_tasks(&mut c, &mut batch, &sid)
        .await
        .context("creating tasks")?;
    read_tasks(&mut c, &sid).await.context("reading tasks")?;
    watch_until_closed(&mut c, &sid).await.context("watching")?;
    closed_session_rules(&mut c, &app, &sid)
        .await
        .context("closed sessions")?;
    unregister(&mut c, &app).await.context("unregistering")
}

async fn applications(c: &mut Client, app: &str) -> anyhow::Result<()> {
    let register = v1::RegisterApplicationRequest {
        name: app.into(),
        application: Some(app_spec()),
    };
    let r = c.register_application(register.clone()).await?.into_inner();
    ensure!(r.return_code == 0, "register: {r:?}");
    let got = c
        .get_application(v1::GetApplicationRequest { name: app.into() })
        .await?
        .into_inner();
    ensure!(id_of(&got.metadata) == app, "metadata: {:?}", got.metadata);
    round_trips(got.spec.context("spec")?)?;
    let list = c
        .list_application(v1::ListApplicationRequest {})
        .await?
        .into_inner();
    let names: Vec<_> = list
        .applications
        .iter()
        .map(|a| id_of(&a.metadata))
        .collect();
    for name in [app, "flmexec", "flmping", "flmrun"] {
        ensure!(names.iter().any(|n| n == name), "{name} listed: {names:?}");
    }
    let dup = c.register_application(register).await?.into_inner();
    expect_refused(&dup, "already exists")?;
    update_replaces_every_field(c, app).await
}

/// Registered fields read back as sent; absent optionals stay absent; defaults are stored.
fn round_trips(spec: v1::ApplicationSpec) -> anyhow::Result<()> {
    let sent = app_spec();
    ensure!(
        (
            &spec.command,
            &spec.arguments,
            &spec.environments,
            &spec.labels
        ) == (
            &sent.command,
            &sent.arguments,
            &sent.environments,
            &sent.labels
        ),
        "command, arguments, environments and labels round-trip"
    );
    ensure!(spec.working_directory == sent.working_directory && spec.schema == sent.schema);
    ensure!(
        spec.installer == sent.installer && spec.url.is_none(),
        "url stays absent"
    );
    ensure!((spec.max_instances, spec.delay_release) == (Some(1_000_000), Some(60)));
    ensure!(
        spec.shim() == v1::Shim::Host,
        "a missing shim reads back Host"
    );
    Ok(())
}

/// UpdateApplication replaces every field, shim and image included.
async fn update_replaces_every_field(c: &mut Client, app: &str) -> anyhow::Result<()> {
    let update = v1::UpdateApplicationRequest {
        name: app.into(),
        application: Some(v1::ApplicationSpec {
            shim: v1::Shim::Wasm.into(),
            image: Some("img".into()),
            ..app_spec()
        }),
    };
    let r = c.update_application(update).await?.into_inner();
    ensure!(r.return_code == 0, "update: {r:?}");
    let got = c
        .get_application(v1::GetApplicationRequest { name: app.into() })
        .await?
        .into_inner();
    let spec = got.spec.context("spec")?;
    ensure!(spec.shim() == v1::Shim::Wasm && spec.image.as_deref() == Some("img"));
    Ok(())
}

async fn sessions(c: &mut Client, app: &str, sid: &str) -> anyhow::Result<()> {
    let created = c
        .create_session(v1::CreateSessionRequest {
            session_id: sid.into(),
            session: Some(session_spec(app)),
        })
        .await?
        .into_inner();
    let status = session_status(&created)?;
    ensure!(status.state() == v1::SessionState::Open && status.completion_time.is_none());
    ensure!(
        (
            status.pending,
            status.running,
            status.succeed,
            status.failed
        ) == (0, 0, 0, 0)
    );
    let spec = created.spec.clone().context("spec")?;
    ensure!(spec.batch_size == 1, "batch_size is normalised to 1");
    ensure!((spec.min_instances, spec.max_instances) == (2, None));
    let default = v1::ResourceRequirement {
        cpu: 1,
        memory: 1 << 30,
        gpu: 0,
    };
    ensure!(
        spec.resreq == Some(default),
        "default resreq: {:?}",
        spec.resreq
    );
    ensure!(spec.common_data == session_spec(app).common_data);
    let explicit = v1::ResourceRequirement {
        cpu: 1,
        memory: 512,
        gpu: 0,
    };
    let with_resreq = c
        .create_session(v1::CreateSessionRequest {
            session_id: format!("{sid}-r"),
            session: Some(v1::SessionSpec {
                resreq: Some(explicit),
                ..session_spec(app)
            }),
        })
        .await?
        .into_inner();
    ensure!(with_resreq.spec.context("spec")?.resreq == Some(explicit));
    open_rules(c, app, sid, &created).await?;
    concurrent_opens_yield_one_session(c, app, &format!("{sid}-c")).await
}

async fn open_rules(
    c: &mut Client,
    app: &str,
    sid: &str,
    created: &v1::Session,
) -> anyhow::Result<()> {
    let open = |session| v1::OpenSessionRequest {
        session_id: sid.into(),
        session,
    };
    let plain = c.open_session(open(None)).await?.into_inner();
    ensure!(
        &plain == created,
        "OpenSession without spec returns it unchanged"
    );
    let other_data = v1::SessionSpec {
        common_data: Some(b"other".to_vec()),
        ..session_spec(app)
    };
    let matching = c.open_session(open(Some(other_data))).await?.into_inner();
    ensure!(&matching == created, "common_data is not replaced");
    let mismatch = v1::SessionSpec {
        max_instances: Some(5),
        ..session_spec(app)
    };
    let r = c.open_session(open(Some(mismatch))).await;
    expect_status(
        r,
        Code::InvalidArgument,
        &["spec mismatch", "max_instances"],
    )?;
    let got = c
        .get_session(v1::GetSessionRequest {
            session_id: sid.into(),
        })
        .await?
        .into_inner();
    ensure!(&got == created, "GetSession: {got:?}");
    let list = c
        .list_session(v1::ListSessionRequest {})
        .await?
        .into_inner();
    ensure!(list.sessions.iter().any(|s| s == created), "listed");
    Ok(())
}

async fn concurrent_opens_yield_one_session(
    c: &mut Client,
    app: &str,
    sid: &str,
) -> anyhow::Result<()> {
    let opens = (0..6).map(|_| {
        let mut c = c.clone();
        let request = v1::OpenSessionRequest {
            session_id: sid.into(),
            session: Some(session_spec(app)),
        };
        async move { c.open_session(request).await.map(|r| r.into_inner()) }
    });
    let sessions = futures::future::try_join_all(opens).await?;
    let created: Vec<i64> = sessions
        .iter()
        .map(|s| session_status(s).map(|st| st.creation_time))
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        created.windows(2).all(|w| w[0] == w[1]),
        "one session: {created:?}"
    );
    let list = c
        .list_session(v1::ListSessionRequest {})
        .await?
        .into_inner();
    let count = list
        .sessions
        .iter()
        .filter(|s| id_of(&s.metadata) == sid)
        .count();
    ensure!(count == 1, "{count} sessions named {sid}");
    Ok(())
}

async fn create_tasks(
    c: &mut Client,
    batch: &mut flame_proto::cluster::tasks_client::TasksClient<Channel>,
    sid: &str,
) -> anyhow::Result<()> {
    let first = c
        .create_task(task_request(sid, Some(b"a")))
        .await?
        .into_inner();
    ensure!(id_of(&first.metadata) == "1" && state_of(&first) == v1::TaskState::Pending);
    ensure!(event_codes(&first) == [0], "created event: {first:?}");
    let spec = first.spec.context("spec")?;
    ensure!(spec.session_id == sid && spec.input.as_deref() == Some(&b"a"[..]));
    let second = c.create_task(task_request(sid, None)).await?.into_inner();
    ensure!(id_of(&second.metadata) == "2");
    for _ in 0..2 {
        let again = c
            .create_task(task_request_with_id(sid, b"b", "rq-1"))
            .await?
            .into_inner();
        ensure!(
            id_of(&again.metadata) == "3",
            "a repeated request id: {again:?}"
        );
    }
    let submit = |id: &str, input: &[u8]| TaskSubmission {
        input: Some(input.to_vec()),
        request_id: id.into(),
    };
    let request = CreateTasksRequest {
        session_id: sid.into(),
        tasks: vec![submit("rb-1", b"x"), submit("", b"y"), submit("rb-1", b"x")],
    };
    let ids = |r: flame_proto::cluster::CreateTasksResponse| -> Vec<String> {
        r.tasks.iter().map(|t| id_of(&t.metadata)).collect()
    };
    let created = ids(batch.create_tasks(request.clone()).await?.into_inner());
    ensure!(created == ["4", "5", "4"], "batch: {created:?}");
    let repeated = ids(batch.create_tasks(request).await?.into_inner());
    ensure!(repeated == ["4", "6", "4"], "repeated batch: {repeated:?}");
    let reused = CreateTasksRequest {
        session_id: sid.into(),
        tasks: vec![submit("rb-1", b"z")],
    };
    let refused = batch.create_tasks(reused).await;
    ensure!(
        matches!(&refused, Err(s) if s.code() == tonic::Code::InvalidArgument),
        "a request id reused with another input: {refused:?}"
    );
    let empty = c
        .create_task(task_request(sid, Some(b"")))
        .await?
        .into_inner();
    ensure!(id_of(&empty.metadata) == "7");
    Ok(())
}

async fn read_tasks(c: &mut Client, sid: &str) -> anyhow::Result<()> {
    let get = |id: &str| v1::GetTaskRequest {
        task_id: id.into(),
        session_id: sid.into(),
    };
    let input = |t: v1::Task| t.spec.and_then(|s| s.input);
    let one = c.get_task(get("1")).await?.into_inner();
    ensure!(event_codes(&one) == [0], "events: {one:?}");
    ensure!(input(one) == Some(b"a".to_vec()));
    ensure!(input(c.get_task(get("2")).await?.into_inner()).is_none());
    ensure!(input(c.get_task(get("7")).await?.into_inner()) == Some(Vec::new()));
    let stream = c
        .list_task(v1::ListTaskRequest {
            session_id: sid.into(),
        })
        .await?
        .into_inner();
    let listed = collect(stream).await?;
    let ids: Vec<String> = listed.iter().map(|t| id_of(&t.metadata)).collect();
    ensure!(
        ids == ["1", "2", "3", "4", "5", "6", "7"],
        "ListTask: {ids:?}"
    );
    ensure!(
        listed.iter().all(|t| event_codes(t) == [0]),
        "events listed"
    );
    ensure!(input(listed[4].clone()) == Some(b"y".to_vec()));
    let session = c
        .get_session(v1::GetSessionRequest {
            session_id: sid.into(),
        })
        .await?
        .into_inner();
    let status = session_status(&session)?;
    ensure!(
        (status.pending, status.cancelled) == (7, 0),
        "counters: {status:?}"
    );
    ensure!(status.events.is_empty(), "no task events on a session");
    Ok(())
}

async fn watch_until_closed(c: &mut Client, sid: &str) -> anyhow::Result<()> {
    let watch = |id: &str| v1::WatchTaskRequest {
        task_id: id.into(),
        session_id: sid.into(),
    };
    let mut stream = c.watch_task(watch("1")).await?.into_inner();
    let first = next(&mut stream)
        .await?
        .context("the current state first")?;
    ensure!(state_of(&first) == v1::TaskState::Pending && event_codes(&first) == [0]);
    let closed = c
        .close_session(v1::CloseSessionRequest {
            session_id: sid.into(),
        })
        .await?
        .into_inner();
    let status = session_status(&closed)?;
    ensure!(status.state() == v1::SessionState::Closed && status.completion_time.is_some());
    ensure!(
        (status.pending, status.cancelled) == (0, 7),
        "counters: {status:?}"
    );
    let cancelled = next(&mut stream).await?.context("the Cancelled task")?;
    ensure!(
        state_of(&cancelled) == v1::TaskState::Cancelled,
        "{cancelled:?}"
    );
    ensure!(
        event_codes(&cancelled) == [0, 4],
        "events carried: {cancelled:?}"
    );
    ensure!(cancelled.status.and_then(|s| s.completion_time).is_some());
    ensure!(
        next(&mut stream).await?.is_none(),
        "the stream ends after Cancelled"
    );
    let again = collect(c.watch_task(watch("1")).await?.into_inner()).await?;
    ensure!(
        again.len() == 1,
        "a finished task yields exactly one message"
    );
    ensure!(state_of(&again[0]) == v1::TaskState::Cancelled);
    Ok(())
}

async fn closed_session_rules(c: &mut Client, app: &str, sid: &str) -> anyhow::Result<()> {
    let r = c.create_task(task_request(sid, Some(b"late"))).await;
    expect_status(
        r,
        Code::InvalidArgument,
        &["Cannot create task in closed session"],
    )?;
    for spec in [None, Some(session_spec(app))] {
        let r = c
            .open_session(v1::OpenSessionRequest {
                session_id: sid.into(),
                session: spec,
            })
            .await;
        expect_status(r, Code::InvalidArgument, &["not open"])?;
    }
    let close = |id: String| v1::CloseSessionRequest { session_id: id };
    let first = c.get_session(v1::GetSessionRequest {
        session_id: sid.into(),
    });
    let first = first.await?.into_inner();
    let again = c.close_session(close(sid.into())).await?.into_inner();
    ensure!(
        session_status(&again)?.completion_time == session_status(&first)?.completion_time,
        "a repeat close keeps the first completion_time"
    );
    let unregister = v1::UnregisterApplicationRequest { name: app.into() };
    let r = c.unregister_application(unregister).await?.into_inner();
    expect_refused(&r, "open sessions")?;
    let delete = |id: String| v1::DeleteSessionRequest { session_id: id };
    let r = c.delete_session(delete(format!("{sid}-r"))).await;
    expect_status(r, Code::InvalidArgument, &["open"])?;
    for suffix in ["-r", "-c"] {
        c.close_session(close(format!("{sid}{suffix}"))).await?;
    }
    let deleted = c
        .delete_session(delete(format!("{sid}-r")))
        .await?
        .into_inner();
    ensure!(id_of(&deleted.metadata) == format!("{sid}-r"));
    let gone = c
        .get_session(v1::GetSessionRequest {
            session_id: format!("{sid}-r"),
        })
        .await;
    expect_status(gone, Code::NotFound, &["not found"])?;
    let list = c
        .list_session(v1::ListSessionRequest {})
        .await?
        .into_inner();
    let listed = list.sessions.iter().find(|s| id_of(&s.metadata) == sid);
    let state = listed.and_then(|s| s.status.as_ref()).map(|s| s.state());
    ensure!(
        state == Some(v1::SessionState::Closed),
        "closed sessions stay listed"
    );
    Ok(())
}

async fn unregister(c: &mut Client, app: &str) -> anyhow::Result<()> {
    let request = v1::UnregisterApplicationRequest { name: app.into() };
    let r = c
        .unregister_application(request.clone())
        .await?
        .into_inner();
    ensure!(r.return_code == 0, "unregister: {r:?}");
    let got = c
        .get_application(v1::GetApplicationRequest { name: app.into() })
        .await;
    expect_status(
        got,
        Code::NotFound,
        &[&format!("application {app} not found")],
    )?;
    let list = c
        .list_session(v1::ListSessionRequest {})
        .await?
        .into_inner();
    let left = list
        .sessions
        .iter()
        .filter(|s| s.spec.as_ref().is_some_and(|sp| sp.application == app))
        .count();
    ensure!(
        left == 0,
        "{left} sessions of {app} left after unregistering"
    );
    let r = c.unregister_application(request).await?.into_inner();
    expect_refused(&r, "not found")
}

async fn watch_on_a_follower_sees_writes_made_through_the_leader(
    run: &Running,
) -> anyhow::Result<()> {
    let mut leader = frontend(&run.cluster, run.leader)?;
    let mut follower = frontend(&run.cluster, run.followers[1])?;
    let sid = "cross-s";
    let spec = session_spec("flmping");
    leader
        .create_session(v1::CreateSessionRequest {
            session_id: sid.into(),
            session: Some(spec),
        })
        .await?;
    for _ in 0..5 {
        let task = leader
            .create_task(task_request(sid, None))
            .await?
            .into_inner();
        let watch = v1::WatchTaskRequest {
            task_id: id_of(&task.metadata),
            session_id: sid.into(),
        };
        let mut stream = follower.watch_task(watch).await?.into_inner();
        let first = next(&mut stream)
            .await?
            .context("the follower finds the new task")?;
        ensure!(state_of(&first) == v1::TaskState::Pending);
    }
    let watch = v1::WatchTaskRequest {
        task_id: "5".into(),
        session_id: sid.into(),
    };
    let mut stream = follower.watch_task(watch).await?.into_inner();
    next(&mut stream).await?.context("current state")?;
    let close = v1::CloseSessionRequest {
        session_id: sid.into(),
    };
    leader.close_session(close).await?;
    let last = next(&mut stream)
        .await?
        .context("Cancelled on the follower")?;
    ensure!(state_of(&last) == v1::TaskState::Cancelled);
    ensure!(next(&mut stream).await?.is_none(), "the stream ends");
    Ok(())
}
