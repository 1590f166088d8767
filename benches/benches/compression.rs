//! Compression of a response on a cache miss, and `Accept-Encoding` negotiation on every request.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md): a body is compressed once,
//! when its variant is stored, and hits pay nothing but the negotiation for the variant key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use galion_edge_benches::{report_margin, CACHE_HIT_TARGET};
use proxy_core::compression::{negotiate, BodyCoder, CompressionPolicy, Encoding, Plan};
use std::time::Instant;

/// A deterministic xorshift generator, so every run compresses the same bytes.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.next() as usize % words.len()]
    }
}

const VERBS: &[&str] = &[
    "get", "set", "load", "render", "update", "parse", "format", "fetch", "handle", "create",
    "resolve", "validate", "build", "merge", "select",
];
const NOUNS: &[&str] = &[
    "User", "Session", "Route", "Cache", "Config", "Item", "List", "Token", "Request", "Response",
    "Header", "Profile", "Order", "Cart", "Image", "Layout",
];
const FIELDS: &[&str] = &[
    "id", "name", "value", "items", "status", "options", "data", "path", "count", "children",
    "props", "state",
];

/// Bundler-like JavaScript: functions with varying identifiers, numbers and strings.
fn javascript(len: usize) -> Vec<u8> {
    let mut rng = Rng(0x2545_f491);
    let mut out = String::with_capacity(len + 512);
    out.push_str("\"use strict\";\n(function (global) {\n");
    let mut i = 0;
    while out.len() < len {
        let (verb, noun) = (rng.pick(VERBS), rng.pick(NOUNS));
        let (a, b) = (rng.pick(FIELDS), rng.pick(FIELDS));
        let n = rng.next() % 1000;
        out.push_str(&format!(
            "  function {verb}{noun}{i}({a}, {b}) {{\n\
             \x20   if (!{a} || {a}.{b} === undefined) {{\n\
             \x20     throw new Error(\"{verb}{noun}: missing {b} ({n})\");\n\
             \x20   }}\n\
             \x20   const result = Object.assign({{}}, {a}, {{ {b}: {b}.{a} + {n} }});\n\
             \x20   return global.__modules[{i}] ? global.__modules[{i}].{verb}(result) : result;\n\
             \x20 }}\n"
        ));
        i += 1;
    }
    out.push_str("})(typeof window !== \"undefined\" ? window : this);\n");
    out.into_bytes()
}

/// An API response of about 1 KB.
fn json() -> Vec<u8> {
    let mut rng = Rng(0x1234_5678);
    let users: Vec<String> = (0..11)
        .map(|i| {
            format!(
                r#"{{"id":{},"name":"{}{}","email":"user{i}@galion.app","active":{},"score":{}}}"#,
                1000 + i,
                rng.pick(NOUNS),
                rng.pick(VERBS),
                rng.next() & 1 == 0,
                rng.next() % 10_000
            )
        })
        .collect();
    format!(
        r#"{{"page":1,"per_page":11,"total":11,"users":[{}]}}"#,
        users.join(",")
    )
    .into_bytes()
}

fn compress(plan: &Plan, policy: &CompressionPolicy, body: &[u8]) -> usize {
    let mut coder = BodyCoder::new(plan, policy).unwrap();
    coder.push(body).unwrap().len() + coder.finish().unwrap().len()
}

fn bench(c: &mut Criterion) {
    let policy = CompressionPolicy::new(5, 5, 256, CompressionPolicy::default_types());
    let bodies = [("js_100k", javascript(100 * 1024)), ("json_1k", json())];
    let plans = [
        ("gzip5", Plan::Compress(Encoding::Gzip)),
        ("br5", Plan::Compress(Encoding::Brotli)),
    ];

    for (name, body) in &bodies {
        for (label, plan) in &plans {
            println!(
                "compressed size: {name} ({} bytes) with {label}: {} bytes",
                body.len(),
                compress(plan, &policy, body)
            );
        }
    }

    let mut group = c.benchmark_group("compression");
    for (name, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (label, plan) in &plans {
            group.bench_function(format!("{label}/{name}"), |b| {
                b.iter(|| compress(plan, &policy, black_box(body)))
            });
        }
    }
    group.finish();

    let chrome: &[u8] = b"gzip, deflate, br, zstd";
    c.bench_function("negotiate/chrome", |b| {
        b.iter(|| negotiate(black_box(Some(chrome))))
    });

    let n = 200_000u32;
    let start = Instant::now();
    for _ in 0..n {
        black_box(negotiate(black_box(Some(chrome))));
    }
    report_margin(
        "negotiate (every request)",
        start.elapsed() / n,
        CACHE_HIT_TARGET,
    );
    let n = 50u32;
    let (_, js) = &bodies[0];
    let start = Instant::now();
    for _ in 0..n {
        black_box(compress(&plans[1].1, &policy, js));
    }
    report_margin(
        "br5 of 100 KB (once per stored variant, not on hits)",
        start.elapsed() / n,
        CACHE_HIT_TARGET,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
