#!/usr/bin/env python3
"""notify-fanout against the floor (issue 18's harness): the same SNS alarm event and the
same local incoming webhook, through one local Lambda Runtime API, for notify-fanout and
for a minimal Rust function (lambda_runtime + reqwest/rustls) that only posts
(`bench/reference/minimal-rust/`, a crate of its own outside the workspace).

    python3 bench/floor.py [--cold-runs 20] [--warm-events 500] [--no-build] [--bin-dir DIR] [--minimal-bin PATH]

(`make bench` runs it too; `bench/run.py --only floor` runs only it.)

- cold: fresh processes, the two functions interleaved run by run (so a busy moment of
  the shared machine hits both alike); init = spawn to the first `GET /invocation/next`,
  first invocation = event handed over to response posted; one uncounted run each first.
- warm: one process each, N events (the alarm, alternating ALARM and OK, a fresh SNS
  message id each): latency per event, CPU per event (user + system time of the process
  over the run / N), peak RSS.

notify-fanout runs as in bench/run.py (one webhook destination, channel pacing off, the
local endpoints without added latency). Issue 18's targets on this harness: notify-fanout
init at most 2 times the minimal function's, cold invocation at most 3 times, warm CPU per
event unchanged or lower than the baseline recorded in bench/NOTES.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import run  # noqa: E402  (bench/run.py: the world, the process harness, the events)

MINIMAL = BENCH / "reference" / "minimal-rust"
MINIMAL_BIN = "minimal-slack-notify"
NF = "notify-fanout"
# Issue 18, item 4.
TARGET_INIT_RATIO, TARGET_COLD_RATIO = 2.0, 3.0


def minimal_target(release_target: Path) -> Path:
    """The minimal crate's own target directory, next to the release build's (its own
    lock file and feature set must not share the workspace's fingerprints)."""
    return release_target / "bench-reference-minimal"


def build_minimal(target: Path) -> Path:
    cmd = ["cargo", "build", "--release", "--locked", "--manifest-path", str(MINIMAL / "Cargo.toml")]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "CARGO_TARGET_DIR": str(target)})
    return target / "release" / MINIMAL_BIN


def measure(nf_bin: Path, minimal_bin: Path, cold_runs: int, warm_events: int, out: Path) -> dict:
    """Runs the harness; returns the `floor` entry of bench/results.json."""
    for b in (nf_bin, minimal_bin):
        if not b.exists():
            raise run.BenchError(f"{b} is missing (build it, or pass --bin-dir / --minimal-bin)")
    world = run.World(out)
    t0 = time.time() - 3 * 3600
    subjects = {NF: [str(nf_bin)], "minimal": [str(minimal_bin)]}

    def event(i: int) -> dict:
        return run.sns_alarm_event(run.VPN, "ALARM" if i % 2 == 0 else "OK", t0 + i)

    cold: dict[str, dict[str, list[float]]] = {
        k: {"init_ms": [], "first_ms": [], "rss_mib": [], "init_cpu_ms": [], "first_cpu_ms": []} for k in subjects}
    warm: dict[str, dict] = {}
    try:
        run.nodelay.install()
        world.start()
        run.nodelay.no_full_collections()
        env = {NF: world.function_env(NF), "minimal": {**world.common_env(), "SLACK_WEBHOOK_URL": world.webhook}}
        print(f"floor: cold, {cold_runs} runs each, interleaved", flush=True)
        for i in range(cold_runs + 1):
            for key, argv in subjects.items():
                p = run.Process(key, argv, env[key], ROOT, out / "logs" / f"floor-{key}-cold.log")
                try:
                    init = p.wait_ready()
                    cpu_init = run.on_cpu_ms(p.proc.pid)  # it now waits on its first /next
                    first = p.invoke(event(i))
                    cpu_done = run.on_cpu_ms(p.proc.pid)  # and now on its second
                    rss = p.peak_rss_mib()
                finally:
                    p.stop()
                if i == 0:
                    continue  # page cache warm-up, not counted
                cold[key]["init_ms"].append(init)
                cold[key]["first_ms"].append(first)
                cold[key]["rss_mib"].append(rss)
                if cpu_init is not None and cpu_done is not None:
                    cold[key]["init_cpu_ms"].append(cpu_init)
                    cold[key]["first_cpu_ms"].append(cpu_done - cpu_init)
        for key, argv in subjects.items():
            print(f"floor: warm, {key}, {warm_events} events", flush=True)
            p = run.Process(key, argv, env[key], ROOT, out / "logs" / f"floor-{key}-warm.log")
            try:
                p.wait_ready()
                p.invoke(event(0))  # connections opened, not counted
                cpu0 = run.cpu_seconds(p.proc.pid)
                lat = [p.invoke(event(i + 1)) for i in range(warm_events)]
                cpu1 = run.cpu_seconds(p.proc.pid)
                peak = p.peak_rss_mib()
            finally:
                p.stop()
            cpu = (cpu1 - cpu0) * 1000 / warm_events if cpu0 is not None and cpu1 is not None else None
            warm[key] = {"latency_ms": run.summary(lat), "cpu_ms_per_event": cpu, "peak_rss_mib": peak}
    finally:
        world.stop()
    result = {"args": {"cold_runs": cold_runs, "warm_events": warm_events, "nf_bin": str(nf_bin),
                       "minimal_bin": str(minimal_bin)},
              "cold": {k: {m: run.summary(v) for m, v in c.items() if v} for k, c in cold.items()}, "warm": warm,
              "sizes": {k: Path(v[0]).stat().st_size for k, v in subjects.items()}}
    nf, mn = result["cold"][NF], result["cold"]["minimal"]
    result["ratios"] = {"init": nf["init_ms"]["median"] / mn["init_ms"]["median"],
                        "first": nf["first_ms"]["median"] / mn["first_ms"]["median"],
                        "warm": warm[NF]["latency_ms"]["median"] / warm["minimal"]["latency_ms"]["median"]}
    if "init_cpu_ms" in nf and "init_cpu_ms" in mn:
        result["ratios"]["init_cpu"] = nf["init_cpu_ms"]["median"] / mn["init_cpu_ms"]["median"]
        result["ratios"]["first_cpu"] = nf["first_cpu_ms"]["median"] / mn["first_cpu_ms"]["median"]
    return result


def render_section(floor: dict) -> list[str]:
    """The *notify-fanout against the floor* section of bench/RESULTS.md."""
    f = run.fmt_ms
    m = floor["machine"]
    c, w, r = floor["cold"], floor["warm"], floor["ratios"]
    L = ["## notify-fanout against the floor (issue 18's harness)", ""]
    L.append(f"`python3 bench/floor.py` (also in `make bench`), {m['date']}, commit `{m['commit']}`, load average "
             f"{m['load']} at the end. The same SNS alarm event and local incoming webhook through one local Runtime "
             f"API; {floor['args']['cold_runs']} cold runs of each, interleaved; {floor['args']['warm_events']} warm "
             "events each. *minimal* = `bench/reference/minimal-rust` (lambda_runtime + reqwest/rustls, posts the "
             "message and nothing else). Milliseconds, medians unless said.")
    L.append("")
    L.append("*CPU* columns: the process's time on a CPU (`/proc/<pid>/task/*/schedstat`), its own work whatever the "
             "load; the wall-clock columns also hold the wait for a CPU on this shared machine (see the load above).")
    L.append("")
    L.append("| function | init | init CPU | first invocation | first invocation CPU | warm | warm p99 | "
             "CPU per warm event | peak RSS (MiB) | binary (MiB) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")

    def med(key: str, metric: str) -> str:
        return f(c[key][metric]["median"]) if metric in c[key] else "?"
    for key in (NF, "minimal"):
        cpu = w[key]["cpu_ms_per_event"]
        L.append(f"| {key} | {med(key, 'init_ms')} | {med(key, 'init_cpu_ms')} | {med(key, 'first_ms')} | "
                 f"{med(key, 'first_cpu_ms')} | {f(w[key]['latency_ms']['median'])} | "
                 f"{f(w[key]['latency_ms']['p99'])} | {'?' if cpu is None else f(cpu)} | "
                 f"{w[key]['peak_rss_mib']:.1f} | {floor['sizes'][key] / 2**20:.2f} |")
    mark_init = "✅" if r["init"] <= TARGET_INIT_RATIO else "❌"
    mark_first = "✅" if r["first"] <= TARGET_COLD_RATIO else "❌"
    cpu_init = f"{r['init_cpu']:.1f}x" if "init_cpu" in r else "?"
    cpu_first = f"{r['first_cpu']:.1f}x" if "first_cpu" in r else "?"
    L.append(f"| **ratio** notify-fanout / minimal | {r['init']:.1f}x {mark_init} (target ≤ {TARGET_INIT_RATIO:.0f}x) | "
             f"{cpu_init} | {r['first']:.1f}x {mark_first} (target ≤ {TARGET_COLD_RATIO:.0f}x) | {cpu_first} | "
             f"{r['warm']:.1f}x | | | | |")
    L.append("")
    return L


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold-runs", type=int, default=20)
    ap.add_argument("--warm-events", type=int, default=500)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", type=Path, help="notify-fanout's directory (default $CARGO_TARGET_DIR/release)")
    ap.add_argument("--minimal-bin", type=Path, help="the minimal function (default: built into its own target)")
    ap.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    bins = args.bin_dir or target / "release"
    minimal = args.minimal_bin or minimal_target(target) / "release" / MINIMAL_BIN
    if not args.no_build:
        if not args.bin_dir:
            cmd = ["cargo", "build", "--release", "--locked", "-p", NF]
            print("$ " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
        if not args.minimal_bin:
            minimal = build_minimal(minimal_target(target))
    out = Path(tempfile.mkdtemp(prefix="incident-floor-"))
    try:
        floor = measure(bins / NF, minimal, args.cold_runs, args.warm_events, out)
    except run.BenchError as e:
        print(f"floor bench failed: {e}\nlogs in {out}", file=sys.stderr)
        return 1
    floor["machine"] = run.machine()
    print("\n".join(render_section(floor)))
    if not args.no_write:
        try:
            run.update_results(args.out, "floor", floor)
        except run.BenchError as e:
            print(f"not written: {e}", file=sys.stderr)
            return 1
        print(f"wrote {args.out} (logs in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
