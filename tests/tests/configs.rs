//! Config validation through the real binary: `galion-edge check -c FILE [--root DIR]`.
//!
//! Every shipped config in `configs/` passes; each broken config fails with exit status 1, no
//! panic, and an `error: PATH ...` line naming the field at fault and what is wrong; inputs that
//! are not configs at all (empty, binary garbage, missing, a directory) fail cleanly too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use proxy_core::config::{RawDuration, RawSize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What one `check` run printed.
struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Checked {
    fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Exit 0 with the `is OK` line.
    fn assert_ok(&self, what: &str) {
        assert!(
            self.code == Some(0) && self.stdout.contains("is OK"),
            "{what}: expected `check` to pass\n{}",
            self.show()
        );
        self.assert_no_panic(what);
    }

    /// Exit 1 (not a panic's 101), the `test failed` line, and every `expected` substring.
    fn assert_failed(&self, what: &str, expected: &[&str]) {
        self.assert_no_panic(what);
        assert_eq!(
            self.code,
            Some(1),
            "{what}: expected `check` to fail with exit status 1\n{}",
            self.show()
        );
        assert!(
            self.stdout.contains("test failed"),
            "{what}: no `test failed` line\n{}",
            self.show()
        );
        for e in expected {
            assert!(
                self.stdout.contains(e),
                "{what}: output does not mention {e:?}\n{}",
                self.show()
            );
        }
    }

    fn assert_no_panic(&self, what: &str) {
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "{what}: the binary panicked\n{}",
            self.show()
        );
    }

    /// The `error: ...` lines.
    fn error_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }
}

/// Runs `check -c path [--root root]` on the binary under test.
fn check(path: &Path, root: Option<&Path>) -> Checked {
    let mut cmd = Command::new(bin!());
    cmd.args(["check", "-c"]).arg(path);
    if let Some(r) = root {
        cmd.arg("--root").arg(r);
    }
    let out = cmd.output().expect("run galion-edge check");
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `text` as `galion.toml` in `dir` and checks it.
fn check_text(dir: &Path, text: &str) -> Checked {
    let p = dir.join("galion.toml");
    std::fs::write(&p, text).unwrap();
    check(&p, None)
}

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// A small valid config: one upstream, one site with one route, a plain proxy listener
/// (`check` does not bind, so port 1 is fine). Each bad case breaks one thing in it.
const VALID: &str = r#"[server]
threads = 2

[listeners]
http_proxy = ["127.0.0.1:1"]

[downstream]
max_body_size = "1MB"

[upstreams.web]
backends = ["127.0.0.1:3001"]

[[sites]]
name = "example"
hosts = ["example.test"]

[[sites.routes]]
path = "/"
upstream = "web"
"#;

/// `VALID` with `from` replaced by `to`; panics if `from` is not in it, so a case can never
/// silently test the valid config.
fn edit(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} is not in VALID");
    VALID.replacen(from, to, 1)
}

/// `VALID` with the site given `tls = { cert, key }` (paths relative to the config's directory).
fn with_tls(cert: &str, key: &str) -> String {
    edit(
        "hosts = [\"example.test\"]\n",
        &format!("hosts = [\"example.test\"]\ntls = {{ cert = {cert:?}, key = {key:?} }}\n"),
    )
}

/// `VALID` with https and port-80 listeners, its site on ACME (`tls`, default
/// `{ acme = true }`) and `acme` as the `[acme]` section (a `state_dir` in the config's
/// directory is added unless `acme` sets one).
fn with_acme(acme: &str, tls: &str) -> String {
    let state = if acme.contains("state_dir") {
        ""
    } else {
        "state_dir = \"acme-state\"\n"
    };
    let listeners = edit(
        "http_proxy = [\"127.0.0.1:1\"]\n",
        "http_proxy = [\"127.0.0.1:1\"]\nhttps = [\"127.0.0.1:2\"]\nhttp = [\"127.0.0.1:3\"]\n",
    );
    let site = listeners.replacen(
        "hosts = [\"example.test\"]\n",
        &format!("hosts = [\"example.test\"]\ntls = {tls}\n"),
        1,
    );
    format!("[acme]\n{state}{acme}\n\n{site}")
}

const ACME_OK: &str = "directory = \"letsencrypt-staging\"\nemail = \"ops@example.test\"";

/// Certificate files for the TLS cases, in the config's directory.
fn write_cert_files(dir: &Path) {
    let a = gen_cert(&["example.test"]);
    let b = gen_cert(&["other.test"]);
    a.write(dir, "good");
    b.write(dir, "other");
    std::fs::write(dir.join("hello.crt"), "hello\n").unwrap();
}

// ---- 1. The shipped configs pass ----

/// The production tree galion.toml expects, under a temp root: certificates for both sites,
/// the ACME webroot and the access log directory.
fn production_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (site, hosts) in [
        ("galion.app", ["galion.app", "www.galion.app"]),
        ("galion.studio", ["galion.studio", "www.galion.studio"]),
    ] {
        let dir = root.path().join("etc/letsencrypt/live").join(site);
        std::fs::create_dir_all(&dir).unwrap();
        let c = gen_cert(&hosts);
        std::fs::write(dir.join("fullchain.pem"), &c.cert_pem).unwrap();
        std::fs::write(dir.join("privkey.pem"), &c.key_pem).unwrap();
    }
    std::fs::create_dir_all(root.path().join("var/www/certbot")).unwrap();
    std::fs::create_dir_all(root.path().join("var/log/galion-edge")).unwrap();
    root
}

#[test]
fn every_shipped_config_passes_check() {
    let mut seen = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // galion.toml names production paths; give it a tree that has them.
        let root = (name == "galion.toml").then(production_root);
        let out = check(&path, root.as_ref().map(|r| r.path()));
        out.assert_ok(&name);
        seen.push(name);
    }
    for must in ["galion.toml", "local.toml"] {
        assert!(
            seen.iter().any(|s| s == must),
            "{must} not found in configs/"
        );
    }
}

#[test]
fn production_config_passes_with_its_tree_under_root() {
    let root = production_root();
    let out = check(&configs_dir().join("galion.toml"), Some(root.path()));
    out.assert_ok("galion.toml --root");
    assert!(
        out.stdout
            .contains("(2 sites, 6 upstream groups, 6 routes)"),
        "{}",
        out.show()
    );
}

#[test]
fn production_config_without_its_files_names_the_certificate() {
    if Path::new("/etc/letsencrypt/live/galion.app").exists() {
        eprintln!("skipped: this machine has /etc/letsencrypt/live/galion.app");
        return;
    }
    let out = check(&configs_dir().join("galion.toml"), None);
    out.assert_failed(
        "galion.toml without --root",
        &[
            "error: sites[0].tls.cert = \"/etc/letsencrypt/live/galion.app/fullchain.pem\"",
            "cannot read",
        ],
    );
}

#[test]
fn a_root_without_the_certificates_still_fails() {
    let root = tempfile::tempdir().unwrap();
    let out = check(&configs_dir().join("galion.toml"), Some(root.path()));
    out.assert_failed(
        "galion.toml --root <empty dir>",
        &["error: sites[0].tls.cert", "cannot read", "acme.webroot"],
    );
}

// ---- 2. Broken configs: one error each, with its field path and its own message ----

/// (name, config text, substrings the output must contain). Each case expects exactly one error.
fn bad_cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        (
            "unknown field",
            edit("threads = 2", "thread = 4"),
            vec!["error: server.thread", "unknown field `thread`", "(line 2)"],
        ),
        (
            "wrong type",
            edit("threads = 2", "threads = \"four\""),
            vec![
                "error: server.threads",
                "invalid type: string \"four\"",
                "(line 2)",
            ],
        ),
        (
            "TOML syntax error",
            edit("[downstream]", "[downstream"),
            vec!["error: file", "(line 7)"],
        ),
        (
            "listener address without a colon",
            edit("\"127.0.0.1:1\"", "\"localhost443\""),
            vec![
                "error: listeners.http_proxy[0] = \"localhost443\"",
                "expected an IP address and port",
            ],
        ),
        (
            "route to an undefined upstream",
            edit("upstream = \"web\"", "upstream = \"nope\""),
            vec![
                "error: sites[0].routes[0].upstream = \"nope\"",
                "no upstream group has this name",
                "defined groups: web",
            ],
        ),
        (
            "host claimed by two sites",
            format!(
                "{VALID}\n[[sites]]\nhosts = [\"EXAMPLE.test\"]\nroutes = [{{ path = \"/\", upstream = \"web\" }}]\n"
            ),
            vec![
                "error: sites[1].hosts[0]",
                "already claimed by sites[0]",
            ],
        ),
        (
            "missing certificate file",
            with_tls("missing.crt", "good.key"),
            vec!["error: sites[0].tls.cert", "missing.crt", "cannot read"],
        ),
        (
            "garbage certificate file",
            with_tls("hello.crt", "good.key"),
            vec!["error: sites[0].tls.cert", "hello.crt", "no PEM certificate"],
        ),
        (
            "key of another certificate",
            with_tls("good.crt", "other.key"),
            vec!["error: sites[0].tls.key", "other.key", "does not match"],
        ),
        (
            "certificate given as the key",
            with_tls("good.crt", "good.crt"),
            vec!["error: sites[0].tls.key", "no usable PEM private key"],
        ),
        (
            "empty upstream group",
            edit("backends = [\"127.0.0.1:3001\"]", "backends = []"),
            vec![
                "error: upstreams.web.backends = []",
                "at least one backend",
            ],
        ),
        (
            "nonsense size",
            edit("max_body_size = \"1MB\"", "max_body_size = \"ten megs\""),
            vec![
                "error: downstream.max_body_size = \"ten megs\"",
                "expected a size",
            ],
        ),
        (
            "nonsense duration",
            edit("upstream = \"web\"", "upstream = \"web\"\nread_timeout = \"soon\""),
            vec![
                "error: sites[0].routes[0].read_timeout = \"soon\"",
                "expected a duration",
            ],
        ),
        (
            "zero duration",
            edit(
                "backends = [\"127.0.0.1:3001\"]",
                "backends = [\"127.0.0.1:3001\"]\nconnect_timeout = \"0s\"",
            ),
            vec![
                "error: upstreams.web.connect_timeout = \"0s\"",
                "must be greater than zero",
            ],
        ),
        (
            "duration over a week",
            edit("threads = 2", "threads = 2\ngrace_period = \"8d\""),
            vec!["error: server.grace_period = \"8d\"", "longer than 7 days"],
        ),
        (
            "bad health-check kind",
            edit(
                "backends = [\"127.0.0.1:3001\"]",
                "backends = [\"127.0.0.1:3001\"]\nhealth_check = { kind = \"icmp\" }",
            ),
            vec![
                "error: upstreams.web.health_check.kind = \"icmp\"",
                "expected \"tcp\", \"http\" or \"none\"",
            ],
        ),
        (
            "health-check path without kind http",
            edit(
                "backends = [\"127.0.0.1:3001\"]",
                "backends = [\"127.0.0.1:3001\"]\nhealth_check = { path = \"/health\" }",
            ),
            vec![
                "error: upstreams.web.health_check.path",
                "only used with kind = \"http\"",
            ],
        ),
        (
            "duplicate route prefix",
            format!("{VALID}\n[[sites.routes]]\npath = \"/\"\nupstream = \"web\"\n"),
            vec![
                "error: sites[0].routes[1].path = \"/\"",
                "same prefix",
            ],
        ),
        (
            "route path not starting with a slash",
            edit("path = \"/\"", "path = \"api\""),
            vec![
                "error: sites[0].routes[0].path = \"api\"",
                "starting with '/'",
            ],
        ),
        (
            "Server header with a version",
            edit(
                "name = \"example\"",
                "name = \"example\"\nheaders.server = \"nginx/1.25\"",
            ),
            vec![
                "error: sites[0].headers.server = \"nginx/1.25\"",
                "must not carry a version",
            ],
        ),
        (
            "header value with a control character",
            edit(
                "name = \"example\"",
                "name = \"example\"\nheaders.x_frame_options = \"DENY\\u0001\"",
            ),
            vec![
                "error: sites[0].headers.x_frame_options",
                "visible ASCII",
            ],
        ),
        (
            "hop-by-hop header in extra",
            edit(
                "name = \"example\"",
                "name = \"example\"\nheaders.extra = { Connection = \"close\" }",
            ),
            vec![
                "error: sites[0].headers.extra.Connection",
                "managed by the proxy",
            ],
        ),
        (
            "host name with a port",
            edit("hosts = [\"example.test\"]", "hosts = [\"example.test:443\"]"),
            vec![
                "error: sites[0].hosts[0] = \"example.test:443\"",
                "without port or scheme",
            ],
        ),
        (
            "backend port 0",
            edit("\"127.0.0.1:3001\"", "\"127.0.0.1:0\""),
            vec![
                "error: upstreams.web.backends[0] = \"127.0.0.1:0\"",
                "port 0",
            ],
        ),
        (
            "same address on two listeners",
            edit(
                "http_proxy = [\"127.0.0.1:1\"]",
                "http_proxy = [\"127.0.0.1:1\"]\nhttp = [\"127.0.0.1:1\"]",
            ),
            vec![
                "error: listeners.http_proxy[0] = 127.0.0.1:1",
                "address already used by listeners.http[0]",
            ],
        ),
        (
            "admin listener on a proxy listener's address",
            edit(
                "[downstream]",
                "[admin]\nlisten = [\"127.0.0.1:1\"]\n\n[downstream]",
            ),
            vec![
                "error: admin.listen[0] = 127.0.0.1:1",
                "address already used by listeners.http_proxy[0]",
            ],
        ),
        (
            "https listener and a site without tls",
            edit(
                "http_proxy = [\"127.0.0.1:1\"]",
                "http_proxy = [\"127.0.0.1:1\"]\nhttps = [\"127.0.0.1:2\"]",
            ),
            vec!["error: sites[0].tls", "missing"],
        ),
        (
            "threads out of range",
            edit("threads = 2", "threads = 5000"),
            vec!["error: server.threads = 5000", "0 (one per core) to 1024"],
        ),
        (
            "unknown access log format",
            format!("[access_log]\nformat = \"xml\"\n\n{VALID}"),
            vec![
                "error: access_log.format = \"xml\"",
                "expected \"combined\" or \"json\"",
            ],
        ),
        (
            "redis limits without [redis]",
            format!("[limits]\nbackend = \"redis\"\n\n{VALID}"),
            vec![
                "error: limits.backend = \"redis\"",
                "needs a [redis] section",
            ],
        ),
        (
            "unknown limits backend",
            format!("[limits]\nbackend = \"memcached\"\n\n{VALID}"),
            vec![
                "error: limits.backend = \"memcached\"",
                "expected \"local\"",
            ],
        ),
        (
            "redis url of another scheme, password redacted",
            format!("[redis]\nurl = \"http://u:secret@127.0.0.1:6379/4\"\n\n{VALID}"),
            vec![
                "error: redis.url = \"http://u:***@127.0.0.1:6379/4\"",
                "expected a redis:// URL",
            ],
        ),
        (
            "redis database out of range",
            format!("[redis]\nurl = \"redis://127.0.0.1:6379/16\"\n\n{VALID}"),
            vec!["error: redis.url", "database 16 is outside 0..15"],
        ),
        (
            "redis timeout too long",
            format!(
                "[redis]\nurl = \"redis://127.0.0.1:6379/4\"\ntimeout = \"10s\"\n\n{VALID}"
            ),
            vec!["error: redis.timeout = \"10s\"", "must be from 1ms to 5s"],
        ),
        (
            "redis without connections",
            format!("[redis]\nurl = \"redis://127.0.0.1:6379/4\"\nconnections = 0\n\n{VALID}"),
            vec!["error: redis.connections = 0", "between 1 and 64"],
        ),
        (
            "no credential cookies at all",
            format!("[cache]\ncredential_cookies = []\n\n{VALID}"),
            vec![
                "error: cache.credential_cookies = []",
                "remove the setting (every cookie counts) or name the session cookies",
            ],
        ),
        (
            "unknown freshness mode",
            format!("[cache.zones.api]\npath = \"zone\"\nfreshness = \"rfc\"\n\n{VALID}"),
            vec![
                "error: cache.zones.api.freshness = \"rfc\"",
                "expected \"policy\"",
            ],
        ),
        (
            "a heuristic in policy mode",
            format!("[cache.zones.api]\npath = \"zone\"\nheuristic = \"10%\"\n\n{VALID}"),
            vec![
                "error: cache.zones.api.heuristic = \"10%\"",
                "only used with freshness = \"origin\"",
            ],
        ),
        (
            "a heuristic that is not a percentage",
            format!(
                "[cache.zones.api]\npath = \"zone\"\nfreshness = \"origin\"\nheuristic = \"0.1\"\n\n{VALID}"
            ),
            vec![
                "error: cache.zones.api.heuristic = \"0.1\"",
                "expected a whole percentage",
            ],
        ),
        (
            "Cache-Control as a targeted field",
            format!("[cache]\ntargeted_fields = [\"Cache-Control\"]\n\n{VALID}"),
            vec![
                "error: cache.targeted_fields[0] = \"Cache-Control\"",
                "list only targeted fields",
            ],
        ),
        (
            "a credential cookie with its value",
            format!("[cache]\ncredential_cookies = [\"session\", \"sid=1\"]\n\n{VALID}"),
            vec![
                "error: cache.credential_cookies[1] = \"sid=1\"",
                "not a cookie name",
            ],
        ),
        (
            "an ACME site without a directory",
            with_acme("email = \"ops@example.test\"", "{ acme = true }"),
            vec!["error: acme.directory", "missing", "letsencrypt"],
        ),
        (
            "an ACME directory over plain http",
            with_acme(
                "directory = \"http://ca.example.test/dir\"\nemail = \"ops@example.test\"",
                "{ acme = true }",
            ),
            vec![
                "error: acme.directory = \"http://ca.example.test/dir\"",
                "https URL of an ACME (RFC 8555) directory",
            ],
        ),
        (
            "an ACME site without an email",
            with_acme("directory = \"letsencrypt\"", "{ acme = true }"),
            vec!["error: acme.email", "missing"],
        ),
        (
            "an ACME email that is not one",
            with_acme("directory = \"letsencrypt\"\nemail = \"ops\"", "{ acme = true }"),
            vec!["error: acme.email = \"ops\"", "not an email address"],
        ),
        (
            "a DNS-01 challenge",
            with_acme(&format!("{ACME_OK}\nchallenge = \"dns-01\""), "{ acme = true }"),
            vec![
                "error: acme.challenge = \"dns-01\"",
                "\"http-01\" (port 80) or \"tls-alpn-01\" (port 443)",
            ],
        ),
        (
            "ACME beside certificate files",
            with_acme(ACME_OK, "{ acme = true, cert = \"good.crt\", key = \"good.key\" }"),
            vec!["error: sites[0].tls.acme = true", "either the files or ACME"],
        ),
        (
            "an ACME state directory that cannot be created",
            with_acme(
                &format!("{ACME_OK}\nstate_dir = \"/proc/galion-edge-acme\""),
                "{ acme = true }",
            ),
            vec![
                "error: acme.state_dir = \"/proc/galion-edge-acme\"",
                "cannot be created or written",
            ],
        ),
        (
            "an ACME ca_root that is not PEM",
            with_acme(&format!("{ACME_OK}\nca_root = \"hello.crt\""), "{ acme = true }"),
            vec!["error: acme.ca_root = \"hello.crt\"", "not a readable PEM file"],
        ),
        (
            "missing ACME webroot",
            format!("[acme]\nwebroot = \"no-such-dir\"\n\n{VALID}"),
            vec![
                "error: acme.webroot = \"no-such-dir\"",
                "not a readable directory",
            ],
        ),
    ]
}

#[test]
fn the_valid_base_configs_pass() {
    let dir = tempfile::tempdir().unwrap();
    write_cert_files(dir.path());
    check_text(dir.path(), VALID).assert_ok("VALID");
    check_text(dir.path(), &with_tls("good.crt", "good.key")).assert_ok("VALID with tls");
    let shared = format!(
        "[redis]\nurl = \"redis://127.0.0.1:6379/4\"\nkey_prefix = \"galion:\"\ntimeout = \"20ms\"\n\
         purge_channel = \"\"\n\n[limits]\nbackend = \"redis\"\n\n{VALID}"
    );
    check_text(dir.path(), &shared).assert_ok("VALID with Redis limits");
    check_text(dir.path(), &with_acme(ACME_OK, "{ acme = true }")).assert_ok("VALID with ACME");
    let state = dir.path().join("acme-state");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700,
        "check creates the state directory private"
    );
}

#[test]
fn each_broken_config_fails_with_its_own_message() {
    let dir = tempfile::tempdir().unwrap();
    write_cert_files(dir.path());
    let cases = bad_cases();
    assert!(cases.len() >= 12);
    let mut names = std::collections::HashSet::new();
    for (name, text, expected) in &cases {
        assert!(names.insert(*name), "case {name:?} listed twice");
        let out = check_text(dir.path(), text);
        out.assert_failed(name, expected);
        // Only the intended thing is broken: one error, one `error:` line.
        assert!(
            out.stdout.contains("test failed (1 error)") && out.error_lines().len() == 1,
            "{name}: expected exactly one error\n{}",
            out.show()
        );
    }
}

#[test]
fn two_independent_errors_are_both_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = edit("max_body_size = \"1MB\"", "max_body_size = \"ten megs\"").replacen(
        "upstream = \"web\"",
        "upstream = \"nope\"",
        1,
    );
    let out = check_text(dir.path(), &text);
    out.assert_failed(
        "two errors",
        &[
            "error: downstream.max_body_size = \"ten megs\"",
            "error: sites[0].routes[0].upstream = \"nope\"",
            "test failed (2 errors)",
        ],
    );
    assert_eq!(out.error_lines().len(), 2, "{}", out.show());
}

#[test]
fn errors_in_every_section_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[sites]]\nhosts = [\"example.test\"]\nroutes = [{{ path = \"/x\", upstream = \"web\" }}]\n",
        edit("threads = 2", "threads = 2\ngrace_period = \"0s\"")
            .replacen("\"127.0.0.1:1\"", "\"127.0.0.1\"", 1)
            .replacen("\"127.0.0.1:3001\"", "\"127.0.0.1:3001\", \"127.0.0.1:3001\"", 1)
    );
    let out = check_text(dir.path(), &text);
    out.assert_failed(
        "four errors",
        &[
            "error: server.grace_period = \"0s\"",
            "error: listeners.http_proxy[0] = \"127.0.0.1\"",
            "error: upstreams.web.backends[1]",
            "listed twice in this group",
            "error: sites[1].hosts[0]",
            "test failed (4 errors)",
        ],
    );
}

// ---- 3. Inputs that are not configs at all ----

#[test]
fn an_empty_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_text(dir.path(), "");
    out.assert_failed("empty file", &["error: listeners", "no listener"]);
}

#[test]
fn binary_garbage_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Deterministic pseudo-random bytes (xorshift), with sequences that are never UTF-8.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    bytes.splice(0..0, [0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80]);
    let p = dir.path().join("garbage.toml");
    std::fs::write(&p, &bytes).unwrap();
    let out = check(&p, None);
    out.assert_failed(
        "binary garbage",
        &[
            "error: file",
            "garbage.toml",
            "cannot read the config file",
            "UTF-8",
        ],
    );
}

#[test]
fn text_garbage_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in [
        "\u{feff}é€😀 = = [[[\n",
        "[sites]\nhosts = 3\n",
        "sites = \"all\"\n",
        "[[upstreams]]\n",
        "x = \"\\uD800\"\n",
        "\0\0\0",
        "[server]\nthreads = 99999999999999999999999\n",
    ]
    .iter()
    .enumerate()
    {
        let out = check_text(dir.path(), text);
        out.assert_failed(&format!("text garbage #{i}: {text:?}"), &["error: "]);
    }
}

#[test]
fn a_missing_config_path_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such-file.toml");
    let out = check(&p, None);
    out.assert_failed(
        "missing file",
        &[
            "error: file",
            "no-such-file.toml",
            "cannot read the config file",
            "No such file",
        ],
    );
}

#[test]
fn a_directory_as_config_path_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), None);
    out.assert_failed(
        "directory",
        &["error: file", "cannot read the config file", "directory"],
    );
}

// ---- Regressions for validation bugs found while writing these tests ----

#[test]
fn non_ascii_header_values_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("server", "gälion"),
        ("x_frame_options", "SAMEORIGIN\u{a0}"),
    ] {
        let text = edit(
            "name = \"example\"",
            // A TOML basic string holds the character itself (Rust's {:?} would write \u{a0}).
            &format!("name = \"example\"\nheaders.{key} = \"{value}\""),
        );
        let out = check_text(dir.path(), &text);
        out.assert_failed(
            &format!("headers.{key} = {value:?}"),
            &[&format!("error: sites[0].headers.{key}"), "visible ASCII"],
        );
    }
}

#[test]
fn fractional_or_negative_units_say_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, expect) in [
        (
            "upstream = \"web\"",
            "upstream = \"web\"\nread_timeout = 0.5",
            "expected a duration",
        ),
        (
            "upstream = \"web\"",
            "upstream = \"web\"\nread_timeout = -1",
            "expected a duration",
        ),
        (
            "max_body_size = \"1MB\"",
            "max_body_size = 1.5",
            "expected a size",
        ),
    ] {
        let out = check_text(dir.path(), &edit(from, to));
        out.assert_failed(to, &[expect]);
        assert!(!out.stdout.contains("untagged enum"), "{}", out.show());
    }
}

#[test]
fn a_bad_default_header_is_reported_once_at_its_own_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[headers]\nserver = \"nginx/1.25\"\n\n{VALID}\n[[sites]]\nhosts = [\"b.test\"]\nroutes = [{{ path = \"/\", upstream = \"web\" }}]\n"
    );
    let out = check_text(dir.path(), &text);
    out.assert_failed(
        "[headers] server with a version",
        &["error: headers.server = \"nginx/1.25\"", "(1 error)"],
    );
    assert!(
        !out.stdout.contains("sites[0].headers.server"),
        "{}",
        out.show()
    );
}

#[test]
fn a_host_listed_twice_in_one_site_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = edit(
        "hosts = [\"example.test\"]",
        "hosts = [\"example.test\", \"EXAMPLE.test\"]",
    );
    let out = check_text(dir.path(), &text);
    out.assert_failed(
        "host twice in one site",
        &[
            "error: sites[0].hosts[1] = \"EXAMPLE.test\": listed twice in this site",
            "(1 error)",
        ],
    );
    assert!(!out.stdout.contains("already claimed"), "{}", out.show());
}

#[test]
fn every_error_of_one_route_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = edit(
        "path = \"/\"\nupstream = \"web\"",
        "path = \"api\"\nupstream = \"nope\"\nmax_body_size = \"lots\"\nread_timeout = \"soon\"",
    );
    let out = check_text(dir.path(), &text);
    out.assert_failed(
        "route with four errors",
        &[
            "error: sites[0].routes[0].path = \"api\"",
            "error: sites[0].routes[0].upstream = \"nope\"",
            "error: sites[0].routes[0].max_body_size = \"lots\"",
            "error: sites[0].routes[0].read_timeout = \"soon\"",
            "(4 errors)",
        ],
    );
}

#[test]
fn missing_listeners_and_sites_are_reported_with_other_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_text(dir.path(), "[server]\nthreads = 5000\n");
    out.assert_failed(
        "no listener, no site, bad threads",
        &[
            "error: server.threads = 5000",
            "error: listeners",
            "error: sites",
            "(3 errors)",
        ],
    );
}

#[test]
fn the_grafana_dashboard_parses_and_queries_exported_metrics() {
    let dir = configs_dir().join("monitoring");
    let text = std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = v["panels"].as_array().unwrap();
    assert!(panels.len() >= 9, "{} panels", panels.len());
    // Every metric a panel or an alert queries is one the proxy exports: named in the source
    // of proxy-core (each source exports its own families).
    fn sources(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut exported = String::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy-core/src"),
        &mut exported,
    );
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    for source in [text.as_str(), alerts.as_str()] {
        for (i, _) in source.match_indices("galion_edge_") {
            let name: String = source[i + "galion_edge_".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                exported.contains(&format!("\"{base}\"")) || exported.contains(base),
                "{name} is not exported"
            );
        }
    }
}

/// A row of a table in `docs/NAME`: the cells of the row whose first cell is `` `key` ``, in
/// the part of the page between the heading that names `section` and the next `##` heading.
fn doc_row(name: &str, section: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name),
    )
    .unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| !(l.starts_with('#') && l.contains(section)))
        .skip(1)
        .take_while(|l| !l.starts_with("## "));
    let row = lines
        .find(|l| l.starts_with(&format!("| `{key}` |")))
        .unwrap_or_else(|| panic!("docs/{name}: no row for {key} under {section}"));
    row.trim_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_string())
        .collect()
}

/// The code spans of a cell, without their backticks: `` `"10m"` (`static`: `"7d"`) `` gives
/// `"10m"`, `static`, `"7d"`.
fn spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// A duration as the docs write it (`"5s"` or `5s`), read by the config's own parser.
fn doc_duration(span: &str) -> Duration {
    RawDuration::Text(span.trim_matches('"').to_string())
        .parse()
        .unwrap_or_else(|e| panic!("{span}: {e}"))
}

/// A size as the docs write it (`32k`, `10MB`, `1 GiB`), read by the config's own parser.
fn doc_size(span: &str) -> u64 {
    RawSize::Text(span.trim_matches('"').to_string())
        .parse()
        .unwrap_or_else(|e| panic!("{span}: {e}"))
}

/// The defaults docs/configuration.md (and docs/headers-and-limits.md, for `[downstream]`) list
/// are the constants their owners export (and the validator uses), so the two cannot drift
/// apart again (the docs once said brotli 4 while the code used 5). Where a range is a policy
/// of the owner, the page's accepted range is checked too.
#[test]
fn documented_defaults_are_the_owners_constants() {
    use proxy_core::defaults::{acme, admin, cache, client_ip, compression, headers, ratelimit};
    use proxy_core::defaults::{redis_link, server, tls, upstream};
    let conf = |section: &str, key: &str| doc_row("configuration.md", section, key);
    let default = |section: &str, key: &str| conf(section, key)[1].clone();
    let first_span = |section: &str, key: &str| spans(&default(section, key))[0].to_string();
    let duration = |section: &str, key: &str| doc_duration(&first_span(section, key));
    let quoted = |s: &str| format!("{s:?}");

    // [server]
    let s = "`[server]`";
    assert!(conf(s, "threads")[2].starts_with(&format!("0–{}.", server::MAX_THREADS)));
    assert_eq!(
        first_span(s, "work_stealing"),
        server::DEFAULT_WORK_STEALING.to_string()
    );
    assert_eq!(duration(s, "grace_period"), server::DEFAULT_GRACE_PERIOD);
    assert_eq!(
        duration(s, "graceful_shutdown_timeout"),
        server::DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT
    );
    assert_eq!(first_span(s, "pid_file"), quoted(server::DEFAULT_PID_FILE));
    assert_eq!(
        first_span(s, "upgrade_sock"),
        quoted(server::DEFAULT_UPGRADE_SOCK)
    );
    assert_eq!(
        first_span(s, "upstream_keepalive_pool_size"),
        server::DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE.to_string()
    );

    // [downstream]: configuration.md sends the reader to headers-and-limits.md's table.
    let limits = |key: &str| doc_row("headers-and-limits.md", "Limits", key);
    let d = |key: &str| spans(&limits(key)[1])[0].to_string();
    let range = |key: &str| limits(key)[2].clone();
    assert_eq!(
        doc_duration(&d("client_header_timeout")),
        server::DEFAULT_CLIENT_HEADER_TIMEOUT
    );
    assert_eq!(
        doc_duration(&d("keepalive_timeout")),
        server::DEFAULT_KEEPALIVE_TIMEOUT
    );
    assert_eq!(
        d("keepalive_requests"),
        server::DEFAULT_KEEPALIVE_REQUESTS.to_string()
    );
    assert_eq!(
        doc_size(&d("max_header_bytes")),
        server::DEFAULT_MAX_HEADER_BYTES
    );
    let bytes = server::MAX_HEADER_BYTES_RANGE;
    assert_eq!(
        range("max_header_bytes"),
        format!("{} KiB – {} MiB", bytes.start() >> 10, bytes.end() >> 20)
    );
    assert_eq!(
        d("max_header_count"),
        server::DEFAULT_MAX_HEADER_COUNT.to_string()
    );
    let counts = server::MAX_HEADER_COUNT_RANGE;
    assert_eq!(
        range("max_header_count"),
        format!("{} – {}", counts.start(), counts.end())
    );
    assert_eq!(doc_size(&d("max_body_size")), server::DEFAULT_MAX_BODY_SIZE);
    let bodies = server::MAX_BODY_SIZE_RANGE;
    assert_eq!(
        range("max_body_size"),
        format!("{} – {} TiB", bodies.start(), bodies.end() >> 40)
    );
    assert_eq!(
        d("h2_max_concurrent_streams"),
        server::DEFAULT_H2_MAX_CONCURRENT_STREAMS.to_string()
    );
    let streams = server::H2_MAX_CONCURRENT_STREAMS_RANGE;
    assert_eq!(
        range("h2_max_concurrent_streams"),
        format!("{} – {}", streams.start(), streams.end())
    );
    assert_eq!(
        doc_duration(&d("send_timeout")),
        server::DEFAULT_SEND_TIMEOUT
    );
    assert_eq!(
        d("max_connections_per_peer"),
        server::DEFAULT_MAX_CONNECTIONS_PER_PEER.to_string()
    );

    // [acme]
    assert_eq!(
        first_span("`[acme]`", "state_dir"),
        quoted(acme::DEFAULT_STATE_DIR)
    );
    assert_eq!(
        duration("`[acme]`", "first_retry"),
        acme::DEFAULT_FIRST_RETRY
    );

    // [tls], [client_ip], [admin], [headers]
    assert_eq!(
        duration("`[tls]`", "reload_interval"),
        tls::DEFAULT_RELOAD_INTERVAL
    );
    assert!(first_span("`[client_ip]`", "header")
        .trim_matches('"')
        .eq_ignore_ascii_case(client_ip::DEFAULT_HEADER.as_str()));
    assert_eq!(
        first_span("`[admin]`", "allow_remote"),
        admin::DEFAULT_ALLOW_REMOTE.to_string()
    );
    let server_row = doc_row("headers-and-limits.md", "Security headers", "server");
    assert_eq!(spans(&server_row[2])[0], headers::DEFAULT_SERVER_NAME);

    // [limits]
    let l = "`[limits]`";
    assert_eq!(duration(l, "window"), ratelimit::DEFAULT_WINDOW);
    assert_eq!(
        first_span(l, "sketch_slots"),
        ratelimit::DEFAULT_SLOTS.to_string()
    );
    assert!(conf(l, "sketch_slots")[2].starts_with(&format!(
        "{}–{};",
        ratelimit::MIN_SLOTS,
        ratelimit::MAX_SLOTS
    )));
    assert_eq!(
        first_span(l, "max_connections_per_ip"),
        ratelimit::DEFAULT_MAX_CONNECTIONS_PER_IP.to_string()
    );
    assert_eq!(first_span(l, "burst"), ratelimit::DEFAULT_BURST.to_string());
    assert!(conf(l, "burst")[2].starts_with(&format!("0–{} ", ratelimit::MAX_BURST)));
    let rates = ratelimit::RATE_RANGE;
    assert!(conf(l, "rate")[2].starts_with(&format!("{}–{} ", rates.start(), rates.end())));
    assert_eq!(first_span(l, "json"), ratelimit::DEFAULT_JSON.to_string());

    // [redis]
    let r = "`[redis]`";
    let redis_range = |key: &str, max: &str| {
        assert_eq!(
            conf(r, key)[2].split(';').next().unwrap(),
            format!("{} ms – {max}", redis_link::MIN_TIMEOUT.as_millis()),
            "{key}"
        )
    };
    assert_eq!(
        first_span(r, "key_prefix"),
        quoted(redis_link::DEFAULT_KEY_PREFIX)
    );
    assert!(conf(r, "key_prefix")[2].starts_with(&format!(
        "at most {} characters",
        redis_link::MAX_KEY_PREFIX_LEN
    )));
    assert_eq!(duration(r, "timeout"), redis_link::DEFAULT_TIMEOUT);
    redis_range(
        "timeout",
        &format!("{} s", redis_link::MAX_TIMEOUT.as_secs()),
    );
    assert_eq!(
        duration(r, "connect_timeout"),
        redis_link::DEFAULT_CONNECT_TIMEOUT
    );
    redis_range(
        "connect_timeout",
        &format!("{} s", redis_link::MAX_CONNECT_TIMEOUT.as_secs()),
    );
    assert_eq!(
        duration(r, "retry_interval"),
        redis_link::DEFAULT_RETRY_INTERVAL
    );
    redis_range(
        "retry_interval",
        &format!("{} min", redis_link::MAX_RETRY_INTERVAL.as_secs() / 60),
    );
    assert_eq!(
        first_span(r, "connections"),
        redis_link::DEFAULT_CONNECTIONS.to_string()
    );
    let pool = redis_link::CONNECTIONS_RANGE;
    assert!(conf(r, "connections")[2].starts_with(&format!("{} – {} ", pool.start(), pool.end())));
    assert_eq!(
        first_span(r, "purge_channel"),
        format!("\"<key_prefix>{}\"", redis_link::PURGE_CHANNEL_SUFFIX)
    );
    let dbs = redis_link::DB_RANGE;
    assert!(conf(r, "url")[2].contains(&format!("database {}–{}", dbs.start(), dbs.end())));

    // [compression]
    let c = "`[compression]`";
    assert_eq!(
        first_span(c, "enabled"),
        compression::DEFAULT_ENABLED.to_string()
    );
    assert_eq!(
        first_span(c, "gzip_level"),
        compression::DEFAULT_GZIP_LEVEL.to_string()
    );
    let levels = compression::GZIP_LEVELS;
    assert_eq!(
        conf(c, "gzip_level")[2],
        format!("{}–{}", levels.start(), levels.end())
    );
    assert_eq!(
        first_span(c, "brotli_quality"),
        compression::DEFAULT_BROTLI_QUALITY.to_string()
    );
    let qualities = compression::BROTLI_QUALITIES;
    assert_eq!(
        conf(c, "brotli_quality")[2],
        format!("{}–{}", qualities.start(), qualities.end())
    );
    assert_eq!(
        first_span(c, "min_size"),
        compression::DEFAULT_MIN_SIZE.to_string()
    );
    let min_sizes = compression::MIN_SIZE_RANGE;
    assert!(conf(c, "min_size")[2].starts_with(&format!(
        "size, {} to {} GiB;",
        min_sizes.start(),
        min_sizes.end() >> 30
    )));

    // [cache] and [cache.zones.NAME]
    let k = "`[cache]`";
    assert_eq!(duration(k, "lock_timeout"), cache::DEFAULT_LOCK_TIMEOUT);
    assert!(default(k, "static_extensions").starts_with(&format!(
        "{} common asset extensions",
        cache::DEFAULT_STATIC_EXTENSIONS.len()
    )));
    assert_eq!(doc_size(&first_span(k, "size")), cache::DEFAULT_ZONE_SIZE);
    let zone_sizes = cache::ZONE_SIZE_RANGE;
    assert_eq!(
        conf(k, "size")[2],
        format!(
            "size of the disk tier, {} MiB to {} TiB",
            zone_sizes.start() >> 20,
            zone_sizes.end() >> 40
        )
    );
    // "`size / 8`, at most 256 MiB", and the code divides by 8 below the cap.
    assert_eq!(
        default(k, "memory_size"),
        format!(
            "`size / 8`, at most {} MiB",
            cache::DEFAULT_MEMORY_SIZE_CAP >> 20
        )
    );
    assert_eq!(cache::default_memory_size(64 << 20), 8 << 20);
    assert_eq!(
        cache::default_memory_size(1 << 40),
        cache::DEFAULT_MEMORY_SIZE_CAP
    );
    let memory_sizes = cache::MEMORY_SIZE_RANGE;
    assert!(conf(k, "memory_size")[2].starts_with(&format!(
        "size, {} to {} TiB;",
        memory_sizes.start(),
        memory_sizes.end() >> 40
    )));
    assert_eq!(
        default(k, "max_object_size"),
        format!(
            "{} MiB, at most `size / 16`",
            cache::DEFAULT_MAX_OBJECT_SIZE_CAP >> 20
        )
    );
    assert_eq!(cache::default_max_object_size(64 << 20), 4 << 20);
    assert_eq!(
        cache::default_max_object_size(1 << 40),
        cache::DEFAULT_MAX_OBJECT_SIZE_CAP
    );
    assert_eq!(cache::max_object_size_limit(64 << 20), 16 << 20);
    let objects = cache::MAX_OBJECT_SIZE_RANGE;
    assert!(conf(k, "max_object_size")[2].starts_with(&format!(
        "size, {} byte to {} GiB, and at most `size / 4`;",
        objects.start(),
        objects.end() >> 30
    )));
    // `"10m"` (`static`: `"7d"`)
    let ttl = |key: &str| {
        spans(&default(k, key))
            .iter()
            .copied()
            .filter(|s| *s != cache::STATIC_ZONE)
            .map(doc_duration)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ttl("default_ttl"),
        [cache::DEFAULT_TTL, cache::STATIC_DEFAULT_TTL]
    );
    assert_eq!(ttl("min_ttl"), [cache::DEFAULT_MIN_TTL]);
    assert_eq!(
        cache::STATIC_MIN_TTL,
        cache::DEFAULT_MIN_TTL,
        "one value in the doc"
    );
    assert_eq!(
        ttl("max_ttl"),
        [cache::DEFAULT_MAX_TTL, cache::STATIC_MAX_TTL]
    );
    assert_eq!(
        ttl("stale_while_revalidate"),
        [cache::DEFAULT_STALE_WHILE_REVALIDATE]
    );
    assert_eq!(ttl("stale_if_error"), [cache::DEFAULT_STALE_IF_ERROR]);

    // [upstreams.NAME] and its health_check
    let u = "`[upstreams.NAME]`";
    assert_eq!(
        duration(u, "connect_timeout"),
        upstream::DEFAULT_CONNECT_TIMEOUT
    );
    assert_eq!(duration(u, "read_timeout"), upstream::DEFAULT_READ_TIMEOUT);
    assert_eq!(
        duration(u, "write_timeout"),
        upstream::DEFAULT_WRITE_TIMEOUT
    );
    assert_eq!(duration(u, "idle_timeout"), upstream::DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        first_span(u, "path"),
        quoted(upstream::DEFAULT_HEALTH_CHECK_PATH)
    );
    assert_eq!(
        duration(u, "interval"),
        upstream::DEFAULT_HEALTH_CHECK_INTERVAL
    );
    assert_eq!(
        duration(u, "timeout"),
        upstream::DEFAULT_HEALTH_CHECK_TIMEOUT
    );
    let checks = upstream::HEALTH_CHECK_COUNT_RANGE;
    for key in ["fall", "rise"] {
        assert_eq!(
            first_span(u, key),
            upstream::DEFAULT_HEALTH_CHECK_COUNT.to_string()
        );
        assert!(conf(u, key)[2].starts_with(&format!("{}–{}:", checks.start(), checks.end())));
    }

    // The one ceiling of every duration, in the Units section.
    let units = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    let days = proxy_core::defaults::MAX_DURATION.as_secs() / 86_400;
    assert!(units.contains(&format!(
        "A duration must be greater than zero and at most {days} days."
    )));
}
