//! Bad input over the Flight face gets a clear error with the right gRPC code, never a panic,
//! and leaves no partial object behind: bad keys, unknown tickets and actions, a PATCH of a
//! missing object, an oversized put, a malformed descriptor.

use crate::support;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Criteria, Ticket};
use bytes::Bytes;
use flame_cache::CacheClient;
use support::Cluster;
use tonic::Code;

/// A one-cache cluster whose largest object is 64 KiB.
async fn small_cache() -> Cluster {
    let mut cluster = Cluster::new(1);
    let mut config = cluster.config(0);
    config.max_object_size = 64 << 10;
    cluster.start_with(0, config).await;
    cluster
}

/// A raw Flight client of cache 0, for requests `CacheClient` would never send.
async fn raw(cluster: &Cluster) -> FlightServiceClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.slots[0].flight))
            .unwrap()
            .connect()
            .await
            .unwrap();
    FlightServiceClient::new(channel)
}

/// The code and message of a failed Flame call.
fn code_of(e: flame_cache::CacheError) -> (Code, String) {
    let status = tonic::Status::from(flame_proto::error::FlameError::from(e));
    (status.code(), status.message().to_owned())
}

async fn objects_held(client: &CacheClient) -> usize {
    client.list("").await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_invalid_arguments_that_name_the_rule() {
    let cluster = small_cache().await;
    let mut raw = raw(&cluster).await;
    for ticket in ["app//obj:0", "app/../obj:0", "app/ssn/a\\b:0", "app/ssn:0"] {
        let err = raw
            .do_get(Ticket {
                ticket: Bytes::from(ticket),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{ticket}: {err:?}");
        assert!(!err.message().is_empty(), "{ticket}");
    }
    let client = cluster.client(0).await;
    for target in ["", "app", "app/..", "/ssn", "a/b/c/d"] {
        let err = client.put(target, Bytes::from_static(b"x")).await;
        let (code, message) = code_of(err.unwrap_err());
        assert_eq!(code, Code::InvalidArgument, "{target:?}: {message}");
    }
    assert_eq!(objects_held(&client).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tickets_and_actions_are_refused_and_missing_objects_are_not_found() {
    let cluster = small_cache().await;
    let mut raw = raw(&cluster).await;
    let garbage = Bytes::from_static(b"\xff\xfe not a ticket");
    let err = raw.do_get(Ticket { ticket: garbage }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = raw
        .do_get(Ticket {
            ticket: Bytes::from("app/ssn/absent:0"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = raw
        .do_action(Action::new("EXPLODE", Bytes::new()))
        .await
        .unwrap_err();
    assert!(err.message().contains("EXPLODE"), "{err:?}");
    let err = raw
        .do_action(Action::new("DELETE", Bytes::from("app/../x")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // A listing with a non-UTF-8 expression is refused too.
    let err = raw
        .list_flights(Criteria {
            expression: Bytes::from_static(b"\xff"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("UTF-8"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_of_a_missing_object_is_not_found_and_creates_nothing() {
    let cluster = small_cache().await;
    let client = cluster.client(0).await;
    let err = client
        .patch("app/ssn/missing", Bytes::from_static(b"delta"))
        .await
        .unwrap_err();
    let (code, message) = code_of(err);
    assert_eq!(code, Code::NotFound, "{message}");
    assert_eq!(objects_held(&client).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_put_is_refused_with_the_limit_and_leaves_nothing() {
    let cluster = small_cache().await;
    let client = cluster.client(0).await;
    let err = client
        .put("app/ssn", Bytes::from(vec![7u8; 200 << 10]))
        .await
        .unwrap_err();
    let (code, message) = code_of(err);
    assert!(
        matches!(code, Code::InvalidArgument | Code::ResourceExhausted),
        "{code:?}: {message}"
    );
    assert!(
        message.contains("65536") || message.contains("64"),
        "{message}"
    );
    assert_eq!(objects_held(&client).await, 0);
    // A patch that would grow an object past the limit is refused the same way.
    let r = client
        .put("app/ssn", Bytes::from(vec![1u8; 40 << 10]))
        .await
        .unwrap();
    let err = client
        .patch(&r.key, Bytes::from(vec![2u8; 40 << 10]))
        .await
        .unwrap_err();
    let (code, message) = code_of(err);
    assert!(
        matches!(code, Code::InvalidArgument | Code::ResourceExhausted),
        "{code:?}: {message}"
    );
    let (version, bytes) = client.get_bytes(&r.key).await.unwrap();
    assert_eq!((version, bytes.len()), (1, 40 << 10));
}
