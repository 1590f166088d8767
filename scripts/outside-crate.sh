#!/usr/bin/env bash
# A crate outside the workspace (tests/outside) that uses proxy-core as README.md's "Use as a
# library" says: copied to a temp directory with its paths pointed at this checkout, given a
# fresh lock file (the newest semver-compatible dependencies, as a new embedder gets), built
# (a warning in any of our crates fails the run: deprecations show up here first), then run:
# the whole proxy beside the program's own service, its own ProxyHttp from the building
# blocks, and a SIGTERM that ends it within the grace period of the config's [server].
#
#   scripts/outside-crate.sh        (scripts/test.sh runs it; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/galion-outside.XXXXXX)
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cp -r tests/outside/. "$WORK/"
sed -i "s#\"\.\./\.\./#\"$ROOT/#g" "$WORK/Cargo.toml"
cd "$WORK"
cargo generate-lockfile
# The same target directory as the workspace: crates whose version did not move are reused.
CARGO_TARGET_DIR=$TARGET cargo build 2>&1 | tee "$WORK/build.log"
if grep -E '^warning' "$WORK/build.log"; then
  echo "outside crate: warnings in a build with a fresh lock file (above)" >&2
  exit 1
fi

BASE=$((23000 + RANDOM % 2000))
PROXY=127.0.0.1:$BASE HELLO=127.0.0.1:$((BASE + 1)) OWN=127.0.0.1:$((BASE + 2))
"$TARGET/debug/galion-edge-outside" "$PROXY" "$HELLO" "$OWN" "$HELLO" >"$WORK/out.log" 2>&1 &
PID=$!
for _ in $(seq 300); do grep -q '^ready' "$WORK/out.log" && break; sleep 0.1; done
grep -q '^ready' "$WORK/out.log" || { cat "$WORK/out.log"; echo "outside crate: never ready" >&2; exit 1; }

fail() { echo "outside crate: $1" >&2; exit 1; }
expect() { # NAME URL STATUS LINE-REGEX (a header or a body line)
  local out
  out=$(curl -s -i -m 5 -H 'Host: localhost' "$2" | tr -d '\r') || fail "$1: no answer"
  echo "$out" | head -1 | grep -q " $3" || fail "$1: $(echo "$out" | head -1), want $3"
  echo "$out" | grep -qiE "$4" || fail "$1: no line matching $4 in: $out"
  echo "outside crate: $1: ok"
}
expect "(A) own service" "http://$HELLO/" 200 '^hello from outside'
expect "(A) the whole proxy" "http://$PROXY/x" 200 '^server: galion-edge'
expect "(A) security headers" "http://$PROXY/x" 200 '^x-frame-options: SAMEORIGIN'
expect "(B) routed and proxied" "http://$OWN/api/x" 200 '^x-content-type-options: nosniff'
expect "(B) early 404 with the policy" "http://$OWN/elsewhere" 404 '^x-content-type-options: nosniff'

# [server] applied through server_conf: grace 1 s + shutdown 1 s, not Pingora's 300 s.
kill -TERM "$PID"
for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then fail "still running 10 s after SIGTERM: [server] not applied"; fi
PID=""
echo "outside crate: SIGTERM honoured the config's grace period: ok"
