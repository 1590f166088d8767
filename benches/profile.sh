#!/usr/bin/env bash
# Profiles the release proxy under load on loopback: `galion-edge-tools demo` (the sample origins
# and the proxy, in one process, with configs/local.toml, moved to ports 2xxxx so it does not clash with a demo on
# the usual ports, access log to a file as in production), wrk from Debian as the load, and
# `perf record` (software cpu-clock sampling: it works without hardware counters, as in VMs).
#
# Usage: benches/profile.sh [SCENARIO] [SECONDS] [BINARY]
#   SCENARIO: hit1k (1 KiB API cache hit, default), hit100k (100 KiB JS hit), pass (uncacheable
#   API pass-through), ab (no perf: interleaved wrk runs of BINARY and $B_BIN, see below).
#   BINARY: a binary whose `demo` serves the proxy in its own process: galion-edge-tools (default
#   target/release/galion-edge-tools, built if missing), or a galion-edge built before the demo
#   moved out of it (1687f5b and earlier), for an A/B against an old build.
# Outputs: $OUT (default /tmp/galion-perf)/SCENARIO.perf.data and SCENARIO.top.txt (the
# functions by share of samples, all threads of the proxy process).
#
# A/B mode: B_BIN=/path/to/new/galion-edge-tools benches/profile.sh ab 8 /path/to/old/galion-edge-tools
# runs ROUNDS (default 3) x {A = old, B = new} x {hit1k, hit100k, pass}, each SECONDS long,
# and prints requests/s, p50, p99 and CPU time per request of each run, so the two are compared
# in the same minutes. A_THREADS / B_THREADS set `[server] threads` of each side (default 0 =
# one per core), to compare thread counts with one binary; A_PRELOAD / B_PRELOAD an LD_PRELOAD
# (e.g. /usr/lib/x86_64-linux-gnu/libmimalloc.so.2 to try another allocator without a rebuild);
# A_SED / B_SED a sed expression applied to each side's config (e.g.
# B_SED='s/^work_stealing = true/work_stealing = false/' to compare a setting with one
# binary). SERVER_THREADS and SERVER_SED do the same for a profile run.
# Bounded: every run has a fixed duration; everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${1:-hit1k}
SECONDS_RUN=${2:-10}
BIN=${3:-target/release/galion-edge-tools}
OUT=${OUT:-/tmp/galion-perf}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
[ -x "$BIN" ] || cargo build --release -p galion-edge-tools

# A copy of the local config on other ports, its certificates and webroot.
DIR=$(mktemp -d /tmp/galion-profile.XXXXXX)
cp -r configs/local-certs configs/local-webroot "$DIR/"
write_config() { # [server threads] [extra sed expression]
  sed -E -e 's/127\.0\.0\.1:([0-9]{4})"/127.0.0.1:2\1"/g' \
    -e "s|/tmp/galion-edge-local|$DIR/galion-edge|g" \
    -e "s|^path = \"stdout\"|path = \"$DIR/access.log\"|" \
    -e "s|^threads = 0|threads = ${1:-0}|" \
    -e "${2:-}" \
    configs/local.toml >"$DIR/local.toml"
}
PROXY=http://127.0.0.1:28088

PID=
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=; }
trap 'stop; rm -rf "$DIR"' EXIT

start() { # binary [server threads] [LD_PRELOAD] [extra sed expression for the config]
  write_config "${2:-${SERVER_THREADS:-0}}" "${4:-${SERVER_SED:-}}"
  rm -rf "$DIR/local-cache"
  LD_PRELOAD=${3:-} RUST_LOG=warn "$1" demo --configs "$DIR" >/dev/null 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null -H 'Host: galion.app' "$PROXY/api/users" && break
    sleep 0.1
  done
  # Warm the cache entries the scenarios hit.
  for _ in 1 2 3; do
    curl -s -o /dev/null -H 'Host: galion.app' "$PROXY/api/users"
    curl -s -o /dev/null -H 'Host: galion.app' "$PROXY/api/app.js/text?n=102400"
  done
}

url_of() {
  case $1 in
    hit1k) echo "$PROXY/api/users" ;;
    hit100k) echo "$PROXY/api/app.js/text?n=102400" ;;
    pass) echo "$PROXY/api/me?cc=no-store" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

# Prints requests/s, p50, p99 and the proxy process's CPU time per request (user + system,
# from /proc: the efficiency figure that holds when other work shares the cores).
load() { # scenario seconds
  local t0 t1 out
  t0=$(ticks)
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$2s" --latency -H 'Host: galion.app' "$(url_of "$1")" 2>&1)
  t1=$(ticks)
  echo "$out" | awk -v cpu=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
    /requests in/{n=$1} /Requests\/sec/{r=$2} / 99%/{p99=$2} / 50%/{p50=$2} /Non-2xx/{bad=$NF}
    END{printf "%10s rps  p50 %8s  p99 %8s  cpu/req %6.1f us%s", r, p50, p99, (n ? cpu / hz * 1e6 / n : 0), (bad ? "  NON-2xx " bad : "")}'
}

if [ "$SCENARIO" = ab ]; then
  B_BIN=${B_BIN:-$BIN}
  ROUNDS=${ROUNDS:-3}
  printf '%-6s %-8s %-8s %s\n' round binary case result
  for r in $(seq "$ROUNDS"); do
    for which in A B; do
      bin=$BIN; threads=${A_THREADS:-0}; preload=${A_PRELOAD:-}; sedx=${A_SED:-}
      [ $which = B ] && bin=$B_BIN && threads=${B_THREADS:-0} && preload=${B_PRELOAD:-} && sedx=${B_SED:-}
      start "$bin" "$threads" "$preload" "$sedx"
      for s in hit1k hit100k pass; do
        printf '%-6s %-8s %-8s %s\n' "$r" "$which" "$s" "$(load $s "$SECONDS_RUN")"
      done
      stop
    done
  done
  exit 0
fi

start "$BIN"
load "$SCENARIO" 2 >/dev/null # past the first connections and allocations
perf record -e cpu-clock -F 1999 ${CALLGRAPH:+--call-graph dwarf} -p "$PID" -o "$OUT/$SCENARIO.perf.data" -- sleep "$SECONDS_RUN" \
  >/dev/null 2>&1 &
PERF=$!
echo "$SCENARIO: $(load "$SCENARIO" "$SECONDS_RUN")"
wait $PERF || true
perf report -i "$OUT/$SCENARIO.perf.data" --no-children --sort symbol --stdio 2>/dev/null |
  grep -v '^$' | grep -v '^#' | grep '%' | head -60 >"$OUT/$SCENARIO.top.txt" || true
perf report -i "$OUT/$SCENARIO.perf.data" --no-children --sort dso --stdio 2>/dev/null |
  grep '%' | head -10 >"$OUT/$SCENARIO.dso.txt" || true
echo "top functions: $OUT/$SCENARIO.top.txt"
