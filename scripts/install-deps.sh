#!/usr/bin/env bash
# Installs the system packages SwiftMind needs (Debian/Ubuntu), only those that are missing.
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
need=()
for p in libopenmpi-dev openmpi-bin libopenblas-dev libdnnl-dev pkg-config iproute2; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
updated=0
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Optional: headless Chromium and chromedriver for the browser tests (chat page, dashboard, report.html), and a CJK
# font so their screenshots show Chinese text instead of empty boxes. Not fatal: without them those tests report
# themselves skipped, with the reason.
browser=()
for p in chromium chromium-driver fonts-wqy-zenhei; do
  dpkg -s "$p" >/dev/null 2>&1 || browser+=("$p")
done
if [ ${#browser[@]} -gt 0 ]; then
  echo "installing (optional, for the browser tests): ${browser[*]}"
  if { [ "$updated" = 1 ] || $SUDO apt-get update -qq; } \
     && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${browser[@]}" >/dev/null; then
    :
  else
    echo "note: ${browser[*]} not installed; the browser tests will skip"
  fi
fi
