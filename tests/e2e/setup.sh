#!/usr/bin/env bash
# Installs the browser tests' node dependencies into tests/e2e/node_modules (git-ignored).
# Idempotent and quiet: does nothing when node_modules matches package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v npm >/dev/null; then
  echo "e2e setup: npm is missing; run scripts/install-deps (it installs nodejs, npm and chromium)" >&2
  exit 1
fi
# npm ci writes node_modules/.package-lock.json; newer than the lock file = installed from it.
if [[ -d node_modules/playwright-core && node_modules/.package-lock.json -nt package-lock.json ]]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error >/dev/null
