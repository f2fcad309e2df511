//! Claim: flamepy 0.6.0, unmodified, uses a cache that serves TLS: with
//! `FLAME_CACHE_ENDPOINT=grpcs://…` and `FLAME_CA_FILE` naming the CA, it puts, reads, updates
//! and deletes objects, and its ObjectRefs name the cache as `grpc+tls://`, which pyarrow dials.
//! Without the CA, the same script fails (the certificate is not trusted).

use chaos_tests::flamepy::{flamepy_python, python_script, run_client_script};
use flame_cache::ca;
use flame_cache::config::{CacheConfig, FlightTls};
use flame_cache::serve::{CacheListeners, start};
use std::time::Duration;

const PASSED: &str = "flamepy tls cache scenario passed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flamepy_reads_and_writes_a_tls_cache() -> anyhow::Result<()> {
    let _machine = crate::support::exclusive().await;
    let python = flamepy_python()?;
    let dir = tempfile::tempdir()?;
    let authority = ca::generate_ca(std::time::SystemTime::now())?;
    let tls = FlightTls::write_issued(&authority, &["127.0.0.1"], dir.path(), "flight")?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &authority.cert_pem)?;
    let mut config = CacheConfig::new("tls-flamepy");
    config.flight_addr = "127.0.0.1:0".parse()?;
    config.peer_addr = "127.0.0.1:0".parse()?;
    config.flight_tls = Some(tls);
    let running = start(config.clone(), CacheListeners::bind(&config).await?).await?;
    let endpoint = running.flight_endpoint().replace("grpc+tls://", "grpcs://");

    let script = python_script("flamepy_tls_cache_client.py");
    let deadline = Duration::from_secs(120);
    let trusted = [
        ("FLAME_CACHE_ENDPOINT", endpoint.clone()),
        ("FLAME_CA_FILE", ca_file.display().to_string()),
    ];
    // No control plane is needed: flamepy's cache calls go to the cache only.
    let run = run_client_script(&python, &script, "http://127.0.0.1:1", &trusted, deadline).await?;
    anyhow::ensure!(run.passed(PASSED), "{}", run.describe());

    let untrusted = [("FLAME_CACHE_ENDPOINT", endpoint)];
    let run =
        run_client_script(&python, &script, "http://127.0.0.1:1", &untrusted, deadline).await?;
    anyhow::ensure!(
        !run.status.success() && !run.passed(PASSED) && run.stderr.contains("certificate"),
        "flamepy without the CA should fail on the certificate: {}",
        run.describe()
    );
    running.shutdown().await;
    Ok(())
}
