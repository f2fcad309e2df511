//! Claims: flamepy 0.6.0's `Runner`, unmodified, works end to end against `flmctl local up`
//! through a follower:
//! - it packages a small project written here (a `pyproject.toml` and a module depending on
//!   numpy), uploads it to the node's cache, clones `flmrun` (the agent installs numpy with uv
//!   from PyPI), runs a function over a list of inputs, a numpy function and a stateful object;
//!   on close it unregisters its application, and its package objects and the node's release
//!   directory are gone;
//! - a Runner nested in a task, and an `flmexec` Python script, start Runners of their own on
//!   the same cluster (through the agent's member relay, `FLAME_ENDPOINT` in the instance);
//! - a package whose dependency cannot be resolved, or that asks for a Python that is not
//!   installed, fails its bindings with the installer's message (a code-1001 session event),
//!   and leaves no release behind.
//!
//! How: local up prepares Python for flmrun (uv and flamepy under `FLAME_HOME`); each client
//! script runs from its project directory (the Runner packages its working directory) with
//! `FLAME_ENDPOINT` at member 2 and `FLAME_CACHE_ENDPOINT` at the node's cache, and prints what
//! it saw; the test then checks the node's release directories and the cache.

mod support;

use chaos_tests::flamepy::{ScriptRun, flamepy_python, run_client_script};
use chaos_tests::poll;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Up, flmctl_env, free_base};

/// Installing the package (uv, first on this node) and two sessions of calls.
const DEADLINE: Duration = Duration::from_secs(300);
/// The agent sweeps releases a couple of seconds after an application leaves its assignments.
const SWEEP_WAIT: Duration = Duration::from_secs(60);

const PYPROJECT: &str = r#"[project]
name = "runner-e2e"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = ["numpy"]

[tool.setuptools]
py-modules = ["mathfns"]
"#;

const MODULE: &str = r#"
import sys


def square(x):
    return x * x


def norm(values):
    # Imported here: numpy is installed on the node by uv, not in the client's venv.
    import numpy

    return float(numpy.linalg.norm(numpy.array(values, dtype=float)))


def deps_dir():
    # The release's deps directory, from the installed instance's PYTHONPATH.
    return [p for p in sys.path if p.endswith("/deps")][0]


class Counter:
    def __init__(self):
        self.total = 0

    def add(self, n):
        self.total += n
        return self.total
"#;

const CLIENT: &str = r#"
import os, sys
os.chdir(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())
import flamepy
from flamepy.runner import Runner
from mathfns import Counter, deps_dir, norm, square

name = "runner-e2e-" + str(os.getpid())
print("NAME", name)
with Runner(name) as runner:
    squares = runner.service(square)
    print("SQUARES", [f.get() for f in [squares(i) for i in range(10)]])
    print("NORM", runner.service(norm)([3, 4]).get())
    print("DEPS", runner.service(deps_dir)().get())
    counter = runner.service(Counter())
    print("TOTALS", [counter.add(n).get() for n in (1, 2, 3, 4)])
    print("REGISTERED", flamepy.get_application(name) is not None)
print("AFTER", flamepy.get_application(name) is None)
print("RUNNER OK")
"#;

/// A running local cluster with Python, and where its clients and node live.
struct Local {
    _dir: tempfile::TempDir,
    up: Up,
    root: PathBuf,
    follower: String,
    cache: String,
    python: PathBuf,
}

impl Local {
    fn start() -> anyhow::Result<Local> {
        let dir = tempfile::tempdir()?;
        let base = free_base();
        let (up, _) = Up::start_with(dir.path(), base, true);
        Ok(Local {
            root: dir.path().to_owned(),
            _dir: dir,
            up,
            follower: format!("http://127.0.0.1:{}", base + 1),
            cache: format!("grpc://127.0.0.1:{}", base + 200),
            python: flamepy_python()?,
        })
    }

    /// Writes `files` into a project directory `name` and runs `script` from it.
    async fn run(
        &self,
        name: &str,
        files: &[(&str, &str)],
        script: &str,
    ) -> anyhow::Result<ScriptRun> {
        let project = self.root.join(name);
        std::fs::create_dir_all(&project)?;
        for (file, text) in files {
            std::fs::write(project.join(file), text)?;
        }
        let path = project.join("client.py");
        std::fs::write(&path, script)?;
        let env = [("FLAME_CACHE_ENDPOINT", self.cache.clone())];
        run_client_script(&self.python, &path, &self.follower, &env, DEADLINE).await
    }

    /// The node's release directory.
    fn releases(&self) -> PathBuf {
        self.root.join("data/agent/releases")
    }

    /// Waits until the node holds no release of an application whose name contains `part`,
    /// and no temporary install directory.
    async fn wait_releases_gone(&self, part: &str) -> anyhow::Result<()> {
        let releases = self.releases();
        let swept = poll(
            "the releases of the applications to be swept",
            SWEEP_WAIT,
            || {
                let left = releases_of(&releases, part);
                async move { anyhow::Ok(left.is_empty().then_some(())) }
            },
        )
        .await;
        swept.map_err(|e| anyhow::anyhow!("{e}: left {:?}", releases_of(&releases, part)))
    }

    /// The keys of the cache's objects that contain `part`.
    fn cache_objects(&self, part: &str) -> anyhow::Result<Vec<String>> {
        let (ok, stdout, stderr) = flmctl_env(
            &[
                "cache",
                "list",
                "--cache-endpoint",
                &self.cache,
                "-o",
                "json",
            ],
            &[],
        );
        anyhow::ensure!(ok, "flmctl cache list failed: {stderr}");
        let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout)?;
        Ok(listed
            .iter()
            .filter_map(|o| o.get("key").and_then(|k| k.as_str()))
            .filter(|k| k.contains(part))
            .map(str::to_owned)
            .collect())
    }
}

/// Release directories under `releases` of applications whose name contains `part`, and
/// temporary install directories.
fn releases_of(releases: &Path, part: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(releases) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let owner = std::fs::read_to_string(p.join(".flame-app")).ok();
            owner.is_some_and(|o| o.contains(part)) || name.is_some_and(|n| n.starts_with(".tmp-"))
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// The value printed after `key` on a line of `run`'s stdout.
fn printed<'a>(run: &'a ScriptRun, key: &str) -> anyhow::Result<&'a str> {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        .ok_or_else(|| anyhow::anyhow!("no {key} line: {}", run.describe()))
}

fn ensure_lines(run: &ScriptRun, expect: &[&str]) -> anyhow::Result<()> {
    for line in expect {
        anyhow::ensure!(
            run.stdout.lines().any(|l| l.trim() == *line),
            "missing {line:?}: {}",
            run.describe()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_runs_functions_with_a_numpy_dependency_and_a_stateful_object_then_cleans_up()
-> anyhow::Result<()> {
    let local = Local::start()?;
    let files = [("pyproject.toml", PYPROJECT), ("mathfns.py", MODULE)];
    let run = local.run("project", &files, CLIENT).await?;
    anyhow::ensure!(run.passed("RUNNER OK"), "{}", run.describe());
    ensure_lines(
        &run,
        &[
            "SQUARES [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
            "NORM 5.0",
            "TOTALS [1, 3, 6, 10]",
            "REGISTERED True",
            "AFTER True",
        ],
    )?;
    let name = printed(&run, "NAME")?;
    let deps = printed(&run, "DEPS")?;
    anyhow::ensure!(
        Path::new(deps).starts_with(local.releases()) && deps.ends_with("/deps"),
        "the instance did not run from a release under {}: {deps}",
        local.releases().display()
    );
    local.wait_releases_gone(name).await?;
    anyhow::ensure!(!Path::new(deps).exists(), "{deps} is still there");
    let objects = local.cache_objects(name)?;
    anyhow::ensure!(objects.is_empty(), "objects left in the cache: {objects:?}");
    drop(local.up);
    Ok(())
}

const INNER_PROJECT: &str = r#"
import os, sys, tempfile

PYPROJECT = """[project]
name = "inner-job"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = []

[tool.setuptools]
py-modules = ["inner"]
"""

INNER = "def cube(x):\n    return x * x * x\n"


def run_inner_runner(tag, n):
    # A Runner packages its working directory, so it gets a project of its own.
    project = tempfile.mkdtemp(prefix="inner-")
    with open(os.path.join(project, "pyproject.toml"), "w") as f:
        f.write(PYPROJECT)
    with open(os.path.join(project, "inner.py"), "w") as f:
        f.write(INNER)
    os.chdir(project)
    sys.path.insert(0, project)
    from flamepy.runner import Runner
    import inner

    with Runner("inner-" + tag + "-" + str(os.getpid())) as runner:
        cubes = runner.service(inner.cube)
        return [f.get() for f in [cubes(i) for i in range(n)]]
"#;

const NESTED_CLIENT: &str = r#"
import json, os, sys
os.chdir(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())
import flamepy
from flamepy.runner import Runner
from nested import nested, flmexec_script

with Runner("outer-" + str(os.getpid())) as runner:
    print("NESTED", runner.service(nested)(4).get())

ssn = flamepy.create_session("flmexec")
request = {"language": "python", "code": flmexec_script()}
out = json.loads(ssn.invoke(json.dumps(request).encode()))
printed = bytes(out["data"]).decode().splitlines()
print("FLMEXEC", [l for l in printed if l.startswith("INNER ")][0][len("INNER "):])
ssn.close()
apps = sorted(a.name for a in flamepy.list_applications())
print("APPS", apps)
print("NESTED OK")
"#;

/// The outer project: `nested` runs an inner Runner inside its task; `flmexec_script` is the
/// source of an flmexec script that does the same.
fn nested_module() -> String {
    format!(
        r#"
import inspect

INNER_SOURCE = {INNER_PROJECT:?}
exec(INNER_SOURCE)


def nested(n):
    # Runs in an instance: FLAME_ENDPOINT (the agent's relay) and FLAME_CACHE_ENDPOINT
    # come from the agent.
    return run_inner_runner("task", n)


def flmexec_script():
    return INNER_SOURCE + "\nprint('INNER', run_inner_runner('flmexec', 3))\n"
"#
    )
}

const OUTER_PYPROJECT: &str = r#"[project]
name = "outer-job"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = []

[tool.setuptools]
py-modules = ["nested"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_nested_in_a_task_and_an_flmexec_script_start_runners_on_the_same_cluster()
-> anyhow::Result<()> {
    let local = Local::start()?;
    let module = nested_module();
    let files = [
        ("pyproject.toml", OUTER_PYPROJECT),
        ("nested.py", module.as_str()),
    ];
    let run = local.run("outer", &files, NESTED_CLIENT).await?;
    anyhow::ensure!(run.passed("NESTED OK"), "{}", run.describe());
    ensure_lines(
        &run,
        &[
            "NESTED [0, 1, 8, 27]",
            "FLMEXEC [0, 1, 8]",
            "APPS ['flmexec', 'flmping', 'flmrun']",
        ],
    )?;
    for app in ["outer-", "inner-task-", "inner-flmexec-"] {
        local.wait_releases_gone(app).await?;
        let objects = local.cache_objects(app)?;
        anyhow::ensure!(objects.is_empty(), "{app} objects left: {objects:?}");
    }
    drop(local.up);
    Ok(())
}

const BROKEN_CLIENT: &str = r#"
import os, sys, time
os.chdir(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())
import flamepy
from flamepy.runner import Runner
from plain import square


def first_bind_failure(name, **kwargs):
    with Runner(name, **kwargs) as runner:
        svc = runner.service(square)
        svc(2)  # a task, so the session wants an executor
        deadline = time.time() + 180
        while time.time() < deadline:
            events = flamepy.get_session(svc._session.id).events or []
            failed = [e for e in events if e.code == 1001]
            if failed:
                return (failed[0].message or "").replace("\n", " ")
            time.sleep(0.5)
        return "no bind failure within 180 s"


tag = str(os.getpid())
print("UNRESOLVABLE", first_bind_failure("broken-dep-" + tag, dependencies=["flame-no-such-dist-e2e"]))
print("NO PYTHON", first_bind_failure("broken-py-" + tag, python_version="3.99"))
print("TAG", tag)
print("BROKEN OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_packages_fail_their_bindings_naming_the_cause_and_leave_no_release()
-> anyhow::Result<()> {
    let local = Local::start()?;
    // No pyproject.toml: the Runner generates one with the dependencies it is given.
    let files = [("plain.py", "def square(x):\n    return x * x\n")];
    let run = local.run("broken", &files, BROKEN_CLIENT).await?;
    anyhow::ensure!(run.passed("BROKEN OK"), "{}", run.describe());
    let unresolvable = printed(&run, "UNRESOLVABLE")?;
    anyhow::ensure!(
        unresolvable.contains("application installation failed")
            && unresolvable.contains("flame-no-such-dist-e2e"),
        "{}",
        run.describe()
    );
    let no_python = printed(&run, "NO PYTHON")?;
    anyhow::ensure!(
        no_python.contains("application installation failed") && no_python.contains("3.99"),
        "{}",
        run.describe()
    );
    let tag = printed(&run, "TAG")?;
    for app in [format!("broken-dep-{tag}"), format!("broken-py-{tag}")] {
        local.wait_releases_gone(&app).await?;
        let objects = local.cache_objects(&app)?;
        anyhow::ensure!(objects.is_empty(), "{app} objects left: {objects:?}");
    }
    drop(local.up);
    Ok(())
}
