//! `${NAME}` and `${NAME:-default}` in job files, resolved from the
//! environment before the YAML is parsed (so line numbers stay those of the
//! file). `$$` stands for a literal `$`.

use std::fmt;

/// A variable that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    /// 1-based line of the reference.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for InterpolationError {}

/// Replaces every `${NAME}` / `${NAME:-default}` in `text`, looking names up
/// with `lookup`. With `:-`, an unset or empty variable takes the default;
/// without it, an unset variable is an error (an empty one stays empty).
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut line = 1;
    while let Some(pos) = rest.find('$') {
        let (before, after) = rest.split_at(pos);
        line += before.matches('\n').count();
        out.push_str(before);
        if let Some(tail) = after.strip_prefix("$$") {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(close) = body_and_tail.find('}') else {
            return Err(InterpolationError {
                line,
                message: "`${` without a closing `}`".into(),
            });
        };
        let body = &body_and_tail[..close];
        if body.contains('\n') {
            return Err(InterpolationError {
                line,
                message: "`${` without a closing `}` on the same line".into(),
            });
        }
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InterpolationError {
                line,
                message: format!("`${{{body}}}`: `{name}` is not a variable name (letters, digits, `_`)"),
            });
        }
        let value = match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => d.to_string(),
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => {
                return Err(InterpolationError {
                    line,
                    message: format!(
                        "environment variable `{name}` is not set (give a default with `${{{name}:-value}}`)"
                    ),
                });
            }
        };
        if value.contains('\n') {
            return Err(InterpolationError {
                line,
                message: format!("the value of `{name}` spans several lines"),
            });
        }
        out.push_str(&value);
        rest = &body_and_tail[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        let text = "a: ${SET}\nb: ${UNSET:-dflt}\nc: ${EMPTY:-dflt}\nd: $${SET}\ne: ${EMPTY}x\nf: cost $5";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: value\nb: dflt\nc: dflt\nd: ${SET}\ne: x\nf: cost $5"
        );
    }

    #[test]
    fn unset_without_default_names_the_line() {
        let err = interpolate("a: 1\nb: ${NOPE}\n", env).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("`NOPE` is not set"), "{err}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(interpolate("x: ${OPEN", env).is_err());
        assert!(interpolate("x: ${bad name}", env).is_err());
        assert!(interpolate("x: ${}", env).is_err());
    }
}
