//! Claim: a watch that delivered a terminal state reads its stream to the server's end of
//! stream instead of dropping it, so it never resets the HTTP/2 stream. h2 closes a
//! connection with `GOAWAY ENHANCE_YOUR_CALM` ("too_many_internal_resets") after 1,024 such
//! resets, failing every call on it at once; `flmctl bench -n 3000 -c 8` hit that.
//!
//! How: an in-process fake member answers `WatchTask` with one Succeed task and ends the
//! stream a few milliseconds later, and counts the streams the client cancelled in between
//! (its response channel closed before the server ended it). Many watches run through one
//! `Connection`; none may be cancelled.

use crate::common;

use common::fake::unused;
use flame_proto::cluster::cluster_server::{Cluster, ClusterServer};
use flame_proto::cluster::*;
use flame_proto::v1::frontend_server::{Frontend, FrontendServer};
use flame_proto::v1::{self, *};
use flame_sdk::client::{Connection, TaskState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How long the fake waits between the terminal task and its end of stream: long enough that
/// a client dropping the stream at once is seen doing so (a few milliseconds were not, with
/// 200 watches in flight), well under the SDK's wait for the end.
const END_DELAY: Duration = Duration::from_millis(100);

/// A member that leads, and whose every task is already Succeed.
#[derive(Clone, Default)]
struct Fake {
    /// Watches whose client went away before the server ended the stream.
    cancelled: Arc<AtomicU64>,
    /// Watches served.
    served: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Cluster for Fake {
    async fn status(
        &self,
        _: Request<StatusRequest>,
    ) -> std::result::Result<Response<MemberStatus>, Status> {
        Ok(Response::new(MemberStatus {
            role: Role::Leader as i32,
            ..MemberStatus::default()
        }))
    }
    unused! {
        add_learner(AddLearnerRequest) -> MembershipReply;
        change_membership(ChangeMembershipRequest) -> MembershipReply;
        transfer_leader(TransferLeaderRequest) -> TransferLeaderReply;
        trigger_snapshot(TriggerSnapshotRequest) -> TriggerSnapshotReply;
    }
}

#[tonic::async_trait]
impl Frontend for Fake {
    type WatchTaskStream = ReceiverStream<std::result::Result<Task, Status>>;
    type ListTaskStream = ReceiverStream<std::result::Result<Task, Status>>;

    async fn watch_task(
        &self,
        request: Request<WatchTaskRequest>,
    ) -> std::result::Result<Response<Self::WatchTaskStream>, Status> {
        let req = request.into_inner();
        let task = Task {
            metadata: Some(Metadata {
                id: req.task_id,
                ..Metadata::default()
            }),
            spec: Some(TaskSpec {
                session_id: req.session_id,
                ..TaskSpec::default()
            }),
            status: Some(TaskStatus {
                state: v1::TaskState::Succeed as i32,
                ..TaskStatus::default()
            }),
        };
        let (tx, rx) = mpsc::channel(1);
        let (cancelled, served) = (self.cancelled.clone(), self.served.clone());
        tokio::spawn(async move {
            served.fetch_add(1, Ordering::SeqCst);
            if tx.send(Ok(task)).await.is_err() {
                cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            tokio::select! {
                _ = tx.closed() => { cancelled.fetch_add(1, Ordering::SeqCst); }
                _ = tokio::time::sleep(END_DELAY) => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_task(
        &self,
        _: Request<ListTaskRequest>,
    ) -> std::result::Result<Response<Self::ListTaskStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    unused! {
        register_application(RegisterApplicationRequest) -> v1::Result;
        unregister_application(UnregisterApplicationRequest) -> v1::Result;
        update_application(UpdateApplicationRequest) -> v1::Result;
        get_application(GetApplicationRequest) -> Application;
        list_application(ListApplicationRequest) -> ApplicationList;
        list_executor(ListExecutorRequest) -> ExecutorList;
        list_nodes(ListNodesRequest) -> NodeList;
        get_node(GetNodeRequest) -> GetNodeResponse;
        create_session(CreateSessionRequest) -> Session;
        delete_session(DeleteSessionRequest) -> Session;
        open_session(OpenSessionRequest) -> Session;
        close_session(CloseSessionRequest) -> Session;
        get_session(GetSessionRequest) -> Session;
        list_session(ListSessionRequest) -> SessionList;
        create_task(CreateTaskRequest) -> Task;
        get_task(GetTaskRequest) -> Task;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_watch_never_resets_its_stream() -> anyhow::Result<()> {
    let fake = Fake::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(ClusterServer::new(fake.clone()))
        .add_service(FrontendServer::new(fake.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);

    let conn = Connection::new(&[addr.to_string()])?;
    let session = conn.attach_session("s");
    const WATCHES: u64 = 200;
    let mut running = tokio::task::JoinSet::new();
    for id in 0..WATCHES {
        let session = session.clone();
        running.spawn(async move { session.wait_task(&(id + 1).to_string()).await });
    }
    while let Some(done) = running.join_next().await {
        let task = done??;
        let state = task.status.map(|s| s.state);
        assert_eq!(state, Some(TaskState::Succeed as i32));
    }
    assert_eq!(fake.served.load(Ordering::SeqCst), WATCHES);
    assert_eq!(
        fake.cancelled.load(Ordering::SeqCst),
        0,
        "watches reset their streams before the server ended them"
    );
    server.abort();
    Ok(())
}
