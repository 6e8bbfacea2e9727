#!/usr/bin/env bash
# Installs what `sam build` needs to build the four arm64 bootstraps that `sam deploy`
# ships, and what runs them on an x86_64 machine; quietly, and a second run installs
# nothing. Then writes the environment a build needs to $ARM64_CACHE/env.sh
# (scripts/arm64-build.sh sources it; so can you, before a plain `sam build`).
#
#   bash scripts/arm64-toolchain.sh
#
# What it installs:
# - SAM CLI, cargo-lambda and zig (PyPI) into the venv the template checks use
#   ($INCIDENT_PIPELINE_VENV, default ~/.cache/incident-pipeline/venv).
# - The aarch64-unknown-linux-gnu standard library with rustup (cargo-lambda links with
#   zig against glibc 2.17 symbols). When the Rust toolchain server cannot be reached,
#   Debian's Rust instead (bookworm-security ships rustc-web 1.96 with
#   libstd-rust-web-dev:arm64) and the GNU aarch64 cross compiler as linker.
# - qemu-user and the aarch64 glibc (libc6-arm64-cross, libgcc-s1-arm64-cross): the
#   arm64 stories and `make demo ARCH=arm64` run the bootstraps with
#   `qemu-aarch64 -L /usr/aarch64-linux-gnu`.
# Debian packages need root (or sudo); everything else goes to the user's home.
#
# Environment: INCIDENT_PIPELINE_VENV, ARM64_CACHE (default ~/.cache/incident-pipeline/arm64,
# where env.sh, the install log and, by default, the arm64 target directory live),
# ARM64_TOOLCHAIN=rustup|debian to force one way (default: rustup if it can).
set -euo pipefail

venv="${INCIDENT_PIPELINE_VENV:-$HOME/.cache/incident-pipeline/venv}"
cache="${ARM64_CACHE:-$HOME/.cache/incident-pipeline/arm64}"
target=aarch64-unknown-linux-gnu
# Versions this was checked with (2026-12-06): sam build of the four functions.
sam_cli="aws-sam-cli==1.170.0"
cargo_lambda="cargo-lambda==1.9.2"
ziglang="ziglang==0.17.1"
# The toolchain the workspace needs at least (Cargo.toml rust-version).
min_rust="1.94.1"

mkdir -p "$cache"
log="$cache/install.log"
: >"$log"

fail() {
    echo "arm64-toolchain: $*" >&2
    echo "arm64-toolchain: the install log is $log" >&2
    exit 1
}

# Runs a command with its output in the log; shows the log's tail if it fails.
quiet() {
    if ! "$@" >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        fail "failed: $*"
    fi
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        fail "needs root for: $* (run it as root, or install the packages named there yourself)"
    fi
}

apt_updated=""
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || fail "no apt-get: install ${missing[*]} (or their equivalents) yourself"
    echo "== installing ${missing[*]} (apt)"
    if [[ -z "$apt_updated" ]]; then
        quiet as_root apt-get update -qq
        apt_updated=1
    fi
    quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

version_ge() { # version_ge A B: A >= B (dotted numbers)
    [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

# 1. SAM CLI, cargo-lambda, zig.
if ! "$venv/bin/python" - "$sam_cli" "$cargo_lambda" "$ziglang" 2>/dev/null <<'EOF'; then
import sys
from importlib.metadata import version
sys.exit(0 if all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
EOF
    echo "== installing $sam_cli, $cargo_lambda, $ziglang into $venv"
    [[ -x "$venv/bin/python" ]] || quiet python3 -m venv "$venv"
    quiet "$venv/bin/pip" install --quiet --disable-pip-version-check "$sam_cli" "$cargo_lambda" "$ziglang"
fi

# 2. The aarch64 standard library: rustup's, else Debian's Rust.
mode="${ARM64_TOOLCHAIN:-}"
if [[ -z "$mode" || "$mode" == rustup ]]; then
    if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        mode=rustup
    elif command -v rustup >/dev/null && timeout 600 rustup target add "$target" >>"$log" 2>&1; then
        echo "== added the $target target (rustup)"
        mode=rustup
    elif [[ "$mode" == rustup ]]; then
        fail "rustup could not add the $target target"
    else
        echo "== rustup cannot add the $target target (no toolchain server?): using Debian's Rust"
        mode=debian
    fi
fi
if [[ "$mode" == debian ]]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        quiet as_root dpkg --add-architecture arm64
        apt_updated=""
    fi
    apt_install rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    have="$(/usr/bin/rustc --version | awk '{print $2}')"
    version_ge "$have" "$min_rust" ||
        fail "Debian's rustc is $have, the workspace needs $min_rust or newer (bookworm-security has 1.96)"
elif [[ "$mode" != rustup ]]; then
    fail "ARM64_TOOLCHAIN must be rustup or debian, not $mode"
fi

# 3. What runs the bootstraps here: qemu-user and the aarch64 glibc they link against.
if [[ "$(uname -m)" != aarch64 ]]; then
    apt_install qemu-user libc6-arm64-cross libgcc-s1-arm64-cross
fi

# 4. The environment of a build.
{
    echo "# Written by scripts/arm64-toolchain.sh ($mode); sourced by scripts/arm64-build.sh."
    echo "export PATH=\"$venv/bin:\$PATH\""
    echo "export SAM_CLI_TELEMETRY=0"
    if [[ "$mode" == debian ]]; then
        # Debian's rustc has the aarch64 standard library; cargo-lambda builds with plain
        # cargo and the GNU cross linker (zig would be fine too, but this is what was checked).
        echo "export RUSTC=/usr/bin/rustc"
        echo "export CARGO_LAMBDA_COMPILER=cargo"
        echo "export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc"
        echo "export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc"
        echo "export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar"
    fi
} >"$cache/env.sh.new"
mv "$cache/env.sh.new" "$cache/env.sh"
echo "== arm64 toolchain ready ($mode): $("$venv/bin/sam" --version), $("$venv/bin/cargo-lambda" lambda --version 2>/dev/null | head -n1)"
