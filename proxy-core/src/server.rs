//! Assembles a Pingora [`Server`] from a [`Config`]: listeners, services, background tasks.
//!
//! [`build_server`] is what `galion-edge run` calls, and what an embedder calls to get the
//! whole proxy; [`add_to_server`] adds the same services to a `Server` the embedder owns, next
//! to its own. The `_with` variants take [`ProxyOptions`] (today: a custom
//! [`RouteDecider`]).

use crate::acme::{AcmeError, AcmeService, Challenges};
use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::front::Front;
use crate::reload::{Reloader, SignalHandler};
use crate::routing::{HostPathDecider, RouteDecider};
use crate::service::{GalionProxy, ListenerRole};
use crate::state::{Certificates, ProxyState, StateError};
use crate::tls::{CertError, CertReloader, SniResolver, ACME_TLS_ALPN};
use crate::upstream::HealthChecker;
use arc_swap::ArcSwap;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;
use std::path::PathBuf;
use std::sync::Arc;

/// A listener's endpoint, with the L4 buffers of its connections: no read buffer, Pingora's
/// 1460-byte write buffer.
///
/// Pingora puts a 64 KiB read buffer (a `BufReader`) in front of every accepted socket, for
/// its TLS layer's small reads. Nothing here gains from it: over plain TCP the front reads a
/// head 4 KiB at a time, and Pingora reads bodies and upgraded tunnels 64 KiB at a time into
/// buffers of its own; over TLS, rustls reads 4 KiB at a time, and a syscall per 4 KiB of an
/// upload cost no more CPU than the extra copy through the buffer did. What the buffer did
/// cost is a 64 KiB allocation per connection for as long as it lives (zeroed when the
/// allocator reuses memory, so resident then) and a copy of every byte read. Measured A/B in
/// docs/performance.md, change 20: 7-8 KiB less per idle WebSocket, plain and TLS, 8% less
/// peak RSS on 1 MB pass-through, and no more CPU per request on TLS HTTP/1.1, HTTP/2 and
/// 256 KiB uploads.
fn listener(addr: &std::net::SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0))
}

/// Why the server could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A certificate could not be loaded (only possible if it changed since validation).
    #[error("certificate: {0}")]
    Certificate(#[from] CertError),
    /// The compiled state could not be built: a cache zone, the access log, an upstream
    /// group or the Redis link (the error names which).
    #[error(transparent)]
    State(#[from] StateError),
    /// `[acme]` could not be set up: its state directory or `ca_root`.
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// Pingora refused a setting (its error kept as the source).
    #[error("pingora: {0}")]
    Pingora(#[source] Box<pingora_error::Error>),
}

/// How the process starts.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running old binary (zero-downtime upgrade).
    pub upgrade: bool,
}

/// How the provided service behaves beyond what the config says. The default is what the
/// `galion-edge` binary runs.
#[derive(Clone)]
pub struct ProxyOptions {
    /// Decides each proxied request's site, route and upstream group. Default:
    /// [`HostPathDecider`] (the host picks the site, the longest path prefix the route).
    pub decider: Arc<dyn RouteDecider>,
    /// The file the config was read from, which a reload (SIGHUP, `POST /reload` on the admin
    /// listener) reads again. Default: none, and reloads are refused with an error logged.
    pub config_path: Option<PathBuf>,
    /// The command (program, then arguments) a SIGUSR2 starts to upgrade the binary: it must
    /// run the proxy with the same config and `--upgrade`; once it waits on `upgrade_sock`,
    /// this process hands it the listening sockets and exits gracefully ([`Upgrader`]). The
    /// `galion-edge` binary sets its own `run -c CONFIG --upgrade`. Default: none, and
    /// SIGUSR2 is left alone (its default action ends the process).
    ///
    /// [`Upgrader`]: crate::Upgrader
    pub upgrade_command: Option<Vec<std::ffi::OsString>>,
    /// Whether the proxy takes SIGHUP (reload), SIGUSR1 (reopen the access log) and, with an
    /// [`upgrade_command`](Self::upgrade_command), SIGUSR2 for the whole process. Default: yes.
    /// An embedder whose program handles those signals itself turns it off and reloads through
    /// `POST /reload` on the admin listener instead.
    pub signals: bool,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            decider: Arc::new(HostPathDecider),
            config_path: None,
            upgrade_command: None,
            signals: true,
        }
    }
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("config_path", &self.config_path)
            .field("upgrade_command", &self.upgrade_command)
            .field("signals", &self.signals)
            .finish_non_exhaustive()
    }
}

impl ProxyOptions {
    /// These options with another route decider.
    pub fn with_decider(mut self, decider: Arc<dyn RouteDecider>) -> Self {
        self.decider = decider;
        self
    }

    /// These options with the config file a reload reads again.
    pub fn with_config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = Some(path.into());
        self
    }

    /// These options with the command a SIGUSR2 starts to upgrade the binary
    /// ([`ProxyOptions::upgrade_command`]).
    pub fn with_upgrade_command(mut self, command: Vec<std::ffi::OsString>) -> Self {
        self.upgrade_command = Some(command);
        self
    }

    /// These options without the process-wide signal handlers ([`ProxyOptions::signals`]).
    pub fn without_signals(mut self) -> Self {
        self.signals = false;
        self
    }
}

/// Pingora's [`ServerConf`] from our `[server]` settings.
pub fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout.as_secs()),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        // Retries are ours: a failed connect is retried once per other backend.
        max_retries: 16,
        ..ServerConf::default()
    }
}

/// A whole proxy server for `config`, ready for `run_forever`: a Pingora `Server` configured
/// from `[server]` (threads, grace period, pid file, upgrade socket, keepalive pool) with
/// [`add_to_server`]'s services. Nothing is bound until `run_forever`.
///
/// Fails only if a certificate changed since the config was validated, the access log cannot
/// be opened, a cache zone cannot be opened, or Pingora refuses a TLS setting.
pub fn build_server(config: Config, opts: &RunOptions) -> Result<Server, BuildError> {
    build_server_with(config, opts, ProxyOptions::default())
}

/// [`build_server`] with [`ProxyOptions`], for example a custom
/// [`RouteDecider`].
pub fn build_server_with(
    config: Config,
    opts: &RunOptions,
    proxy: ProxyOptions,
) -> Result<Server, BuildError> {
    let conf = server_conf(&config);
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    add_to_server_with(&mut server, config, proxy)?;
    Ok(server)
}

/// Adds the proxy's listening and background services to a server the caller owns (and has
/// bootstrapped), next to its own services. Returns the shared state that every request reads.
/// (Swapping it changes routes, upstreams, limits and headers for new requests, and the health
/// checker follows; listeners, certificates' paths and the front's limits stay as built.)
///
/// Added: one listening service per non-empty listener list of the config (`https` with the
/// certificate reloader, `http_proxy`, the port-80 `http` redirect, `[admin] listen`), the
/// health checker, the Redis link's service when `[redis]` is set
/// ([`RedisService`](crate::redis_link::RedisService)), and the signal handler (SIGHUP reloads `options.config_path`, SIGUSR1
/// reopens the access log, SIGUSR2 upgrades the binary when `options.upgrade_command` is set;
/// docs/operations.md). Those handlers are installed for the whole process when this is
/// called. The server's own [`ServerConf`] applies (threads, keepalive pool, retries, grace
/// period): build the server with [`server_conf`] to apply the config's `[server]` section, as
/// the example does; with `Server::new(None)` Pingora's defaults apply (one thread per service,
/// and a SIGTERM waits 300 s for connections to end). Nothing is bound until the server runs.
///
/// Fails as [`build_server`] does; nothing is added to `server` then.
///
/// ```
/// use proxy_core::pingora::core::server::Server;
/// use proxy_core::{server_conf, Config};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::from_toml_str(
///     r#"
///     [server]
///     grace_period = "10s"
///     [listeners]
///     http_proxy = ["127.0.0.1:8080"]
///     [access_log]
///     path = "off"
///     [upstreams.app]
///     backends = ["127.0.0.1:3000"]
///     [[sites]]
///     hosts = ["example.test"]
///     routes = [{ path = "/", upstream = "app" }]
///     "#,
///     std::path::Path::new("."),
/// )?;
/// // `[server]` (threads, grace period, keepalive pool) for the whole server.
/// let mut server = Server::new_with_opt_and_conf(None, server_conf(&config));
/// server.bootstrap();
/// // server.add_service(...your own services...);
/// let state = proxy_core::add_to_server(&mut server, config)?;
/// assert_eq!(state.load().config().sites[0].hosts, ["example.test"]);
/// // server.run_forever();
/// # Ok(())
/// # }
/// ```
pub fn add_to_server(
    server: &mut Server,
    config: Config,
) -> Result<Arc<ArcSwap<ProxyState>>, BuildError> {
    add_to_server_with(server, config, ProxyOptions::default())
}

/// [`add_to_server`] with [`ProxyOptions`], for example a custom [`RouteDecider`].
pub fn add_to_server_with(
    server: &mut Server,
    config: Config,
    options: ProxyOptions,
) -> Result<Arc<ArcSwap<ProxyState>>, BuildError> {
    let conf = server.configuration.clone();
    let config = Arc::new(config);
    let mut first = ProxyState::new(config.clone())?;
    let resolver = if config.listeners.https.is_empty() {
        None
    } else {
        Some(Arc::new(
            SniResolver::with_sites(config.certificate_specs())?
                .with_client_hello_counter(first.metrics.tls_client_hellos()),
        ))
    };
    let challenges = Arc::new(Challenges::new(first.redis.clone()));
    // Saved ACME certificates are installed here, before the listeners start.
    let acme = match (&config.acme, &resolver) {
        (Some(settings), Some(resolver)) => Some(AcmeService::new(
            settings.clone(),
            challenges.clone(),
            resolver.clone(),
        )?),
        _ => None,
    };
    first.certificates = Certificates {
        resolver: resolver.clone(),
        challenges,
        acme: acme.as_ref().map(AcmeService::stats),
    };
    let state = Arc::new(ArcSwap::from_pointee(first));
    let current = state.load();
    let reloader = Reloader::new(state.clone(), options.config_path.clone());
    let default_policy = current.default_headers.clone();

    let make_front = |role: ListenerRole| {
        let service = GalionProxy::new(state.clone(), role).with_decider(options.decider.clone());
        let mut proxy = HttpProxy::new(service, conf.clone());
        proxy.handle_init_modules();
        let mut options = HttpServerOptions::default();
        options.keepalive_request_limit = Some(config.downstream.keepalive_requests);
        options.h2_idle_timeout = Some(config.downstream.keepalive_timeout);
        proxy.server_options = Some(options);
        let mut h2 = H2Options::new();
        h2.max_concurrent_streams(config.downstream.h2_max_concurrent_streams)
            .max_header_list_size(config.downstream.max_header_bytes as u32)
            .max_send_buffer_size(1 << 20)
            // Abuse bounds, explicit rather than the h2 crate's defaults of the day (see
            // docs/security.md). Rapid reset (CVE-2023-44487): at most 20 streams reset by the
            // client before they were accepted, then GOAWAY(ENHANCE_YOUR_CALM).
            .max_pending_accept_reset_streams(20)
            // Streams the proxy reset and still remembers (to ignore late frames), 1 s each.
            .max_concurrent_reset_streams(50)
            // Resets the client forces through protocol errors, then GOAWAY(ENHANCE_YOUR_CALM).
            .max_local_error_reset_streams(Some(1024));
        proxy.h2_options = Some(h2);
        Front::new(proxy, config.downstream.clone(), default_policy.clone())
            .with_exempt_peers(TrustedProxies::new(config.client_ip.trusted.clone()))
            .with_connection_gauge(current.metrics.downstream_connections())
            .with_state(state.clone())
    };

    if let Some(resolver) = resolver {
        let mut svc = Service::new("galion-edge https".into(), make_front(ListenerRole::Https));
        let answer_alpn_challenges = config.acme.is_some();
        for addr in &config.listeners.https {
            // The same settings as `TlsSettings::intermediate`, plus the handshake counter.
            let mut tls = TlsSettings::with_callbacks(current.metrics.tls_callbacks())
                .map_err(BuildError::Pingora)?;
            tls.set_cert_resolver(resolver.clone());
            tls.enable_h2();
            tls.set_server_config_hook(Box::new(move |c| {
                // The server's cipher-suite order (rustls's: AES-GCM and ChaCha20 by strength)
                // wins over the client's, as `ssl_prefer_server_ciphers on` does in nginx.
                c.ignore_client_order = true;
                // TLS-ALPN-01: a CA offering only `acme-tls/1` gets the challenge certificate
                // (the resolver); browsers never offer it.
                if answer_alpn_challenges {
                    c.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
                }
            }));
            svc.add_listener(listener(addr).tls(tls));
        }
        server.add_service(svc);
        server.add_service(background_service(
            "certificate reloader",
            CertReloader::new(resolver, config.tls_reload_interval),
        ));
        if let Some(acme) = acme {
            server.add_service(background_service("acme", acme));
        }
    }
    if !config.listeners.http_proxy.is_empty() {
        let mut svc = Service::new(
            "galion-edge http proxy".into(),
            make_front(ListenerRole::PlainProxy),
        );
        for addr in &config.listeners.http_proxy {
            svc.add_listener(listener(addr));
        }
        server.add_service(svc);
    }
    if !config.listeners.http.is_empty() {
        let mut svc = Service::new(
            "galion-edge http redirect".into(),
            make_front(ListenerRole::Redirect),
        );
        for addr in &config.listeners.http {
            svc.add_listener(listener(addr));
        }
        server.add_service(svc);
    }
    if !config.admin_listen.is_empty() {
        let app = pingora_core::apps::http_app::HttpServer::new_app(
            crate::admin::Admin::new(state.clone()).with_reloader(reloader.clone()),
        );
        let mut svc = Service::new("galion-edge admin".into(), app);
        svc.threads = Some(1);
        for addr in &config.admin_listen {
            svc.add_listener(listener(addr));
        }
        server.add_service(svc);
    }
    server.add_service(background_service(
        "health checks",
        HealthChecker::new({
            let state = state.clone();
            Box::new(move || {
                state
                    .load()
                    .upstreams
                    .iter()
                    .map(|u| u.group.clone())
                    .collect()
            })
        }),
    ));
    if let Some(link) = &current.redis {
        // The link and the purge bus are the same across reloads (`[redis]` needs a restart).
        server.add_service(background_service(
            "redis",
            crate::redis_link::RedisService::new(
                link.clone(),
                current
                    .purge_bus
                    .clone()
                    .map(|b| b as Arc<dyn crate::redis_link::LinkUser>),
            ),
        ));
    }
    let listeners: Vec<std::net::SocketAddr> = config
        .listeners
        .https
        .iter()
        .chain(&config.listeners.http_proxy)
        .chain(&config.listeners.http)
        .chain(&config.admin_listen)
        .copied()
        .collect();
    server.add_service(background_service(
        "ready",
        crate::listeners::ReadyAnnouncer::new(listeners),
    ));
    let upgrader = options
        .upgrade_command
        .clone()
        .and_then(|c| crate::upgrade::Upgrader::new(c, &config.server.upgrade_sock));
    if options.signals {
        crate::reload::install_signal_dispositions(upgrader.is_some());
        server.add_service(background_service(
            "config reload",
            SignalHandler::new(reloader, upgrader),
        ));
    }
    drop(current);
    Ok(state)
}
