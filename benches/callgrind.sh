#!/usr/bin/env bash
# User-space instructions per request under callgrind: a figure free of the machine's noise, for
# an A/B of proxy builds and for a comparison with nginx on the same origins.
#
# Each target is started under `valgrind --tool=callgrind` twice, given 1,000 and then 5,000
# requests (`h2load --h1 -c4`, after its warm-up request), and stopped; the difference of the two
# totals over 4,000 is what one request costs, start-up and shutdown cancelling out.
#
# Usage: benches/callgrind.sh PATH TARGET...
#   PATH     the request path on galion.app, e.g. '/api/me?cc=private' (an uncacheable answer
#            on the api cache route), '/voice/me?cc=private' (the `cache = "off"` route) or
#            '/api/users?page=1' (a 1 KiB memory hit after the first request)
#   TARGET   a galion-edge binary (run on configs/local.toml moved to ports 26xxx, access log
#            off), or `nginx` (Debian's, on configs/bench/nginx.conf with one worker and no
#            master process, against the same origins)
# e.g.  benches/callgrind.sh '/api/me?cc=private' /tmp/before/galion-edge target/release/galion-edge nginx
# Outputs: one line per target, and the callgrind files in $OUT (default /tmp/galion-callgrind)
# for `callgrind_annotate`. Needs valgrind, h2load (nghttp2-client) and, for `nginx`, nginx with
# its brotli module: `apt-get install valgrind nghttp2-client nginx libnginx-mod-http-brotli-filter`.
# Bounded: 6,000 requests per target and run; everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ_PATH=$1
shift
OUT=${OUT:-/tmp/galion-callgrind}
TOOLS=${TOOLS:-target/release/galion-edge-tools}
mkdir -p "$OUT"
for cmd in valgrind h2load curl; do
  command -v "$cmd" >/dev/null || { echo "$cmd is not installed" >&2; exit 1; }
done
[ -x "$TOOLS" ] || cargo build --release -p galion-edge-tools

RUN=$(mktemp -d /tmp/galion-callgrind.XXXXXX)
chmod 755 "$RUN" # nginx's cache directory under it
cp -r configs/local-certs configs/local-webroot "$RUN/"
# The proxy's ports and the origins' ports of configs/local.toml, moved to 26xxx; the origins'
# ports are the ones configs/bench/nginx.conf proxies to.
sed_args=(-e 's#127.0.0.1:8443"#127.0.0.1:26443"#' -e 's#127.0.0.1:8080"#127.0.0.1:26080"#'
  -e 's#127.0.0.1:8088"#127.0.0.1:26088"#' -e 's#127.0.0.1:9113"#127.0.0.1:26113"#'
  -e "s#/tmp/galion-edge-local.pid#$RUN/galion-edge.pid#"
  -e "s#/tmp/galion-edge-local-upgrade.sock#$RUN/upgrade.sock#"
  -e 's#^path = "stdout"#path = "off"#')
for p in 3001 8001 8002 3003 8003 8004; do sed_args+=(-e "s#127.0.0.1:$p\"#127.0.0.1:26${p:0:1}${p:2}\"#"); done
sed "${sed_args[@]}" configs/local.toml >"$RUN/galion.toml"
mkdir -p "$RUN/nginx/logs" "$RUN/nginx/cache"
sed -e 's#^worker_processes auto;#worker_processes 1; master_process off;#' configs/bench/nginx.conf \
  >"$RUN/nginx/nginx.conf"

ORIGINS=""
PID=""
cleanup() {
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
  [ -n "$ORIGINS" ] && kill "$ORIGINS" 2>/dev/null
  rm -rf "$RUN"
}
trap cleanup EXIT
RUST_LOG=warn "$TOOLS" origins -c "$RUN/galion.toml" >"$RUN/origins.log" 2>&1 &
ORIGINS=$!

measure() { # target requests -> the run's total instructions
  local target=$1 n=$2 port url
  rm -rf "$RUN/local-cache" "$RUN/nginx/cache" && mkdir -p "$RUN/nginx/cache"
  if [ "$target" = nginx ]; then
    port=27088
    valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.out" \
      nginx -p "$RUN/nginx/" -c "$RUN/nginx/nginx.conf" -g 'daemon off;' >"$RUN/server.log" 2>&1 &
  else
    port=26088
    (cd "$RUN" && RUST_LOG=warn exec valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.out" \
      "$target" run -c "$RUN/galion.toml") >"$RUN/server.log" 2>&1 &
  fi
  PID=$!
  url="http://127.0.0.1:$port$REQ_PATH"
  for _ in $(seq 600); do
    curl -sf -o /dev/null -H 'Host: galion.app' "$url" && break
    sleep 0.2
  done
  h2load --h1 -n "$n" -c 4 -H ':authority: galion.app' "$url" >"$RUN/h2load.txt"
  grep -q "succeeded, 0 failed" "$RUN/h2load.txt" || { cat "$RUN/h2load.txt" "$RUN/server.log" >&2; exit 1; }
  if [ "$target" = nginx ]; then kill -QUIT "$PID"; else kill -INT "$PID"; fi
  wait "$PID" 2>/dev/null || true
  PID=""
  cp "$RUN/cg.out" "$OUT/$(basename "$target").$n.out"
  awk '/^(summary|totals):/ {print $2; exit}' "$RUN/cg.out"
}

for target in "$@"; do
  [ "$target" = nginx ] || target=$(realpath "$target")
  small=$(measure "$target" 1000)
  large=$(measure "$target" 5000)
  printf '%-40s %s  %d instructions per request\n' "$(basename "$target")" "$REQ_PATH" \
    $(((large - small) / 4000))
done
echo "callgrind files in $OUT (callgrind_annotate $OUT/NAME.5000.out)"
