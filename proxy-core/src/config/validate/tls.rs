//! `[tls]`, `[acme]` and a site's `tls`: certificate files, the ACME webroot and issuance.

use super::Validator;
use crate::acme::{
    AcmeSettings, AcmeSite, ChallengeKind, StateDir, DEFAULT_FIRST_RETRY, DEFAULT_STATE_DIR,
    LETSENCRYPT_PRODUCTION, LETSENCRYPT_STAGING,
};
use crate::config::{CertPaths, ListenerSettings, RawAcme, RawCert, RawTls, SiteSettings, SiteTls};
use crate::tls::check_cert_pair;
use std::path::PathBuf;
use std::time::Duration;

impl Validator {
    /// `[tls] reload_interval`, default [`crate::tls::DEFAULT_RELOAD_INTERVAL`].
    pub(super) fn tls_reload_interval(&mut self, raw: &RawTls) -> Duration {
        self.duration(
            "tls.reload_interval",
            &raw.reload_interval,
            crate::tls::DEFAULT_RELOAD_INTERVAL,
        )
    }

    /// `[acme] webroot`: an existing directory, if set.
    pub(super) fn acme_webroot(&mut self, raw: &RawAcme) -> Option<PathBuf> {
        raw.webroot.as_ref().map(|w| {
            let p = self.path(w);
            if !p.is_dir() {
                self.err(
                    "acme.webroot",
                    format!("{w:?}"),
                    "is not a readable directory; create it (certbot --webroot -w uses it) or remove the setting",
                );
            }
            p
        })
    }

    /// `[acme]` issuance, for the sites with `tls = { acme = true }` (`None` when there is
    /// none; the issuance keys are then not needed, and not checked beyond their syntax).
    pub(super) fn acme(
        &mut self,
        raw: &RawAcme,
        sites: &[SiteSettings],
        listeners: &ListenerSettings,
        check_interval: Duration,
    ) -> Option<AcmeSettings> {
        let acme_sites: Vec<AcmeSite> = sites
            .iter()
            .filter(|s| s.tls == Some(SiteTls::Acme))
            .map(|s| AcmeSite {
                name: s.name.clone(),
                hosts: s.hosts.clone(),
            })
            .collect();
        let first_retry = self.duration("acme.first_retry", &raw.first_retry, DEFAULT_FIRST_RETRY);
        let challenge = match raw.challenge.as_deref() {
            None if listeners.http.is_empty() => ChallengeKind::TlsAlpn01,
            None | Some("http-01") => ChallengeKind::Http01,
            Some("tls-alpn-01") => ChallengeKind::TlsAlpn01,
            Some(other) => {
                self.err(
                    "acme.challenge",
                    format!("{other:?}"),
                    "must be \"http-01\" (port 80) or \"tls-alpn-01\" (port 443)",
                );
                ChallengeKind::Http01
            }
        };
        let directory = match raw.directory.as_deref() {
            None => None,
            Some("letsencrypt") => Some(LETSENCRYPT_PRODUCTION.to_string()),
            Some("letsencrypt-staging") => Some(LETSENCRYPT_STAGING.to_string()),
            Some(url) => {
                let ok = url
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
                if !ok {
                    self.err(
                        "acme.directory",
                        format!("{url:?}"),
                        "must be \"letsencrypt\", \"letsencrypt-staging\" or the https URL of an ACME (RFC 8555) directory",
                    );
                }
                Some(url.to_string())
            }
        };
        if let Some(email) = &raw.email {
            let valid = email.split_once('@').is_some_and(|(user, domain)| {
                !user.is_empty()
                    && domain.contains('.')
                    && !email
                        .chars()
                        .any(|c| c.is_whitespace() || c == ',' || c == ':')
            });
            if !valid {
                self.err(
                    "acme.email",
                    format!("{email:?}"),
                    "is not an email address; write one address such as \"ops@galion.app\"",
                );
            }
        }
        if acme_sites.is_empty() {
            return None;
        }
        let Some(directory) = directory else {
            self.err(
                "acme.directory",
                "",
                "missing: sites with tls = { acme = true } need a CA; set directory = \"letsencrypt\" (or \"letsencrypt-staging\" to try first)",
            );
            return None;
        };
        let Some(email) = raw.email.clone() else {
            self.err(
                "acme.email",
                "",
                "missing: the CA account needs a contact address; set email = \"ops@YOUR-DOMAIN\"",
            );
            return None;
        };
        match challenge {
            ChallengeKind::Http01 if listeners.http.is_empty() => self.err(
                "acme.challenge",
                "\"http-01\"",
                "needs a port-80 listener (listeners.http); add one or use \"tls-alpn-01\"",
            ),
            ChallengeKind::TlsAlpn01 if listeners.https.is_empty() => self.err(
                "acme.challenge",
                "\"tls-alpn-01\"",
                "needs an https listener (listeners.https)",
            ),
            _ => {}
        }
        let state_dir = self.path(raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR));
        if let Err(e) = StateDir::open(&state_dir).and_then(|d| d.check_writable()) {
            self.err(
                "acme.state_dir",
                format!("{:?}", state_dir.display().to_string()),
                format!("cannot be created or written ({e}); create it, owned by the proxy's user, or choose another directory"),
            );
        }
        let ca_root = raw.ca_root.as_ref().map(|c| {
            let p = self.path(c);
            let pem = std::fs::read(&p).unwrap_or_default();
            use rustls_pki_types::pem::PemObject;
            let any = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok());
            if !any {
                self.err(
                    "acme.ca_root",
                    format!("{c:?}"),
                    "is not a readable PEM file of CA certificates; it must hold the root that signs the ACME directory's https certificate",
                );
            }
            p
        });
        Some(AcmeSettings {
            directory,
            contact: vec![format!("mailto:{email}")],
            state_dir,
            ca_root,
            challenge,
            first_retry,
            check_interval,
            sites: acme_sites,
        })
    }

    /// A site's certificate (`field` is `sites[i]`): required when there is an https
    /// listener; a pair of files, both read and matching, or `acme = true`.
    pub(super) fn site_tls(
        &mut self,
        field: &str,
        raw: Option<&RawCert>,
        hosts: &[String],
        listeners: &ListenerSettings,
    ) -> Option<SiteTls> {
        if let Some(c) = raw.filter(|c| c.acme == Some(true)) {
            if c.cert.is_some() || c.key.is_some() {
                self.err(
                    format!("{field}.tls.acme"),
                    "true",
                    "conflicts with cert and key: either the files or ACME, not both",
                );
            }
            if listeners.https.is_empty() {
                self.err(
                    format!("{field}.tls.acme"),
                    "true",
                    "needs an https listener (listeners.https) to serve the certificate",
                );
            }
            for h in hosts {
                if h.parse::<std::net::IpAddr>().is_ok() || !h.contains('.') || h.contains('*') {
                    self.err(
                        format!("{field}.hosts"),
                        format!("{h:?}"),
                        "cannot be validated by ACME (an IP address, a name without a dot or a wildcard); list only public DNS names on this site, or give it certificate files",
                    );
                }
            }
            return Some(SiteTls::Acme);
        }
        match raw {
            None => {
                if !listeners.https.is_empty() {
                    self.err(
                        format!("{field}.tls"),
                        "",
                        "missing: sites served on https listeners need `tls = { cert = \"…/fullchain.pem\", key = \"…/privkey.pem\" }` or `tls = { acme = true }`",
                    );
                }
                None
            }
            Some(c) => match (&c.cert, &c.key) {
                (Some(cert), Some(key)) => {
                    let paths = CertPaths {
                        cert: self.path(cert),
                        key: self.path(key),
                    };
                    if let Err(e) = check_cert_pair(&paths.cert, &paths.key) {
                        self.err(
                            format!("{field}.tls.{}", e.field()),
                            e.value(),
                            e.to_string(),
                        );
                    }
                    Some(SiteTls::Files(paths))
                }
                (None, _) => {
                    self.err(
                        format!("{field}.tls.cert"),
                        "",
                        "missing: path to the certificate chain (PEM), or acme = true",
                    );
                    None
                }
                (_, None) => {
                    self.err(
                        format!("{field}.tls.key"),
                        "",
                        "missing: path to the private key (PEM)",
                    );
                    None
                }
            },
        }
    }
}
