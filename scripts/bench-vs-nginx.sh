#!/usr/bin/env bash
# galion-edge against nginx, side by side, on this machine, in the same run, with three load
# generators: our own (`galion-edge-tools loadtest`), wrk (Debian `wrk`) and h2load (Debian
# `nghttp2-client`).
#
# Starts the sample origins (`galion-edge-tools origins`), galion-edge (release build, on
# configs/local.toml moved to the benchmark ports, access log off) and nginx (Debian's, with its
# brotli module, on configs/bench/nginx.conf, a non-daemon child with its own prefix in a temp
# dir), all on 127.0.0.1. Then, for ROUNDS rounds, runs each generator's scenarios:
#   loadtest  every scenario of `galion-edge-tools loadtest` against the origin directly (where
#             that is meaningful), galion-edge and nginx;
#   wrk       the same requests with wrk, plus api-pass-random (an uncacheable answer on the
#             /api/ cache route at a new URL every request), api-gzip (1 KB hit, gzip) and
#             browser-mix (Chrome's Accept-Encoding: 40% JavaScript hits, 40% API hits, 20%
#             private API answers), against galion-edge and nginx (configs/bench/wrk.lua);
#   h2load    tls-h2 (the 1 KB API hit over TLS 1.3 and HTTP/2, -m H2_STREAMS streams per
#             connection), against galion-edge and nginx;
# interleaved (the order of the targets rotates every round). Every wrk and h2load run records
# req/s, p99 latency and the server's CPU time per request (utime + stime of its processes from
# /proc/PID/stat before and after, nginx's master and workers together, over the requests
# completed). At the end it prints the medians over the rounds as markdown tables, one per
# generator, with galion-edge / nginx ratios (docs/benchmarks.md).
#
# Usage: scripts/bench-vs-nginx.sh [ROUNDS] [DURATION] [CONNECTIONS]     (defaults 3 8s 32)
#   DURATION is whole seconds ("8s", "2m", at most 5m): wrk and h2load take nothing finer
#   GENERATORS="loadtest wrk h2load"  which generators run (default: all three)
#   SCENARIOS="api-hit br-hit"        loadtest's scenarios (default: all of them)
#   WRK_SCENARIOS="api-pass api-pass-random"   wrk's (default: all; see wrk_h2load_request)
#   H2LOAD_SCENARIOS="tls-h2"         h2load's (default tls-h2; also tls-h2-static, tls-h2-pass)
#   WRK_THREADS=2 H2LOAD_THREADS=2    generator threads; H2_STREAMS=10 streams per h2 connection
#   OUT=dir                           where the reports go (default bench-results/DATE)
#   SKIP_BUILD=1                      use the release galion-edge and galion-edge-tools as they are
#   WS_CONNECTIONS=9900               idle WebSockets per ws-idle/ws-idle-tls run (default: loadtest's
#                                     1000; each needs two descriptors in the proxy, so 9,900 is the
#                                     most under a 20,000 open-files limit)
#   RATE=3000                         also run loadtest's api-pass at this fixed rate per target
#                                     (0 = skip): closed-loop latency hides a server that parks
#                                     connections (coordinated omission); at a fixed rate every
#                                     late answer counts
# e.g. the issue 20 measurement: scripts/bench-vs-nginx.sh 3 10s 64
#      a quick check:  GENERATORS="wrk h2load" WRK_SCENARIOS="api-hit api-pass" \
#                      SKIP_BUILD=1 scripts/bench-vs-nginx.sh 1 3s
# Bounded: ROUNDS x (up to 3 targets) x (scenarios of every generator) runs of DURATION each,
# plus a short warm-up before each run (1 s for wrk, 400 requests for h2load); a wrk or h2load
# run still going 30 s after its DURATION is killed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-3}
DURATION=${2:-8s}
CONNS=${3:-32}
GENERATORS=${GENERATORS:-"loadtest wrk h2load"}
SCENARIOS=${SCENARIOS:-"static-hit api-hit api-pass gzip-hit br-hit pass-1mb tls-h1 tls-h2 mix ws-idle ws-idle-tls"}
WRK_SCENARIOS=${WRK_SCENARIOS:-"static-hit api-hit api-pass api-pass-random api-gzip pass-1mb tls-h1 gzip-hit br-hit browser-mix"}
H2LOAD_SCENARIOS=${H2LOAD_SCENARIOS:-"tls-h2"}
WRK_THREADS=${WRK_THREADS:-2}
H2LOAD_THREADS=${H2LOAD_THREADS:-2}
H2_STREAMS=${H2_STREAMS:-10}
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

has_gen() { [[ " $GENERATORS " == *" $1 "* ]]; }
for g in $GENERATORS; do
  case $g in loadtest|wrk|h2load) ;; *) echo "GENERATORS: unknown generator $g; known: loadtest wrk h2load" >&2; exit 1 ;; esac
done
# h2load spreads its connections over its threads, wrk needs a connection per thread at least.
if { has_gen wrk && [ "$CONNS" -lt "$WRK_THREADS" ]; } || { has_gen h2load && [ $((CONNS % H2LOAD_THREADS)) -ne 0 ]; }; then
  echo "CONNECTIONS ($CONNS) must be at least WRK_THREADS ($WRK_THREADS) and a multiple of H2LOAD_THREADS ($H2LOAD_THREADS)" >&2; exit 1
fi
# The request of each wrk and h2load scenario: the paths and headers of loadtest's scenario of
# the same name (tools/src/loadtest/scenarios.rs), on the sample origins' knobs
# (tools/src/origin.rs: text?n=N is N bytes of JavaScript-like text, bytes?n=N binary, cc= the
# answer's Cache-Control), so that the generators' figures are for the same requests.
STATIC_100K='/api/static/app/text?n=102400'   # scenarios.rs STATIC_100K
CHROME_AE='gzip, deflate, br, zstd'           # scenarios.rs CHROME_AE
# Sets REQ_PATH, REQ_AE (Accept-Encoding, empty for none), REQ_MODE (configs/bench/wrk.lua's
# BENCH_WRK_MODE) and REQ_TLS (1 for the HTTPS listener); fails for an unknown scenario.
wrk_h2load_request() { # scenario
  REQ_AE='' REQ_MODE=fixed REQ_TLS=''
  case $1 in
    static-hit|tls-h2-static) REQ_PATH=$STATIC_100K ;;
    api-hit|tls-h1|tls-h2) REQ_PATH='/api/users?page=1' ;;
    api-pass|tls-h2-pass) REQ_PATH='/api/me?cc=private' ;;
    api-pass-random) REQ_PATH='/api/me?cc=private&u=RANDOM' REQ_MODE=private-random ;;
    api-gzip) REQ_PATH='/api/users?page=1' REQ_AE=gzip ;;
    pass-1mb) REQ_PATH='/voice/blob/bytes?n=1048576' ;;
    gzip-hit) REQ_PATH=$STATIC_100K REQ_AE=gzip ;;
    br-hit) REQ_PATH=$STATIC_100K REQ_AE=$CHROME_AE ;;
    browser-mix) REQ_PATH=/ REQ_AE=$CHROME_AE REQ_MODE=browser-mix ;;
    *) return 1 ;;
  esac
  case $1 in tls-*) REQ_TLS=1 ;; esac
}
read -ra WRK_LIST <<< "$WRK_SCENARIOS"
read -ra H2LOAD_LIST <<< "$H2LOAD_SCENARIOS"
for sc in "${WRK_LIST[@]}"; do
  if [[ $sc == tls-h2* ]] || ! wrk_h2load_request "$sc"; then
    echo "WRK_SCENARIOS: unknown scenario $sc; known: static-hit api-hit api-pass api-pass-random api-gzip pass-1mb tls-h1 gzip-hit br-hit browser-mix" >&2; exit 1
  fi
done
for sc in "${H2LOAD_LIST[@]}"; do
  if [[ $sc != tls-h2* ]] || ! wrk_h2load_request "$sc"; then
    echo "H2LOAD_SCENARIOS: unknown scenario $sc; known: tls-h2 tls-h2-static tls-h2-pass" >&2; exit 1
  fi
done
# Whole seconds (wrk and h2load take nothing finer), for every generator and the CPU figures.
if [[ $DURATION =~ ^([0-9]+)s?$ ]]; then SECS=$((10#${BASH_REMATCH[1]}))
elif [[ $DURATION =~ ^([0-9]+)m$ ]]; then SECS=$((10#${BASH_REMATCH[1]} * 60))
else SECS=0; fi
if [ "$SECS" -lt 1 ] || [ "$SECS" -gt 300 ]; then
  echo "DURATION $DURATION: expected whole seconds from 1s to 5m (\"8s\", \"2m\", \"30\")" >&2; exit 1
fi
DURATION=${SECS}s

# Packages this run needs, installed with apt like nginx always was.
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
pkgs=()
if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_http_brotli_filter_module.so ]; then
  pkgs+=(nginx libnginx-mod-http-brotli-filter)
fi
if has_gen wrk && ! command -v wrk >/dev/null; then pkgs+=(wrk); fi
if has_gen h2load && ! command -v h2load >/dev/null; then pkgs+=(nghttp2-client); fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "installing ${pkgs[*]} (apt)..."
  $sudo apt-get install -y "${pkgs[@]}" >/dev/null
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
if ! { ready "$GE_PLAIN" && ready "$NG_PLAIN"; }; then
  echo "servers did not come up; logs in $RUN" >&2; tail "$RUN"/*.log "$RUN"/nginx/logs/error.log >&2; exit 1
fi

# wrk and h2load take the highest TLS version both sides offer: both servers must have TLS 1.3
# (h2load's report names the version, and every run is checked; wrk's does not).
if has_gen wrk || has_gen h2load; then
  for port in "$GE_HTTPS" "$NG_HTTPS"; do
    curl -skf -o /dev/null --tlsv1.3 -H 'Host: galion.app' "https://127.0.0.1:$port/api/health" \
      || { echo "127.0.0.1:$port does not answer over TLS 1.3" >&2; exit 1; }
  done
fi

mkdir -p "$OUT"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpus: $(nproc); kernel: $(uname -r); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "galion-edge: $("$BIN" --version); nginx: $(nginx -v 2>&1 | sed 's/.*: //'); $(rustc --version 2>/dev/null || true)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rounds: $ROUNDS; duration: $DURATION per run; connections: $CONNS; generators: $GENERATORS"
  if has_gen wrk; then
    echo "wrk: $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), -t$WRK_THREADS; scenarios: $WRK_SCENARIOS"
  fi
  if has_gen h2load; then
    echo "h2load: $(h2load --version | awk '{ print $2 }'), -t$H2LOAD_THREADS -m$H2_STREAMS; scenarios: $H2LOAD_SCENARIOS"
  fi
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# A fresh process of one server. Each WebSocket run starts on one, so that its RSS growth is
# the memory of its own connections: a server that has already served the HTTP rounds (or an
# earlier WebSocket run) builds the new connections in memory its allocator kept, and the
# growth understates them (docs/benchmarks.md, tenth run).
restart() { # galion-edge|nginx
  local port
  case $1 in
    galion-edge)
      kill -INT "$PROXY"; wait "$PROXY" 2>/dev/null || true
      RUST_LOG=warn "$BIN" run -c "$RUN/galion.toml" >>"$RUN/proxy.log" 2>&1 &
      PROXY=$!; PIDS+=("$PROXY"); port=$GE_PLAIN ;;
    nginx)
      kill -TERM "$NGINX"; wait "$NGINX" 2>/dev/null || true
      nginx -p "$RUN/nginx/" -c "$ROOT/configs/bench/nginx.conf" -g 'daemon off;' &
      NGINX=$!; PIDS+=("$NGINX"); port=$NG_PLAIN ;;
  esac
  for _ in $(seq 300); do ready "$port" && return 0; sleep 0.2; done
  echo "$1 did not come back after a restart; logs in $RUN" >&2; exit 1
}

run_one() { # round target scenario
  local round=$1 target=$2 sc=$3 args
  if [[ $sc == ws-idle* && $target != origin ]]; then restart "$target"; fi
  case $target in
    origin)
      local port=${ORIGIN_PORT[8001]}
      [ "$sc" = pass-1mb ] && port=${ORIGIN_PORT[8002]}
      args=(--url "http://127.0.0.1:$port" --pid "$ORIGINS") ;;
    galion-edge) args=(--url "http://127.0.0.1:$GE_PLAIN" --tls-url "https://127.0.0.1:$GE_HTTPS" --pid "$PROXY") ;;
    nginx) args=(--url "http://127.0.0.1:$NG_PLAIN" --tls-url "https://127.0.0.1:$NG_HTTPS" --pid "$NGINX") ;;
  esac
  if [[ $sc == ws-idle* && -n ${WS_CONNECTIONS:-} ]]; then
    args+=(--ws-connections "$WS_CONNECTIONS")
  fi
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

# CPU time (utime + stime, in clock ticks) of a process and its descendants: the proxy's threads
# are in its own line, nginx's workers are the master's children. (cat fails when a process of
# the glob exits before it is read; the others are still read.)
cpu_ticks() { # root-pid
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid = $1; rest = $0; sub(/.*\) /, "", rest); split(rest, f, " ")   # past "pid (comm) "
      ppid[pid] = f[2]; ticks[pid] = f[12] + f[13] }
    END { set[root] = 1
          do { grown = 0
               for (p in ppid) if (!(p in set) && (ppid[p] in set)) { set[p] = 1; grown = 1 }
          } while (grown)
          for (p in set) total += ticks[p]
          print total + 0 }'
}
CLK_TCK=$(getconf CLK_TCK)

target_url() { # target tls(1 or empty)
  case $1 in
    galion-edge) if [ -n "$2" ]; then echo "https://127.0.0.1:$GE_HTTPS"; else echo "http://127.0.0.1:$GE_PLAIN"; fi ;;
    nginx) if [ -n "$2" ]; then echo "https://127.0.0.1:$NG_HTTPS"; else echo "http://127.0.0.1:$NG_PLAIN"; fi ;;
  esac
}

# Every wrk and h2load run is cut off this long after it should have ended (h2load -D has been
# seen to wait forever for clients it had stopped, against a server that closes connections).
GEN_LIMIT=$((SECS + 30))
# One wrk or h2load invocation; "warm" is a short unmeasured one (fills the cache, every variant of
# the mix included, and opens connections), "measure" the real one. Each prints one line of
# figures: requests seconds p50_us p99_us p999_us errors protocol (tab-separated).
wrk_run() { # target scenario warm|measure raw-output-file
  local url hdrs=(-H 'Host: galion.app') load=(-t"$WRK_THREADS" -c"$CONNS" -d"$DURATION")
  wrk_h2load_request "$2"
  url=$(target_url "$1" "$REQ_TLS")$REQ_PATH
  if [ -n "$REQ_AE" ]; then hdrs+=(-H "Accept-Encoding: $REQ_AE"); fi
  if [ "$3" = warm ]; then load=(-t1 -c4 -d1s); fi
  # --timeout 10s: at wrk's default (2 s) a request stalled behind a server's lock would be
  # counted as a timeout, not in the latency percentiles.
  BENCH_WRK_MODE=$REQ_MODE timeout -k 5 "$GEN_LIMIT" wrk "${load[@]}" --timeout 10s --latency -s configs/bench/wrk.lua \
    "${hdrs[@]}" "$url" > "$4" 2>&1 || return 1
  # configs/bench/wrk.lua's last line: bench-wrk requests=N seconds=S p50_us=... status=N
  awk -v proto="${REQ_TLS:+tls/}http1.1" '/^bench-wrk / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
         printf "%d\t%s\t%d\t%d\t%d\t%d\t%s\n", v["requests"], v["seconds"], v["p50_us"], v["p99_us"],
           v["p999_us"], v["connect"] + v["read"] + v["write"] + v["timeout"] + v["status"],
           proto; found = 1 }
       END { exit !found }' "$4"
}

h2load_run() { # target scenario warm|measure raw-output-file
  local url load=(-t"$H2LOAD_THREADS" -c"$CONNS" -m"$H2_STREAMS" -D"$SECS" --log-file="$4.log")
  wrk_h2load_request "$2"
  url=$(target_url "$1" "$REQ_TLS")$REQ_PATH
  local hdrs=(-H ':authority: galion.app')
  if [ -n "$REQ_AE" ]; then hdrs+=(-H "accept-encoding: $REQ_AE"); fi
  if [ "$3" = warm ]; then load=(-t1 -c4 -m"$H2_STREAMS" -n400); fi
  timeout -k 5 "$GEN_LIMIT" h2load "${load[@]}" "${hdrs[@]}" "$url" > "$4" 2>&1 || return 1
  [ "$3" = warm ] && return 0
  # h2load prints min/max/mean/sd of its request times only; the percentiles come from its
  # per-request log (third column: microseconds until the end of the response).
  local pct
  pct=$(cut -f3 "$4.log" | sort -n | awk '{ v[NR] = $1 }
    function at(p,  i) { i = int(p * NR); if (i < p * NR) i++; return i < 1 ? 0 : v[i] }
    END { printf "%d\t%d\t%d", at(0.50), at(0.99), at(0.999) }')
  rm -f "$4.log"
  awk -v pct="$pct" '
    /^finished in / { t = $3; sub(/,$/, "", t)
                      secs = t ~ /ms$/ ? substr(t, 1, length(t) - 2) / 1000 : substr(t, 1, length(t) - 1) }
    /^requests: / { done = $6; failed = $10 }   # N total, N started, N done, N succeeded, N failed
    /^TLS Protocol: / { tls = $3 }
    /^Application protocol: / { alpn = $3 }
    END { if (done == "") exit 1
          split(pct, q, "\t")
          printf "%d\t%s\t%d\t%d\t%d\t%d\t%s\n", done, secs, q[1], q[2], q[3], failed, tls "/" alpn }' "$4"
}

gen_targets=(galion-edge nginx)
run_gen() { # generator round target scenario
  local gen=$1 round=$2 target=$3 sc=$4 pid dir raw line before after
  case $target in galion-edge) pid=$PROXY ;; nginx) pid=$NGINX ;; esac
  dir=$OUT/$gen/round-$round; mkdir -p "$dir"; raw=$dir/$target-$sc.txt
  "${gen}_run" "$target" "$sc" warm "$raw" >/dev/null 2>&1 || true
  before=$(cpu_ticks "$pid")
  if ! line=$("${gen}_run" "$target" "$sc" measure "$raw"); then
    echo "  $target $sc FAILED:"; tail -5 "$raw"; return 0
  fi
  after=$(cpu_ticks "$pid")
  # round target scenario requests seconds p50_us p99_us p999_us errors protocol cpu_ticks
  line=$(printf '%s\t%s\t%s\t%s\t%s' "$round" "$target" "$sc" "$line" $((after - before)))
  echo "$line" >> "$OUT/$gen/runs.tsv"
  awk -F'\t' -v tck="$CLK_TCK" '{
    printf "  %-12s %8.0f req/s  p99 %7.2f ms  CPU %6.1f us/req  errors %d  %s\n", $2, $4 / $5,
      $7 / 1000, ($4 > 0 ? $11 / tck * 1e6 / $4 : 0), $9, $10 }' <<< "$line"
}
run_gen_round() { # generator round scenarios...
  local gen=$1 round=$2 sc i; shift 2
  for sc in "$@"; do
    echo " $gen $sc"
    # Interleaved: the order of the two servers alternates every round.
    for i in 0 1; do run_gen "$gen" "$round" "${gen_targets[$(( (i + round - 1) % 2 ))]}" "$sc"; done
  done
}

# Medians over the rounds of one generator's runs.tsv, as a markdown table with both servers and
# the ratios galion-edge / nginx (req/s: above 1 is better for galion-edge; p99 and CPU per
# request: below 1 is).
summarize_gen() { # generator
  awk -F'\t' -v tck="$CLK_TCK" '
    function median(list,   v, n, i, j, x) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) { x = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
      return n == 0 ? -1 : (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2)
    }
    function ratio(a, b) { return (a < 0 || b <= 0) ? "-" : sprintf("%.2f", a / b) }
    $4 > 0 && $5 > 0 {
      if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 }
      k = $3 SUBSEP $2; runs[k]++
      rps[k] = rps[k] " " $4 / $5; p99[k] = p99[k] " " $7 / 1000
      cpu[k] = cpu[k] " " $11 / tck * 1e6 / $4; err[k] = err[k] " " $9
      if ($10 != "http1.1" && $10 != "tls/http1.1" && $10 != "TLSv1.3/h2") odd[$3] = odd[$3] " " $2 ": " $10
    }
    END {
      print "| scenario | rounds | nginx req/s | nginx p99 ms | nginx CPU µs/req | galion-edge req/s | galion-edge p99 ms | galion-edge CPU µs/req | req/s galion-edge / nginx | p99 galion-edge / nginx | CPU/req galion-edge / nginx | errors nginx / galion-edge |"
      print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for (i = 1; i <= n; i++) {
        s = order[i]; g = s SUBSEP "galion-edge"; x = s SUBSEP "nginx"
        gr = median(rps[g]); xr = median(rps[x]); gp = median(p99[g]); xp = median(p99[x])
        gc = median(cpu[g]); xc = median(cpu[x])
        printf "| %s | %d / %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |\n", s, runs[x], runs[g],
          xr < 0 ? "-" : sprintf("%.0f", xr), xp < 0 ? "-" : sprintf("%.2f", xp), xc < 0 ? "-" : sprintf("%.1f", xc),
          gr < 0 ? "-" : sprintf("%.0f", gr), gp < 0 ? "-" : sprintf("%.2f", gp), gc < 0 ? "-" : sprintf("%.1f", gc),
          ratio(gr, xr), ratio(gp, xp), ratio(gc, xc),
          x in runs ? median(err[x]) : "-", g in runs ? median(err[g]) : "-"
      }
      for (i = 1; i <= n; i++) if (order[i] in odd) printf "\nWARNING: %s ran on an unexpected protocol:%s\n", order[i], odd[order[i]]
    }' "$OUT/$1/runs.tsv"
}

# ws-idle and ws-idle-tls go after every HTTP round, each on a freshly started server (restart):
# the memory a run leaves behind in a server (galion-edge's allocator keeps it, see
# docs/benchmarks.md) would otherwise count in the next run's RSS.
HTTP_SCENARIOS=() WS_SCENARIOS=()
if has_gen loadtest; then
  for sc in $SCENARIOS; do
    case $sc in ws-idle*) WS_SCENARIOS+=("$sc") ;; *) HTTP_SCENARIOS+=("$sc") ;; esac
  done
fi
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS"
  if [ ${#HTTP_SCENARIOS[@]} -gt 0 ]; then run_round "$round" "${HTTP_SCENARIOS[@]}"; fi
  if has_gen wrk && [ ${#WRK_LIST[@]} -gt 0 ]; then run_gen_round wrk "$round" "${WRK_LIST[@]}"; fi
  if has_gen h2load && [ ${#H2LOAD_LIST[@]} -gt 0 ]; then run_gen_round h2load "$round" "${H2LOAD_LIST[@]}"; fi
done
if has_gen loadtest; then
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
fi

: > "$OUT/summary.md"
if has_gen loadtest && compgen -G "$OUT/round-*" >/dev/null; then
  { echo "## galion-edge-tools loadtest (-c$CONNS, $DURATION, medians of $ROUNDS rounds)"; echo
    "$TOOLS" loadtest --summarize "$OUT"/round-*; } >> "$OUT/summary.md"
  if [ -d "$OUT/fixed-rate" ]; then
    { echo; echo "api-pass at a fixed $RATE req/s (latency from the intended send time):"; echo
      "$TOOLS" loadtest --summarize "$OUT/fixed-rate"; } >> "$OUT/summary.md"
  fi
fi
if has_gen wrk && [ -s "$OUT/wrk/runs.tsv" ]; then
  { echo; echo "## wrk (-t$WRK_THREADS -c$CONNS -d$DURATION --latency, medians of $ROUNDS rounds)"; echo
    summarize_gen wrk; } >> "$OUT/summary.md"
fi
if has_gen h2load && [ -s "$OUT/h2load/runs.tsv" ]; then
  { echo; echo "## h2load (-t$H2LOAD_THREADS -c$CONNS -m$H2_STREAMS -D$SECS, medians of $ROUNDS rounds)"; echo
    echo "p99 from h2load's --log-file (its own report has only min/max/mean/sd)."; echo
    summarize_gen h2load; } >> "$OUT/summary.md"
fi
echo
cat "$OUT/machine.txt"
echo
cat "$OUT/summary.md"
echo "reports, plots and the summary are in $OUT/"
