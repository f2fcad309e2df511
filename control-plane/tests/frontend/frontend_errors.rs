//! The error cases of the specification's checklist (section 14, and the "Bad input" rules of
//! the control-plane issue) against a follower of a three-process cluster, with their gRPC
//! codes and message texts: unknown and malformed names and ids, bad specs, duplicate and
//! missing objects, in-band `Result{-1}` refusals, and the payload limit (a 4 MiB input is
//! accepted, one byte more names the limit).

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
async fn checklist_errors_have_the_specified_codes_and_texts() -> anyhow::Result<()> {
    let run = start("frontend-errors").await?;
    let id = run.followers[0];
    let mut c = frontend(&run.cluster, id)?;
    let log = || run.cluster.log_tail(id, 30);
    application_errors(&mut c)
        .await
        .with_context(|| format!("applications; member log:\n{}", log()))?;
    session_errors(&mut c)
        .await
        .with_context(|| format!("sessions; member log:\n{}", log()))?;
    task_errors(&mut c)
        .await
        .with_context(|| format!("tasks; member log:\n{}", log()))?;
    let mut batch = tasks(&run.cluster, id)?;
    payload_limits(&mut c, &mut batch)
        .await
        .with_context(|| format!("payload limits; member log:\n{}", log()))
}

async fn application_errors(c: &mut Client) -> anyhow::Result<()> {
    let r = c
        .get_application(v1::GetApplicationRequest {
            name: "nope".into(),
        })
        .await;
    expect_status(r, Code::NotFound, &["application nope not found"])?;
    let register = |name: &str, spec: Option<v1::ApplicationSpec>| v1::RegisterApplicationRequest {
        name: name.into(),
        application: spec,
    };
    for bad in ["bad/name", ".hidden", "a..b", ""] {
        let r = c
            .register_application(register(bad, Some(app_spec())))
            .await?;
        expect_refused(r.get_ref(), "invalid application name")?;
    }
    let r = c.register_application(register("no-spec", None)).await;
    expect_status(r, Code::InvalidArgument, &["missing application"])?;
    let relative = v1::ApplicationSpec {
        working_directory: Some("rel".into()),
        ..app_spec()
    };
    let r = c.register_application(register("wd", Some(relative))).await;
    expect_status(
        r,
        Code::InvalidArgument,
        &["working_directory must be an absolute path, got: rel"],
    )?;
    let schemas = [
        (Some("{"), None, None, "invalid input schema"),
        (None, Some("[1]"), None, "invalid output schema"),
        (None, None, Some("nope"), "invalid common data schema"),
    ];
    for (input, output, common_data, text) in schemas {
        let spec = v1::ApplicationSpec {
            schema: Some(v1::ApplicationSchema {
                input: input.map(Into::into),
                output: output.map(Into::into),
                common_data: common_data.map(Into::into),
            }),
            ..app_spec()
        };
        let r = c.register_application(register("schema", Some(spec))).await;
        expect_status(r, Code::InvalidArgument, &[text])?;
    }
    let unknown = v1::UnregisterApplicationRequest {
        name: "nope".into(),
    };
    expect_refused(
        c.unregister_application(unknown).await?.get_ref(),
        "not found",
    )?;
    let update = v1::UpdateApplicationRequest {
        name: "nope".into(),
        application: Some(app_spec()),
    };
    expect_refused(c.update_application(update).await?.get_ref(), "not found")?;
    let r = c
        .register_application(register("err-app", Some(app_spec())))
        .await?;
    ensure!(r.get_ref().return_code == 0);
    Ok(())
}

async fn session_errors(c: &mut Client) -> anyhow::Result<()> {
    let create = |id: &str, spec: Option<v1::SessionSpec>| v1::CreateSessionRequest {
        session_id: id.into(),
        session: spec,
    };
    let r = c.create_session(create("e-s", None)).await;
    expect_status(r, Code::InvalidArgument, &["missing session"])?;
    let r = c
        .create_session(create("", Some(session_spec("err-app"))))
        .await;
    expect_status(r, Code::InvalidArgument, &["session_id must not be empty"])?;
    let r = c
        .create_session(create("e-s", Some(session_spec("nope"))))
        .await;
    expect_status(r, Code::NotFound, &["application nope not found"])?;
    c.create_session(create("e-s", Some(session_spec("err-app"))))
        .await?;
    let r = c
        .create_session(create("e-s", Some(session_spec("err-app"))))
        .await;
    expect_status(r, Code::AlreadyExists, &["already exists"])?;
    let update = v1::UpdateApplicationRequest {
        name: "err-app".into(),
        application: Some(app_spec()),
    };
    expect_refused(
        c.update_application(update).await?.get_ref(),
        "open sessions",
    )?;
    let open = |id: &str| v1::OpenSessionRequest {
        session_id: id.into(),
        session: None,
    };
    let r = c.open_session(open("")).await;
    expect_status(r, Code::InvalidArgument, &["session_id"])?;
    let r = c.open_session(open("e-missing")).await;
    expect_status(r, Code::NotFound, &["session e-missing not found"])?;
    let id = |s: &str| s.to_owned();
    let r = c
        .close_session(v1::CloseSessionRequest {
            session_id: id("e-missing"),
        })
        .await;
    expect_status(r, Code::NotFound, &["not found"])?;
    let r = c
        .get_session(v1::GetSessionRequest {
            session_id: id("e-missing"),
        })
        .await;
    expect_status(r, Code::NotFound, &["not found"])?;
    let r = c
        .delete_session(v1::DeleteSessionRequest {
            session_id: id("e-missing"),
        })
        .await;
    expect_status(r, Code::NotFound, &["not found"])?;
    Ok(())
}

async fn task_errors(c: &mut Client) -> anyhow::Result<()> {
    let r = c.create_task(v1::CreateTaskRequest { task: None }).await;
    expect_status(r, Code::InvalidArgument, &["missing task"])?;
    let r = c.create_task(task_request("e-missing", None)).await;
    expect_status(r, Code::NotFound, &["session e-missing not found"])?;
    c.create_task(task_request("e-s", None)).await?;
    let get = |task: &str, session: &str| v1::GetTaskRequest {
        task_id: task.into(),
        session_id: session.into(),
    };
    let watch = |task: &str, session: &str| v1::WatchTaskRequest {
        task_id: task.into(),
        session_id: session.into(),
    };
    let r = c.get_task(get("abc", "e-s")).await;
    expect_status(r, Code::InvalidArgument, &["invalid task id"])?;
    let r = c.watch_task(watch("abc", "e-s")).await;
    expect_status(r, Code::InvalidArgument, &["invalid task id"])?;
    let r = c.get_task(get("99", "e-s")).await;
    expect_status(r, Code::NotFound, &["not found"])?;
    let r = c.get_task(get("1", "e-missing")).await;
    expect_status(r, Code::NotFound, &["session e-missing not found"])?;
    let r = c.watch_task(watch("99", "e-s")).await;
    expect_status(r, Code::NotFound, &["task 99 not found"])?;
    let r = c.watch_task(watch("1", "e-missing")).await;
    expect_status(r, Code::NotFound, &["session e-missing not found"])?;
    let r = c
        .list_task(v1::ListTaskRequest {
            session_id: "e-missing".into(),
        })
        .await;
    expect_status(r, Code::NotFound, &["not found"])?;
    let r = c.get_node(v1::GetNodeRequest { name: "n1".into() }).await;
    expect_status(r, Code::NotFound, &["node n1 not found"])?;
    let executors = c.list_executor(v1::ListExecutorRequest {}).await?;
    let nodes = c.list_nodes(v1::ListNodesRequest {}).await?;
    ensure!(executors.get_ref().executors.is_empty() && nodes.get_ref().nodes.is_empty());
    let long = "r".repeat(300);
    let mut request = tonic::Request::new(task_request("e-s", None));
    request
        .metadata_mut()
        .insert("flame-request-id", long.parse()?);
    let r = c.create_task(request).await;
    expect_status(r, Code::InvalidArgument, &["request id"])?;
    Ok(())
}

async fn payload_limits(
    c: &mut Client,
    batch: &mut flame_proto::cluster::tasks_client::TasksClient<Channel>,
) -> anyhow::Result<()> {
    let at_limit = vec![7u8; PAYLOAD_LIMIT];
    let task = c
        .create_task(task_request("e-s", Some(&at_limit)))
        .await?
        .into_inner();
    let get = v1::GetTaskRequest {
        task_id: id_of(&task.metadata),
        session_id: "e-s".into(),
    };
    let back = c.get_task(get).await?.into_inner();
    let input = back.spec.and_then(|s| s.input).unwrap_or_default();
    ensure!(input == at_limit, "a 4 MiB input is accepted and stored");
    let over = vec![7u8; PAYLOAD_LIMIT + 1];
    let limit_text = format!("exceeds the limit of {PAYLOAD_LIMIT} bytes");
    let r = c.create_task(task_request("e-s", Some(&over))).await;
    expect_status(r, Code::ResourceExhausted, &["task input", &limit_text])?;
    let r = c
        .create_session(v1::CreateSessionRequest {
            session_id: "e-big".into(),
            session: Some(v1::SessionSpec {
                common_data: Some(over.clone()),
                ..session_spec("err-app")
            }),
        })
        .await;
    expect_status(r, Code::ResourceExhausted, &["common_data", &limit_text])?;
    let request = CreateTasksRequest {
        session_id: "e-s".into(),
        tasks: vec![TaskSubmission {
            input: Some(over),
            request_id: String::new(),
        }],
    };
    let r = batch.create_tasks(request).await;
    expect_status(r, Code::ResourceExhausted, &["task input", &limit_text])?;
    let empty = CreateTasksRequest {
        session_id: "e-s".into(),
        tasks: Vec::new(),
    };
    let r = batch.create_tasks(empty).await;
    expect_status(r, Code::InvalidArgument, &["at least one task"])?;
    Ok(())
}

/// Review D4: a member holds at most `cluster.limits.max_watches` WatchTask streams; one more is
/// refused with RESOURCE_EXHAUSTED naming the key, and a closed watch makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_past_the_members_limit_is_refused_until_one_closes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("watches.yaml");
    std::fs::write(&file, "cluster:\n  limits:\n    max_watches: 3\n")?;
    let file = file.to_str().context("a UTF-8 path")?;
    let run = start_with("frontend-watch-limit", &["--config", file]).await?;
    let id = run.followers[0];
    let mut c = frontend(&run.cluster, id)?;
    let sid = "watch-limit";
    c.create_session(v1::CreateSessionRequest {
        session_id: sid.into(),
        session: Some(session_spec("flmping")),
    })
    .await?;
    // Tasks stay Pending (no agent), so their watches stay open.
    let task = c.create_task(task_request(sid, None)).await?.into_inner();
    let watch = || v1::WatchTaskRequest {
        task_id: id_of(&task.metadata),
        session_id: sid.into(),
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = c.watch_task(watch()).await?.into_inner();
        next(&mut stream).await?.context("the first message")?;
        open.push(stream);
    }
    let refused = c.watch_task(watch()).await.map(|_| ());
    expect_status(refused, Code::ResourceExhausted, &["max_watches"])?;
    drop(open.pop());
    eventually("a closed watch to make room", || {
        let mut c = c.clone();
        async move { Ok(c.watch_task(watch()).await.ok().map(|_| ())) }
    })
    .await
}
