"""The artifact check (artifacts.py) on what `sam build` wrote to `.aws-sam/build/`.

Needs `make arm64` (sam build) first; a missing build is a failure that says so, not a
skip. `ARM64_BUILD_DIR` points it at another build folder.
"""

from __future__ import annotations

import pytest

import artifacts


@pytest.fixture(scope="module")
def checked():
    return artifacts.check_build()


def test_template_functions_are_the_workspace_binaries(checked):
    general, _ = checked
    assert general == [], "\n".join(general)


def test_every_template_function_was_built(checked):
    _, arts = checked
    assert sorted(a.binary for a in arts) == sorted(artifacts.workspace_binaries())


@pytest.mark.parametrize("lid", sorted(artifacts.rust_functions(artifacts.load_template(artifacts.TEMPLATE))))
def test_bootstrap_is_what_lambda_arm64_al2023_runs(checked, lid):
    _, arts = checked
    [art] = [a for a in arts if a.logical_id == lid]
    assert art.problems == [], "\n".join(art.problems)
    # What the check read, stated (the problems above cover each of these with a sentence).
    assert art.elf.machine == "EM_AARCH64"
    assert set(art.elf.needed) <= artifacts.ALLOWED_NEEDED
    assert art.elf.glibc_versions and max(art.elf.glibc_versions) <= artifacts.MAX_GLIBC
    assert 0 < art.zip_size <= artifacts.ZIP_BUDGET_BYTES
