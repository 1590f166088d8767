#!/usr/bin/env bash
# Cache-hit load run: the release proxy (galion-edge-tools demo: sample origins + proxy, configs/local.toml)
# against the same origin directly, interleaved, with wrk (Debian package) on 127.0.0.1 only.
# Bounded: ROUNDS x 4 runs of DURATION each. Usage: scripts/cache-loadrun.sh [ROUNDS] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo; $sudo apt-get install -y wrk >/dev/null; }
ROUNDS=${1:-2}; DURATION=${2:-8s}
cargo build --release -p galion-edge-tools >/dev/null
RUST_LOG=warn ./target/release/galion-edge-tools demo >/dev/null 2>&1 &
PID=$!; trap 'kill $PID 2>/dev/null' EXIT
for _ in $(seq 50); do curl -sf -o /dev/null -H 'Host: galion.app' http://127.0.0.1:8088/api/users && break; sleep 0.2; done
for u in /api/users '/api/blob/bytes?n=102400' '/api/app.js/text?n=102400'; do
  for ae in identity br gzip; do curl -s -o /dev/null -H 'Host: galion.app' -H "Accept-Encoding: $ae" "http://127.0.0.1:8088$u"; done
done
run() { wrk -t2 -c32 -d"$DURATION" --latency "$@" 2>&1 | awk '/Requests\/sec/{r=$2} / 50%/{p50=$2} / 99%/{p99=$2} END{printf "%10s rps  p50 %8s  p99 %8s", r, p50, p99}'; }
printf '%-8s %-22s %s\n' round case result
for r in $(seq "$ROUNDS"); do
  printf '%-8s %-22s %s\n' "$r" "1KiB direct" "$(run http://127.0.0.1:8001/api/users)"
  printf '%-8s %-22s %s\n' "$r" "1KiB proxy HIT" "$(run -H 'Host: galion.app' http://127.0.0.1:8088/api/users)"
  printf '%-8s %-22s %s\n' "$r" "100KiB direct" "$(run 'http://127.0.0.1:8001/api/blob/bytes?n=102400')"
  printf '%-8s %-22s %s\n' "$r" "100KiB proxy HIT" "$(run -H 'Host: galion.app' 'http://127.0.0.1:8088/api/blob/bytes?n=102400')"
  # A 100 KB JavaScript file, cached in the api zone: identity, br and gzip variants (compressed once, on the miss).
  printf '%-8s %-22s %s\n' "$r" "100KiB JS HIT identity" "$(run -H 'Host: galion.app' -H 'Accept-Encoding: identity' 'http://127.0.0.1:8088/api/app.js/text?n=102400')"
  printf '%-8s %-22s %s\n' "$r" "100KiB JS HIT br" "$(run -H 'Host: galion.app' -H 'Accept-Encoding: br' 'http://127.0.0.1:8088/api/app.js/text?n=102400')"
  printf '%-8s %-22s %s\n' "$r" "100KiB JS HIT gzip" "$(run -H 'Host: galion.app' -H 'Accept-Encoding: gzip' 'http://127.0.0.1:8088/api/app.js/text?n=102400')"
done
curl -s http://127.0.0.1:9113/cache/stats; echo
