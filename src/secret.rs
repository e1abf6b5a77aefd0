//! Secrets (passwords, tokens) named in config by an environment variable (`<name>_env`) or a
//! file (`<name>_file`), never written in the config itself. One place for the rules, so that
//! every secret behaves the same: both set is an error, a file's trailing newline is ignored,
//! and errors name the variable or the path but never the value.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` print `<redacted>`, so it can sit in structs that
/// are logged or debug-printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it (an auth header, a CONNECT packet).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be read. Messages name the variable or file, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("set {name}_env or {name}_file, not both")]
    Both { name: String },
    #[error("environment variable {var} is not set")]
    EnvNotSet { var: String },
    #[error("environment variable {var} is not valid UTF-8")]
    EnvNotUnicode { var: String },
    #[error("environment variable {var} is empty")]
    EnvEmpty { var: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is empty", path.display())]
    FileEmpty { path: PathBuf },
}

/// A variable name as environments set them: letters, digits and `_` (shells), and `.` and
/// `-` (which Kubernetes, systemd and `env` allow too).
fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A name shown in errors: upper case, digits and `_`, not starting with a digit.
fn is_conventional_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Where config says a secret is: `<name>_env` and/or `<name>_file`.
#[derive(Clone, Copy, Debug)]
pub struct SecretSource<'a> {
    /// The key stem, `password` or `token`, for messages like "set token_env or token_file".
    pub name: &'a str,
    pub env: Option<&'a str>,
    pub file: Option<&'a Path>,
}

impl SecretSource<'_> {
    /// True if either key is set.
    pub fn is_set(&self) -> bool {
        self.env.is_some() || self.file.is_some()
    }

    /// Reads the secret: `None` when neither key is set. A file's one trailing newline
    /// (`\n` or `\r\n`, as editors and `echo` leave it) is not part of the secret.
    pub fn read(&self) -> Result<Option<Secret>, SecretError> {
        match (self.env, self.file) {
            (Some(_), Some(_)) => Err(SecretError::Both {
                name: self.name.to_string(),
            }),
            (Some(var), None) => match std::env::var(var) {
                // Set, so a real variable's name: shown as it is.
                Ok(v) if v.is_empty() => Err(SecretError::EnvEmpty { var: var.into() }),
                Ok(v) => Ok(Some(Secret(v))),
                Err(std::env::VarError::NotPresent) => Err(SecretError::EnvNotSet {
                    var: self.shown_var(var),
                }),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(SecretError::EnvNotUnicode { var: var.into() })
                }
            },
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let value = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text);
                if value.is_empty() {
                    return Err(SecretError::FileEmpty {
                        path: path.to_path_buf(),
                    });
                }
                Ok(Some(Secret(value.to_string())))
            }
            (None, None) => Ok(None),
        }
    }

    /// Config-time checks, as `(key, message)` with `key` relative to the section
    /// (`password_file`): [`conflict`](Self::conflict), an empty variable name, and
    /// [`unreadable`](Self::unreadable). The env var's value is not checked here: it may be
    /// set only where the gateway runs, and `read` at startup names it if it is missing.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems: Vec<(String, String)> = self.conflict().into_iter().collect();
        if self.env.is_some_and(str::is_empty) {
            problems.push((
                format!("{}_env", self.name),
                "must name an environment variable".into(),
            ));
        }
        problems.extend(self.misnamed());
        problems.extend(self.unreadable());
        problems
    }

    /// `<name>_env` set to something no environment would name a variable (spaces, `=`,
    /// quotes, `!@#$%`...): most likely the secret itself, written where its variable's name
    /// belongs. The message does not repeat it.
    fn misnamed(&self) -> Option<(String, String)> {
        self.env.filter(|v| !v.is_empty() && !is_var_name(v))?;
        Some((
            format!("{}_env", self.name),
            format!(
                "must be the name of an environment variable (letters, digits, _, . and -), \
                 not the {} itself; the value is not shown",
                self.name
            ),
        ))
    }

    /// The name of a variable that is not set, for an error message, unless it could be the
    /// secret: names are conventionally upper case (`CITYGATE_MQTT_PASSWORD`), and a value
    /// with lower-case letters or other characters is described by its key instead.
    fn shown_var(&self, var: &str) -> String {
        if is_conventional_var_name(var) {
            var.to_string()
        } else {
            format!(
                "named in {}_env (name not shown: it may be the secret)",
                self.name
            )
        }
    }

    /// Both `<name>_env` and `<name>_file` set.
    fn conflict(&self) -> Option<(String, String)> {
        (self.env.is_some() && self.file.is_some()).then(|| {
            (
                format!("{}_file", self.name),
                format!("set {0}_env or {0}_file, not both", self.name),
            )
        })
    }

    /// `<name>_file` set but not readable.
    fn unreadable(&self) -> Option<(String, String)> {
        let path = self.file?;
        let e = std::fs::File::open(path).err()?;
        Some((
            format!("{}_file", self.name),
            format!("cannot read {}: {e}", path.display()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_file(path: &Path) -> SecretSource<'_> {
        SecretSource {
            name: "token",
            env: None,
            file: Some(path),
        }
    }

    #[test]
    fn file_drops_one_trailing_newline_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        for (content, want) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("s3 cret\n\n", "s3 cret\n"),
        ] {
            std::fs::write(&path, content).expect("write");
            let s = from_file(&path).read().expect("readable").expect("set");
            assert_eq!(s.expose(), want, "from {content:?}");
        }
    }

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.to_string(), "<redacted>");
        assert_eq!(format!("{:?}", Some(s)), "Some(<redacted>)");
    }

    #[test]
    fn errors_name_the_source_not_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let err = from_file(&missing).read().expect_err("missing file");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        assert_eq!(
            from_file(&empty).read().expect_err("empty").to_string(),
            format!("{} is empty", empty.display())
        );
        let var = "CITYGATE_TEST_SECRET_SURELY_UNSET_7F3A";
        let unset = SecretSource {
            name: "token",
            env: Some(var),
            file: None,
        };
        assert_eq!(
            unset.read().expect_err("unset").to_string(),
            format!("environment variable {var} is not set")
        );
    }

    #[test]
    fn both_set_is_an_error_at_read_and_config_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        std::fs::write(&path, "x").expect("write");
        let both = SecretSource {
            name: "password",
            env: Some("PW"),
            file: Some(&path),
        };
        assert_eq!(
            both.read().expect_err("both").to_string(),
            "set password_env or password_file, not both"
        );
        assert_eq!(
            both.problems(),
            vec![(
                "password_file".to_string(),
                "set password_env or password_file, not both".to_string()
            )]
        );
    }

    #[test]
    fn a_secret_written_as_the_variable_name_is_never_repeated() {
        // The password itself in password_env: not a variable name, a config problem.
        let pasted = SecretSource {
            name: "password",
            env: Some("s3cr3t!pa55-word"),
            file: None,
        };
        let problems = pasted.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "password_env");
        assert!(
            problems[0].1.contains("not the password itself"),
            "{problems:?}"
        );
        let err = pasted.read().expect_err("unset").to_string();
        assert_eq!(
            err,
            "environment variable named in password_env (name not shown: it may be the secret) is not set"
        );
        assert!(!format!("{problems:?} {err}").contains("s3cr3t"));

        // A legal name, but in mixed case as passwords are: legal, so no config problem,
        // and still not shown when it is not set.
        let mixed = SecretSource {
            name: "token",
            env: Some("Hunter2Tr0ub4dor_7f3a"),
            file: None,
        };
        assert!(mixed.problems().is_empty());
        let err = mixed.read().expect_err("unset").to_string();
        assert!(!err.contains("Hunter2"), "{err}");
        assert!(err.contains("token_env"), "{err}");

        // A conventional name is shown, so the operator knows which variable to set.
        for ok in ["CITYGATE_MQTT_PASSWORD_7F3A_UNSET", "_PW2"] {
            let named = SecretSource {
                name: "password",
                env: Some(ok),
                file: None,
            };
            assert!(named.problems().is_empty(), "{ok}");
            assert_eq!(
                named.read().expect_err("unset").to_string(),
                format!("environment variable {ok} is not set")
            );
        }
        for legal in ["a_b9", "mqtt.password", "MQTT-PW", "9LIVES"] {
            assert!(is_var_name(legal), "{legal}");
        }
        assert!(!is_conventional_var_name("9LIVES"));
        assert!(!is_conventional_var_name("mqtt_pw"));
        for pasted in ["pa ss", "a=b", "\"x\"", "p@ss", "x!"] {
            assert!(!is_var_name(pasted), "{pasted}");
        }
    }

    #[test]
    fn neither_set_is_no_secret() {
        let none = SecretSource {
            name: "token",
            env: None,
            file: None,
        };
        assert!(!none.is_set());
        assert!(none.read().expect("ok").is_none());
        assert!(none.problems().is_empty());
    }
}
