//! The whole Galion proxy inside a Pingora `Server` this program owns, next to a service of its
//! own.
//!
//! The proxy is built from a config string (one plain-HTTP `http_proxy` listener, one site
//! answering for `localhost` and `127.0.0.1`, one upstream group) with
//! `proxy_core::add_to_server`; the program's own service is a Pingora `ServeHttp` app that
//! answers `hello from the embedder` on its own port. Both run in the same process, under the
//! same `Server`.
//!
//! ```sh
//! cargo run -p proxy-core --example embed_whole_proxy -- \
//!     --proxy 127.0.0.1:8080 --hello 127.0.0.1:8081 --upstream 127.0.0.1:3000
//! curl http://127.0.0.1:8080/        # proxied to the upstream
//! curl http://127.0.0.1:8081/        # hello from the embedder
//! ```
//!
//! It prints one `ready …` line once both ports accept connections, then runs until killed.
//!
//! The proxy takes SIGHUP (reload) and SIGUSR1 (reopen the access log) for the whole process;
//! `--no-signals` leaves them to the program (`ProxyOptions::without_signals`), for a program
//! that handles them itself.

use async_trait::async_trait;
use http::Response;
use proxy_core::pingora::core::apps::http_app::{HttpServer, ServeHttp};
use proxy_core::pingora::core::protocols::http::ServerSession;
use proxy_core::pingora::core::server::Server;
use proxy_core::pingora::core::services::listening::Service;
use proxy_core::Config;
use std::error::Error;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// The embedder's own service.
struct Hello;

#[async_trait]
impl ServeHttp for Hello {
    async fn response(&self, _session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = b"hello from the embedder\n".to_vec();
        Response::builder()
            .status(200)
            .header("content-type", "text/plain; charset=utf-8")
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let proxy: SocketAddr = arg("--proxy", "127.0.0.1:8080").parse()?;
    let hello: SocketAddr = arg("--hello", "127.0.0.1:8081").parse()?;
    let upstream: SocketAddr = arg("--upstream", "127.0.0.1:3000").parse()?;

    // The whole proxy from a string: the same validation as `galion-edge check`.
    let config = Config::from_toml_str(
        &format!(
            r#"
            [listeners]
            http_proxy = ["{proxy}"]

            [upstreams.app]
            backends = ["{upstream}"]

            [[sites]]
            name = "example"
            hosts = ["localhost", "127.0.0.1"]
            routes = [{{ path = "/", upstream = "app" }}]
            "#
        ),
        Path::new("."),
    )?;

    // The embedder's server, with the config's `[server]` settings (threads, grace period,
    // keepalive pool); `Server::new(None)` would run Pingora's defaults instead.
    let mut server = Server::new_with_opt_and_conf(None, proxy_core::server_conf(&config));
    server.bootstrap();

    let mut own = Service::new("hello".to_string(), HttpServer::new_app(Hello));
    own.add_tcp(&hello.to_string());
    server.add_service(own);

    let mut options = proxy_core::ProxyOptions::default();
    if std::env::args().any(|a| a == "--no-signals") {
        options = options.without_signals();
    }
    proxy_core::add_to_server_with(&mut server, config, options)?;

    announce_when_listening(vec![proxy, hello], format!("proxy={proxy} hello={hello}"));
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
