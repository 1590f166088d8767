//! `[listeners]` and `[admin]`: the addresses bound, each once, and the admin listener's
//! loopback rule.

use super::Validator;
use crate::config::{ListenerSettings, RawAdmin, RawListeners};
use std::collections::HashMap;
use std::net::SocketAddr;

impl Validator {
    /// The listeners and the admin addresses (`[admin] listen`), which share the rule that an
    /// address is bound once; at least one proxy listener is required.
    pub(super) fn listeners(
        &mut self,
        raw: &RawListeners,
        admin: &RawAdmin,
    ) -> (ListenerSettings, Vec<SocketAddr>) {
        let listeners = ListenerSettings {
            https: self.addresses("listeners.https", &raw.https),
            http: self.addresses("listeners.http", &raw.http),
            http_proxy: self.addresses("listeners.http_proxy", &raw.http_proxy),
        };
        let admin_listen = self.addresses("admin.listen", &admin.listen);
        let mut seen = HashMap::new();
        for (field, list) in [
            ("listeners.https", &listeners.https),
            ("listeners.http", &listeners.http),
            ("listeners.http_proxy", &listeners.http_proxy),
            ("admin.listen", &admin_listen),
        ] {
            for (i, a) in list.iter().enumerate() {
                if let Some(other) = seen.insert(*a, format!("{field}[{i}]")) {
                    self.err(
                        format!("{field}[{i}]"),
                        a.to_string(),
                        format!("address already used by {other}; each address can be bound once"),
                    );
                }
            }
        }
        if raw.https.is_empty() && raw.http.is_empty() && raw.http_proxy.is_empty() {
            self.err(
                "listeners",
                "",
                "no listener: add `https = [\"0.0.0.0:443\"]` (and usually `http = [\"0.0.0.0:80\"]`)",
            );
        }
        (listeners, admin_listen)
    }

    /// The admin listener purges without authentication: loopback only, unless `allow_remote`.
    pub(super) fn admin_remote(&mut self, raw: &RawAdmin, admin_listen: &[SocketAddr]) {
        if raw
            .allow_remote
            .unwrap_or(crate::config::settings::DEFAULT_ALLOW_REMOTE)
        {
            return;
        }
        for (i, a) in admin_listen.iter().enumerate() {
            if !a.ip().is_loopback() {
                self.err(
                    format!("admin.listen[{i}]"),
                    a.to_string(),
                    "the admin listener purges the cache without authentication: use a loopback address such as \"127.0.0.1:9113\", or set allow_remote = true behind a firewall",
                );
            }
        }
    }
}
