//! flamepy Runner scenarios, shared by the `flmctl local up` tests and the multi-process
//! harness tests, so both run the same projects and the same checks.
//!
//! What: each scenario writes a small project (a `pyproject.toml` and modules) and a client
//! script into a directory, runs the script from there with flamepy 0.6.0 against a
//! [`Target`] (the Runner packages its working directory), and checks what it printed, then the
//! cleanup: the node's release directories (swept by the agent) and the cache's objects.
//! - [`basic`]: a function over a list of inputs, a numpy function (uv installs numpy from
//!   PyPI on the node), a stateful object; on close the application, its release and its
//!   objects are gone.
//! - [`nested`]: a Runner nested in a task, and an `flmexec` Python script starting a Runner,
//!   both through the instance's `FLAME_ENDPOINT` (the agent's member relay).
//! - [`broken`]: a dependency uv cannot resolve and a Python that is not installed each fail
//!   the bindings with the installer's message (a code-1001 session event) and leave no
//!   release.
//!
//! Caveat: the scenarios need the target's agent to have `uv` and flamepy under `FLAME_HOME`
//! (and `flmexec-service` for [`nested`]), and PyPI for numpy and the build backend.

use crate::flamepy::{ScriptRun, run_client_script};
use crate::poll;
use anyhow::{Context, ensure};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on one client script: installing the package (uv, first on the node) and its calls.
pub const DEADLINE: Duration = Duration::from_secs(300);
/// The agent sweeps releases a couple of seconds after an application leaves its assignments.
pub const SWEEP_WAIT: Duration = Duration::from_secs(60);

/// Where a scenario runs: a cluster with one node.
#[derive(Debug, Clone)]
pub struct Target {
    /// The python with flamepy 0.6.0 that runs client scripts.
    pub python: PathBuf,
    /// The member the clients talk to (a follower, in the tests).
    pub endpoint: String,
    /// The node's cache (`FLAME_CACHE_ENDPOINT`).
    pub cache: String,
    /// The node agent's release directory (`<work_dir>/releases`).
    pub releases: PathBuf,
    /// Where projects are written.
    pub scratch: PathBuf,
}

impl Target {
    /// Writes `files` into the project directory `name` and runs `script` from it.
    async fn run(
        &self,
        name: &str,
        files: &[(&str, &str)],
        script: &str,
    ) -> anyhow::Result<ScriptRun> {
        let project = self.scratch.join(name);
        std::fs::create_dir_all(&project)?;
        for (file, text) in files {
            std::fs::write(project.join(file), text)?;
        }
        let path = project.join("client.py");
        std::fs::write(&path, script)?;
        let env = [("FLAME_CACHE_ENDPOINT", self.cache.clone())];
        run_client_script(&self.python, &path, &self.endpoint, &env, DEADLINE).await
    }

    /// Waits until the node holds no release of an application whose name contains `part`,
    /// and no temporary install directory.
    pub async fn wait_releases_gone(&self, part: &str) -> anyhow::Result<()> {
        let releases = &self.releases;
        let swept = poll(
            "the releases of the applications to be swept",
            SWEEP_WAIT,
            || {
                let left = releases_of(releases, part);
                async move { anyhow::Ok(left.is_empty().then_some(())) }
            },
        )
        .await;
        swept.map_err(|e| anyhow::anyhow!("{e}: left {:?}", releases_of(releases, part)))
    }

    /// The keys of the cache's objects that contain `part`.
    pub async fn cache_objects(&self, part: &str) -> anyhow::Result<Vec<String>> {
        let client = flame_cache::client::CacheClient::connect(&self.cache).await?;
        Ok(client
            .list("")
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.contains(part))
            .collect())
    }

    /// Checks that nothing of the applications whose names contain `part` is left: no
    /// release on the node (after the sweep), no object in the cache.
    pub async fn ensure_cleaned_up(&self, part: &str) -> anyhow::Result<()> {
        self.wait_releases_gone(part).await?;
        let objects = self.cache_objects(part).await?;
        ensure!(
            objects.is_empty(),
            "objects of {part} left in the cache: {objects:?}"
        );
        Ok(())
    }
}

/// Release directories under `releases` of applications whose name contains `part`, and
/// temporary install directories.
pub fn releases_of(releases: &Path, part: &str) -> Vec<String> {
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
pub fn printed<'a>(run: &'a ScriptRun, key: &str) -> anyhow::Result<&'a str> {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        .with_context(|| format!("no {key} line: {}", run.describe()))
}

/// Checks that `run` printed every line of `expect`.
pub fn ensure_lines(run: &ScriptRun, expect: &[&str]) -> anyhow::Result<()> {
    for line in expect {
        ensure!(
            run.stdout.lines().any(|l| l.trim() == *line),
            "missing {line:?}: {}",
            run.describe()
        );
    }
    Ok(())
}

/// The basic scenario (see the module docs).
pub async fn basic(target: &Target) -> anyhow::Result<()> {
    let files = [("pyproject.toml", PYPROJECT), ("mathfns.py", MODULE)];
    let run = target.run("project", &files, CLIENT).await?;
    ensure!(run.passed("RUNNER OK"), "{}", run.describe());
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
    ensure!(
        Path::new(deps).starts_with(&target.releases) && deps.ends_with("/deps"),
        "the instance did not run from a release under {}: {deps}",
        target.releases.display()
    );
    target.ensure_cleaned_up(name).await?;
    ensure!(!Path::new(deps).exists(), "{deps} is still there");
    Ok(())
}

/// The nested scenario (see the module docs).
pub async fn nested(target: &Target) -> anyhow::Result<()> {
    let module = nested_module();
    let files = [
        ("pyproject.toml", OUTER_PYPROJECT),
        ("nested.py", module.as_str()),
    ];
    let run = target.run("outer", &files, NESTED_CLIENT).await?;
    ensure!(run.passed("NESTED OK"), "{}", run.describe());
    ensure_lines(
        &run,
        &[
            "NESTED [0, 1, 8, 27]",
            "FLMEXEC [0, 1, 8]",
            "APPS ['flmexec', 'flmping', 'flmrun']",
        ],
    )?;
    for app in ["outer-", "inner-task-", "inner-flmexec-"] {
        target.ensure_cleaned_up(app).await?;
    }
    Ok(())
}

/// The broken-package scenario (see the module docs).
pub async fn broken(target: &Target) -> anyhow::Result<()> {
    // No pyproject.toml: the Runner generates one with the dependencies it is given.
    let files = [("plain.py", "def square(x):\n    return x * x\n")];
    let run = target.run("broken", &files, BROKEN_CLIENT).await?;
    ensure!(run.passed("BROKEN OK"), "{}", run.describe());
    let unresolvable = printed(&run, "UNRESOLVABLE")?;
    ensure!(
        unresolvable.contains("application installation failed")
            && unresolvable.contains("flame-no-such-dist-e2e"),
        "{}",
        run.describe()
    );
    let no_python = printed(&run, "NO PYTHON")?;
    ensure!(
        no_python.contains("application installation failed") && no_python.contains("3.99"),
        "{}",
        run.describe()
    );
    let tag = printed(&run, "TAG")?;
    for app in [format!("broken-dep-{tag}"), format!("broken-py-{tag}")] {
        target.ensure_cleaned_up(&app).await?;
    }
    Ok(())
}

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
