#!/usr/bin/env bash
# Installs what building Galion Edge needs beyond the Rust toolchain, on Debian/Ubuntu:
# cmake (Pingora's zlib-ng build) and a C compiler, redis-server (with redis-cli) for the
# scale-out tests and bench, and pebble (an ACME test CA) for the ACME tests; the tests start
# their own on loopback ports. Safe to run repeatedly.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v curl >/dev/null 2>&1 || need+=(curl)
# tests/tests/redis.rs and benches/benches/ratelimit_redis.rs (never a system Redis).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# tests/tests/acme.rs: Let's Encrypt's ACME test server and its DNS server (pebble-challtestsrv,
# in the same package), started on loopback ports of the tests' own.
command -v pebble >/dev/null 2>&1 || need+=(pebble)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update >/dev/null
    $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  }
fi
