//! `[client_ip]`: the trusted proxies and the header they name the client in.

use super::Validator;
use crate::config::{ClientIpSettings, RawClientIp};
use http::HeaderName;

impl Validator {
    pub(super) fn client_ip(&mut self, raw: &RawClientIp) -> ClientIpSettings {
        let trusted = self.cidrs("client_ip.trusted", raw.trusted.as_deref().unwrap_or(&[]));
        let header = match raw.header.as_deref() {
            None => Some(crate::client_ip::DEFAULT_HEADER),
            Some("") => None,
            Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(
                        "client_ip.header",
                        format!("{h:?}"),
                        "not a header name; use \"CF-Connecting-IP\", another header, or \"\" for none",
                    );
                    None
                }
            },
        };
        ClientIpSettings { trusted, header }
    }
}
