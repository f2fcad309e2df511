//! `${VAR}` and `$VAR` expansion for application commands, arguments and environment values
//! (spec section 7.2).
//!
//! What: one pass over the text; each reference is replaced by the value `lookup` gives. The
//! launch code passes a lookup that tries the launch environment first, then the agent's own.
//!
//! Why not a shell: the values come from the replicated application spec and must never run
//! anything; only variable references are understood.
//!
//! Caveats: a reference to an unset variable is kept verbatim (`${FLAME_HOME}/bin/x` stays as
//! written), so a missing variable shows up in the "command not found" message instead of
//! silently becoming an empty string. No defaults (`${X:-y}`), no nesting, no escapes; a `$`
//! that does not start a reference is kept as is.

/// Whether `c` may start a variable name.
fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// Whether `c` may continue a variable name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands `${NAME}` and `$NAME` in `text` using `lookup`.
pub fn expand_vars(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match reference(after) {
            Some((name, len)) => {
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => out.push_str(&rest[at..at + 1 + len]),
                }
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The variable name referenced at the start of `after` (the text following a `$`) and the
/// length of the reference in `after`, braces included.
fn reference(after: &str) -> Option<(&str, usize)> {
    if let Some(braced) = after.strip_prefix('{') {
        let end = braced.find('}')?;
        let name = &braced[..end];
        is_valid_name(name).then_some((name, end + 2))
    } else {
        let end = after
            .find(|c: char| !is_name_char(c))
            .unwrap_or(after.len());
        let name = &after[..end];
        is_valid_name(name).then_some((name, end))
    }
}

/// Whether `name` is a shell-style variable name.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

#[cfg(test)]
mod tests {
    use super::expand_vars;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "FLAME_HOME" => Some("/opt/flame".to_owned()),
            "V" => Some("3.12".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn braced_and_bare_references_expand() {
        assert_eq!(
            expand_vars("${FLAME_HOME}/bin/uv", lookup),
            "/opt/flame/bin/uv"
        );
        assert_eq!(expand_vars("python$V", lookup), "python3.12");
        assert_eq!(
            expand_vars("$FLAME_HOME/x:$V.", lookup),
            "/opt/flame/x:3.12."
        );
        assert_eq!(expand_vars("a${EMPTY}b", lookup), "ab");
    }

    #[test]
    fn unset_variables_stay_verbatim() {
        assert_eq!(expand_vars("${NOPE}/x $NOPE", lookup), "${NOPE}/x $NOPE");
    }

    #[test]
    fn dollars_that_start_no_reference_are_kept() {
        assert_eq!(expand_vars("cost $5 $ ${ ${}", lookup), "cost $5 $ ${ ${}");
        assert_eq!(expand_vars("${1BAD} end$", lookup), "${1BAD} end$");
        assert_eq!(expand_vars("no refs", lookup), "no refs");
    }

    #[test]
    fn values_are_not_expanded_again() {
        let l = |n: &str| (n == "A").then(|| "$A".to_owned());
        assert_eq!(expand_vars("$A", l), "$A");
    }
}
