//! Test support for the end-to-end tests: ports, certificates, origins and the real proxy.
//!
//! [`Proxy::start`] writes a config into a temp dir and starts the `galion-edge-under-test`
//! binary (which is `galion_edge::main`, as shipped) as a child process; it returns once every
//! listener accepts connections, and kills the process on drop. Everything listens on 127.0.0.1.
//!
//! Every process a test starts and waits for (the proxy, the `proxy-core` examples) goes through
//! one mechanism: [`start_on_free_ports`] picks loopback ports, starts a [`Launched`] process on
//! them and waits for its ready marker ([`Launched::wait_ready`]), failing fast when the process
//! exits and trying again with new ports when it does not come up (another process took a
//! port between the pick and the bind).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use galion_edge_tools::origin::{spawn_origin, Origin, Recorded};

pub mod h2raw;
pub mod pebble;

/// The path of the binary under test. A macro, because Cargo sets `CARGO_BIN_EXE_*` only
/// while compiling the integration tests themselves.
#[macro_export]
macro_rules! bin {
    () => {
        env!("CARGO_BIN_EXE_galion-edge-under-test")
    };
}

/// The path of the tools binary under test (`galion_edge_tools::main`, as
/// `galion-edge-tools`); a macro for the same reason as [`bin!`].
#[macro_export]
macro_rules! tools_bin {
    () => {
        env!("CARGO_BIN_EXE_galion-edge-tools-under-test")
    };
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port the OS reports free, never handed out twice in this process.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut g = HANDED_OUT.lock().unwrap();
        if g.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds or `limit` passes; whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Something a child process writes, read whole whenever a test looks.
#[derive(Debug, Clone)]
pub enum Output {
    /// Files it writes (kept in the test's directory), read one after the other.
    Files(Vec<PathBuf>),
    /// A pipe, drained into memory by a thread so the child never blocks on a full pipe; the
    /// flag is set at its end.
    Pipe(Arc<Mutex<(String, bool)>>),
}

impl Output {
    /// One file.
    pub fn file(path: impl Into<PathBuf>) -> Output {
        Output::Files(vec![path.into()])
    }

    /// Drains `pipe` (a child's stdout or stderr) to its end in a thread of its own.
    pub fn drain(mut pipe: impl Read + Send + 'static) -> Output {
        let text = Arc::new(Mutex::new((String::new(), false)));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .0
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            sink.lock().unwrap().1 = true;
        });
        Output::Pipe(text)
    }

    /// Whether everything the process wrote is in: a drained pipe reached its end (a file
    /// always is).
    fn complete(&self) -> bool {
        match self {
            Output::Files(_) => true,
            Output::Pipe(text) => text.lock().unwrap().1,
        }
    }

    /// Everything written so far.
    pub fn read(&self) -> String {
        match self {
            Output::Files(paths) => paths.iter().map(|p| read(p)).collect(),
            Output::Pipe(text) => text.lock().unwrap().0.clone(),
        }
    }
}

/// How a process says it is ready.
#[derive(Debug, Clone, Copy)]
pub enum Marker {
    /// This text anywhere, such as after a log line's prefix
    /// (`proxy_core::READY_LINE`).
    Anywhere(&'static str),
    /// A line starting with this text (the examples' `ready WHAT`).
    LineStart(&'static str),
}

impl Marker {
    fn found_in(self, text: &str) -> bool {
        match self {
            Marker::Anywhere(m) => text.contains(m),
            Marker::LineStart(m) => text.lines().any(|l| l.starts_with(m)),
        }
    }
}

/// A started child process and what it writes. Killed (and reaped) on drop.
pub struct Launched {
    pub child: Child,
    /// Where it says it is ready.
    pub ready_in: Output,
    /// What a failure report quotes: its stderr.
    pub stderr: Output,
}

impl Launched {
    /// Spawns `command` with its stdout and stderr drained from pipes; the ready marker is
    /// looked for on stdout.
    pub fn piped(command: &mut Command) -> Launched {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let ready_in = Output::drain(child.stdout.take().unwrap());
        let stderr = Output::drain(child.stderr.take().unwrap());
        Launched {
            child,
            ready_in,
            stderr,
        }
    }

    /// Waits until `cond` holds; fails at once when the process exits, or after `limit`. The
    /// error says which, with the process's stderr.
    pub fn wait_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let mut exited = None;
        let stopped = wait_for(limit, || {
            if cond() {
                return true;
            }
            exited = self.child.try_wait().ok().flatten();
            exited.is_some()
        });
        let Some(status) = exited else {
            if stopped {
                return Ok(());
            }
            return Err(format!("not ready after {limit:?}: {}", self.stderr.read()));
        };
        // The process may have said it was ready just before it exited: look again once its
        // pipes are drained (bounded, in case a child of its own holds them open).
        wait_for(Duration::from_secs(1), || {
            self.ready_in.complete() && self.stderr.complete()
        });
        if cond() {
            return Ok(());
        }
        Err(format!("exited with {status}: {}", self.stderr.read()))
    }

    /// Waits until `marker` is in [`Launched::ready_in`], as [`Launched::wait_until`].
    pub fn wait_ready(&mut self, marker: Marker, limit: Duration) -> Result<(), String> {
        let out = self.ready_in.clone();
        self.wait_until(limit, || marker.found_in(&out.read()))
    }

    /// Waits up to `limit` for the process to exit; whether it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        wait_for(limit, || matches!(self.child.try_wait(), Ok(Some(_))))
    }

    /// `kill -9` and reap: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a process on `ports` free loopback ports and waits up to `limit` for `marker`.
/// `launch` starts one attempt on the ports it is given (substituted into arguments or a
/// config). If the attempt exits or stays silent, it is killed and a new one starts on new
/// ports: a port can be taken by another process between the pick and the bind. Panics with
/// the last error after three attempts.
pub fn start_on_free_ports(
    what: &str,
    ports: usize,
    marker: Marker,
    limit: Duration,
    mut launch: impl FnMut(&[u16]) -> Launched,
) -> (Launched, Vec<u16>) {
    let mut last_err = String::new();
    for _ in 0..3 {
        let picked: Vec<u16> = (0..ports).map(|_| free_port()).collect();
        let mut process = launch(&picked);
        match process.wait_ready(marker, limit) {
            Ok(()) => return (process, picked),
            Err(e) => last_err = e,
        }
    }
    panic!("{what} did not get ready: {last_err}");
}

/// Starts an origin on an OS-picked loopback port.
pub async fn origin(name: &str) -> Origin {
    spawn_origin(name, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("origin")
}

/// A self-signed certificate for some host names, as PEM, with its DER for comparisons.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// Generates a self-signed certificate (P-256) for `hosts`.
pub fn gen_cert(hosts: &[&str]) -> TestCert {
    let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    TestCert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().to_vec(),
    }
}

impl TestCert {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }
}

/// Ports of a started proxy's listeners (0 when the config has no such listener).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    pub https: u16,
    pub http: u16,
    pub plain: u16,
    pub admin: u16,
}

/// The running proxy. Killed on drop.
pub struct Proxy {
    /// The running process; its ready marker is in the stderr file of the current run.
    process: Launched,
    pub ports: Ports,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// Environment variables every process of this proxy starts with.
    env: Vec<(String, String)>,
}

/// The placeholders of a [`Proxy::start`] template that stand for picked ports.
const PORT_NAMES: [&str; 4] = ["{https}", "{http}", "{plain}", "{admin}"];
/// The proxy's ready line (`proxy_core::READY_LINE`), after the log's own prefix.
const PROXY_READY: Marker = Marker::Anywhere(proxy_core::READY_LINE);

/// Starts `bin run -c CONFIG ARGS…` with its stdout and stderr in files of `dir`; the ready
/// line is looked for in that stderr file.
fn spawn_proxy(
    bin: &str,
    dir: &Path,
    config_path: &Path,
    (stdout, stderr): (&str, &str),
    args: &[&str],
    env: &[(String, String)],
) -> Launched {
    let stdout = std::fs::File::create(dir.join(stdout)).unwrap();
    let log = dir.join(stderr);
    let stderr = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin)
        .args(["run", "-c"])
        .arg(config_path)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn galion-edge {args:?}: {e}"));
    Launched {
        child,
        ready_in: Output::file(log),
        stderr: Output::Files(
            ["stderr.log", "stderr-restart.log", "stderr-upgrade.log"]
                .iter()
                .map(|f| dir.join(f))
                .collect(),
        ),
    }
}

impl Proxy {
    /// Starts the proxy with `template`, a config where `{https}`, `{http}`, `{plain}` and
    /// `{admin}` stand for listener ports picked here and `{dir}` for the config's directory,
    /// through [`start_on_free_ports`] (new ports if one was taken meanwhile). Panics if the
    /// proxy does not come up in 20s.
    pub fn start(bin: &str, dir: &Path, template: &str) -> Proxy {
        Proxy::start_with_env(bin, dir, template, &[])
    }

    /// [`Proxy::start`] with these environment variables set for the proxy (and its restarts
    /// and upgrades).
    pub fn start_with_env(bin: &str, dir: &Path, template: &str, env: &[(&str, &str)]) -> Proxy {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let wanted: Vec<&str> = PORT_NAMES
            .into_iter()
            .filter(|n| template.contains(n))
            .collect();
        let port_of = |picked: &[u16], name: &str| {
            wanted
                .iter()
                .position(|w| *w == name)
                .map_or(0, |i| picked[i])
        };
        let config_path = dir.join("galion.toml");
        let (process, picked) = start_on_free_ports(
            "proxy",
            wanted.len(),
            PROXY_READY,
            Duration::from_secs(20),
            |picked| {
                let text = PORT_NAMES
                    .iter()
                    .fold(template.to_string(), |t, name| {
                        t.replace(name, &port_of(picked, name).to_string())
                    })
                    .replace("{dir}", &dir.display().to_string());
                std::fs::write(&config_path, text).unwrap();
                spawn_proxy(
                    bin,
                    dir,
                    &config_path,
                    ("stdout.log", "stderr.log"),
                    &[],
                    &env,
                )
            },
        );
        Proxy {
            process,
            ports: Ports {
                https: port_of(&picked, "{https}"),
                http: port_of(&picked, "{http}"),
                plain: port_of(&picked, "{plain}"),
                admin: port_of(&picked, "{admin}"),
            },
            dir: dir.to_path_buf(),
            config_path,
            env,
        }
    }

    /// The process id of the running proxy, to send it signals.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// Sends the proxy a signal (`"HUP"`, `"USR1"`, `"TERM"`, `"QUIT"`); panics if `kill` fails.
    pub fn signal(&self, sig: &str) {
        assert!(signal(self.pid(), sig), "kill -{sig} {}", self.pid());
    }

    /// Waits up to `limit` for the process to exit; its exit status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        if self.process.wait_exit(limit) {
            self.process.child.try_wait().ok().flatten()
        } else {
            None
        }
    }

    /// SIGTERM (graceful shutdown), waiting up to 20s for the process to exit.
    pub fn terminate(&mut self) {
        let _ = signal(self.pid(), "TERM");
        if !self.process.wait_exit(Duration::from_secs(20)) {
            self.kill9();
        }
    }

    /// Starts the same config again (after [`Proxy::kill9`] or [`Proxy::terminate`]), on the same
    /// ports, and waits until it listens.
    pub fn restart(&mut self, bin: &str) {
        self.process = spawn_proxy(
            bin,
            &self.dir,
            &self.config_path,
            ("stdout.log", "stderr-restart.log"),
            &[],
            &self.env,
        );
        self.process
            .wait_ready(PROXY_READY, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("restart failed: {e}"));
    }

    /// A zero-downtime binary upgrade to `bin`, in the order Pingora needs: start
    /// `run -c PATH --upgrade` first (it binds the config's `upgrade_sock` and waits up to about
    /// 6 s for the listening sockets), wait until that socket exists, then SIGQUIT the old
    /// process (it connects to the socket, sends its listeners, keeps accepting for 5 s, then
    /// shuts down gracefully). Waits up to 20 s for the old process to exit; panics otherwise or
    /// if the new one exits. The new process is `self` afterwards.
    pub fn upgrade(&mut self, bin: &str) {
        let sock = self.dir.join("upgrade.sock");
        // A leftover socket file would look like the new process is waiting already.
        let _ = std::fs::remove_file(&sock);
        let mut new = spawn_proxy(
            bin,
            &self.dir,
            &self.config_path,
            ("stdout-upgrade.log", "stderr-upgrade.log"),
            &["--upgrade"],
            &self.env,
        );
        new.wait_until(Duration::from_secs(5), || sock.exists())
            .unwrap_or_else(|e| panic!("upgrade process never bound {}: {e}", sock.display()));
        assert!(signal(self.pid(), "QUIT"), "kill -QUIT");
        let mut old = std::mem::replace(&mut self.process, new);
        if !old.wait_exit(Duration::from_secs(20)) {
            old.kill();
            panic!(
                "the old process did not exit within 20 s: {}",
                self.stderr()
            );
        }
        self.process
            .wait_ready(PROXY_READY, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("upgrade failed: {e}"));
    }

    /// What the proxy wrote to stderr (its log), over restarts and upgrades.
    pub fn stderr(&self) -> String {
        self.process.stderr.read()
    }

    /// What the proxy wrote to stdout (the access log when `path = "stdout"`).
    pub fn stdout(&self) -> String {
        read(&self.dir.join("stdout.log"))
    }

    /// `127.0.0.1:PORT` of the plain proxy listener.
    pub fn plain_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.plain))
    }

    /// `127.0.0.1:PORT` of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.admin))
    }

    /// `127.0.0.1:PORT` of the https listener.
    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.https))
    }

    /// `127.0.0.1:PORT` of the port-80-role listener.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.http))
    }

    /// Waits until `pred` holds for the access log (stdout), up to `limit`.
    pub fn wait_for_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        wait_for(limit, || pred(&self.stdout()));
        self.stdout()
    }
}

fn read(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// A config with the usual test defaults and `upstreams`/`sites` supplied by the test.
/// Listeners: `{plain}` proxy, plus `{https}` and `{http}` when `tls` is true.
pub fn base_config(tls: bool, body: &str) -> String {
    let listeners = if tls {
        "https = [\"127.0.0.1:{https}\"]\nhttp = [\"127.0.0.1:{http}\"]\nhttp_proxy = [\"127.0.0.1:{plain}\"]"
    } else {
        "http_proxy = [\"127.0.0.1:{plain}\"]"
    };
    format!(
        r#"
[server]
threads = 2
grace_period = "1s"
graceful_shutdown_timeout = "1s"
pid_file = "{{dir}}/galion-edge.pid"
upgrade_sock = "{{dir}}/upgrade.sock"

[listeners]
{listeners}

[downstream]
client_header_timeout = "2s"
max_header_bytes = "16k"
max_header_count = 50
max_body_size = "1MB"

[tls]
reload_interval = "300ms"

[access_log]
path = "stdout"

{body}
"#
    )
}

/// A reqwest client that trusts `certs` and resolves the given hosts to `addr`.
pub fn tls_client(certs: &[&TestCert], hosts: &[&str], addr: SocketAddr) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(10));
    for c in certs {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(c.cert_pem.as_bytes()).unwrap());
    }
    for h in hosts {
        b = b.resolve(h, addr);
    }
    b.build().unwrap()
}

/// An answer as the tests read it: status, `X-Cache-Status` (empty if none), headers, body.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub cache: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Fetched {
    /// The first value of a header, if it is there (panics on a non-text value).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Sends `method path` to the proxy's plain listener with `Host: galion.app` and `headers`,
/// and reads the whole answer.
pub async fn fetch(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let rb = client()
        .request(
            method.parse().unwrap(),
            format!("http://{}{path}", proxy.plain_addr()),
        )
        .header("host", "galion.app");
    fetch_with(rb, headers).await
}

/// Sends a prepared request with `headers` added and reads the whole answer.
pub async fn fetch_with(mut rb: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> Fetched {
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    Fetched {
        status: r.status().as_u16(),
        cache: r
            .headers()
            .get("x-cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap(),
    }
}

/// The admin `/metrics` page.
pub async fn metrics_text(proxy: &Proxy) -> String {
    client()
        .get(format!("http://{}/metrics", proxy.admin_addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The admin `/cache/stats` document.
pub async fn cache_stats(proxy: &Proxy) -> serde_json::Value {
    client()
        .get(format!("http://{}/cache/stats", proxy.admin_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The value of one series on the admin `/metrics` page (0 if absent).
pub async fn metric(proxy: &Proxy, name: &str, labels: &[&str]) -> u64 {
    metrics_text(proxy)
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A plain-HTTP reqwest client with a timeout and no automatic redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends raw bytes on a new connection and returns what came back until close or `limit`.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1 response, 0 if none.
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` until it returns true or `limit` passes; returns the last result.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a [`Bystander`] saw.
#[derive(Debug, Default, Clone)]
pub struct BystanderReport {
    /// Answers with the expected status.
    pub ok: usize,
    /// Everything else: unexpected statuses and transport errors, described.
    pub failed: Vec<String>,
    /// The slowest answer.
    pub slowest: Duration,
}

/// A well-behaved client that keeps asking for one URL while an attack runs, to show that
/// others are still served. Each request is made on the given client (build it with
/// `pool_max_idle_per_host(0)` for a fresh connection every time).
pub struct Bystander {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<BystanderReport>,
}

impl Bystander {
    /// Starts asking `url` (with `Host: host` if given) every `every`, expecting `200`.
    pub fn start(
        client: reqwest::Client,
        url: String,
        host: Option<&str>,
        every: Duration,
    ) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let host = host.map(str::to_string);
        let task = tokio::spawn(async move {
            let mut report = BystanderReport::default();
            // Bounded: at most 100,000 requests or until stopped.
            for _ in 0..100_000 {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(h) = &host {
                    req = req.header("host", h);
                }
                match req.send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(_) => report.ok += 1,
                        Err(e) => report.failed.push(format!("body: {e}")),
                    },
                    Ok(r) => report.failed.push(format!("status {}", r.status())),
                    Err(e) => report.failed.push(format!("{e:?}")),
                }
                report.slowest = report.slowest.max(t.elapsed());
                tokio::time::sleep(every).await;
            }
            report
        });
        Bystander { stop, task }
    }

    /// Stops and returns what it saw.
    pub async fn stop(self) -> BystanderReport {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// A plain-HTTP client that opens a new connection for every request.
pub fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`), 0 if unknown.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// The peak resident set size of process `pid` in KiB (`VmHWM`), 0 if unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's soft open-files limit to its hard limit (tests that hold hundreds of
/// connections), returning the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let out = Command::new("sh").args(["-c", "ulimit -Hn"]).output();
    let hard: u64 = out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    // `prlimit` from util-linux sets another process's limit without unsafe code here.
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={hard}:{hard}"),
        ])
        .status();
    let soft = read(Path::new("/proc/self/limits"));
    soft.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `redis-server` of the test's own on a free loopback port, with no persistence and its
/// files in a temp dir (never a system Redis). Stopped on drop; [`RedisServer::stop`] and
/// [`RedisServer::start_again`] take it down and bring it back (empty) on the same port.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` and waits (up to 10 s) until it answers `PING`. Panics with how
    /// to install it if it is not installed: this never skips silently.
    pub fn start() -> RedisServer {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "redis-server is not installed: `bash scripts/setup.sh` installs it (Debian package \
             redis-server), which these tests start on a loopback port of their own"
        );
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        r.start_again();
        r
    }

    /// `redis://127.0.0.1:PORT/DB`.
    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (again, empty) on its port; waits until it answers `PING`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING in 10 s: {}",
                self.port,
                read(&self.dir.path().join("redis.log"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGKILL: no goodbye to its clients, like a crash) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `redis-cli -p PORT ARGS…` and returns its output ("" if it could not run).
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of a header in a raw HTTP/1 response, if present (first occurrence).
pub fn raw_header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Sends `sig` (`"HUP"`, `"TERM"`, `"0"` to test for life, ...) to `pid` with `kill(1)`;
/// whether it was delivered. The one place tests signal processes.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    signal(pid, "0")
}

/// Asserts the security headers every answer of the test configs carries, whoever made it (the
/// origin, the cache, a refusal, an error): the defaults of `[headers]` and a request id.
pub fn assert_security_headers(h: &reqwest::header::HeaderMap, what: &str) {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        get("x-content-type-options"),
        Some("nosniff"),
        "{what}: {h:?}"
    );
    assert_eq!(get("x-frame-options"), Some("SAMEORIGIN"), "{what}: {h:?}");
    assert_eq!(
        get("referrer-policy"),
        Some("strict-origin-when-cross-origin"),
        "{what}: {h:?}"
    );
    assert!(
        get("strict-transport-security").is_some_and(|v| v.starts_with("max-age=")),
        "{what}: {h:?}"
    );
    assert!(
        get("x-request-id").is_some_and(|v| !v.is_empty()),
        "{what}: {h:?}"
    );
}

/// Reads one HTTP/1 response (head and `Content-Length` body, none without one) from `s`;
/// returns it whole, or what came before EOF or an error.
pub fn read_response(s: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = raw_header(&head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                buf.truncate(end + 4 + len);
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// [`read_response`] on an async stream; `None` on EOF or an error before a whole response.
pub async fn read_response_async<R: tokio::io::AsyncBufRead + Unpin>(s: &mut R) -> Option<String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len: usize = raw_header(&head, "content-length").map_or(Some(0), |v| v.parse().ok())?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    head.push_str(&String::from_utf8_lossy(&body));
    Some(head)
}

/// GETs `URL_PREFIX0`, `URL_PREFIX1`, … one after another on `c` until `stop` (500 at most),
/// 10 ms apart: how many were sent, and each failure (an error, a status other than 200, or
/// another HTTP version than `want`). `http://` URLs name the site in `Host: galion.app`;
/// `https://` ones by their authority.
pub async fn get_loop(
    c: reqwest::Client,
    url_prefix: String,
    want: reqwest::Version,
    stop: Instant,
) -> (usize, Vec<String>) {
    let (mut sent, mut failures) = (0, Vec::new());
    for i in 0..500 {
        if Instant::now() > stop {
            break;
        }
        let u = format!("{url_prefix}{i}");
        sent += 1;
        let rb = if u.starts_with("http://") {
            c.get(&u).header("host", "galion.app")
        } else {
            c.get(&u)
        };
        match rb.send().await {
            Ok(r) if r.status() == 200 && r.version() == want => {
                if let Err(e) = r.bytes().await {
                    failures.push(format!("{u}: body: {e}"));
                }
            }
            Ok(r) => failures.push(format!("{u}: {} {:?}", r.status(), r.version())),
            Err(e) => failures.push(format!("{u}: {e:?}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (sent, failures)
}

/// A WebSocket through the plain listener at `addr` (`ws://HOST PATH`), echoing a message every
/// 200 ms until `stop`, each echo checked. The task returns how many messages were echoed, and
/// when the WebSocket ended if it ended (or answered wrong) before `stop`.
pub async fn echo_websocket(
    addr: SocketAddr,
    host: &str,
    path: &str,
    stop: Instant,
) -> tokio::task::JoinHandle<(usize, Option<Instant>)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let req = format!("ws://{host}{path}").into_client_request().unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    tokio::spawn(async move {
        let mut echoed = 0usize;
        for i in 0..1000 {
            if Instant::now() > stop {
                let _ = ws.close(None).await;
                return (echoed, None);
            }
            let text = format!("message {i}");
            if ws.send(Message::text(text.clone())).await.is_err() {
                return (echoed, Some(Instant::now()));
            }
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(m))) if m == Message::text(text) => echoed += 1,
                _ => return (echoed, Some(Instant::now())),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (echoed, None)
    })
}

/// Request loops on every kind of proxy listener at once, until `stop`: plain HTTP/1.1 on
/// `http_proxy`, TLS HTTP/1.1 and TLS HTTP/2 (four loops sharing one connection, so four
/// streams at a time) on `https`, each asking `PREFIX{kind}/{n}` of `galion.app` (trusting
/// `cert`). [`ListenerLoad::finish`] asserts that none failed.
pub struct ListenerLoad {
    loops: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl ListenerLoad {
    /// Starts the loops; `prefix` is a path prefix such as `/nocache/`.
    pub fn start(proxy: &Proxy, cert: &TestCert, prefix: &str, stop: Instant) -> ListenerLoad {
        let https = format!("https://galion.app:{}{prefix}", proxy.ports.https);
        let plain = format!("http://{}{prefix}", proxy.plain_addr());
        let h2 = tls_client(&[cert], &["galion.app"], proxy.https_addr());
        let h1_tls = reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .timeout(Duration::from_secs(10))
            .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
            .resolve("galion.app", proxy.https_addr())
            .build()
            .unwrap();
        let h11 = reqwest::Version::HTTP_11;
        let mut loops = vec![
            tokio::spawn(get_loop(client(), format!("{plain}h1/"), h11, stop)),
            tokio::spawn(get_loop(h1_tls, format!("{https}h1tls/"), h11, stop)),
        ];
        for s in 0..4 {
            let url = format!("{https}h2/{s}/");
            let h2 = h2.clone();
            loops.push(tokio::spawn(get_loop(
                h2,
                url,
                reqwest::Version::HTTP_2,
                stop,
            )));
        }
        ListenerLoad { loops }
    }

    /// Waits for every loop; asserts at least `at_least` requests were sent and none failed.
    pub async fn finish(self, at_least: usize) {
        let (mut sent, mut failures) = (0, Vec::new());
        for l in self.loops {
            let (n, f) = l.await.unwrap();
            sent += n;
            failures.extend(f);
        }
        assert!(sent >= at_least, "the load ran: {sent} requests");
        assert!(
            failures.is_empty(),
            "{} of {sent} failed, the first: {:?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Launched {
        Launched::piped(Command::new("sh").args(["-c", script]))
    }

    #[test]
    fn wait_ready_sees_the_marker_and_fails_fast_on_exit() {
        let mut up = sh("echo 'ready x'; exec sleep 30");
        assert_eq!(
            up.wait_ready(Marker::LineStart("ready "), Duration::from_secs(10)),
            Ok(())
        );
        // Printed, then exited: still ready.
        let mut quick = sh("echo 'log: ready: listening on 127.0.0.1:1'");
        assert_eq!(
            quick.wait_ready(
                Marker::Anywhere("ready: listening on "),
                Duration::from_secs(10)
            ),
            Ok(())
        );

        let t = Instant::now();
        let mut dead = sh("echo 'address in use' >&2; exit 3");
        let err = dead
            .wait_ready(Marker::LineStart("ready "), Duration::from_secs(10))
            .unwrap_err();
        assert!(
            err.contains("exited with") && err.contains("address in use"),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

        let mut silent = sh("exec sleep 30");
        let err = silent
            .wait_ready(Marker::LineStart("ready "), Duration::from_millis(100))
            .unwrap_err();
        assert!(err.starts_with("not ready after"), "{err}");
    }
}
