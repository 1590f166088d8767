//! gzip and brotli through the real proxy: the negotiation table, what is left alone, the
//! compressed variant stored in the cache (no recompression on hits), and decompression for
//! clients that did not ask for the origin's encoding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::io::Read;

fn config(o: &Origin) -> String {
    base_config(
        false,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[compression]
gzip_level = 5
brotli_quality = 4
min_size = "256"

[cache.zones.api]
path = "{{dir}}/cache/api"
size = "16MB"

[upstreams.app]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/cached/", upstream = "app", cache = "api" }},
  {{ path = "/", upstream = "app" }},
]
"#,
            o.addr
        ),
    )
}

struct Got {
    status: u16,
    encoding: Option<String>,
    headers: reqwest::header::HeaderMap,
    raw: Vec<u8>,
}

async fn fetch(proxy: &Proxy, path: &str, ae: Option<&str>, extra: &[(&str, &str)]) -> Got {
    // reqwest's own decompression is off (no gzip/brotli features): we see the raw bytes.
    let mut rb = client()
        .get(format!("http://{}{path}", proxy.plain_addr()))
        .header("host", "galion.app");
    if let Some(ae) = ae {
        rb = rb.header("accept-encoding", ae);
    }
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    Got {
        status: r.status().as_u16(),
        encoding: r
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string()),
        headers: r.headers().clone(),
        raw: r.bytes().await.unwrap().to_vec(),
    }
}

fn decode(encoding: Option<&str>, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        None => out.extend_from_slice(raw),
        Some("gzip") => {
            flate2::read::GzDecoder::new(raw)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(raw, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some(other) => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_table() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&o));
    let original = galion_edge_tools::origin::sample_text(100 * 1024);
    for (ae, want) in [
        (Some("br"), Some("br")),
        (Some("gzip"), Some("gzip")),
        (Some("gzip, deflate, br"), Some("br")),
        (Some("gzip, br"), Some("br")),
        (Some("br;q=1.0, gzip;q=1.0"), Some("br")),
        (Some("br;q=0.5, gzip;q=0.8"), Some("gzip")),
        (Some("br;q=0, gzip"), Some("gzip")),
        (Some("gzip;q=0, br;q=0"), None),
        (Some("*"), Some("br")),
        (Some("gzip;q=0, *"), Some("br")),
        (Some("*;q=0"), None),
        (Some("identity"), None),
        (Some("x-gzip"), Some("gzip")),
        (Some(";;q=foo,,"), None),
        (None, None),
    ] {
        let g = fetch(&proxy, "/js/app/text?n=102400", ae, &[]).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.encoding.as_deref(), want, "Accept-Encoding {ae:?}");
        assert_eq!(
            decode(want, &g.raw),
            original,
            "{ae:?}: the body round-trips"
        );
        if want.is_some() {
            assert!(
                g.raw.len() < original.len() / 3,
                "{ae:?}: compressed to {}",
                g.raw.len()
            );
            assert!(g
                .headers
                .get("content-length")
                .is_none_or(|v| v.to_str().unwrap() == g.raw.len().to_string()));
        }
        let vary = g.headers["vary"].to_str().unwrap().to_ascii_lowercase();
        assert!(vary.contains("accept-encoding"), "{ae:?}: Vary {vary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_left_alone() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&o));
    let br = Some("br, gzip");
    // Below min_size.
    assert_eq!(
        fetch(&proxy, "/small/text?n=100", br, &[]).await.encoding,
        None
    );
    // Not a compressible type.
    assert_eq!(
        fetch(&proxy, "/blob/bytes?n=10000", br, &[]).await.encoding,
        None
    );
    // A Range request.
    let g = fetch(&proxy, "/js/text?n=10000", br, &[("range", "bytes=0-99")]).await;
    assert_eq!(g.encoding, None);
    // 204 has no body to compress.
    let g = fetch(&proxy, "/nothing/status?code=204", br, &[]).await;
    assert_eq!((g.status, g.encoding), (204, None));
    // A strong ETag is weakened when the body is transformed.
    let g = fetch(&proxy, "/js/text?n=10000", br, &[]).await;
    assert_eq!(g.encoding.as_deref(), Some("br"));
    assert_eq!(g.headers["etag"], "W/\"text-v1\"");
    // Already gzip from the origin, client accepts gzip: passed through as is.
    let g = fetch(&proxy, "/js/text?n=10000&gz=1", Some("gzip"), &[]).await;
    assert_eq!(g.encoding.as_deref(), Some("gzip"));
    assert_eq!(
        decode(Some("gzip"), &g.raw),
        galion_edge_tools::origin::sample_text(10000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_from_the_origin_is_decompressed_for_clients_without_it() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&o));
    let original = galion_edge_tools::origin::sample_text(50_000);
    for ae in [None, Some("identity"), Some("gzip;q=0")] {
        let g = fetch(&proxy, "/js/text?n=50000&gz=1", ae, &[]).await;
        assert_eq!(g.status, 200);
        assert_eq!(
            g.encoding, None,
            "{ae:?}: never gzip to a client that did not ask"
        );
        assert_eq!(g.raw, original, "{ae:?}");
    }
    // A client that accepts only br never gets the origin's gzip either.
    let g = fetch(&proxy, "/js/text?n=50000&gz=1", Some("br"), &[]).await;
    assert_ne!(g.encoding.as_deref(), Some("gzip"));
    assert_eq!(decode(g.encoding.as_deref(), &g.raw), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stores_the_compressed_variant_and_hits_do_not_recompress() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&o));
    let original = galion_edge_tools::origin::sample_text(100 * 1024);
    let first = fetch(
        &proxy,
        "/cached/text?n=102400",
        Some("gzip, deflate, br"),
        &[],
    )
    .await;
    assert_eq!(first.encoding.as_deref(), Some("br"));
    assert_eq!(first.headers["x-cache-status"], "MISS");
    let before = cache_stats(&proxy).await;
    let compressed_before = before["compression"]["compressed"].as_u64().unwrap();
    for _ in 0..10 {
        let hit = fetch(&proxy, "/cached/text?n=102400", Some("br"), &[]).await;
        assert_eq!(hit.headers["x-cache-status"], "HIT");
        assert_eq!(hit.encoding.as_deref(), Some("br"));
        assert_eq!(hit.raw, first.raw, "the stored compressed bytes");
    }
    let after = cache_stats(&proxy).await;
    assert_eq!(
        after["compression"]["compressed"].as_u64().unwrap(),
        compressed_before,
        "no compression work on hits"
    );
    // A gzip client is another variant: one more fill, compressed once, then hits.
    let gz = fetch(&proxy, "/cached/text?n=102400", Some("gzip"), &[]).await;
    assert_eq!(
        (
            gz.encoding.as_deref(),
            gz.headers["x-cache-status"].to_str().unwrap()
        ),
        (Some("gzip"), "MISS")
    );
    let gz2 = fetch(&proxy, "/cached/text?n=102400", Some("gzip"), &[]).await;
    assert_eq!(gz2.headers["x-cache-status"], "HIT");
    assert_eq!(decode(Some("gzip"), &gz2.raw), original);
    // An identity client never gets a compressed variant.
    let id = fetch(&proxy, "/cached/text?n=102400", None, &[]).await;
    assert_eq!(id.encoding, None);
    assert_eq!(id.raw, original);
    assert_eq!(
        o.requests()
            .iter()
            .filter(|r| r.uri.starts_with("/cached/"))
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_gzip_body_is_never_stored_where_a_client_cannot_read_it() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&o));
    let original = galion_edge_tools::origin::sample_text(20_000);
    // A br client first: the origin's gzip is decoded before it is stored under the br variant.
    let first = fetch(&proxy, "/cached/text?n=20000&gz=1", Some("br"), &[]).await;
    assert_ne!(first.encoding.as_deref(), Some("gzip"));
    assert_eq!(decode(first.encoding.as_deref(), &first.raw), original);
    // Another br-only client shares the variant: a hit it can read.
    let hit = fetch(&proxy, "/cached/text?n=20000&gz=1", Some("br"), &[]).await;
    assert_eq!(hit.headers["x-cache-status"], "HIT");
    assert_ne!(hit.encoding.as_deref(), Some("gzip"));
    assert_eq!(decode(hit.encoding.as_deref(), &hit.raw), original);
    // A gzip client gets the origin's gzip (its own variant), an identity client plain text.
    let gz = fetch(&proxy, "/cached/text?n=20000&gz=1", Some("gzip"), &[]).await;
    assert_eq!(gz.encoding.as_deref(), Some("gzip"));
    let id = fetch(&proxy, "/cached/text?n=20000&gz=1", None, &[]).await;
    assert_eq!(id.encoding, None);
    assert_eq!(id.raw, original);
    // A gzip body marked no-transform is not decoded, so it is not stored for br clients.
    let nt = "/cached/nt/text?n=20000&gz=1&cc=no-transform%2C%20max-age%3D60";
    fetch(&proxy, nt, Some("br"), &[]).await;
    let again = fetch(&proxy, nt, Some("br"), &[]).await;
    assert_ne!(
        again.headers["x-cache-status"], "HIT",
        "not stored under the br variant"
    );
}
