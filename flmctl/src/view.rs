//! `flmctl view`: one session, task, application or node in detail.
//!
//! What: a session (`-s <id>`) shows upstream's key/value rows (`Session:`, `Application:`,
//! `State:`, `Resources:`, `Creation Time:`, `Tasks:`) and its events as `  HH:MM:SS.mmm:
//! <message> (<code>)`; `-o json|yaml` prints the session with its tasks. A task (`-s <id> -t
//! <task>`) shows `Task:`, `Session:`, `Application:`, `State:` and its events in the same form.
//! An application (`-a <name>`) shows every spec field, its labels, arguments, environments and
//! schema. A node (`-n <name>`) shows its name, hostname, status, capacity and platform. Reads go
//! to the first member that answers.
//!
//! A session that waits for executors also shows `Waiting: <reason>` (`waiting` in JSON): why,
//! from the scheduler's rules (`Cluster.ExplainSession`: binding, no capacity, below its share,
//! ...), and how many executors it holds of those it wants.
//!
//! Caveat: times are UTC.

use crate::client::{first_answer, first_answer_of};
use crate::output::{Format, bytes, clock};
use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::cluster::{ExplainSessionReply, ExplainSessionRequest};
use flame_proto::v1::{
    self, GetApplicationRequest, GetNodeRequest, GetSessionRequest, GetTaskRequest,
    ListTaskRequest, NodeState, SessionState, Shim, TaskState,
};
use serde_json::{Value, json};

/// What `flmctl view` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A session by id.
    Session(String),
    /// A task by session id and task id.
    Task {
        /// The session the task belongs to.
        session: String,
        /// The task id within the session.
        task: String,
    },
    /// An application by name.
    Application(String),
    /// A node by name.
    Node(String),
}

/// The text `flmctl view` prints for `target` in `format`.
pub async fn view(endpoints: &[String], target: &Target, format: Format) -> anyhow::Result<String> {
    let value = match target {
        Target::Session(id) => {
            let session = get_session(endpoints, id).await?;
            let waiting = explain(endpoints, id).await;
            if format == Format::Table {
                return Ok(session_text(&session, waiting.as_ref()));
            }
            let tasks = tasks(endpoints, id).await?;
            let mut value = session_value(&session, &tasks);
            if let Some(w) = waiting {
                value["waiting"] = json!({
                    "reason": w.reason, "detail": w.detail,
                    "instances": w.instances, "desired": w.desired,
                });
            }
            value
        }
        Target::Task { session, task } => {
            let application = get_session(endpoints, session)
                .await?
                .spec
                .map(|s| s.application)
                .unwrap_or_default();
            let task = get_task(endpoints, session, task).await?;
            if format == Format::Table {
                return Ok(task_text(&task, session, &application));
            }
            let mut value = task_value(&task);
            value["session"] = json!(session);
            value["application"] = json!(application);
            value
        }
        Target::Application(name) => application_value(&get_application(endpoints, name).await?),
        Target::Node(name) => {
            let node = get_node(endpoints, name).await?;
            if format == Format::Table {
                return Ok(node_text(&node));
            }
            node_value(&node)
        }
    };
    Ok(match format {
        Format::Table => key_values(&value, 0, &APPLICATION_ORDER, false),
        Format::Json => serde_json::to_string_pretty(&value)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(&value)?,
    })
}

async fn get_session(endpoints: &[String], id: &str) -> anyhow::Result<v1::Session> {
    let reply = first_answer(endpoints, |mut c| {
        let session_id = id.to_owned();
        async move { c.get_session(GetSessionRequest { session_id }).await }
    })
    .await?;
    Ok(reply.into_inner())
}

/// Why session `id` waits for executors, when it does; `None` also when no member could say
/// (a member without `ExplainSession`), since the rest of the view does not depend on it.
async fn explain(endpoints: &[String], id: &str) -> Option<ExplainSessionReply> {
    let reply = first_answer_of(endpoints, ClusterClient::new, |mut c| {
        let session_id = id.to_owned();
        async move {
            c.explain_session(ExplainSessionRequest { session_id })
                .await
        }
    })
    .await;
    match reply {
        Ok(reply) => Some(reply.into_inner()).filter(|r| r.waiting),
        Err(error) => {
            tracing::debug!(%error, "no member explained the session");
            None
        }
    }
}

async fn get_task(endpoints: &[String], session: &str, task: &str) -> anyhow::Result<v1::Task> {
    let reply = first_answer(endpoints, |mut c| {
        let request = GetTaskRequest {
            task_id: task.to_owned(),
            session_id: session.to_owned(),
        };
        async move { c.get_task(request).await }
    })
    .await?;
    Ok(reply.into_inner())
}

async fn get_application(endpoints: &[String], name: &str) -> anyhow::Result<v1::Application> {
    let reply = first_answer(endpoints, |mut c| {
        let name = name.to_owned();
        async move { c.get_application(GetApplicationRequest { name }).await }
    })
    .await?;
    Ok(reply.into_inner())
}

async fn get_node(endpoints: &[String], name: &str) -> anyhow::Result<v1::Node> {
    let reply = first_answer(endpoints, |mut c| {
        let name = name.to_owned();
        async move { c.get_node(GetNodeRequest { name }).await }
    })
    .await?;
    reply
        .into_inner()
        .node
        .ok_or_else(|| anyhow::anyhow!("node {name} not found"))
}

/// Every task of session `id`, from the first member whose stream completes.
async fn tasks(endpoints: &[String], id: &str) -> anyhow::Result<Vec<v1::Task>> {
    first_answer(endpoints, |mut c| {
        let session_id = id.to_owned();
        async move {
            let mut stream = c
                .list_task(ListTaskRequest { session_id })
                .await?
                .into_inner();
            let mut tasks = Vec::new();
            while let Some(task) = stream.message().await? {
                tasks.push(task);
            }
            Ok(tasks)
        }
    })
    .await
}

/// `HH:MM:SS.mmm` (UTC).
fn clock_ms(unix_ms: i64) -> String {
    format!("{}.{:03}", clock(unix_ms), unix_ms.rem_euclid(1000))
}

fn events_text(events: &[v1::Event]) -> String {
    let mut text = String::from("Events:\n");
    for event in events {
        let message = event.message.as_deref().unwrap_or("-");
        let when = clock_ms(event.creation_time);
        text.push_str(&format!("  {when}: {message} ({})\n", event.code));
    }
    text
}

fn session_text(session: &v1::Session, waiting: Option<&ExplainSessionReply>) -> String {
    let spec = session.spec.clone().unwrap_or_default();
    let st = session.status.clone().unwrap_or_default();
    let id = session.metadata.as_ref().map_or("", |m| m.id.as_str());
    let state = SessionState::try_from(st.state).map_or("-", |s| s.as_str_name());
    let resources = spec.resreq.map_or_else(
        || "-".to_owned(),
        |r| format!("cpu={},mem={},gpu={}", r.cpu, bytes(r.memory), r.gpu),
    );
    let waiting = waiting.map_or_else(String::new, |w| {
        format!(
            "Waiting: {} (holds {} of {} executors)\n",
            w.detail, w.instances, w.desired
        )
    });
    format!(
        "Session: {id}\nApplication: {}\nState: {state}\nResources: {resources}\n\
         Creation Time: {}\nTasks: \"{} pending, {} running, {} succeed, {} failed\"\n{waiting}{}",
        spec.application,
        clock(st.creation_time),
        st.pending,
        st.running,
        st.succeed,
        st.failed,
        events_text(&st.events)
    )
}

fn task_text(task: &v1::Task, session: &str, application: &str) -> String {
    let id = task.metadata.as_ref().map_or("", |m| m.id.as_str());
    let status = task.status.clone().unwrap_or_default();
    let state = TaskState::try_from(status.state).map_or("-", |s| s.as_str_name());
    format!(
        "Task: {id}\nSession: {session}\nApplication: {application}\nState: {state}\n{}",
        events_text(&status.events)
    )
}

/// A node's state name (`Ready`, `NotReady`, `Unknown`).
fn node_state(node: &v1::Node) -> &'static str {
    let state = node.status.as_ref().map_or(0, |s| s.state);
    NodeState::try_from(state).map_or("Unknown", |s| s.as_str_name())
}

fn node_text(node: &v1::Node) -> String {
    let status = node.status.clone().unwrap_or_default();
    let capacity = status.capacity.unwrap_or_default();
    let info = status.info.unwrap_or_default();
    format!(
        "Name: {}\nHostname: {}\nStatus: {}\nCapacity:\n  CPU: {}\n  Memory: {}\n\
         Info:\n  Arch: {}\n  OS: {}\n",
        node.metadata.as_ref().map_or("", |m| m.name.as_str()),
        node.spec.as_ref().map_or("", |s| s.hostname.as_str()),
        node_state(node),
        capacity.cpu,
        bytes(capacity.memory),
        info.arch,
        info.os,
    )
}

fn node_value(node: &v1::Node) -> Value {
    let status = node.status.clone().unwrap_or_default();
    let capacity = status.capacity.unwrap_or_default();
    let info = status.info.unwrap_or_default();
    json!({
        "name": node.metadata.as_ref().map(|m| m.name.clone()),
        "hostname": node.spec.as_ref().map(|s| s.hostname.clone()),
        "status": node_state(node),
        "capacity": {"cpu": capacity.cpu, "memory": capacity.memory, "gpu": capacity.gpu},
        "info": {"arch": info.arch, "os": info.os},
    })
}

fn session_value(session: &v1::Session, tasks: &[v1::Task]) -> Value {
    let spec = session.spec.clone().unwrap_or_default();
    let st = session.status.clone().unwrap_or_default();
    let tasks: Vec<Value> = tasks.iter().map(task_value).collect();
    json!({
        "id": session.metadata.as_ref().map(|m| m.id.clone()),
        "application": spec.application,
        "state": SessionState::try_from(st.state).map_or("-", |s| s.as_str_name()),
        "priority": spec.priority,
        "min_instances": spec.min_instances,
        "max_instances": spec.max_instances,
        "resources": spec.resreq.map(|r| json!({"cpu": r.cpu, "memory": r.memory, "gpu": r.gpu})),
        "creation_time": st.creation_time,
        "completion_time": st.completion_time,
        "pending": st.pending, "running": st.running, "succeed": st.succeed,
        "failed": st.failed, "cancelled": st.cancelled,
        "events": st.events.iter().map(event_value).collect::<Vec<_>>(),
        "tasks": tasks,
    })
}

fn event_value(event: &v1::Event) -> Value {
    json!({"code": event.code, "message": event.message, "creation_time": event.creation_time})
}

fn task_value(task: &v1::Task) -> Value {
    let status = task.status.clone().unwrap_or_default();
    let output = task.spec.as_ref().and_then(|s| s.output.as_deref());
    json!({
        "id": task.metadata.as_ref().map(|m| m.id.clone()),
        "state": TaskState::try_from(status.state).map_or("-", |s| s.as_str_name()),
        "creation_time": status.creation_time,
        "completion_time": status.completion_time,
        "output": output.map(|o| String::from_utf8_lossy(o).into_owned()),
        "events": status.events.iter().map(event_value).collect::<Vec<_>>(),
    })
}

fn application_value(app: &v1::Application) -> Value {
    let spec = app.spec.clone().unwrap_or_default();
    let status = app.status.unwrap_or_default();
    let schema = spec.schema.unwrap_or_default();
    let environments: serde_json::Map<String, Value> = spec
        .environments
        .iter()
        .map(|e| (e.name.clone(), Value::String(e.value.clone())))
        .collect();
    json!({
        "name": app.metadata.as_ref().map(|m| m.name.clone()),
        "state": if status.state == v1::ApplicationState::Disabled as i32 { "Disabled" } else { "Enabled" },
        "shim": Shim::try_from(spec.shim).map_or("-", |s| s.as_str_name()),
        "description": spec.description,
        "labels": spec.labels,
        "image": spec.image,
        "command": spec.command,
        "arguments": spec.arguments,
        "environments": environments,
        "working_directory": spec.working_directory,
        "max_instances": spec.max_instances,
        "delay_release": spec.delay_release,
        "url": spec.url,
        "installer": spec.installer,
        "schema": {"input": schema.input, "output": schema.output, "common_data": schema.common_data},
        "creation_time": status.creation_time,
    })
}

/// The order of an application's top-level fields in the text view.
const APPLICATION_ORDER: [&str; 16] = [
    "name",
    "state",
    "shim",
    "description",
    "labels",
    "image",
    "command",
    "arguments",
    "environments",
    "working_directory",
    "max_instances",
    "delay_release",
    "url",
    "installer",
    "schema",
    "creation_time",
];

/// A JSON object as indented `Key: value` lines, the keys in `order` first; `-` for null,
/// lists one item per line. Keys are title-cased unless `raw` (environment variable names).
fn key_values(value: &Value, indent: usize, order: &[&str], raw: bool) -> String {
    let pad = "  ".repeat(indent);
    let mut text = String::new();
    let Value::Object(map) = value else {
        return format!("{pad}{}\n", scalar(value));
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(order.len()));
    for (key, value) in keys.into_iter().map(|k| (k, &map[k])) {
        let key = if raw { key.clone() } else { title(key) };
        match value {
            Value::Object(inner) if inner.is_empty() => text.push_str(&format!("{pad}{key}: -\n")),
            Value::Object(_) => text.push_str(&format!(
                "{pad}{key}:\n{}",
                key_values(value, indent + 1, &[], key == "Environments")
            )),
            Value::Array(items) if items.is_empty() => text.push_str(&format!("{pad}{key}: -\n")),
            Value::Array(items) => {
                text.push_str(&format!("{pad}{key}:\n"));
                for item in items {
                    text.push_str(&format!("{pad}  - {}\n", scalar(item)));
                }
            }
            Value::Number(ms) if key.ends_with(" Time") => {
                let when = clock(ms.as_i64().unwrap_or_default());
                text.push_str(&format!("{pad}{key}: {when}\n"));
            }
            _ => text.push_str(&format!("{pad}{key}: {}\n", scalar(value))),
        }
    }
    text
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `working_directory` → `Working Directory`; `url` → `URL`.
fn title(key: &str) -> String {
    if key == "url" {
        return "URL".to_owned();
    }
    key.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
        })
        .collect::<Vec<_>>()
        .join(" ")
}
