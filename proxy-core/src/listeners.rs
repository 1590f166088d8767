//! Whether this process holds its listening sockets, and the "ready" line that says so.
//!
//! Pingora binds the listeners inside `run_forever` (or receives them from the old process in
//! a zero-downtime upgrade) and tells nobody. [`unbound`] reads the kernel's socket tables
//! (`/proc/self/net/tcp{,6}`) and this process's descriptors (`/proc/self/fd`) to see which
//! configured addresses are really held by this process: not just a port someone answers on
//! (another process could hold it), and not a port merely probed. [`ReadyAnnouncer`] logs one
//! line, `ready: listening on ADDR, ...`, as soon as every listener is held: what a supervisor,
//! a deployment script or a test waits for instead of probing ports, and tells a systemd
//! `Type=notify` unit the same (`READY=1`). The admin listener's `/ready` uses the same check.

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::net::SocketAddr;
use std::time::Duration;

/// The text the ready line starts with, after the log's own prefix.
pub const READY: &str = "ready: listening on ";

/// How often [`ReadyAnnouncer`] looks until every listener is held.
const POLL: Duration = Duration::from_millis(10);

/// The addresses in `want` that no listening TCP socket of this process is bound to (matched
/// by port: the process cannot hold two listeners on one port with different addresses that
/// the config would accept). On Linux, from `/proc`; elsewhere none (assumed bound).
pub(crate) fn unbound(want: &[SocketAddr]) -> Vec<SocketAddr> {
    if !cfg!(target_os = "linux") {
        return Vec::new();
    }
    let mut listening: Vec<(u16, u64)> = Vec::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listening.extend(listening_sockets(&text));
        }
    }
    listening.retain(|(port, _)| want.iter().any(|a| a.port() == *port));
    let ours: Vec<u64> = if listening.is_empty() {
        Vec::new()
    } else {
        std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter_map(|target| socket_inode(&target.to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default()
    };
    want.iter()
        .filter(|a| {
            !listening
                .iter()
                .any(|(port, inode)| *port == a.port() && ours.contains(inode))
        })
        .copied()
        .collect()
}

/// `(local port, inode)` of each LISTEN line of a `/proc/net/tcp` or `tcp6` table.
fn listening_sockets(table: &str) -> impl Iterator<Item = (u16, u64)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        if f.len() < 10 || f[3] != "0A" {
            return None;
        }
        let (_, port) = f[1].rsplit_once(':')?;
        Some((u16::from_str_radix(port, 16).ok()?, f[9].parse().ok()?))
    })
}

/// The inode of a `/proc/self/fd` link target `socket:[N]`.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A background service that logs the ready line ([`READY`] and the addresses, at `info`)
/// once every address it was given is held by this process, then ends. On systems without
/// `/proc` the addresses are assumed held, and the line is logged at once.
#[derive(Debug)]
pub(crate) struct ReadyAnnouncer {
    addrs: Vec<SocketAddr>,
}

impl ReadyAnnouncer {
    /// An announcer for the listener addresses (the proxy's and the admin listener's).
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Self {
        ReadyAnnouncer { addrs }
    }
}

#[async_trait]
impl BackgroundService for ReadyAnnouncer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !unbound(&self.addrs).is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
        let list: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        log::info!("{READY}{}", list.join(", "));
        crate::upgrade::notify_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_from_a_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 12399 1 0000000000000000 20 4 30 10 -1
   2: 00000000000000000000000001000000:2383 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0
";
        let got: Vec<(u16, u64)> = listening_sockets(table).collect();
        assert_eq!(got, vec![(8080, 12345), (9091, 777)]);
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_listener_of_this_process_is_seen_bound() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let bound = l.local_addr().expect("addr");
        let free = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            t.local_addr().expect("addr")
        };
        assert_eq!(unbound(&[bound, free]), vec![free]);
    }
}
