#!/usr/bin/env python3
"""Which crates the code of a function binary comes from, by symbol size (what
`cargo bloat --crates` shows), for a binary that still has its symbol table.

    python3 bench/symbols.py BINARY [BINARY...] [--top 25]

The release profile strips symbols, and `cargo bloat` can only analyse a binary it
builds itself; a build with symbols is a second fat-LTO build of every crate (the strip
setting is part of each unit's fingerprint), about 15 minutes and 10 GB here. The
cheaper way used for bench/NOTES.md: relink only the function's own crate with
`-C strip=none` (the rustc command `cargo build --release -v` prints for it, run again
with another `--out-dir`), which reuses the LTO inputs of every dependency, then read
the symbols with `nm`. Sizes are of functions and data that survived fat LTO; inlined
code counts for the crate of the function it was inlined into (as in cargo bloat).
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import Counter
from pathlib import Path

# aws-lc-sys prefixes every C symbol with its version (aws_lc_0_39_0_...).
C_PREFIXES = {"aws_lc_": "aws_lc_sys (C)"}
PATH_START = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)::")


def crate_of(name: str) -> str:
    """The crate of a demangled symbol: the first path component, looking through
    `<Type as Trait>` to the type (as cargo bloat does)."""
    for prefix, crate in C_PREFIXES.items():
        if name.startswith(prefix):
            return crate
    s = name.lstrip("<&*")
    for word in ("mut ", "const ", "dyn "):
        if s.startswith(word):
            s = s[len(word):].lstrip("<&*")
    m = PATH_START.match(s)
    if m:
        return m.group(1)
    # `<&T as core::fmt::Debug>::fmt`: a generic type, so the trait's crate.
    if " as " in s:
        m = PATH_START.match(s.split(" as ", 1)[1])
        if m:
            return m.group(1)
    return "[C or unknown]"


SDK_CRATE = re.compile(r"\b(aws_sdk_[a-z0-9]+)::")


def crate_sizes(binary: Path) -> tuple[Counter, Counter, int]:
    """Bytes per crate (first path component), bytes of the symbols that name each SDK
    service crate anywhere (generic code such as `core::ptr::drop_in_place<aws_sdk_ssm::..>`
    counts there too), and the total."""
    out = subprocess.run(["nm", "--print-size", "--size-sort", "--radix=d", "-C", str(binary)],
                         capture_output=True, text=True, check=True).stdout
    sizes: Counter = Counter()
    mentions: Counter = Counter()
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[2] in ("U", "w", "v"):
            continue
        size = int(parts[1])
        sizes[crate_of(parts[3])] += size
        for sdk in set(SDK_CRATE.findall(parts[3])):
            mentions[sdk] += size
    return sizes, mentions, sum(sizes.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    for b in args.binaries:
        sizes, mentions, total = crate_sizes(b)
        print(f"{b}: {total / 2**20:.2f} MiB in symbols (file {b.stat().st_size / 2**20:.2f} MiB)")
        for crate, size in sizes.most_common(args.top):
            print(f"  {size / 1024:9.1f} KiB {100 * size / total:5.1f}%  {crate}")
        print("  AWS SDK service crates (own code / every symbol naming them): " + ", ".join(
            f"{c} {sizes.get(c, 0) / 1024:.0f} / {n / 1024:.0f} KiB" for c, n in mentions.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
