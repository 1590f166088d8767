//! `[headers]` and `[sites.headers]`: the security headers, extra headers and `Server`.

use super::{header_value, Validator};
use crate::config::{HeaderSettings, RawHeaders};
use http::{HeaderName, HeaderValue};

type HeaderField<'a> = (
    &'static str,
    &'static str,
    &'a Option<String>,
    &'a Option<String>,
    &'static str,
);

impl Validator {
    /// Builds a header policy from a site's values over the `[headers]` defaults. Errors in a
    /// default are reported once, by the `[headers]` pass itself (`field == "headers"`), not
    /// again for every site that inherits it.
    pub(super) fn headers(
        &mut self,
        field: &str,
        site: &RawHeaders,
        defaults: &RawHeaders,
    ) -> HeaderSettings {
        let is_default_pass = field == "headers";
        let fixed: [HeaderField<'_>; 5] = [
            (
                "hsts",
                "strict-transport-security",
                &site.hsts,
                &defaults.hsts,
                crate::headers::recommended("strict-transport-security"),
            ),
            (
                "content_security_policy",
                "content-security-policy",
                &site.content_security_policy,
                &defaults.content_security_policy,
                crate::headers::recommended("content-security-policy"),
            ),
            (
                "x_frame_options",
                "x-frame-options",
                &site.x_frame_options,
                &defaults.x_frame_options,
                crate::headers::recommended("x-frame-options"),
            ),
            (
                "referrer_policy",
                "referrer-policy",
                &site.referrer_policy,
                &defaults.referrer_policy,
                crate::headers::recommended("referrer-policy"),
            ),
            (
                "permissions_policy",
                "permissions-policy",
                &site.permissions_policy,
                &defaults.permissions_policy,
                crate::headers::recommended("permissions-policy"),
            ),
        ];
        let nosniff = "x-content-type-options";
        let mut add = vec![(
            HeaderName::from_static(nosniff),
            HeaderValue::from_static(crate::headers::recommended(nosniff)),
        )];
        for (key, name, own, inherited, builtin) in fixed {
            let (text, report) = match (own, inherited) {
                (Some(v), _) => (v.as_str(), true),
                (None, Some(v)) => (v.as_str(), is_default_pass),
                (None, None) => (builtin, false),
            };
            // An empty value switches the header off.
            if text.is_empty() {
                continue;
            }
            match header_value(text) {
                Some(v) => add.push((HeaderName::from_static(name), v)),
                None if report => self.err(
                    format!("{field}.{key}"),
                    format!("{text:?}"),
                    "header values must be visible ASCII without line breaks",
                ),
                None => {}
            }
        }
        let mut extra: Vec<(&String, &String, bool)> = defaults
            .extra
            .iter()
            .filter(|(k, _)| !site.extra.contains_key(*k))
            .map(|(k, v)| (k, v, is_default_pass))
            .collect();
        extra.extend(site.extra.iter().map(|(k, v)| (k, v, true)));
        for (k, value, report) in extra {
            let name = HeaderName::from_bytes(k.as_bytes());
            match (name, header_value(value)) {
                (Ok(n), Some(v)) => {
                    if crate::headers::is_hop_by_hop(&n) || n == http::header::CONTENT_LENGTH {
                        if report {
                            self.err(
                                format!("{field}.extra.{k}"),
                                format!("{value:?}"),
                                "this header is managed by the proxy and cannot be set here",
                            );
                        }
                    } else {
                        add.retain(|(existing, _)| existing != n);
                        add.push((n, v));
                    }
                }
                (Err(_), _) if report => self.err(
                    format!("{field}.extra"),
                    format!("{k:?}"),
                    "not a valid header name (letters, digits and '-')",
                ),
                (_, None) if report => self.err(
                    format!("{field}.extra.{k}"),
                    format!("{value:?}"),
                    "header values must be visible ASCII without line breaks",
                ),
                _ => {}
            }
        }
        let (server_text, report) = match (&site.server, &defaults.server) {
            (Some(v), _) => (v.as_str(), true),
            (None, Some(v)) => (v.as_str(), is_default_pass),
            (None, None) => (crate::headers::DEFAULT_SERVER_NAME, false),
        };
        let mut server = header_value(server_text);
        if server_text.chars().any(|c| c.is_ascii_digit()) {
            if report {
                self.err(
                    format!("{field}.server"),
                    format!("{server_text:?}"),
                    "the Server header must not carry a version; use a bare name such as \"galion-edge\"",
                );
            }
            server = None;
        } else if server.is_none() && report {
            self.err(
                format!("{field}.server"),
                format!("{server_text:?}"),
                "header values must be visible ASCII without line breaks",
            );
        }
        HeaderSettings {
            add,
            server: server.unwrap_or(crate::headers::DEFAULT_SERVER),
        }
    }
}
