//! The servers `galion-edge-tools loadtest` starts itself, each a child process so that their CPU
//! and memory are measured apart from the load generator's: the sample origins (this same
//! binary, `galion-edge-tools origins -c`) and the proxy (the `galion-edge` binary,
//! `galion-edge run -c`, found by [`proxy_binary`]).
//!
//! Without `--config`, the embedded `configs/local.toml` is written to a temporary directory
//! with every listener and origin moved to a free loopback port, the pid file and upgrade socket
//! moved into that directory, and the access log written to a file there (as nginx writes its
//! own): the run does not collide with a `galion-edge-tools demo` or another load test.

use super::LoadtestError;
use proxy_core::config::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that names the proxy binary when `--proxy-bin` is not given.
pub const PROXY_BIN_ENV: &str = "GALION_EDGE_BIN";

/// The proxy binary's name, looked up in the directory of this executable by default (Cargo
/// builds both binaries of a profile into the same `target/<profile>/`).
pub const PROXY_BIN_NAME: &str = "galion-edge";

/// Origins and proxy, killed (and the temporary directory removed) on drop.
#[derive(Debug)]
pub struct Spawned {
    dir: PathBuf,
    remove_dir: bool,
    children: Vec<Child>,
    /// The proxy's plain-HTTP listener.
    pub plain: SocketAddr,
    /// The proxy's HTTPS listener, if it has one.
    pub https: Option<SocketAddr>,
    /// The proxy's PID.
    pub proxy_pid: u32,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> Result<u16, LoadtestError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| LoadtestError::Spawn(e.to_string()))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| LoadtestError::Spawn(e.to_string()))
}

/// The embedded local config with free ports and paths inside `dir`.
fn local_config_text(dir: &Path) -> Result<String, LoadtestError> {
    let mut text = crate::LOCAL_CONFIG.to_string();
    let mut replace = |from: &str, to: String| -> Result<(), LoadtestError> {
        if !text.contains(from) {
            return Err(LoadtestError::Spawn(format!(
                "the embedded configs/local.toml no longer contains {from:?}; update loadtest/spawn.rs"
            )));
        }
        text = text.replace(from, &to);
        Ok(())
    };
    for port in [8443, 8080, 8088, 9113, 3001, 8001, 8002, 3003, 8003, 8004] {
        replace(
            &format!("\"127.0.0.1:{port}\""),
            format!("\"127.0.0.1:{}\"", free_port()?),
        )?;
    }
    let d = dir.display();
    replace(
        "pid_file = \"/tmp/galion-edge-local.pid\"",
        format!("pid_file = \"{d}/galion-edge.pid\""),
    )?;
    replace(
        "upgrade_sock = \"/tmp/galion-edge-local-upgrade.sock\"",
        format!("upgrade_sock = \"{d}/upgrade.sock\""),
    )?;
    replace("path = \"stdout\"", format!("path = \"{d}/access.log\""))?;
    Ok(text)
}

/// Where the proxy binary is, and what said so: `explicit` (`--proxy-bin`), else a non-empty
/// `env` (`GALION_EDGE_BIN`), else `galion-edge` beside `exe`.
fn locate(
    explicit: Option<&Path>,
    env: Option<std::ffi::OsString>,
    exe: &Path,
) -> (PathBuf, String) {
    if let Some(p) = explicit {
        return (p.to_path_buf(), "--proxy-bin".into());
    }
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        return (PathBuf::from(v), PROXY_BIN_ENV.into());
    }
    let name = format!("{PROXY_BIN_NAME}{}", std::env::consts::EXE_SUFFIX);
    (
        exe.with_file_name(name),
        format!("beside {}", exe.display()),
    )
}

/// The `galion-edge` binary the load test starts as the proxy: `explicit` (`--proxy-bin PATH`),
/// else the path in [`PROXY_BIN_ENV`], else [`PROXY_BIN_NAME`] in the directory of this
/// executable. Fails with [`LoadtestError::Spawn`], naming the path tried and how to provide the
/// binary, when that path is not a file; it does not check that the file is a galion-edge.
pub fn proxy_binary(explicit: Option<&Path>) -> Result<PathBuf, LoadtestError> {
    let exe = std::env::current_exe()
        .map_err(|e| LoadtestError::Spawn(format!("finding this binary: {e}")))?;
    let (path, from) = locate(explicit, std::env::var_os(PROXY_BIN_ENV), &exe);
    if path.is_file() {
        return Ok(path);
    }
    Err(LoadtestError::Spawn(format!(
        "no proxy binary at {} ({from}): build it with `cargo build -p galion-edge` (add \
         --release if this is a release build: both go to the same target directory), or name \
         it with --proxy-bin PATH or {PROXY_BIN_ENV}=PATH",
        path.display()
    )))
}

/// Starts the origins and the proxy: on `config`, or on the embedded local config with free
/// ports. The proxy is the binary at `proxy_bin` (see [`proxy_binary`]). Returns once the proxy
/// answers through to an origin.
///
/// The free ports are picked before the children bind them, so another program can take one
/// meanwhile: with the embedded config, a child that exits because its address is in use is
/// started again on new ports, three attempts in all. A config of the caller's is never
/// changed, so its errors are returned at once.
pub fn spawn(config: Option<&Path>, proxy_bin: &Path) -> Result<Spawned, LoadtestError> {
    let mut attempts = 1;
    loop {
        match spawn_once(config, proxy_bin) {
            Err(LoadtestError::Spawn(why))
                if config.is_none() && attempts < 3 && why.contains("Address already in use") =>
            {
                attempts += 1;
            }
            other => return other,
        }
    }
}

fn spawn_once(config: Option<&Path>, proxy_bin: &Path) -> Result<Spawned, LoadtestError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "galion-edge-loadtest-{}-{stamp}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| LoadtestError::Spawn(format!("creating {}: {e}", dir.display())))?;
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => {
            let p = crate::demo::write_local_config(&dir)
                .map_err(|e| LoadtestError::Spawn(format!("writing the local config: {e}")))?;
            std::fs::write(&p, local_config_text(&dir)?)
                .map_err(|e| LoadtestError::Spawn(format!("writing {}: {e}", p.display())))?;
            p
        }
    };
    let cfg = Config::load(&path).map_err(|e| LoadtestError::Spawn(format!("{e}")))?;
    let plain = *cfg.listeners.http_proxy.first().ok_or_else(|| {
        LoadtestError::Spawn(format!(
            "{}: the load test needs a plain-HTTP listener (listeners.http_proxy)",
            path.display()
        ))
    })?;
    let https = cfg.listeners.https.first().copied();
    let exe = std::env::current_exe()
        .map_err(|e| LoadtestError::Spawn(format!("finding this binary: {e}")))?;
    let mut spawned = Spawned {
        dir: dir.clone(),
        remove_dir: true,
        children: Vec::new(),
        plain,
        https,
        proxy_pid: 0,
    };
    let start = |program: &Path, args: &[&str], log: &str| -> Result<Child, LoadtestError> {
        let log_path = dir.join(log);
        let log = std::fs::File::create(&log_path)
            .map_err(|e| LoadtestError::Spawn(format!("creating {}: {e}", log_path.display())))?;
        Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                LoadtestError::Spawn(format!("starting {} {args:?}: {e}", program.display()))
            })
    };
    let p = path.to_string_lossy().into_owned();
    spawned
        .children
        .push(start(&exe, &["origins", "-c", &p], "origins.log")?);
    spawned
        .children
        .push(start(proxy_bin, &["run", "-c", &p], "proxy.log")?);
    spawned.proxy_pid = spawned.children[1].id();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if probe(plain) {
            return Ok(spawned);
        }
        for (i, c) in spawned.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                let log = if i == 0 { "origins.log" } else { "proxy.log" };
                let tail = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
                spawned.remove_dir = false;
                return Err(LoadtestError::Spawn(format!(
                    "the {} exited ({status}) while starting; its log ({}):\n{}",
                    if i == 0 { "origins" } else { "proxy" },
                    dir.join(log).display(),
                    tail.lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                )));
            }
        }
        if Instant::now() >= deadline {
            spawned.remove_dir = false;
            return Err(LoadtestError::Spawn(format!(
                "the proxy on {plain} did not answer GET /api/health for galion.app within 30 s; logs in {}",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `GET /api/health` for galion.app through the proxy answers 200.
fn probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /api/health HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 12 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_config_moves_every_port_and_path() {
        let dir = std::env::temp_dir().join("galion-edge-loadtest-unit");
        let text = local_config_text(&dir).unwrap_or_default();
        for old in [
            "127.0.0.1:8088\"",
            "127.0.0.1:3001\"",
            "/tmp/galion-edge-local",
        ] {
            assert!(!text.contains(old), "{old} left in the config");
        }
        assert!(text.contains(&format!("{}/access.log", dir.display())));
    }

    #[test]
    fn proxy_binary_is_the_flag_then_the_variable_then_the_sibling() {
        let exe = Path::new("/opt/t/release/galion-edge-tools");
        let sibling = Path::new("/opt/t/release")
            .join(format!("galion-edge{}", std::env::consts::EXE_SUFFIX));
        let flag = Path::new("/x/flag");
        let env = || Some(std::ffi::OsString::from("/x/env"));
        assert_eq!(locate(Some(flag), env(), exe).0, flag);
        assert_eq!(locate(None, env(), exe).0, Path::new("/x/env"));
        assert_eq!(locate(None, Some("".into()), exe).0, sibling);
        let (path, from) = locate(None, None, exe);
        assert_eq!(path, sibling);
        assert!(from.contains("galion-edge-tools"), "{from}");
    }

    #[test]
    fn a_missing_proxy_binary_is_named_with_the_fix() {
        let e = proxy_binary(Some(Path::new("/nonexistent/galion-edge"))).map(|_| ());
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("/nonexistent/galion-edge (--proxy-bin)"),
            "{msg}"
        );
        assert!(msg.contains("cargo build -p galion-edge"), "{msg}");
        assert!(msg.contains(PROXY_BIN_ENV), "{msg}");
    }
}
