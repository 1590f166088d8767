//! The `routing` target: host and path routing over a fixed two-site config.

use crate::config::Config;
use crate::routing::{path_is_clean, strip_port, RouteError, RouteTable};
use std::path::Path;
use std::sync::OnceLock;

const ROUTING_CONFIG: &str = r#"
[listeners]
http_proxy = ["127.0.0.1:8080"]
[upstreams.web]
backends = ["127.0.0.1:3001"]
[upstreams.api]
backends = ["127.0.0.1:8001"]
[upstreams.voice]
backends = ["127.0.0.1:8002"]
[upstreams.studio]
backends = ["127.0.0.1:3003"]
[upstreams.socket]
backends = ["127.0.0.1:8004"]
[[sites]]
hosts = ["galion.app", "www.galion.app"]
routes = [
  { path = "/", upstream = "web" },
  { path = "/api/", upstream = "api" },
  { path = "/api/v1/voice/", upstream = "voice" },
  { path = "/voice/", upstream = "voice" },
]
[[sites]]
hosts = ["galion.studio", "localhost"]
routes = [
  { path = "/", upstream = "studio" },
  { path = "/socket.io/", upstream = "socket" },
  { path = "/api", upstream = "api" },
]
[[sites]]
hosts = ["api.galion.studio"]
routes = [{ path = "/v2/", upstream = "api" }]
"#;

/// The config and table the routing target runs against (the two production sites, and one
/// without a `/` route so that `NoRoute` is reachable).
pub fn routing_fixture() -> &'static (Config, RouteTable) {
    static FIXTURE: OnceLock<(Config, RouteTable)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        match Config::from_toml_str(ROUTING_CONFIG, Path::new(".")) {
            Ok(config) => match config.route_table() {
                Ok(table) => (config, table),
                Err(e) => panic!("the routing fixture does not route: {e}"),
            },
            // A fixed, tested string: failing here is a bug in this module.
            Err(e) => panic!("the routing fixture config is invalid: {e}"),
        }
    })
}

/// Host and path routing: `data` is `host \n path` (UTF-8; the path is everything after the
/// first newline).
///
/// Invariants: [`strip_port`] returns a prefix of its input and only removes a `:digits` port
/// (or what follows a bracketed IPv6 literal); [`RouteTable::decide`] is deterministic and
/// agrees with a naive scan of the config (case-insensitive host without port or final dot,
/// longest prefix that the path starts with); [`path_is_clean`] agrees with a reference that
/// percent-decodes each segment and refuses `.`, `..`, `/` and `\`.
pub fn routing(data: &[u8]) {
    let (host, path) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(host), Ok(path)) = (std::str::from_utf8(host), std::str::from_utf8(path)) else {
        return;
    };
    let (config, table) = routing_fixture();

    for h in [host, path] {
        let stripped = strip_port(h);
        assert!(h.starts_with(stripped), "strip_port({h:?}) = {stripped:?}");
        let rest = &h[stripped.len()..];
        if h.starts_with('[') && h.contains(']') {
            assert!(stripped.ends_with(']'), "strip_port({h:?}) = {stripped:?}");
        } else if !rest.is_empty() {
            assert!(rest.starts_with(':'), "strip_port({h:?}) = {stripped:?}");
            assert!(rest[1..].bytes().all(|b| b.is_ascii_digit()), "{h:?}");
        }
    }

    let got = table.decide(host, path);
    assert_eq!(got, table.decide(host, path), "not deterministic");
    let name = strip_port(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    let site = config
        .sites
        .iter()
        .position(|s| s.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)));
    match (site, got) {
        (None, Err(RouteError::UnknownHost)) => {}
        (Some(site), got) => {
            let routes = &config.sites[site].routes;
            let best = routes
                .iter()
                .enumerate()
                .filter(|(_, r)| path.starts_with(r.prefix.as_str()))
                .max_by_key(|(_, r)| r.prefix.len());
            match (best, got) {
                (None, Err(RouteError::NoRoute { site: s })) => assert_eq!(s, site),
                (Some((j, r)), Ok(d)) => {
                    assert_eq!((d.site, d.route, d.upstream), (site, j, r.upstream));
                    assert!(path.starts_with(routes[d.route].prefix.as_str()));
                }
                (best, got) => panic!("{host:?} {path:?}: got {got:?}, expected {best:?}"),
            }
        }
        (None, got) => panic!("{host:?}: unknown host routed: {got:?}"),
    }

    assert_eq!(
        path_is_clean(path),
        reference_path_is_clean(path),
        "path_is_clean({path:?})"
    );
}

/// One pass of percent-decoding (`%XX` with two hex digits; anything else is literal), as an
/// upstream server does it.
fn percent_decode(seg: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < seg.len() {
        if seg[i] == b'%' && i + 2 < seg.len() {
            if let (Some(h), Some(l)) = (hex(seg[i + 1]), hex(seg[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(seg[i]);
        i += 1;
    }
    out
}

fn reference_path_is_clean(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|seg| {
            let d = percent_decode(seg.as_bytes());
            d != b"." && d != b".." && !d.contains(&b'/') && !d.contains(&b'\\')
        })
}
