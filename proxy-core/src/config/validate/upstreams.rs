//! `[upstreams.NAME]`: backends, timeouts and health checks of one group.

use super::{valid_name, Validator};
use crate::config::{
    HealthCheckKind, HealthCheckSettings, RawUpstream, UpstreamSettings, UpstreamTimeouts,
};
use crate::upstream as owner;
use std::net::{SocketAddr, ToSocketAddrs};

impl Validator {
    pub(super) fn upstream(&mut self, name: &str, raw: &RawUpstream) -> UpstreamSettings {
        let field = format!("upstreams.{name}");
        if !valid_name(name) {
            self.err(
                field.clone(),
                format!("{name:?}"),
                "group names use letters, digits, '_' and '-'",
            );
        }
        if raw.backends.is_empty() {
            self.err(
                format!("{field}.backends"),
                "[]",
                "an upstream group needs at least one backend, such as [\"127.0.0.1:8001\"]",
            );
        }
        let mut backends = Vec::new();
        for (i, b) in raw.backends.iter().enumerate() {
            let resolved = b.parse::<SocketAddr>().ok().or_else(|| {
                // host:port with a name: resolved once, at load (like nginx without `resolve`).
                if b.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                {
                    b.to_socket_addrs().ok().and_then(|mut a| a.next())
                } else {
                    None
                }
            });
            match resolved {
                Some(a) if a.port() == 0 => self.err(
                    format!("{field}.backends[{i}]"),
                    format!("{b:?}"),
                    "port 0 is not a backend port",
                ),
                Some(a) => {
                    if backends.contains(&a) {
                        self.err(
                            format!("{field}.backends[{i}]"),
                            format!("{b:?}"),
                            "listed twice in this group",
                        );
                    }
                    backends.push(a)
                }
                None => self.err(
                    format!("{field}.backends[{i}]"),
                    format!("{b:?}"),
                    "expected host:port such as \"127.0.0.1:8001\" (a host name must resolve)",
                ),
            }
        }
        let timeouts = UpstreamTimeouts {
            connect: self.duration(
                &format!("{field}.connect_timeout"),
                &raw.connect_timeout,
                owner::DEFAULT_CONNECT_TIMEOUT,
            ),
            read: self.duration(
                &format!("{field}.read_timeout"),
                &raw.read_timeout,
                owner::DEFAULT_READ_TIMEOUT,
            ),
            write: self.duration(
                &format!("{field}.write_timeout"),
                &raw.write_timeout,
                owner::DEFAULT_WRITE_TIMEOUT,
            ),
            idle: self.duration(
                &format!("{field}.idle_timeout"),
                &raw.idle_timeout,
                owner::DEFAULT_IDLE_TIMEOUT,
            ),
        };
        let hc = &raw.health_check;
        let hfield = format!("{field}.health_check");
        let kind = match hc.kind.as_deref() {
            None | Some("tcp") => HealthCheckKind::Tcp,
            Some("none") => HealthCheckKind::None,
            Some("http") => {
                let path = hc
                    .path
                    .clone()
                    .unwrap_or_else(|| owner::DEFAULT_HEALTH_CHECK_PATH.into());
                if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
                    self.err(
                        format!("{hfield}.path"),
                        format!("{path:?}"),
                        "expected an absolute path such as \"/health\"",
                    );
                }
                HealthCheckKind::Http { path }
            }
            Some(other) => {
                self.err(
                    format!("{hfield}.kind"),
                    format!("{other:?}"),
                    "expected \"tcp\", \"http\" or \"none\"",
                );
                HealthCheckKind::Tcp
            }
        };
        if hc.path.is_some() && !matches!(kind, HealthCheckKind::Http { .. }) {
            self.err(
                format!("{hfield}.path"),
                format!("{:?}", hc.path.clone().unwrap_or_default()),
                "only used with kind = \"http\"; set kind = \"http\" or remove path",
            );
        }
        let counts = owner::HEALTH_CHECK_COUNT_RANGE;
        let mut count = |name: &str, v: Option<usize>| match v {
            None => owner::DEFAULT_HEALTH_CHECK_COUNT,
            Some(n) if counts.contains(&n) => n,
            Some(n) => {
                self.err(
                    format!("{hfield}.{name}"),
                    n.to_string(),
                    format!("must be between {} and {}", counts.start(), counts.end()),
                );
                owner::DEFAULT_HEALTH_CHECK_COUNT
            }
        };
        let fall = count("fall", hc.fall);
        let rise = count("rise", hc.rise);
        let health_check = HealthCheckSettings {
            kind,
            interval: self.duration(
                &format!("{hfield}.interval"),
                &hc.interval,
                owner::DEFAULT_HEALTH_CHECK_INTERVAL,
            ),
            timeout: self.duration(
                &format!("{hfield}.timeout"),
                &hc.timeout,
                owner::DEFAULT_HEALTH_CHECK_TIMEOUT,
            ),
            fall,
            rise,
        };
        UpstreamSettings {
            name: name.to_string(),
            backends,
            timeouts,
            health_check,
        }
    }
}
