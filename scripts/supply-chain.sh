#!/usr/bin/env bash
# Supply-chain checks: licences, banned crates and sources always; advisories when the
# RustSec database (a GitHub repository) can be fetched. Offline, that one check is
# reported as skipped, never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install cargo-deny --locked --version 0.20.2
fi
cargo deny check licenses bans sources
if out=$(cargo deny check advisories 2>&1); then
  echo "advisories ok"
elif grep -q "failed to fetch advisory database" <<<"$out"; then
  echo "advisories SKIPPED: the RustSec database is not reachable from this machine"
else
  echo "$out"
  exit 1
fi
