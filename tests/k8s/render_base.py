"""Writes (or checks) k8s/base and k8s/overlays/dev/nodeports.yaml from the Helm chart.

usage: render_base.py --helm HELM (--write | --check)

k8s/base is `helm template courier charts/courier -n courier --include-crds --skip-tests` with
the chart's default values, as plain manifests for `kubectl apply -k`, except:
  - no Secrets: the chart generates random ones, which must never be committed (the dev
    overlays generate clearly labelled dev-only ones; production creates its own, see
    docs/kubernetes.md);
  - no Grafana dashboard ConfigMaps (monitoring is optional; docs/kubernetes.md shows how);
  - Helm's bookkeeping is dropped: the helm.sh/chart label and helm.sh/* annotations (hooks),
    and app.kubernetes.io/managed-by says kustomize;
  - a Namespace object `courier` (helm install --create-namespace does that for the chart);
  - the CRDs are charts/courier/crds/*.yaml byte for byte (kustomize may not read files outside
    the kustomization's directory).
--check renders into memory and fails with a diff when a committed file differs.
"""

import argparse
import difflib
import pathlib
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "courier"
BASE = ROOT / "k8s" / "base"
NODEPORTS = ROOT / "k8s" / "overlays" / "dev" / "nodeports.yaml"
RELEASE = NAMESPACE = "courier"

HEADER = (
    "# Generated from charts/courier (default values) by tests/k8s/render_base.py: do not edit.\n"
    "# Regenerate: python3 tests/k8s/render_base.py --helm \"$(command -v helm)\" --write\n"
)

# File of k8s/base per app.kubernetes.io/component (then per kind).
FILES = {
    "operator": "operator.yaml",
    "messaging": "nats.yaml",
    "database": "mongodb.yaml",
    "database-init": "mongodb.yaml",
    "courier": "courier.yaml",
    "collection": "courier.yaml",
    "network-policy": "network-policies.yaml",
}
ORDER = ["namespace.yaml", "crds.yaml", "operator.yaml", "nats.yaml", "mongodb.yaml", "courier.yaml", "network-policies.yaml"]


def helm_template(helm, *extra):
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-tests", *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def normalize(doc):
    meta = doc.setdefault("metadata", {})
    for holder in (meta, doc.get("spec", {}).get("template", {}).get("metadata", {})):
        labels = holder.get("labels") or {}
        labels.pop("helm.sh/chart", None)
        if labels.get("app.kubernetes.io/managed-by") == "Helm":
            labels["app.kubernetes.io/managed-by"] = "kustomize"
    annotations = meta.get("annotations") or {}
    for key in [k for k in annotations if k.startswith("helm.sh/")]:
        del annotations[key]
    if "annotations" in meta and not meta["annotations"]:
        del meta["annotations"]
    return doc


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts, config files) as literal blocks, so the files stay readable."""


def _str(dumper, value):
    if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump(docs):
    return HEADER + "".join(
        "---\n" + yaml.dump(d, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100) for d in docs
    )


def expected_files(helm):
    files = {name: [] for name in ORDER}
    for doc in helm_template(helm):
        kind = doc["kind"]
        labels = doc.get("metadata", {}).get("labels") or {}
        if kind == "Secret" or labels.get("grafana_dashboard") == "1":
            continue
        if kind == "CustomResourceDefinition":
            continue
        component = labels.get("app.kubernetes.io/component")
        name = FILES.get(component)
        if name is None:
            raise SystemExit(f"render_base.py: no k8s/base file for {kind}/{doc['metadata']['name']} (component {component!r})")
        files[name].append(normalize(doc))
    out = {name: dump(docs) for name, docs in files.items() if docs}
    out["namespace.yaml"] = dump([{
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "courier"}},
    }])
    out["crds.yaml"] = "".join(
        ("" if i == 0 else "---\n") + p.read_text() for i, p in enumerate(sorted((CHART / "crds").glob("*.yaml")))
    )
    out["kustomization.yaml"] = (
        HEADER
        + "# `kubectl apply -k k8s/base` needs the Secrets first (docs/kubernetes.md); the overlays\n"
        + "# k8s/overlays/kind and k8s/overlays/minikube bring dev-only ones.\n"
        + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
        + "".join(f"  - {name}\n" for name in ORDER if name in out)
    )
    nodeports = [normalize(d) for d in helm_template(helm, "--set", "nodePorts.enabled=true", "--show-only", "templates/nodeports.yaml")]
    return {**{BASE / k: v for k, v in out.items()}, NODEPORTS: dump(nodeports).replace("(default values)", "(nodePorts.enabled=true)")}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    expected = expected_files(args.helm)
    if args.write:
        for path, text in expected.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    stale = 0
    for path, text in expected.items():
        rel = path.relative_to(ROOT)
        actual = path.read_text() if path.exists() else ""
        if actual == text:
            print(f"ok   {rel} matches the chart's rendering")
            continue
        stale += 1
        print(f"FAIL {rel} differs from the chart's rendering:")
        sys.stdout.writelines(list(difflib.unified_diff(
            actual.splitlines(keepends=True), text.splitlines(keepends=True), f"{rel} (committed)", f"{rel} (helm template)", n=2))[:80])
    extra = sorted(set(BASE.glob("*.yaml")) - set(expected))
    for path in extra:
        stale += 1
        print(f"FAIL {path.relative_to(ROOT)} is not produced by the chart (delete it or extend render_base.py)")
    if stale:
        print("k8s/base is stale: python3 tests/k8s/render_base.py --helm \"$(command -v helm)\" --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
