//! Assembles a Pingora [`Server`] from a [`Config`]: listeners, services, background tasks.
//!
//! [`build_server`] is what `galion-edge run` calls, and what an embedder calls to get the
//! whole proxy; [`add_to_server`] adds the same services to a `Server` the embedder owns.

use crate::config::Config;
use crate::front::Front;
use crate::headers::HeaderPolicy;
use crate::service::{GalionProxy, ListenerRole, ProxyState};
use crate::tls::{CertError, CertReloader, SniResolver};
use crate::upstream::HealthChecker;
use arc_swap::ArcSwap;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;
use std::sync::Arc;

/// Why the server could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A certificate could not be loaded (only possible if it changed since validation).
    #[error("certificate: {0}")]
    Certificate(#[from] CertError),
    /// The access log or a backend could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Pingora refused a setting.
    #[error("pingora: {0}")]
    Pingora(String),
}

/// How the process starts.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running old binary (zero-downtime upgrade).
    pub upgrade: bool,
}

/// Pingora's [`ServerConf`] from our `[server]` settings.
pub fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
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

/// A whole proxy server for `config`, ready for `run_forever`.
pub fn build_server(config: Config, opts: &RunOptions) -> Result<Server, BuildError> {
    let conf = server_conf(&config);
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    add_to_server(&mut server, config)?;
    Ok(server)
}

/// Adds the proxy's listening and background services to an existing server. Returns the
/// shared state that every request reads. (Swapping it changes routes and headers for new
/// requests; health checks, certificates and the front's limits stay as built.)
pub fn add_to_server(
    server: &mut Server,
    config: Config,
) -> Result<Arc<ArcSwap<ProxyState>>, BuildError> {
    let conf = server.configuration.clone();
    let config = Arc::new(config);
    let state = Arc::new(ArcSwap::from_pointee(ProxyState::new(config.clone())?));
    let current = state.load();
    let default_policy = current.default_headers.clone();

    let make_front = |role: ListenerRole| {
        let mut proxy = HttpProxy::new(GalionProxy::new(state.clone(), role), conf.clone());
        proxy.handle_init_modules();
        let mut options = HttpServerOptions::default();
        options.keepalive_request_limit = Some(config.downstream.keepalive_requests);
        options.h2_idle_timeout = Some(config.downstream.keepalive_timeout);
        proxy.server_options = Some(options);
        let mut h2 = H2Options::new();
        h2.max_concurrent_streams(config.downstream.h2_max_concurrent_streams)
            .max_header_list_size(config.downstream.max_header_bytes as u32)
            .max_send_buffer_size(1 << 20);
        proxy.h2_options = Some(h2);
        Front::new(proxy, config.downstream.clone(), default_policy.clone())
    };

    if !config.listeners.https.is_empty() {
        let resolver = Arc::new(SniResolver::from_config(&config)?);
        let mut svc = Service::new("galion-edge https".into(), make_front(ListenerRole::Https));
        for addr in &config.listeners.https {
            let mut tls = TlsSettings::intermediate("", "")
                .map_err(|e| BuildError::Pingora(e.to_string()))?;
            tls.set_cert_resolver(resolver.clone());
            tls.enable_h2();
            svc.add_tls_with_settings(&addr.to_string(), None, tls);
        }
        server.add_service(svc);
        server.add_service(background_service(
            "certificate reloader",
            CertReloader::new(resolver, config.tls_reload_interval),
        ));
    }
    if !config.listeners.http_proxy.is_empty() {
        let mut svc = Service::new(
            "galion-edge http proxy".into(),
            make_front(ListenerRole::PlainProxy),
        );
        for addr in &config.listeners.http_proxy {
            svc.add_tcp(&addr.to_string());
        }
        server.add_service(svc);
    }
    if !config.listeners.http.is_empty() {
        let mut svc = Service::new(
            "galion-edge http redirect".into(),
            make_front(ListenerRole::Redirect),
        );
        for addr in &config.listeners.http {
            svc.add_tcp(&addr.to_string());
        }
        server.add_service(svc);
    }
    if !config.admin_listen.is_empty() {
        let app = pingora_core::apps::http_app::HttpServer::new_app(crate::admin::Admin::new(
            current.caches.clone(),
            current.compression_stats.clone(),
        ));
        let mut svc = Service::new("galion-edge admin".into(), app);
        svc.threads = Some(1);
        for addr in &config.admin_listen {
            svc.add_tcp(&addr.to_string());
        }
        server.add_service(svc);
    }
    server.add_service(background_service(
        "health checks",
        HealthChecker::new(current.upstreams.clone()),
    ));
    drop(current);
    Ok(state)
}

/// The header policy for answers outside any site, for embedders that build their own front.
pub fn default_policy(config: &Config) -> HeaderPolicy {
    HeaderPolicy::new(&config.default_headers)
}
