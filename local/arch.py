"""Which build of the functions the local stories run, and how.

`STORY_ARCH` (or `make demo ARCH=...`) chooses:

- `x86_64` (the default): the debug binaries of `cargo build --workspace --all-targets`
  in `$CARGO_TARGET_DIR/debug/`, run natively; `$STORY_FUNCTIONS_DIR/<name>` replaces
  them (the harness test's stand-ins).
- `arm64`: what `sam build` wrote to `.aws-sam/build/<Function>/bootstrap` (the bytes
  `sam deploy` uploads, release profile, aarch64), found through the function's logical
  id in template.yaml; `$STORY_ARM64_BUILD_DIR` replaces `.aws-sam/build`. On an x86_64
  machine they run under qemu-user (`qemu-aarch64 -L /usr/aarch64-linux-gnu`, the
  aarch64 glibc of libc6-arm64-cross; scripts/arm64-toolchain.sh installs both).

Emulation is slower than the machine (several times for the SDK's TLS and signing
work), so `time_scale()` stretches the harness's own waits for a process to come up and
the story's deadlines for something to happen; no assertion changes with it, and no
measured figure is a performance figure under emulation.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHES = ("x86_64", "arm64")
# Where libc6-arm64-cross puts the aarch64 loader and glibc; qemu-user's -L prefix.
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")
# How much longer the harness waits under emulation; STORY_TIME_SCALE overrides it.
EMULATION_TIME_SCALE = 5.0


class ArchError(Exception):
    """The chosen build cannot run here (not built, or nothing to run it with)."""


def arch() -> str:
    value = os.environ.get("STORY_ARCH", "").strip() or "x86_64"
    aliases = {"amd64": "x86_64", "aarch64": "arm64"}
    value = aliases.get(value, value)
    if value not in ARCHES:
        raise ArchError(f"STORY_ARCH={value!r}: expected one of {', '.join(ARCHES)}")
    return value


def emulated() -> bool:
    """True when the chosen binaries are not of this machine's architecture."""
    machine = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64", "AMD64": "x86_64"}.get(platform.machine())
    return arch() != machine


def time_scale() -> float:
    override = os.environ.get("STORY_TIME_SCALE", "").strip()
    if override:
        return float(override)
    return EMULATION_TIME_SCALE if emulated() else 1.0


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")


def sam_build_dir() -> Path:
    return Path(os.environ.get("STORY_ARM64_BUILD_DIR") or ROOT / ".aws-sam" / "build")


def template_functions(template: Path | None = None) -> dict[str, str]:
    """Binary name -> logical id of every `rust-cargolambda` function of template.yaml."""
    from story import _CfnLoader  # the loader that keeps CloudFormation's short tags

    path = template or ROOT / "template.yaml"
    resources = _CfnLoader.load(path.read_text()).get("Resources", {})
    out: dict[str, str] = {}
    for lid, res in resources.items():
        if not isinstance(res, dict) or res.get("Type") != "AWS::Serverless::Function":
            continue
        meta = res.get("Metadata") or {}
        binary = (meta.get("BuildProperties") or {}).get("Binary")
        if meta.get("BuildMethod") == "rust-cargolambda" and binary:
            out[binary] = lid
    return out


def binary_path(name: str) -> Path:
    """The executable of function `name` in the chosen build."""
    if arch() == "arm64":
        lid = template_functions().get(name)
        if lid is None:
            raise ArchError(f"template.yaml has no rust-cargolambda function with Binary {name}")
        return sam_build_dir() / lid / "bootstrap"
    override = os.environ.get("STORY_FUNCTIONS_DIR")
    return Path(override) / name if override else target_dir() / "debug" / name


def build_hint() -> str:
    if arch() == "arm64":
        return "run `make arm64` (sam build) first"
    return "run `cargo build --workspace --all-targets` first"


def command(binary: Path) -> list[str]:
    """The argv that runs `binary` here: itself, or under qemu-user when emulated."""
    if not emulated():
        return [str(binary)]
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if qemu is None:
        raise ArchError("no qemu-aarch64 to run the arm64 bootstraps: run scripts/arm64-toolchain.sh "
                        "(Debian: apt-get install qemu-user libc6-arm64-cross libgcc-s1-arm64-cross)")
    if not (AARCH64_SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        raise ArchError(f"no aarch64 glibc in {AARCH64_SYSROOT}: run scripts/arm64-toolchain.sh "
                        "(Debian: apt-get install libc6-arm64-cross libgcc-s1-arm64-cross)")
    return [qemu, "-L", str(AARCH64_SYSROOT), str(binary)]
