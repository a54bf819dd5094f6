#!/usr/bin/env bash
# Runs every test of the workspace against real services: starts them (scripts/services.sh),
# then cargo-nextest. Extra arguments go to nextest (e.g. a filter: -E 'test(bus_contract)').
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo nextest run --workspace --no-fail-fast "$@"
