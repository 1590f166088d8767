//! `[server]` (Pingora's process settings) and `[downstream]` (limits on clients).

use super::Validator;
use crate::config::settings as owner;
use crate::config::{DownstreamSettings, RawDownstream, RawServer, ServerSettings};

impl Validator {
    pub(super) fn server(&mut self, raw: &RawServer) -> ServerSettings {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(owner::FALLBACK_THREADS);
        let threads = match raw.threads {
            None | Some(0) => cores,
            Some(n) if n > owner::MAX_THREADS => {
                self.err(
                    "server.threads",
                    n.to_string(),
                    format!("must be 0 (one per core) to {}", owner::MAX_THREADS),
                );
                cores
            }
            Some(n) => n,
        };
        ServerSettings {
            threads,
            work_stealing: raw.work_stealing.unwrap_or(owner::DEFAULT_WORK_STEALING),
            grace_period: self.duration(
                "server.grace_period",
                &raw.grace_period,
                owner::DEFAULT_GRACE_PERIOD,
            ),
            graceful_shutdown_timeout: self.duration(
                "server.graceful_shutdown_timeout",
                &raw.graceful_shutdown_timeout,
                owner::DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT,
            ),
            pid_file: raw
                .pid_file
                .clone()
                .unwrap_or_else(|| owner::DEFAULT_PID_FILE.into()),
            upgrade_sock: raw
                .upgrade_sock
                .clone()
                .unwrap_or_else(|| owner::DEFAULT_UPGRADE_SOCK.into()),
            upstream_keepalive_pool_size: raw
                .upstream_keepalive_pool_size
                .unwrap_or(owner::DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE),
        }
    }

    pub(super) fn downstream(&mut self, raw: &RawDownstream) -> DownstreamSettings {
        let counts = owner::MAX_HEADER_COUNT_RANGE;
        let max_header_count = raw
            .max_header_count
            .unwrap_or(owner::DEFAULT_MAX_HEADER_COUNT);
        if !counts.contains(&max_header_count) {
            self.err(
                "downstream.max_header_count",
                max_header_count.to_string(),
                format!("must be between {} and {}", counts.start(), counts.end()),
            );
        }
        let keepalive_requests = raw
            .keepalive_requests
            .unwrap_or(owner::DEFAULT_KEEPALIVE_REQUESTS);
        if keepalive_requests == 0 {
            self.err(
                "downstream.keepalive_requests",
                "0",
                "must be at least 1 (1 turns keepalive off)",
            );
        }
        let streams = owner::H2_MAX_CONCURRENT_STREAMS_RANGE;
        let h2_streams = raw
            .h2_max_concurrent_streams
            .unwrap_or(owner::DEFAULT_H2_MAX_CONCURRENT_STREAMS);
        if !streams.contains(&h2_streams) {
            self.err(
                "downstream.h2_max_concurrent_streams",
                h2_streams.to_string(),
                format!("must be between {} and {}", streams.start(), streams.end()),
            );
        }
        DownstreamSettings {
            client_header_timeout: self.duration(
                "downstream.client_header_timeout",
                &raw.client_header_timeout,
                owner::DEFAULT_CLIENT_HEADER_TIMEOUT,
            ),
            keepalive_timeout: self.duration(
                "downstream.keepalive_timeout",
                &raw.keepalive_timeout,
                owner::DEFAULT_KEEPALIVE_TIMEOUT,
            ),
            keepalive_requests: keepalive_requests.max(1),
            max_header_bytes: self.size(
                "downstream.max_header_bytes",
                &raw.max_header_bytes,
                owner::DEFAULT_MAX_HEADER_BYTES,
                owner::MAX_HEADER_BYTES_RANGE,
            ) as usize,
            max_header_count: max_header_count.clamp(*counts.start(), *counts.end()),
            max_body_size: self.size(
                "downstream.max_body_size",
                &raw.max_body_size,
                owner::DEFAULT_MAX_BODY_SIZE,
                owner::MAX_BODY_SIZE_RANGE,
            ),
            h2_max_concurrent_streams: h2_streams.clamp(*streams.start(), *streams.end()),
            max_connections_per_peer: raw
                .max_connections_per_peer
                .unwrap_or(owner::DEFAULT_MAX_CONNECTIONS_PER_PEER),
            send_timeout: self.duration(
                "downstream.send_timeout",
                &raw.send_timeout,
                owner::DEFAULT_SEND_TIMEOUT,
            ),
        }
    }
}
