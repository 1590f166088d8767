#!/usr/bin/env bash
# Builds the tools binary and runs `galion-edge-tools demo`: sample origins for galion.app and
# galion.studio on loopback, the proxy in front of them with configs/local.toml (served in the
# same process, by the function `galion-edge run` calls). No external services needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run -p galion-edge-tools -- demo "$@"
