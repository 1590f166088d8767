//! Client-IP resolution from the TCP peer and the forwarding headers, and the
//! `X-Forwarded-For` value sent upstream; both run on every request.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{bench, criterion, CACHE_HIT};
use http::{HeaderMap, HeaderValue};
use proxy_core::X_FORWARDED_FOR;
use proxy_core::{ClientIpResolver, CF_CONNECTING_IP};
use std::net::IpAddr;

fn client_ip(c: &mut Criterion) {
    let resolver = ClientIpResolver::cloudflare();
    let cf_peer: IpAddr = "172.70.1.2".parse().unwrap();
    let direct_peer: IpAddr = "198.51.100.7".parse().unwrap();
    let mut cf = HeaderMap::new();
    cf.insert(CF_CONNECTING_IP, HeaderValue::from_static("198.51.100.7"));
    cf.insert(
        X_FORWARDED_FOR,
        HeaderValue::from_static("198.51.100.7, 172.70.1.2"),
    );
    let mut xff = HeaderMap::new();
    xff.insert(
        X_FORWARDED_FOR,
        HeaderValue::from_static("198.51.100.7, 162.158.1.1, 104.16.0.5"),
    );
    let client: IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(resolver.resolve(cf_peer, &cf), client);
    assert_eq!(resolver.resolve(cf_peer, &xff), client);
    assert_eq!(resolver.resolve(direct_peer, &cf), client);

    bench(c, "client_ip/resolve_untrusted_peer", CACHE_HIT, || {
        resolver.resolve(black_box(direct_peer), black_box(&cf))
    });
    bench(c, "client_ip/resolve_cf_connecting_ip", CACHE_HIT, || {
        resolver.resolve(black_box(cf_peer), black_box(&cf))
    });
    bench(c, "client_ip/resolve_xff_3_hops", CACHE_HIT, || {
        resolver.resolve(black_box(cf_peer), black_box(&xff))
    });
    bench(c, "client_ip/forwarded_for_value", CACHE_HIT, || {
        resolver.forwarded_for(black_box(cf_peer), black_box(&xff))
    });
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = client_ip
}
criterion_main!(benches);
