"""What `sam deploy` ships, checked: the functions `sam build` wrote to `.aws-sam/build/`.

For each `rust-cargolambda` function of template.yaml, the built template's CodeUri
folder (what `sam deploy` zips) must hold exactly its handler, `bootstrap`, and that
bootstrap must be:
- an aarch64 ELF executable for Linux (the template deploys on `arm64`), using the
  aarch64 glibc loader;
- dynamically linked against nothing but glibc (libc, libm, the loader, and the
  libpthread/libdl/librt/libutil stubs glibc 2.34 keeps) and libgcc_s, which
  `provided.al2023` has (anything else fails at start in Lambda);
- asking for no glibc symbol version above 2.34, AL2023's glibc (a newer one fails at
  start with "version `GLIBC_2.xx' not found");
- the build of its own workspace binary (its sources' panic locations are in it, no
  other function's are);
- within the 10 MB zip budget (DESIGN.md section 8), zipped as `sam deploy` zips it.

`problems()` returns what is wrong in plain sentences (empty when all is well), so a
test can assert it is empty and print why otherwise; `python3 tests/arm64/artifacts.py`
prints the table of sizes and glibc versions, and fails like the test does.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
# Lambda's provided.al2023 runtime: glibc 2.34, and the shared objects of its glibc and
# libgcc packages. glibc 2.34 moved libpthread, libdl, librt and libutil into libc but still
# ships them as stubs for binaries linked against an older glibc, which is what zig does
# for cargo-lambda (glibc 2.17 symbols, hence GLIBC_2.30 at most, with libpthread.so.0
# and libdl.so.2 in DT_NEEDED); a build against 2.34 or newer needs only libc, libm and
# libgcc_s. Anything else (libssl, libz, ...) is not on provided.al2023.
MAX_GLIBC = (2, 34)
GLIBC_STUBS = {"libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1"}
ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-aarch64.so.1"} | GLIBC_STUBS
INTERPRETER = "/lib/ld-linux-aarch64.so.1"
ZIP_BUDGET_BYTES = 10 * 1000 * 1000
HANDLER = "bootstrap"


def build_dir() -> Path:
    return Path(os.environ.get("ARM64_BUILD_DIR") or ROOT / ".aws-sam" / "build")


def load_template(path: Path) -> dict:
    """template.yaml with CloudFormation's short tags (`!Ref`, `!Sub`...) kept as `{tag: value}`."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tag)
    return yaml.load(path.read_text(), Loader=Loader)


def rust_functions(template: dict) -> dict[str, dict]:
    """Logical id -> resource of every `AWS::Serverless::Function` (top level; a function
    inside `Fn::ForEach` would show up as a list and is not expected here)."""
    return {lid: res for lid, res in (template.get("Resources") or {}).items()
            if isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Function"}


def workspace_binaries(root: Path = ROOT) -> dict[str, str]:
    """Binary name -> function directory, from functions/*/Cargo.toml ([[bin]] names, or
    the package name for a src/main.rs without [[bin]])."""
    out: dict[str, str] = {}
    for manifest in sorted((root / "functions").glob("*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        bins = [b["name"] for b in data.get("bin", [])]
        if not bins and (manifest.parent / "src" / "main.rs").exists():
            bins = [data["package"]["name"]]
        for name in bins:
            out[name] = manifest.parent.name
    return out


def template_problems(template: dict, binaries: dict[str, str]) -> list[str]:
    """The template's functions against the workspace: handler, build method, binaries."""
    problems = []
    declared = {}
    for lid, res in rust_functions(template).items():
        meta, props = res.get("Metadata") or {}, res.get("Properties") or {}
        if meta.get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{lid}: BuildMethod is {meta.get('BuildMethod')!r}, expected 'rust-cargolambda'")
        if props.get("Handler") != HANDLER:
            problems.append(f"{lid}: Handler is {props.get('Handler')!r}, expected {HANDLER!r} (provided.al2023 runs "
                            f"the file named by the handler)")
        binary = (meta.get("BuildProperties") or {}).get("Binary")
        if not binary:
            problems.append(f"{lid}: no Metadata.BuildProperties.Binary (sam build would not know which binary)")
        else:
            declared[binary] = lid
    missing = sorted(set(binaries) - set(declared))
    unknown = sorted(set(declared) - set(binaries))
    if missing:
        problems.append(f"functions/*/Cargo.toml build {missing}, which template.yaml deploys nowhere")
    if unknown:
        problems.append(f"template.yaml deploys {[f'{declared[b]} ({b})' for b in unknown]}, which no "
                        f"functions/*/Cargo.toml builds")
    return problems


@dataclass
class Elf:
    """What the checks read from a bootstrap (pyelftools)."""

    machine: str
    elfclass: int
    little_endian: bool
    type: str
    interpreter: str | None
    needed: list[str]
    version_needs: dict[str, list[str]]  # library -> versions (GLIBC_2.17, GCC_3.0, ...)

    @property
    def glibc_versions(self) -> list[tuple[int, ...]]:
        out = set()
        for versions in self.version_needs.values():
            for v in versions:
                m = re.fullmatch(r"GLIBC_(\d+(?:\.\d+)*)", v)
                if m:
                    out.add(tuple(int(x) for x in m.group(1).split(".")))
        return sorted(out)

    @property
    def max_glibc(self) -> str | None:
        versions = self.glibc_versions
        return "GLIBC_" + ".".join(map(str, versions[-1])) if versions else None


def read_elf(path: Path) -> Elf:
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as f:
        elf = ELFFile(f)
        interp = None
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                interp = seg.get_interp_name()
        needed = []
        dynamic = elf.get_section_by_name(".dynamic")
        if dynamic is not None:
            needed = [t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
        version_needs: dict[str, list[str]] = {}
        verneed = elf.get_section_by_name(".gnu.version_r")
        if verneed is not None:
            for need, auxes in verneed.iter_versions():
                version_needs[need.name] = [aux.name for aux in auxes]
        return Elf(machine=elf["e_machine"], elfclass=elf.elfclass, little_endian=elf.little_endian,
                   type=elf["e_type"], interpreter=interp, needed=needed, version_needs=version_needs)


def zipped_size(folder: Path) -> int:
    """The folder zipped as `sam deploy` zips a function's CodeUri (deflate, default level)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return buf.tell()


@dataclass
class Artifact:
    logical_id: str
    binary: str
    folder: Path
    problems: list[str] = field(default_factory=list)
    size: int | None = None
    zip_size: int | None = None
    elf: Elf | None = None


def elf_problems(label: str, elf: Elf) -> list[str]:
    problems = []
    if elf.machine != "EM_AARCH64" or elf.elfclass != 64 or not elf.little_endian:
        problems.append(f"{label} is a {elf.elfclass}-bit {elf.machine} ELF, expected a 64-bit little-endian "
                        f"aarch64 one (EM_AARCH64): the template deploys on arm64")
    if elf.type not in ("ET_EXEC", "ET_DYN") or elf.interpreter is None:
        problems.append(f"{label} is not a dynamically linked executable (type {elf.type}, interpreter "
                        f"{elf.interpreter})")
    elif elf.interpreter != INTERPRETER:
        problems.append(f"{label} asks for the loader {elf.interpreter}, expected {INTERPRETER}")
    extra = [n for n in elf.needed if n not in ALLOWED_NEEDED]
    if extra:
        problems.append(f"{label} needs {extra}, which provided.al2023 does not have: only glibc's and "
                        f"libgcc_s's {sorted(ALLOWED_NEEDED)} (DT_NEEDED {elf.needed})")
    too_new = [v for v in elf.glibc_versions if v > MAX_GLIBC]
    if too_new:
        names = ", ".join("GLIBC_" + ".".join(map(str, v)) for v in too_new)
        problems.append(f"{label} needs glibc symbol versions {names}, newer than AL2023's glibc "
                        f"{'.'.join(map(str, MAX_GLIBC))}: it would fail at start in Lambda")
    return problems


def check_function(lid: str, binary: str, built_resource: dict | None, build: Path,
                   all_binaries: dict[str, str]) -> Artifact:
    art = Artifact(lid, binary, build / lid)
    if built_resource is None:
        art.problems.append(f"{lid} is not in {build / 'template.yaml'}: did `sam build` build it?")
        return art
    props = built_resource.get("Properties") or {}
    code_uri = props.get("CodeUri")
    if not isinstance(code_uri, str):
        art.problems.append(f"{lid}: the built template's CodeUri is {code_uri!r}, expected the build folder")
        return art
    art.folder = (build / code_uri).resolve()
    if props.get("Handler") != HANDLER:
        art.problems.append(f"{lid}: the built template's Handler is {props.get('Handler')!r}, expected {HANDLER!r}")
    if not art.folder.is_dir():
        art.problems.append(f"{lid}: the build folder {art.folder} is missing: run `make arm64` (sam build)")
        return art
    files = sorted(p.relative_to(art.folder).as_posix() for p in art.folder.rglob("*") if p.is_file())
    if files != [HANDLER]:
        art.problems.append(f"{lid}: {art.folder} holds {files}, expected only {HANDLER!r} (what the zip carries)")
    path = art.folder / HANDLER
    if not path.is_file():
        art.problems.append(f"{lid}: {path} is missing: run `make arm64` (sam build)")
        return art
    art.size = path.stat().st_size
    art.zip_size = zipped_size(art.folder)
    if not os.access(path, os.X_OK):
        art.problems.append(f"{lid}: {path} is not executable")
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        art.problems.append(f"{lid}: {path} is not an ELF file (starts with {data[:4]!r})")
        return art
    art.elf = read_elf(path)
    art.problems += elf_problems(f"{lid}: {path}", art.elf)
    # Which workspace binary this is: a release build keeps the file names of its panic
    # locations (stripped of symbols, not of those strings), so its own sources show.
    own = f"functions/{all_binaries.get(binary, binary)}/src/".encode()
    others = [d for b, d in all_binaries.items() if b != binary and f"functions/{d}/src/".encode() in data]
    if own not in data:
        art.problems.append(f"{lid}: {path} has no trace of functions/{all_binaries.get(binary, binary)}/src: "
                            f"it is not the build of binary {binary!r}")
    if others:
        art.problems.append(f"{lid}: {path} carries the sources of {others}: it is another function's binary")
    if art.zip_size > ZIP_BUDGET_BYTES:
        art.problems.append(f"{lid}: zipped, {art.zip_size:,} bytes, over the budget of {ZIP_BUDGET_BYTES:,}")
    return art


def check_build(build: Path | None = None, template_path: Path = TEMPLATE,
                root: Path = ROOT) -> tuple[list[str], list[Artifact]]:
    """(problems of the template itself, one checked Artifact per function)."""
    build = build or build_dir()
    template = load_template(template_path)
    binaries = workspace_binaries(root)
    general = template_problems(template, binaries)
    built_path = build / "template.yaml"
    if not built_path.is_file():
        general.append(f"{built_path} is missing: `sam build` has not run (make arm64)")
        built = {}
    else:
        built = rust_functions(load_template(built_path))
    artifacts = []
    for lid, res in sorted(rust_functions(template).items()):
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary") or "?"
        artifacts.append(check_function(lid, binary, built.get(lid), build, binaries))
    return general, artifacts


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024 / 1024:.2f}"


def main() -> int:
    general, artifacts = check_build()
    print(f"{'function':<28} {'binary':<20} {'bootstrap MiB':>13} {'zip MiB':>8} {'zip bytes':>11}  max glibc")
    for a in artifacts:
        print(f"{a.logical_id:<28} {a.binary:<20} {mib(a.size):>13} {mib(a.zip_size):>8} "
              f"{(a.zip_size or 0):>11,}  {a.elf.max_glibc if a.elf else '-'}")
    problems = general + [p for a in artifacts for p in a.problems]
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
