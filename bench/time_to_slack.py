#!/usr/bin/env python3
"""Time to Slack (issue 18): from a CloudWatch alarm handed to alarm-to-incident to the
first message in Slack, through the real release binaries, with the local endpoints
behind a latency proxy that makes them answer about as AWS and Slack would
(`bench/latency_proxy.py`, profiles in `bench/profiles/`).

    python3 bench/time_to_slack.py [--profiles aws-us-east-1 none] [--backends OpsCenter IncidentManager]
                                   [--cold-runs 20] [--warm-events 100] [--no-build] [--bin-dir DIR]

(`make bench` runs it too; `bench/run.py --only time-to-slack` runs only it.)

One run: a direct alarm action event (a new VPN each run, so each opens a new
incident) is handed to alarm-to-incident: time 0. Its SNS Publish goes through the
proxy, which tells this bench; the bench builds the SNS-to-Lambda event from the
published message and hands it to notify-fanout when SNS would have: the profile's
`sns_delivery_ms` after the Publish request left (a published p50 of SNS standard
topics to Lambda, explicit here rather than hidden in the local servers). notify-fanout
posts to the local Slack (a bot destination, threaded, as in `make demo`); the time to
Slack ends when the local Slack records the message.

- cold: both functions are fresh processes each run, spawned when their event is handed
  over (a Lambda cold start: the init is on the path; Lambda's own sandbox set-up before
  the init is not modelled).
- warm: the same two processes for every run (after one uncounted run that opens their
  connections), a new alarm each time.

notify-fanout runs with `SLACK_CHANNEL_INTERVAL_MS=1`: the channel-pacing reservation (a
DynamoDB call) stays on the path as in production, while back-to-back runs never wait for
a send slot (at the default one per second, runs closer than a second would).

The report (printed, and the *Time to Slack* section of bench/RESULTS.md) gives p50/p95
per backend, mode and profile, and the critical path per function from the proxy's
request log (`bench/critical_path.py`): each call, what it adds, whether it must be
sequential, and the lower bound (the sum of the calls that must be sequential) with the
ratio of issue 18's target (cold time to Slack at most 1.3 times the lower bound).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "local"))
sys.path.insert(0, str(BENCH))

import critical_path  # noqa: E402
import latency_proxy  # noqa: E402
import nodelay  # noqa: E402
import run  # noqa: E402  (bench/run.py: machine notes, the RESULTS.md writer)
from emulator import Emulator, endpoint_env  # noqa: E402
from httpserve import Handler, Server  # noqa: E402
from runtime_api import Invocation, RuntimeApi  # noqa: E402
from slack_sink import SlackSink  # noqa: E402
from run import BenchError  # noqa: E402
from story import (  # noqa: E402
    ACCOUNT, AUTOMATION_ROLE, REGION, RESPONSE_PLAN, RUNBOOK, Moto, Processes, RunbookRunner, direct_alarm,
    sns_lambda_event)

A2I, NF = critical_path.A2I, critical_path.NF
BACKENDS = ("OpsCenter", "IncidentManager")
DEFAULT_PROFILES = ("aws-us-east-1", "none")
SAMPLE_VPN = "vpn-0f1e2d3c4b5a69788"  # the VPN of events/direct-vpn-tunnel-down-alarm.json
CHANNEL = "C0LOCALOPS"
RUN_TIMEOUT_S = 60


# ================================================================ events

def alarm_event(vpn: str, at: float) -> dict:
    """The direct alarm action of events/direct-vpn-tunnel-down-alarm.json for VPN `vpn`
    (OK -> ALARM at `at`): a new alarm, hence a new incident, per VPN."""
    ev = direct_alarm("ALARM", "OK", at, at - 3600)
    return json.loads(json.dumps(ev).replace(SAMPLE_VPN, vpn))


def sns_event_from_publish(form: str, response: str, at: float, subscription_arn: str) -> dict:
    """The SNS-to-Lambda event SNS would deliver for one `Publish` (its awsQuery form and
    the answer's MessageId), as a subscribed function receives it."""
    f = parse_qs(form, keep_blank_values=True)
    m = re.search(r"<MessageId>([^<]+)</MessageId>", response)
    if not m or "Message" not in f or "TopicArn" not in f:
        raise BenchError(f"not an SNS Publish: form keys {sorted(f)[:8]}, answer {response[:200]!r}")
    attrs = {}
    for i in range(1, 11):  # SNS allows at most 10 message attributes
        name = f.get(f"MessageAttributes.entry.{i}.Name")
        if not name:
            break
        p = f"MessageAttributes.entry.{i}.Value."
        value = (f.get(p + "StringValue") or f.get(p + "BinaryValue") or [""])[0]
        attrs[name[0]] = {"Type": (f.get(p + "DataType") or ["String"])[0], "Value": value}
    stamp = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    body = {"Type": "Notification", "MessageId": m.group(1), "TopicArn": f["TopicArn"][0],
            "Subject": (f.get("Subject") or [None])[0], "Message": f["Message"][0], "Timestamp": stamp,
            "MessageAttributes": attrs}
    return sns_lambda_event(body, subscription_arn)


class VpnIds:
    def __init__(self, start: int) -> None:
        self.n = start

    def next(self) -> str:
        self.n += 1
        return f"vpn-0c{self.n:015x}"


# ================================================================ a function process

class QueuedRuntimeApi(RuntimeApi):
    """A Runtime API whose event can be queued before the process exists (a cold start
    begins with the event waiting), noting when the process first asked for one."""

    first_poll_at: float | None = None

    def _next(self, h: Handler) -> None:
        if self.first_poll_at is None:
            self.first_poll_at = time.time()
        return super()._next(h)

    def enqueue(self, payload: Any) -> Invocation:
        inv = Invocation(payload, self.timeout_s, self.function_arn)
        with self.cond:
            self.pending.append(inv)
            self.history.append(inv)
            self.cond.notify_all()
        return inv

    def wait(self, inv: Invocation, alive: Callable[[], bool]) -> None:
        limit = time.monotonic() + inv.timeout_s + 2
        while not inv.done.wait(0.05):
            if time.monotonic() > limit:
                self._finish(inv, False, {"errorType": "Sandbox.Timedout"})
            elif not alive():
                self._finish(inv, False, {"errorType": "Runtime.ExitError"})


class Fn:
    """One function process and its Runtime API."""

    def __init__(self, name: str, binary: Path, env: dict[str, str], log: Path):
        self.name, self.binary, self.log = name, binary, log
        self.api = QueuedRuntimeApi(name, REGION, ACCOUNT, timeout_s=RUN_TIMEOUT_S).start()
        self.env = {**env, **self.api.env()}
        self.proc: subprocess.Popen | None = None
        self.spawned: float | None = None

    def spawn(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.spawned = time.time()
            self.proc = subprocess.Popen([str(self.binary)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def wait_ready(self, timeout: float = 30) -> None:
        if not self.api.wait_ready(timeout, alive=self.alive):
            raise BenchError(f"{self.name} did not reach the Runtime API (exit {self.proc and self.proc.poll()}, "
                             f"init error {self.api.init_error}); see {self.log}")

    def on_cpu_ms(self) -> float | None:
        return run.on_cpu_ms(self.proc.pid) if self.proc else None

    def finish(self, inv: Invocation) -> None:
        self.api.wait(inv, self.alive)
        if not inv.ok:
            raise BenchError(f"{self.name} failed: {json.dumps(inv.result)[:400]}; see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc:
            self.proc.wait(timeout=10)
        self.api.stop()


# ================================================================ the local world

class ProxyProcess:
    """bench/latency_proxy.py in a process of its own (its sleeps and forwarding never
    wait on this process's interpreter), logging every request to a JSON-lines file."""

    def __init__(self, procs: Processes, profile: str, listens: list[str], out: Path, hook_url: str):
        self.log_path = out / f"proxy-{profile}.jsonl"
        self.log_path.write_text("")
        self.offset = 0
        console = out / f"proxy-{profile}.log"
        argv = [sys.executable, str(BENCH / "latency_proxy.py"), "--profile", profile, "--log", str(self.log_path),
                "--on-publish", hook_url]
        for spec in listens:
            argv += ["--listen", spec]
        self.procs = procs
        self.proc = procs.start(f"latency-proxy-{profile}", argv, dict(os.environ), console)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"latency proxy exited ({self.proc.returncode}); see {console}")
            m = re.search(r"^READY (\{.*\})$", console.read_text(errors="replace"), re.M)
            if m:
                self.urls: dict[str, str] = json.loads(m.group(1))
                return
            time.sleep(0.05)
        raise BenchError(f"latency proxy did not start; see {console}")

    def new_calls(self) -> list[dict]:
        with open(self.log_path) as f:
            f.seek(self.offset)
            data = f.read()
        done = data.rfind("\n") + 1
        self.offset += len(data[:done].encode())
        return [json.loads(line) for line in data[:done].splitlines() if line.strip()]

    def stop(self) -> None:
        self.procs.stop(self.proc)


class World:
    """moto_server, the emulator and the local Slack (as in `make demo`), the state
    table, topic and Slack secret, and the hook the proxy reports Publishes to."""

    def __init__(self, out: Path):
        self.out = out
        self.procs = Processes()
        self.published: queue.Queue[dict] = queue.Queue()

    def start(self) -> "World":
        nodelay.install()
        self.moto = _moto(self.procs, self.out)
        self.emulator = Emulator().start()
        self.slack = SlackSink(forward_env={}).start()
        self.hook = Server(self._hook).start()
        ddb, sns, sm = (self.moto.client(s) for s in ("dynamodb", "sns", "secretsmanager"))
        self.table = "incident-pipeline-tts-state"
        ddb.create_table(TableName=self.table, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        ddb.update_time_to_live(TableName=self.table,
                                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
        self.topic = sns.create_topic(Name="incident-pipeline-tts-notifications")["TopicArn"]
        self.subscription = f"{self.topic}:00000000-0000-4000-8000-000000000018"
        secret = {"destinations": {"ops": {"type": "bot", "token": self.slack.token, "channel": CHANNEL}},
                  "routing": {"rules": [{"name": "everything-to-ops", "destinations": ["ops"]}], "default": ["ops"]}}
        self.secret_arn = sm.create_secret(Name="incident-pipeline-tts-slack", SecretString=json.dumps(secret))["ARN"]
        self.ddb = ddb
        runner = RunbookRunner(self.emulator, {})
        self.scenario = {
            "documents": [{"name": RUNBOOK, "parameters": runner.parameter_names(), "required": runner.required(),
                           "types": runner.types(), "patterns": runner.patterns()}],
            # As template.yaml's plan, without a dedupe string (every run is a new incident).
            "response_plans": [{"arn": RESPONSE_PLAN, "title": "VPN connection is DOWN", "impact": 3,
                                "summary": "The VPN connection to the remote site is not working.",
                                "automation": {"document": RUNBOOK, "parameters": {
                                    "AutomationAssumeRole": [AUTOMATION_ROLE], "LookbackMinutes": ["60"]},
                                    "dynamic": {"IncidentRecordArn": "INCIDENT_RECORD_ARN",
                                                "InvolvedResources": "INVOLVED_RESOURCES"}}}]}
        self.emulator.apply_scenario(self.scenario)
        return self

    def clean(self) -> None:
        """Between runs (outside the measured window): the run's state items and backend
        incidents go. moto copies the whole table on every TransactWriteItems (its
        rollback copy), so a table that grew run after run made alarm-to-incident's
        transaction cost 90 ms after a hundred runs; DynamoDB's does not depend on the
        table's size. The channel's pacing item stays, as in production."""
        keys = []
        for page in self.ddb.get_paginator("scan").paginate(TableName=self.table, ProjectionExpression="pk"):
            keys += [i["pk"]["S"] for i in page["Items"] if not i["pk"]["S"].startswith("pace#")]
        for pk in keys:
            self.ddb.delete_item(TableName=self.table, Key={"pk": {"S": pk}})
        self.emulator.reset()
        self.emulator.apply_scenario(self.scenario)

    def _hook(self, h: Handler) -> None:
        try:
            self.published.put({**json.loads(h.body), "hook_at": time.time()})
        except ValueError:
            pass
        h.send(204)

    def listens(self) -> list[str]:
        moto, emu, slack = self.moto.url, self.emulator.url, self.slack.url
        return [f"{A2I}/dynamodb:dynamodb={moto}", f"{A2I}/sns:sns={moto}", f"{A2I}/ssm:ssm={emu}",
                f"{A2I}/ssm-incidents:ssm-incidents={emu}", f"{A2I}/default={moto}",
                f"{NF}/dynamodb:dynamodb={moto}", f"{NF}/secretsmanager:secretsmanager={moto}",
                f"{NF}/slack:slack={slack}", f"{NF}/default={moto}"]

    def env(self, proxy: ProxyProcess, backend: str) -> dict[str, dict[str, str]]:
        u = proxy.urls
        common = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
                  "LANG": "C.UTF-8", "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                  "AWS_SESSION_TOKEN": "local", "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_LAMBDA_LOG_LEVEL": "INFO",
                  **endpoint_env(self.emulator.url)}
        a2i = {**common, "AWS_ENDPOINT_URL": u[f"{A2I}/default"], "AWS_ENDPOINT_URL_DYNAMODB": u[f"{A2I}/dynamodb"],
               "AWS_ENDPOINT_URL_SNS": u[f"{A2I}/sns"], "AWS_ENDPOINT_URL_SSM": u[f"{A2I}/ssm"],
               "AWS_ENDPOINT_URL_SSM_INCIDENTS": u[f"{A2I}/ssm-incidents"],
               "INCIDENT_BACKEND": backend, "NOTIFICATION_TOPIC_ARN": self.topic, "STATE_TABLE_NAME": self.table,
               "RUNBOOK_DOCUMENT_NAME": RUNBOOK, "AUTOMATION_ROLE_ARN": AUTOMATION_ROLE,
               **({"RESPONSE_PLAN_ARN": RESPONSE_PLAN} if backend == "IncidentManager" else {})}
        nf = {**common, "AWS_ENDPOINT_URL": u[f"{NF}/default"], "AWS_ENDPOINT_URL_DYNAMODB": u[f"{NF}/dynamodb"],
              "AWS_ENDPOINT_URL_SECRETS_MANAGER": u[f"{NF}/secretsmanager"], "SLACK_SECRET_ARN": self.secret_arn,
              "STATE_TABLE_NAME": self.table, "SLACK_API_URL": u[f"{NF}/slack"] + "/api",
              "SLACK_CHANNEL_INTERVAL_MS": "1"}
        return {A2I: a2i, NF: nf}

    def stop(self) -> None:
        for part in ("hook", "slack", "emulator"):
            p = getattr(self, part, None)
            if p is not None:
                p.stop()
        self.procs.stop_all()


def _moto(procs: Processes, out: Path) -> Moto:
    """moto_server under bench/nodelay.py (TCP_NODELAY, no full GC pauses)."""

    class NoDelay(Processes):
        def start(self, name, argv, env, log_path):  # noqa: ANN001
            if name == "moto_server":
                argv = [argv[0], str(BENCH / "nodelay.py"), "moto.server", *argv[3:]]
                env = {**env, "BENCH_NO_FULL_GC": "1"}
            return procs.start(name, argv, env, log_path)

    return Moto(NoDelay(), out / "moto_server.log").start()


# ================================================================ runs

class Runner:
    def __init__(self, world: World, proxy: ProxyProcess, profile: latency_proxy.Profile, backend: str,
                 bins: Path, out: Path, ids: VpnIds):
        self.world, self.proxy, self.profile, self.backend = world, proxy, profile, backend
        self.bins, self.out, self.ids = bins, out, ids
        self.env = world.env(proxy, backend)

    def fn(self, name: str, mode: str) -> Fn:
        return Fn(name, self.bins / name, self.env[name], self.out / "logs" / f"{name}-{self.backend}-{mode}.log")

    def _drain(self) -> None:
        while True:
            try:
                self.world.published.get_nowait()
            except queue.Empty:
                return

    @staticmethod
    def _failed(fn: Fn, inv: Invocation) -> None:
        if inv.done.is_set() and not inv.ok:
            raise BenchError(f"{fn.name} failed: {json.dumps(inv.result)[:400]}; see {fn.log}")
        if not fn.alive():
            raise BenchError(f"{fn.name} exited ({fn.proc and fn.proc.poll()}); see {fn.log}")

    def _publish_of(self, vpn: str, a2i: Fn, inv: Invocation) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                p = self.world.published.get(timeout=0.1)
            except queue.Empty:
                self._failed(a2i, inv)
                continue
            if vpn in p["form"] and p["function"] == A2I:
                return p
        raise BenchError(f"no SNS Publish from alarm-to-incident for {vpn}; see {a2i.log}")

    def _first_message(self, vpn: str, t0: float, nf: Fn, inv: Invocation) -> dict:
        def found() -> dict | bool:
            for m in self.world.slack.messages:
                if m["posted_at"] >= t0 and vpn in json.dumps([m["text"], m["blocks"]]):
                    return m
            return inv.done.is_set() or not nf.alive()  # nothing will come: stop waiting
        m = self.world.slack.wait_for(found, RUN_TIMEOUT_S)
        if not isinstance(m, dict):
            self._failed(nf, inv)
            raise BenchError(f"no Slack message for {vpn} (notify-fanout answered "
                             f"{json.dumps(inv.result)[:300]}); see {nf.log}")
        return m

    def one(self, a2i: Fn, nf: Fn, cold: bool) -> dict:
        """One alarm through both functions; spawns them first when `cold`."""
        vpn = self.ids.next()
        self._drain()
        cpu0 = {A2I: a2i.on_cpu_ms() or 0.0, NF: nf.on_cpu_ms() or 0.0}  # warm: what earlier runs used
        event = alarm_event(vpn, time.time() - 5)
        inv_a = a2i.api.enqueue(event)
        t0 = time.time()
        if cold:
            a2i.spawn()
            t0 = a2i.spawned or t0
        pub = self._publish_of(vpn, a2i, inv_a)
        # SNS hands the message to the subscriber sns_delivery_ms after the Publish
        # request left the function (after its connection setup), never before it answered.
        due = max(pub["t_recv"] + (pub.get("handshake_ms", 0) + self.profile.sns_delivery_ms) / 1000, pub["t_done"])
        time.sleep(max(0.0, due - time.time()))
        inv_n = nf.api.enqueue(sns_event_from_publish(pub["form"], pub["response"], pub["t_done"],
                                                      self.world.subscription))
        handover = time.time()
        if cold:
            nf.spawn()
        msg = self._first_message(vpn, t0, nf, inv_n)
        a2i.finish(inv_a)
        nf.finish(inv_n)
        # Each function's time on a CPU in this run (cold: with its init), whole invocation.
        cpu = {name: (f.on_cpu_ms() or 0.0) - cpu0[name] for name, f in ((A2I, a2i), (NF, nf))}
        calls = self._calls_until(msg["posted_at"])
        self.world.clean()
        return {"t0": t0, "cold": cold, "vpn": vpn,
                "a2i": {"spawned": a2i.spawned if cold else None, "ready": a2i.api.first_poll_at if cold else None,
                        "started": inv_a.started_at, "ended": inv_a.ended_at},
                "publish": {"t_recv": pub["t_recv"], "t_done": pub["t_done"], "hook_at": pub["hook_at"]},
                "handover": handover, "due": due,
                "nf": {"spawned": nf.spawned if cold else None, "ready": nf.api.first_poll_at if cold else None,
                       "started": inv_n.started_at, "ended": inv_n.ended_at},
                "slack_at": msg["posted_at"], "cpu_ms": cpu, "calls": calls}

    def _calls_until(self, slack_at: float) -> list[dict]:
        """The proxy's log of this run, once it holds the Slack call (the proxy logs a
        request after answering it)."""
        calls: list[dict] = []
        deadline = time.monotonic() + 5
        while True:
            calls += self.proxy.new_calls()
            if any(c["service"] == "slack" and c["t_recv"] <= slack_at for c in calls) \
                    or time.monotonic() > deadline:
                return calls
            time.sleep(0.02)

    def cold(self, runs: int) -> list[dict]:
        out = []
        for i in range(runs + 1):
            a2i, nf = self.fn(A2I, "cold"), self.fn(NF, "cold")
            try:
                run = self.one(a2i, nf, cold=True)
            finally:
                a2i.stop()
                nf.stop()
            if i > 0:  # the first run warms the page cache and is not counted
                out.append(run)
        return out

    def warm(self, events: int) -> list[dict]:
        a2i, nf = self.fn(A2I, "warm"), self.fn(NF, "warm")
        out = []
        try:
            a2i.spawn()
            nf.spawn()
            a2i.wait_ready()
            nf.wait_ready()
            a2i.spawned = nf.spawned = None
            for i in range(events + 1):
                run = self.one(a2i, nf, cold=False)
                if i > 0:  # the first opens the connections and fills the secret cache
                    out.append(run)
        finally:
            a2i.stop()
            nf.stop()
        return out


# ================================================================ the report

def summarise(runs: list[dict], profile: latency_proxy.Profile) -> dict:
    agg = critical_path.aggregate([critical_path.analyse(r, profile) for r in runs])
    agg["totals_ms"] = [round((r["slack_at"] - r["t0"]) * 1000, 2) for r in runs]
    return agg


def profile_doc(profile: latency_proxy.Profile) -> dict:
    return {"name": profile.name, "mode": profile.mode, "sns_delivery_ms": profile.sns_delivery_ms,
            "description": profile.description,
            "services": {k: {"latency_ms": s.latency_ms, "handshake_ms": s.handshake_ms, "ops": s.ops,
                             "request_share": s.request_share} for k, s in profile.services.items()}}


def summary_rows(tts: dict) -> list[str]:
    L = ["| profile | backend | mode | runs | p50 (ms) | p95 (ms) | min | max | lower bound (ms) | p50 / bound |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for pname, by_backend in tts["profiles"].items():
        for backend, by_mode in by_backend.items():
            for mode, agg in by_mode.items():
                ratio = f"{agg['ratio']:.2f}" if agg.get("ratio") else "n/a"
                target = ""
                if mode == "cold" and agg.get("ratio") and pname == tts.get("default_profile"):
                    target = " ✅" if agg["ratio"] <= 1.3 else " ❌"
                L.append(f"| {pname} | {backend} | {mode} | {agg['runs']} | {critical_path.fmt(agg['p50_ms'])} | "
                         f"{critical_path.fmt(agg['p95_ms'])} | {critical_path.fmt(agg['min_ms'])} | "
                         f"{critical_path.fmt(agg['max_ms'])} | {critical_path.fmt(agg['lower_bound_ms'])} | "
                         f"{ratio}{target} |")
    return L


def render_section(tts: dict) -> list[str]:
    """The *Time to Slack* section of bench/RESULTS.md."""
    m = tts["machine"]
    L = ["## Time to Slack (issue 18)", ""]
    L.append(f"`python3 bench/time_to_slack.py` (also in `make bench`), {m['date']}, commit `{m['commit']}`, load "
             f"average {m['load']} at the end. From the alarm handed to alarm-to-incident to the first message "
             "recorded by the local Slack, through the release binaries; the local endpoints behind the latency "
             "proxy (`bench/latency_proxy.py`) with the profile named in each row (`bench/profiles/<name>.json`: "
             "per-service latency and a connection-setup cost on each new connection, figures and sources in the "
             "file). **SNS to Lambda delivery is modelled, not measured**: notify-fanout is handed the notification "
             "the profile's `sns_delivery_ms` after the Publish request left alarm-to-incident (73 ms in the AWS "
             "profiles: the published p50 of SNS standard topics to Lambda; p90 125 ms, p99 225 ms); it is the "
             "*SNS delivery* segment below and is in both the times and the lower bound. Not modelled: "
             "CloudWatch's own delay from the state change to the alarm action, and Lambda's sandbox set-up "
             "before a cold init.")
    L.append("")
    L.append("Lower bound = the sum of the calls that must be sequential, at the profile's cost (with a "
             "connection setup for each service's first such call when cold), plus the SNS delivery; issue 18's "
             "target is cold time to Slack with the default profile at most 1.3 times it (marked).")
    L.append("")
    L.extend(summary_rows(tts))
    L.append("")
    L.append("### Critical path")
    L.append("")
    L.append("Per function, the calls between its start and the message, from the proxy's request log, medians "
             "over the runs. *takes* = the request as the proxy saw it; *adds* = the part no earlier call "
             "covered (so concurrent calls count once); *own time before* = the function's own time since the "
             "previous call (CPU, runtime, SDK); *modelled* = the profile's cost of the call (latency, plus the "
             "connection setup on a new connection); *local server* = moto's / the emulator's / the local "
             "Slack's own time, inside *takes* (the proxy pads the call to the modelled cost, so it only shows "
             "when it exceeds it). Role: `required` = must be sequential; `concurrent` = needs no earlier call's "
             "result, could run alongside a required one; `merge` = could be folded into another call; "
             "`off-path` = does not gate the message (`bench/critical_path.py` RULES).")
    L.append("")
    default = tts.get("default_profile")
    for pname, by_backend in tts["profiles"].items():
        for backend, by_mode in by_backend.items():
            for mode, agg in by_mode.items():
                if pname != default and mode == "warm":
                    continue
                L.extend(critical_path.render(agg, f"{backend}, {mode}, profile {pname}"))
    return L


def print_report(tts: dict) -> None:
    print()
    print("\n".join(summary_rows(tts)))
    default = tts.get("default_profile")
    for pname, by_backend in tts["profiles"].items():
        if pname != default:
            continue
        for backend, by_mode in by_backend.items():
            agg = by_mode.get("cold")
            if agg:
                print()
                print("\n".join(critical_path.render(agg, f"{backend}, cold, profile {pname}")))


# ================================================================ main

def build(bins_target: Path) -> None:
    cmd = ["cargo", "build", "--release", "--locked", "-p", A2I, "-p", NF]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "CARGO_TARGET_DIR": str(bins_target)})


def measure(profiles: list[str], backends: list[str], cold_runs: int, warm_events: int, bins: Path,
            out: Path) -> dict:
    """Runs everything; returns the `time_to_slack` entry of bench/results.json."""
    for name in (A2I, NF):
        if not (bins / name).exists():
            raise BenchError(f"{bins / name} is missing (build it, or pass --bin-dir)")
    try:
        loaded = {p: latency_proxy.load_profile(p) for p in profiles}
    except latency_proxy.ProfileError as e:
        raise BenchError(str(e)) from None
    world = World(out)
    result: dict = {"profiles": {}, "default_profile": profiles[0],
                    "args": {"cold_runs": cold_runs, "warm_events": warm_events, "bins": str(bins)},
                    "profile_docs": {p: profile_doc(v) for p, v in loaded.items()}}
    ids = VpnIds(int(time.time()) % 0x100000 << 20)
    try:
        world.start()
        nodelay.no_full_collections()
        # The Runtime APIs, the emulator, the local Slack and the hook share this
        # interpreter: let a thread that wakes (a hand-over due) run within 0.5 ms.
        sys.setswitchinterval(0.0005)
        for pname, profile in loaded.items():
            proxy = ProxyProcess(world.procs, pname, world.listens(), out, world.hook.url + "/published")
            try:
                for backend in backends:
                    r = Runner(world, proxy, profile, backend, bins, out, ids)
                    res = result["profiles"].setdefault(pname, {}).setdefault(backend, {})
                    for mode, n in (("cold", cold_runs), ("warm", warm_events)):
                        if n <= 0:
                            continue
                        print(f"time to Slack: {pname}, {backend}, {mode}, {n} runs", flush=True)
                        runs = r.cold(n) if mode == "cold" else r.warm(n)
                        agg = summarise(runs, profile)
                        res[mode] = agg
                        ratio = f", p50 / lower bound {agg['ratio']:.2f}" if agg["ratio"] else ""
                        print(f"  p50 {agg['p50_ms']:.1f} ms, p95 {agg['p95_ms']:.1f} ms, lower bound "
                              f"{agg['lower_bound_ms']:.1f} ms{ratio}", flush=True)
            finally:
                proxy.stop()
    finally:
        world.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="+", default=list(DEFAULT_PROFILES),
                    help="latency profiles (bench/profiles/<name>.json); the first is the one the target is checked on")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--cold-runs", type=int, default=20)
    ap.add_argument("--warm-events", type=int, default=100)
    ap.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    ap.add_argument("--bin-dir", type=Path, help="function binaries (default $CARGO_TARGET_DIR/release)")
    ap.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and results.json alone")
    args = ap.parse_args(argv)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    bins = args.bin_dir or target / "release"
    if not args.no_build and not args.bin_dir:
        build(target)
    out = Path(tempfile.mkdtemp(prefix="incident-tts-"))
    try:
        tts = measure(args.profiles, args.backends, args.cold_runs, args.warm_events, bins, out)
    except BenchError as e:
        print(f"time-to-Slack bench failed: {e}\nlogs in {out}", file=sys.stderr)
        return 1
    tts["machine"] = run.machine()
    print_report(tts)
    if not args.no_write:
        try:
            run.update_results(args.out, "time_to_slack", tts)
        except BenchError as e:
            print(f"not written: {e}", file=sys.stderr)
            return 1
        print(f"wrote {args.out} (logs of the run in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
