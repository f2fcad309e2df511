//! Applications: the built-ins, RegisterApplication, UpdateApplication and UnregisterApplication
//! (spec sections 5.1 and 5.2).
//!
//! An application is Enabled from registration until it is unregistered; there is no other
//! state, so there is no transition table. The rules that matter:
//!
//! | Command | Refused when | Error (reported in-band as `Result{-1}`) |
//! |---|---|---|
//! | RegisterApplication | bad name, bad spec | `InvalidArgument` |
//! | RegisterApplication | the name exists | `AlreadyExists`: `application <n> already exists` |
//! | UpdateApplication, UnregisterApplication | unknown name | `NotFound`: `application <n> not found` |
//! | UpdateApplication, UnregisterApplication | an Open session | `InvalidState`: `... open sessions ...` |
//!
//! UnregisterApplication removes the application and all of its (Closed) sessions with their
//! tasks, events and request ids, and appends the object drop `<name>/*` (see the cache
//! module). UpdateApplication replaces every spec field, shim and image included (the
//! specification's recommended improvement), and keeps the creation time.
//!
//! Caveat: the Frontend validates the spec (schemas, working directory) before proposing and
//! reports those failures as INVALID_ARGUMENT; apply checks again so a malformed command cannot
//! store a bad spec.

use super::command::Outcome;
use super::tx::Tx;
use flame_proto::error::FlameError;
use flame_proto::model::{
    Application, ApplicationSchema, ApplicationSpec, ApplicationState, validate_application_name,
};
use std::sync::Arc;

/// The draft-07 input schema of `flmexec`: an object with `language`, `code` and `input`.
const FLMEXEC_INPUT_SCHEMA: &str = concat!(
    r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","#,
    r#""properties":{"language":{"type":"string"},"code":{"type":"string"},"#,
    r#""input":{"type":"array","items":{"type":"integer"}}},"#,
    r#""required":["language","code"]}"#
);

/// The draft-07 output schema of `flmexec`: a string.
const FLMEXEC_OUTPUT_SCHEMA: &str =
    r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"string"}"#;

/// The three built-in applications of spec section 5.2, with `${...}` references unexpanded.
pub fn builtin_applications() -> Vec<(String, ApplicationSpec)> {
    let flmexec = ApplicationSpec {
        description: Some("The Flame Executor application, which is used to run scripts.".into()),
        command: Some("${FLAME_HOME}/bin/flmexec-service".into()),
        schema: Some(ApplicationSchema {
            input: Some(FLMEXEC_INPUT_SCHEMA.into()),
            output: Some(FLMEXEC_OUTPUT_SCHEMA.into()),
            common_data: None,
        }),
        ..ApplicationSpec::default()
    };
    let flmping = ApplicationSpec {
        command: Some("${FLAME_HOME}/bin/flmping-service".into()),
        url: Some("file://${FLAME_HOME}/bin/flmping-service".into()),
        ..ApplicationSpec::default()
    };
    let flmrun = ApplicationSpec {
        description: Some(
            "The Flame Runner application for executing customized Python applications.".into(),
        ),
        command: Some("${FLAME_HOME}/bin/uv".into()),
        arguments: [
            "run",
            "--python",
            "python${FLAME_PYTHON_VERSION}",
            "python",
            "-m",
            "flamepy.runner.runpy",
        ]
        .map(String::from)
        .to_vec(),
        installer: Some("python".into()),
        ..ApplicationSpec::default()
    };
    vec![
        ("flmexec".into(), flmexec),
        ("flmping".into(), flmping),
        ("flmrun".into(), flmrun),
    ]
}

/// EnsureBuiltins: registers each built-in that is absent; returns the names registered.
pub(crate) fn ensure_builtins(tx: &mut Tx<'_>) -> Outcome {
    let now_ms = tx.now_ms;
    let mut registered = Vec::new();
    for (name, spec) in builtin_applications() {
        if tx.state.application(&name).is_none() {
            store(tx, name.clone(), spec, now_ms);
            registered.push(name);
        }
    }
    Outcome::Registered(registered)
}

fn store(tx: &mut Tx<'_>, name: String, spec: ApplicationSpec, creation_time_ms: i64) {
    tx.log.application_changed(&name);
    let app = Application {
        name: name.clone(),
        spec,
        state: ApplicationState::Enabled,
        creation_time_ms,
    };
    tx.state.applications.insert(name, Arc::new(app));
}

fn not_found(name: &str) -> FlameError {
    FlameError::NotFound(format!("application {name} not found"))
}

fn refuse_open_sessions(tx: &Tx<'_>, name: &str, action: &str) -> Result<(), FlameError> {
    match tx.state.open_sessions_of(name) {
        0 => Ok(()),
        n => Err(FlameError::InvalidState(format!(
            "application {name} has open sessions ({n}); close them before {action} it"
        ))),
    }
}

/// RegisterApplication.
pub(crate) fn register(
    tx: &mut Tx<'_>,
    name: String,
    spec: ApplicationSpec,
) -> Result<Application, FlameError> {
    let now_ms = tx.now_ms;
    validate_application_name(&name)?;
    spec.validate()?;
    if tx.state.application(&name).is_some() {
        return Err(FlameError::AlreadyExists(format!(
            "application {name} already exists"
        )));
    }
    store(tx, name.clone(), spec, now_ms);
    tx.state
        .application(&name)
        .cloned()
        .ok_or_else(|| not_found(&name))
}

/// UpdateApplication: every field of the spec is replaced.
pub(crate) fn update(
    tx: &mut Tx<'_>,
    name: &str,
    spec: ApplicationSpec,
) -> Result<Application, FlameError> {
    let current = tx.state.application(name).ok_or_else(|| not_found(name))?;
    let creation_time_ms = current.creation_time_ms;
    spec.validate()?;
    refuse_open_sessions(tx, name, "updating")?;
    store(tx, name.to_owned(), spec, creation_time_ms);
    tx.state
        .application(name)
        .cloned()
        .ok_or_else(|| not_found(name))
}

/// UnregisterApplication, the application's part, checked before anything changes: the
/// application exists and has no Open session.
pub(crate) fn check_unregister(tx: &Tx<'_>, name: &str) -> Result<(), FlameError> {
    if tx.state.application(name).is_none() {
        return Err(not_found(name));
    }
    refuse_open_sessions(tx, name, "unregistering")
}

/// Removes application `name`; the rules layer has checked it and removed its sessions.
pub(crate) fn remove(tx: &mut Tx<'_>, name: &str) {
    tx.state.applications.remove(name);
    tx.log.application_removed(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_specs_are_valid_and_unexpanded() {
        let apps = builtin_applications();
        let names: Vec<&str> = apps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["flmexec", "flmping", "flmrun"]);
        for (name, spec) in &apps {
            assert_eq!(spec.validate(), Ok(()), "{name}");
            assert!(
                spec.command
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("${FLAME_HOME}/bin/")
            );
            assert_eq!(
                (spec.max_instances, spec.delay_release_secs),
                (1_000_000, 60)
            );
            assert!(spec.working_directory.is_none());
        }
        assert!(FLMEXEC_INPUT_SCHEMA.contains(r#""required":["language","code"]"#));
        assert!(FLMEXEC_INPUT_SCHEMA.contains(r#""items":{"type":"integer"}"#));
    }
}
