//! Test support for the end-to-end tests: ports, certificates, origins and the real proxy.
//!
//! [`Proxy::start`] writes a config into a temp dir and starts the `galion-edge-under-test`
//! binary (which is `galion_edge::main`, as shipped) as a child process; it returns once every
//! listener accepts connections, and kills the process on drop. Everything listens on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use galion_edge_tools::origin::{spawn_origin, Origin, Recorded};

pub mod h2raw;

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
        key_pem: ck.key_pair.serialize_pem(),
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
    child: Child,
    /// The stderr file of the running process (its log), where it says it is ready.
    log: PathBuf,
    pub ports: Ports,
    pub dir: PathBuf,
    pub config_path: PathBuf,
}

impl Proxy {
    /// Starts the proxy with `template`, a config where `{https}`, `{http}` and `{plain}` stand
    /// for listener ports picked here and `{dir}` for the config's directory. Retries with new
    /// ports if a port was taken meanwhile. Panics if the proxy does not come up in 20s.
    pub fn start(bin: &str, dir: &Path, template: &str) -> Proxy {
        let mut last_err = String::new();
        for _ in 0..3 {
            let pick = |name: &str| {
                if template.contains(name) {
                    free_port()
                } else {
                    0
                }
            };
            let ports = Ports {
                https: pick("{https}"),
                http: pick("{http}"),
                plain: pick("{plain}"),
                admin: pick("{admin}"),
            };
            let text = template
                .replace("{https}", &ports.https.to_string())
                .replace("{http}", &ports.http.to_string())
                .replace("{plain}", &ports.plain.to_string())
                .replace("{admin}", &ports.admin.to_string())
                .replace("{dir}", &dir.display().to_string());
            let config_path = dir.join("galion.toml");
            std::fs::write(&config_path, text).unwrap();
            let stdout = std::fs::File::create(dir.join("stdout.log")).unwrap();
            let log = dir.join("stderr.log");
            let stderr = std::fs::File::create(&log).unwrap();
            let child = Command::new(bin)
                .args(["run", "-c"])
                .arg(&config_path)
                .env("RUST_LOG", "info")
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr))
                .spawn()
                .expect("spawn galion-edge");
            let mut proxy = Proxy {
                child,
                log,
                ports,
                dir: dir.to_path_buf(),
                config_path,
            };
            match proxy.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return proxy,
                Err(e) => last_err = e,
            }
        }
        panic!("proxy did not start: {last_err}");
    }

    /// Waits until the running process logs its ready line (every listener is bound by it:
    /// `proxy_core::READY_LINE`), or fails when it exits or `limit` passes.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if read(&self.log).contains(proxy_core::READY_LINE) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.stderr()));
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {limit:?}: {}", self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id of the running proxy, to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends the proxy a signal (`"HUP"`, `"USR1"`, `"TERM"`, `"QUIT"`); panics if `kill` fails.
    pub fn signal(&self, sig: &str) {
        assert!(signal(self.pid(), sig), "kill -{sig} {}", self.pid());
    }

    /// SIGTERM (graceful shutdown), waiting up to 20s for the process to exit.
    pub fn terminate(&mut self) {
        let _ = signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    /// Starts the same config again (after [`Proxy::kill9`] or [`Proxy::terminate`]), on the same
    /// ports, and waits until it listens.
    pub fn restart(&mut self, bin: &str) {
        let stdout = std::fs::File::create(self.dir.join("stdout.log")).unwrap();
        self.log = self.dir.join("stderr-restart.log");
        let stderr = std::fs::File::create(&self.log).unwrap();
        self.child = Command::new(bin)
            .args(["run", "-c"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn galion-edge");
        self.wait_ready(Duration::from_secs(20))
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
        let stdout = std::fs::File::create(self.dir.join("stdout-upgrade.log")).unwrap();
        let upgrade_log = self.dir.join("stderr-upgrade.log");
        let stderr = std::fs::File::create(&upgrade_log).unwrap();
        let mut new = Command::new(bin)
            .args(["run", "-c"])
            .arg(&self.config_path)
            .arg("--upgrade")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn galion-edge --upgrade");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            if let Ok(Some(status)) = new.try_wait() {
                panic!("upgrade process exited with {status}: {}", self.stderr());
            }
            if Instant::now() > deadline {
                let _ = new.kill();
                let _ = new.wait();
                panic!(
                    "upgrade process never bound {}: {}",
                    sock.display(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(signal(self.child.id(), "QUIT"), "kill -QUIT");
        let mut old = std::mem::replace(&mut self.child, new);
        self.log = upgrade_log;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = old.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = old.kill();
                let _ = old.wait();
                panic!(
                    "the old process did not exit within 20 s: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ready(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("upgrade failed: {e}"));
    }

    /// What the proxy wrote to stderr (its log), over restarts and upgrades.
    pub fn stderr(&self) -> String {
        read(&self.dir.join("stderr.log"))
            + &read(&self.dir.join("stderr-restart.log"))
            + &read(&self.dir.join("stderr-upgrade.log"))
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
        let deadline = Instant::now() + limit;
        loop {
            let s = self.stdout();
            if pred(&s) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
