//! The provided service (`GalionProxy`, everything the config describes) with a custom route
//! decision installed through `proxy_core::ProxyOptions`: requests carrying `X-Tenant: NAME` go
//! to the upstream group `tenant_NAME`; requests without the header are routed as usual (host,
//! then longest path prefix, here to `shared`); a tenant with no group gets 404. Unknown hosts
//! still get 421 and `..` paths 400: the decider only replaces the decision, not the checks.
//!
//! ```sh
//! cargo run -p proxy-core --example custom_routing -- \
//!     --listen 127.0.0.1:8080 --shared 127.0.0.1:3000 \
//!     --tenant a=127.0.0.1:3001 --tenant b=127.0.0.1:3002
//! curl http://127.0.0.1:8080/                  # shared
//! curl -H 'X-Tenant: a' http://127.0.0.1:8080/ # tenant_a
//! ```
//!
//! It prints one `ready …` line once the port accepts connections, then runs until killed.

use http::header::HeaderName;
use proxy_core::pingora::http::RequestHeader;
use proxy_core::{
    build_server_with, Config, HostPathDecider, ProxyOptions, RouteDecider, RouteDecision,
    RouteError, RouteTable, RunOptions,
};
use std::error::Error;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const X_TENANT: HeaderName = HeaderName::from_static("x-tenant");

/// Routes by `X-Tenant`. Looks the group up by name in the current table on each request, so
/// it stays right if the proxy's state is swapped for one with other groups; the scan is over a
/// handful of names and allocates nothing.
struct ByTenant;

impl RouteDecider for ByTenant {
    fn decide(
        &self,
        req: &RequestHeader,
        host: &str,
        table: &RouteTable,
    ) -> Result<RouteDecision, RouteError> {
        // Site and route as usual (421 for unknown hosts, the route's limits and headers).
        let decision = HostPathDecider.decide(req, host, table)?;
        let Some(tenant) = req.headers.get(X_TENANT) else {
            return Ok(decision);
        };
        let unknown = RouteError::NoRoute {
            site: decision.site,
        };
        let tenant = tenant.to_str().map_err(|_| unknown)?;
        table
            .upstreams()
            .iter()
            .position(|u| u.strip_prefix("tenant_") == Some(tenant))
            .map(|upstream| RouteDecision {
                upstream,
                ..decision
            })
            .ok_or(unknown)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let listen: SocketAddr = arg("--listen", "127.0.0.1:8080").parse()?;
    let shared: SocketAddr = arg("--shared", "127.0.0.1:3000").parse()?;

    let mut toml = format!(
        r#"
        [server]
        threads = 2

        [listeners]
        http_proxy = ["{listen}"]

        [upstreams.shared]
        backends = ["{shared}"]
        "#
    );
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2).filter(|w| w[0] == "--tenant") {
        let (name, addr) = pair[1]
            .split_once('=')
            .ok_or("--tenant takes NAME=ADDRESS")?;
        let addr: SocketAddr = addr.parse()?;
        writeln!(toml, "[upstreams.tenant_{name}]\nbackends = [\"{addr}\"]")?;
    }
    toml.push_str(
        r#"
        [[sites]]
        name = "tenants"
        hosts = ["localhost", "127.0.0.1"]
        routes = [{ path = "/", upstream = "shared" }]
        "#,
    );
    let config = Config::from_toml_str(&toml, Path::new("."))?;

    let options = ProxyOptions::default().with_decider(Arc::new(ByTenant));
    let server = build_server_with(config, &RunOptions::default(), options)?;

    announce_when_listening(vec![listen], format!("listen={listen}"));
    server.run_forever()
}

/// `--name VALUE` from the command line, or `default`.
fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Prints `ready WHAT` once every address accepts connections. Pingora binds its listeners
/// when the server starts running, so this watches from a thread of its own.
fn announce_when_listening(addrs: Vec<SocketAddr>, what: String) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let up = |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200));
            if addrs.iter().all(|a| up(a).is_ok()) {
                println!("ready {what}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("not listening after 30s: {addrs:?}");
    });
}
