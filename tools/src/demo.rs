//! `galion-edge-tools demo`: the sample origins of both sites and the proxy in front of them.
//!
//! The embedded `configs/local.toml` and its self-signed certificates are written to a temporary
//! directory (so the demo runs from anywhere), an origin is started on every backend address of
//! every upstream group, and the proxy serves the config in the foreground, in this process
//! (`galion_edge::serve`, as `galion-edge run`).

use crate::origin::spawn_origin;
use crate::LOCAL_CONFIG;
use anyhow::Context;
use proxy_core::config::Config;
use std::path::{Path, PathBuf};

const FILES: [(&str, &str); 5] = [
    (
        "local-certs/galion.app.crt",
        include_str!("../../configs/local-certs/galion.app.crt"),
    ),
    (
        "local-certs/galion.app.key",
        include_str!("../../configs/local-certs/galion.app.key"),
    ),
    (
        "local-certs/galion.studio.crt",
        include_str!("../../configs/local-certs/galion.studio.crt"),
    ),
    (
        "local-certs/galion.studio.key",
        include_str!("../../configs/local-certs/galion.studio.key"),
    ),
    (
        "local-webroot/.well-known/acme-challenge/demo-token",
        include_str!("../../configs/local-webroot/.well-known/acme-challenge/demo-token"),
    ),
];

/// Writes the embedded local config and its files into `dir`; returns the config path.
pub fn write_local_config(dir: &Path) -> std::io::Result<PathBuf> {
    for (rel, text) in FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text)?;
    }
    let path = dir.join("local.toml");
    std::fs::write(&path, LOCAL_CONFIG)?;
    Ok(path)
}

/// Starts a sample origin on every backend address of every upstream group of the config at
/// `path`, then waits until the process is killed (`galion-edge-tools origins -c FILE`).
pub fn run_origins(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut started = Vec::new();
        for g in &config.upstreams {
            for addr in &g.backends {
                let origin = spawn_origin(&g.name, *addr).await.with_context(|| {
                    format!(
                        "starting sample origin {} on {addr} (is the port free?)",
                        g.name
                    )
                })?;
                // Millions of load-test requests would otherwise grow `Origin::seen`
                // without bound.
                origin.set_recording(false);
                println!("origin {:<16} {}", origin.name, origin.addr);
                started.push(origin);
            }
        }
        std::future::pending::<anyhow::Result<()>>().await
    })
}

/// Runs the demo. `configs` overrides the directory `local.toml` is read from.
pub fn run(configs: Option<PathBuf>) -> anyhow::Result<()> {
    let path = match configs {
        Some(dir) => dir.join("local.toml"),
        None => {
            let dir = std::env::temp_dir().join(format!("galion-edge-demo-{}", std::process::id()));
            write_local_config(&dir).context("writing the embedded local config")?
        }
    };
    let config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;

    // Origins run on their own runtime thread; Pingora owns the main thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut started = Vec::new();
    for g in &config.upstreams {
        for addr in &g.backends {
            let origin = rt.block_on(spawn_origin(&g.name, *addr)).with_context(|| {
                format!(
                    "starting sample origin {} on {addr} (is the port free?)",
                    g.name
                )
            })?;
            started.push(origin);
        }
    }
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));

    let https = config
        .listeners
        .https
        .first()
        .map(|a| a.port())
        .unwrap_or(8443);
    let http = config
        .listeners
        .http
        .first()
        .map(|a| a.port())
        .unwrap_or(8080);
    let admin = config
        .admin_listen
        .first()
        .map(|a| a.port())
        .unwrap_or(9113);
    let plain = config
        .listeners
        .http_proxy
        .first()
        .map(|a| a.port())
        .unwrap_or(8088);
    println!(
        "galion-edge-tools demo: sample origins for both sites, the proxy in front (config {})",
        path.display()
    );
    for o in &started {
        println!("  origin {:<16} {}", o.name, o.addr);
    }
    println!(
        "\nTry, in another terminal:\n\
         \x20 curl -si -H 'Host: galion.app' http://127.0.0.1:{plain}/api/users        # app API: see what the origin received\n\
         \x20 curl -si -H 'Host: galion.studio' http://127.0.0.1:{plain}/             # studio frontend\n\
         \x20 curl -si -H 'Host: evil.example' http://127.0.0.1:{plain}/              # unknown host: 421\n\
         \x20 curl -si -H 'Host: galion.app' http://127.0.0.1:{http}/login?next=/      # port 80 role: 301 to https\n\
         \x20 curl -s  -H 'Host: galion.app' http://127.0.0.1:{http}/.well-known/acme-challenge/demo-token\n\
         \x20 curl -sik --http2 --resolve galion.studio:{https}:127.0.0.1 https://galion.studio:{https}/api/x  # TLS, h2, SNI\n\
         \x20 curl -si -H 'Host: galion.app' http://127.0.0.1:{plain}/api/slow?ms=200  # upstream time in the access log\n\
         \x20 curl -si -H 'Host: galion.app' http://127.0.0.1:{plain}/api/users | grep -i x-cache   # MISS, then HIT\n\
         \x20 curl -s -X POST 'http://127.0.0.1:{admin}/cache/purge?prefix=galion.app/api/'   # purge; stats at /cache/stats\n\
         \nAccess log lines follow. Ctrl-C stops.\n"
    );
    galion_edge::serve(config, Some(&path), false)
}
