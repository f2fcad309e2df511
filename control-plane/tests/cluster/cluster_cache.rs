//! The object cache's side of the Cluster API against three control-plane processes, always
//! asked of a follower (the cache's calls need no leader).
//!
//! Claims:
//! - A node registered with a cache appears in a follower's `CacheDirectory` with its endpoint
//!   and state; a registration with a malformed cache is refused with INVALID_ARGUMENT naming
//!   the field; re-registering without a cache removes the node from the directory.
//! - Closing a session appends `<application>/<session>` to the drop log, which a follower's
//!   `CacheDirectory` returns after the cache's last seen seq.
//! - `IssueCacheCertificate` on either follower signs with the one cluster CA the group created
//!   at bootstrap: the certificate's issuer is the CA, its signature verifies with the CA's key,
//!   its SANs are `flame-cache` and the node name (the names the CSR asked for are ignored), and
//!   it is good for server and client authentication. A garbage CSR is INVALID_ARGUMENT.

use crate::agents_support;
use crate::frontend_support;

use agents_support::{Running, fake, start};
use anyhow::{Context, anyhow, ensure};
use flame_proto::agent::RegisterNodeRequest;
use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::cluster::{
    CacheDirectoryReply, CacheDirectoryRequest, CacheEndpoint, IssueCacheCertificateReply,
    IssueCacheCertificateRequest,
};
use flame_proto::v1;
use frontend_support::{channel, eventually, expect_status, frontend};
use tonic::Code;
use tonic::transport::Channel;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

const NODE: &str = "cache-node-1";

fn cluster_client(run: &Running, id: u64) -> anyhow::Result<ClusterClient<Channel>> {
    Ok(ClusterClient::new(channel(&run.cluster, id)?))
}

fn endpoint() -> CacheEndpoint {
    CacheEndpoint {
        flight_endpoint: "grpc://127.0.0.1:19090".into(),
        peer_addr: "127.0.0.1:19091".into(),
    }
}

/// Registers `NODE` through the leader with `cache`.
async fn register(run: &Running, cache: Option<CacheEndpoint>) -> Result<(), tonic::Status> {
    let mut agent = fake::client(&run.url(run.leader).map_err(internal)?).map_err(internal)?;
    agent
        .register_node(RegisterNodeRequest {
            node: Some(fake::wire_node(NODE)),
            executors: Vec::new(),
            agent_id: "agent-a".into(),
            cache,
        })
        .await
        .map(drop)
}

fn internal(e: anyhow::Error) -> tonic::Status {
    tonic::Status::internal(e.to_string())
}

/// The directory of member `id`, drops after `after`.
async fn directory(run: &Running, id: u64, after: u64) -> anyhow::Result<CacheDirectoryReply> {
    let request = CacheDirectoryRequest {
        drops_after: after,
        max_drops: 0,
    };
    Ok(cluster_client(run, id)?
        .cache_directory(request)
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_lists_registered_caches_and_the_drops_of_closed_sessions() -> anyhow::Result<()>
{
    let run = start("cluster-cache-directory", None).await?;
    let follower = run.followers[0];
    let bad = CacheEndpoint {
        peer_addr: "no-port".into(),
        ..endpoint()
    };
    expect_status(
        register(&run, Some(bad)).await,
        Code::InvalidArgument,
        &["cache.peer_addr"],
    )?;
    register(&run, Some(endpoint())).await?;
    let member = eventually("the cache in the follower's directory", || async {
        let reply = directory(&run, follower, 0).await?;
        Ok(reply.members.into_iter().find(|m| m.node == NODE))
    })
    .await?;
    ensure!(member.endpoint == Some(endpoint()), "{member:?}");
    ensure!(member.state() == v1::NodeState::Ready, "{member:?}");

    let before = directory(&run, follower, 0).await?.last_seq;
    agents_support::ping_session(&run, follower, "cache-s1").await?;
    frontend(&run.cluster, follower)?
        .close_session(v1::CloseSessionRequest {
            session_id: "cache-s1".into(),
        })
        .await?;
    let reply = eventually("the drop of the closed session", || async {
        let reply = directory(&run, follower, before).await?;
        Ok((!reply.drops.is_empty()).then_some(reply))
    })
    .await?;
    ensure!(reply.drops.len() == 1, "{reply:?}");
    let drop = &reply.drops[0];
    ensure!(drop.prefix == "flmping/cache-s1", "{drop:?}");
    ensure!(
        drop.seq == before + 1 && reply.last_seq == drop.seq,
        "{reply:?}"
    );
    ensure!(reply.first_seq >= 1 && drop.at_ms > 0, "{reply:?}");

    register(&run, None).await?;
    eventually("the cache gone from the follower's directory", || async {
        let reply = directory(&run, follower, 0).await?;
        Ok(reply.members.iter().all(|m| m.node != NODE).then_some(()))
    })
    .await
}

/// A CSR for a fresh P-256 key that asks for a name the member must ignore.
fn csr() -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "evil.example");
    Ok(params.serialize_request(&key)?.pem()?)
}

/// Issues a certificate for `NODE` on member `id`, waiting for the CA to exist.
async fn issue(run: &Running, id: u64) -> anyhow::Result<IssueCacheCertificateReply> {
    let csr = csr()?;
    eventually("a cache certificate", || {
        let csr = csr.clone();
        async move {
            let request = IssueCacheCertificateRequest {
                node: NODE.into(),
                csr_pem: csr,
            };
            match cluster_client(run, id)?
                .issue_cache_certificate(request)
                .await
            {
                Ok(reply) => Ok(Some(reply.into_inner())),
                Err(s) if s.code() == Code::Unavailable => Ok(None),
                Err(s) => Err(anyhow!("IssueCacheCertificate failed: {s:?}")),
            }
        }
    })
    .await
}

fn parse(pem: &str) -> anyhow::Result<x509_parser::pem::Pem> {
    let (_, pem) = parse_x509_pem(pem.as_bytes()).map_err(|e| anyhow!("not PEM: {e:?}"))?;
    Ok(pem)
}

fn dns_names(cert: &X509Certificate<'_>) -> anyhow::Result<Vec<String>> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| anyhow!("{e:?}"))?
        .context("a SAN extension")?;
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some(name.to_string()),
            _ => None,
        })
        .collect())
}

/// Checks that `reply` holds a leaf for `NODE` signed by the CA it names.
fn check_certificate(reply: &IssueCacheCertificateReply) -> anyhow::Result<()> {
    let (leaf_pem, ca_pem) = (parse(&reply.cert_pem)?, parse(&reply.ca_pem)?);
    let leaf = leaf_pem.parse_x509().map_err(|e| anyhow!("leaf: {e:?}"))?;
    let ca = ca_pem.parse_x509().map_err(|e| anyhow!("CA: {e:?}"))?;
    ensure!(ca.is_ca(), "the CA certificate is a CA");
    let ca_name = ca.subject().iter_common_name().next();
    ensure!(
        ca_name.and_then(|n| n.as_str().ok()) == Some("Flame cluster CA"),
        "{}",
        ca.subject()
    );
    ensure!(leaf.issuer() == ca.subject(), "issuer {}", leaf.issuer());
    leaf.verify_signature(Some(ca.public_key()))
        .map_err(|e| anyhow!("the leaf's signature does not verify with the CA key: {e:?}"))?;
    let cn = leaf.subject().iter_common_name().next();
    ensure!(
        cn.and_then(|n| n.as_str().ok()) == Some(NODE),
        "{}",
        leaf.subject()
    );
    let names = dns_names(&leaf)?;
    ensure!(names == ["flame-cache", NODE], "SANs {names:?}");
    let eku = leaf
        .extended_key_usage()
        .map_err(|e| anyhow!("{e:?}"))?
        .context("an extended key usage")?;
    ensure!(eku.value.server_auth && eku.value.client_auth, "{eku:?}");
    ensure!(!leaf.is_ca(), "a leaf is not a CA");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_follower_signs_cache_certificates_with_the_one_cluster_ca() -> anyhow::Result<()> {
    let run = start("cluster-cache-certificates", None).await?;
    let [f1, f2] = run.followers;
    let first = issue(&run, f1).await?;
    check_certificate(&first).context("issued by the first follower")?;
    let second = issue(&run, f2).await?;
    check_certificate(&second).context("issued by the second follower")?;
    ensure!(first.ca_pem == second.ca_pem, "both followers use one CA");
    ensure!(
        first.cert_pem != second.cert_pem,
        "each request gets its own"
    );

    let garbage = IssueCacheCertificateRequest {
        node: NODE.into(),
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .into(),
    };
    let refused = cluster_client(&run, f1)?
        .issue_cache_certificate(garbage)
        .await;
    expect_status(refused, Code::InvalidArgument, &["csr_pem"])?;
    let no_node = IssueCacheCertificateRequest {
        node: String::new(),
        csr_pem: csr()?,
    };
    let refused = cluster_client(&run, f2)?
        .issue_cache_certificate(no_node)
        .await;
    expect_status(refused, Code::InvalidArgument, &["node must not be empty"])?;
    Ok(())
}
