#!/usr/bin/env bash
# Checks what deploys Orion: the Helm chart (lint, render with the default values and every
# value set in helm/orion/ci/, validate the manifests against the Kubernetes schemas), the
# YAML style, and the compose file (docker-compose config, no engine needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh
TOOLS="${ORION_TOOLS:-/var/tmp/orion-tools}"
helm="$TOOLS/bin/helm"
venv="$TOOLS/venv/bin"
chart=helm/orion
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT

for values in "" $chart/ci/*.yaml; do
  name="$(basename "${values:-default}" .yaml)"
  args=()
  [ -n "$values" ] && args=(-f "$values")
  "$helm" lint --strict --quiet "$chart" "${args[@]}" >/dev/null
  "$helm" template orion "$chart" "${args[@]}" >"$rendered/$name.yaml"
  # CRDs (ServiceMonitor, PodMonitor) have no bundled schema: a warning, not a failure.
  "$venv/kubernetes-validate" --strict --quiet "$rendered/$name.yaml" \
    | grep -v "Couldn't find schema for kind \(ServiceMonitor\|PodMonitor\)" || true
  "$venv/kubernetes-validate" --strict --quiet "$rendered/$name.yaml" >/dev/null
  echo "chart: $name values lint, render and validate"
done

"$venv/yamllint" -d '{extends: relaxed, rules: {line-length: {max: 120}}}' \
  $chart/values.yaml $chart/ci docker-compose.yaml
ORION_JWT_SECRET=check-deploy-secret-of-32-bytes-or-more \
  "$TOOLS/compose/bin/docker-compose" -f docker-compose.yaml config --quiet
echo "compose: docker-compose.yaml is valid"
