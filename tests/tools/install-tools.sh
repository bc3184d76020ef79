#!/usr/bin/env bash
# Installs every external program the test suite and the benchmarks use, on a
# bare Debian machine (run as root). Idempotent: skips what is on PATH.
#   curl, openssl         real TLS clients for the certificate tests
#   go                    Go's crypto/x509, the verifier the kube-apiserver runs
#   h2load, wrk, hyperfine benchmarks (tests/bench/)
#   bao, moto_server      real local backends for the provider tests
#   helm, kubernetes-validate  chart tests (when the chart's installer exists)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

apt_need=()
command -v curl >/dev/null 2>&1 || apt_need+=(curl)
command -v openssl >/dev/null 2>&1 || apt_need+=(openssl)
command -v go >/dev/null 2>&1 || apt_need+=(golang-go)
command -v h2load >/dev/null 2>&1 || apt_need+=(nghttp2-client)
command -v wrk >/dev/null 2>&1 || apt_need+=(wrk)
command -v hyperfine >/dev/null 2>&1 || apt_need+=(hyperfine)
if [ "${#apt_need[@]}" -gt 0 ]; then
  echo "install-tools: apt-get install ${apt_need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
fi

bash "$here/install-backends.sh"
if [ -f "$here/install-chart-tools.sh" ]; then
  bash "$here/install-chart-tools.sh"
fi
