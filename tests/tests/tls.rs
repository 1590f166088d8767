//! TLS: the certificate is chosen by SNI, h2 is negotiated, and a certificate replaced on disk
//! is served by new handshakes without a restart (a broken replacement is refused).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;

struct Handshake {
    leaf: Vec<u8>,
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

/// One TLS handshake with `sni`, trusting `roots`; returns what the server presented.
async fn handshake(
    addr: std::net::SocketAddr,
    sni: &str,
    roots: &[&TestCert],
) -> Result<Handshake, String> {
    proxy_core::install_crypto_provider();
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store
            .add(rustls_pki_types::CertificateDer::from(r.der.clone()))
            .unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    Ok(Handshake {
        leaf: conn.peer_certificates().unwrap()[0].to_vec(),
        alpn: conn.alpn_protocol().map(|p| p.to_vec()),
        version: conn.protocol_version(),
    })
}

fn config(
    origin: &Origin,
    app: (&std::path::Path, &std::path::Path),
    studio: (&std::path::Path, &std::path::Path),
) -> String {
    base_config(
        true,
        &format!(
            r#"
[upstreams.web]
backends = ["{}"]

[[sites]]
hosts = ["galion.app", "www.galion.app"]
tls = {{ cert = {:?}, key = {:?} }}
routes = [ {{ path = "/", upstream = "web" }} ]

[[sites]]
hosts = ["galion.studio", "www.galion.studio"]
tls = {{ cert = {:?}, key = {:?} }}
routes = [ {{ path = "/", upstream = "web" }} ]
"#,
            origin.addr, app.0, app.1, studio.0, studio.1
        ),
    )
}

/// The proxy serving both sites over TLS, each with its own certificate, in front of one
/// origin. Fields drop in order: the proxy stops before its directory goes.
struct TwoSites {
    proxy: Proxy,
    app: TestCert,
    studio: TestCert,
    _origin: Origin,
    _dir: tempfile::TempDir,
}

async fn two_sites() -> TwoSites {
    let origin = origin("web").await;
    let dir = tempfile::tempdir().unwrap();
    let app = gen_cert(&["galion.app", "www.galion.app"]);
    let studio = gen_cert(&["galion.studio", "www.galion.studio"]);
    let (ac, ak) = app.write(dir.path(), "app");
    let (sc, sk) = studio.write(dir.path(), "studio");
    let proxy = Proxy::start(bin!(), dir.path(), &config(&origin, (&ac, &ak), (&sc, &sk)));
    TwoSites {
        proxy,
        app,
        studio,
        _origin: origin,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_site_certificate_and_h2_is_negotiated() {
    let TwoSites {
        proxy, app, studio, ..
    } = two_sites().await;
    let roots = [&app, &studio];
    for (sni, want) in [
        ("galion.app", &app),
        ("www.galion.app", &app),
        ("galion.studio", &studio),
        ("WWW.GALION.STUDIO", &studio),
    ] {
        let h = handshake(proxy.https_addr(), sni, &roots).await.unwrap();
        assert!(h.leaf == want.der, "{sni} got the wrong certificate");
        assert_eq!(h.alpn.as_deref(), Some(&b"h2"[..]), "{sni}: ALPN h2");
        assert!(
            matches!(
                h.version,
                Some(rustls::ProtocolVersion::TLSv1_3) | Some(rustls::ProtocolVersion::TLSv1_2)
            ),
            "{sni}: {:?}",
            h.version
        );
    }
    // And a full request over h2 to each site.
    let c = tls_client(&roots, &["galion.app", "galion.studio"], proxy.https_addr());
    for host in ["galion.app", "galion.studio"] {
        let r = c
            .get(format!("https://{host}:{}/", proxy.ports.https))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
}

/// The suite a handshake settles on when the client lists `suites` in that order.
async fn negotiated_suite(
    addr: std::net::SocketAddr,
    cert: &TestCert,
    suites: Vec<rustls::SupportedCipherSuite>,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::CipherSuite {
    let mut provider = proxy_core::crypto_provider();
    provider.cipher_suites = suites;
    let mut store = rustls::RootCertStore::empty();
    store
        .add(rustls_pki_types::CertificateDer::from(cert.der.clone()))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("galion.app".to_string()).unwrap();
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
}

/// The server's cipher-suite order wins (nginx's `ssl_prefer_server_ciphers on`): a client that
/// lists ChaCha20 first still gets AES-GCM, the server's first choice among what it offers, on
/// TLS 1.3 and TLS 1.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_cipher_order_wins() {
    use rustls::crypto::ring::cipher_suite as cs;
    let TwoSites { proxy, app, .. } = two_sites().await;
    let got = negotiated_suite(
        proxy.https_addr(),
        &app,
        vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
        ],
        &rustls::version::TLS13,
    )
    .await;
    assert_eq!(got, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let got = negotiated_suite(
        proxy.https_addr(),
        &app,
        vec![
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ],
        &rustls::version::TLS12,
    )
    .await;
    assert_eq!(
        got,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_restart() {
    let o = origin("web").await;
    let dir = tempfile::tempdir().unwrap();
    let app = gen_cert(&["galion.app", "www.galion.app"]);
    let studio = gen_cert(&["galion.studio", "www.galion.studio"]);
    let (ac, ak) = app.write(dir.path(), "app");
    let (sc, sk) = studio.write(dir.path(), "studio");
    let proxy = Proxy::start(bin!(), dir.path(), &config(&o, (&ac, &ak), (&sc, &sk)));
    let renewed = gen_cert(&["galion.app", "www.galion.app"]);
    let roots = [&app, &studio, &renewed];

    // A connection opened before the renewal keeps working after it.
    let c = tls_client(&[&app, &renewed], &["galion.app"], proxy.https_addr());
    let url = format!("https://galion.app:{}/", proxy.ports.https);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);

    // certbot replaces the files in place.
    renewed.write(dir.path(), "app");
    let swapped = eventually(Duration::from_secs(10), || async {
        handshake(proxy.https_addr(), "galion.app", &roots)
            .await
            .is_ok_and(|h| h.leaf == renewed.der)
    })
    .await;
    assert!(
        swapped,
        "the renewed certificate was not served: {}",
        proxy.stderr()
    );
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        200,
        "the old connection still serves"
    );
    // The other site's certificate is untouched.
    let h = handshake(proxy.https_addr(), "galion.studio", &roots)
        .await
        .unwrap();
    assert!(h.leaf == studio.der);

    // A broken replacement (key of another certificate) is refused; the last good one stays.
    let other = gen_cert(&["galion.app"]);
    std::fs::write(&ak, &other.key_pem).unwrap();
    let logged = eventually(Duration::from_secs(10), || async {
        proxy.stderr().contains("keeping the old certificate")
    })
    .await;
    assert!(logged, "{}", proxy.stderr());
    let h = handshake(proxy.https_addr(), "galion.app", &roots)
        .await
        .unwrap();
    assert!(h.leaf == renewed.der, "still the last good certificate");
}

/// Over HTTP/2, the response headers that repeat (the security headers, `server`, `vary`, the
/// content type) stay in the connection's HPACK table, so after the first response each header
/// block is a few index bytes plus what changes. The request id, new on every response, is
/// sent as a never-indexed literal: were it added to the 4 KiB table, each one would push the
/// repeating headers out in turn, and every 50 or so responses would carry them in full again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_response_headers_stay_indexed_across_many_responses() {
    use galion_edge_tests::h2raw::*;
    use tokio::io::AsyncWriteExt;

    let sites = two_sites().await;
    let tls = tls_h2(sites.proxy.https_addr(), &sites.app).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    wr.write_all(&start).await.unwrap();
    // The header block length of each response, in order.
    let mut blocks = Vec::new();
    for i in 0..150u32 {
        let stream = 1 + 2 * i;
        wr.write_all(&get_headers(stream, "galion.app", "/app.js"))
            .await
            .unwrap();
        loop {
            let (kind, flags, id, payload) = next_frame(&mut rd, &mut wr).await;
            if id != stream {
                continue;
            }
            if kind == HEADERS {
                assert!(
                    flags & 0x4 != 0,
                    "one HEADERS frame per response (END_HEADERS)"
                );
                blocks.push(payload.len());
            }
            if (kind == DATA || kind == HEADERS) && flags & END_STREAM != 0 {
                break;
            }
        }
    }
    assert_eq!(blocks.len(), 150);
    assert!(
        blocks[0] > 300,
        "the first response carries the headers in full: {blocks:?}"
    );
    let worst = blocks[1..].iter().max().unwrap();
    assert!(
        *worst < 100,
        "no later response carries the repeating headers again (largest block {worst} bytes): {blocks:?}"
    );
}
