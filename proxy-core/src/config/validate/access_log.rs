//! `[access_log]`: format and target.

use super::Validator;
use crate::config::{AccessLogFormat, AccessLogSettings, AccessLogTarget, RawAccessLog};

impl Validator {
    pub(super) fn access_log(&mut self, raw: &RawAccessLog) -> AccessLogSettings {
        let format = match raw.format.as_deref() {
            None | Some("combined") => AccessLogFormat::Combined,
            Some("json") => AccessLogFormat::Json,
            Some(other) => {
                self.err(
                    "access_log.format",
                    format!("{other:?}"),
                    "expected \"combined\" or \"json\"",
                );
                AccessLogFormat::Combined
            }
        };
        let target = match raw.path.as_deref() {
            None | Some("stdout") | Some("-") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some("") => {
                self.err(
                    "access_log.path",
                    "\"\"",
                    "expected \"stdout\", \"off\" or a file path",
                );
                AccessLogTarget::Stdout
            }
            Some(p) => {
                let path = self.path(p);
                match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => self.err(
                        "access_log.path",
                        format!("{p:?}"),
                        format!(
                            "directory {} does not exist; create it first",
                            dir.display()
                        ),
                    ),
                    _ => {}
                }
                AccessLogTarget::File(path)
            }
        };
        AccessLogSettings { format, target }
    }
}
