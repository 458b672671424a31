"""Validates Courier/Collection manifests against the openAPIV3Schema of the generated CRDs.

usage: validate_samples.py CRD_DIR SAMPLE... [--expect-invalid]

Checks what the API server's structural-schema validation checks before the operator sees a
resource: types, required fields, bounds, enums and patterns (CEL rules are not evaluated here).
With --expect-invalid every document must be rejected instead.
"""

import pathlib
import sys

import jsonschema
import yaml


def load_schemas(crd_dir):
    schemas = {}
    for path in sorted(pathlib.Path(crd_dir).glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            api_version = f'{crd["spec"]["group"]}/{version["name"]}'
            schemas[(api_version, kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def main(argv):
    expect_invalid = "--expect-invalid" in argv
    args = [a for a in argv if a != "--expect-invalid"]
    schemas = load_schemas(args[0])
    failures = 0
    checked = 0
    for sample in args[1:]:
        for doc in yaml.safe_load_all(pathlib.Path(sample).read_text()):
            if not doc:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = f'{sample}: {key[1]}/{doc.get("metadata", {}).get("name")}'
            schema = schemas.get(key)
            if schema is None:
                print(f"FAIL {name}: no CRD for {key}")
                failures += 1
                continue
            checked += 1
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
            if expect_invalid:
                if errors:
                    print(f"ok   {name} rejected as expected: {errors[0].message} at {'/'.join(map(str, errors[0].path))}")
                else:
                    print(f"FAIL {name}: accepted, but the CRD schema should reject it")
                    failures += 1
            elif errors:
                for error in errors:
                    print(f"FAIL {name}: {error.message} at {'/'.join(map(str, error.path))}")
                failures += 1
            else:
                print(f"ok   {name} matches the CRD schema")
    if checked == 0:
        print("FAIL no documents checked")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
