//! The client's address behind trusted proxies (Cloudflare): which IP a request is limited,
//! logged and forwarded as.
//!
//! The rule is the one nginx's `real_ip` module applies with `real_ip_recursive on`: headers
//! are believed only when the TCP peer is a trusted proxy, so a client connecting directly can
//! never choose its own address by sending `CF-Connecting-IP` or `X-Forwarded-For`.
//!
//! Every address this module returns is canonical: an IPv4-mapped IPv6 address
//! (`::ffff:1.2.3.4`, what a dual-stack listener reports for IPv4 peers) comes back as the IPv4
//! address, so one client has one key in the rate limiter and one form in the logs.

use crate::headers::X_FORWARDED_FOR;
use http::header::{HeaderMap, HeaderName};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network (`10.0.0.0/8`, `2400:cb00::/32`), from the `ipnet` crate (version 2),
/// re-exported because [`TrustedProxies::new`] takes it. Parse one with `str::parse`.
pub use ipnet::IpNet;

/// `CF-Connecting-IP`: the client address Cloudflare sends to the origin.
pub const CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");
/// `[client_ip] header`: the header a trusted proxy names the client in, Cloudflare's.
pub const DEFAULT_HEADER: HeaderName = CF_CONNECTING_IP;

/// Cloudflare's published edge ranges (<https://www.cloudflare.com/ips-v4> and
/// <https://www.cloudflare.com/ips-v6>), IPv4 first, as CIDR text for
/// [`TrustedProxies::cloudflare`].
///
/// Cloudflare changes this list rarely but does change it: the copy here is the well-known list
/// and should be checked against the published one on upgrades. A unit test checks that every
/// entry parses; a range missing here only means requests through it are keyed by the
/// Cloudflare address (safe, but all such clients then share one rate-limit key).
pub const CLOUDFLARE_RANGES: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as the IPv4 address; anything else
/// unchanged (IPv4-compatible `::1.2.3.4` included, it is deprecated and not a mapping). Never
/// fails.
#[inline]
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The set of proxy addresses whose forwarding headers are believed.
///
/// Built once from config; a lookup is a scan of two short arrays of (network, mask) integers
/// (the 22 Cloudflare ranges cost a few nanoseconds) and never allocates. The default is the
/// empty set: nothing is trusted and [`ClientIpResolver`] always answers with the TCP peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// (network, mask) with host bits cleared.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl TrustedProxies {
    /// The set of `nets`. Host bits in a net (`10.0.0.1/8`) are ignored, duplicates are kept
    /// (harmless), and an IPv6 net inside `::ffff:0:0/96` is stored as the IPv4 net it maps, so
    /// it matches peers reported either way. Infallible: every [`IpNet`] is a valid range.
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.netmask()))),
                IpNet::V6(n) => {
                    let network = u128::from(n.network());
                    let mapped = n.network().to_ipv4_mapped();
                    match mapped {
                        Some(a) if n.prefix_len() >= 96 => {
                            let len = u32::from(n.prefix_len() - 96);
                            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                            v4.push((u32::from(a) & mask, mask));
                        }
                        _ => v6.push((network, u128::from(n.netmask()))),
                    }
                }
            }
        }
        TrustedProxies { v4, v6 }
    }

    /// Cloudflare's edge, from [`CLOUDFLARE_RANGES`]. An entry that failed to parse would be
    /// skipped (none does: a unit test checks them all).
    pub fn cloudflare() -> TrustedProxies {
        TrustedProxies::new(
            CLOUDFLARE_RANGES
                .iter()
                .filter_map(|s| s.parse::<IpNet>().ok())
                .collect(),
        )
    }

    /// Whether `ip` lies in one of the ranges. IPv4-mapped IPv6 addresses are looked up as
    /// their IPv4 address. Never fails; the empty set contains nothing.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => self.contains_v4(a),
            IpAddr::V6(a) => self.contains_v6(a),
        }
    }

    #[inline]
    fn contains_v4(&self, a: Ipv4Addr) -> bool {
        let a = u32::from(a);
        self.v4.iter().any(|&(net, mask)| a & mask == net)
    }

    #[inline]
    fn contains_v6(&self, a: Ipv6Addr) -> bool {
        let a = u128::from(a);
        self.v6.iter().any(|&(net, mask)| a & mask == net)
    }

    /// Whether no range is trusted (then headers are never believed).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// How many ranges are held (IPv4 and IPv6 together).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Finds the client address of a request from its TCP peer and, when the peer is a trusted
/// proxy, from its forwarding headers.
///
/// The intended configuration is [`ClientIpResolver::cloudflare`]: Cloudflare's ranges trusted
/// and [`CF_CONNECTING_IP`] believed. Resolution never fails and never panics on any header
/// content; bad headers fall back to an address the proxy can vouch for (see
/// [`ClientIpResolver::resolve`]).
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: TrustedProxies,
    header: Option<HeaderName>,
}

impl ClientIpResolver {
    /// A resolver trusting `trusted`, which believes the single-address `header` (normally
    /// [`CF_CONNECTING_IP`]) from those peers. `None` disables the header: only
    /// `X-Forwarded-For` is walked. Infallible.
    pub fn new(trusted: TrustedProxies, header: Option<HeaderName>) -> ClientIpResolver {
        ClientIpResolver { trusted, header }
    }

    /// The Cloudflare set-up: [`TrustedProxies::cloudflare`] and `CF-Connecting-IP`.
    pub fn cloudflare() -> ClientIpResolver {
        ClientIpResolver::new(TrustedProxies::cloudflare(), Some(CF_CONNECTING_IP))
    }

    /// The trusted proxy set.
    pub fn trusted(&self) -> &TrustedProxies {
        &self.trusted
    }

    /// The client address (canonical: IPv4-mapped addresses come back as IPv4).
    ///
    /// - Peer not trusted: the peer. Its headers are not read at all, so a spoofed
    ///   `CF-Connecting-IP` or `X-Forwarded-For` changes nothing.
    /// - Peer trusted, and the configured header is present exactly once and holds exactly one
    ///   IP address (surrounding spaces allowed): that address.
    /// - Otherwise `X-Forwarded-For` (every header line, in order, each a comma-separated list;
    ///   empty list elements are skipped) is walked from right to left. Trusted hops are
    ///   skipped; the first untrusted hop is the client. A hop that is not a bare IP address
    ///   (`1.2.3.4:80`, `unknown`, a name, non-ASCII bytes) stops the walk: the answer is then
    ///   the last trusted hop seen, or the peer, because nothing left of a hop we cannot read
    ///   can be attributed. If every hop is trusted, the leftmost one.
    ///
    /// Never fails. Allocation-free: header values are parsed in place.
    ///
    /// ```
    /// use proxy_core::{ClientIpResolver, IpNet, TrustedProxies, CF_CONNECTING_IP};
    /// use http::HeaderMap;
    /// use std::net::IpAddr;
    ///
    /// let trusted: IpNet = "10.0.0.0/8".parse().unwrap();
    /// let resolver = ClientIpResolver::new(TrustedProxies::new(vec![trusted]), Some(CF_CONNECTING_IP));
    /// let mut headers = HeaderMap::new();
    /// headers.insert(CF_CONNECTING_IP, "203.0.113.7".parse().unwrap());
    ///
    /// let proxy: IpAddr = "10.1.2.3".parse().unwrap();
    /// let stranger: IpAddr = "198.51.100.9".parse().unwrap();
    /// // A trusted proxy is believed; anyone else is the client themselves.
    /// assert_eq!(resolver.resolve(proxy, &headers), "203.0.113.7".parse::<IpAddr>().unwrap());
    /// assert_eq!(resolver.resolve(stranger, &headers), stranger);
    /// // IPv4-mapped peers come back as IPv4.
    /// assert_eq!(
    ///     resolver.resolve("::ffff:198.51.100.9".parse().unwrap(), &headers),
    ///     stranger
    /// );
    /// ```
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusted.contains(peer) {
            return peer;
        }
        if let Some(ip) = self.header.as_ref().and_then(|h| single_ip(headers, h)) {
            return ip;
        }
        let mut last_trusted = peer;
        for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return last_trusted;
            };
            for hop in line.rsplit(',') {
                let hop = hop.trim_matches(is_ows);
                if hop.is_empty() {
                    continue;
                }
                let Ok(ip) = hop.parse::<IpAddr>() else {
                    return last_trusted;
                };
                let ip = canonical(ip);
                if !self.trusted.contains(ip) {
                    return ip;
                }
                last_trusted = ip;
            }
        }
        last_trusted
    }

    /// The `X-Forwarded-For` value to send upstream.
    ///
    /// From a trusted peer: the incoming chain as received (every header line in order, each
    /// trimmed of spaces and stray commas at its ends, joined by `", "`), then the peer. From an
    /// untrusted peer: only the peer, because what a client claims about its own path is
    /// unverifiable and would otherwise reach the upstream as if a proxy had written it. Lines
    /// that are not visible ASCII are dropped (they cannot be carried as text). The peer is
    /// written canonically (`1.2.3.4`, never `::ffff:1.2.3.4`). Never fails; allocates the
    /// returned string once.
    pub fn forwarded_for(&self, peer: IpAddr, headers: &HeaderMap) -> String {
        let peer = canonical(peer);
        let trusted = self.trusted.contains(peer);
        let lines = || {
            headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter(move |_| trusted)
                .filter_map(|v| v.to_str().ok())
                .map(|v| v.trim_matches(|c| is_ows(c) || c == ','))
                .filter(|v| !v.is_empty())
        };
        // The longest IPv6 text is 39 bytes; 2 more for each separator.
        let cap = lines().map(|l| l.len() + 2).sum::<usize>() + 39;
        let mut out = String::with_capacity(cap);
        for line in lines() {
            out.push_str(line);
            out.push_str(", ");
        }
        crate::headers::push_ip(&mut out, peer);
        out
    }
}

/// Optional white space of RFC 9110 (space and horizontal tab).
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The one IP in the one `name` header line, or `None` for zero or several lines, several
/// values, or anything that is not an IP address.
fn single_ip(headers: &HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let mut all = headers.get_all(name).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?.trim_matches(is_ows);
    text.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const CF_V4: &str = "173.245.48.5";
    const CF_V6: &str = "2606:4700::1";

    #[test]
    fn every_cloudflare_range_parses() {
        for r in CLOUDFLARE_RANGES {
            let net: IpNet = r.parse().unwrap_or_else(|e| panic!("{r}: {e}"));
            // Published ranges have no host bits set.
            assert_eq!(net, net.trunc(), "{r}");
        }
        assert_eq!(CLOUDFLARE_RANGES.len(), 22);
        assert_eq!(TrustedProxies::cloudflare().len(), CLOUDFLARE_RANGES.len());
    }

    #[test]
    fn contains_edges_and_mapped() {
        let t = TrustedProxies::cloudflare();
        assert!(t.contains(ip("173.245.48.0")));
        assert!(t.contains(ip("173.245.63.255")));
        assert!(!t.contains(ip("173.245.64.0")));
        assert!(!t.contains(ip("173.245.47.255")));
        assert!(t.contains(ip("::ffff:173.245.48.5")));
        assert!(!t.contains(ip("::ffff:1.2.3.4")));
        assert!(t.contains(ip("2a06:98c7:ffff::1")));
        assert!(!t.contains(ip("2a06:98c8::1")));
        assert!(!t.contains(ip("::1")));
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
        let all = TrustedProxies::new(vec!["0.0.0.0/0".parse().unwrap()]);
        assert!(all.contains(ip("255.255.255.255")));
        assert!(!all.contains(ip("::2")));
        // A mapped IPv6 range matches the IPv4 peer, and host bits are ignored.
        let m = TrustedProxies::new(vec![
            "::ffff:10.0.0.0/104".parse().unwrap(),
            "192.168.1.77/24".parse().unwrap(),
        ]);
        assert!(m.contains(ip("10.9.8.7")));
        assert!(m.contains(ip("::ffff:10.9.8.7")));
        assert!(!m.contains(ip("11.0.0.1")));
        assert!(m.contains(ip("192.168.1.1")));
    }

    #[test]
    fn untrusted_peer_ignores_spoofed_headers() {
        let r = ClientIpResolver::cloudflare();
        let h = headers(&[
            ("cf-connecting-ip", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2, 173.245.48.5"),
        ]);
        assert_eq!(r.resolve(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(r.resolve(ip("2001:db8::9"), &h), ip("2001:db8::9"));
        assert_eq!(r.forwarded_for(ip("203.0.113.9"), &h), "203.0.113.9");
    }

    #[test]
    fn trusted_peer_cf_header() {
        let r = ClientIpResolver::cloudflare();
        let h = headers(&[
            ("cf-connecting-ip", " 198.51.100.7 "),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("198.51.100.7"));
        let h = headers(&[("cf-connecting-ip", "2001:db8::7")]);
        assert_eq!(r.resolve(ip(CF_V6), &h), ip("2001:db8::7"));
        assert_eq!(r.resolve(ip("::ffff:173.245.48.5"), &h), ip("2001:db8::7"));
        let h = headers(&[("cf-connecting-ip", "::ffff:198.51.100.7")]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("198.51.100.7"));
    }

    #[test]
    fn bad_cf_header_falls_back_to_xff() {
        let r = ClientIpResolver::cloudflare();
        for bad in [
            "1.2.3.4, 5.6.7.8",
            "1.2.3.4:80",
            "unknown",
            "",
            "[::1]",
            "1.2.3",
        ] {
            let h = headers(&[
                ("cf-connecting-ip", bad),
                ("x-forwarded-for", "198.51.100.7"),
            ]);
            assert_eq!(r.resolve(ip(CF_V4), &h), ip("198.51.100.7"), "{bad:?}");
        }
        // Two header lines are refused even if both are valid.
        let h = headers(&[
            ("cf-connecting-ip", "1.1.1.1"),
            ("cf-connecting-ip", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("198.51.100.7"));
        // Non-ASCII bytes.
        let mut h = HeaderMap::new();
        h.insert(
            CF_CONNECTING_IP,
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(r.resolve(ip(CF_V4), &h), ip(CF_V4));
    }

    #[test]
    fn header_disabled() {
        let r = ClientIpResolver::new(TrustedProxies::cloudflare(), None);
        let h = headers(&[
            ("cf-connecting-ip", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("2.2.2.2"));
    }

    #[test]
    fn xff_walk() {
        let r = ClientIpResolver::cloudflare();
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 173.245.48.5")]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("1.2.3.4"));
        // The client's own claims left of the first untrusted hop are not believed.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 173.245.48.5")]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("1.2.3.4"));
        // No header at all: the peer.
        assert_eq!(r.resolve(ip(CF_V4), &HeaderMap::new()), ip(CF_V4));
        // Empty list elements are skipped, tabs trimmed.
        let h = headers(&[("x-forwarded-for", ",1.2.3.4,\t, 2606:4700::5 ,")]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("1.2.3.4"));
        // Mapped hops are canonical.
        let h = headers(&[("x-forwarded-for", "::ffff:1.2.3.4")]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("1.2.3.4"));
    }

    #[test]
    fn xff_garbage_hop_stops_the_walk() {
        let r = ClientIpResolver::cloudflare();
        // Garbage right after the peer: the peer.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, garbage")]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip(CF_V4));
        // Garbage after a trusted hop: that hop, not the client-written address beyond.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 1.2.3.4:80, 162.158.1.1")]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("162.158.1.1"));
        // Garbage left of the client is never reached.
        let h = headers(&[("x-forwarded-for", "garbage, 1.2.3.4")]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("1.2.3.4"));
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"1.2.3.4, \xfe").unwrap(),
        );
        assert_eq!(r.resolve(ip(CF_V4), &h), ip(CF_V4));
        // Long junk does not panic.
        let junk = "x".repeat(8000) + ",,,::::,[],%,1.2.3.4.5";
        let h = headers(&[("x-forwarded-for", &junk)]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip(CF_V4));
    }

    #[test]
    fn mapped_peers() {
        let r = ClientIpResolver::cloudflare();
        let h = headers(&[("cf-connecting-ip", "1.1.1.1")]);
        // A mapped Cloudflare peer is trusted.
        assert_eq!(r.resolve(ip("::ffff:173.245.48.5"), &h), ip("1.1.1.1"));
        // A mapped untrusted peer comes back as IPv4.
        assert_eq!(r.resolve(ip("::ffff:203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(r.forwarded_for(ip("::ffff:203.0.113.9"), &h), "203.0.113.9");
    }

    #[test]
    fn multiple_xff_lines() {
        let r = ClientIpResolver::cloudflare();
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4"),
            ("x-forwarded-for", "162.158.1.1, 173.245.48.9"),
        ]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("1.2.3.4"));
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8, 162.158.1.1"),
        ]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("5.6.7.8"));
    }

    #[test]
    fn every_hop_trusted_gives_leftmost() {
        let r = ClientIpResolver::cloudflare();
        let h = headers(&[
            ("x-forwarded-for", "162.158.0.1, 104.16.0.1"),
            ("x-forwarded-for", "2606:4700::1"),
        ]);
        assert_eq!(r.resolve(ip(CF_V4), &h), ip("162.158.0.1"));
    }

    #[test]
    fn forwarded_for_cases() {
        let r = ClientIpResolver::cloudflare();
        // Trusted peer: chain kept as received, peer appended.
        let h = headers(&[("x-forwarded-for", " 1.2.3.4,  162.158.1.1 ")]);
        assert_eq!(
            r.forwarded_for(ip(CF_V4), &h),
            "1.2.3.4,  162.158.1.1, 173.245.48.5"
        );
        // Several lines joined in order; stray commas and empty lines dropped.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4,"),
            ("x-forwarded-for", ""),
            ("x-forwarded-for", "garbage, 5.6.7.8"),
        ]);
        assert_eq!(
            r.forwarded_for(ip(CF_V6), &h),
            "1.2.3.4, garbage, 5.6.7.8, 2606:4700::1"
        );
        // No incoming chain.
        assert_eq!(r.forwarded_for(ip(CF_V4), &HeaderMap::new()), CF_V4);
        // Untrusted peer: its claims are dropped.
        let h = headers(&[("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(r.forwarded_for(ip("2001:db8::1"), &h), "2001:db8::1");
        // Mapped trusted peer written as IPv4.
        assert_eq!(
            r.forwarded_for(ip("::ffff:173.245.48.5"), &h),
            "10.0.0.1, 173.245.48.5"
        );
    }
}
