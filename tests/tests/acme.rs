//! Certificates by ACME, against a real ACME server on loopback (Pebble, tests/src/pebble.rs):
//! first issuance with the CA down at start, HTTP-01 on the port-80 listener and TLS-ALPN-01 on
//! the https listener validated by Pebble for real, renewal without a restart, a restart that
//! serves the saved certificate while the CA is down, and a CA that refuses a name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::pebble::{Pebble, PebbleOptions};
use galion_edge_tests::*;
use rustls_pki_types::ServerName;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_rustls::TlsConnector;

/// One handshake with `sni` offering `alpn`, accepting any certificate: the leaf the proxy
/// presented, or the handshake's error (the proxy refused).
async fn presented(addr: std::net::SocketAddr, sni: &str, alpn: &[u8]) -> Result<Vec<u8>, String> {
    let mut cfg = (*galion_edge_tools::loadtest::client::tls_config(false).unwrap()).clone();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

fn info(der: &[u8]) -> proxy_core::CertInfo {
    proxy_core::CertInfo::from_der(&der.to_vec().into()).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// What every test here starts from: a directory, an origin, and the certificate files of
/// the site that does not use ACME (`files.test`).
struct Setup {
    dir: tempfile::TempDir,
    origin: Origin,
    files: TestCert,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let files = gen_cert(&["files.test"]);
    let (cert, key) = files.write(dir.path(), "files");
    Setup {
        origin: origin("web").await,
        dir,
        files,
        cert,
        key,
    }
}

/// A config with a site on certificate files (`files.test`) and one on ACME
/// (`galion.test`, `www.galion.test`), both in front of `origin`.
fn config(pebble: &Pebble, origin: &Origin, files: (&Path, &Path), challenge: &str) -> String {
    base_config(
        true,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[acme]
directory = "{directory}"
ca_root = {root:?}
email = "ops@galion.test"
state_dir = "{{dir}}/acme"
challenge = "{challenge}"
first_retry = "1s"

[upstreams.web]
backends = ["{origin}"]

[[sites]]
name = "files"
hosts = ["files.test"]
tls = {{ cert = {fc:?}, key = {fk:?} }}
routes = [ {{ path = "/", upstream = "web" }} ]

[[sites]]
name = "acme"
hosts = ["galion.test", "www.galion.test"]
tls = {{ acme = true }}
routes = [ {{ path = "/", upstream = "web" }} ]
"#,
            directory = pebble.directory(),
            root = pebble.ca_root(),
            origin = origin.addr,
            fc = files.0,
            fk = files.1,
        ),
    )
}

/// Waits up to `limit` for `sni` to be served a certificate other than `not`; returns it.
async fn served_other_than(
    proxy: &Proxy,
    sni: &str,
    not: Option<&[u8]>,
    limit: Duration,
) -> Option<Vec<u8>> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(leaf) = presented(proxy.https_addr(), sni, b"http/1.1").await {
            if Some(leaf.as_slice()) != not {
                return Some(leaf);
            }
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_without_restart_renews_and_restarts_on_the_saved_certificate() {
    let Setup {
        dir,
        origin,
        files,
        cert: fc,
        key: fk,
    } = setup().await;
    let mut pebble = Pebble::prepare(
        &dir.path().join("pebble"),
        PebbleOptions {
            validity_secs: 45,
            ..Default::default()
        },
    );
    let mut proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&pebble, &origin, (&fc, &fk), "http-01"),
    );

    // The CA is down: the proxy runs, port 80 answers, the ACME names are refused at the
    // handshake (never given the other site's certificate), the other site is served.
    assert_eq!(
        presented(proxy.https_addr(), "files.test", b"http/1.1")
            .await
            .unwrap(),
        files.der
    );
    let refused = presented(proxy.https_addr(), "galion.test", b"http/1.1").await;
    assert!(refused.is_err(), "served before issuance: {refused:?}");
    let r = client()
        .get(format!("http://127.0.0.1:{}/x", proxy.ports.http))
        .header("Host", "galion.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert!(
        eventually(Duration::from_secs(10), || async {
            orders(&proxy, "failed").await >= 1
        })
        .await,
        "the failed order is counted"
    );
    // No expiry series for a site without a certificate; one for the file.
    let m = metrics_text(&proxy).await;
    assert!(m.contains(
        "galion_edge_tls_certificate_expiry_timestamp_seconds{site=\"files\",source=\"file\"}"
    ));
    assert!(!m.contains("galion_edge_tls_certificate_expiry_timestamp_seconds{site=\"acme\""));

    // The CA comes up: Pebble validates HTTP-01 on the proxy's port-80 listener, and the new
    // certificate is served without a restart.
    pebble.start(proxy.ports.http, proxy.ports.https);
    let first = served_other_than(&proxy, "galion.test", None, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no certificate issued: {}\n{}",
                proxy.stderr(),
                pebble.log()
            )
        });
    let first_info = info(&first);
    assert!(
        first_info.covers(&["galion.test".into(), "www.galion.test".into()]),
        "{first_info:?}"
    );
    assert!(first_info.issuer.contains("Pebble"), "{first_info:?}");
    assert_eq!(
        presented(proxy.https_addr(), "www.galion.test", b"h2")
            .await
            .unwrap(),
        first
    );
    // A client that trusts only Pebble's root completes a verified request to the origin.
    let root = pebble.issuer_root_pem().await;
    let verified = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
        .resolve("galion.test", proxy.https_addr())
        .build()
        .unwrap();
    let r = verified
        .get(format!("https://galion.test:{}/hello", proxy.ports.https))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The expiry gauge is the certificate's.
    let expiry = metric(
        &proxy,
        "galion_edge_tls_certificate_expiry_timestamp_seconds",
        &["site=\"acme\"", "source=\"acme\""],
    )
    .await;
    let not_after = first_info
        .not_after
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(expiry, not_after);
    // `galion-edge certs` lists both: the file and the ACME certificate with its issuer,
    // expiry and next renewal.
    let out = std::process::Command::new(bin!())
        .args(["certs", "-c"])
        .arg(&proxy.config_path)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("files (file "), "{listed}");
    assert!(listed.contains("acme (acme)"), "{listed}");
    let names = listed
        .lines()
        .filter(|l| l.starts_with("  names:"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        names.contains(" galion.test") && names.contains("www.galion.test"),
        "{listed}"
    );
    assert!(listed.contains("Pebble"), "{listed}");
    assert!(
        listed.contains(&httpdate::fmt_http_date(proxy_core::acme_renewal_time(
            &first_info
        ))),
        "{listed}"
    );
    // Kept on disk, private, never logged.
    let state = dir.path().join("acme");
    let chain = state.join("certs/acme/fullchain.pem");
    let key = state.join("certs/acme/privkey.pem");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&chain), 0o600);
    assert_eq!(mode(&key), 0o600);
    let account = std::fs::read_dir(state.join("accounts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(mode(&account.path()), 0o600);
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(!proxy.stderr().contains(key_body) && !proxy.stdout().contains(key_body));
    assert!(!proxy.stderr().contains("PRIVATE KEY"));

    // Renewal at two thirds of the 45 s lifetime (30 s, less up to 1.5 s of jitter), served
    // without a restart.
    let renewed = served_other_than(&proxy, "galion.test", Some(&first), Duration::from_secs(45))
        .await
        .unwrap_or_else(|| panic!("not renewed: {}", proxy.stderr()));
    let renewed_info = info(&renewed);
    assert!(renewed_info.not_after > first_info.not_after);
    let renewed_at = SystemTime::now();
    let lifetime = first_info
        .not_after
        .duration_since(first_info.not_before)
        .unwrap();
    let two_thirds = first_info.not_before + lifetime * 2 / 3;
    assert!(
        renewed_at + Duration::from_secs(3) >= two_thirds,
        "renewed too early: {renewed_at:?} against {two_thirds:?}"
    );
    assert!(orders(&proxy, "issued").await >= 2);

    // The CA goes down and the proxy restarts: the saved certificate is served at once; the
    // renewal that comes due fails, is counted, and the certificate keeps serving.
    pebble.stop();
    proxy.terminate();
    proxy.restart(bin!());
    let after_restart = presented(proxy.https_addr(), "galion.test", b"http/1.1")
        .await
        .unwrap();
    let saved = info(&after_restart);
    assert!(
        saved.not_after >= renewed_info.not_after,
        "served an older certificate after the restart"
    );
    assert!(
        eventually(Duration::from_secs(40), || async {
            orders(&proxy, "failed").await >= 1
        })
        .await,
        "the renewal with the CA down fails and is counted: {}",
        proxy.stderr()
    );
    assert!(presented(proxy.https_addr(), "galion.test", b"http/1.1")
        .await
        .is_ok());
    assert!(proxy
        .stderr()
        .contains("the current certificate keeps serving"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_is_answered_on_the_https_listener() {
    let Setup {
        dir,
        origin,
        files,
        cert: fc,
        key: fk,
    } = setup().await;
    let mut pebble = Pebble::prepare(&dir.path().join("pebble"), PebbleOptions::default());
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&pebble, &origin, (&fc, &fk), "tls-alpn-01"),
    );
    // HTTP-01 would go to a port where nothing listens: only TLS-ALPN-01 can succeed.
    pebble.start(free_port(), proxy.ports.https);
    let leaf = served_other_than(&proxy, "galion.test", None, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no certificate issued: {}\n{}",
                proxy.stderr(),
                pebble.log()
            )
        });
    assert!(info(&leaf).issuer.contains("Pebble"));
    // With no challenge in flight, an `acme-tls/1` handshake gets nothing (never a site's
    // certificate); browsers' protocols still get h2.
    assert!(presented(proxy.https_addr(), "galion.test", b"acme-tls/1")
        .await
        .is_err());
    assert_eq!(
        presented(proxy.https_addr(), "files.test", b"h2")
            .await
            .unwrap(),
        files.der
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_order_is_logged_counted_and_retried_while_the_other_sites_serve() {
    let Setup {
        dir,
        origin,
        files,
        cert: fc,
        key: fk,
    } = setup().await;
    let mut pebble = Pebble::prepare(
        &dir.path().join("pebble"),
        PebbleOptions {
            blocklist: vec!["galion.test".into()],
            ..Default::default()
        },
    );
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&pebble, &origin, (&fc, &fk), "http-01"),
    );
    pebble.start(proxy.ports.http, proxy.ports.https);
    // The CA's problem document reaches the log; the failures are counted and retried with a
    // growing wait (1 s, 2 s, 4 s…).
    let logged = |l: &str| {
        l.contains("acme: acme: ordering a certificate") && l.contains("rejectedIdentifier")
    };
    wait_for(Duration::from_secs(20), || logged(&proxy.stderr()));
    let log = proxy.stderr();
    assert!(logged(&log) && log.contains("next attempt"), "{log}");
    assert!(
        eventually(Duration::from_secs(15), || async {
            orders(&proxy, "failed").await >= 2
        })
        .await
    );
    let next = metric(
        &proxy,
        "galion_edge_acme_next_attempt_timestamp_seconds",
        &["site=\"acme\""],
    )
    .await;
    assert!(next > 0);
    assert!(presented(proxy.https_addr(), "galion.test", b"http/1.1")
        .await
        .is_err());
    assert_eq!(
        presented(proxy.https_addr(), "files.test", b"http/1.1")
            .await
            .unwrap(),
        files.der
    );
}

/// The ACME orders of site `acme` with `result` that `proxy` counted.
async fn orders(proxy: &Proxy, result: &str) -> u64 {
    let result = format!("result=\"{result}\"");
    metric(
        proxy,
        "galion_edge_acme_orders_total",
        &["site=\"acme\"", &result],
    )
    .await
}

/// `config` for one of several instances sharing `redis`, retrying a failed order after
/// `first_retry`.
fn shared_config(
    pebble: &Pebble,
    origin: &Origin,
    files: (&Path, &Path),
    redis: &RedisServer,
    first_retry: &str,
) -> String {
    let c = config(pebble, origin, files, "http-01").replace(
        "first_retry = \"1s\"",
        &format!("first_retry = \"{first_retry}\""),
    );
    format!(
        "{c}\n[redis]\nurl = \"{}\"\nkey_prefix = \"acme-test:\"\n",
        redis.url(0)
    )
}

/// Two instances behind one address (Pebble validates HTTP-01 on instance A's port 80 only):
/// B orders, A answers B's challenge from Redis, and A installs the certificate B obtained
/// without ordering one itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_answers_another_instances_challenge_and_uses_its_certificate() {
    let redis = RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let origin = origin("web").await;
    let files = gen_cert(&["files.test"]);
    let (fc, fk) = files.write(dir_a.path(), "files");
    let mut pebble = Pebble::prepare(&dir_a.path().join("pebble"), PebbleOptions::default());
    // A fails its first order (the CA is down) and would wait an hour before the next.
    let a = Proxy::start(
        bin!(),
        dir_a.path(),
        &shared_config(&pebble, &origin, (&fc, &fk), &redis, "1h"),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            orders(&a, "failed").await >= 1
        })
        .await
    );
    pebble.start(a.ports.http, a.ports.https);
    let b = Proxy::start(
        bin!(),
        dir_b.path(),
        &shared_config(&pebble, &origin, (&fc, &fk), &redis, "1s"),
    );
    let leaf_b = served_other_than(&b, "galion.test", None, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("B got no certificate: {}\n{}", b.stderr(), a.stderr()));
    let leaf_a = served_other_than(&a, "galion.test", None, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("A did not install B's certificate: {}", a.stderr()));
    assert_eq!(leaf_a, leaf_b, "both instances serve the one certificate");
    assert_eq!(orders(&a, "issued").await, 0, "A ordered nothing");
    assert_eq!(orders(&b, "issued").await, 1);
    assert_eq!(orders(&a, "failed").await, 1);
    assert!(a
        .stderr()
        .contains("acme: acme: installed the certificate another instance obtained"));
    // A saved it: a restart of A serves it from its own state directory.
    assert_eq!(
        std::fs::read(dir_a.path().join("acme/certs/acme/fullchain.pem")).unwrap(),
        std::fs::read(dir_b.path().join("acme/certs/acme/fullchain.pem")).unwrap()
    );
}

/// Two instances with the CA down at start, both retrying every second: when it comes up, one
/// orders under the lock and the other uses that certificate. One order in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_order_once() {
    let redis = RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let origin = origin("web").await;
    let files = gen_cert(&["files.test"]);
    let (fc, fk) = files.write(dir_a.path(), "files");
    let mut pebble = Pebble::prepare(&dir_a.path().join("pebble"), PebbleOptions::default());
    let cfg = shared_config(&pebble, &origin, (&fc, &fk), &redis, "1s");
    let a = Proxy::start(bin!(), dir_a.path(), &cfg);
    let b = Proxy::start(bin!(), dir_b.path(), &cfg);
    pebble.start(a.ports.http, a.ports.https);
    let leaf_a = served_other_than(&a, "galion.test", None, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("A: {}\nB: {}", a.stderr(), b.stderr()));
    let leaf_b = served_other_than(&b, "galion.test", None, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("B: {}", b.stderr()));
    assert_eq!(leaf_a, leaf_b);
    // Give a second order the time it would need to happen, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        orders(&a, "issued").await + orders(&b, "issued").await,
        1,
        "{}\n{}",
        a.stderr(),
        b.stderr()
    );
}
