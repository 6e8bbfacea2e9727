#!/usr/bin/env bash
# Fuzzing (issue 10): builds the cargo-fuzz targets of fuzz/ and runs each for a bounded
# time, then prints the executions per target. Exits non-zero when a target crashed
# (panic, failed assertion, timeout, out of memory); the crashing input is kept under
# $FUZZ_WORK/artifacts/<target>/ and `cargo fuzz run <target> <file>` replays it.
#
# usage: scripts/fuzz.sh [seconds per target, default 300] [target ...]
#   FUZZ_WORK        corpus, seeds and artifacts (default ~/.cache/incident-pipeline/fuzz)
#   FUZZ_TARGET_DIR  the instrumented build (default ~/.cache/incident-pipeline/fuzz-target)
#
# The toolchain is stable: cargo-fuzz passes nightly-only flags (-Z...) to rustc, which
# RUSTC_BOOTSTRAP=1 allows. No sanitizer (`-s none`): the code under test is safe Rust,
# so what fuzzing finds is panics, and AddressSanitizer would only halve the speed.
# Debug assertions are on (`-a`), so arithmetic overflow panics instead of wrapping.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
shift || true
if [ $# -gt 0 ]; then targets=("$@"); else targets=(alarm_normalize slack_render vpn_logs); fi

work=${FUZZ_WORK:-$HOME/.cache/incident-pipeline/fuzz}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/incident-pipeline/fuzz-target}
# The instrumented build has flags of its own: keep it out of the main build directory.
unset CARGO_BUILD_BUILD_DIR
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
flags=(-s none -a)

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

rm -rf "$work/seeds"
python3 fuzz/seeds.py "$work/seeds"

t0=$(date +%s)
(cd fuzz && cargo fuzz build "${flags[@]}")
echo "fuzz build took $(($(date +%s) - t0))s"

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  log="$work/$t.log"
  echo "::: fuzz $t for ${seconds}s"
  status=0
  # Corpus (kept between runs), seeds, and the inputs of past findings (fuzz/regressions).
  dirs=("$work/corpus/$t" "$work/seeds/$t")
  if [ -d "fuzz/regressions/$t" ]; then dirs+=("$PWD/fuzz/regressions/$t"); fi
  (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -dict=json.dict -print_final_stats=1 -artifact_prefix="$work/artifacts/$t/") >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "$work/corpus/$t" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    result="CRASH (exit $status)"
    failed+=("$t")
    grep -E "panicked at|SUMMARY|Test unit written|ERROR: libFuzzer" "$log" | head -n 8 || true
  fi
  summary+=("$(printf '%-16s %12s executions %8s exec/s  corpus %5s  %s' "$t" "${execs:-?}" "${speed:-?}" "$corpus" "$result")")
done

echo "::: fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (inputs under $work/artifacts/; logs $work/<target>.log)" >&2
  exit 1
fi
