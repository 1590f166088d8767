//! TLS: certificates checked before Pingora sees them, SNI selection, and reload from disk.
//!
//! Pingora's `TlsSettings::build` panics on a bad certificate file, so every pair is loaded and
//! matched here first ([`check_cert_pair`]), and the listener is given a [`SniResolver`] rather
//! than file paths. The resolver picks the certificate by SNI (one per site) and
//! [`SniResolver::reload_if_changed`] swaps in renewed files without a restart: handshakes in
//! flight keep the key they started with, new ones get the new key. A site whose certificate
//! comes from ACME gets it through [`SniResolver::install`] (the [`acme`](crate::acme) issuer),
//! and until then its names are refused at the handshake, never given another site's
//! certificate. TLS-ALPN-01 challenge certificates (RFC 8737) are answered here too.

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::IntCounter;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ALPN protocol id of TLS-ALPN-01 challenges (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

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
    /// The first certificate of the chain cannot be parsed as X.509.
    #[error("the first certificate in {} cannot be read ({reason}); expected the leaf certificate first (Let's Encrypt's fullchain.pem)", path.display())]
    Unparsable {
        /// The file.
        path: PathBuf,
        /// What the parser said.
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
            CertError::NoCertificate { .. } | CertError::Unparsable { .. } => "cert",
            CertError::NoKey { .. } | CertError::Mismatch { .. } => "key",
        }
    }

    /// The offending path, quoted for error messages.
    pub fn value(&self) -> String {
        let p = match self {
            CertError::Unreadable { path, .. }
            | CertError::NoCertificate { path }
            | CertError::Unparsable { path, .. }
            | CertError::NoKey { path, .. }
            | CertError::Mismatch { path, .. } => path,
        };
        format!("{:?}", p.display().to_string())
    }
}

/// What a certificate says about itself: the names it covers, who issued it, when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The DNS names of its subject alternative names (or its subject's common name if it
    /// has none).
    pub names: Vec<String>,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn from_der(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let time = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
        let mut names: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if names.is_empty() {
            names = cert
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_string))
                .collect();
        }
        Ok(CertInfo {
            names,
            issuer: cert.issuer().to_string(),
            not_before: time(cert.validity().not_before.timestamp()),
            not_after: time(cert.validity().not_after.timestamp()),
        })
    }

    /// Whether every one of `hosts` is among its names (case-insensitive; `*.example.com`
    /// covers one label).
    pub fn covers(&self, hosts: &[String]) -> bool {
        hosts.iter().all(|h| {
            self.names.iter().any(|n| {
                n.eq_ignore_ascii_case(h)
                    || n.strip_prefix("*.").is_some_and(|base| {
                        h.split_once('.')
                            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(base))
                    })
            })
        })
    }
}

/// A chain and key that belong together, and what the leaf says.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    private: &PrivateKeyDer<'_>,
) -> Result<(CertifiedKey, CertInfo), (&'static str, String)> {
    install_crypto_provider();
    let leaf = chain
        .first()
        .ok_or(("cert", "no certificate".to_string()))?;
    let info = CertInfo::from_der(leaf).map_err(|e| ("parse", e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(private)
        .map_err(|e| ("key", e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| ("mismatch", e.to_string()))?;
    Ok((ck, info))
}

/// Parses a PEM chain and PEM key that must belong together (an ACME issuance).
pub(crate) fn certified_key_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<(CertifiedKey, CertInfo), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .filter_map(Result::ok)
        .collect();
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    certified_key(chain, &private).map_err(|(what, e)| format!("{what}: {e}"))
}

/// Loads a chain and key from PEM files and checks that they belong together.
pub(crate) fn load_certified_key(
    cert: &Path,
    key: &Path,
) -> Result<(CertifiedKey, CertInfo), CertError> {
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
    certified_key(chain, &private).map_err(|(what, reason)| match what {
        "parse" => CertError::Unparsable {
            path: cert.to_path_buf(),
            reason,
        },
        "mismatch" => CertError::Mismatch {
            path: key.to_path_buf(),
            reason,
        },
        _ => CertError::NoKey {
            path: key.to_path_buf(),
            reason,
        },
    })
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

/// Where a site's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource<'a> {
    /// A chain and a key file, reloaded when they change.
    Files {
        /// The chain (PEM, leaf first).
        cert: &'a Path,
        /// The private key (PEM).
        key: &'a Path,
    },
    /// Installed by the ACME issuer ([`SniResolver::install`]); none until then.
    Acme,
}

/// A site's certificate, for [`SniResolver::with_sites`].
#[derive(Debug, Clone, Copy)]
pub struct SiteCertSpec<'a> {
    /// The site's name (its metric label).
    pub name: &'a str,
    /// The site's host names: the SNI values that select this certificate.
    pub hosts: &'a [String],
    /// Where the certificate comes from.
    pub source: CertSource<'a>,
}

/// One certificate the resolver serves, for listings (`galion-edge certs`).
#[derive(Debug, Clone)]
pub struct CertificateStatus {
    /// The site's name.
    pub site: String,
    /// The site's host names.
    pub hosts: Vec<String>,
    /// `Some(chain path)` for a certificate from files, `None` for ACME.
    pub file: Option<PathBuf>,
    /// The certificate now served, if any.
    pub info: Option<CertInfo>,
}

#[derive(Debug)]
struct Installed {
    key: Arc<CertifiedKey>,
    info: CertInfo,
}

#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    seen: Mutex<(Option<FileStamp>, Option<FileStamp>)>,
}

#[derive(Debug)]
struct SiteCert {
    name: String,
    hosts: Vec<String>,
    files: Option<Files>,
    current: ArcSwapOption<Installed>,
}

/// Chooses a site's certificate by SNI, reloads renewed files, and takes certificates from
/// the ACME issuer.
///
/// A ClientHello with a name a site lists gets that site's certificate, or, while that site
/// has none yet (ACME before the first issuance), a failed handshake (`no server certificate
/// chain resolved`: the client sees a TLS alert), never another site's certificate. A
/// ClientHello without SNI, or with a name no site has, gets the first site's certificate that
/// exists (as nginx's default server does); the request that follows is then refused by host.
/// A ClientHello offering the ALPN protocol `acme-tls/1` gets the TLS-ALPN-01 challenge
/// certificate published for its name, or nothing.
#[derive(Debug)]
pub struct SniResolver {
    sites: Vec<SiteCert>,
    alpn_challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    client_hellos: Option<IntCounter>,
}

impl SniResolver {
    /// Loads each site's certificate: `sites` gives, in order, a site's host names and the
    /// paths of its chain and key (the first site's certificate is the default). Fails on the
    /// first pair that cannot be used. Each site is named by its first host.
    pub fn new<'a>(
        sites: impl IntoIterator<Item = (&'a [String], &'a Path, &'a Path)>,
    ) -> Result<SniResolver, CertError> {
        let sites: Vec<_> = sites.into_iter().collect();
        SniResolver::with_sites(sites.iter().map(|(hosts, cert, key)| SiteCertSpec {
            name: hosts.first().map_or("", String::as_str),
            hosts,
            source: CertSource::Files { cert, key },
        }))
    }

    /// Sets up each site's certificate, in order: files are loaded now (failing on the first
    /// pair that cannot be used), ACME sites start with none.
    pub fn with_sites<'a>(
        sites: impl IntoIterator<Item = SiteCertSpec<'a>>,
    ) -> Result<SniResolver, CertError> {
        let mut loaded = Vec::new();
        for spec in sites {
            let (files, current) = match spec.source {
                CertSource::Files { cert, key } => {
                    let (ck, info) = load_certified_key(cert, key)?;
                    (
                        Some(Files {
                            cert: cert.to_path_buf(),
                            key: key.to_path_buf(),
                            seen: Mutex::new((stamp(cert), stamp(key))),
                        }),
                        ArcSwapOption::from_pointee(Installed {
                            key: Arc::new(ck),
                            info,
                        }),
                    )
                }
                CertSource::Acme => (None, ArcSwapOption::empty()),
            };
            loaded.push(SiteCert {
                name: spec.name.to_string(),
                hosts: spec.hosts.to_vec(),
                files,
                current,
            });
        }
        Ok(SniResolver {
            sites: loaded,
            alpn_challenges: Mutex::new(HashMap::new()),
            client_hellos: None,
        })
    }

    /// Counts in `counter` every ClientHello that reaches certificate selection.
    pub fn with_client_hello_counter(mut self, counter: IntCounter) -> Self {
        self.client_hellos = Some(counter);
        self
    }

    /// Whether no site is served (no certificate configured, none expected from ACME).
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The certificate for a server name (case-insensitive): the site's that lists it (`None`
    /// while it has none), or for an unknown or absent name the first site's that has one.
    pub fn certificate_for(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let listed = server_name.and_then(|name| {
            self.sites
                .iter()
                .find(|s| s.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)))
        });
        match listed {
            Some(site) => site.current.load().as_ref().map(|i| i.key.clone()),
            None => self
                .sites
                .iter()
                .find_map(|s| s.current.load().as_ref().map(|i| i.key.clone())),
        }
    }

    /// Serves `key` for site `site` from the next handshake on (the ACME issuer's new
    /// certificate). Unknown site names are ignored.
    pub fn install(&self, site: &str, key: CertifiedKey, info: CertInfo) {
        if let Some(s) = self.sites.iter().find(|s| s.name == site) {
            s.current.store(Some(Arc::new(Installed {
                key: Arc::new(key),
                info,
            })));
        }
    }

    /// The certificate site `site` serves now: what it says, and its leaf.
    pub fn installed(&self, site: &str) -> Option<(CertInfo, CertificateDer<'static>)> {
        let s = self.sites.iter().find(|s| s.name == site)?;
        let current = s.current.load_full()?;
        let leaf = current.key.end_entity_cert().ok()?.clone().into_owned();
        Some((current.info.clone(), leaf))
    }

    /// Every site's certificate as served now, in config order.
    pub fn certificates(&self) -> Vec<CertificateStatus> {
        self.sites
            .iter()
            .map(|s| CertificateStatus {
                site: s.name.clone(),
                hosts: s.hosts.clone(),
                file: s.files.as_ref().map(|f| f.cert.clone()),
                info: s.current.load().as_ref().map(|i| i.info.clone()),
            })
            .collect()
    }

    /// Answers TLS-ALPN-01 handshakes for `name` with `key` until cleared.
    pub fn set_alpn_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        if let Ok(mut m) = self.alpn_challenges.lock() {
            m.insert(name.to_ascii_lowercase(), key);
        }
    }

    /// Stops answering TLS-ALPN-01 handshakes for `name`.
    pub fn clear_alpn_challenge(&self, name: &str) {
        if let Ok(mut m) = self.alpn_challenges.lock() {
            m.remove(&name.to_ascii_lowercase());
        }
    }

    /// `galion_edge_tls_certificate_expiry_timestamp_seconds`: each site's certificate's end
    /// of validity (no series for a site without one yet).
    pub(crate) fn metric_families(
        &self,
    ) -> crate::exposition::Result<Vec<prometheus::proto::MetricFamily>> {
        let expiries: Vec<(Vec<&str>, i64)> = self
            .sites
            .iter()
            .filter_map(|s| {
                let current = s.current.load();
                let at = current.as_ref()?.info.not_after;
                let secs = at.duration_since(UNIX_EPOCH).ok()?.as_secs();
                let source = if s.files.is_some() { "file" } else { "acme" };
                Some((
                    vec![s.name.as_str(), source],
                    i64::try_from(secs).unwrap_or(i64::MAX),
                ))
            })
            .collect();
        crate::exposition::gauges(
            "galion_edge_tls_certificate_expiry_timestamp_seconds",
            "When the certificate each site serves expires, Unix seconds, by site and source \
             (file or acme). A site waiting for its first ACME certificate has no series.",
            &["site", "source"],
            expiries,
        )
    }

    /// Reloads every pair whose files changed since the last look. A pair that fails to load
    /// is logged and the old certificate keeps serving. Returns how many were swapped.
    pub fn reload_if_changed(&self) -> usize {
        let mut swapped = 0;
        for s in &self.sites {
            let Some(f) = &s.files else {
                continue;
            };
            let now = (stamp(&f.cert), stamp(&f.key));
            let Ok(mut seen) = f.seen.lock() else {
                continue;
            };
            if *seen == now {
                continue;
            }
            match load_certified_key(&f.cert, &f.key) {
                Ok((ck, info)) => {
                    s.current.store(Some(Arc::new(Installed {
                        key: Arc::new(ck),
                        info,
                    })));
                    *seen = now;
                    swapped += 1;
                    info!("tls: reloaded certificate {}", f.cert.display());
                }
                // Certbot writes the chain and the key one after the other: a mismatch may only
                // be a renewal half-done, so it is retried at the next look, not remembered.
                Err(e) => warn!(
                    "tls: keeping the old certificate for {}: {e}",
                    f.cert.display()
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
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // RFC 8737 §3: only the challenge certificate, never a site's.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.alpn_challenges.lock().ok()?.get(&name).cloned();
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
