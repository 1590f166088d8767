//! `[tls]`, `[acme]` and a site's `tls`: certificate files and the ACME webroot.

use super::Validator;
use crate::config::{CertPaths, ListenerSettings, RawAcme, RawCert, RawTls};
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

    /// A site's certificate pair (`field` is `sites[i]`): required when there is an https
    /// listener; both files are read and must match.
    pub(super) fn site_tls(
        &mut self,
        field: &str,
        raw: Option<&RawCert>,
        listeners: &ListenerSettings,
    ) -> Option<CertPaths> {
        match raw {
            None => {
                if !listeners.https.is_empty() {
                    self.err(
                        format!("{field}.tls"),
                        "",
                        "missing: sites served on https listeners need `tls = { cert = \"…/fullchain.pem\", key = \"…/privkey.pem\" }`",
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
                    Some(paths)
                }
                (None, _) => {
                    self.err(
                        format!("{field}.tls.cert"),
                        "",
                        "missing: path to the certificate chain (PEM)",
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
