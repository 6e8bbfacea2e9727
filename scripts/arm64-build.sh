#!/usr/bin/env bash
# Builds what `sam deploy` ships: `sam build` (template.yaml, samconfig.toml) into
# .aws-sam/build/, the four functions as arm64 bootstraps, after installing what it needs
# (scripts/arm64-toolchain.sh). Then prints their sizes and glibc versions and checks them
# (tests/arm64/artifacts.py). `make arm64` runs this.
#
#   bash scripts/arm64-build.sh [sam build options]
#
# Compiled dependencies stay in a target directory outside the clone,
# $ARM64_TARGET_DIR (default ~/.cache/incident-pipeline/arm64/target): the first build
# compiles every crate for aarch64 in release mode (about 20 minutes on 2 cores); after a
# change in the workspace, only the workspace crates and the links are redone.
# SAM's rust-cargolambda builder keeps an explicit CARGO_TARGET_DIR (it asks
# `cargo metadata` for the target directory to copy each bootstrap from), and builds in
# the source folder, so nothing is copied. Out of the clone it also keeps SAM's cached
# build from hashing gigabytes of target/ on every run.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${ARM64_CACHE:-$HOME/.cache/incident-pipeline/arm64}"
export ARM64_CACHE="$cache"

# The Python of the artifact check (env.sh puts the tools' venv first on PATH).
py="$(command -v "${PYTHON:-python3}")"

bash "$repo/scripts/arm64-toolchain.sh"
# The artifact check's Python packages (PyYAML, pyelftools), as `make local-tools` installs them.
"$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r "$repo/local/requirements.txt"
# shellcheck source=/dev/null
. "$cache/env.sh"
export CARGO_TARGET_DIR="${ARM64_TARGET_DIR:-$cache/target}"
mkdir -p "$CARGO_TARGET_DIR"

cd "$repo"
t0=$(date +%s)
echo "== sam build (arm64, release; CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
log="$cache/sam-build.log"
# CPU seconds too (GNU time, when there): on a shared machine they say more than the wall clock.
timed=()
[[ -x /usr/bin/time ]] && timed=(/usr/bin/time -o "$cache/sam-build.time" -f "%U s user, %S s system CPU")
if ! "${timed[@]}" sam build "$@" >"$log" 2>&1; then
    grep -E "error(\[|:)|warning: unused|Build Failed|Error:" "$log" | tail -n 40 >&2 || true
    echo "sam build failed after $(($(date +%s) - t0))s; the whole log is $log" >&2
    exit 1
fi
grep -E "Build Succeeded|Valid cache found" "$log" | sort | uniq -c || true
echo "== sam build took $(($(date +%s) - t0))s${timed[*]:+ ($(cat "$cache/sam-build.time"))}"
"$py" "$repo/tests/arm64/artifacts.py"
