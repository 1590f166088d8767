//! The access log: one line per request, combined or JSON, written off the request path.
//!
//! Request tasks format a line and hand it to a bounded channel; one writer thread batches
//! lines into the file or stdout. If the writer falls behind by more than the channel holds,
//! lines are dropped and counted ([`AccessLog::dropped`]) rather than slowing requests.
//!
//! [`AccessLog::reopen`] (SIGUSR1, as nginx) makes the writer close and reopen its file, for
//! logrotate without `copytruncate`.

use crate::config::{AccessLogFormat, AccessLogSettings, AccessLogTarget};
use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
}

/// The access-log writer. Cloning shares it.
#[derive(Clone)]
pub struct AccessLog {
    format: AccessLogFormat,
    tx: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .finish()
    }
}

impl AccessLog {
    /// Opens the target and starts the writer thread. Fails if the file cannot be opened for
    /// appending (it is created if missing) or the thread cannot be started.
    pub fn open(settings: &AccessLogSettings) -> std::io::Result<AccessLog> {
        let dropped = Arc::new(AtomicU64::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let (sink, path): (Box<dyn Write + Send>, _) = match &settings.target {
            AccessLogTarget::Off => {
                return Ok(AccessLog {
                    format: settings.format,
                    tx: None,
                    dropped,
                    reopen,
                })
            }
            AccessLogTarget::Stdout => (Box::new(std::io::stdout()), None),
            AccessLogTarget::File(p) => (Box::new(open_append(p)?), Some(p.clone())),
        };
        let (tx, rx) = sync_channel::<String>(16 * 1024);
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, sink, path, flag))?;
        Ok(AccessLog {
            format: settings.format,
            tx: Some(tx),
            dropped,
            reopen,
        })
    }

    /// Asks the writer to flush, close its file and open the configured path again (appending,
    /// creating it if missing), so lines go to a new file after logrotate renamed the old one.
    /// Lines queued before the call may still go to the old file. Nothing happens for stdout
    /// or `off`. Never blocks; if the file cannot be reopened the writer logs the error and
    /// keeps writing to the old file.
    pub fn reopen(&self) {
        let Some(tx) = &self.tx else { return };
        self.reopen.store(true, Ordering::Release);
        // Wake the writer; if the queue is full it is busy and sees the flag after its batch.
        let _ = tx.try_send(String::new());
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Formats and queues one line.
    pub fn log(&self, r: &AccessRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        let line = format_line(self.format, r, SystemTime::now());
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn writer(
    rx: Receiver<String>,
    sink: Box<dyn Write + Send>,
    path: Option<std::path::PathBuf>,
    reopen: Arc<AtomicBool>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Drain what is queued, then flush once: one syscall per burst, not per line.
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
        if reopen.swap(false, Ordering::AcqRel) {
            if let Some(p) = &path {
                match open_append(p) {
                    Ok(f) => out = std::io::BufWriter::with_capacity(64 * 1024, Box::new(f)),
                    Err(e) => log::error!("access log: cannot reopen {}: {e}", p.display()),
                }
            }
        }
    }
}

/// Formats one line (with its newline).
pub fn format_line(format: AccessLogFormat, r: &AccessRecord<'_>, now: SystemTime) -> String {
    let mut s = String::with_capacity(256);
    let ip = r
        .client_ip
        .map(|i| i.to_string())
        .unwrap_or_else(|| "-".into());
    let upstream = r
        .upstream
        .map(|u| u.to_string())
        .unwrap_or_else(|| "-".into());
    let urt = r
        .upstream_time
        .map(|d| format!("{:.3}", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into());
    match format {
        AccessLogFormat::Combined => {
            let _ = writeln!(
                s,
                "{ip} - - [{time}] \"{method} {uri} {proto}\" {status} {bytes} \"{referer}\" \"{ua}\" host=\"{host}\" rt={rt:.3} upstream={upstream} urt={urt} rid={rid}",
                time = nginx_time(now),
                method = escape(r.method),
                uri = escape(r.uri),
                proto = r.protocol,
                status = r.status,
                bytes = r.bytes_sent,
                referer = escape(or_dash(r.referer)),
                ua = escape(or_dash(r.user_agent)),
                host = escape(r.host),
                rt = r.duration.as_secs_f64(),
                rid = escape(r.request_id),
            );
        }
        AccessLogFormat::Json => {
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
            });
            s.push_str(&v.to_string());
            s.push('\n');
        }
    }
    s
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
