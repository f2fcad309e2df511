//! Claim: leader discovery degrades. Against a server that does not implement
//! `Cluster/Status` (a single-server Flame), the `Connection` takes the endpoint that answered
//! UNIMPLEMENTED as the leader and its writes go there, instead of failing with "no Flame
//! member answered".

use flame_proto::cluster::tasks_server::{Tasks, TasksServer};
use flame_proto::cluster::*;
use flame_proto::v1;
use flame_sdk::client::{ConnectOptions, Connection, TaskRequest};
use std::time::Duration;
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
