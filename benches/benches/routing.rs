//! Route decision: host (any case, with port) to site, longest prefix to route.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md); routing is a fixed cost of
//! every request, hit or miss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{bench, criterion, production_config, CACHE_HIT};

const REQUESTS: [(&str, &str); 6] = [
    ("galion.app", "/api/v1/users/42?expand=profile"),
    ("galion.app", "/static/js/main.3f2a9c.js"),
    ("www.galion.app", "/voice/tts"),
    ("galion.studio", "/socket.io/?EIO=4&transport=websocket"),
    ("Galion.Studio:443", "/api/projects"),
    ("unknown.example", "/"),
];

fn routing(c: &mut Criterion) {
    let config = production_config();
    let table = config.route_table().expect("routes");
    bench(c, "route_decision/api_lowercase_host", CACHE_HIT, || {
        table.decide(black_box("galion.app"), black_box("/api/v1/users"))
    });
    bench(c, "route_decision/mixed_6_requests", CACHE_HIT, || {
        for (host, path) in REQUESTS {
            let _ = black_box(table.decide(black_box(host), black_box(path)));
        }
    });
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = routing
}
criterion_main!(benches);
