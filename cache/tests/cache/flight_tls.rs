//! The Flight face over TLS: `grpcs://` / `grpc+tls://` clients that trust the cache's CA read
//! and write through any cache, objects are advertised as `grpc+tls://`, and a client that does
//! not trust the certificate, or speaks plaintext to it, is refused with an error that says so.

use crate::support;

use bytes::Bytes;
use flame_cache::ca;
use flame_cache::client::{CacheClient, ClientTls};
use flame_cache::config::{CacheConfig, FlightTls};
use std::path::PathBuf;
use support::Cluster;

/// Writes a Flight server certificate for 127.0.0.1 signed by the cluster's CA.
fn flight_tls(cluster: &Cluster, name: &str) -> FlightTls {
    let hosts = ["127.0.0.1", "localhost"];
    FlightTls::write_issued(
        &cluster.ca,
        &hosts,
        cluster.dir.path(),
        &format!("{name}-flight"),
    )
    .unwrap()
}

fn tls_config(cluster: &Cluster, i: usize) -> CacheConfig {
    let mut config = cluster.config(i);
    config.flight_tls = Some(flight_tls(cluster, &config.node));
    for peer in &mut config.static_peers {
        peer.flight_endpoint = peer.flight_endpoint.replace("grpc://", "grpc+tls://");
    }
    config
}

async fn tls_cluster() -> (Cluster, ClientTls) {
    let mut cluster = Cluster::new(2);
    for i in 0..2 {
        let config = tls_config(&cluster, i);
        cluster.start_with(i, config).await;
    }
    let ca_file = cluster.dir.path().join("clients-ca.pem");
    std::fs::write(&ca_file, &cluster.ca.cert_pem).unwrap();
    let trust = ClientTls {
        ca_file: Some(ca_file),
    };
    (cluster, trust)
}

#[tokio::test]
async fn tls_clients_put_and_get_through_any_cache_and_refs_name_grpc_tls() {
    let (cluster, trust) = tls_cluster().await;
    let grpcs = |i: usize| format!("grpcs://{}", cluster.slots[i].flight);
    let a = CacheClient::connect_with(&grpcs(0), &trust).await.unwrap();
    let value = Bytes::from(vec![7_u8; 3 << 20]);
    let reference = a.put("app/ssn", value.clone()).await.unwrap();
    assert!(
        reference.endpoint.starts_with("grpc+tls://127.0.0.1:"),
        "{reference:?}"
    );
    let b = CacheClient::connect_with(&format!("grpc+tls://{}", cluster.slots[1].flight), &trust)
        .await
        .unwrap();
    let (_, read) = b.get_bytes(&reference.key).await.unwrap();
    assert_eq!(read, value);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused_with_the_reason() {
    let (cluster, _) = tls_cluster().await;
    let other = ca::generate_ca(std::time::SystemTime::now()).unwrap();
    let wrong: PathBuf = cluster.dir.path().join("other-ca.pem");
    std::fs::write(&wrong, other.cert_pem).unwrap();
    let endpoint = format!("grpcs://{}", cluster.slots[0].flight);
    let err = CacheClient::connect_with(
        &endpoint,
        &ClientTls {
            ca_file: Some(wrong),
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("certificate"), "{err}");
    let missing = ClientTls {
        ca_file: Some(cluster.dir.path().join("no-such-ca.pem")),
    };
    let err = CacheClient::connect_with(&endpoint, &missing)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-ca.pem"), "{err}");
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_cache_gets_an_error_not_a_hang() {
    let (cluster, _) = tls_cluster().await;
    let plain = format!("grpc://{}", cluster.slots[0].flight);
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let client = CacheClient::connect(&plain).await?;
        client.put("app/ssn", Bytes::from_static(b"x")).await
    })
    .await
    .expect("a plaintext call to a TLS cache must fail promptly");
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn advertising_plaintext_while_serving_tls_is_refused() {
    let cluster = Cluster::new(1);
    let mut config = tls_config(&cluster, 0);
    config.advertise = Some("grpc://cache.example:9090".into());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("grpc+tls://"), "{err}");
    config.advertise = Some("grpc+tls://cache.example:9090".into());
    config.validate().unwrap();
}

#[tokio::test]
async fn a_cache_whose_flight_certificate_is_unreadable_or_garbage_does_not_start() {
    let cluster = Cluster::new(1);
    let garbage = cluster.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for (cert, says) in [
        (cluster.dir.path().join("missing.pem"), "missing.pem"),
        (garbage.clone(), "Flight TLS"),
    ] {
        let mut config = cluster.config(0);
        config.flight_tls = Some(FlightTls {
            cert,
            key: garbage.clone(),
        });
        let listeners = flame_cache::serve::CacheListeners::bind(&config)
            .await
            .unwrap();
        let err = match flame_cache::serve::start(config, listeners).await {
            Ok(_) => panic!("a cache started with a bad Flight certificate"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(says), "{err}");
    }
}
