//! Claim: flamepy 0.6.0's `Runner`, unmodified, works end to end against `flmctl local up`
//! through a follower: it packages a small project written here (a `pyproject.toml` and a
//! module depending on numpy), uploads it to the node's cache, clones `flmrun` (the agent
//! installs numpy with uv from PyPI), runs a function over a list of inputs, a numpy function
//! and a stateful object, and on close unregisters its application.
//!
//! How: local up prepares Python for flmrun (uv and flamepy under `FLAME_HOME`); the client
//! script runs from the project directory (the Runner packages its working directory) with
//! `FLAME_ENDPOINT` at member 2 and `FLAME_CACHE_ENDPOINT` at the node's cache, and prints
//! what it saw.

mod support;

use chaos_tests::flamepy::{flamepy_python, run_client_script};
use std::time::Duration;
use support::{Up, free_base};

/// Installing the package (uv, first on this node) and two sessions of calls.
const DEADLINE: Duration = Duration::from_secs(300);

const PYPROJECT: &str = r#"[project]
name = "runner-e2e"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = ["numpy"]

[tool.setuptools]
py-modules = ["mathfns"]
"#;

const MODULE: &str = r#"
def square(x):
    return x * x


def norm(values):
    # Imported here: numpy is installed on the node by uv, not in the client's venv.
    import numpy

    return float(numpy.linalg.norm(numpy.array(values, dtype=float)))


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
from mathfns import Counter, norm, square

name = "runner-e2e-" + str(os.getpid())
with Runner(name) as runner:
    squares = runner.service(square)
    print("SQUARES", [f.get() for f in [squares(i) for i in range(10)]])
    print("NORM", runner.service(norm)([3, 4]).get())
    counter = runner.service(Counter())
    print("TOTALS", [counter.add(n).get() for n in (1, 2, 3, 4)])
    print("REGISTERED", flamepy.get_application(name) is not None)
print("AFTER", flamepy.get_application(name) is None)
print("RUNNER OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_runs_functions_with_a_numpy_dependency_and_a_stateful_object_then_cleans_up()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_base();
    let (up, _) = Up::start_with(dir.path(), base, true);
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project)?;
    std::fs::write(project.join("pyproject.toml"), PYPROJECT)?;
    std::fs::write(project.join("mathfns.py"), MODULE)?;
    let script = project.join("client.py");
    std::fs::write(&script, CLIENT)?;
    let python = flamepy_python()?;
    let follower = format!("http://127.0.0.1:{}", base + 1);
    let cache = format!("grpc://127.0.0.1:{}", base + 200);
    let env = [("FLAME_CACHE_ENDPOINT", cache)];
    let run = run_client_script(&python, &script, &follower, &env, DEADLINE).await?;
    anyhow::ensure!(run.passed("RUNNER OK"), "{}", run.describe());
    let expect = [
        "SQUARES [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "NORM 5.0",
        "TOTALS [1, 3, 6, 10]",
        "REGISTERED True",
        "AFTER True",
    ];
    for line in expect {
        anyhow::ensure!(
            run.stdout.lines().any(|l| l.trim() == line),
            "missing {line:?}: {}",
            run.describe()
        );
    }
    drop(up);
    Ok(())
}
