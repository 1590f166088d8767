//! `[server]` (Pingora's process settings) and `[downstream]` (limits on clients).

use super::Validator;
use crate::config::{DownstreamSettings, RawDownstream, RawServer, ServerSettings};
use std::time::Duration;

impl Validator {
    pub(super) fn server(&mut self, raw: &RawServer) -> ServerSettings {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = match raw.threads {
            None | Some(0) => cores,
            Some(n) if n > 1024 => {
                self.err(
                    "server.threads",
                    n.to_string(),
                    "must be 0 (one per core) to 1024",
                );
                cores
            }
            Some(n) => n,
        };
        ServerSettings {
            threads,
            work_stealing: raw.work_stealing.unwrap_or(true),
            grace_period: self.duration(
                "server.grace_period",
                &raw.grace_period,
                Duration::from_secs(5),
            ),
            graceful_shutdown_timeout: self.duration(
                "server.graceful_shutdown_timeout",
                &raw.graceful_shutdown_timeout,
                Duration::from_secs(5),
            ),
            pid_file: raw
                .pid_file
                .clone()
                .unwrap_or_else(|| "/tmp/galion-edge.pid".into()),
            upgrade_sock: raw
                .upgrade_sock
                .clone()
                .unwrap_or_else(|| "/tmp/galion-edge-upgrade.sock".into()),
            upstream_keepalive_pool_size: raw.upstream_keepalive_pool_size.unwrap_or(128),
        }
    }

    pub(super) fn downstream(&mut self, raw: &RawDownstream) -> DownstreamSettings {
        let max_header_count = raw.max_header_count.unwrap_or(100);
        if !(8..=250).contains(&max_header_count) {
            self.err(
                "downstream.max_header_count",
                max_header_count.to_string(),
                "must be between 8 and 250",
            );
        }
        let keepalive_requests = raw.keepalive_requests.unwrap_or(1000);
        if keepalive_requests == 0 {
            self.err(
                "downstream.keepalive_requests",
                "0",
                "must be at least 1 (1 turns keepalive off)",
            );
        }
        let h2_streams = raw.h2_max_concurrent_streams.unwrap_or(128);
        if !(1..=1000).contains(&h2_streams) {
            self.err(
                "downstream.h2_max_concurrent_streams",
                h2_streams.to_string(),
                "must be between 1 and 1000",
            );
        }
        DownstreamSettings {
            client_header_timeout: self.duration(
                "downstream.client_header_timeout",
                &raw.client_header_timeout,
                Duration::from_secs(10),
            ),
            keepalive_timeout: self.duration(
                "downstream.keepalive_timeout",
                &raw.keepalive_timeout,
                Duration::from_secs(60),
            ),
            keepalive_requests: keepalive_requests.max(1),
            max_header_bytes: self.size(
                "downstream.max_header_bytes",
                &raw.max_header_bytes,
                32 << 10,
                1 << 10,
                1 << 20,
            ) as usize,
            max_header_count: max_header_count.clamp(8, 250),
            max_body_size: self.size(
                "downstream.max_body_size",
                &raw.max_body_size,
                10 << 20,
                0,
                1 << 40,
            ),
            h2_max_concurrent_streams: h2_streams.clamp(1, 1000),
            max_connections_per_peer: raw.max_connections_per_peer.unwrap_or(0),
            send_timeout: self.duration(
                "downstream.send_timeout",
                &raw.send_timeout,
                Duration::from_secs(60),
            ),
        }
    }
}
