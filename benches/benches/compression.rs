//! Compression of a response on a cache miss, and `Accept-Encoding` negotiation on every request.
//! Protects: the 50-150 ms average API call (ARCHITECTURE.md) for compression, which runs once
//! per stored variant on the miss that fetches it, and the 5-20 ms server cache hit for the
//! negotiation, which runs on every request (hits serve the stored variant as it is).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use galion_edge_benches::{criterion, production_config, Margin, API_CALL, CACHE_HIT};
use proxy_core::{negotiate_encoding, BodyCoder, CompressionPlan, CompressionPolicy, Encoding};

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

fn compress(plan: &CompressionPlan, policy: &CompressionPolicy, body: &[u8]) -> usize {
    let mut coder = BodyCoder::new(plan, policy).unwrap();
    coder.push(body).unwrap().len() + coder.finish().unwrap().len()
}

fn compression(c: &mut Criterion) {
    // The configured levels (configs/galion.toml [compression]).
    let config = production_config();
    let cc = &config.compression;
    let policy = CompressionPolicy::new(
        cc.gzip_level,
        cc.brotli_quality,
        cc.min_size as usize,
        CompressionPolicy::default_types(),
    );
    let bodies = [("js_100k", javascript(100 * 1024)), ("json_1k", json())];
    let plans = [
        (
            format!("gzip{}", cc.gzip_level),
            CompressionPlan::Compress(Encoding::Gzip),
        ),
        (
            format!("br{}", cc.brotli_quality),
            CompressionPlan::Compress(Encoding::Brotli),
        ),
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

    // A body is compressed once, on the miss that stores its variant: the miss is an API call
    // (or a static fetch) going to the origin anyway, so its target is the API call's.
    let mut group = c.benchmark_group("compression");
    let mut margins = Vec::new();
    for (name, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (label, plan) in &plans {
            let m = Margin::new();
            group.bench_function(format!("{label}/{name}"), |b| {
                m.iter(b, || compress(plan, &policy, black_box(body)))
            });
            margins.push((
                format!("compression/{label}/{name} (once per stored variant)"),
                m,
            ));
        }
    }
    group.finish();
    for (what, m) in &margins {
        m.report(what, API_CALL);
    }

    // Negotiation runs on every request, hits included.
    let chrome: &[u8] = b"gzip, deflate, br, zstd";
    let m = Margin::new();
    c.bench_function("negotiate/chrome", |b| {
        m.iter(b, || negotiate_encoding(black_box(Some(chrome))))
    });
    m.report("negotiate/chrome (every request)", CACHE_HIT);
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = compression
}
criterion_main!(benches);
