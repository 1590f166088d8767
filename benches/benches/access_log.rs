//! One access-log line, in each format, as the proxy writes it for every request (the line is
//! built on the request's thread; a writer thread does the I/O).
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{bench, criterion, CACHE_HIT};
use proxy_core::config::AccessLogFormat;
use proxy_core::{write_access_line, AccessRecord};
use std::time::{Duration, SystemTime};

fn access_log_bench(c: &mut Criterion) {
    let record = AccessRecord {
        client_ip: Some("203.0.113.7".parse().unwrap()),
        host: "galion.app",
        method: "GET",
        uri: "/api/v1/users?page=2&per_page=20",
        protocol: "HTTP/2.0",
        status: 200,
        bytes_sent: 1043,
        referer: "https://galion.app/dashboard",
        user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        duration: Duration::from_micros(1_234),
        upstream: Some("127.0.0.1:8001".parse().unwrap()),
        upstream_time: Some(Duration::from_micros(987)),
        request_id: "5b1be2f43f0d98be3763773dd67c4a39",
        site: "galion.app",
        cache: "MISS",
        cache_reason: "-",
    };
    let now = SystemTime::now();
    let mut line = String::with_capacity(512);
    for (id, format) in [
        ("access_log/combined_line", AccessLogFormat::Combined),
        ("access_log/json_line", AccessLogFormat::Json),
    ] {
        bench(c, id, CACHE_HIT, || {
            line.clear();
            write_access_line(&mut line, format, black_box(&record), black_box(now));
            line.len()
        });
    }
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = access_log_bench
}
criterion_main!(benches);
