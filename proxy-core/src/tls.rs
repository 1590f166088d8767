//! TLS: certificates checked before Pingora sees them, SNI selection, and reload from disk.
//!
//! Pingora's `TlsSettings::build` panics on a bad certificate file, so every pair is loaded and
//! matched here first ([`check_cert_pair`]), and the listener is given a [`SniResolver`] rather
//! than file paths. The resolver picks the certificate by SNI (one per site) and
//! [`SniResolver::reload_if_changed`] swaps in renewed files without a restart: handshakes in
//! flight keep the key they started with, new ones get the new key.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::IntCounter;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Why a certificate pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {}: {source}; check the path and that the proxy's user may read it", path.display())]
    Unreadable {
        /// `cert` or `key`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("no PEM certificate in {}; expected a file with -----BEGIN CERTIFICATE----- (Let's Encrypt's fullchain.pem)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no usable PEM private key.
    #[error("no usable PEM private key in {}: {reason}; expected PKCS#8, PKCS#1 or SEC1 (Let's Encrypt's privkey.pem)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("the private key does not match the certificate ({reason}); use the privkey.pem issued with this fullchain.pem")]
    Mismatch {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

impl CertError {
    /// The config field at fault: `cert` or `key`.
    pub fn field(&self) -> &'static str {
        match self {
            CertError::Unreadable { field, .. } => field,
            CertError::NoCertificate { .. } => "cert",
            CertError::NoKey { .. } | CertError::Mismatch { .. } => "key",
        }
    }

    /// The offending path, quoted for error messages.
    pub fn value(&self) -> String {
        let p = match self {
            CertError::Unreadable { path, .. }
            | CertError::NoCertificate { path }
            | CertError::NoKey { path, .. }
            | CertError::Mismatch { path, .. } => path,
        };
        format!("{:?}", p.display().to_string())
    }
}

/// Loads a chain and key from PEM files and checks that they belong together.
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    install_crypto_provider();
    let cert_pem = std::fs::read(cert).map_err(|source| CertError::Unreadable {
        field: "cert",
        path: cert.to_path_buf(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| CertError::Unreadable {
        field: "key",
        path: key.to_path_buf(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::NoKey {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| CertError::NoKey {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| CertError::Mismatch {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(ck)
}

/// Checks a pair the way the listener will load it. Used by `galion-edge check`.
pub(crate) fn check_cert_pair(cert: &Path, key: &Path) -> Result<(), CertError> {
    load_certified_key(cert, key).map(|_| ())
}

/// The rustls crypto provider of the proxy, its load generator and its tests: *ring*'s, the one
/// Pingora 0.9.1's listener installs (`pingora-rustls` calls the same function), so that all
/// agree whoever installs first. rustls 0.23.48 deprecates it because *ring* has no
/// post-quantum key exchange (X25519MLKEM768); moving to aws-lc-rs has to happen together with
/// Pingora's listener (docs/tls.md), so the deprecation is acknowledged here, in one place,
/// rather than hidden by an older lock file.
#[allow(deprecated)]
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Installs [`crypto_provider`] as the process's default rustls provider, unless one is
/// installed already (then nothing changes).
pub fn install_crypto_provider() {
    let _ = crypto_provider().install_default();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(p: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(p).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

#[derive(Debug)]
struct SiteCert {
    hosts: Vec<String>,
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<(Option<FileStamp>, Option<FileStamp>)>,
}

/// Chooses a site's certificate by SNI and reloads renewed files.
///
/// A ClientHello without SNI, or with a name no site has, gets the first site's certificate
/// (as nginx's default server does); the request that follows is then refused by host.
#[derive(Debug)]
pub struct SniResolver {
    sites: Vec<SiteCert>,
    client_hellos: Option<IntCounter>,
}

impl SniResolver {
    /// Loads each site's certificate: `sites` gives, in order, a site's host names and the
    /// paths of its chain and key (the first site's certificate is the default). Fails on the
    /// first pair that cannot be used.
    pub fn new<'a>(
        sites: impl IntoIterator<Item = (&'a [String], &'a Path, &'a Path)>,
    ) -> Result<SniResolver, CertError> {
        let mut loaded = Vec::new();
        for (hosts, cert, key) in sites {
            let ck = load_certified_key(cert, key)?;
            loaded.push(SiteCert {
                hosts: hosts.to_vec(),
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                current: ArcSwap::from_pointee(ck),
                seen: Mutex::new((stamp(cert), stamp(key))),
            });
        }
        let sites = loaded;
        Ok(SniResolver {
            sites,
            client_hellos: None,
        })
    }

    /// Counts in `counter` every ClientHello that reaches certificate selection.
    pub fn with_client_hello_counter(mut self, counter: IntCounter) -> Self {
        self.client_hellos = Some(counter);
        self
    }

    /// Whether any site has a certificate.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The certificate for a server name (case-insensitive), falling back to the first site's.
    pub fn certificate_for(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let site = server_name
            .and_then(|name| {
                self.sites
                    .iter()
                    .find(|s| s.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)))
            })
            .or_else(|| self.sites.first())?;
        Some(site.current.load_full())
    }

    /// Reloads every pair whose files changed since the last look. A pair that fails to load
    /// is logged and the old certificate keeps serving. Returns how many were swapped.
    pub fn reload_if_changed(&self) -> usize {
        let mut swapped = 0;
        for s in &self.sites {
            let now = (stamp(&s.cert), stamp(&s.key));
            let Ok(mut seen) = s.seen.lock() else {
                continue;
            };
            if *seen == now {
                continue;
            }
            match load_certified_key(&s.cert, &s.key) {
                Ok(ck) => {
                    s.current.store(Arc::new(ck));
                    *seen = now;
                    swapped += 1;
                    info!("tls: reloaded certificate {}", s.cert.display());
                }
                // Certbot writes the chain and the key one after the other: a mismatch may only
                // be a renewal half-done, so it is retried at the next look, not remembered.
                Err(e) => warn!(
                    "tls: keeping the old certificate for {}: {e}",
                    s.cert.display()
                ),
            }
        }
        swapped
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(c) = &self.client_hellos {
            c.inc();
        }
        self.certificate_for(hello.server_name())
    }
}

/// `[tls] reload_interval`: how often [`CertReloader`] looks for renewed certificate files.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Background service that calls [`SniResolver::reload_if_changed`] every `interval`.
pub struct CertReloader {
    resolver: Arc<SniResolver>,
    interval: Duration,
}

impl CertReloader {
    /// A reloader for `resolver`, looking every `interval`.
    pub fn new(resolver: Arc<SniResolver>, interval: Duration) -> Self {
        CertReloader { resolver, interval }
    }
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let r = self.resolver.clone();
                    // File reads and key parsing are blocking work.
                    let _ = tokio::task::spawn_blocking(move || r.reload_if_changed()).await;
                }
            }
        }
    }
}
