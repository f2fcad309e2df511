//! Claim: leader discovery degrades. Against a server that does not implement
//! `Cluster/Status` (a single-server Flame), the `Connection` takes the endpoint that answered
//! UNIMPLEMENTED as the leader and its writes go there, instead of failing with "no Flame
//! member answered"; and a batch for a server without `Tasks/CreateTasks` goes through
//! `CreateTask`.

use crate::common;

use common::fake::unused;
use flame_proto::cluster::tasks_server::{Tasks, TasksServer};
use flame_proto::cluster::*;
use flame_proto::v1;
use flame_proto::v1::frontend_server::{Frontend, FrontendServer};
use flame_sdk::client::{ConnectOptions, Connection, TaskRequest};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// A server with the Tasks service only.
#[derive(Clone, Default)]
struct SingleServer;

#[tonic::async_trait]
impl Tasks for SingleServer {
    async fn create_tasks(
        &self,
        request: Request<CreateTasksRequest>,
    ) -> Result<Response<CreateTasksResponse>, Status> {
        let tasks = (1..=request.get_ref().tasks.len())
            .map(|i| v1::Task {
                metadata: Some(v1::Metadata {
                    id: i.to_string(),
                    name: i.to_string(),
                }),
                ..v1::Task::default()
            })
            .collect();
        Ok(Response::new(CreateTasksResponse { tasks }))
    }
}

#[tokio::test]
async fn a_server_without_the_cluster_service_is_taken_as_the_leader() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TasksServer::new(SingleServer))
            .serve_with_incoming(incoming),
    );
    let options = ConnectOptions {
        deadline: Duration::from_secs(10),
        ..ConnectOptions::default()
    };
    let conn = Connection::with_options(&[url.as_str()], options).unwrap();
    let session = conn.attach_session("s1");
    let requests: Vec<TaskRequest> = (0..2).map(|_| TaskRequest::new(None)).collect();
    let tasks = session.create_tasks(&requests).await.unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(conn.leader().await.unwrap(), url);
}

/// A single upstream server: the Frontend only, where CreateTask numbers tasks in order and
/// every other method is UNIMPLEMENTED.
#[derive(Clone, Default)]
struct FrontendOnly {
    created: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

#[tonic::async_trait]
impl Frontend for FrontendOnly {
    type WatchTaskStream = ReceiverStream<Result<v1::Task, Status>>;
    type ListTaskStream = ReceiverStream<Result<v1::Task, Status>>;

    async fn create_task(
        &self,
        request: Request<v1::CreateTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let spec = request.into_inner().task.unwrap_or_default();
        let id = {
            let mut created = self.created.lock().expect("not poisoned");
            created.push(spec.input.clone());
            created.len()
        };
        Ok(Response::new(v1::Task {
            metadata: Some(v1::Metadata {
                id: id.to_string(),
                name: id.to_string(),
            }),
            spec: Some(spec),
            status: None,
        }))
    }

    async fn watch_task(
        &self,
        _: Request<v1::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_task(
        &self,
        _: Request<v1::ListTaskRequest>,
    ) -> Result<Response<Self::ListTaskStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    unused! {
        register_application(v1::RegisterApplicationRequest) -> v1::Result;
        unregister_application(v1::UnregisterApplicationRequest) -> v1::Result;
        update_application(v1::UpdateApplicationRequest) -> v1::Result;
        get_application(v1::GetApplicationRequest) -> v1::Application;
        list_application(v1::ListApplicationRequest) -> v1::ApplicationList;
        list_executor(v1::ListExecutorRequest) -> v1::ExecutorList;
        list_nodes(v1::ListNodesRequest) -> v1::NodeList;
        get_node(v1::GetNodeRequest) -> v1::GetNodeResponse;
        create_session(v1::CreateSessionRequest) -> v1::Session;
        delete_session(v1::DeleteSessionRequest) -> v1::Session;
        open_session(v1::OpenSessionRequest) -> v1::Session;
        close_session(v1::CloseSessionRequest) -> v1::Session;
        get_session(v1::GetSessionRequest) -> v1::Session;
        list_session(v1::ListSessionRequest) -> v1::SessionList;
        get_task(v1::GetTaskRequest) -> v1::Task;
    }
}

/// Claim: against a server without the `Tasks` service, a batch is created through
/// `CreateTask`, one call per task, and the tasks come back in submission order.
#[tokio::test]
async fn a_batch_for_a_server_without_create_tasks_is_sent_task_by_task_in_order() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = FrontendOnly::default();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FrontendServer::new(server.clone()))
            .serve_with_incoming(incoming),
    );
    let options = ConnectOptions {
        deadline: Duration::from_secs(10),
        ..ConnectOptions::default()
    };
    let conn = Connection::with_options(&[url.as_str()], options).unwrap();
    let session = conn.attach_session("s1");
    let requests: Vec<TaskRequest> = (0..40u8).map(|i| TaskRequest::new(Some(vec![i]))).collect();
    let tasks = session.create_tasks(&requests).await.unwrap();
    let inputs: Vec<Option<Vec<u8>>> = tasks
        .iter()
        .map(|t| t.spec.as_ref().and_then(|s| s.input.clone()))
        .collect();
    let sent: Vec<Option<Vec<u8>>> = requests.iter().map(|r| r.input.clone()).collect();
    assert_eq!(inputs, sent, "tasks come back in submission order");
    assert_eq!(
        server.created.lock().unwrap().len(),
        40,
        "one CreateTask per task"
    );
}
