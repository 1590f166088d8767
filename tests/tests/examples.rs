//! The programs in `proxy-core/examples/`, run as they are: each is started as a process on
//! loopback ports the OS picked, in front of real origins, and driven with real HTTP requests.
//!
//! tests/Cargo.toml builds the example sources as binaries of this crate (`example-*`), so
//! their paths come from `CARGO_BIN_EXE_*`; nothing here rebuilds or re-implements them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// A running example, killed on drop.
struct Example {
    process: Launched,
    /// The ports substituted for `{port0}`, `{port1}`, … in its arguments.
    ports: Vec<u16>,
}

impl Example {
    /// Starts `bin` with `args`, where `{port0}`, `{port1}`, … stand for free loopback ports
    /// picked here, and waits for its `ready` line, through [`start_on_free_ports`] (new ports
    /// if the process exits or stays silent: a port taken meanwhile).
    fn start(bin: &str, args: &[&str]) -> Example {
        let placeholders = (0..)
            .take_while(|i| args.iter().any(|a| a.contains(&format!("{{port{i}}}"))))
            .count();
        let (process, ports) = start_on_free_ports(
            bin,
            placeholders,
            Marker::LineStart("ready "),
            Duration::from_secs(20),
            |ports| {
                let args = args.iter().map(|a| {
                    ports.iter().enumerate().fold(a.to_string(), |a, (i, p)| {
                        a.replace(&format!("{{port{i}}}"), &p.to_string())
                    })
                });
                Launched::piped(Command::new(bin).args(args).env("RUST_LOG", "info"))
            },
        );
        Example { process, ports }
    }

    /// `127.0.0.1:PORT` of the `i`th picked port.
    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    fn stdout(&self) -> String {
        self.process.ready_in.read()
    }
}

async fn json(r: reqwest::Response) -> serde_json::Value {
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_whole_proxy_serves_the_proxy_and_the_embedders_own_service() {
    let app = origin("embedded_app").await;
    let upstream = app.addr.to_string();
    let ex = Example::start(
        env!("CARGO_BIN_EXE_example-embed-whole-proxy"),
        &[
            "--proxy",
            "127.0.0.1:{port0}",
            "--hello",
            "127.0.0.1:{port1}",
            "--upstream",
            &upstream,
        ],
    );
    let c = client();

    // The embedder's own service, in the same process and server.
    let r = c
        .get(format!("http://{}/", ex.addr(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from the embedder\n");

    // The whole proxy, from the config string: routed, forwarded, with the security headers.
    let r = c
        .get(format!("http://{}/api/users?page=2", ex.addr(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["server"], "galion-edge");
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    assert!(r.headers().get("x-powered-by").is_none());
    assert!(r.headers().contains_key("x-request-id"));
    let v = json(r).await;
    assert_eq!(v["service"], "embedded_app");
    assert_eq!(v["uri"], "/api/users?page=2");
    let seen = app.requests();
    let forwarded = seen
        .iter()
        .find(|r| r.uri == "/api/users?page=2")
        .expect("the origin got the request");
    assert_eq!(forwarded.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(forwarded.header("x-forwarded-proto"), Some("http"));

    // Hosts outside the config are refused, never proxied.
    let before = app.requests().len();
    let r = c
        .get(format!("http://{}/", ex.addr(0)))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    assert_eq!(app.requests().len(), before);

    // The access log of the embedded proxy goes to the process's stdout.
    wait_for(Duration::from_secs(5), || {
        ex.stdout().contains("/api/users?page=2")
    });
    assert!(
        ex.stdout()
            .contains("\"GET /api/users?page=2 HTTP/1.1\" 200"),
        "{}",
        ex.stdout()
    );

    // The proxy took SIGHUP for the process: it survives one (a reload without a config file
    // is refused and logged).
    assert!(signal(ex.process.child.id(), "HUP"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.get(format!("http://{}/", ex.addr(1)))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "alive after SIGHUP"
    );
}

/// The signals a process catches, from `/proc/PID/status` (`SigCgt`, bit `n - 1` for signal
/// `n`): SIGHUP (1) and SIGUSR1 (10).
fn catches_hup_and_usr1(pid: u32) -> (bool, bool) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    (mask & 1 != 0, mask & (1 << 9) != 0)
}

/// `ProxyOptions::without_signals` leaves SIGHUP and SIGUSR1 to the program: the example started
/// with `--no-signals` catches neither (read from the kernel, so an inherited "ignore", as under
/// `nohup`, cannot fool the test); started without it, it catches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_whole_proxy_without_signals_leaves_sighup_to_the_program() {
    let app = origin("embedded_app").await;
    let upstream = app.addr.to_string();
    let start = |extra: &'static [&'static str]| {
        let mut args = vec![
            "--proxy",
            "127.0.0.1:{port0}",
            "--hello",
            "127.0.0.1:{port1}",
            "--upstream",
            &upstream,
        ];
        args.extend_from_slice(extra);
        Example::start(env!("CARGO_BIN_EXE_example-embed-whole-proxy"), &args)
    };
    let with = start(&[]);
    assert_eq!(catches_hup_and_usr1(with.process.child.id()), (true, true));
    drop(with);
    let without = start(&["--no-signals"]);
    assert_eq!(
        catches_hup_and_usr1(without.process.child.id()),
        (false, false)
    );
}

fn start_cache_and_limiter(upstream: &str, dir: &std::path::Path, limit: &str) -> Example {
    Example::start(
        env!("CARGO_BIN_EXE_example-cache-and-limiter"),
        &[
            "--listen",
            "127.0.0.1:{port0}",
            "--upstream",
            upstream,
            "--cache-dir",
            dir.to_str().unwrap(),
            "--limit",
            limit,
            "--trust",
            "127.0.0.0/8",
        ],
    )
}

/// The headers of `HeaderPolicy::recommended()`, which the example applies to every answer.
fn assert_policy_headers(h: &reqwest::header::HeaderMap, what: &str) {
    let recommended = proxy_core::HeaderPolicy::recommended();
    for (name, value) in recommended.headers() {
        assert_eq!(h.get(name), Some(value), "{what}: {name}: {h:?}");
    }
    assert_eq!(h.get("server"), Some(recommended.server()), "{what}: {h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_and_limiter_serves_the_second_request_from_the_tiered_storage() {
    let app = origin("cached_app").await;
    let dir = tempfile::tempdir().unwrap();
    let ex = start_cache_and_limiter(&app.addr.to_string(), dir.path(), "100");
    let c = client();
    let url = format!("http://{}/page?v=1", ex.addr(0));

    let first = c.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache-status"], "MISS");
    let first = first.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["service"], "cached_app");

    let second = c.get(&url).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-cache-status"], "HIT");
    assert_policy_headers(second.headers(), "a hit through the example");
    assert_eq!(second.text().await.unwrap(), first, "the stored bytes");
    let fetched = |uri: &str| app.requests().iter().filter(|r| r.uri == uri).count();
    assert_eq!(fetched("/page?v=1"), 1, "the hit never reached the origin");

    // Another URL is another entry; uncacheable methods go straight through.
    let other = c
        .get(format!("http://{}/page?v=2", ex.addr(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(other.headers()["x-cache-status"], "MISS");
    let post = c.post(&url).body("x").send().await.unwrap();
    assert_eq!(post.status(), 200);
    assert_eq!(post.headers()["x-cache-status"], "BYPASS");
    assert_eq!(fetched("/page?v=1"), 2);

    // The entry is on disk too: TieredStorage's disk tier under --cache-dir.
    let on_disk = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|d| d.file_name().len() == 2 && d.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .count()
    };
    wait_for(Duration::from_secs(5), || on_disk() >= 2);
    assert_eq!(on_disk(), 2, "one file per cached URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_and_limiter_refuses_a_client_over_its_limit_with_429() {
    let app = origin("limited_app").await;
    let dir = tempfile::tempdir().unwrap();
    let ex = start_cache_and_limiter(&app.addr.to_string(), dir.path(), "3");
    let c = client();
    // The example trusts loopback peers, so CF-Connecting-IP names the client. POST, so that
    // every allowed request reaches the origin (only GET and HEAD are cached).
    let send = |client_ip: &'static str, n: u32| {
        c.post(format!("http://{}/limited/{n}", ex.addr(0)))
            .header("cf-connecting-ip", client_ip)
            .send()
    };

    for n in 0..3 {
        let r = send("203.0.113.1", n).await.unwrap();
        assert_eq!(r.status(), 200, "request {n} is within the limit");
    }
    let r = send("203.0.113.1", 3).await.unwrap();
    assert_eq!(r.status(), 429);
    // Written in request_filter, it gets the security headers there (HeaderPolicy::apply).
    assert_policy_headers(r.headers(), "the example's 429");
    let retry: u32 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=120).contains(&retry), "Retry-After: {retry}");
    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=3;w=60");
    assert!(
        r.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"default\";r=0;"),
        "{:?}",
        r.headers()["ratelimit"]
    );
    assert!(
        !app.requests().iter().any(|r| r.uri == "/limited/3"),
        "a refused request never reaches the origin"
    );

    // Another client has a budget of its own.
    let r = send("203.0.113.2", 4).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_routing_sends_each_tenant_to_its_own_group() {
    let shared = origin("shared").await;
    let tenant_a = origin("tenant_a").await;
    let tenant_b = origin("tenant_b").await;
    let (s, a, b) = (
        shared.addr.to_string(),
        format!("a={}", tenant_a.addr),
        format!("b={}", tenant_b.addr),
    );
    let ex = Example::start(
        env!("CARGO_BIN_EXE_example-custom-routing"),
        &[
            "--listen",
            "127.0.0.1:{port0}",
            "--shared",
            &s,
            "--tenant",
            &a,
            "--tenant",
            &b,
        ],
    );
    let c = client();
    let send = |path: &str, tenant: Option<&str>| {
        let mut r = c.get(format!("http://{}{path}", ex.addr(0)));
        if let Some(t) = tenant {
            r = r.header("x-tenant", t);
        }
        r.send()
    };

    // No header: the default decision (host, then prefix).
    let r = send("/", None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["service"], "shared");

    // The header picks the group; the path and query reach it unchanged.
    for (tenant, service) in [("a", "tenant_a"), ("b", "tenant_b")] {
        let r = send("/deep/x?q=1", Some(tenant)).await.unwrap();
        assert_eq!(r.status(), 200, "tenant {tenant}");
        let v = json(r).await;
        assert_eq!(v["service"], service);
        assert_eq!(v["uri"], "/deep/x?q=1");
    }
    assert_eq!(tenant_a.requests().len(), 1);
    assert_eq!(tenant_b.requests().len(), 1);
    assert_eq!(shared.requests().len(), 1);

    // A tenant without a group: the decider's NoRoute is a 404 with the site's headers.
    let r = send("/", Some("nobody")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(r.headers()["server"], "galion-edge");

    // The service's own checks still apply around the decision.
    let r = c
        .get(format!("http://{}/", ex.addr(0)))
        .header("host", "evil.example")
        .header("x-tenant", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    let raw = raw_exchange(
        ex.addr(0),
        b"GET /x/../y HTTP/1.1\r\nHost: localhost\r\nX-Tenant: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&raw), 400, "{raw}");

    assert_eq!(
        tenant_a.requests().len(),
        1,
        "nothing refused reached a tenant"
    );
    assert_eq!(shared.requests().len(), 1);
}
