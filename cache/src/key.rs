//! Object keys, put targets and delete patterns (spec Annex A, "Keys").
//!
//! What: an object's key is `<app>/<session>/<object_id>`. A put names either a whole key or the
//! prefix `<app>/<session>` (the server then picks a UUID id). A delete names a key, a session
//! prefix `<app>/<session>`, or an application wildcard `<app>/*`.
//!
//! Why strict: the key's parts become directory and file names under the cache's storage
//! directory, so a key that could climb out of it (`..`, `/`, `\`), hide (`.`), or confuse the
//! file system (NUL, control characters, overlong names) is refused here, before any other code
//! sees it. Upstream's rule is "non-empty, no `..`, `/` or `\`"; everything flamepy generates
//! (application names, `<app>-xxxxxx` session ids, UUIDs, `pkg`, `shared`, file names) passes
//! the stricter rule too.
//!
//! Caveat: `*` is a valid session name in a put but means "every session" in a delete, as
//! upstream defines it.

use crate::error::{CacheError, CacheResult};
use std::fmt;

/// Longest key part, in bytes. File names add a version suffix, so this stays well under 255.
pub const MAX_PART_LEN: usize = 200;

/// The full key of one object.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectKey {
    /// The application.
    pub app: String,
    /// The session (or `shared`, `pkg`, ...).
    pub session: String,
    /// The object id within the session.
    pub object: String,
}

/// What a put names: a whole key, or a session prefix under which the server picks the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutTarget {
    /// `<app>/<session>/<object_id>`: put or overwrite this object.
    Key(ObjectKey),
    /// `<app>/<session>`: a new object with a server-chosen UUID id.
    Prefix {
        /// The application.
        app: String,
        /// The session.
        session: String,
    },
}

/// What a delete names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeyPattern {
    /// One object.
    Object(ObjectKey),
    /// Every object of `<app>/<session>`.
    Session {
        /// The application.
        app: String,
        /// The session.
        session: String,
    },
    /// Every object of `<app>/*`.
    App(String),
}

fn invalid(key: &str, reason: impl Into<String>) -> CacheError {
    CacheError::InvalidKey {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Checks one part of a key against the rules in the module docs.
fn check_part(key: &str, part: &str, what: &str) -> CacheResult<()> {
    if part.is_empty() {
        return Err(invalid(key, format!("the {what} is empty")));
    }
    if part.len() > MAX_PART_LEN {
        return Err(invalid(
            key,
            format!("the {what} is longer than {MAX_PART_LEN} bytes"),
        ));
    }
    if part == "." || part.contains("..") {
        return Err(invalid(
            key,
            format!("the {what} must not be `.` or contain `..`"),
        ));
    }
    if part.contains('\\') {
        return Err(invalid(key, format!("the {what} must not contain `\\`")));
    }
    if part.chars().any(char::is_control) {
        return Err(invalid(
            key,
            format!("the {what} must not contain control characters"),
        ));
    }
    Ok(())
}

/// Splits `key` on `/` into at most `max` parts, refusing more.
fn split(key: &str, max: usize) -> CacheResult<Vec<&str>> {
    let parts: Vec<&str> = key.split('/').collect();
    if parts.len() > max {
        return Err(invalid(
            key,
            format!("it has more than {max} `/`-separated parts"),
        ));
    }
    Ok(parts)
}

impl ObjectKey {
    /// Parses `<app>/<session>/<object_id>`.
    pub fn parse(key: &str) -> CacheResult<ObjectKey> {
        match split(key, 3)?.as_slice() {
            [app, session, object] => ObjectKey::new(key, app, session, object),
            _ => Err(invalid(key, "expected <app>/<session>/<object_id>")),
        }
    }

    fn new(key: &str, app: &str, session: &str, object: &str) -> CacheResult<ObjectKey> {
        check_part(key, app, "application")?;
        check_part(key, session, "session")?;
        check_part(key, object, "object id")?;
        Ok(ObjectKey {
            app: app.to_owned(),
            session: session.to_owned(),
            object: object.to_owned(),
        })
    }

    /// The key under `app/session` with `object` as id, checked like a parsed key.
    pub fn from_parts(app: &str, session: &str, object: &str) -> CacheResult<ObjectKey> {
        ObjectKey::new(&format!("{app}/{session}/{object}"), app, session, object)
    }

    /// Whether `prefix` (a `/`-ending or whole key prefix such as `app/` or `app/ssn/`) covers
    /// this key. An empty prefix covers everything.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.to_string().starts_with(prefix)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.app, self.session, self.object)
    }
}

impl PutTarget {
    /// Parses a put path: `<app>/<session>` or `<app>/<session>/<object_id>`.
    pub fn parse(path: &str) -> CacheResult<PutTarget> {
        match split(path, 3)?.as_slice() {
            [app, session, object] => {
                Ok(PutTarget::Key(ObjectKey::new(path, app, session, object)?))
            }
            [app, session] => {
                check_part(path, app, "application")?;
                check_part(path, session, "session")?;
                Ok(PutTarget::Prefix {
                    app: (*app).to_owned(),
                    session: (*session).to_owned(),
                })
            }
            _ => Err(invalid(
                path,
                "expected <app>/<session> or <app>/<session>/<object_id>",
            )),
        }
    }

    /// The key to write: the named one, or one with a fresh UUID id under the prefix.
    pub fn into_key(self) -> ObjectKey {
        match self {
            PutTarget::Key(key) => key,
            PutTarget::Prefix { app, session } => ObjectKey {
                app,
                session,
                object: uuid::Uuid::new_v4().to_string(),
            },
        }
    }
}

impl KeyPattern {
    /// Parses a delete body: a key, `<app>/<session>` or `<app>/*`.
    pub fn parse(pattern: &str) -> CacheResult<KeyPattern> {
        match split(pattern, 3)?.as_slice() {
            [_, _, _] => Ok(KeyPattern::Object(ObjectKey::parse(pattern)?)),
            [app, "*"] => {
                check_part(pattern, app, "application")?;
                Ok(KeyPattern::App((*app).to_owned()))
            }
            [app, session] => {
                check_part(pattern, app, "application")?;
                check_part(pattern, session, "session")?;
                Ok(KeyPattern::Session {
                    app: (*app).to_owned(),
                    session: (*session).to_owned(),
                })
            }
            _ => Err(invalid(
                pattern,
                "expected <app>/<session>/<object_id>, <app>/<session> or <app>/*",
            )),
        }
    }

    /// Whether the pattern covers `key`.
    pub fn matches(&self, key: &ObjectKey) -> bool {
        match self {
            KeyPattern::Object(k) => k == key,
            KeyPattern::Session { app, session } => &key.app == app && &key.session == session,
            KeyPattern::App(app) => &key.app == app,
        }
    }
}

impl fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPattern::Object(k) => k.fmt(f),
            KeyPattern::Session { app, session } => write!(f, "{app}/{session}"),
            KeyPattern::App(app) => write!(f, "{app}/*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_key_parses_into_its_three_parts() {
        let key = ObjectKey::parse("app/ssn-1/0f3c").unwrap();
        assert_eq!(
            (key.app.as_str(), key.session.as_str(), key.object.as_str()),
            ("app", "ssn-1", "0f3c")
        );
        assert_eq!(key.to_string(), "app/ssn-1/0f3c");
    }

    #[test]
    fn bad_keys_are_refused_with_the_rule_they_break() {
        for (key, rule) in [
            ("", "expected"),
            ("a//c", "empty"),
            ("a/b/", "empty"),
            ("a/../c", "`..`"),
            ("a/b/..", "`..`"),
            ("a/b/x..y", "`..`"),
            ("a/./c", "`.`"),
            ("a/b\\c/d", "`\\`"),
            ("a/b/c/d", "more than 3"),
            ("a/b/c\u{0}", "control"),
            ("a", "expected"),
        ] {
            let err = ObjectKey::parse(key).unwrap_err();
            assert!(err.to_string().contains(rule), "{key:?}: {err}");
        }
        let long = format!("a/b/{}", "x".repeat(MAX_PART_LEN + 1));
        assert!(
            ObjectKey::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
    }

    #[test]
    fn a_put_prefix_gets_a_uuid_object_id() {
        let target = PutTarget::parse("app/ssn").unwrap();
        let key = target.into_key();
        assert_eq!(key.app, "app");
        assert!(uuid::Uuid::parse_str(&key.object).is_ok(), "{key}");
        assert!(matches!(
            PutTarget::parse("app/ssn/id").unwrap(),
            PutTarget::Key(_)
        ));
        assert!(PutTarget::parse("app").is_err());
        assert!(PutTarget::parse("app/").is_err());
    }

    #[test]
    fn delete_patterns_match_a_key_a_session_or_an_application() {
        let key = ObjectKey::parse("app/ssn/o1").unwrap();
        let other = ObjectKey::parse("app/ssn2/o1").unwrap();
        let exact = KeyPattern::parse("app/ssn/o1").unwrap();
        let session = KeyPattern::parse("app/ssn").unwrap();
        let app = KeyPattern::parse("app/*").unwrap();
        assert!(exact.matches(&key) && !exact.matches(&other));
        assert!(session.matches(&key) && !session.matches(&other));
        assert!(app.matches(&key) && app.matches(&other));
        assert!(!KeyPattern::parse("app2/*").unwrap().matches(&key));
        assert_eq!(app.to_string(), "app/*");
        assert!(KeyPattern::parse("../*").is_err());
        assert!(KeyPattern::parse("*").is_err());
    }
}
