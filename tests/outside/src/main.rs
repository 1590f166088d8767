//! What an embedder writes, from the README alone, in one program:
//!
//! - (A) the whole proxy (`add_to_server`, from a config string, `[server]` applied with
//!   `server_conf`) beside a service of the program's own, in one Pingora `Server`;
//! - (B) a `ProxyHttp` of the program's own from the building blocks: `RouteTable` from its
//!   builder (no config), `HeaderPolicy` on every answer, its own early `404` included.
//!
//! Usage: `galion-edge-outside PROXY_ADDR HELLO_ADDR OWN_ADDR UPSTREAM_ADDR` (loopback). It
//! prints `ready` once the three ports accept connections.

use async_trait::async_trait;
use http::Response;
use proxy_core::pingora::core::apps::http_app::{HttpServer, ServeHttp};
use proxy_core::pingora::core::protocols::http::ServerSession;
use proxy_core::pingora::core::server::Server;
use proxy_core::pingora::core::services::listening::Service;
use proxy_core::pingora::core::upstreams::peer::HttpPeer;
use proxy_core::pingora::error::Result;
use proxy_core::pingora::http::ResponseHeader;
use proxy_core::pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use proxy_core::{request_host, server_conf, Config, HeaderPolicy, RouteTable};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// (A)'s own service.
struct Hello;

#[async_trait]
impl ServeHttp for Hello {
    async fn response(&self, _session: &mut ServerSession) -> Response<Vec<u8>> {
        Response::builder()
            .status(200)
            .body(b"hello from outside\n".to_vec())
            .unwrap_or_default()
    }
}

/// (B): routes with a `RouteTable`, sends every group to one upstream, applies the policy.
struct Own {
    routes: RouteTable,
    upstream: SocketAddr,
    headers: HeaderPolicy,
}

#[async_trait]
impl ProxyHttp for Own {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let req = session.req_header();
        let host = request_host(req).unwrap_or("");
        if self.routes.decide(host, req.uri.path()).is_ok() {
            return Ok(false);
        }
        // An early answer never passes response_filter: the policy by hand.
        let mut resp = ResponseHeader::build(404, None)?;
        resp.insert_header("content-length", "0")?;
        self.headers.apply(&mut resp);
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        self.headers.apply(resp);
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [proxy, hello, own, upstream] = args.as_slice() else {
        return Err("usage: galion-edge-outside PROXY HELLO OWN UPSTREAM".into());
    };
    let addrs: Vec<SocketAddr> = [proxy, hello, own]
        .iter()
        .map(|a| a.parse())
        .collect::<std::result::Result<_, _>>()?;
    let upstream: SocketAddr = upstream.parse()?;

    // (A)
    let config = Config::from_toml_str(
        &format!(
            r#"
            [server]
            threads = 1
            grace_period = "1s"
            graceful_shutdown_timeout = "1s"
            [listeners]
            http_proxy = ["{proxy}"]
            [access_log]
            path = "off"
            [upstreams.app]
            backends = ["{upstream}"]
            [[sites]]
            hosts = ["localhost", "127.0.0.1"]
            routes = [{{ path = "/", upstream = "app" }}]
            "#
        ),
        std::path::Path::new("."),
    )?;
    let mut server = Server::new_with_opt_and_conf(None, server_conf(&config));
    server.bootstrap();
    let mut hello_service = Service::new("hello".to_string(), HttpServer::new_app(Hello));
    hello_service.add_tcp(hello);
    server.add_service(hello_service);
    proxy_core::add_to_server(&mut server, config)?;

    // (B)
    let routes = RouteTable::builder()
        .upstreams(["app"])
        .site("outside", ["localhost", "127.0.0.1"])
        .route("/api/", "app")
        .build()?;
    let mut own_service = http_proxy_service(
        &server.configuration,
        Own {
            routes,
            upstream,
            headers: HeaderPolicy::recommended(),
        },
    );
    own_service.add_tcp(own);
    server.add_service(own_service);

    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let up = |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200));
            if addrs.iter().all(|a| up(a).is_ok()) {
                println!("ready");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("not listening after 30 s");
    });
    server.run_forever()
}
