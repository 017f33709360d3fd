#!/usr/bin/env bash
# Installs the browser tests' node dependencies (playwright-core) from package-lock.json.
exec "$(dirname "$0")/../../scripts/npm-deps" "$(dirname "$0")"
