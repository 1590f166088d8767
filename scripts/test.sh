#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and end-to-end tests, docs.
# End-to-end tests start the real galion-edge binary against real origins on 127.0.0.1 only;
# the Redis tests start their own redis-server (installed by setup.sh) on a loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export CARGO_TERM_COLOR=never
# A fresh clone (CI) gains nothing from incremental compilation; it would only fill the disk
# (3.7 GB of target/debug/incremental). A developer's own runs keep it.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
step() { printf '\n== %s ==\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
# proxy_core::fuzzing (the fuzz targets' entry points) and the corpus replay test need the
# `fuzzing` feature, off in the line above; fuzz/ itself is not a member (it needs nightly).
cargo clippy -p proxy-core --all-targets --features fuzzing -- -D warnings

step "cargo test"
# Test processes each start several proxies; two at a time suits a 2-core machine.
cargo test --workspace -- --test-threads="${GALION_TEST_THREADS:-4}"

step "fuzz corpus replay (proxy-core --features fuzzing)"
# Every committed seed and past crash through the fuzz targets' invariant checks, on stable.
cargo test -p proxy-core --features fuzzing --test fuzz_corpus

step "benches compile and run once"
# Criterion's test mode: every measurement runs once (no long loads); the e2e bench starts the
# proxy and an origin on loopback and sends a few dozen requests.
cargo test -p galion-edge-benches --benches

step "an outside crate with a fresh lock file (tests/outside)"
# proxy-core as a crate outside this workspace meets it: the README's patch lines, the newest
# semver-compatible dependencies, no warning in our crates, and both ways of embedding run.
bash scripts/outside-crate.sh

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "monitoring files"
# The dashboard JSON and the metric names it and the alerts use are checked by
# tests/tests/configs.rs; the alert rules also go through promtool when it is installed
# (Debian package `prometheus`; not installed here by default: it is large).
if command -v promtool >/dev/null 2>&1; then
  promtool check rules configs/monitoring/alerts.yml
else
  echo "promtool not installed: alert rules checked for metric names only"
fi
