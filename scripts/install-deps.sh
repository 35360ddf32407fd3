#!/usr/bin/env bash
# Installs the system packages SwiftMind needs (Debian/Ubuntu), only those that are missing.
set -euo pipefail
need=()
for p in libopenmpi-dev openmpi-bin libopenblas-dev pkg-config iproute2; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
