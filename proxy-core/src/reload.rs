//! Config reload (SIGHUP, `POST /reload`) and access-log reopen (SIGUSR1), as nginx does them.
//!
//! A reload re-reads the config file the process was started with and validates it in full. A
//! bad file is refused: every error is logged (one line each, with its field path) and the
//! running config keeps serving. A good one is compiled with [`ProxyState::reloaded`] (same
//! cache zones and metrics; the rate limiter, access log and unchanged upstream groups carry
//! over) and swapped in: requests that already started finish on the old state, new ones use
//! the new one, and no connection is dropped.
//!
//! What is bound or built once at start cannot change this way; [`restart_only_changes`] names
//! it, the reload logs `needs a restart: <field>` for each, keeps the running value, and
//! applies the rest.

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::state::{ProxyState, StateError};
use crate::upgrade::Upgrader;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why a reload was refused. The running config keeps serving in every case.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The proxy was built without a config file to re-read (an embedder's
    /// [`ProxyOptions`](crate::ProxyOptions) without `config_path`).
    #[error("no config file to reload: the proxy was started without a config path")]
    NoConfigPath,
    /// The new file does not validate, or changes what cannot change while running in a way
    /// that cannot be set aside (the cache zone list).
    #[error("{0}")]
    Config(ConfigErrors),
    /// The new state could not be built (the access log or a backend could not be set up).
    #[error("building the new config: {0}")]
    State(#[from] StateError),
}

impl ReloadError {
    /// One line per problem, each with its field path when it has one.
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            ReloadError::Config(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// What an applied reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reloaded {
    /// Settings that changed in the file but keep their running value until a restart.
    pub needs_restart: Vec<String>,
}

/// Reloads the config of one proxy and reopens its access log. Cloning shares it; reloads
/// are serialised.
#[derive(Clone)]
pub(crate) struct Reloader {
    state: Arc<ArcSwap<ProxyState>>,
    path: Option<PathBuf>,
    lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the proxy whose state is `state`, re-reading `path` (none: reloads are
    /// refused with [`ReloadError::NoConfigPath`], the access log can still be reopened).
    pub(crate) fn new(state: Arc<ArcSwap<ProxyState>>, path: Option<PathBuf>) -> Self {
        Reloader {
            state,
            path,
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// Re-reads and validates the file and swaps the new state in. Blocking (file reads).
    /// Logs nothing; see [`Reloader::reload_logged`].
    pub(crate) fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _serial = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path.as_ref().ok_or(ReloadError::NoConfigPath)?;
        let mut config = Config::load(path).map_err(ReloadError::Config)?;
        let old = self.state.load_full();
        let needs_restart = keep_running_values(&old.config, &mut config)?;
        let state = ProxyState::reloaded(Arc::new(config), &old)?;
        self.state.store(Arc::new(state));
        Ok(Reloaded { needs_restart })
    }

    /// [`Reloader::reload`], logging the outcome: `info` when applied, a `warn` line
    /// `needs a restart: <field>` per setting kept at its running value, and when refused one
    /// `error` line per problem (with its field path) and one saying the old config stays.
    pub(crate) fn reload_logged(&self) -> Result<Reloaded, ReloadError> {
        let file = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let result = self.reload();
        match &result {
            Ok(r) => {
                for field in &r.needs_restart {
                    log::warn!("config reload: {field} changed; needs a restart: {field}");
                }
                log::info!("config reload: applied {file}");
            }
            Err(e) => {
                for line in e.lines() {
                    log::error!("config reload: {line}");
                }
                log::error!("config reload of {file} refused; the running config keeps serving");
            }
        }
        result
    }

    /// Asks the current access log to reopen its file (see
    /// [`AccessLog::reopen`](crate::access_log::AccessLog::reopen)).
    pub(crate) fn reopen_access_log(&self) {
        self.state.load().access_log.reopen();
        log::info!("access log: reopening");
    }
}

/// The settings of `new` that differ from `old` but are bound or built once at start, by field
/// path: listener and admin addresses, `[server]`, the front's `[downstream]` limits (all but
/// `max_body_size`, which routes read per request), `tls.reload_interval`, the hosts and
/// certificate paths of TLS sites (certificate *contents* reload on their own), and `[redis]`
/// (the link and its background service are built at start; `[limits] backend` does reload,
/// between `"local"` and `"redis"` when `[redis]` was there at start).
pub(crate) fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |changed: bool, field: &str| {
        if changed {
            out.push(field.to_string());
        }
    };
    check(
        old.listeners.https != new.listeners.https,
        "listeners.https",
    );
    check(old.listeners.http != new.listeners.http, "listeners.http");
    check(
        old.listeners.http_proxy != new.listeners.http_proxy,
        "listeners.http_proxy",
    );
    check(old.admin_listen != new.admin_listen, "admin.listen");
    check(old.server != new.server, "server");
    let (o, n) = (&old.downstream, &new.downstream);
    check(
        o.client_header_timeout != n.client_header_timeout,
        "downstream.client_header_timeout",
    );
    check(
        o.keepalive_timeout != n.keepalive_timeout,
        "downstream.keepalive_timeout",
    );
    check(
        o.keepalive_requests != n.keepalive_requests,
        "downstream.keepalive_requests",
    );
    check(
        o.max_header_bytes != n.max_header_bytes,
        "downstream.max_header_bytes",
    );
    check(
        o.max_header_count != n.max_header_count,
        "downstream.max_header_count",
    );
    check(
        o.h2_max_concurrent_streams != n.h2_max_concurrent_streams,
        "downstream.h2_max_concurrent_streams",
    );
    check(
        o.max_connections_per_peer != n.max_connections_per_peer,
        "downstream.max_connections_per_peer",
    );
    check(o.send_timeout != n.send_timeout, "downstream.send_timeout");
    check(
        old.tls_reload_interval != new.tls_reload_interval,
        "tls.reload_interval",
    );
    let tls_sites = |c: &Config| {
        c.sites
            .iter()
            .filter_map(|s| s.tls.as_ref().map(|t| (s.hosts.clone(), t.clone())))
            .collect::<Vec<_>>()
    };
    check(
        tls_sites(old) != tls_sites(new),
        "sites[].tls (TLS site hosts or certificate paths)",
    );
    check(
        old.acme != new.acme,
        "acme (issuance settings or ACME sites)",
    );
    check(
        old.cache.zones != new.cache.zones,
        "cache.zones (zone paths and sizes)",
    );
    check(old.redis != new.redis, "redis");
    out
}

/// Finds what needs a restart and puts the running values back into `new`, so the state's
/// config says what is really in force. The cache zone list is the exception: routes name
/// zones by position, so a zone added, removed or renamed refuses the reload.
fn keep_running_values(old: &Config, new: &mut Config) -> Result<Vec<String>, ReloadError> {
    let names = |c: &Config| {
        c.cache
            .zones
            .iter()
            .map(|z| z.name.clone())
            .collect::<Vec<_>>()
    };
    if names(old) != names(new) {
        return Err(ReloadError::Config(ConfigErrors(vec![ConfigError {
            path: "cache.zones".into(),
            value: format!("{:?}", names(new)),
            message: format!(
                "cache zones cannot be added, removed or renamed by a reload (running: {:?}); \
                 restart to change them",
                names(old)
            ),
        }])));
    }
    let changed = restart_only_changes(old, new);
    new.listeners = old.listeners.clone();
    new.admin_listen = old.admin_listen.clone();
    new.server = old.server.clone();
    new.downstream = crate::config::DownstreamSettings {
        max_body_size: new.downstream.max_body_size,
        ..old.downstream.clone()
    };
    new.tls_reload_interval = old.tls_reload_interval;
    new.cache.zones = old.cache.zones.clone();
    new.redis = old.redis.clone();
    if new.redis.is_none() && new.limits.backend == crate::config::LimitBackend::Redis {
        // `[redis]` was added by this reload, which cannot connect it: count locally.
        new.limits.backend = crate::config::LimitBackend::Local;
    }
    Ok(changed)
}

/// The background service that turns signals into actions: SIGHUP reloads the config, SIGUSR1
/// reopens the access log, SIGUSR2 (with an [`Upgrader`]) upgrades the binary. Without it a
/// SIGHUP would end the process (the default action).
pub(crate) struct SignalHandler {
    reloader: Reloader,
    upgrader: Option<Upgrader>,
}

impl SignalHandler {
    /// A handler acting on `reloader`'s proxy, and upgrading with `upgrader` on SIGUSR2.
    pub(crate) fn new(reloader: Reloader, upgrader: Option<Upgrader>) -> Self {
        SignalHandler { reloader, upgrader }
    }
}

/// The signals [`SignalHandler`] acts on: SIGHUP and SIGUSR1, and SIGUSR2 when it upgrades.
fn handled_signals(upgrade: bool) -> Vec<tokio::signal::unix::SignalKind> {
    use tokio::signal::unix::SignalKind;
    let mut kinds = vec![SignalKind::hangup(), SignalKind::user_defined1()];
    if upgrade {
        kinds.push(SignalKind::user_defined2());
    }
    kinds
}

/// Installs the process's dispositions for the signals [`SignalHandler`] acts on now, before
/// the server runs, so a signal that arrives before it starts is ignored instead of ending the
/// process. Tokio never restores the default action once installed. Errors are logged.
pub(crate) fn install_signal_dispositions(upgrade: bool) {
    use tokio::signal::unix::signal;
    let install = || {
        for kind in handled_signals(upgrade) {
            if let Err(e) = signal(kind) {
                log::error!("cannot install a signal handler: {e}");
            }
        }
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        install();
        return;
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => {
            let _enter = rt.enter();
            install();
        }
        Err(e) => log::error!("cannot install signal handlers: {e}"),
    }
}

#[async_trait]
impl BackgroundService for SignalHandler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut hup, mut usr1) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(h), Ok(u)) => (h, u),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot listen for SIGHUP/SIGUSR1: {e}");
                return;
            }
        };
        let mut usr2 = match &self.upgrader {
            Some(_) => match signal(SignalKind::user_defined2()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::error!("cannot listen for SIGUSR2: {e}");
                    None
                }
            },
            None => None,
        };
        let usr2_recv = async |s: &mut Option<tokio::signal::unix::Signal>| match s {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        };
        // Set once a new process took the sockets: this one is on its way out.
        let mut handed_over = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = hup.recv() => {
                    log::info!("SIGHUP: reloading the config");
                    let r = self.reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload_logged()).await;
                }
                Some(()) = usr1.recv() => {
                    log::info!("SIGUSR1: reopening the access log");
                    self.reloader.reopen_access_log();
                }
                Some(()) = usr2_recv(&mut usr2) => {
                    let Some(upgrader) = self.upgrader.clone() else { continue };
                    if handed_over {
                        log::warn!("SIGUSR2: ignored, the sockets are being handed over already");
                        continue;
                    }
                    log::info!("SIGUSR2: starting the new binary ({:?})", upgrader);
                    match tokio::task::spawn_blocking(move || upgrader.upgrade()).await {
                        Ok(Ok(pid)) => {
                            handed_over = true;
                            log::info!(
                                "SIGUSR2: process {pid} waits for the sockets: handing them over"
                            );
                        }
                        Ok(Err(e)) => log::error!("SIGUSR2: upgrade refused, still serving: {e}"),
                        Err(e) => log::error!("SIGUSR2: upgrade task failed, still serving: {e}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, zone: &str, rate: u32) -> Config {
        Config::from_toml_str(
            &format!(
                r#"
                [listeners]
                http_proxy = ["{listen}"]
                [access_log]
                path = "off"
                [cache.zones.{zone}]
                path = "/tmp/galion-edge-reload-unit"
                [limits.classes.api]
                rate = {rate}
                [upstreams.app]
                backends = ["127.0.0.1:3000"]
                [[sites]]
                hosts = ["example.test"]
                routes = [{{ path = "/", upstream = "app", limit = "api" }}]
                "#
            ),
            Path::new("."),
        )
        .expect("valid")
    }

    use std::path::Path;

    #[test]
    fn restart_only_fields_are_named_and_kept_at_their_running_value() {
        let old = config("127.0.0.1:8080", "api", 10);
        let mut new = config("127.0.0.1:8081", "api", 3);
        assert_eq!(
            keep_running_values(&old, &mut new).expect("applies"),
            ["listeners.http_proxy"]
        );
        assert_eq!(new.listeners, old.listeners);
        assert_eq!(new.limits.classes[0].rate, 3, "the rest applies");
        let mut same = config("127.0.0.1:8080", "api", 3);
        assert!(keep_running_values(&old, &mut same)
            .expect("applies")
            .is_empty());
    }

    #[test]
    fn a_renamed_cache_zone_refuses_the_reload() {
        let old = config("127.0.0.1:8080", "api", 10);
        let mut new = config("127.0.0.1:8080", "other", 10);
        let err = keep_running_values(&old, &mut new).expect_err("refused");
        assert!(
            err.lines()[0].starts_with("cache.zones"),
            "{:?}",
            err.lines()
        );
    }
}
