//! The cache never serves one user's answer to another: requests with `Authorization` or a
//! credential cookie, over HTTP/1.1 and HTTP/2, on the `api` and `static` zones, from the memory
//! tier, and from the disk tier after a restart.
//!
//! The sample origins echo the request's headers in their JSON bodies, so a body made for Alice
//! holds her cookie and one made for Bob his token: every answer is checked for the others'.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::time::Duration;

const ALICE: &str = "alice-secret";
const BOB: &str = "bob-token";

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum User {
    /// A session cookie (and an analytics cookie beside it).
    Alice,
    /// A bearer token.
    Bob,
    /// A session cookie of another value (for `Vary: Cookie`).
    Carol,
    /// Nothing that identifies a user.
    Anonymous,
    /// Only an analytics cookie.
    Tracked,
}

impl User {
    fn headers(self) -> Vec<(&'static str, String)> {
        match self {
            User::Alice => vec![("cookie", format!("_ga=GA1.2.3; session={ALICE}"))],
            User::Bob => vec![("authorization", format!("Bearer {BOB}"))],
            User::Carol => vec![("cookie", "session=carol-secret".to_string())],
            User::Anonymous => vec![],
            User::Tracked => vec![("cookie", "_ga=GA1.9.9".to_string())],
        }
    }

    /// What only this user's answers may hold.
    fn secret(self) -> Option<&'static str> {
        match self {
            User::Alice => Some(ALICE),
            User::Bob => Some(BOB),
            User::Carol => Some("carol-secret"),
            User::Anonymous | User::Tracked => None,
        }
    }
}

const USERS: [User; 5] = [
    User::Alice,
    User::Bob,
    User::Carol,
    User::Anonymous,
    User::Tracked,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    H1,
    H2,
}

struct Env {
    api: Origin,
    web: Origin,
    proxy: Proxy,
    h2: reqwest::Client,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: u16,
    cache: String,
    body: String,
}

fn config(api: &Origin, web: &Origin, cert: (&str, &str), extra_cache: &str) -> String {
    let (c, k) = cert;
    base_config(
        true,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[cache]
{extra_cache}

[cache.zones.api]
path = "{{dir}}/cache/api"
size = "16MB"
memory_size = "1MB"
default_ttl = "10m"

[cache.zones.static]
path = "{{dir}}/cache/static"
size = "16MB"
memory_size = "1MB"
default_ttl = "7d"
max_ttl = "7d"

[upstreams.api]
backends = ["{}"]
health_check = {{ kind = "none" }}
[upstreams.web]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
tls = {{ cert = {c:?}, key = {k:?} }}
routes = [
  {{ path = "/api/", upstream = "api", cache = "api" }},
  {{ path = "/", upstream = "web" }},
]
"#,
            api.addr, web.addr
        ),
    )
}

async fn setup(extra_cache: &str) -> Env {
    let api = origin("api").await;
    let web = origin("web").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let text = config(
        &api,
        &web,
        (c.to_str().unwrap(), k.to_str().unwrap()),
        extra_cache,
    );
    let proxy = Proxy::start(bin!(), dir.path(), &text);
    let h2 = tls_client(&[&cert], &["galion.app"], proxy.https_addr());
    Env {
        api,
        web,
        proxy,
        h2,
        _dir: dir,
    }
}

impl Env {
    async fn get(&self, via: Via, path: &str, user: User) -> Resp {
        let mut rb = match via {
            Via::H1 => client()
                .get(format!("http://{}{path}", self.proxy.plain_addr()))
                .header("host", "galion.app"),
            Via::H2 => self.h2.get(format!(
                "https://galion.app:{}{path}",
                self.proxy.ports.https
            )),
        };
        for (k, v) in user.headers() {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        let want = match via {
            Via::H1 => reqwest::Version::HTTP_11,
            Via::H2 => reqwest::Version::HTTP_2,
        };
        assert_eq!(r.version(), want, "{path}");
        let cache = r
            .headers()
            .get("x-cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Resp {
            status: r.status().as_u16(),
            cache,
            body: r.text().await.unwrap(),
        }
    }

    /// Gets `path` as `user` and checks that the answer holds no other user's secret; returns
    /// the `X-Cache-Status`.
    async fn get_own(&self, via: Via, path: &str, user: User) -> String {
        let r = self.get(via, path, user).await;
        assert_eq!(r.status, 200, "{via:?} {path} as {user:?}: {}", r.body);
        for other in USERS {
            if let Some(secret) = other.secret().filter(|_| other != user) {
                assert!(
                    !r.body.contains(secret),
                    "{via:?} {path}: {user:?} got a body made for {other:?} ({}): {}",
                    r.cache,
                    r.body
                );
            }
        }
        r.cache
    }

    fn origin_count(&self, path: &str) -> usize {
        [&self.api, &self.web]
            .iter()
            .flat_map(|o| o.requests())
            .filter(|r| r.uri == path)
            .count()
    }

    async fn metrics(&self) -> String {
        metrics_text(&self.proxy).await
    }
}

/// An answer made without `Cache-Control` (so the zone's TTL would apply) is stored for the
/// anonymous client only; users with a cookie or a token always get their own, over both
/// protocols and in both zones, from memory and, after a restart, from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_gets_another_users_answer_in_either_zone_or_protocol() {
    let mut env = setup("").await;
    let paths = |via: Via| {
        [
            format!("/api/me?via={via:?}"),
            format!("/static/app.{via:?}.js"),
        ]
    };
    for via in [Via::H1, Via::H2] {
        for path in paths(via) {
            let path = path.as_str();
            // The issue's order: a logged-in user first, then the anonymous client.
            assert_eq!(
                env.get_own(via, path, User::Alice).await,
                "BYPASS",
                "{path}"
            );
            assert_eq!(env.get_own(via, path, User::Anonymous).await, "MISS");
            assert_eq!(env.get_own(via, path, User::Anonymous).await, "HIT");
            // An analytics cookie is a cookie: by default every cookie is a credential.
            assert_eq!(env.get_own(via, path, User::Tracked).await, "BYPASS");
            // A stored answer (from the memory tier) is not served to users either.
            assert_eq!(env.get_own(via, path, User::Alice).await, "BYPASS");
            assert_eq!(env.get_own(via, path, User::Bob).await, "BYPASS");
            assert_eq!(env.get_own(via, path, User::Anonymous).await, "HIT");
            assert_eq!(env.origin_count(path), 5, "{path}: one fill, four users");
        }
    }
    // Counted by the logging hook, after the last answer was sent.
    let lines = ["api", "static"].map(|zone| {
        format!("galion_edge_cache_bypass_total{{reason=\"credentials\",zone=\"{zone}\"}} 8")
    });
    let counted = eventually(Duration::from_secs(5), || async {
        let metrics = env.metrics().await;
        lines.iter().all(|l| metrics.contains(l.as_str()))
    })
    .await;
    assert!(counted, "{lines:?} in:\n{}", env.metrics().await);
    let log = env.proxy.wait_for_log(Duration::from_secs(5), |l| {
        l.matches("cache=BYPASS nocache=credentials").count() >= 20
    });
    assert!(log.contains("/api/me?via=H1 HTTP/1.1\" 200"), "{log}");
    assert!(log.contains("cache=HIT nocache=-"), "{log}");

    // From the disk tier after a restart: the same rule.
    env.proxy.terminate();
    env.proxy.restart(bin!());
    for via in [Via::H1, Via::H2] {
        for path in paths(via) {
            let path = path.as_str();
            assert_eq!(env.get_own(via, path, User::Bob).await, "BYPASS", "{path}");
            assert_eq!(env.get_own(via, path, User::Alice).await, "BYPASS");
            assert_eq!(env.get_own(via, path, User::Anonymous).await, "HIT");
            assert_eq!(env.origin_count(path), 7, "{path}: still one fill");
        }
    }
}

/// What the origin marks shareable (`public`, `s-maxage`, `must-revalidate`) is stored and
/// served to users, only for the lifetime the origin gave; `Vary: Cookie` and
/// `Vary: Authorization` give each user a variant of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shareable_answers_are_shared_and_vary_keeps_users_apart() {
    let env = setup("").await;
    let h1 = Via::H1;
    // Shareable, and the same for everyone (the body depends on the URL only).
    for (i, cc) in [
        "public%2C%20max-age%3D60",
        "s-maxage%3D60",
        "max-age%3D60%2C%20must-revalidate",
    ]
    .iter()
    .enumerate()
    {
        let path = format!("/api/shared{i}/data?n=64&cc={cc}");
        assert_eq!(env.get_own(h1, &path, User::Alice).await, "MISS", "{cc}");
        assert_eq!(env.get_own(h1, &path, User::Bob).await, "HIT", "{cc}");
        assert_eq!(env.get_own(h1, &path, User::Anonymous).await, "HIT", "{cc}");
        assert_eq!(env.origin_count(&path), 1, "{cc}");
    }
    // Fresh for browsers only (`max-age` without `public`): not stored for a user...
    let path = "/api/mine?cc=max-age%3D60";
    assert_eq!(env.get_own(h1, path, User::Alice).await, "BYPASS");
    assert_eq!(env.get_own(h1, path, User::Alice).await, "BYPASS");
    // ...stored for the anonymous client, and not served to users.
    assert_eq!(env.get_own(h1, path, User::Anonymous).await, "MISS");
    assert_eq!(env.get_own(h1, path, User::Anonymous).await, "HIT");
    assert_eq!(env.get_own(h1, path, User::Bob).await, "BYPASS");
    assert_eq!(env.origin_count(path), 4);
    // `public` without a lifetime: the zone's default TTL does not apply to a user's answer.
    let path = "/api/public-no-lifetime?cc=public";
    assert_eq!(env.get_own(h1, path, User::Alice).await, "BYPASS");
    assert_eq!(env.get_own(h1, path, User::Alice).await, "BYPASS");

    // Vary: Cookie: one variant per cookie header, the anonymous one included.
    for via in [Via::H1, Via::H2] {
        let path = format!("/api/vary-cookie?via={via:?}&cc=public%2C%20max-age%3D60&vary=Cookie");
        for first in [User::Alice, User::Carol, User::Anonymous] {
            assert_eq!(env.get_own(via, &path, first).await, "MISS", "{first:?}");
        }
        for again in [User::Carol, User::Anonymous, User::Alice] {
            assert_eq!(env.get_own(via, &path, again).await, "HIT", "{again:?}");
        }
        assert_eq!(env.origin_count(&path), 3);
        // Vary: Authorization likewise.
        let path = format!("/api/vary-auth?via={via:?}&cc=s-maxage%3D60&vary=Authorization");
        for first in [User::Bob, User::Anonymous] {
            assert_eq!(env.get_own(via, &path, first).await, "MISS", "{first:?}");
        }
        for again in [User::Anonymous, User::Bob] {
            assert_eq!(env.get_own(via, &path, again).await, "HIT", "{again:?}");
        }
    }
}

/// With `credential_cookies` naming the session cookie, analytics cookies share the cache and
/// the session cookie still does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_credential_cookies_leave_other_cookies_shared() {
    let env = setup("credential_cookies = [\"session\"]").await;
    for via in [Via::H1, Via::H2] {
        let path = format!("/api/feed?via={via:?}");
        assert_eq!(env.get_own(via, &path, User::Tracked).await, "MISS");
        assert_eq!(env.get_own(via, &path, User::Anonymous).await, "HIT");
        assert_eq!(env.get_own(via, &path, User::Tracked).await, "HIT");
        // Alice's `session` makes her a user even beside an analytics cookie; Bob's token too.
        assert_eq!(env.get_own(via, &path, User::Alice).await, "BYPASS");
        assert_eq!(env.get_own(via, &path, User::Bob).await, "BYPASS");
        assert_eq!(env.origin_count(&path), 3);
    }
}
