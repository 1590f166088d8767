#!/usr/bin/env bash
# galion-edge against nginx, side by side, on this machine, in the same run.
#
# Starts the sample origins (`galion-edge-tools origins`), galion-edge (release build, on
# configs/local.toml moved to the benchmark ports, access log off) and nginx (Debian's, with its
# brotli module, on configs/bench/nginx.conf, a non-daemon child with its own prefix in a temp
# dir), all on 127.0.0.1. Then, for ROUNDS rounds, runs every scenario of `galion-edge-tools loadtest` against the
# origin directly (where that is meaningful), galion-edge and nginx, interleaved (the order of the
# three rotates every round), and prints the medians as a markdown table (docs/benchmarks.md).
#
# Usage: scripts/bench-vs-nginx.sh [ROUNDS] [DURATION] [CONNECTIONS]     (defaults 3 8s 32)
#   SCENARIOS="api-hit br-hit" scripts/bench-vs-nginx.sh 1 5s   # a subset
#   OUT=dir                       where the reports go (default bench-results/DATE)
#   SKIP_BUILD=1                  use target/release/galion-edge and galion-edge-tools as they are
#   RATE=3000                     also run api-pass at this fixed rate per target (0 = skip):
#                                 closed-loop latency hides a server that parks connections
#                                 (coordinated omission); at a fixed rate every late answer counts
# Bounded: ROUNDS x (up to 3 targets) x (scenarios) runs of DURATION each, plus warm-ups.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-3}
DURATION=${2:-8s}
CONNS=${3:-32}
SCENARIOS=${SCENARIOS:-"static-hit api-hit api-pass gzip-hit br-hit pass-1mb tls-h1 tls-h2 mix ws-idle"}
RATE=${RATE:-3000}
# Scenarios where the origin answered directly is a meaningful baseline.
ORIGIN_SCENARIOS=" static-hit api-hit api-pass pass-1mb mix "
OUT=${OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
# The release binaries of this checkout (honours CARGO_TARGET_DIR, like cargo): the proxy, and
# the tools (sample origins, load generator).
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/galion-edge
TOOLS=${CARGO_TARGET_DIR:-$ROOT/target}/release/galion-edge-tools

# Benchmark ports (configs/bench/nginx.conf uses the same).
GE_PLAIN=26088 GE_HTTPS=26443 GE_HTTP=26080 GE_ADMIN=26113
NG_PLAIN=27088 NG_HTTPS=27443
declare -A ORIGIN_PORT=([3001]=26301 [8001]=26801 [8002]=26802 [3003]=26303 [8003]=26803 [8004]=26804)

# Other programs on these ports would silently take part in the measurement.
for p in $GE_PLAIN $GE_HTTPS $GE_HTTP $GE_ADMIN $NG_PLAIN $NG_HTTPS "${ORIGIN_PORT[@]}"; do
  if ss -ltnH "sport = :$p" | grep -q .; then
    echo "port $p is in use (ss -ltnp 'sport = :$p'); the benchmark needs it free" >&2; exit 1
  fi
done

sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_http_brotli_filter_module.so ]; then
  echo "installing nginx and its brotli module (apt)..."
  $sudo apt-get install -y nginx libnginx-mod-http-brotli-filter >/dev/null
fi

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building galion-edge and galion-edge-tools (release)..."
  # Two builds, so that the proxy is built with its own features, as shipped.
  cargo build --release -p galion-edge
  cargo build --release -p galion-edge-tools
fi

RUN=$(mktemp -d /tmp/galion-edge-bench.XXXXXX)
chmod 755 "$RUN"   # nginx's workers (user nobody) write its cache under it
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT

# galion-edge's config: configs/local.toml with the benchmark ports, its files in the run dir,
# and no access log (configs/bench/nginx.conf has access_log off: the same on both sides).
cp -r configs/local-certs configs/local-webroot "$RUN/"
sed_args=(-e "s#127.0.0.1:8443\"#127.0.0.1:$GE_HTTPS\"#" -e "s#127.0.0.1:8080\"#127.0.0.1:$GE_HTTP\"#"
          -e "s#127.0.0.1:8088\"#127.0.0.1:$GE_PLAIN\"#" -e "s#127.0.0.1:9113\"#127.0.0.1:$GE_ADMIN\"#"
          -e "s#/tmp/galion-edge-local.pid#$RUN/galion-edge.pid#"
          -e "s#/tmp/galion-edge-local-upgrade.sock#$RUN/upgrade.sock#"
          -e "s#^path = \"stdout\"#path = \"off\"#")
for p in "${!ORIGIN_PORT[@]}"; do sed_args+=(-e "s#127.0.0.1:$p\"#127.0.0.1:${ORIGIN_PORT[$p]}\"#"); done
sed "${sed_args[@]}" configs/local.toml > "$RUN/galion.toml"
if grep -qE '127\.0\.0\.1:(8443|8080|8088|9113|3001|8001|8002|3003|8003|8004)"|/tmp/galion-edge-local|"stdout"' "$RUN/galion.toml"; then
  echo "configs/local.toml changed shape: update the sed in $0" >&2; exit 1
fi
"$BIN" check -c "$RUN/galion.toml" >/dev/null

mkdir -p "$RUN/nginx/logs" "$RUN/nginx/cache"
nginx -t -q -p "$RUN/nginx/" -c "$ROOT/configs/bench/nginx.conf"

RUST_LOG=warn "$TOOLS" origins -c "$RUN/galion.toml" >"$RUN/origins.log" 2>&1 &
ORIGINS=$!; PIDS+=("$ORIGINS")
RUST_LOG=warn "$BIN" run -c "$RUN/galion.toml" >"$RUN/proxy.log" 2>&1 &
PROXY=$!; PIDS+=("$PROXY")
nginx -p "$RUN/nginx/" -c "$ROOT/configs/bench/nginx.conf" -g 'daemon off;' &
NGINX=$!; PIDS+=("$NGINX")

ready() { curl -sf -o /dev/null -H 'Host: galion.app' "http://127.0.0.1:$1/api/health"; }
for _ in $(seq 300); do
  ready "$GE_PLAIN" && ready "$NG_PLAIN" && ready "${ORIGIN_PORT[8001]}" && break
  sleep 0.2
done
ready "$GE_PLAIN" && ready "$NG_PLAIN" || { echo "servers did not come up; logs in $RUN" >&2; tail "$RUN"/*.log "$RUN"/nginx/logs/error.log >&2; exit 1; }

mkdir -p "$OUT"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpus: $(nproc); kernel: $(uname -r); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "galion-edge: $("$BIN" --version); nginx: $(nginx -v 2>&1 | sed 's/.*: //'); $(rustc --version 2>/dev/null || true)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rounds: $ROUNDS; duration: $DURATION per run; connections: $CONNS"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

run_one() { # round target scenario
  local round=$1 target=$2 sc=$3 args
  case $target in
    origin)
      local port=${ORIGIN_PORT[8001]}
      [ "$sc" = pass-1mb ] && port=${ORIGIN_PORT[8002]}
      args=(--url "http://127.0.0.1:$port" --pid "$ORIGINS") ;;
    galion-edge) args=(--url "http://127.0.0.1:$GE_PLAIN" --tls-url "https://127.0.0.1:$GE_HTTPS" --pid "$PROXY") ;;
    nginx) args=(--url "http://127.0.0.1:$NG_PLAIN" --tls-url "https://127.0.0.1:$NG_HTTPS" --pid "$NGINX") ;;
  esac
  "$TOOLS" loadtest "${args[@]}" --label "$target" -s "$sc" -d "$DURATION" -c "$CONNS" \
    -o "$OUT/round-$round/$target-$sc" > "$OUT/round-$round/$target-$sc.txt" 2>&1 \
    || { echo "  $target $sc FAILED:"; tail -5 "$OUT/round-$round/$target-$sc.txt"; }
  awk -v t="$target" -v s="$sc" 'NR==4 {printf "  %-12s %s\n", t, $0}' "$OUT/round-$round/$target-$sc.txt"
}

targets=(origin galion-edge nginx)
run_round() { # round scenarios...
  local round=$1; shift
  mkdir -p "$OUT/round-$round"
  for sc in "$@"; do
    echo " $sc"
    # Interleaved: the order of the targets rotates every round.
    for i in 0 1 2; do
      t=${targets[$(( (i + round - 1) % 3 ))]}
      if [ "$t" = origin ] && [[ "$ORIGIN_SCENARIOS" != *" $sc "* ]]; then continue; fi
      run_one "$round" "$t" "$sc"
    done
  done
}
# ws-idle goes after every HTTP round: the memory it leaves behind in a server (galion-edge's
# allocator keeps it, see docs/benchmarks.md) would otherwise count in the next round's RSS.
HTTP_SCENARIOS=() WS_SCENARIOS=()
for sc in $SCENARIOS; do
  if [ "$sc" = ws-idle ]; then WS_SCENARIOS+=("$sc"); else HTTP_SCENARIOS+=("$sc"); fi
done
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS"
  run_round "$round" "${HTTP_SCENARIOS[@]}"
done
if [ "${RATE:-0}" != 0 ] && [[ " $SCENARIOS " == *" api-pass "* ]]; then
  mkdir -p "$OUT/fixed-rate"
  for round in $(seq "$ROUNDS"); do
    echo "api-pass at a fixed $RATE req/s, round $round/$ROUNDS"
    for i in 0 1 2; do
      t=${targets[$(( (i + round - 1) % 3 ))]}
      case $t in
        origin) args=(--url "http://127.0.0.1:${ORIGIN_PORT[8001]}" --pid "$ORIGINS") ;;
        galion-edge) args=(--url "http://127.0.0.1:$GE_PLAIN" --pid "$PROXY") ;;
        nginx) args=(--url "http://127.0.0.1:$NG_PLAIN" --pid "$NGINX") ;;
      esac
      "$TOOLS" loadtest "${args[@]}" --label "$t" -s api-pass -d "$DURATION" -c "$CONNS" --rate "$RATE" \
        -o "$OUT/fixed-rate/round-$round-$t" > "$OUT/fixed-rate/round-$round-$t.txt" 2>&1 \
        || { echo "  $t FAILED:"; tail -5 "$OUT/fixed-rate/round-$round-$t.txt"; }
      awk -v t="$t" 'NR==4 {printf "  %-12s %s\n", t, $0}' "$OUT/fixed-rate/round-$round-$t.txt"
    done
  done
fi
if [ ${#WS_SCENARIOS[@]} -gt 0 ]; then
  for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS (WebSockets)"
    run_round "$round" "${WS_SCENARIOS[@]}"
  done
fi

"$TOOLS" loadtest --summarize "$OUT"/round-* > "$OUT/summary.md"
if [ -d "$OUT/fixed-rate" ]; then
  { echo; echo "api-pass at a fixed $RATE req/s (latency from the intended send time):"; echo
    "$TOOLS" loadtest --summarize "$OUT/fixed-rate"; } >> "$OUT/summary.md"
fi
echo
cat "$OUT/machine.txt"
echo
cat "$OUT/summary.md"
echo "reports, plots and the summary are in $OUT/"
