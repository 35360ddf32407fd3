#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
. scripts/env.sh
swift build --build-tests
swift test --skip-build
# Multi-host rehearsal over network namespaces (root only; prints SKIP and succeeds otherwise).
bash scripts/multihost-test.sh
