//! `[acme]` as the issuer uses it, and its defaults.

use std::path::PathBuf;
use std::time::Duration;

/// Let's Encrypt's production directory (`directory = "letsencrypt"`).
pub const LETSENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Let's Encrypt's staging directory (`directory = "letsencrypt-staging"`): untrusted
/// certificates, much higher rate limits; for trying a config out.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `[acme] state_dir` when unset: where the account key and the certificates are kept.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/galion-edge/acme";

/// `[acme] first_retry` when unset: the wait after a first failed order. Each further failure
/// doubles it, up to [`MAX_RETRY`]; a `Retry-After` from the CA lengthens it.
pub const DEFAULT_FIRST_RETRY: Duration = Duration::from_secs(60);

/// The longest wait between two attempts to order a certificate.
pub const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);

/// Which challenge the issuer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// HTTP-01 (RFC 8555 §8.3) on the port-80 listener: the CA fetches
    /// `http://NAME/.well-known/acme-challenge/TOKEN`.
    Http01,
    /// TLS-ALPN-01 (RFC 8737) on the https listener: the CA connects to `NAME:443` offering
    /// only the ALPN protocol `acme-tls/1` and checks the certificate it gets.
    TlsAlpn01,
}

impl ChallengeKind {
    /// The name used in the config and in logs: `http-01` or `tls-alpn-01`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// A site whose certificate comes from ACME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSite {
    /// The site's name (`[[sites]] name`): its files in the state directory and its metric
    /// label.
    pub name: String,
    /// The names the certificate covers: the site's `hosts`, the first as the subject.
    pub hosts: Vec<String>,
}

/// The validated `[acme]` section, for [`AcmeService`](super::AcmeService).
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSettings {
    /// The ACME directory URL (an https URL).
    pub directory: String,
    /// Contact URIs for the account (`mailto:` the configured email).
    pub contact: Vec<String>,
    /// Where the account and the certificates are kept (created 0700, files 0600).
    pub state_dir: PathBuf,
    /// A PEM file of the CA certificate(s) that sign the directory's own https certificate,
    /// instead of the public roots: a private CA such as step-ca, or Pebble in the tests.
    pub ca_root: Option<PathBuf>,
    /// The challenge answered.
    pub challenge: ChallengeKind,
    /// The wait after a first failed order (doubled after each further failure).
    pub first_retry: Duration,
    /// With `[redis]`: how often the certificates other instances obtained are looked for
    /// (`tls.reload_interval`).
    pub check_interval: Duration,
    /// The sites with `tls = { acme = true }`, in config order.
    pub sites: Vec<AcmeSite>,
}
