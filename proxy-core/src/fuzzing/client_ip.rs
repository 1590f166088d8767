//! The `client_ip` target: trusted proxies and the client address from forwarding headers.

use super::lines;
use crate::client_ip::{canonical, ClientIpResolver, IpNet, TrustedProxies, CF_CONNECTING_IP};
use crate::headers::X_FORWARDED_FOR;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

const CLIENT_IP_PEERS: &[&str] = &[
    "10.1.2.3",
    "::ffff:10.9.9.9",
    "2400:cb00::1",
    "192.168.7.7",
    "203.0.113.9",
    "::ffff:198.51.100.1",
    "2001:db8::5",
    "127.0.0.1",
];

const CLIENT_IP_TRUSTED: &[&str] = &[
    "10.0.0.0/8",
    "2400:cb00::/32",
    "::ffff:192.168.0.0/112",
    "127.0.0.1/32",
];

/// Client IP resolution: `data` is one flag byte (bits 0-2: which peer of a fixed list,
/// bit 3: no `CF-Connecting-IP` header belief, bit 4: the first line is a comma-separated list
/// of trusted networks instead of the fixed set, bit 5: the first line is the peer address),
/// then header lines: `cf:VALUE` is a `CF-Connecting-IP` line, anything else an
/// `X-Forwarded-For` line.
///
/// Invariants: [`TrustedProxies::contains`] agrees with `ipnet` on the documented rule (IPv4
/// and IPv4-mapped addresses match IPv4 nets and nets inside `::ffff:0:0/96`, other IPv6
/// addresses IPv6 nets); [`ClientIpResolver::resolve`] returns a canonical address, the peer
/// itself when it is untrusted, and otherwise agrees with a reference walk of the headers;
/// [`ClientIpResolver::forwarded_for`] ends with the canonical peer and is only the peer for
/// an untrusted one.
pub fn client_ip(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lines = lines(rest).peekable();
    let mut nets: Vec<IpNet> = CLIENT_IP_TRUSTED
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    if flags & 0x10 != 0 {
        let first = lines.next().unwrap_or_default();
        nets = String::from_utf8_lossy(first)
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
    }
    let peer: IpAddr = if flags & 0x20 != 0 {
        let first = lines.next().unwrap_or_default();
        match std::str::from_utf8(first).ok().and_then(|s| s.parse().ok()) {
            Some(ip) => ip,
            None => return,
        }
    } else {
        match CLIENT_IP_PEERS[usize::from(flags & 7)].parse() {
            Ok(ip) => ip,
            Err(_) => return,
        }
    };
    let header = (flags & 0x08 == 0).then_some(CF_CONNECTING_IP);
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = match line.strip_prefix(b"cf:") {
            Some(v) => (CF_CONNECTING_IP, v),
            None => (X_FORWARDED_FOR, line),
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }

    let trusted = TrustedProxies::new(nets.clone());
    for ip in std::iter::once(peer).chain(xff_hops(&headers).into_iter().flatten().flatten()) {
        assert_eq!(
            trusted.contains(ip),
            reference_contains(&nets, ip),
            "contains({ip}) over {nets:?}"
        );
    }

    let resolver = ClientIpResolver::new(trusted.clone(), header.clone());
    let got = resolver.resolve(peer, &headers);
    assert_eq!(canonical(got), got, "not canonical: {got}");
    let peer_c = canonical(peer);
    let expected = if !trusted.contains(peer_c) {
        peer_c
    } else {
        reference_resolve(&trusted, peer_c, header.as_ref(), &headers)
    };
    assert_eq!(got, expected, "resolve({peer}) with {headers:?}");

    let xff = resolver.forwarded_for(peer, &headers);
    assert!(xff.ends_with(&peer_c.to_string()), "{xff:?}");
    if !trusted.contains(peer_c) {
        assert_eq!(xff, peer_c.to_string());
    }
    assert!(
        HeaderValue::from_str(&xff).is_ok(),
        "not a header value: {xff:?}"
    );
}

fn reference_contains(nets: &[IpNet], ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => nets.iter().any(|n| match n {
            IpNet::V4(n) => n.contains(&a),
            IpNet::V6(n) => {
                n.prefix_len() >= 96
                    && n.network().to_ipv4_mapped().is_some()
                    && n.contains(&a.to_ipv6_mapped())
            }
        }),
        IpAddr::V6(a) => nets.iter().any(|n| match n {
            IpNet::V4(_) => false,
            IpNet::V6(n) => n.contains(&a),
        }),
    }
}

/// Every `X-Forwarded-For` hop in order; a line that is not text is `None`, an element that is
/// not an address `Some(None)`.
fn xff_hops(headers: &HeaderMap) -> Vec<Option<Option<IpAddr>>> {
    let mut out = Vec::new();
    for line in headers.get_all(X_FORWARDED_FOR) {
        match line.to_str() {
            Err(_) => out.push(None),
            Ok(text) => {
                for hop in text.split(',') {
                    let hop = hop.trim_matches([' ', '\t']);
                    if !hop.is_empty() {
                        out.push(Some(hop.parse::<IpAddr>().ok()));
                    }
                }
            }
        }
    }
    out
}

fn reference_resolve(
    trusted: &TrustedProxies,
    peer: IpAddr,
    header: Option<&HeaderName>,
    headers: &HeaderMap,
) -> IpAddr {
    if let Some(name) = header {
        let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
        if let [only] = values[..] {
            if let Some(ip) = only
                .to_str()
                .ok()
                .and_then(|s| s.trim_matches([' ', '\t']).parse::<IpAddr>().ok())
            {
                return canonical(ip);
            }
        }
    }
    let mut last = peer;
    for hop in xff_hops(headers).into_iter().rev() {
        let Some(Some(ip)) = hop else {
            return last;
        };
        let ip = canonical(ip);
        if !trusted.contains(ip) {
            return ip;
        }
        last = ip;
    }
    last
}
