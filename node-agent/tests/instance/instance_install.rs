//! Application installation at launch (spec section 7.6) with the real `flmexec-service`:
//! the python installer without a url exports flamepy's site-packages and the Python
//! version; the binary installer unpacks a `file://` `.tar.gz` into a release whose `src/bin`
//! is on `PATH` and which later bindings reuse; an `http://` url is downloaded and installed the
//! same way; a corrupt archive, a missing http package and an unsupported scheme are code-10
//! bind failures naming the problem, with nothing started. A `grpc://` url of an
//! in-process cache installs the object, and a new release follows when the object is put
//! again.
//!
//! Python packages with a url run a fake `uv` (a script in `$FLAME_HOME/bin`), so the flow,
//! the arguments, the failure text and the timeout are tested without a package index; a
//! real `uv pip install` is not exercised here. The refusals before `uv` (missing project file,
//! missing `uv`) are unit tests in `instance::release`.

use crate::common;

use anyhow::Context;
use common::{Fixture, app, exec_stdout, session, shell, task};
use flame_node_agent::instance::{AppLaunch, BindError, Instance, RELEASE_MARKER};
use std::io::Write;
use std::path::Path;

const FLMEXEC: &str = "${FLAME_HOME}/bin/flmexec-service";

/// Runs `code` in bash through flmexec and returns its stdout.
async fn run_shell(instance: &mut Instance, id: u64, code: &str) -> anyhow::Result<String> {
    let outcome = instance.invoke(task(id, Some(&shell(code)))).await;
    anyhow::ensure!(outcome.succeeded(), "task failed: {:?}", outcome.message);
    exec_stdout(outcome.output.as_deref())
}

/// flmexec with `installer` and `url`.
fn installed_app(installer: &str, url: Option<String>) -> AppLaunch {
    let mut application = app(FLMEXEC, &[]);
    application.installer = Some(installer.to_owned());
    application.url = url;
    application
}

/// Writes a `.tar.gz` holding `pkg-1.0/bin/hello-flame` (a script) and `pkg-1.0/lib/`.
fn write_package(path: &Path) -> anyhow::Result<()> {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path)?, Default::default());
    let mut builder = tar::Builder::new(gz);
    let script = b"#!/bin/sh\necho \"hello from $FLAME_APP_DIR\"\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(script.len() as u64);
    header.set_mode(0o755);
    builder.append_data(&mut header, "pkg-1.0/bin/hello-flame", &script[..])?;
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    dir.set_mode(0o755);
    builder.append_data(&mut dir, "pkg-1.0/lib/", std::io::empty())?;
    builder.into_inner()?.finish()?.flush()?;
    Ok(())
}

/// Launches `application`, expecting a bind failure.
async fn install_failure(
    fx: &Fixture,
    application: AppLaunch,
    id: &str,
) -> anyhow::Result<BindError> {
    let err = Instance::launch(fx.spec(application, id))
        .await
        .err()
        .context("launch succeeded")?;
    // Nothing was started: no scratch directory, no socket.
    assert!(!fx.work.join(id).exists(), "a scratch directory was made");
    assert!(!fx.sockets.join(format!("{id}.sock")).exists());
    Ok(err)
}

#[tokio::test]
async fn python_installer_without_url_exports_newest_flamepy_site_packages_and_version()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    for v in ["python3.9", "python3.13", "python3.11"] {
        std::fs::create_dir_all(fx.home.join("lib").join(v).join("site-packages"))?;
    }
    let mut instance = Instance::launch(fx.spec(installed_app("python", None), "exec-py")).await?;
    instance.enter(session(None)).await?;
    let out = run_shell(
        &mut instance,
        1,
        r#"printf '%s|%s' "$PYTHONPATH" "$FLAME_PYTHON_VERSION""#,
    )
    .await?;
    instance.leave().await?;
    instance.stop().await;
    let (pythonpath, version) = out.split_once('|').context("no separator")?;
    let site = fx.home.join("lib/python3.13/site-packages");
    assert_eq!(
        pythonpath.split(':').next(),
        Some(&*site.to_string_lossy()),
        "{out}"
    );
    assert_eq!(version, "3.13");
    Ok(())
}

#[tokio::test]
async fn binary_installer_from_file_tar_gz_puts_src_bin_on_path_and_reuses_the_release()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let pkg = fx.root.path().join("pkg.tar.gz");
    write_package(&pkg)?;
    let url = format!("file://{}", pkg.display());
    let mut instance =
        Instance::launch(fx.spec(installed_app("binary", Some(url.clone())), "exec-bin1")).await?;
    instance.enter(session(None)).await?;
    let out = run_shell(&mut instance, 1, "hello-flame").await?;
    let app_dir = run_shell(&mut instance, 2, r#"printf %s "$FLAME_APP_DIR""#).await?;
    instance.leave().await?;
    instance.stop().await;
    assert_eq!(out.trim(), format!("hello from {app_dir}"));
    let release = Path::new(&app_dir).parent().context("no release dir")?;
    assert!(release.starts_with(fx.work.join("releases")), "{app_dir}");
    assert!(release.join(RELEASE_MARKER).is_file());

    // A second binding finds the complete release and does not unpack again.
    std::fs::remove_file(&pkg)?;
    let sentinel = release.join("src/kept");
    std::fs::write(&sentinel, b"")?;
    let mut again =
        Instance::launch(fx.spec(installed_app("binary", Some(url)), "exec-bin2")).await?;
    again.enter(session(None)).await?;
    let out = run_shell(&mut again, 1, "hello-flame").await?;
    again.leave().await?;
    again.stop().await;
    assert_eq!(out.trim(), format!("hello from {app_dir}"));
    assert!(sentinel.exists(), "the release was rebuilt");
    Ok(())
}

/// A single in-process cache on a loopback port (memory only, no peers).
async fn start_cache() -> anyhow::Result<flame_cache::serve::RunningCache> {
    use flame_cache::config::{CacheConfig, PeerTls};
    let mut config = CacheConfig::new("install-test");
    config.flight_addr = "127.0.0.1:0".parse()?;
    config.peer_addr = "127.0.0.1:0".parse()?;
    config.replicas = 1;
    config.tls = PeerTls::None;
    let listeners = flame_cache::serve::CacheListeners::bind(&config).await?;
    Ok(flame_cache::serve::start(config, listeners).await?)
}

#[tokio::test]
async fn binary_installer_from_a_grpc_cache_url_runs_the_package_and_follows_updates()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let cache = start_cache().await?;
    let client = flame_cache::CacheClient::connect(cache.flight_endpoint()).await?;
    let pkg = fx.root.path().join("pkg.tar.gz");
    write_package(&pkg)?;
    // Under a generated id: no suffix, so the archive is recognised by its content.
    let put = client
        .put("flmexec/pkg", bytes::Bytes::from(std::fs::read(&pkg)?))
        .await?;
    let url = format!("{}/{}", put.endpoint, put.key);
    let mut instance =
        Instance::launch(fx.spec(installed_app("binary", Some(url.clone())), "exec-grpc1")).await?;
    instance.enter(session(None)).await?;
    let out = run_shell(&mut instance, 1, "hello-flame").await?;
    let app_dir = run_shell(&mut instance, 2, r#"printf %s "$FLAME_APP_DIR""#).await?;
    instance.leave().await?;
    instance.stop().await;
    assert_eq!(out.trim(), format!("hello from {app_dir}"));
    assert!(app_dir.starts_with(&*fx.work.join("releases").to_string_lossy()));

    // The object is put again with another script: the next binding gets a new release.
    let gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
    let mut builder = tar::Builder::new(gz);
    let script = b"#!/bin/sh\necho updated\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(script.len() as u64);
    header.set_mode(0o755);
    builder.append_data(&mut header, "bin/hello-flame", &script[..])?;
    let updated = builder.into_inner()?.finish()?;
    client.put(&put.key, updated.into()).await?;
    let mut again =
        Instance::launch(fx.spec(installed_app("binary", Some(url.clone())), "exec-grpc2")).await?;
    again.enter(session(None)).await?;
    let out = run_shell(&mut again, 1, "hello-flame").await?;
    let new_dir = run_shell(&mut again, 2, r#"printf %s "$FLAME_APP_DIR""#).await?;
    again.leave().await?;
    again.stop().await;
    assert_eq!(out.trim(), "updated");
    assert_ne!(new_dir, app_dir);

    // A missing key is a code-10 failure naming the url and the key.
    let missing = format!("{}/flmexec/pkg/absent.tgz", put.endpoint);
    let err = install_failure(
        &fx,
        installed_app("binary", Some(missing.clone())),
        "exec-grpc3",
    )
    .await?;
    assert_eq!(err.code.value(), 10);
    assert!(
        err.message.contains(&missing)
            && err
                .message
                .contains("no object at key flmexec/pkg/absent.tgz"),
        "{}",
        err.message
    );
    cache.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn corrupt_archive_is_code_10_naming_the_archive() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let pkg = fx.root.path().join("broken.tar.gz");
    std::fs::write(&pkg, b"\x1f\x8b definitely not gzip")?;
    let url = format!("file://{}", pkg.display());
    let err = install_failure(&fx, installed_app("binary", Some(url)), "exec-bad").await?;
    assert_eq!(err.code.value(), 10);
    assert!(
        err.message
            .starts_with("application installation failed: cannot unpack ")
            && err.message.contains("broken.tar.gz")
            && err.message.contains("corrupt"),
        "{}",
        err.message
    );
    let releases: Vec<_> = std::fs::read_dir(fx.work.join("releases"))?.collect();
    assert!(releases.is_empty(), "left behind: {releases:?}");
    Ok(())
}

#[tokio::test]
async fn unsupported_url_scheme_is_code_10_naming_the_scheme() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let url = Some("ftp://example.invalid/pkg.tar.gz".to_owned());
    let err = install_failure(&fx, installed_app("python", url), "exec-ftp").await?;
    assert_eq!(err.code.value(), 10);
    assert!(
        err.message.starts_with("application installation failed: ")
            && err.message.contains("unknown scheme ftp://"),
        "{}",
        err.message
    );
    Ok(())
}

/// Serves `pkg` at `/pkg.tar.gz` on a loopback port; returns the base url.
async fn serve_package(pkg: Vec<u8>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/pkg.tar.gz",
        axum::routing::get(move || {
            let pkg = pkg.clone();
            async move { pkg }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

#[tokio::test]
async fn binary_installer_from_an_http_url_runs_the_package_and_a_missing_one_is_code_10()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let pkg = fx.root.path().join("pkg.tar.gz");
    write_package(&pkg)?;
    let base = serve_package(std::fs::read(&pkg)?).await?;
    let url = format!("{base}/pkg.tar.gz");
    let mut instance =
        Instance::launch(fx.spec(installed_app("binary", Some(url)), "exec-http")).await?;
    instance.enter(session(None)).await?;
    let out = run_shell(&mut instance, 1, "hello-flame").await?;
    instance.leave().await?;
    instance.stop().await;
    assert!(out.trim().starts_with("hello from "), "{out}");

    let missing = format!("{base}/gone.tar.gz");
    let app = installed_app("binary", Some(missing.clone()));
    let err = install_failure(&fx, app, "exec-http-missing").await?;
    assert_eq!(err.code.value(), 10);
    assert!(
        err.message.contains(&missing) && err.message.contains("404"),
        "{}",
        err.message
    );
    let leftovers: Vec<_> = std::fs::read_dir(fx.work.join("releases"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "half-installed: {leftovers:?}");
    Ok(())
}

/// Installs a fake `uv` as `$FLAME_HOME/bin/uv` running `body` (arguments: `pip install
/// --target <deps> --python <ver> .`).
fn fake_uv(fx: &Fixture, body: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let uv = fx.home.join("bin/uv");
    let _ = std::fs::remove_file(&uv);
    std::fs::write(&uv, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(&uv, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A python project directory (`pyproject.toml` only) under the fixture, as a `file://` url.
fn python_project(fx: &Fixture, name: &str) -> anyhow::Result<String> {
    let dir = fx.root.path().join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("pyproject.toml"), "[project]\nname = \"demo\"\n")?;
    Ok(format!("file://{}", dir.display()))
}

#[tokio::test]
async fn python_package_runs_uv_into_deps_and_puts_deps_src_and_flamepy_on_pythonpath()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    fake_uv(&fx, r#"mkdir -p "$4/bin" && echo "$@" > "$4/uv-args""#)?;
    let mut application = installed_app("python", Some(python_project(&fx, "proj")?));
    application.environments = vec![flame_proto::model::Environment {
        name: "FLAME_PYTHON_VERSION".to_owned(),
        value: "3.11".to_owned(),
    }];
    let mut instance = Instance::launch(fx.spec(application, "exec-uv")).await?;
    instance.enter(session(None)).await?;
    let pythonpath = run_shell(&mut instance, 1, r#"printf %s "$PYTHONPATH""#).await?;
    instance.leave().await?;
    instance.stop().await;
    let parts: Vec<&str> = pythonpath.split(':').collect();
    let deps = Path::new(parts.first().context("empty PYTHONPATH")?);
    assert!(deps.ends_with("deps") && deps.starts_with(fx.work.join("releases")));
    let args = std::fs::read_to_string(deps.join("uv-args"))?;
    // uv runs in the release's temporary directory, renamed into place when complete.
    assert!(
        args.starts_with("pip install --target ") && args.trim().ends_with("/deps --python 3.11 ."),
        "{args}"
    );
    let site = fx.home.join("lib/python3.11/site-packages");
    assert_eq!(
        parts.get(2).copied(),
        Some(&*site.to_string_lossy()),
        "{pythonpath}"
    );
    Ok(())
}

#[tokio::test]
async fn failing_or_hanging_uv_is_code_10_with_its_stderr_or_the_bound() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    fake_uv(&fx, "echo 'No solution found for demo' >&2; exit 1")?;
    let url = python_project(&fx, "proj-fail")?;
    let err = install_failure(&fx, installed_app("python", Some(url)), "exec-uvfail").await?;
    assert_eq!(err.code.value(), 10);
    assert!(
        err.message.contains("No solution found for demo"),
        "{}",
        err.message
    );

    fake_uv(&fx, "exec sleep 30")?;
    let url = python_project(&fx, "proj-hang")?;
    let mut spec = fx.spec(installed_app("python", Some(url)), "exec-uvhang");
    spec.install_timeout = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = Instance::launch(spec)
        .await
        .err()
        .context("launch succeeded")?;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(err.code.value(), 10);
    assert!(
        err.message.contains("did not finish within"),
        "{}",
        err.message
    );
    Ok(())
}
