//! `flmctl register -f`, `flmctl update -a` and `flmctl unregister -a`: applications from YAML.
//!
//! What: a file holds one or more YAML documents separated by `---`, each upstream's
//! application shape (spec section 13):
//!
//! ```yaml
//! metadata:
//!   name: pi
//! spec:
//!   shim: Host            # or Wasm
//!   command: /usr/bin/pi
//!   arguments: [--fast]
//!   environments: {RUST_LOG: info}
//!   max_instances: 4
//!   delay_release: 30     # seconds
//!   schema: {input: '{"type": "integer"}'}
//! ```
//!
//! Every document is checked before anything is sent; a malformed one is one error line naming
//! the file, the document (its number and, when readable, its name) and the field. Each
//! application is then registered (or updated) through the SDK's [`Connection`], on the leader,
//! and gets one line of output.
//!
//! Caveats: unknown fields are refused (a typo must not silently drop a setting). A schema may
//! be written as a JSON string or as a YAML mapping, which is sent as JSON. Environment values
//! that are numbers or booleans are sent as their text.

use anyhow::{Context as _, anyhow};
use flame_proto::v1::{self, ApplicationSchema, Environment, Shim};
use flame_sdk::client::Connection;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

/// Flags of `flmctl register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// A YAML file of one or more applications separated by `---`.
    #[arg(short, long)]
    file: PathBuf,
}

/// Flags of `flmctl update`.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// A YAML file of the application(s) to update, in the `register` format.
    #[arg(short, long)]
    application: PathBuf,
}

/// Flags of `flmctl unregister`.
#[derive(clap::Args, Debug)]
pub struct UnregisterArgs {
    /// The application's name.
    #[arg(short, long)]
    application: String,
}

/// One YAML document.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Document {
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

/// `spec`, upstream's field names.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    shim: ShimName,
    image: Option<String>,
    description: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    command: Option<String>,
    #[serde(default)]
    arguments: Vec<String>,
    #[serde(default)]
    environments: Mapping,
    working_directory: Option<String>,
    max_instances: Option<u32>,
    delay_release: Option<i64>,
    schema: Option<Schema>,
    url: Option<String>,
    installer: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
enum ShimName {
    #[default]
    #[serde(alias = "host", alias = "HOST")]
    Host,
    #[serde(alias = "wasm", alias = "WASM")]
    Wasm,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Schema {
    input: Option<Value>,
    output: Option<Value>,
    common_data: Option<Value>,
}

/// A schema written as a string is sent as is; a mapping is sent as JSON.
fn schema_text(value: Option<Value>, field: &str) -> anyhow::Result<Option<String>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => {
            let json: serde_json::Value = serde_yaml_ng::from_value(other)
                .map_err(|e| anyhow!("spec.schema.{field}: {e}"))?;
            Ok(Some(json.to_string()))
        }
    }
}

/// Environment entries in file order; scalar values as text.
fn environments(map: Mapping) -> anyhow::Result<Vec<Environment>> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    map.into_iter()
        .map(|(key, value)| {
            let name =
                text(&key).ok_or_else(|| anyhow!("spec.environments: a name is not text"))?;
            let value = text(&value)
                .ok_or_else(|| anyhow!("spec.environments.{name}: the value is not a scalar"))?;
            Ok(Environment { name, value })
        })
        .collect()
}

impl Spec {
    /// The wire spec.
    fn into_wire(self) -> anyhow::Result<v1::ApplicationSpec> {
        let schema = match self.schema {
            None => None,
            Some(s) => Some(ApplicationSchema {
                input: schema_text(s.input, "input")?,
                output: schema_text(s.output, "output")?,
                common_data: schema_text(s.common_data, "common_data")?,
            }),
        };
        let shim = match self.shim {
            ShimName::Host => Shim::Host,
            ShimName::Wasm => Shim::Wasm,
        };
        Ok(v1::ApplicationSpec {
            shim: shim as i32,
            description: self.description,
            labels: self.labels,
            image: self.image,
            command: self.command,
            arguments: self.arguments,
            environments: environments(self.environments)?,
            working_directory: self.working_directory,
            max_instances: self.max_instances,
            delay_release: self.delay_release,
            schema,
            url: self.url,
            installer: self.installer,
        })
    }
}

/// Every application in `text` as (name, spec); the first malformed document is an error
/// naming its number, its name when readable, and the field.
fn parse(text: &str) -> anyhow::Result<Vec<(String, v1::ApplicationSpec)>> {
    let mut apps = Vec::new();
    for (n, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = n + 1;
        let value = Value::deserialize(doc).map_err(|e| anyhow!("document {number}: {e}"))?;
        if value.is_null() {
            continue; // An empty document, for example after a trailing `---`.
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map_or_else(String::new, |n| format!(" ({n})"));
        let doc: Document = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            anyhow!("document {number}{name}: {at}{}", e.inner())
        })?;
        let spec = doc
            .spec
            .into_wire()
            .map_err(|e| anyhow!("document {number}{name}: {e}"))?;
        apps.push((doc.metadata.name, spec));
    }
    if apps.is_empty() {
        anyhow::bail!("no application in the file");
    }
    Ok(apps)
}

/// The applications in the file at `path`; errors name the file.
fn read(path: &Path) -> anyhow::Result<Vec<(String, v1::ApplicationSpec)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Registers every application in the file; one line per application.
pub async fn register(conn: &Connection, args: &RegisterArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    for (name, spec) in read(&args.file)? {
        conn.register_application(&name, &spec).await?;
        out.push_str(&format!("Application {name} was registered.\n"));
    }
    Ok(out)
}

/// Updates every application in the file; one line per application.
pub async fn update(conn: &Connection, args: &UpdateArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    for (name, spec) in read(&args.application)? {
        conn.update_application(&name, &spec).await?;
        out.push_str(&format!("Application {name} was updated.\n"));
    }
    Ok(out)
}

/// Unregisters the application `args` names.
pub async fn unregister(conn: &Connection, args: &UnregisterArgs) -> anyhow::Result<String> {
    conn.unregister_application(&args.application).await?;
    Ok(format!(
        "Application {} was unregistered.\n",
        args.application
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
metadata:
  name: pi
spec:
  shim: Host
  description: estimates pi
  labels: [math, demo]
  command: /usr/bin/pi
  arguments: [--fast]
  environments:
    RUST_LOG: info
    THREADS: 4
  working_directory: /tmp
  max_instances: 4
  delay_release: 30
  schema:
    input: '{"type": "integer"}'
    output: {type: number}
  url: file:///opt/pi.tar.gz
  installer: python
---
metadata:
  name: echo
spec:
  shim: wasm
  image: echo:1
---
"#;

    #[test]
    fn every_document_and_field_reaches_the_wire_spec() {
        let apps = parse(TWO).expect("two documents");
        assert_eq!(apps.len(), 2);
        let (name, pi) = &apps[0];
        assert_eq!(name, "pi");
        assert_eq!(pi.labels, vec!["math", "demo"]);
        assert_eq!(pi.environments[1].name, "THREADS");
        assert_eq!(pi.environments[1].value, "4");
        assert_eq!((pi.max_instances, pi.delay_release), (Some(4), Some(30)));
        let schema = pi.schema.clone().expect("schema");
        assert_eq!(schema.input.as_deref(), Some(r#"{"type": "integer"}"#));
        assert_eq!(schema.output.as_deref(), Some(r#"{"type":"number"}"#));
        assert_eq!(schema.common_data, None);
        assert_eq!(pi.installer.as_deref(), Some("python"));
        assert_eq!(apps[1].1.shim, Shim::Wasm as i32);
        assert_eq!(apps[1].1.image.as_deref(), Some("echo:1"));
    }

    #[test]
    fn a_malformed_document_names_its_number_name_and_field() {
        let bad = "metadata: {name: a}\n---\nmetadata: {name: b}\nspec: {max_instances: many}\n";
        let error = parse(bad).expect_err("bad max_instances").to_string();
        assert!(
            error.starts_with("document 2 (b): spec.max_instances: invalid type"),
            "{error}"
        );
        let typo = parse("metadata: {name: a}\nspec: {comand: x}\n").expect_err("typo");
        assert!(
            typo.to_string()
                .starts_with("document 1 (a): spec.comand: unknown field `comand`"),
            "{typo}"
        );
        let nameless = parse("spec: {}\n").expect_err("no metadata").to_string();
        assert!(
            nameless.contains("document 1: missing field `metadata`"),
            "{nameless}"
        );
        let env =
            parse("metadata: {name: a}\nspec: {environments: {X: [1]}}\n").expect_err("list value");
        assert_eq!(
            env.to_string(),
            "document 1 (a): spec.environments.X: the value is not a scalar"
        );
        assert!(parse("---\n").is_err());
    }
}
