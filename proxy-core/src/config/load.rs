//! Loading: the file read, its TOML decoded into [`RawConfig`] with field paths
//! (`serde_path_to_error`), then handed to validation.

use super::validate::validate;
use crate::config::{Config, ConfigError, ConfigErrors, RawConfig};
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
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().trim().replace('\n', "; ");
            let location = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigErrors(vec![ConfigError {
                path: if path == "." { "file".into() } else { path },
                value: String::new(),
                message: format!("{message}{location}"),
            }])
        })?;
        validate(raw, base_dir, root)
    }

    /// Validates decoded raw config, collecting every error.
    pub fn from_raw(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigErrors> {
        validate(raw, base_dir, None)
    }
}
