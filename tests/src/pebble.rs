//! A real ACME server on loopback for the ACME tests: Let's Encrypt's Pebble (Debian package
//! `pebble`, installed by scripts/setup.sh), with `pebble-challtestsrv` as its DNS server so
//! that every name resolves to 127.0.0.1. Pebble validates challenges for real: it fetches
//! `http://NAME:HTTP_PORT/.well-known/acme-challenge/TOKEN` (HTTP-01) and connects to
//! `NAME:TLS_PORT` offering `acme-tls/1` (TLS-ALPN-01), both on the proxy's listeners.
//!
//! Pebble's own https certificate (directory and management API) is generated here; the proxy
//! trusts it through `[acme] ca_root`. The root that signs the certificates Pebble issues is
//! random per run and read from the management API ([`Pebble::issuer_root_pem`]).

use crate::{free_port, Launched};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What Pebble issues.
#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    /// Lifetime of the certificates it issues, in seconds (0: Pebble's default, 5 years).
    pub validity_secs: u64,
    /// Names it refuses to issue for (`rejectedIdentifier`).
    pub blocklist: Vec<String>,
}

/// Pebble and its DNS server: prepared (ports picked, its https certificate written) before
/// the proxy starts, so the proxy's config can name it, and started when the proxy's ports are
/// known. Both processes are killed on drop.
pub struct Pebble {
    pebble: Option<Launched>,
    _dns: Launched,
    dns_port: u16,
    /// The directory's port.
    pub port: u16,
    /// The management API's port (`/roots/0`).
    pub management_port: u16,
    options: PebbleOptions,
    ports: (u16, u16),
    dir: PathBuf,
}

impl Pebble {
    /// Starts the DNS server, picks Pebble's ports and writes its https certificate into
    /// `dir`; Pebble itself is not running yet ([`Pebble::start`]). Panics with how to install
    /// Pebble if it is missing.
    pub fn prepare(dir: &Path, options: PebbleOptions) -> Pebble {
        let found = Command::new("pebble")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "pebble is not installed: `bash scripts/setup.sh` installs it (Debian package \
             pebble, with pebble-challtestsrv), which the ACME tests start on loopback"
        );
        std::fs::create_dir_all(dir).unwrap();
        let tls = crate::gen_cert(&["127.0.0.1", "localhost"]);
        tls.write(dir, "pebble-https");
        let dns_port = free_port();
        let dns = Launched::piped(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{}", free_port())])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]),
        );
        Pebble {
            pebble: None,
            _dns: dns,
            dns_port,
            port: free_port(),
            management_port: free_port(),
            options,
            ports: (0, 0),
            dir: dir.to_path_buf(),
        }
    }

    /// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`
    /// (127.0.0.1); waits until the directory accepts connections (10 s).
    pub fn start(&mut self, http_port: u16, tls_port: u16) {
        self.ports = (http_port, tls_port);
        self.start_again();
    }

    /// Starts Pebble again after [`Pebble::stop`]: a new CA (new roots, no accounts) on the
    /// same ports.
    pub fn start_again(&mut self) {
        assert!(self.pebble.is_none(), "pebble already running");
        let o = &self.options;
        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{}", self.port),
            "managementListenAddress": format!("127.0.0.1:{}", self.management_port),
            "certificate": self.dir.join("pebble-https.crt"),
            "privateKey": self.dir.join("pebble-https.key"),
            "httpPort": self.ports.0,
            "tlsPort": self.ports.1,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": o.blocklist,
        });
        if o.validity_secs > 0 {
            pebble["certificateValidityPeriod"] = o.validity_secs.into();
        }
        let path = self.dir.join("pebble.json");
        std::fs::write(&path, serde_json::json!({ "pebble": pebble }).to_string()).unwrap();
        let mut launched = Launched::piped(
            Command::new("pebble")
                .arg("-config")
                .arg(&path)
                .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
                // No random sleeps before validation, every nonce accepted, and every order
                // validated anew (no authorization reuse), so each order exercises a challenge.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
        );
        let addr = format!("127.0.0.1:{}", self.port);
        launched
            .wait_until(Duration::from_secs(10), || {
                TcpStream::connect(&addr).is_ok()
            })
            .unwrap_or_else(|e| panic!("pebble did not start: {e}"));
        self.pebble = Some(launched);
    }

    /// Stops Pebble (the CA goes down; the DNS server stays).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.pebble.take() {
            p.kill();
        }
    }

    /// The directory URL for `[acme] directory`.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The PEM file of Pebble's own https certificate, for `[acme] ca_root`.
    pub fn ca_root(&self) -> PathBuf {
        self.dir.join("pebble-https.crt")
    }

    /// What Pebble wrote (it logs to stdout and stderr).
    pub fn log(&self) -> String {
        self.pebble
            .as_ref()
            .map(|p| format!("{}{}", p.ready_in.read(), p.stderr.read()))
            .unwrap_or_default()
    }

    /// The root certificate (PEM) that the certificates Pebble issues chain to.
    pub async fn issuer_root_pem(&self) -> String {
        let https = std::fs::read(self.ca_root()).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&https).unwrap())
            .build()
            .unwrap();
        client
            .get(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
