#!/usr/bin/env bash
# Fuzzes the REST API with schemathesis against the OpenAPI document Orion serves: an
# embedded `orion up` with JWT auth on, an admin token, and the checks "no 5xx" and "every
# answer matches its schema". Usage: scripts/fuzz-api.sh [max examples per operation, 25].
# CI runs a short pass (scripts/test.sh passes 5).
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-25}"
TOOLS="${ORION_TOOLS:-/var/tmp/orion-tools}"
if [ ! -x "$TOOLS/fuzz/bin/schemathesis" ]; then
  echo "installing schemathesis into $TOOLS/fuzz"
  python3 -m venv "$TOOLS/fuzz"
  "$TOOLS/fuzz/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi
cargo build --quiet --bin orion
orion="${CARGO_TARGET_DIR:-target}/debug/orion"
work="$(mktemp -d)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export ORION__AUTH__MODE=jwt
ORION__AUTH__JWT__SECRET="fuzz-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export ORION__AUTH__JWT__SECRET
export ORION__SECRETS__CREDENTIALS_KEY="$(head -c 32 /dev/urandom | base64)"
# The fuzzer submits thousands of tasks: no rate limit for it, and no agent runs them long.
export ORION__SERVER__SUBMISSIONS_PER_MINUTE=0
export RUST_LOG=warn
"$orion" up --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 300); do
  base="$(sed -n 's/^Orion listening on \(http[^ ]*\).*/\1/p' "$work/out")"
  [ -n "$base" ] && break
  kill -0 "$pid" || { cat "$work/err"; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { echo "orion up did not start"; cat "$work/err"; exit 1; }
token="$("$orion" token --role admin --subject fuzzer)"
# The stream is a WebSocket (no HTTP answer to check); the rest is fuzzed.
"$TOOLS/fuzz/bin/schemathesis" run "$base/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance \
  --exclude-path /v1/stream \
  --max-examples "$examples" \
  --phases examples,coverage,fuzzing \
  --generation-database none \
  --workers 1 \
  --suppress-health-check all
if grep -q "panicked" "$work/err"; then
  echo "orion panicked while fuzzed:"; grep -A5 panicked "$work/err"; exit 1
fi
echo "fuzz: no 5xx and no schema violation in $examples examples per operation"
