#!/usr/bin/env python3
"""The benchmark of issue 9: cold start, warm latency, peak memory and size of the Rust
functions, side by side with the Python functions operators deploy today, all through
the same local Lambda Runtime API against the same local endpoints and events.
`make bench` runs it; it writes `bench/RESULTS.md` (and `bench/results.json`).

    python3 bench/run.py [--cold-runs 20] [--warm-events 1000] [--no-build] [--no-criterion]

After the per-function figures it runs issue 18's benches (each also runnable alone, and
selected with `--only time-to-slack floor`): the time from an alarm to its first Slack
message with its critical path (bench/time_to_slack.py) and notify-fanout against a
minimal Rust function (bench/floor.py); each writes its own section of RESULTS.md.

What runs (everything from local/, reused, not copied): moto_server (SNS, DynamoDB,
Secrets Manager), the project's AWS emulator (SSM OpsCenter/Automation, EC2 VPN, Logs
Insights, TunnelState metrics), the local Slack (incoming webhooks), and one
`runtime_api.RuntimeApi` per function process.

- cold: a fresh process per run; init = spawn to its first `GET /invocation/next`;
  first invocation = event handed over to response posted, including the function's
  first AWS calls (SDK client's first connection, credentials, signing). One extra run
  before the measured ones warms the page cache (and, for Python, its bytecode cache,
  as the Lambda Python runtime ships compiled boto3) and is not counted.
- warm: one process, N events one after the other, per-event latency (event handed over
  to response posted, so it includes the local AWS/Slack round trips of each event);
  peak RSS = VmHWM of /proc/<pid>/status after the run.
- size: what `sam deploy` ships, the four arm64 bootstraps `sam build` wrote to
  `.aws-sam/build/` (`make arm64`), and each zipped as `sam deploy` zips it; read with the
  artifact check (tests/arm64/artifacts.py), which also gives the highest glibc version.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "local"))
sys.path.insert(0, str(BENCH))

from emulator import Emulator, endpoint_env  # noqa: E402
from runtime_api import RuntimeApi  # noqa: E402
from slack_sink import SlackSink  # noqa: E402
from story import (  # noqa: E402
    ACCOUNT, REGION, AUTOMATION_ROLE, RUNBOOK, TUNNEL_1, TUNNEL_2, VPN, Moto, Processes, RunbookRunner,
    load_event, tunnel_log)

import nodelay  # noqa: E402  (bench/nodelay.py)

FUNCTIONS = ("alarm-to-incident", "notify-fanout", "vpn-troubleshoot")
# Budgets of DESIGN.md section 8.
BUDGET = {"init_ms": 50.0, "cold_ms": 200.0, "warm_ms": 20.0, "rss_mib": 40.0, "zip_mib": 10.0}
PSK_FAILURE = "AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key"


class BenchError(Exception):
    pass


# ================================================================ statistics

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "median": statistics.median(values), "p95": pct(values, 95),
            "p99": pct(values, 99), "max": max(values)}


# ================================================================ a function process under a Runtime API

class TimedRuntimeApi(RuntimeApi):
    """RuntimeApi that also notes when the process first asked for an event."""

    first_poll: float | None = None

    def _next(self, h):  # noqa: ANN001
        if self.first_poll is None:
            self.first_poll = time.monotonic()
        return super()._next(h)


def vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def on_cpu_ms(pid: int) -> float | None:
    """The time the process's threads have spent on a CPU so far (ns counters of
    /proc/<pid>/task/*/schedstat): its own work, whatever the load of the machine, where
    wall-clock init and first-invocation times also hold the wait for a CPU."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e6


class Process:
    """One function process (Rust binary or `python -m awslambdaric`) and its Runtime API."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.name = name
        self.api = TimedRuntimeApi(name, REGION, ACCOUNT, timeout_s=60).start()
        self.env = {**env, **self.api.env()}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.spawned = time.monotonic()
            self.proc = subprocess.Popen(argv, env=self.env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.log_path = log_path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30) -> float:
        """Init time in ms (spawn to first /next)."""
        if not self.api.wait_ready(timeout, alive=self.alive) or self.api.first_poll is None:
            raise BenchError(f"{self.name} did not reach the Runtime API (exit {self.proc.poll()}, init error "
                             f"{self.api.init_error}); see {self.log_path}")
        return (self.api.first_poll - self.spawned) * 1000

    def invoke(self, payload: Any) -> float:
        """Latency in ms from the event handed to the process to its response."""
        ok, result = self.api.invoke(payload, alive=self.alive)
        if not ok:
            raise BenchError(f"{self.name} answered an error: {json.dumps(result)[:500]}; see {self.log_path}")
        inv = self.api.history[-1]
        return (inv.ended_at - inv.started_at) * 1000

    def peak_rss_mib(self) -> float:
        kib = vm_hwm_kib(self.proc.pid)
        if kib is None:
            raise BenchError(f"cannot read VmHWM of {self.name} (pid {self.proc.pid})")
        return kib / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.api.stop()


# ================================================================ events

def iso_alarm(ts: float) -> str:
    d = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+0000"


def sns_alarm_event(vpn: str, state: str, at: float) -> dict:
    """The SNS-delivered CloudWatch alarm of events/sns-vpn-tunnel-down-alarm.json, for
    VPN `vpn`, in `state` at `at`, with a fresh SNS message id: what both the Rust
    functions and the Python references receive."""
    ev = load_event("sns-vpn-tunnel-down-alarm.json")
    rec = ev["Records"][0]["Sns"]
    msg = json.loads(rec["Message"])
    name = f"vpn-tunnel-down-{vpn}"
    msg["AlarmName"] = name
    msg["AlarmDescription"] = f"Any tunnel of {vpn} is down (TunnelState Minimum < 1)"
    msg["AlarmArn"] = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"
    msg["Trigger"]["Dimensions"] = [{"value": vpn, "name": "VpnId"}]
    msg["NewStateValue"], msg["OldStateValue"] = state, ("OK" if state == "ALARM" else "ALARM")
    if state == "OK":
        msg["NewStateReason"] = msg["NewStateReason"].replace("[0.0", "[1.0").replace(
            "was less than", "was not less than").replace("OK -> ALARM", "ALARM -> OK")
    msg["StateChangeTime"] = iso_alarm(at)
    rec["Message"] = json.dumps(msg)
    rec["MessageId"] = str(uuid.uuid4())
    rec["Subject"] = f'{state}: "{name}" in EU (Ireland)'
    rec["Timestamp"] = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return ev


class VpnIds:
    """Fresh VPN ids, so every cold run opens a new incident (no dedupe short cut)."""

    def __init__(self) -> None:
        self.n = 0x10000

    def next(self) -> str:
        self.n += 1
        return f"vpn-0b{self.n:015x}"


# ================================================================ the local world

class NoDelayProcesses(Processes):
    """Processes of local/story.py, with moto_server run under bench/nodelay.py
    (TCP_NODELAY; and, unless `full_gc`, no full garbage collections)."""

    def __init__(self, nodelay: bool = True, full_gc: bool = False) -> None:
        super().__init__()
        self.nodelay, self.full_gc = nodelay, full_gc

    def start(self, name, argv, env, log_path):  # noqa: ANN001
        if name == "moto_server" and argv[1:3] == ["-m", "moto.server"]:
            argv = [argv[0], str(BENCH / "nodelay.py"), "moto.server", *argv[3:]]
            env = dict(env)
            env.pop("BENCH_NO_FULL_GC", None)
            if not self.full_gc:
                env["BENCH_NO_FULL_GC"] = "1"
            if not self.nodelay:
                env["BENCH_KEEP_NAGLE"] = "1"
        return super().start(name, argv, env, log_path)


class World:
    def __init__(self, out: Path, nodelay_servers: bool = True, full_gc: bool = False):
        self.out = out
        self.procs = NoDelayProcesses(nodelay_servers, full_gc)
        self.moto = Moto(self.procs, out / "moto_server.log")
        self.emulator: Emulator | None = None
        self.slack: SlackSink | None = None

    def start(self) -> "World":
        self.moto.start()
        self.emulator = Emulator().start()
        self.slack = SlackSink().start()
        ddb, sns, sm = (self.moto.client(s) for s in ("dynamodb", "sns", "secretsmanager"))
        self.table = "incident-pipeline-bench-state"
        ddb.create_table(TableName=self.table, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        self.topic = sns.create_topic(Name="incident-pipeline-bench-notifications")["TopicArn"]
        self.webhook = self.slack.webhook_url("oncall")
        # notify-fanout posts to the same incoming webhook as the Python reference.
        secret = {"destinations": {"oncall": {"type": "webhook", "url": self.webhook}},
                  "routing": {"rules": [{"name": "everything", "destinations": ["oncall"]}],
                              "default": ["oncall"]}}
        self.secret_arn = sm.create_secret(Name="incident-pipeline-bench-slack",
                                           SecretString=json.dumps(secret))["ARN"]
        runner = RunbookRunner(self.emulator, {})
        self.emulator.apply_scenario({
            "documents": [{"name": RUNBOOK, "parameters": runner.parameter_names(), "required": runner.required(),
                           "types": runner.types(), "patterns": runner.patterns()}],
            "vpn_connections": [{"id": VPN, "customer_gateway_ip": "198.51.100.7", "history_minutes": 90,
                                 "routes": [], "tags": {"Name": "branch-office"},
                                 "tunnels": [{"outside_ip": TUNNEL_1}, {"outside_ip": TUNNEL_2}]}]})
        t = time.time()
        group = f"/aws/vpn/{VPN}"
        self.emulator.apply_scenario({
            "tunnels": [{"vpn_connection_id": VPN, "outside_ip": TUNNEL_1, "status": "DOWN", "at": t - 1200}],
            "log_records": [{"log_group": group, "stream": f"{VPN}-{TUNNEL_1}", "records": [
                tunnel_log(TUNNEL_1, t - 600 + 10 * i, PSK_FAILURE, "down", "down") for i in range(40)]}]})
        return self

    def common_env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
               "LANG": "C.UTF-8", "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
               "AWS_SESSION_TOKEN": "local", "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": self.moto.url,
               **endpoint_env(self.emulator.url), "AWS_LAMBDA_LOG_LEVEL": "INFO"}
        return env

    def function_env(self, name: str) -> dict[str, str]:
        return {**self.common_env(), **{
            "alarm-to-incident": {"INCIDENT_BACKEND": "OpsCenter", "NOTIFICATION_TOPIC_ARN": self.topic,
                                  "STATE_TABLE_NAME": self.table, "RUNBOOK_DOCUMENT_NAME": RUNBOOK,
                                  "AUTOMATION_ROLE_ARN": AUTOMATION_ROLE},
            # Pacing off: the Python reference does not pace either, and 1,000 events
            # into one channel at one a second would measure the pacing, not the code.
            "notify-fanout": {"SLACK_SECRET_ARN": self.secret_arn, "STATE_TABLE_NAME": self.table,
                              "SLACK_API_URL": self.slack.url + "/api", "SLACK_CHANNEL_INTERVAL_MS": "0"},
            "vpn-troubleshoot": {"NOTIFICATION_TOPIC_ARN": self.topic, "INCIDENT_BACKEND": "OpsCenter",
                                 "REMEDIATION_ENABLED": "false", "LOOKBACK_MINUTES": "60"},
            "py-slack-notify": {"SLACK_WEBHOOK_URL": self.webhook},
            "py-opsitem": {},
        }[name]}

    def stop(self) -> None:
        if self.slack:
            self.slack.stop()
        if self.emulator:
            self.emulator.stop()
        self.procs.stop_all()


# ================================================================ subjects

class Subject:
    """One thing measured: a Rust function binary or a Python reference handler."""

    def __init__(self, key: str, label: str, argv: list[str], cwd: Path, env_name: str,
                 events: Callable[[int, str], dict], kind: str):
        self.key, self.label, self.argv, self.cwd, self.env_name = key, label, argv, cwd, env_name
        self.events, self.kind = events, kind


def rust_subject(name: str, release: Path, events: Callable[[int, str], dict]) -> Subject:
    return Subject(name, f"{name} (Rust)", [str(release / name)], ROOT, name, events, "rust")


def python_subject(key: str, module: str, events: Callable[[int, str], dict]) -> Subject:
    argv = [sys.executable, "-m", "awslambdaric", f"{module}.handler"]
    return Subject(key, f"{module}.py (Python {platform.python_version()}, boto3/urllib)", argv,
                   BENCH / "reference", key, events, "python")


def child_env(world: World, s: Subject, pycache: Path) -> dict[str, str]:
    env = world.function_env(s.env_name)
    if s.kind == "python":
        # Lambda's Python runtime ships boto3 compiled; let the interpreter keep its
        # bytecode in a cache of the bench's own (warmed by the uncounted first run).
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
        env["PYTHONPATH"] = str(BENCH / "reference")
    return env


# Subjects whose first AWS call goes to the emulator, whose call log then times the
# phases of the first invocation (vpn-troubleshoot: EC2 first, then Logs Insights).
PHASED = ("vpn-troubleshoot",)


def invocation_phases(started_at: float, ended_at: float, calls: list[dict]) -> dict[str, float] | None:
    """Where a vpn-troubleshoot invocation's time goes, from the emulator's call log
    (`at` = when the emulator read the request; the same clock as the Runtime API's):
    to its first AWS request, to StartQuery (the facts it needs first are read), the
    wait on the Logs Insights query (StartQuery to the GetQueryResults that saw it
    complete), and the number of GetQueryResults polls."""
    mine = [c for c in calls if started_at <= c["at"] <= ended_at]
    if not mine:
        return None
    out = {"first_call_ms": (mine[0]["at"] - started_at) * 1000}
    start = next((c for c in mine if c["op"] == "StartQuery"), None)
    polls = [c for c in mine if c["op"] == "GetQueryResults"]
    if start is not None:
        out["start_query_ms"] = (start["at"] - started_at) * 1000
        out["polls"] = float(len(polls))
        if polls:
            out["query_wait_ms"] = (polls[-1]["at"] - start["at"]) * 1000
    return out


def measure_cold(world: World, s: Subject, runs: int, out: Path, pycache: Path) -> dict:
    init, first, rss, phases = [], [], [], []
    for i in range(runs + 1):
        event = s.events(i, "cold")
        p = Process(s.key, s.argv, child_env(world, s, pycache), s.cwd, out / "logs" / f"{s.key}-cold.log")
        mark_calls = len(world.emulator.calls) if world.emulator else 0
        try:
            t_init = p.wait_ready()
            t_first = p.invoke(event)
            peak = p.peak_rss_mib()
            inv = p.api.history[-1]
        finally:
            p.stop()
        if i == 0:
            continue  # page cache / bytecode cache warm-up, not counted
        init.append(t_init)
        first.append(t_first)
        rss.append(peak)
        if s.key in PHASED and world.emulator:
            ph = invocation_phases(inv.started_at, inv.ended_at, world.emulator.calls[mark_calls:])
            if ph:
                phases.append(ph)
    result = {"init_ms": summary(init), "first_ms": summary(first),
              "total_ms": summary([a + b for a, b in zip(init, first)]), "rss_mib": summary(rss)}
    if phases:
        result["phases"] = {k: summary([ph[k] for ph in phases if k in ph])
                            for k in ("first_call_ms", "start_query_ms", "query_wait_ms", "polls")
                            if any(k in ph for ph in phases)}
    return result


def measure_warm(world: World, s: Subject, events: int, out: Path, pycache: Path) -> dict:
    p = Process(s.key, s.argv, child_env(world, s, pycache), s.cwd, out / "logs" / f"{s.key}-warm.log")
    try:
        p.wait_ready()
        cpu0 = cpu_seconds(p.proc.pid)
        lat = [p.invoke(s.events(i, "warm")) for i in range(events)]
        cpu1 = cpu_seconds(p.proc.pid)
        peak = p.peak_rss_mib()
    finally:
        p.stop()
    cpu = (cpu1 - cpu0) * 1000 / events if cpu0 is not None and cpu1 is not None else None
    return {"latency_ms": summary(lat), "after_first_ms": summary(lat[1:]), "peak_rss_mib": peak,
            "cpu_ms_per_event": cpu}


# ================================================================ sizes, features, criterion

def arm64_sizes() -> dict[str, dict]:
    """The arm64 bootstraps of `.aws-sam/build/` (ARM64_BUILD_DIR), as the artifact check reads them."""
    sys.path.insert(0, str(ROOT / "tests" / "arm64"))
    import artifacts

    _, arts = artifacts.check_build()
    out = {}
    for art in arts:
        if art.size is None:
            out[art.binary] = {"missing": "; ".join(art.problems) or str(art.folder)}
            continue
        out[art.binary] = {"binary_bytes": art.size, "zip_bytes": art.zip_size, "arch": "arm64",
                           "max_glibc": art.elf.max_glibc if art.elf else None, "problems": art.problems}
    return out


def measure_sizes(data: dict) -> None:
    """Puts the arm64 sizes of the current `.aws-sam/build/` into `data` (when built)."""
    size = arm64_sizes()
    if all("missing" in s for s in size.values()) and data.get("size"):
        print("no arm64 build in .aws-sam/build (make arm64): keeping the sizes of results.json", flush=True)
        return
    m = machine()
    data["size"] = size
    data["size_measured"] = {"date": m["date"], "commit": m["commit"], "profile": m["profile"]}


def release_profile() -> str:
    """[profile.release] of Cargo.toml in a few words, for the report's header."""
    import tomllib

    prof = tomllib.loads((ROOT / "Cargo.toml").read_text()).get("profile", {}).get("release", {})
    lto = {True: "fat", "fat": "fat", "thin": "thin", False: "thin-local", "off": "no"}.get(prof.get("lto", False), "?")
    return (f"opt-level {prof.get('opt-level', 3)}, {lto} LTO, {prof.get('codegen-units', 16)} codegen unit(s), "
            f"strip {prof.get('strip', 'none')}")


def feature_notes() -> dict[str, dict]:
    """What `cargo tree -e features` says each function links (normal dependencies)."""
    notes = {}
    for name in FUNCTIONS:
        r = subprocess.run(["cargo", "tree", "--locked", "-p", name, "-e", "normal,features", "--prefix", "none",
                            "--target", "x86_64-unknown-linux-gnu"], capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            notes[name] = {"error": r.stderr.strip()[-400:]}
            continue
        crates, feats = set(), {}
        for line in r.stdout.splitlines():
            m = re.match(r'(\S+) feature "([^"]+)"', line)
            if m:
                feats.setdefault(m.group(1), set()).add(m.group(2))
                continue
            m = re.match(r"(\S+) v(\S+)", line)
            if m:
                crates.add((m.group(1), m.group(2)))
        names = {c for c, _ in crates}
        notes[name] = {
            "crates": len(crates),
            "aws_sdk": sorted(c for c in names if c.startswith("aws-sdk-")),
            "hyper": sorted(f"{c} {v}" for c, v in crates if c == "hyper"),
            "tls": sorted(c for c in names if c in ("rustls", "aws-lc-rs", "aws-lc-sys", "ring", "openssl",
                                                     "native-tls", "hyper-rustls", "tokio-rustls")),
            "rustls_features": sorted(feats.get("rustls", [])),
            "lambda_events_features": sorted(feats.get("aws_lambda_events", [])),
            "tokio_features": sorted(feats.get("tokio", [])),
            "reqwest": "reqwest" in names,
        }
    return notes


def run_criterion(target_dir: Path) -> dict[str, float]:
    cmd = ["cargo", "bench", "--locked", "-p", "incident-shared", "--bench", "pure", "--",
           "--warm-up-time", "1", "--measurement-time", "2", "--noplot"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return read_criterion(target_dir)


def read_criterion(target_dir: Path) -> dict[str, float]:
    """Median ns per iteration of every benchmark criterion saved."""
    results = {}
    base = target_dir / "criterion"
    for est in sorted(base.glob("**/new/estimates.json")):
        bench = str(est.parent.parent.relative_to(base))
        data = json.loads(est.read_text())
        results[bench] = data["median"]["point_estimate"]  # ns
    return results


# ================================================================ the report

def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def cmd(*a: str) -> str:
        try:
            return subprocess.run(a, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "?"

    commit = cmd("git", "rev-parse", "--short=12", "HEAD")
    if cmd("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    try:
        load = " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    return {"load": load, "cpu": cpu, "cores": str(os.cpu_count()), "memory": mem, "kernel": platform.release(),
            "profile": release_profile(),
            "os": platform.platform(), "rustc": cmd("rustc", "-V"), "python": platform.python_version(),
            "awslambdaric": _version("awslambdaric"), "boto3": _version("boto3"), "commit": commit,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _version(pkg: str) -> str:
    try:
        from importlib.metadata import version
        return version(pkg)
    except Exception:  # the report says "?" rather than failing on a missing package
        return "?"


def mark(value: float, budget: float) -> str:
    return "✅" if value < budget else "❌"


def fmt_ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def ratio(py: float, rust: float) -> str:
    if rust <= 0:
        return "n/a"
    r = py / rust
    return f"{r:.2f}x" if r < 1 else f"{r:.1f}x"


def write_results(path: Path, data: dict) -> None:
    m, cold, warm, size, feats, crit = (data[k] for k in ("machine", "cold", "warm", "size", "features",
                                                          "criterion"))
    args = data["args"]
    L: list[str] = []
    a = L.append
    a("# Benchmark results")
    a("")
    a(f"Written by `make bench` (`bench/run.py`) on {m['date']}, commit `{m['commit']}`.")
    a("")
    partial = data.get("partial")
    if partial:
        prev = partial["previous"]
        a(f"**Partial run**: only {', '.join(partial['measured'])} re-measured in this run (`--only`); the other "
          f"rows are from the run of {prev['date']} at commit `{prev['commit']}` (load then: {prev['load']}).")
        a("")
    a(f"- Machine: {m['cpu']}, {m['cores']} cores (shared with other jobs), {m['memory']} RAM, "
      f"Linux {m['kernel']}, load average at the end of the run {m['load']} (1/5/15 min)")
    a(f"- Toolchain: {m['rustc']}; release profile of the timed binaries (x86_64, this machine): "
      f"{m.get('profile') or 'opt-level 3, fat LTO, 1 codegen unit, strip symbols'}")
    a(f"- Python reference: CPython {m['python']}, awslambdaric {m['awslambdaric']}, boto3 {m['boto3']}")
    a(f"- Runs: cold {args['cold_runs']} fresh processes per function (plus one uncounted warm-up run), "
      f"warm {args['warm_events']} events on one process")
    a("- Everything goes through the same local Lambda Runtime API (`local/runtime_api.py`) against the same "
      "local endpoints: moto_server (DynamoDB, SNS, Secrets Manager), the project's emulator (SSM, EC2, "
      "Logs, CloudWatch) and the local Slack (`local/slack_sink.py`). All times include those local round "
      "trips; every server is Python on the same 2 cores, so absolute figures are pessimistic and the "
      "ratios are the point.")
    a("")
    a("Budget marks (DESIGN.md section 8): ✅ met, ❌ missed (explained under *Budgets*).")
    a("")
    a("## Cold start (fresh process per run)")
    a("")
    a("init = spawn to the first `GET /invocation/next`; first invocation = event handed over to response "
      "posted, including the function's first AWS calls. Milliseconds.")
    a("")
    a("| function | init min | init median | init p95 | first inv. min | first inv. median | first inv. p95 | "
      "peak RSS median (MiB) |")
    a("|---|---|---|---|---|---|---|---|")
    for key, r in cold.items():
        i, f, rss = r["init_ms"], r["first_ms"], r["rss_mib"]
        rust = not key.startswith("py-")
        bi = f" {mark(i['p95'], BUDGET['init_ms'])}" if rust else ""
        bf = f" {mark(f['p95'], BUDGET['cold_ms'])}" if rust else ""
        br = f" {mark(rss['median'], BUDGET['rss_mib'])}" if rust else ""
        a(f"| {data['labels'][key]} | {fmt_ms(i['min'])} | {fmt_ms(i['median'])} | {fmt_ms(i['p95'])}{bi} | "
          f"{fmt_ms(f['min'])} | {fmt_ms(f['median'])} | {fmt_ms(f['p95'])}{bf} | {rss['median']:.1f}{br} |")
    a("")
    phased = {k: r["phases"] for k, r in cold.items() if r.get("phases")}
    for key, ph in phased.items():
        a(f"Where the first invocation of {data['labels'][key]} goes (median of the cold runs, from the emulator's "
          "call log): the budget's *first AWS call* is the time to its first request; the rest is the diagnosis, "
          "which waits on an asynchronous Logs Insights query.")
        a("")
        a("| to first AWS request (ms) | to StartQuery (ms) | Logs Insights wait (ms) | GetQueryResults polls | "
          "whole invocation (ms) |")
        a("|---|---|---|---|---|")

        def med(k: str, ph: dict = ph) -> str:
            return fmt_ms(ph[k]["median"]) if k in ph else "-"
        first_call = ph.get("first_call_ms")
        bc = f" {mark(first_call['p95'], BUDGET['cold_ms'])} (p95 {fmt_ms(first_call['p95'])})" if first_call else ""
        polls = f"{ph['polls']['median']:.0f}" if "polls" in ph else "-"
        a(f"| {med('first_call_ms')}{bc} | {med('start_query_ms')} | {med('query_wait_ms')} | {polls} | "
          f"{fmt_ms(cold[key]['first_ms']['median'])} |")
        a("")
    a("## Warm path (one process)")
    a("")
    a(f"Per-event latency over {args['warm_events']} events (event handed over to response posted, including "
      "the local AWS and Slack round trips of each event). Peak RSS = VmHWM after the run.")
    a("")
    a("CPU per event = the function process's own user + system CPU time over the run (from "
      "`/proc/<pid>/stat`) divided by the events: its handler work without the waiting on the network. The budget "
      "of 20 ms of warm handler work without network is marked on that column.")
    a("")
    a("| function | median (ms) | p99 (ms) | max (ms) | CPU per event (ms) | peak RSS (MiB) |")
    a("|---|---|---|---|---|---|")
    for key, r in warm.items():
        lat = r["latency_ms"]
        rust = not key.startswith("py-")
        br = f" {mark(r['peak_rss_mib'], BUDGET['rss_mib'])}" if rust else ""
        cpu = r.get("cpu_ms_per_event")
        bc = f" {mark(cpu, BUDGET['warm_ms'])}" if rust and cpu is not None else ""
        shown = "?" if cpu is None else fmt_ms(cpu)
        a(f"| {data['labels'][key]} | {fmt_ms(lat['median'])} | {fmt_ms(lat['p99'])} | {fmt_ms(lat['max'])} | "
          f"{shown}{bc} | {r['peak_rss_mib']:.1f}{br} |")
    a("")
    a("## Rust vs Python (how many times the Python reference's figure is the Rust one's)")
    a("")
    a("| pair (same events, same endpoints) | init (median) | first invocation (median) | "
      "cold total (median) | warm median | warm p99 | CPU per warm event | peak RSS (warm) |")
    a("|---|---|---|---|---|---|---|---|")
    for rust_key, py_key in data["pairs"]:
        if rust_key in cold and py_key in cold and rust_key in warm and py_key in warm:
            rc, pc, rw, pw = cold[rust_key], cold[py_key], warm[rust_key], warm[py_key]
            a(f"| {rust_key} vs {py_key} | {ratio(pc['init_ms']['median'], rc['init_ms']['median'])} | "
              f"{ratio(pc['first_ms']['median'], rc['first_ms']['median'])} | "
              f"{ratio(pc['total_ms']['median'], rc['total_ms']['median'])} | "
              f"{ratio(pw['latency_ms']['median'], rw['latency_ms']['median'])} | "
              f"{ratio(pw['latency_ms']['p99'], rw['latency_ms']['p99'])} | "
              f"{ratio(pw['cpu_ms_per_event'] or 0, rw['cpu_ms_per_event'] or 0)} | "
              f"{ratio(pw['peak_rss_mib'], rw['peak_rss_mib'])} |")
    a("")
    if data.get("time_to_slack"):
        import time_to_slack  # noqa: E402  (bench/time_to_slack.py)
        L.extend(time_to_slack.render_section(data["time_to_slack"]))
        a("")
    if data.get("floor"):
        import floor  # noqa: E402  (bench/floor.py)
        L.extend(floor.render_section(data["floor"]))
        a("")
    a("## Size (arm64, what `sam deploy` ships)")
    a("")
    sized = data.get("size_measured") or {}
    a("The four bootstraps `sam build` wrote to `.aws-sam/build/` (`make arm64`: aarch64, release profile, "
      "linked by cargo-lambda with zig), zipped as `sam deploy` zips them; read by the artifact check "
      f"(`tests/arm64/artifacts.py`){' at commit `' + sized['commit'] + '`, ' + sized['date'] if sized else ''}"
      f"{', profile: ' + sized['profile'] if sized.get('profile') else ''}.")
    a("")
    a("| function | bootstrap (MiB) | zip (MiB) | zip (bytes) | highest glibc symbol version (AL2023: 2.34) |")
    a("|---|---|---|---|---|")
    for name, s in size.items():
        if "missing" in s:
            a(f"| {name} | not built ({s['missing']}) | - | - | - |")
            continue
        a(f"| {name} | {s['binary_bytes'] / 2**20:.2f} | {s['zip_bytes'] / 2**20:.2f} "
          f"{mark(s['zip_bytes'] / 1e6, BUDGET['zip_mib'])} | {s['zip_bytes']:,} | {s.get('max_glibc') or '?'} |")
    a("")
    a("What `cargo tree -e normal,features` says each function links:")
    a("")
    for name, n in feats.items():
        if "error" in n:
            a(f"- {name}: cargo tree failed: {n['error']}")
            continue
        a(f"- **{name}**: {n['crates']} crates; SDK crates {', '.join(n['aws_sdk']) or 'none'}; "
          f"HTTP {', '.join(n['hyper']) or 'none'}{' + reqwest' if n['reqwest'] else ''}; "
          f"TLS {', '.join(n['tls']) or 'none'} (rustls features: {', '.join(n['rustls_features']) or '-'}); "
          f"aws_lambda_events features: {', '.join(n['lambda_events_features']) or '-'}")
    a("")
    if crit:
        a("## In-process throughput of the pure parts (criterion)")
        a("")
        a("`cargo bench -p incident-shared --bench pure -- --warm-up-time 1 --measurement-time 2`; "
          "median time per call, no network (budget for warm handler work: 20 ms).")
        a("")
        a("| benchmark | median | calls/s |")
        a("|---|---|---|")
        for bench, ns in crit.items():
            shown = f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"
            a(f"| {bench} | {shown} {mark(ns / 1e6, BUDGET['warm_ms'])} | {1e9 / ns:,.0f} |")
        a("")
    notes = BENCH / "NOTES.md"
    if notes.exists():
        a(notes.read_text().rstrip())
        a("")
    path.write_text("\n".join(L) + "\n")


def update_results(out: Path, key: str, value: dict) -> None:
    """Puts `value` under `key` in bench/results.json and rewrites RESULTS.md from it:
    a bench of its own (time to Slack, the floor) replaces its section and keeps every
    other one as it was."""
    path = out.parent / "results.json"
    if not path.exists():
        raise BenchError(f"{path} is missing: run `make bench` once first")
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    write_results(out, data)


def merge_previous(data: dict, prev: dict, measured: list[str]) -> dict:
    """A `--only` run: the subjects it measured replace theirs in the previous results,
    the others keep their figures, and the report says which rows come from which run."""
    order = list(prev.get("labels", {})) + [k for k in data["labels"] if k not in prev.get("labels", {})]

    def merged(section: str) -> dict:
        both = {**prev.get(section, {}), **data[section]}
        return {k: both[k] for k in order if k in both}
    out = dict(data)
    out["cold"], out["warm"] = merged("cold"), merged("warm")
    out["labels"] = {k: {**prev.get("labels", {}), **data["labels"]}[k] for k in order}
    out["criterion"] = data["criterion"] or prev.get("criterion", {})
    earlier = prev.get("partial", {}).get("previous") or prev["machine"]
    out["partial"] = {"measured": measured,
                      "previous": {k: earlier.get(k, "?") for k in ("date", "commit", "load")}}
    return out


# ================================================================ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold-runs", type=int, default=20)
    ap.add_argument("--warm-events", type=int, default=1000)
    ap.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    ap.add_argument("--no-criterion", action="store_true")
    ap.add_argument("--only", nargs="*", help="subjects to measure (default: all): notify-fanout py-slack-notify "
                    "alarm-to-incident py-opsitem vpn-troubleshoot time-to-slack floor")
    ap.add_argument("--tts-profiles", nargs="+", default=None,
                    help="latency profiles of the time-to-Slack bench (default: aws-us-east-1 none)")
    ap.add_argument("--tts-cold-runs", type=int, default=20, help="time to Slack: cold runs per backend and profile")
    ap.add_argument("--tts-warm-events", type=int, default=100,
                    help="time to Slack: warm runs per backend and profile")
    ap.add_argument("--floor-warm-events", type=int, default=500,
                    help="notify-fanout against the minimal function: warm events each (cold: --cold-runs)")
    ap.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    ap.add_argument("--bin-dir", type=Path, help="function binaries (default $CARGO_TARGET_DIR/release)")
    ap.add_argument("--keep-nagle", action="store_true",
                    help="run moto_server without TCP_NODELAY, to see its Nagle/delayed-ACK stall (see "
                         "bench/nodelay.py; the servers of local/httpserve.py always set it)")
    ap.add_argument("--full-gc", action="store_true",
                    help="let moto_server and the bench's own servers run Python's full garbage collections "
                         "(pauses of 0.2-2 s that land on whichever request they hit; see bench/NOTES.md)")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md from bench/results.json, adding the criterion figures found "
                         "in $CARGO_TARGET_DIR/criterion (after `cargo bench -p incident-shared --bench pure`)")
    args = ap.parse_args(argv)
    if args.render_only:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
        data = json.loads((args.out.parent / "results.json").read_text())
        data["criterion"] = read_criterion(target) or data.get("criterion", {})
        measure_sizes(data)
        (args.out.parent / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        write_results(args.out, data)
        print(f"rewrote {args.out}")
        return 0
    if not args.keep_nagle:
        nodelay.install()
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    release = args.bin_dir or target / "release"
    benches = [b for b in ("time-to-slack", "floor") if not args.only or b in args.only]
    per_function = not args.only or any(k not in ("time-to-slack", "floor") for k in args.only)
    if not args.no_build:
        # Only what this run measures: the fat-LTO release build takes long.
        picked = ["--workspace", "--bins"] if per_function else \
            ["-p", "notify-fanout"] + (["-p", "alarm-to-incident"] if "time-to-slack" in benches else [])
        cmd = ["cargo", "build", "--release", *picked, "--locked"]
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        if per_function:
            # The sizes are those of what ships: the arm64 bootstraps of `sam build`.
            print("$ bash scripts/arm64-build.sh", flush=True)
            subprocess.run(["bash", "scripts/arm64-build.sh"], check=True, cwd=ROOT)
    minimal_bin = None
    if "floor" in benches:
        import floor  # noqa: E402  (bench/floor.py)
        minimal_bin = floor.minimal_target(target) / "release" / floor.MINIMAL_BIN
        if not args.no_build:
            minimal_bin = floor.build_minimal(floor.minimal_target(target))
    if not per_function:
        return run_benches(args, benches, release, minimal_bin)
    crit = {} if args.no_criterion else run_criterion(target)

    ids = VpnIds()
    t0 = time.time() - 3 * 3600
    a2i_warm_vpn = ids.next()

    def notify_events(i: int, phase: str) -> dict:
        # The same alarm, alternating ALARM and OK, a fresh SNS message each time.
        return sns_alarm_event(VPN, "ALARM" if i % 2 == 0 else "OK", t0 + i)

    def a2i_events(i: int, phase: str) -> dict:
        if phase == "cold":
            return sns_alarm_event(ids.next(), "ALARM", t0 + 5000 + i)  # a new incident every run
        return sns_alarm_event(a2i_warm_vpn, "ALARM" if i % 2 == 0 else "OK", t0 + 10000 + i)

    def vpn_events(i: int, phase: str) -> dict:
        return {"VpnConnectionId": VPN, "LookbackMinutes": 60}

    subjects = [
        rust_subject("notify-fanout", release, notify_events),
        python_subject("py-slack-notify", "slack_notify", notify_events),
        rust_subject("alarm-to-incident", release, a2i_events),
        python_subject("py-opsitem", "opsitem", a2i_events),
        rust_subject("vpn-troubleshoot", release, vpn_events),
    ]
    if args.only:
        subjects = [s for s in subjects if s.key in args.only]
    keep = {}
    previous = args.out.parent / "results.json"
    if previous.exists():
        prev = json.loads(previous.read_text())
        keep = {k: prev[k] for k in ("time_to_slack", "floor") if k in prev}
    out = Path(tempfile.mkdtemp(prefix="incident-bench-"))
    pycache = out / "pycache"
    world = World(out, nodelay_servers=not args.keep_nagle, full_gc=args.full_gc)
    cold, warm = {}, {}
    try:
        world.start()
        if not args.full_gc:
            # The Runtime API, the emulator and the local Slack run in this process.
            nodelay.no_full_collections()
        for s in subjects:
            print(f"cold start: {s.label}, {args.cold_runs} runs", flush=True)
            cold[s.key] = measure_cold(world, s, args.cold_runs, out, pycache)
            c = cold[s.key]
            print(f"  init median {c['init_ms']['median']:.2f} ms, first invocation median "
                  f"{c['first_ms']['median']:.2f} ms, RSS {c['rss_mib']['median']:.1f} MiB", flush=True)
            if s.key == "vpn-troubleshoot":
                continue  # cold start only: its warm path is dominated by the Logs Insights query polling
            print(f"warm: {s.label}, {args.warm_events} events", flush=True)
            warm[s.key] = measure_warm(world, s, args.warm_events, out, pycache)
            w = warm[s.key]
            print(f"  median {w['latency_ms']['median']:.2f} ms, p99 {w['latency_ms']['p99']:.2f} ms, "
                  f"peak RSS {w['peak_rss_mib']:.1f} MiB", flush=True)
    except BenchError as e:
        print(f"bench failed: {e}\nlogs in {out}", file=sys.stderr)
        return 1
    finally:
        world.stop()
    data = {"machine": machine(), "args": vars(args) | {"out": str(args.out)}, "cold": cold, "warm": warm,
            "features": feature_notes(), "criterion": crit,
            "labels": {s.key: s.label for s in subjects},
            "pairs": [("notify-fanout", "py-slack-notify"), ("alarm-to-incident", "py-opsitem")]}
    if args.only and previous.exists():
        data = merge_previous(data, json.loads(previous.read_text()), [s.key for s in subjects])
    data.update(keep)  # the benches of their own are re-measured below (or kept as they were)
    measure_sizes(data)
    args.out.write_text("")  # make sure the path is writable before the JSON goes next to it
    (args.out.parent / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    write_results(args.out, data)
    print(f"wrote {args.out} (logs of the run in {out})")
    return run_benches(args, benches, release, minimal_bin)


def run_benches(args: argparse.Namespace, benches: list[str], release: Path, minimal_bin: Path | None) -> int:
    """The benches of their own after the per-function one: time to Slack
    (bench/time_to_slack.py) and notify-fanout against the floor (bench/floor.py);
    each replaces its section of RESULTS.md."""
    for bench in benches:
        out = Path(tempfile.mkdtemp(prefix=f"incident-{bench}-"))
        try:
            if bench == "time-to-slack":
                import time_to_slack  # noqa: E402  (bench/time_to_slack.py)
                key = "time_to_slack"
                result = time_to_slack.measure(args.tts_profiles or list(time_to_slack.DEFAULT_PROFILES),
                                               list(time_to_slack.BACKENDS), args.tts_cold_runs,
                                               args.tts_warm_events, release, out)
            else:
                import floor  # noqa: E402  (bench/floor.py)
                key = "floor"
                assert minimal_bin is not None
                result = floor.measure(release / "notify-fanout", minimal_bin, args.cold_runs,
                                       args.floor_warm_events, out)
            result["machine"] = machine()
            update_results(args.out, key, result)
        except BenchError as e:
            print(f"{bench} bench failed: {e}\nlogs in {out}", file=sys.stderr)
            return 1
        if bench == "time-to-slack":
            time_to_slack.print_report(result)
        else:
            print("\n".join(floor.render_section(result)))
        print(f"wrote {args.out} ({bench}; logs in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
