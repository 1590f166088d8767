//! Host names as requests carry them: the building block that routing and the cache key share
//! (it depends on nothing else in the crate).

/// `"galion.app:443"` to `"galion.app"`; `"[::1]:80"` to `"[::1]"`.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}
