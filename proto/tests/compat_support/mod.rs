//! Machinery of the flamepy compatibility test: setting up Python, the two Python calls
//! (export, verify), the messages Rust builds, and the descriptor comparison.
//!
//! Caveat: the exchange with Python runs once per test binary and is shared by every test; if
//! it fails, each test reports the same setup error.

#![allow(dead_code)] // Each test uses a part of this module.

use flame_proto::{model, v1};
use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The text of the session event in the Rust-built session.
pub const RETRY_TEXT: &str = "Session retry limit reached after 5/5 failed attempts; new \
    executor assignment is paused for this session; existing executors are unchanged.";

/// One encoded message, as exchanged with Python.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Encoded {
    /// Sample name.
    pub name: String,
    /// Unqualified `flame.v1` message name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The encoded bytes, lowercase hex.
    pub hex: String,
}

/// What `flamepy_compat.py export` prints.
#[derive(Debug, Deserialize)]
pub struct Export {
    /// `importlib.metadata.version("flamepy")`.
    pub flamepy_version: String,
    /// flamepy's FileDescriptorSet, hex.
    pub descriptor_set: String,
    /// flamepy-built sample messages.
    pub samples: Vec<Encoded>,
}

/// What `flamepy_compat.py verify` prints.
#[derive(Debug, Deserialize)]
pub struct Verify {
    /// Every problem flamepy found, plus Rust-side decode failures.
    pub failures: Vec<String>,
    /// flamepy's dump of each Rust-built message.
    pub dumps: BTreeMap<String, Value>,
}

#[derive(Serialize)]
struct VerifyRequest {
    reencoded: Vec<Encoded>,
    rust_built: Vec<Encoded>,
}

/// Both Python answers.
#[derive(Debug)]
pub struct Exchange {
    /// The export.
    pub export: Export,
    /// The verification of what Rust sent back.
    pub verify: Verify,
}

impl Exchange {
    /// Decodes flamepy's sample `name` as `M`.
    pub fn sample<M: Message + Default>(&self, name: &str) -> M {
        let sample = self.export.samples.iter().find(|s| s.name == name);
        let sample = sample.unwrap_or_else(|| panic!("flamepy exported no sample {name}"));
        let bytes = from_hex(&sample.hex).expect("sample hex");
        M::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("sample {name}: {e}"))
    }

    /// Asserts that flamepy's dump of the Rust-built message `name` equals `expected`.
    pub fn assert_dump(&self, name: &str, expected: Value) {
        let got = self.verify.dumps.get(name);
        let got = got.unwrap_or_else(|| panic!("flamepy returned no dump of {name}"));
        assert_eq!(
            got, &expected,
            "flamepy decoded our {name} differently\n got:      {}\n expected: {}",
            got, expected
        );
    }
}

/// Runs the exchange once per test binary.
pub fn exchange() -> &'static Exchange {
    static EXCHANGE: OnceLock<Result<Exchange, String>> = OnceLock::new();
    match EXCHANGE.get_or_init(run_exchange) {
        Ok(ex) => ex,
        Err(e) => panic!("{e}"),
    }
}

fn run_exchange() -> Result<Exchange, String> {
    let python = flamepy_python()?;
    let out = run_python(&python, "export", None)?;
    let export: Export =
        serde_json::from_str(&out).map_err(|e| format!("bad export output: {e}: {out}"))?;
    let mut rust_failures = Vec::new();
    let mut reencoded = Vec::new();
    for sample in &export.samples {
        match from_hex(&sample.hex).and_then(|b| reencode(&sample.type_name, &b)) {
            Ok(bytes) => reencoded.push(Encoded {
                hex: to_hex(&bytes),
                ..sample.clone()
            }),
            Err(e) => rust_failures.push(format!("rust cannot decode sample {}: {e}", sample.name)),
        }
    }
    let request = VerifyRequest {
        reencoded,
        rust_built: rust_built(),
    };
    let input = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    let out = run_python(&python, "verify", Some(&input))?;
    let mut verify: Verify =
        serde_json::from_str(&out).map_err(|e| format!("bad verify output: {e}: {out}"))?;
    verify.failures.extend(rust_failures);
    Ok(Exchange { export, verify })
}

/// Runs `scripts/flamepy-venv.sh` and returns the python it prints on its last line.
fn flamepy_python() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flamepy-venv.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match (out.status.success(), last) {
        (true, Some(path)) => Ok(PathBuf::from(path.trim())),
        _ => Err(format!(
            "the flamepy compatibility test needs Python with flamepy==0.6.0, and {} failed \
             ({}). It creates a venv with `python3 -m venv` and installs flamepy from PyPI, so \
             it needs python3 and network access; or point FLAME_VENV at a venv that has \
             flamepy 0.6.0.\nstderr:\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn run_python(python: &Path, command: &str, stdin: Option<&str>) -> Result<String, String> {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flamepy_compat.py");
    let mut child = Command::new(python)
        .arg(&helper)
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let mut pipe = child.stdin.take().ok_or("no stdin pipe")?;
    pipe.write_all(stdin.unwrap_or("").as_bytes())
        .map_err(|e| format!("cannot feed {command}: {e}"))?;
    drop(pipe);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "flamepy_compat.py {command} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// Decodes `bytes` as the `flame.v1` message `type_name` and encodes it again.
fn reencode(type_name: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    fn again<M: Message + Default>(bytes: &[u8]) -> Result<Vec<u8>, String> {
        M::decode(bytes)
            .map(|m| m.encode_to_vec())
            .map_err(|e| e.to_string())
    }
    match type_name {
        "Session" => again::<v1::Session>(bytes),
        "SessionList" => again::<v1::SessionList>(bytes),
        "Task" => again::<v1::Task>(bytes),
        "Application" => again::<v1::Application>(bytes),
        "Node" => again::<v1::Node>(bytes),
        "GetNodeResponse" => again::<v1::GetNodeResponse>(bytes),
        "ExecutorList" => again::<v1::ExecutorList>(bytes),
        "OpenSessionRequest" => again::<v1::OpenSessionRequest>(bytes),
        "CreateSessionRequest" => again::<v1::CreateSessionRequest>(bytes),
        "RegisterApplicationRequest" => again::<v1::RegisterApplicationRequest>(bytes),
        "WatchTaskRequest" => again::<v1::WatchTaskRequest>(bytes),
        "CreateTaskRequest" => again::<v1::CreateTaskRequest>(bytes),
        "TaskContext" => again::<v1::TaskContext>(bytes),
        "SessionContext" => again::<v1::SessionContext>(bytes),
        "TaskResult" => again::<v1::TaskResult>(bytes),
        "Result" => again::<v1::Result>(bytes),
        other => Err(format!("no Rust type registered for {other}")),
    }
}

fn encoded<M: Message>(name: &str, type_name: &str, message: &M) -> Encoded {
    Encoded {
        name: name.to_owned(),
        type_name: type_name.to_owned(),
        hex: to_hex(&message.encode_to_vec()),
    }
}

fn rr(cpu: u64, memory: u64, gpu: i32) -> model::ResourceRequirement {
    model::ResourceRequirement { cpu, memory, gpu }
}

fn rust_session() -> model::Session {
    model::Session {
        id: "s-1".into(),
        spec: model::SessionSpec {
            application: "flmrun".into(),
            common_data: Some(vec![0x00, 0xff].into()),
            min_instances: 2,
            max_instances: Some(0),
            priority: 3,
            resreq: rr(2, 512, 1),
        },
        state: model::SessionState::Closed,
        creation_time_ms: 1000,
        completion_time_ms: Some(2000),
        counters: model::TaskCounters {
            pending: 1,
            running: 2,
            succeed: 3,
            failed: 4,
            cancelled: 5,
        },
        events: vec![model::Event::session_retry_limit_reached(5, 5, 1500)],
    }
}

fn rust_tasks() -> (model::Task, model::Task) {
    let failed = model::Task {
        id: model::TaskId(42),
        session_id: "s-1".into(),
        input: Some(Vec::new().into()),
        output: Some(b"out".to_vec().into()),
        state: model::TaskState::Failed,
        creation_time_ms: 10,
        completion_time_ms: Some(20),
        events: vec![
            model::Event::task_created(10),
            model::Event::task_failed(Some("boom".into()), 20),
        ],
    };
    let cancelled = model::Task {
        id: model::TaskId(43),
        input: None,
        output: None,
        state: model::TaskState::Cancelled,
        creation_time_ms: 11,
        completion_time_ms: Some(21),
        events: Vec::new(),
        ..failed.clone()
    };
    (failed, cancelled)
}

fn rust_application() -> model::Application {
    let env = |name: &str, value: &str| model::Environment {
        name: name.into(),
        value: value.into(),
    };
    model::Application {
        name: "my-app".into(),
        spec: model::ApplicationSpec {
            shim: model::Shim::Wasm,
            description: Some("d".into()),
            labels: vec!["l1".into(), "l2".into()],
            image: Some("img".into()),
            command: Some("${FLAME_HOME}/bin/uv".into()),
            arguments: vec!["run".into(), "-m".into()],
            environments: vec![env("K", "V"), env("A", "")],
            working_directory: Some("/w".into()),
            max_instances: 9,
            delay_release_secs: 7,
            schema: Some(model::ApplicationSchema {
                input: Some("{}".into()),
                output: None,
                common_data: Some("true".into()),
            }),
            url: Some("file:///p".into()),
            installer: Some("python".into()),
        },
        state: model::ApplicationState::Disabled,
        creation_time_ms: 77,
    }
}

fn rust_node() -> model::Node {
    model::Node {
        name: "n-1".into(),
        hostname: "other-host".into(),
        state: model::NodeState::NotReady,
        capacity: rr(8, 4096, 2),
        allocatable: rr(7, 2048, 1),
        arch: "aarch64".into(),
        os: "linux".into(),
        addresses: vec![model::NodeAddress {
            kind: "InternalIP".into(),
            address: "10.0.0.9".into(),
        }],
        last_heartbeat_ms: 1_700_000_000_999,
        cache: None,
    }
}

fn rust_executors() -> v1::ExecutorList {
    let bound = model::Executor {
        id: "e-1".into(),
        spec: model::ExecutorSpec {
            node: "n-1".into(),
            resreq: rr(1, 64, 3),
            shim: model::Shim::Wasm,
        },
        state: model::ExecutorState::Bound,
        session_id: Some("s-1".into()),
    };
    let releasing = model::Executor {
        id: "e-2".into(),
        spec: model::ExecutorSpec {
            node: "n-2".into(),
            resreq: rr(4, 0, 0),
            shim: model::Shim::Host,
        },
        state: model::ExecutorState::Releasing,
        session_id: None,
    };
    v1::ExecutorList {
        executors: vec![(&bound).into(), (&releasing).into()],
    }
}

/// The messages Rust encodes for flamepy to decode; `flamepy_compat.rs` holds the expectations.
fn rust_built() -> Vec<Encoded> {
    let session = rust_session();
    let (task, cancelled) = rust_tasks();
    let app = rust_application();
    let bare = model::Application {
        name: "bare".into(),
        spec: model::ApplicationSpec::default(),
        state: model::ApplicationState::Enabled,
        creation_time_ms: 5,
    };
    let open_with = v1::OpenSessionRequest {
        session_id: "s-1".into(),
        session: Some((&session.spec).into()),
    };
    let open_without = v1::OpenSessionRequest {
        session_id: "s-2".into(),
        session: None,
    };
    let get_task = v1::GetTaskRequest {
        task_id: "7".into(),
        session_id: "s-3".into(),
    };
    let task_result = v1::TaskResult {
        return_code: 3,
        output: Some(Vec::new()),
        message: Some("boom".into()),
    };
    let result = v1::Result {
        return_code: -1,
        message: Some("application my-app has open sessions".into()),
    };
    vec![
        encoded("session", "Session", &v1::Session::from(&session)),
        encoded("task", "Task", &v1::Task::from(&task)),
        encoded("task_cancelled", "Task", &v1::Task::from(&cancelled)),
        encoded("application", "Application", &v1::Application::from(&app)),
        encoded(
            "application_defaults",
            "Application",
            &v1::Application::from(&bare),
        ),
        encoded("node", "Node", &v1::Node::from(&rust_node())),
        encoded("executor_list", "ExecutorList", &rust_executors()),
        encoded("open_session_with_spec", "OpenSessionRequest", &open_with),
        encoded(
            "open_session_without_spec",
            "OpenSessionRequest",
            &open_without,
        ),
        encoded("get_task", "GetTaskRequest", &get_task),
        encoded("task_context", "TaskContext", &v1::TaskContext::from(&task)),
        encoded(
            "session_context",
            "SessionContext",
            &v1::SessionContext::from((&app, &session)),
        ),
        encoded("task_result", "TaskResult", &task_result),
        encoded("result", "Result", &result),
    ]
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd-length hex: {}", text.len()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            let pair = text.get(i..i + 2).ok_or("non-ASCII hex")?;
            u8::from_str_radix(pair, 16).map_err(|e| format!("bad hex {pair}: {e}"))
        })
        .collect()
}

/// Flattens the `flame.v1` part of a descriptor set into facts, `key → value`, so two sets can
/// be compared both ways and every difference named.
pub fn descriptor_facts(set: &FileDescriptorSet) -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    for file in set.file.iter().filter(|f| f.package() == "flame.v1") {
        file_facts(&mut facts, file);
    }
    facts
}

fn file_facts(facts: &mut BTreeMap<String, String>, file: &FileDescriptorProto) {
    let name = file.name();
    facts.insert(
        format!("file {name}"),
        format!(
            "package={} syntax={} imports={:?}",
            file.package(),
            file.syntax(),
            file.dependency
        ),
    );
    let scope = format!(".{}", file.package());
    for m in &file.message_type {
        message_facts(facts, &scope, name, m);
    }
    for e in &file.enum_type {
        enum_facts(facts, &scope, name, e);
    }
    for s in &file.service {
        service_facts(facts, &scope, name, s);
    }
}

fn message_facts(
    facts: &mut BTreeMap<String, String>,
    scope: &str,
    file: &str,
    m: &DescriptorProto,
) {
    let name = format!("{scope}.{}", m.name());
    facts.insert(format!("message {name}"), format!("file={file}"));
    for f in &m.field {
        facts.insert(
            format!("message {name} field {}", f.name()),
            format!(
                "number={} type={:?} type_name={:?} label={:?} proto3_optional={} oneof_index={:?}",
                f.number(),
                f.r#type(),
                f.type_name(),
                f.label(),
                f.proto3_optional(),
                f.oneof_index
            ),
        );
    }
    for (i, o) in m.oneof_decl.iter().enumerate() {
        facts.insert(format!("message {name} oneof #{i}"), o.name().to_owned());
    }
    for r in &m.reserved_range {
        let key = format!("message {name} reserved range {}..{}", r.start(), r.end());
        facts.insert(key, "reserved".into());
    }
    for n in &m.reserved_name {
        facts.insert(
            format!("message {name} reserved name {n}"),
            "reserved".into(),
        );
    }
    for r in &m.extension_range {
        let key = format!("message {name} extension range {}..{}", r.start(), r.end());
        facts.insert(key, "extension".into());
    }
    for nested in &m.nested_type {
        message_facts(facts, &name, file, nested);
    }
    for e in &m.enum_type {
        enum_facts(facts, &name, file, e);
    }
}

fn enum_facts(
    facts: &mut BTreeMap<String, String>,
    scope: &str,
    file: &str,
    e: &EnumDescriptorProto,
) {
    let name = format!("{scope}.{}", e.name());
    facts.insert(format!("enum {name}"), format!("file={file}"));
    for v in &e.value {
        let key = format!("enum {name} value {}", v.name());
        facts.insert(key, format!("number={}", v.number()));
    }
}

fn service_facts(
    facts: &mut BTreeMap<String, String>,
    scope: &str,
    file: &str,
    s: &ServiceDescriptorProto,
) {
    let name = format!("{scope}.{}", s.name());
    facts.insert(format!("service {name}"), format!("file={file}"));
    for m in &s.method {
        facts.insert(
            format!("service {name} method {}", m.name()),
            format!(
                "input={} output={} client_streaming={} server_streaming={}",
                m.input_type(),
                m.output_type(),
                m.client_streaming(),
                m.server_streaming()
            ),
        );
    }
}

/// Every difference between our facts and flamepy's, one line each.
pub fn diff_facts(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (key, want) in theirs {
        match ours.get(key) {
            None => diffs.push(format!("missing in ours: {key} ({want})")),
            Some(got) if got != want => diffs.push(format!(
                "differs: {key}\n    ours:    {got}\n    flamepy: {want}"
            )),
            Some(_) => {}
        }
    }
    for (key, got) in ours {
        if !theirs.contains_key(key) {
            diffs.push(format!("extra in ours: {key} ({got})"));
        }
    }
    diffs
}
