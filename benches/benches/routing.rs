//! Route decision: host (any case, with port) to site, longest prefix to route.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md); routing is a fixed cost of
//! every request, hit or miss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{production_config, report_margin, CACHE_HIT_TARGET};
use proxy_core::RouteTable;
use std::time::Instant;

const REQUESTS: [(&str, &str); 6] = [
    ("galion.app", "/api/v1/users/42?expand=profile"),
    ("galion.app", "/static/js/main.3f2a9c.js"),
    ("www.galion.app", "/voice/tts"),
    ("galion.studio", "/socket.io/?EIO=4&transport=websocket"),
    ("Galion.Studio:443", "/api/projects"),
    ("unknown.example", "/"),
];

fn bench(c: &mut Criterion) {
    let config = production_config();
    let table = RouteTable::new(&config);
    c.bench_function("route_decision/mixed", |b| {
        b.iter(|| {
            for (host, path) in REQUESTS {
                let _ = black_box(table.decide(black_box(host), black_box(path)));
            }
        })
    });
    c.bench_function("route_decision/lowercase_host", |b| {
        b.iter(|| black_box(table.decide(black_box("galion.app"), black_box("/api/v1/users"))))
    });

    let n = 200_000u32;
    let start = Instant::now();
    for _ in 0..n {
        let _ = black_box(table.decide(black_box("galion.app"), black_box("/api/v1/users")));
    }
    report_margin("route decision", start.elapsed() / n, CACHE_HIT_TARGET);
}

criterion_group!(benches, bench);
criterion_main!(benches);
