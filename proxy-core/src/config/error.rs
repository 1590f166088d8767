//! The error type of loading and validation: one entry per problem, with its field path.

use std::fmt;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: a field path such as `upstreams.app_api.backends[0]`, or `file` for I/O and syntax.
    /// An empty key (`"" = 1`, legal TOML) is written `""` inside a path; when it is the unknown
    /// key itself, the path is the table it is in (`server`), `(top level)` at the top.
    pub path: String,
    /// The bad value as written (empty when the field is missing).
    pub value: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(f, "{} = {}: {}", self.path, self.value, self.message)
        }
    }
}

/// Every problem found in a config file, section by section. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}
