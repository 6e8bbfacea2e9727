"""The artifact check itself (artifacts.py), against builds that are wrong on purpose.

Runs without an arm64 build: each case writes a small `.aws-sam/build`-shaped folder
into a temporary directory (a built template and a bootstrap per function) and asserts
the check names what is wrong. The wrong bootstrap is this machine's own x86_64
`ls` (Debian's needs libselinux), with a source path appended where a case needs one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import artifacts

FUNCTIONS = {lid: res["Metadata"]["BuildProperties"]["Binary"]
             for lid, res in artifacts.rust_functions(artifacts.load_template(artifacts.TEMPLATE)).items()}


def host_executable() -> Path:
    """This machine's (x86_64) dynamically linked `ls`, or the Python running the test."""
    found = shutil.which("ls")
    return Path(found).resolve() if found else Path(sys.executable).resolve()


def write_build(tmp: Path, bootstrap: Path | None, *, handler: str = "bootstrap", extra: bytes = b"",
                skip: str | None = None) -> Path:
    build = tmp / "build"
    lines = ["Resources:"]
    for lid, binary in FUNCTIONS.items():
        if lid == skip:
            continue
        lines += [f"  {lid}:", "    Type: AWS::Serverless::Function", "    Properties:",
                  f"      CodeUri: {lid}", f"      Handler: {handler}"]
        folder = build / lid
        folder.mkdir(parents=True)
        if bootstrap is not None:
            target = folder / "bootstrap"
            shutil.copyfile(bootstrap, target)
            with target.open("ab") as f:
                f.write(f"functions/{binary}/src/main.rs".encode() + extra)
            target.chmod(0o755)
    (build / "template.yaml").write_text("\n".join(lines) + "\n")
    return build


def problems_of(build: Path) -> dict[str, list[str]]:
    general, arts = artifacts.check_build(build)
    return {"general": general, **{a.logical_id: a.problems for a in arts}}


def test_missing_build_says_to_run_sam_build(tmp_path):
    general, arts = artifacts.check_build(tmp_path / "nothing")
    assert any("`sam build` has not run" in p for p in general)
    assert all(any("is not in" in p for p in a.problems) for a in arts)


def test_missing_bootstrap_is_named(tmp_path):
    build = write_build(tmp_path, None)
    for lid in FUNCTIONS:
        assert any("bootstrap is missing: run `make arm64`" in p for p in problems_of(build)[lid]), lid


def test_function_left_out_of_the_build_is_named(tmp_path):
    lid = sorted(FUNCTIONS)[0]
    build = write_build(tmp_path, host_executable(), skip=lid)
    assert any("did `sam build` build it?" in p for p in problems_of(build)[lid])


def test_x86_64_bootstrap_fails_with_the_architecture(tmp_path):
    build = write_build(tmp_path, host_executable())
    for lid in FUNCTIONS:
        found = problems_of(build)[lid]
        assert any("EM_X86_64 ELF, expected a 64-bit little-endian aarch64 one" in p for p in found), found
        assert any("asks for the loader /lib64/ld-linux-x86-64.so.2" in p for p in found), found


def test_extra_shared_library_is_named(tmp_path):
    build = write_build(tmp_path, host_executable())
    needed = artifacts.read_elf(host_executable()).needed
    unusual = [n for n in needed if n not in artifacts.ALLOWED_NEEDED]
    if not unusual:
        pytest.skip(f"{host_executable()} needs only {needed}")
    assert any(f"needs {unusual}" in p for p in problems_of(build)[sorted(FUNCTIONS)[0]])


def test_wrong_handler_is_named(tmp_path):
    build = write_build(tmp_path, host_executable(), handler="main")
    assert any("Handler is 'main', expected 'bootstrap'" in p for p in problems_of(build)[sorted(FUNCTIONS)[0]])


def test_another_functions_binary_is_named(tmp_path):
    lid, binary = sorted(FUNCTIONS.items())[0]
    other = next(b for b in FUNCTIONS.values() if b != binary)
    build = write_build(tmp_path, host_executable(), extra=f"functions/{other}/src/lib.rs".encode())
    assert any(f"carries the sources of ['{other}']" in p for p in problems_of(build)[lid])


def test_zip_over_budget_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "ZIP_BUDGET_BYTES", 1000)
    build = write_build(tmp_path, host_executable())
    assert any("over the budget of 1,000" in p for p in problems_of(build)[sorted(FUNCTIONS)[0]])


def test_glibc_newer_than_al2023_is_named():
    elf = artifacts.Elf(machine="EM_AARCH64", elfclass=64, little_endian=True, type="ET_DYN",
                        interpreter=artifacts.INTERPRETER, needed=["libc.so.6"],
                        version_needs={"libc.so.6": ["GLIBC_2.17", "GLIBC_2.34", "GLIBC_2.38"],
                                       "libgcc_s.so.1": ["GCC_4.2.0"]})
    assert elf.max_glibc == "GLIBC_2.38"
    [p] = artifacts.elf_problems("f", elf)
    assert "needs glibc symbol versions GLIBC_2.38, newer than AL2023's glibc 2.34" in p
    elf.version_needs["libc.so.6"] = ["GLIBC_2.17", "GLIBC_2.34"]
    assert artifacts.elf_problems("f", elf) == []


def test_template_and_workspace_disagreeing_is_named():
    template = {"Resources": {"F": {"Type": "AWS::Serverless::Function",
                                    "Metadata": {"BuildMethod": "makefile", "BuildProperties": {"Binary": "ghost"}},
                                    "Properties": {"Handler": "main"}}}}
    found = artifacts.template_problems(template, {"real": "real"})
    assert any("BuildMethod is 'makefile'" in p for p in found)
    assert any("Handler is 'main'" in p for p in found)
    assert any("build ['real'], which template.yaml deploys nowhere" in p for p in found)
    assert any("deploys ['F (ghost)'], which no functions/*/Cargo.toml builds" in p for p in found)


def test_the_real_template_agrees_with_the_workspace():
    template = artifacts.load_template(artifacts.TEMPLATE)
    assert artifacts.template_problems(template, artifacts.workspace_binaries()) == []
    assert sorted(artifacts.workspace_binaries()) == sorted(FUNCTIONS.values())
