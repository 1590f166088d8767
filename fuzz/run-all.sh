#!/usr/bin/env bash
# Runs every fuzz target in turn for FUZZ_SECONDS (default 600) each, at the lowest CPU
# priority, on the stable toolchain (see README.md here for why RUSTC_BOOTSTRAP=1).
#
#   fuzz/run-all.sh                 # all targets, 10 minutes each
#   FUZZ_SECONDS=60 fuzz/run-all.sh routing client_ip
#
# The committed seeds in corpus/<target>/ are read; what a run adds goes to
# corpus-run/<target>/ (not committed), crashes to artifacts/<target>/, and the libFuzzer output
# to logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-600}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(config routing client_ip accept_encoding cache_control disk_entry acme_path)
fi
mkdir -p logs
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus-run/$t"
  echo "== $t: ${seconds}s ($(date -u +%H:%M:%S) UTC)"
  status=0
  nice -n 19 cargo fuzz run -O "$t" "corpus-run/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs' "logs/$t.log" | tail -n 2 || true
  if [ "$status" -ne 0 ]; then
    echo "   $t FAILED (exit $status): see logs/$t.log and artifacts/$t/"
  fi
done
