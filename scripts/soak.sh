#!/usr/bin/env bash
# Soak run: the release proxy under mixed load for a bounded time, sampling its resident memory.
#
#   scripts/soak.sh [SECONDS]        (default 600; run it under `nice -n 10` on a shared machine)
#
# Everything is on 127.0.0.1: sample origins in a process of their own (tools/examples/
# soak_origins.rs, requests not recorded), `galion-edge run` with a soak config (small zones so
# the memory tiers fill and the disk tiers evict within minutes), and `wrk` (Debian package) with
# scripts/soak-mix.lua: cache hits (api and static zones, three encodings), misses of new URLs
# (disk fills and evictions), 1 MiB objects, uncached compressed pages, 404s, POST bodies and a
# second site. Beside it, SOAK_WS (default 200) WebSockets on the Socket.IO path of the second
# site, each echoing a message every 5 s for the whole run (tools/examples/soak_websockets.rs),
# and a config reload (`POST /reload` on the admin listener) every SOAK_RELOAD seconds (default
# 60). VmRSS and the open file descriptors of the proxy are written every 10 s to
# $SOAK_DIR/rss.csv; at the end the script prints RSS and descriptors at start, middle and end,
# the max, request totals by status and socket errors, the reloads, the WebSockets' line and the
# cache statistics. Ports: SOAK_PORT (default 21000, below the ephemeral range) + 88 / 113 / 1 / 2 / 3.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
BASE=${SOAK_PORT:-21000}
PLAIN=$((BASE + 88)); ADMIN=$((BASE + 113))
API=$((BASE + 1)); WEB=$((BASE + 2)); STUDIO=$((BASE + 3))
SOAK_DIR=${SOAK_DIR:-$(mktemp -d /tmp/galion-soak.XXXXXX)}
WS=${SOAK_WS:-200}
RELOAD_EVERY=${SOAK_RELOAD:-60}
TARGET=${CARGO_TARGET_DIR:-target}

bash scripts/setup.sh
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo; $sudo apt-get install -y wrk >/dev/null; }
cargo build --release -p galion-edge --bin galion-edge >/dev/null
cargo build --release -p galion-edge-tools --example soak_origins --example soak_websockets >/dev/null

cat >"$SOAK_DIR/soak.toml" <<EOF
[server]
threads = 2
grace_period = "1s"
graceful_shutdown_timeout = "1s"
pid_file = "$SOAK_DIR/galion-edge.pid"
upgrade_sock = "$SOAK_DIR/upgrade.sock"

[listeners]
http_proxy = ["127.0.0.1:$PLAIN"]

[admin]
listen = ["127.0.0.1:$ADMIN"]

[downstream]
max_body_size = "1MB"

[access_log]
path = "$SOAK_DIR/access.log"

[limits]
allow = ["127.0.0.0/8"]

[compression]
enabled = true

[cache]
static_extensions = ["js", "css", "svg"]

[cache.zones.api]
path = "$SOAK_DIR/cache/api"
size = "64MB"
memory_size = "16MB"
max_object_size = "4MB"

[cache.zones.static]
path = "$SOAK_DIR/cache/static"
size = "32MB"
memory_size = "8MB"
max_object_size = "4MB"

[upstreams.api]
backends = ["127.0.0.1:$API"]
health_check = { kind = "http", path = "/health", interval = "2s" }
[upstreams.web]
backends = ["127.0.0.1:$WEB"]
health_check = { kind = "tcp", interval = "2s" }
[upstreams.studio]
backends = ["127.0.0.1:$STUDIO"]

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  { path = "/api/", upstream = "api", cache = "api" },
  { path = "/nocache/", upstream = "api", cache = "off" },
  { path = "/", upstream = "web" },
]

[[sites]]
name = "galion.studio"
hosts = ["galion.studio"]
routes = [ { path = "/", upstream = "studio" } ]
EOF

"$TARGET/release/examples/soak_origins" "api=127.0.0.1:$API" "web=127.0.0.1:$WEB" \
  "studio=127.0.0.1:$STUDIO" >"$SOAK_DIR/origins.log" 2>&1 &
ORIGINS=$!
RUST_LOG=warn "$TARGET/release/galion-edge" run -c "$SOAK_DIR/soak.toml" \
  >"$SOAK_DIR/proxy.out" 2>"$SOAK_DIR/proxy.log" &
PROXY=$!
SAMPLER=""
WSCLIENT=""
cleanup() {
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; fi
  if [ -n "$WSCLIENT" ]; then kill "$WSCLIENT" 2>/dev/null || true; fi
  kill "$PROXY" "$ORIGINS" 2>/dev/null || true
  wait "$PROXY" "$ORIGINS" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -sf -o /dev/null -H 'Host: galion.app' "http://127.0.0.1:$PLAIN/api/up" && break
  sleep 0.2
done
curl -sf -o /dev/null -H 'Host: galion.app' "http://127.0.0.1:$PLAIN/api/up"

rss() { awk '/^VmRSS/{print $2}' "/proc/$PROXY/status"; }
fds() { find "/proc/$PROXY/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
echo "elapsed_s,rss_kib,fds" >"$SOAK_DIR/rss.csv"
: >"$SOAK_DIR/reloads.txt"
START=$(date +%s)
(
  next_reload=$RELOAD_EVERY
  while kill -0 "$PROXY" 2>/dev/null; do
    el=$(( $(date +%s) - START ))
    echo "$el,$(rss),$(fds)" >>"$SOAK_DIR/rss.csv"
    if [ "$RELOAD_EVERY" -gt 0 ] && [ "$el" -ge "$next_reload" ] && [ "$el" -lt "$SECS" ]; then
      curl -s -X POST "http://127.0.0.1:$ADMIN/reload" >>"$SOAK_DIR/reloads.txt" || true
      echo >>"$SOAK_DIR/reloads.txt"
      next_reload=$(( next_reload + RELOAD_EVERY ))
    fi
    sleep 10
  done
) &
SAMPLER=$!

"$TARGET/release/examples/soak_websockets" "127.0.0.1:$PLAIN" galion.studio \
  "/socket.io/?EIO=4&transport=websocket" "$WS" "$SECS" >"$SOAK_DIR/ws.txt" 2>"$SOAK_DIR/ws.log" &
WSCLIENT=$!

echo "soak: ${SECS}s of mixed load on 127.0.0.1:$PLAIN (proxy pid $PROXY), $WS WebSockets, a reload every ${RELOAD_EVERY}s, files in $SOAK_DIR"
wrk -t2 -c64 -d"${SECS}s" --timeout 10s -s scripts/soak-mix.lua "http://127.0.0.1:$PLAIN" \
  >"$SOAK_DIR/wrk.txt" 2>&1 || true
ws_status=0
wait "$WSCLIENT" || ws_status=$?
WSCLIENT=""
sleep 1
echo "$(( $(date +%s) - START )),$(rss),$(fds)" >>"$SOAK_DIR/rss.csv"
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=""

cat "$SOAK_DIR/wrk.txt"
echo
awk -F, 'NR > 1 { t[NR] = $1; r[NR] = $2; f[NR] = $3; if ($2 > max) max = $2; if ($3 > fmax) fmax = $3; n = NR }
  END {
    mid = int((n + 2) / 2)
    printf "RSS (KiB): start %d (t=%ss)  middle %d (t=%ss)  end %d (t=%ss)  max %d  samples %d\n",
      r[2], t[2], r[mid], t[mid], r[n], t[n], max, n - 1
    printf "open file descriptors: start %d  middle %d  end %d  max %d\n", f[2], f[mid], f[n], fmax
    printf "RSS end - middle: %+d KiB\n", r[n] - r[mid]
    # Means of the second minute (memory tiers filling) and of the last minute (steady state).
    for (i = 2; i <= n; i++) {
      if (t[i] >= 60 && t[i] < 120) { a += r[i]; na++ }
      if (t[i] >= t[n] - 60) { b += r[i]; nb++ }
    }
    if (na && nb) printf "RSS mean 60-120 s: %d KiB, last minute: %d KiB\n", a / na, b / nb
  }' "$SOAK_DIR/rss.csv"
echo "proxy log: $(wc -l <"$SOAK_DIR/proxy.log") lines, $(grep -c ' ERROR ' "$SOAK_DIR/proxy.log" || true) errors"
echo "reloads: $(grep -c '"reloaded":true' "$SOAK_DIR/reloads.txt" || true) applied, $(grep -c '"reloaded":false' "$SOAK_DIR/reloads.txt" || true) refused"
cat "$SOAK_DIR/ws.txt"
[ "$ws_status" -eq 0 ] || { echo "soak: the WebSocket client failed (exit $ws_status): $SOAK_DIR/ws.log" >&2; }
curl -s "http://127.0.0.1:$ADMIN/cache/stats"; echo
echo "access log: $(wc -l <"$SOAK_DIR/access.log") lines (file removed)"
rm -f "$SOAK_DIR/access.log"
kill -0 "$PROXY" 2>/dev/null || { echo "soak: the proxy died" >&2; exit 1; }
[ "$ws_status" -eq 0 ] || exit 1
