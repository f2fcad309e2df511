//! Releases from `grpc://` package urls against a real cache started in-process: install,
//! reuse while the object is unchanged, a new release when it is put again, detection of the
//! archive type without a suffix, and the failures (missing key, patched object, not an
//! archive).

use super::*;
use flame_cache::CacheClient;
use flame_cache::config::{CacheConfig, PeerTls};
use flame_cache::serve::{CacheListeners, RunningCache, start};
use std::io::Write;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A single cache, memory only, on loopback ports chosen by the system.
async fn cache() -> Result<(RunningCache, CacheClient), Box<dyn std::error::Error>> {
    let mut config = CacheConfig::new("pkg-test");
    config.flight_addr = "127.0.0.1:0".parse()?;
    config.peer_addr = "127.0.0.1:0".parse()?;
    config.replicas = 1;
    config.tls = PeerTls::None;
    let listeners = CacheListeners::bind(&config).await?;
    let running = start(config, listeners).await?;
    let client = CacheClient::connect(running.flight_endpoint()).await?;
    Ok((running, client))
}

/// A `.tar.gz` of `entries` (path, contents), every file executable.
fn tar_gz(entries: &[(&str, &str)]) -> std::io::Result<Bytes> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        builder.append_data(&mut header, path, data.as_bytes())?;
    }
    Ok(Bytes::from(builder.into_inner()?.finish()?))
}

/// A `.zip` of `entries` (path, contents).
fn zip(entries: &[(&str, &str)]) -> zip::result::ZipResult<Bytes> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, data) in entries {
        w.start_file(*path, zip::write::SimpleFileOptions::default())?;
        w.write_all(data.as_bytes())?;
    }
    Ok(Bytes::from(w.finish()?.into_inner()))
}

/// A request for `url` with `installer`, in `work`.
fn request(installer: Installer, url: &str, work: &Path) -> Request {
    Request {
        app: "myapp".into(),
        installer,
        url: url.to_owned(),
        python_version: "3.12".into(),
        work_dir: work.to_owned(),
        flame_home: Some(work.join("home")),
        ca_file: None,
        timeout: Duration::from_secs(10),
    }
}

/// The names in `<work>/releases`, sorted.
fn release_entries(work: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(work.join("releases"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn a_cache_package_is_installed_reused_while_unchanged_and_reinstalled_when_put_again()
-> TestResult {
    let (running, client) = cache().await?;
    let tmp = tempfile::tempdir()?;
    let package =
        |says: &str| tar_gz(&[("demo-1.0/bin/tool", &format!("#!/bin/sh\necho {says}\n"))]);
    let key = "myapp/pkg/demo-1.0.tar.gz";
    let put = client.put(key, package("one")?).await?;
    let url = format!("{}/{}", put.endpoint, put.key);
    assert_eq!(url, format!("{}/{key}", running.flight_endpoint()));

    let first = obtain(request(Installer::Binary, &url, tmp.path())).await?;
    let tool = std::fs::read_to_string(first.src().join("bin/tool"))?;
    assert!(tool.contains("echo one"), "{tool}");
    assert!(first.is_complete() && !first.root.join(DOWNLOADED).exists());
    assert!(first.root.to_string_lossy().contains("-v1-"), "{first:?}");

    // Unchanged: the same release, not rebuilt, and the cache sent no package bytes.
    std::fs::write(first.src().join("kept"), b"")?;
    let sent = running.node().metrics().bytes_out.get();
    assert!(sent > 0, "the first install downloaded nothing");
    let again = obtain(request(Installer::Binary, &url, tmp.path())).await?;
    assert_eq!(again, first);
    assert!(again.src().join("kept").exists(), "the release was rebuilt");
    assert_eq!(
        running.node().metrics().bytes_out.get(),
        sent,
        "downloaded again"
    );

    // Put again: version 2, a new release; the old one stays for running instances.
    client.put(key, package("two")?).await?;
    let second = obtain(request(Installer::Binary, &url, tmp.path())).await?;
    assert_ne!(second, first);
    assert!(second.root.to_string_lossy().contains("-v2-"), "{second:?}");
    let tool = std::fs::read_to_string(second.src().join("bin/tool"))?;
    assert!(tool.contains("echo two"), "{tool}");
    let third = obtain(request(Installer::Binary, &url, tmp.path())).await?;
    assert_eq!(third, second);
    // Two releases, the pointer, nothing temporary.
    let entries = release_entries(tmp.path())?;
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(
        entries.iter().all(|e| !e.starts_with(".tmp-")),
        "{entries:?}"
    );
    running.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_package_under_a_generated_id_is_unpacked_by_content_and_installed_with_uv() -> TestResult
{
    let (running, client) = cache().await?;
    let tmp = tempfile::tempdir()?;
    // A fake uv that makes the deps directory, so no package index is needed.
    let bin = tmp.path().join("home/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::write(
        bin.join("uv"),
        "#!/bin/sh\nmkdir -p \"$4\" && echo \"$@\" > \"$4/uv-args\"\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("uv"), std::fs::Permissions::from_mode(0o755))?;

    let data = zip(&[
        ("pyproject.toml", "[project]\nname = \"demo\"\n"),
        ("demo/__init__.py", ""),
    ])?;
    let put = client.put("myapp/pkg", data).await?;
    assert!(!put.key.ends_with(".zip"), "{}", put.key);
    let url = format!("{}/{}", put.endpoint, put.key);
    let release = obtain(request(Installer::Python, &url, tmp.path())).await?;
    assert!(release.src().join("pyproject.toml").is_file());
    assert!(release.src().join("demo/__init__.py").is_file());
    let args = std::fs::read_to_string(release.deps().join("uv-args"))?;
    assert!(args.trim().ends_with("--python 3.12 ."), "{args}");

    // The python installer still wants a project file.
    let put = client
        .put("myapp/pkg", zip(&[("main.py", "print(1)")])?)
        .await?;
    let url = format!("{}/{}", put.endpoint, put.key);
    let err = obtain(request(Installer::Python, &url, tmp.path()))
        .await
        .err();
    assert!(
        err.is_some_and(|e| e.message.contains(&url) && e.message.contains("has no pyproject.toml")),
        "a package without a project file was installed"
    );
    running.shutdown().await;
    Ok(())
}

/// The bind failure of obtaining `url`, which must be code 10.
async fn failure(url: &str, work: &Path) -> Result<String, Box<dyn std::error::Error>> {
    match obtain(request(Installer::Binary, url, work)).await {
        Ok(release) => Err(format!("{url} was installed as {release:?}").into()),
        Err(e) if e.code.value() == 10 => Ok(e.message),
        Err(e) => Err(format!("{url}: wrong code: {e}").into()),
    }
}

#[tokio::test]
async fn missing_patched_and_non_archive_objects_are_install_failures_naming_url_and_key()
-> TestResult {
    let (running, client) = cache().await?;
    let tmp = tempfile::tempdir()?;
    let endpoint = running.flight_endpoint().to_owned();

    let url = format!("{endpoint}/myapp/pkg/nothing.tar.gz");
    let message = failure(&url, tmp.path()).await?;
    assert!(
        message.starts_with("application installation failed: package ")
            && message.contains(&url)
            && message.contains("no object at key myapp/pkg/nothing.tar.gz"),
        "{message}"
    );

    let key = "myapp/pkg/patched.tgz";
    client.put(key, tar_gz(&[("bin/tool", "x")])?).await?;
    client.patch(key, Bytes::from_static(b"more")).await?;
    let message = failure(&format!("{endpoint}/{key}"), tmp.path()).await?;
    assert!(
        message.contains(&format!("the object at key {key} has patches")),
        "{message}"
    );

    let put = client
        .put("myapp/pkg", Bytes::from_static(b"just some bytes"))
        .await?;
    let url = format!("{endpoint}/{}", put.key);
    let message = failure(&url, tmp.path()).await?;
    assert!(
        message.contains(&format!(
            "package {url} is not a .tar.gz, .tgz or .zip archive"
        )),
        "{message}"
    );

    let message = failure(&format!("{endpoint}/myapp/pkg"), tmp.path()).await?;
    assert!(message.contains("invalid object key"), "{message}");
    // Nothing was left behind.
    let entries = release_entries(tmp.path()).unwrap_or_default();
    assert!(entries.is_empty(), "{entries:?}");
    running.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_grpcs_package_installs_from_a_tls_cache_trusting_the_agents_ca_file() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let ca = flame_cache::ca::generate_ca(std::time::SystemTime::now())?;
    let tls =
        flame_cache::config::FlightTls::write_issued(&ca, &["127.0.0.1"], tmp.path(), "flight")?;
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem)?;
    let mut config = CacheConfig::new("tls-pkg-test");
    config.flight_addr = "127.0.0.1:0".parse()?;
    config.peer_addr = "127.0.0.1:0".parse()?;
    config.replicas = 1;
    config.flight_tls = Some(tls);
    let running = start(config.clone(), CacheListeners::bind(&config).await?).await?;
    let trust = flame_cache::client::ClientTls {
        ca_file: Some(ca_file.clone()),
    };
    let client = CacheClient::connect_with(running.flight_endpoint(), &trust).await?;
    let put = client
        .put(
            "myapp/pkg/tool.tar.gz",
            tar_gz(&[("tool-1.0/bin/tool", "#!/bin/sh\necho tls\n")])?,
        )
        .await?;
    // A package url spells TLS grpcs:// (spec Annex A); the ref says grpc+tls://.
    let url = format!("{}/{}", put.endpoint, put.key).replace("grpc+tls://", "grpcs://");
    assert!(url.starts_with("grpcs://127.0.0.1:"), "{url}");

    let work = tmp.path().join("work");
    let mut req = request(Installer::Binary, &url, &work);
    req.ca_file = Some(ca_file);
    let release = obtain(req).await?;
    let tool = std::fs::read_to_string(release.src().join("bin/tool"))?;
    assert!(tool.contains("echo tls"), "{tool}");

    // Without the CA the certificate is not trusted, and the failure says so.
    let untrusted = failure(&url, &tmp.path().join("work2")).await?;
    assert!(
        untrusted.contains(&url) && untrusted.contains("certificate"),
        "{untrusted}"
    );
    running.shutdown().await;
    Ok(())
}
