# Shared set-up of the tests/checks/k8s-*.sh scripts (sourced, with `set -euo pipefail` on):
# run from the workspace root, the Kubernetes versions to validate against, the Python that has
# tools/requirements.txt ($COURIER_VENV/bin/python when set, else python3 from PATH), a temp
# dir removed on exit, and the step/fail reporting helpers.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
versions=(1.30 1.31 1.32 1.33)

if [[ -n "${COURIER_VENV:-}" ]]; then
    python="$COURIER_VENV/bin/python"
else
    python="$(command -v python3 || command -v python || true)"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*"; failed=1; }
