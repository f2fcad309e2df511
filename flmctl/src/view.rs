//! `flmctl view -s <id>` and `flmctl view -a <name>`: one session or application in detail.
//!
//! What: a session shows upstream's key/value rows (`Session:`, `Application:`, `State:`,
//! `Resources:`, `Creation Time:`, `Tasks:`) and its events as `  HH:MM:SS.mmm: <message>
//! (<code>)`; `-o json|yaml` prints the session with its tasks. An application shows every spec
//! field, its labels, arguments, environments and schema. Reads go to the first member that
//! answers.
//!
//! Caveat: `view -s <id> -t <task>` and `view -n <node>` are not here yet; times are UTC.

use crate::client::first_answer;
use crate::output::{Format, bytes, clock};
use flame_proto::v1::{
    self, GetApplicationRequest, GetSessionRequest, ListTaskRequest, SessionState, Shim, TaskState,
};
use serde_json::{Value, json};

/// What `flmctl view` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A session by id.
    Session(String),
    /// An application by name.
    Application(String),
}

/// The text `flmctl view` prints for `target` in `format`.
pub async fn view(endpoints: &[String], target: &Target, format: Format) -> anyhow::Result<String> {
    let value = match target {
        Target::Session(id) => {
            let session = first_answer(endpoints, |mut c| {
                let session_id = id.clone();
                async move { c.get_session(GetSessionRequest { session_id }).await }
            })
            .await?
            .into_inner();
            if format == Format::Table {
                return Ok(session_text(&session));
            }
            let tasks = tasks(endpoints, id).await?;
            session_value(&session, &tasks)
        }
        Target::Application(name) => {
            let app = first_answer(endpoints, |mut c| {
                let name = name.clone();
                async move { c.get_application(GetApplicationRequest { name }).await }
            })
            .await?
            .into_inner();
            application_value(&app)
        }
    };
    Ok(match format {
        Format::Table => key_values(&value, 0, &APPLICATION_ORDER),
        Format::Json => serde_json::to_string_pretty(&value)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(&value)?,
    })
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

fn session_text(session: &v1::Session) -> String {
    let spec = session.spec.clone().unwrap_or_default();
    let st = session.status.clone().unwrap_or_default();
    let id = session.metadata.as_ref().map_or("", |m| m.id.as_str());
    let state = SessionState::try_from(st.state).map_or("-", |s| s.as_str_name());
    let resources = spec.resreq.map_or_else(
        || "-".to_owned(),
        |r| format!("cpu={},mem={},gpu={}", r.cpu, bytes(r.memory), r.gpu),
    );
    format!(
        "Session: {id}\nApplication: {}\nState: {state}\nResources: {resources}\n\
         Creation Time: {}\nTasks: \"{} pending, {} running, {} succeed, {} failed\"\n{}",
        spec.application,
        clock(st.creation_time),
        st.pending,
        st.running,
        st.succeed,
        st.failed,
        events_text(&st.events)
    )
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
/// lists one item per line.
fn key_values(value: &Value, indent: usize, order: &[&str]) -> String {
    let pad = "  ".repeat(indent);
    let mut text = String::new();
    let Value::Object(map) = value else {
        return format!("{pad}{}\n", scalar(value));
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(order.len()));
    for (key, value) in keys.into_iter().map(|k| (k, &map[k])) {
        let key = title(key);
        match value {
            Value::Object(inner) if inner.is_empty() => text.push_str(&format!("{pad}{key}: -\n")),
            Value::Object(_) => text.push_str(&format!(
                "{pad}{key}:\n{}",
                key_values(value, indent + 1, &[])
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
