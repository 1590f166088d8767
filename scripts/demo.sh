#!/usr/bin/env bash
# Builds galion-edge and runs `galion-edge demo`: sample origins for galion.app and galion.studio on
# loopback, the proxy in front of them with configs/local.toml. No external services needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run -p galion-edge -- demo "$@"
