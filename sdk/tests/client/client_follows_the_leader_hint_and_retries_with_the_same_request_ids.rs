//! Claim: a `Connection` given only a stale member follows the NotLeader hint in the status
//! metadata to the leader, and a batch whose first attempt failed with UNAVAILABLE after the
//! leader recorded it (a lost reply) is re-sent with the SAME request ids, so the leader can
//! answer with the original tasks.
//!
//! How: two in-process fake members serve `Cluster/Status` and `Tasks/CreateTasks`. Member A
//! claims to lead (stale) but refuses writes with NotLeader pointing at B; member B leads,
//! records every batch's request ids, fails the first batch with UNAVAILABLE and answers the
//! second.

use flame_proto::cluster::cluster_server::{Cluster, ClusterServer};
use flame_proto::cluster::tasks_server::{Tasks, TasksServer};
use flame_proto::cluster::*;
use flame_proto::error::{FlameError, LeaderHint};
use flame_proto::v1;
use flame_sdk::client::{ConnectOptions, Connection, TaskRequest};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A fake member: with `hint` it refuses writes with NotLeader naming that address; without,
/// it records every batch's request ids.
#[derive(Clone, Default)]
struct Fake {
    hint: Option<String>,
    batches: Arc<Mutex<Vec<Vec<String>>>>,
}

#[tonic::async_trait]
impl Cluster for Fake {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<MemberStatus>, Status> {
        Ok(Response::new(MemberStatus {
            role: Role::Leader as i32,
            ..MemberStatus::default()
        }))
    }
    async fn add_learner(
        &self,
        _: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn change_membership(
        &self,
        _: Request<ChangeMembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn transfer_leader(
        &self,
        _: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn trigger_snapshot(
        &self,
        _: Request<TriggerSnapshotRequest>,
    ) -> Result<Response<TriggerSnapshotReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl Tasks for Fake {
    async fn create_tasks(
        &self,
        request: Request<CreateTasksRequest>,
    ) -> Result<Response<CreateTasksResponse>, Status> {
        if let Some(addr) = &self.hint {
            let hint = LeaderHint {
                id: 2,
                addr: addr.clone(),
            };
            return Err(FlameError::NotLeader { leader: Some(hint) }.into());
        }
        let ids: Vec<String> = request
            .get_ref()
            .tasks
            .iter()
            .map(|t| t.request_id.clone())
            .collect();
        let first = {
            let mut batches = self.batches.lock().unwrap();
            batches.push(ids.clone());
            batches.len() == 1
        };
        if first {
            return Err(Status::unavailable("reply lost"));
        }
        let tasks = ids
            .iter()
            .map(|id| v1::Task {
                metadata: Some(v1::Metadata {
                    id: format!("t-{id}"),
                    name: format!("t-{id}"),
                }),
                ..v1::Task::default()
            })
            .collect();
        Ok(Response::new(CreateTasksResponse { tasks }))
    }
}

/// Serves `fake` on a fresh loopback port; returns its URL.
async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ClusterServer::new(fake.clone()))
            .add_service(TasksServer::new(fake))
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}

#[tokio::test]
async fn client_follows_the_leader_hint_and_retries_with_the_same_request_ids() {
    let leader = Fake::default();
    let b = serve(leader.clone()).await;
    let a = serve(Fake {
        hint: Some(b.clone()),
        ..Fake::default()
    })
    .await;
    let options = ConnectOptions {
        deadline: Duration::from_secs(10),
        ..ConnectOptions::default()
    };
    let conn = Connection::with_options(&[a.as_str()], options).unwrap();
    let session = conn.attach_session("s1");
    let requests: Vec<TaskRequest> = (0..3).map(|_| TaskRequest::new(None)).collect();
    let tasks = session.create_tasks(&requests).await.unwrap();
    let sent: Vec<String> = requests.iter().map(|r| r.request_id.clone()).collect();
    let batches = leader.batches.lock().unwrap().clone();
    assert_eq!(
        batches,
        vec![sent.clone(), sent.clone()],
        "the retry re-sent the same ids"
    );
    let got: Vec<String> = tasks
        .iter()
        .map(|t| t.metadata.clone().unwrap().id)
        .collect();
    let want: Vec<String> = sent.iter().map(|id| format!("t-{id}")).collect();
    assert_eq!(got, want);
    assert_eq!(
        conn.leader().await.unwrap(),
        b,
        "the hint became the cached leader"
    );
}
