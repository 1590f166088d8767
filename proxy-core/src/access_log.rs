//! The access log: one line per request, combined or JSON, written off the request path.
//!
//! Request tasks format a line into a per-thread scratch string and append it to a shared
//! pending buffer (one short lock, no allocation, no wake-up). One writer thread takes the whole
//! buffer every [`FLUSH_INTERVAL`], or as soon as it holds [`FLUSH_BYTES`], and writes it with
//! one `write` call, like nginx's `access_log ... buffer=64k flush=100ms`. If the writer falls
//! behind by more than [`MAX_PENDING`] bytes, lines are dropped and counted
//! ([`AccessLog::dropped`]) rather than slowing requests. Lines still pending when the last
//! handle is dropped are written before the thread ends.
//!
//! [`AccessLog::reopen`] (SIGUSR1, as nginx) makes the writer close and reopen its file, for
//! logrotate without `copytruncate`.

use crate::exposition;
use prometheus::proto::MetricFamily;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx's `combined` (same time format) plus host, request time, upstream and request id.
    Combined,
    /// One JSON object per line.
    Json,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Not written.
    Off,
}

/// The access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Default combined.
    pub format: AccessLogFormat,
    /// Default stdout.
    pub target: AccessLogTarget,
}

/// Longest a line waits in the pending buffer before the writer writes it.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Pending bytes that wake the writer before [`FLUSH_INTERVAL`] passes.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;
/// Pending bytes beyond which new lines are dropped (and counted) until the writer catches up.
pub(crate) const MAX_PENDING: usize = 8 * 1024 * 1024;

/// What is logged about one request.
#[derive(Debug, Clone, Default)]
pub struct AccessRecord<'a> {
    /// The client.
    pub client_ip: Option<IpAddr>,
    /// Host as the client sent it.
    pub host: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path and query.
    pub uri: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    /// Status sent (0 when nothing was sent).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes_sent: usize,
    /// `Referer`.
    pub referer: &'a str,
    /// `User-Agent`.
    pub user_agent: &'a str,
    /// Time from request start to the end of the response.
    pub duration: Duration,
    /// Backend used, if any.
    pub upstream: Option<SocketAddr>,
    /// Time to the upstream's response header.
    pub upstream_time: Option<Duration>,
    /// Request id.
    pub request_id: &'a str,
    /// Site name.
    pub site: &'a str,
    /// What the cache did (`X-Cache-Status`: `HIT`, `MISS`, `BYPASS`, …), or `-` on a route
    /// that does not cache.
    pub cache: &'a str,
    /// Why the cache was bypassed (`credentials`, `origin`, `set-cookie`, … as docs/cache.md lists them), or `-`.
    pub cache_reason: &'a str,
}

/// The access-log writer. Cloning shares it; the writer thread ends (after writing what is
/// pending) when the last clone is dropped.
#[derive(Clone)]
pub struct AccessLog {
    format: AccessLogFormat,
    /// `None` for `path = "off"`.
    handle: Option<Arc<Handle>>,
    dropped: Arc<AtomicU64>,
}

/// What request tasks and the writer thread share.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    reopen: AtomicBool,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    closed: bool,
}

/// Owned by the [`AccessLog`] clones; dropping the last one stops the writer.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_one();
    }
}

/// The pending buffer stays usable if a thread panicked while holding it (it only holds bytes).
fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Each thread formats its lines here, so a line costs no allocation once warm.
    static SCRATCH: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .finish()
    }
}

/// Why the access log could not be opened: names the file.
#[derive(Debug, thiserror::Error)]
#[error("access log {target}: {source}")]
pub struct OpenError {
    /// The file (or `stdout`).
    pub target: String,
    /// What the system said.
    #[source]
    pub source: std::io::Error,
}

impl AccessLog {
    /// Opens the target and starts the writer thread. Fails if the file cannot be opened for
    /// appending (it is created if missing) or the thread cannot be started.
    pub fn open(settings: &AccessLogSettings) -> Result<AccessLog, OpenError> {
        let failed = |source| OpenError {
            target: match &settings.target {
                AccessLogTarget::File(p) => p.display().to_string(),
                AccessLogTarget::Stdout => "stdout".into(),
                AccessLogTarget::Off => "off".into(),
            },
            source,
        };
        let dropped = Arc::new(AtomicU64::new(0));
        let (sink, path): (Box<dyn Write + Send>, _) = match &settings.target {
            AccessLogTarget::Off => {
                return Ok(AccessLog {
                    format: settings.format,
                    handle: None,
                    dropped,
                })
            }
            AccessLogTarget::Stdout => (Box::new(std::io::stdout()), None),
            AccessLogTarget::File(p) => {
                (Box::new(open_append(p).map_err(failed)?), Some(p.clone()))
            }
        };
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(&theirs, sink, path))
            .map_err(failed)?;
        Ok(AccessLog {
            format: settings.format,
            handle: Some(Arc::new(Handle { shared })),
            dropped,
        })
    }

    /// Asks the writer to flush, close its file and open the configured path again (appending,
    /// creating it if missing), so lines go to a new file after logrotate renamed the old one.
    /// Lines queued before the call may still go to the old file. Nothing happens for stdout
    /// or `off`. Never blocks; if the file cannot be reopened the writer logs the error and
    /// keeps writing to the old file.
    pub fn reopen(&self) {
        let Some(h) = &self.handle else { return };
        h.shared.reopen.store(true, Ordering::Release);
        h.shared.wake.notify_one();
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// The `galion_edge_access_log_dropped_total` series, read now. Fails only on a bug in the
    /// family's definition.
    pub fn metric_families(&self) -> exposition::Result<Vec<MetricFamily>> {
        let mut out = Vec::new();
        out.extend(exposition::counters(
            "galion_edge_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind.",
            &[],
            [(vec![], self.dropped())],
        )?);
        Ok(out)
    }

    /// Formats one line and adds it to the pending buffer (written within
    /// `FLUSH_INTERVAL`).
    pub fn log(&self, r: &AccessRecord<'_>) {
        let Some(h) = &self.handle else { return };
        SCRATCH.with(|scratch| {
            let mut line = scratch.borrow_mut();
            line.clear();
            write_line(&mut line, self.format, r, SystemTime::now());
            let mut pending = lock(&h.shared.pending);
            let before = pending.buf.len();
            if before + line.len() > MAX_PENDING {
                drop(pending);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending.buf.extend_from_slice(line.as_bytes());
            let crossed = before < FLUSH_BYTES && pending.buf.len() >= FLUSH_BYTES;
            drop(pending);
            if crossed {
                h.shared.wake.notify_one();
            }
        });
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn writer(shared: &Shared, sink: Box<dyn Write + Send>, path: Option<std::path::PathBuf>) {
    let mut out = sink;
    // The buffer the writer owns; swapped with the pending one so neither is reallocated.
    let mut batch: Vec<u8> = Vec::with_capacity(FLUSH_BYTES);
    loop {
        let closed = {
            let mut pending = lock(&shared.pending);
            if pending.buf.len() < FLUSH_BYTES
                && !pending.closed
                && !shared.reopen.load(Ordering::Acquire)
            {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_INTERVAL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut pending.buf, &mut batch);
            pending.closed
        };
        if !batch.is_empty() {
            // One write per batch; an error (disk full) loses this batch, not the writer.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
            if batch.capacity() > 4 * FLUSH_BYTES {
                batch.shrink_to(FLUSH_BYTES);
            }
        }
        if shared.reopen.swap(false, Ordering::AcqRel) {
            if let Some(p) = &path {
                match open_append(p) {
                    Ok(f) => out = Box::new(f),
                    Err(e) => log::error!("access log: cannot reopen {}: {e}", p.display()),
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// Formats one line (with its newline).
#[cfg(test)]
pub(crate) fn format_line(
    format: AccessLogFormat,
    r: &AccessRecord<'_>,
    now: SystemTime,
) -> String {
    let mut s = String::with_capacity(256);
    write_line(&mut s, format, r, now);
    s
}

/// Appends one line (with its newline) to `s`: `format_line` without allocating.
pub fn write_line(s: &mut String, format: AccessLogFormat, r: &AccessRecord<'_>, now: SystemTime) {
    match format {
        AccessLogFormat::Combined => {
            // Pushed piece by piece, integers with `itoa`: `write!` with `{:.3}` floats was
            // two thirds of the line's cost (see benches/benches/access_log.rs).
            match r.client_ip {
                Some(IpAddr::V4(ip)) => {
                    for (i, octet) in ip.octets().into_iter().enumerate() {
                        if i > 0 {
                            s.push('.');
                        }
                        push_int(s, octet);
                    }
                }
                Some(ip) => {
                    let _ = write!(s, "{ip}");
                }
                None => s.push('-'),
            }
            s.push_str(" - - [");
            push_nginx_time(s, now);
            s.push_str("] \"");
            push_escaped(s, r.method);
            s.push(' ');
            push_escaped(s, r.uri);
            s.push(' ');
            s.push_str(r.protocol);
            s.push_str("\" ");
            push_int(s, r.status);
            s.push(' ');
            push_int(s, r.bytes_sent);
            s.push_str(" \"");
            push_escaped(s, or_dash(r.referer));
            s.push_str("\" \"");
            push_escaped(s, or_dash(r.user_agent));
            s.push_str("\" host=\"");
            push_escaped(s, r.host);
            s.push_str("\" rt=");
            push_secs(s, r.duration);
            s.push_str(" upstream=");
            match r.upstream {
                Some(u) => {
                    let _ = write!(s, "{u}");
                }
                None => s.push('-'),
            }
            s.push_str(" urt=");
            match r.upstream_time {
                Some(d) => push_secs(s, d),
                None => s.push('-'),
            }
            s.push_str(" rid=");
            push_escaped(s, r.request_id);
            s.push_str(" cache=");
            s.push_str(or_dash(r.cache));
            s.push_str(" nocache=");
            s.push_str(or_dash(r.cache_reason));
            s.push('\n');
        }
        AccessLogFormat::Json => {
            let ip = r
                .client_ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into());
            let v = serde_json::json!({
                "time": httpdate::fmt_http_date(now),
                "client_ip": ip,
                "host": r.host,
                "site": r.site,
                "method": r.method,
                "uri": r.uri,
                "protocol": r.protocol,
                "status": r.status,
                "bytes_sent": r.bytes_sent,
                "referer": r.referer,
                "user_agent": r.user_agent,
                "duration_ms": r.duration.as_secs_f64() * 1000.0,
                "upstream": r.upstream.map(|u| u.to_string()),
                "upstream_time_ms": r.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
                "request_id": r.request_id,
                "cache": or_dash(r.cache),
                "cache_reason": or_dash(r.cache_reason),
            });
            let _ = write!(s, "{v}");
            s.push('\n');
        }
    }
}

thread_local! {
    /// The last second formatted by [`push_nginx_time`] on this thread, and its text.
    static TIME: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends nginx's `$time_local` in UTC, formatting it at most once per second per thread.
fn push_nginx_time(s: &mut String, t: SystemTime) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    TIME.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1 = nginx_time(t);
            cached.0 = secs;
        }
        s.push_str(&cached.1);
    });
}

/// nginx's `$time_local` in UTC: `25/Nov/2026:20:44:05 +0000`.
fn nginx_time(t: SystemTime) -> String {
    // "Wed, 25 Nov 2026 20:44:05 GMT"
    let http = httpdate::fmt_http_date(t);
    let p: Vec<&str> = http.split(' ').collect();
    match p.as_slice() {
        [_, day, mon, year, hms, _] => format!("{day}/{mon}/{year}:{hms} +0000"),
        _ => http,
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Appends an integer in decimal.
fn push_int(s: &mut String, n: impl itoa::Integer) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// Appends seconds with three decimals, rounded to the nearest millisecond (nginx's
/// `$request_time`).
fn push_secs(s: &mut String, d: Duration) {
    let ms = (d.as_micros() + 500) / 1000;
    push_int(s, ms / 1000);
    let frac = (ms % 1000) as u16;
    s.push('.');
    if frac < 100 {
        s.push('0');
    }
    if frac < 10 {
        s.push('0');
    }
    push_int(s, frac);
}

/// Appends `v` with [`escape`].
fn push_escaped(s: &mut String, v: &str) {
    s.push_str(&escape(v));
}

/// Escapes `"`, `\` and control bytes so a client cannot forge log lines.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || b.is_ascii_control())
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_line_escapes_quotes_and_newlines() {
        let r = AccessRecord {
            client_ip: Some("203.0.113.7".parse().expect("ip")),
            host: "galion.app",
            method: "GET",
            uri: "/a\"b\nc",
            protocol: "HTTP/1.1",
            status: 200,
            bytes_sent: 12,
            request_id: "abc",
            ..Default::default()
        };
        let line = format_line(AccessLogFormat::Combined, &r, SystemTime::UNIX_EPOCH);
        assert!(line.starts_with(
            "203.0.113.7 - - [01/Jan/1970:00:00:00 +0000] \"GET /a\\\"b\\x0ac HTTP/1.1\" 200 12"
        ));
        assert_eq!(line.matches('\n').count(), 1);
    }

    /// Every field of a combined line, in nginx's order, with IPv4 and IPv6 clients.
    #[test]
    fn combined_line_has_every_field() {
        let mut r = AccessRecord {
            client_ip: Some("203.0.113.7".parse().expect("ip")),
            host: "galion.app",
            method: "GET",
            uri: "/api/users?page=2",
            protocol: "HTTP/2.0",
            status: 404,
            bytes_sent: 1043,
            referer: "https://galion.app/",
            user_agent: "curl/8.5",
            duration: Duration::from_micros(12_345_600),
            upstream: Some("127.0.0.1:8001".parse().expect("addr")),
            upstream_time: Some(Duration::from_micros(1_499)),
            request_id: "5b1be2f4",
            site: "galion.app",
            cache: "BYPASS",
            cache_reason: "credentials",
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            format_line(AccessLogFormat::Combined, &r, t),
            "203.0.113.7 - - [18/Nov/2026:11:06:40 +0000] \"GET /api/users?page=2 HTTP/2.0\" 404 \
             1043 \"https://galion.app/\" \"curl/8.5\" host=\"galion.app\" rt=12.346 \
             upstream=127.0.0.1:8001 urt=0.001 rid=5b1be2f4 cache=BYPASS nocache=credentials\n"
        );
        r.client_ip = Some("2001:db8::1".parse().expect("ip"));
        r.referer = "";
        r.upstream = None;
        r.upstream_time = None;
        r.duration = Duration::ZERO;
        r.cache = "";
        r.cache_reason = "";
        let line = format_line(AccessLogFormat::Combined, &r, t);
        assert!(line.starts_with("2001:db8::1 - - ["), "{line}");
        assert!(
            line.ends_with(
                " \"-\" \"curl/8.5\" host=\"galion.app\" rt=0.000 upstream=- urt=- \
                 rid=5b1be2f4 cache=- nocache=-\n"
            ),
            "{line}"
        );
    }

    /// Durations are written as seconds with three decimals, within rounding of `{:.3}`.
    #[test]
    fn durations_have_three_decimals() {
        for us in (0..3_000u64).chain((0..200).map(|i| i * 4_999 + 7)).chain([
            999_499,
            999_500,
            59_999_999,
            3_600_000_000,
        ]) {
            let d = Duration::from_micros(us);
            let mut s = String::new();
            push_secs(&mut s, d);
            let (whole, frac) = s.split_once('.').expect("a dot");
            assert!(!whole.is_empty() && frac.len() == 3, "{us}: {s}");
            let ours: f64 = s.parse().expect("a number");
            let float: f64 = format!("{:.3}", d.as_secs_f64()).parse().expect("a number");
            assert!(
                (ours - float).abs() <= 0.0010001,
                "{us}: {s} against {float}"
            );
            assert!((ours - d.as_secs_f64()).abs() <= 0.0005, "{us}: {s}");
        }
    }

    #[test]
    fn lines_reach_the_file_within_the_flush_interval_and_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let settings = AccessLogSettings {
            format: AccessLogFormat::Combined,
            target: AccessLogTarget::File(path.clone()),
        };
        let log = AccessLog::open(&settings).expect("open");
        let record = |i: usize| AccessRecord {
            status: 200,
            request_id: if i % 2 == 0 { "even" } else { "odd" },
            ..Default::default()
        };
        log.log(&record(0));
        let lines = |want: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let n = std::fs::read_to_string(&path)
                    .expect("read")
                    .lines()
                    .count();
                if n >= want || std::time::Instant::now() > deadline {
                    return n;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert_eq!(lines(1), 1, "one line, written by the timer");
        // More than FLUSH_BYTES at once, then the last handle goes: every line is written.
        for i in 1..2000 {
            log.log(&record(i));
        }
        let clone = log.clone();
        drop(log);
        clone.log(&record(2000));
        drop(clone);
        assert_eq!(lines(2001), 2001);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.matches("rid=even").count(), 1001);
        assert!(text.lines().all(|l| l.starts_with("- - - [")), "{text}");
    }

    #[test]
    fn json_line_parses() {
        let r = AccessRecord {
            status: 502,
            host: "galion.studio",
            ..Default::default()
        };
        let line = format_line(AccessLogFormat::Json, &r, SystemTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
        assert_eq!(v["status"], 502);
        assert_eq!(v["host"], "galion.studio");
    }
}
