#!/usr/bin/env bash
# Checks the operator's Kubernetes output without a cluster:
#   1. the committed CRDs (charts/courier/crds) are what crdgen generates from the Rust types;
#   2. the sample Courier and Collections (k8s/samples) satisfy the CRD schemas, and known-bad
#      specs (tests/k8s/invalid-courier.yaml) are rejected by them;
#   3. `courier-operator render` of the samples, and the CRDs themselves, pass
#      `kubernetes-validate --strict` for Kubernetes 1.30, 1.31, 1.32 and 1.33;
#   4. `kubectl kustomize k8s/samples` builds (when kubectl is installed).
# Python tools come from $COURIER_VENV/bin when COURIER_VENV is set, else from PATH
# (install them with: pip install -r tools/requirements.txt).
set -euo pipefail

# shellcheck source=tests/k8s/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../k8s/common.sh"

if [[ -n "${COURIER_VENV:-}" ]]; then
    validate="$COURIER_VENV/bin/kubernetes-validate"
else
    validate="$(command -v kubernetes-validate || true)"
fi
if [[ -z "$python" || ! -x "$python" || -z "$validate" || ! -x "$validate" ]]; then
    echo "k8s-operator: python and kubernetes-validate are needed: pip install -r tools/requirements.txt" >&2
    exit 1
fi

samples=(k8s/samples/courier.yaml k8s/samples/collection-products.yaml k8s/samples/collection-desks.yaml k8s/samples/collection-pets.yaml)

step "building courier-operator and crdgen"
# The whole workspace, as ./dev test built it (a no-op there; -p alone would rebuild for
# another feature set).
cargo build --quiet --workspace --bins
target_dir="$(cargo metadata --format-version 1 --no-deps | "$python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
operator="$target_dir/debug/courier-operator"
crdgen="$target_dir/debug/crdgen"

step "CRDs in charts/courier/crds match the Rust types"
"$crdgen" "$work/crds" 2>/dev/null
if diff -ru charts/courier/crds "$work/crds"; then
    echo "ok   $(ls "$work/crds" | tr '\n' ' ')"
else
    fail "charts/courier/crds is stale: run 'cargo run -p courier-operator --bin crdgen' and commit"
fi

step "samples satisfy the CRD schemas"
"$python" tests/k8s/validate_samples.py charts/courier/crds "${samples[@]}" || fail "a sample does not match its CRD"

step "invalid specs are rejected by the CRD schemas"
"$python" tests/k8s/validate_samples.py charts/courier/crds tests/k8s/invalid-courier.yaml --expect-invalid || fail "the CRD schema accepted an invalid spec"

step "courier-operator render ${samples[*]}"
render_args=()
for sample in "${samples[@]}"; do render_args+=(-f "$sample"); done
"$operator" render "${render_args[@]}" >"$work/rendered.yaml"
kinds="$(grep -E '^kind: ' "$work/rendered.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}')"
echo "ok   rendered ${kinds%, }"
grep -q 'name: courier-collections' "$work/rendered.yaml" || fail "no collections ConfigMap rendered"

step "kubernetes-validate --strict ($("$validate" --version 2>/dev/null || echo '?'))"
supported="$("$python" -c 'import kubernetes_validate.utils as u; print(" ".join(sorted({".".join(v.split(".")[:2]) for v in u.all_versions()})))')"
validated=0
for version in "${versions[@]}"; do
    if [[ " $supported " != *" $version "* ]]; then
        echo "SKIP Kubernetes $version: the installed kubernetes-validate has no schemas for it (it has: $supported)"
        continue
    fi
    for file in "$work/rendered.yaml" charts/courier/crds/*.yaml; do
        if out="$("$validate" --strict --quiet -k "$version" "$file" 2>&1)"; then
            echo "ok   Kubernetes $version: $(basename "$file")"
        else
            echo "$out"
            fail "Kubernetes $version: $(basename "$file") is invalid"
        fi
    done
    validated=$((validated + 1))
done
[[ $validated -gt 0 ]] || fail "no Kubernetes version could be validated"

step "kubectl kustomize k8s/samples"
if command -v kubectl >/dev/null; then
    if count="$(kubectl kustomize k8s/samples | grep -c '^kind: ')"; then
        echo "ok   $count objects"
    else
        fail "kubectl kustomize k8s/samples failed"
    fi
else
    echo "SKIP kubectl not installed"
fi

echo
if [[ $failed -ne 0 ]]; then
    echo "k8s-operator: FAILED"
    exit 1
fi
echo "k8s-operator: all checks passed"
