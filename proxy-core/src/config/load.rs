//! Loading: the file read, its TOML decoded into [`RawConfig`] with field paths
//! (`serde_path_to_error`), then handed to validation.

use super::validate::validate;
use crate::config::{Config, ConfigError, ConfigErrors, RawConfig};
use serde_path_to_error::Segment;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

impl Config {
    /// Reads and validates a file. Relative paths in it are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_root(path, None)
    }

    /// Like [`Config::load`], but absolute paths in the file (certificates, webroot, log) are
    /// looked up under `root`, as a process chrooted or in a container image rooted there would
    /// see them. `galion-edge check --root DIR` uses it to validate a config for another tree.
    pub fn load_with_root(path: &Path, root: Option<&Path>) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: "file".into(),
                value: path.display().to_string(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        // `galion.toml`'s parent is the empty path: relative paths then resolve against ".".
        let base = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &base, root)
    }

    /// Parses and validates TOML text; relative paths are resolved against `base_dir`. This is
    /// how an embedder builds the whole proxy from a string (see
    /// [`add_to_server`](crate::server::add_to_server)). Never panics: a syntax or type error is
    /// reported alone, with its line; otherwise every semantic error is listed.
    ///
    /// ```
    /// use proxy_core::Config;
    ///
    /// let config = Config::from_toml_str(
    ///     r#"
    ///     [listeners]
    ///     http_proxy = ["127.0.0.1:8080"]
    ///     [upstreams.app]
    ///     backends = ["127.0.0.1:3000"]
    ///     [[sites]]
    ///     hosts = ["example.test"]
    ///     routes = [{ path = "/", upstream = "app" }]
    ///     "#,
    ///     std::path::Path::new("."),
    /// )
    /// .expect("valid");
    /// assert_eq!(config.upstreams[0].name, "app");
    ///
    /// let errors = Config::from_toml_str(
    ///     r#"
    ///     [listeners]
    ///     http_proxy = ["127.0.0.1:8080"]
    ///     [[sites]]
    ///     hosts = ["example.test"]
    ///     routes = [{ path = "/", upstream = "nowhere" }]
    ///     "#,
    ///     std::path::Path::new("."),
    /// )
    /// .unwrap_err();
    /// assert_eq!(errors.0[0].path, "sites[0].routes[0].upstream");
    /// assert_eq!(errors.0[0].value, "\"nowhere\"");
    /// ```
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Self::parse(text, base_dir, None)
    }

    fn parse(text: &str, base_dir: &Path, root: Option<&Path>) -> Result<Config, ConfigErrors> {
        validate(decode(text)?, base_dir, root)
    }

    /// Validates decoded raw config, collecting every error.
    pub fn from_raw(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigErrors> {
        validate(raw, base_dir, None)
    }
}

/// The path of a decoding error about a key of the file's top-level table itself: the empty key
/// `"" = 1` at the top, which has no field path of its own.
const TOP_LEVEL: &str = "(top level)";

/// TOML text to [`RawConfig`], or the one syntax or type error, with its field path and line.
fn decode(text: &str) -> Result<RawConfig, ConfigErrors> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut segments: Vec<Segment> = e.path().iter().cloned().collect();
        let inner = e.into_inner();
        let mut message = inner.message().trim().replace('\n', "; ");
        let location = inner
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        // toml names an unknown key in backquotes: an empty one reads "unknown field ``", and
        // its path ends in an empty segment ("server."). Name the table it is in instead, and
        // the key in words.
        let mut empty_path = "file";
        if let Some(rest) = message.strip_prefix("unknown field ``") {
            if matches!(segments.last(), Some(Segment::Map { key }) if key.is_empty()) {
                segments.pop();
                message = format!("unknown field \"\" (an empty key){rest}");
                empty_path = TOP_LEVEL;
            }
        }
        ConfigErrors(vec![ConfigError {
            path: field_path(&segments).unwrap_or_else(|| empty_path.into()),
            value: String::new(),
            message: format!("{message}{location}"),
        }])
    })
}

/// `segments` written the way `serde_path_to_error` writes a path (`sites[0].routes[1].path`),
/// except that an empty key (`[upstreams.""]`, legal TOML) is written `""` rather than
/// nothing; `None` when there are no segments.
fn field_path(segments: &[Segment]) -> Option<String> {
    if segments.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 && !matches!(segment, Segment::Seq { .. }) {
            out.push('.');
        }
        match segment {
            Segment::Seq { index } => {
                let _ = write!(out, "[{index}]");
            }
            Segment::Map { key } | Segment::Enum { variant: key } if key.is_empty() => {
                out.push_str("\"\"");
            }
            Segment::Map { key } | Segment::Enum { variant: key } => out.push_str(key),
            Segment::Unknown => out.push('?'),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_error(text: &str) -> ConfigError {
        let errors = Config::from_toml_str(text, Path::new(".")).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        errors.0[0].clone()
    }

    /// `''='='` (fuzz/regressions/config/): an empty key gave the path "" at the top level and
    /// "server." under `[server]`, with "unknown field ``".
    #[test]
    fn an_empty_key_is_named_with_the_table_it_is_in() {
        let e = only_error("''='='");
        assert_eq!(e.path, "(top level)");
        assert_eq!(
            e.to_string(),
            "(top level): unknown field \"\" (an empty key), expected one of `server`, \
             `listeners`, `downstream`, `tls`, `access_log`, `acme`, `headers`, `client_ip`, \
             `limits`, `redis`, `compression`, `admin`, `cache`, `upstreams`, `sites` (line 1)"
        );
        let e = only_error("[server]\n''=1\n");
        assert_eq!(e.path, "server");
        assert_eq!(
            e.to_string(),
            "server: unknown field \"\" (an empty key), expected one of `threads`, \
             `work_stealing`, `grace_period`, `graceful_shutdown_timeout`, `pid_file`, \
             `upgrade_sock`, `upstream_keepalive_pool_size` (line 2)"
        );
        let e = only_error("[[sites]]\n'' = 1\n");
        assert_eq!(e.path, "sites[0]");
    }

    #[test]
    fn an_empty_key_inside_a_path_is_written_quoted() {
        let e = only_error("[upstreams.'']\nbackends = 1\n");
        assert_eq!(e.path, "upstreams.\"\".backends");
        let e = only_error("[upstreams.'']\nbogus = 1\n");
        assert_eq!(e.path, "upstreams.\"\".bogus");
    }

    /// Paths without an empty key are written as before.
    #[test]
    fn other_decoding_errors_keep_their_paths() {
        assert_eq!(only_error("[server]\nthread = 4\n").path, "server.thread");
        assert_eq!(
            only_error("sites = [{ hosts = 1 }]\n").path,
            "sites[0].hosts"
        );
        assert_eq!(only_error("[server\n").path, "file");
    }
}
