#!/usr/bin/env python3
"""The whole incident story on one machine, no AWS account (issue 8).

Starts moto_server (SNS, SQS, DynamoDB, Secrets Manager), the project's AWS emulator
(SSM OpsCenter/Automation, Incident Manager, EC2 VPN, Logs Insights, TunnelState
metrics: emulator.py), a local Slack (slack_sink.py) and one Lambda Runtime API plus
the real function binary per function (runtime_api.py), then plays the story for
each backend:

  a VPN connection with two tunnels exists; tunnel 1 goes DOWN with IKE phase 1
  authentication failures in its logs; the alarm fires (delivered twice, in two
  envelopes); one incident opens; Slack gets one top-level message; the runbook runs
  (as SSM Automation would) and the diagnosis lands in the thread and on the
  incident; tunnel 2 goes down too and the incident escalates; both tunnels come
  back, the alarms return to OK, the incident resolves, the top-level message shows
  it resolved with the duration, and a summary closes the thread.

It prints a transcript per step and the Slack conversation, leaves every record in
`.demo/<backend>/`, and stops every process it started on exit, Ctrl-C or failure.

    python3 local/story.py [--backend OpsCenter|IncidentManager|both] [--pace SECONDS]

The function binaries come from `$CARGO_TARGET_DIR/debug/` (default `target/debug/`),
built by `cargo build --workspace --all-targets`, the one feature set the project
uses everywhere; with `STORY_ARCH=arm64` they are the arm64 bootstraps `sam build`
wrote to `.aws-sam/build/`, run under qemu-user (arch.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arch  # noqa: E402
from dynamo_front import DynamoFront  # noqa: E402
from emulator import Emulator, endpoint_env  # noqa: E402
from runtime_api import AsyncInvoker, RuntimeApi  # noqa: E402
from slack_sink import SlackSink, readable  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT, REGION = "123456789012", "eu-west-1"
STACK = "incident-pipeline-local"
VPN = "vpn-0f1e2d3c4b5a69788"          # the VPN of the sample events in events/
TUNNEL_1, TUNNEL_2 = "203.0.113.10", "203.0.113.20"
FUNCTIONS = ("alarm-to-incident", "notify-fanout", "vpn-troubleshoot")
BACKENDS = ("OpsCenter", "IncidentManager")
RUNBOOK = f"{STACK}-DiagnosisRunbook"
AUTOMATION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/{STACK}-automation"
RESPONSE_PLAN = f"arn:aws:ssm-incidents::{ACCOUNT}:response-plan/{STACK}-vpn"
ANY_TUNNEL_ALARM = f"vpn-tunnel-down-{VPN}"
BOTH_TUNNELS_ALARM = f"vpn-both-tunnels-down-{VPN}"
PSK_FAILURE = "AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key"
# Lambda retries an asynchronous invocation (alarm action, SNS) twice after an error.
ASYNC_RETRIES = 2
# Rounds of "run pending runbooks, deliver queued notifications" after each step.
MAX_PUMP_ROUNDS = 20


class StoryError(Exception):
    """The story could not go on (a process died, an invocation failed for good)."""


def log(line: str = "", out: list[str] | None = None) -> None:
    print(line, flush=True)
    if out is not None:
        out.append(line)


def iso_alarm(ts: float) -> str:
    """CloudWatch's alarm timestamp format: `2026-11-25T10:01:00.490+0000`."""
    d = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+0000"


def short(v: Any, n: int = 160) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    return s if len(s) <= n else s[:n - 3] + "..."


# ================================================================ processes

class Processes:
    """Every child process, each in its own process group, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")
        try:
            p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, cwd=ROOT)
        finally:
            out.close()
        self.procs.append((name, p))
        return p

    def stop(self, p: subprocess.Popen, grace: float = 3.0) -> None:
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=5)

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            try:
                self.stop(p)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.procs.clear()


class Moto:
    """moto_server on an ephemeral loopback port."""

    def __init__(self, procs: Processes, log_path: Path):
        self.procs, self.log_path = procs, log_path
        self.url = ""

    def start(self, timeout: float = 60.0) -> "Moto":
        if self.log_path.exists():
            self.log_path.unlink()
        p = self.procs.start("moto_server", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                             dict(os.environ), self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise StoryError(f"moto_server exited ({p.returncode}); see {self.log_path}")
            m = re.search(r"Running on http://127\.0\.0\.1:(\d+)", self.log_path.read_text(errors="replace"))
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}"
                return self
            time.sleep(0.1)
        raise StoryError(f"moto_server did not start within {timeout:.0f} s; see {self.log_path}")

    def client(self, service: str):
        import boto3
        import botocore.config
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, aws_access_key_id="local",
                            aws_secret_access_key="local",
                            config=botocore.config.Config(retries={"total_max_attempts": 2}))


@dataclass
class Invocation:
    function: str
    payload: Any
    ok: bool
    result: Any
    duration_ms: float
    attempt: int
    at: float


class Function:
    """One function: its Runtime API and its unmodified binary, run as `instances`
    processes (execution environments) that each take the next queued invocation."""

    def __init__(self, name: str, binary: Path, env: dict[str, str], procs: Processes, log_path: Path,
                 timeout_s: float, instances: int = 1):
        self.name, self.binary, self.procs, self.log_path = name, binary, procs, log_path
        self.instances = instances
        self.api = RuntimeApi(name, REGION, ACCOUNT, timeout_s=timeout_s).start()
        self.env = {**env, **self.api.env()}
        self.procs_of: list[subprocess.Popen] = []
        self.invocations: list[Invocation] = []
        self.cold_start_ms: float | None = None
        self.async_invoker: AsyncInvoker | None = None

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.procs_of[0] if self.procs_of else None

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs_of)

    def instance_log(self, i: int) -> Path:
        """Instance 1 logs to `<name>.log`, the others to `<name>.<n>.log` (a log stream each, as in Lambda)."""
        return self.log_path if i == 0 else self.log_path.with_name(f"{self.name}.{i + 1}.log")

    def start(self, timeout: float = 20.0) -> None:
        started = time.monotonic()
        try:
            argv = arch.command(self.binary)
        except arch.ArchError as e:
            raise StoryError(str(e)) from None
        for i in range(self.instances):
            self.procs_of.append(self.procs.start(self.name, argv, self.env, self.instance_log(i)))
        if not self.api.wait_ready(timeout * arch.time_scale(), alive=self.alive, instances=self.instances):
            if self.api.init_error:
                raise StoryError(f"{self.name} failed its init: {short(self.api.init_error, 400)}; see {self.log_path}")
            code = self.proc.poll() if self.proc else None
            if code == 0:
                raise PlaceholderBinary(f"{self.name} exited 0 without asking the Runtime API for an event "
                                        f"({self.binary} is not a Lambda function yet)")
            raise StoryError(f"{self.name} did not reach the Runtime API (exit code {code}); see {self.log_path}")
        self.cold_start_ms = (time.monotonic() - started) * 1000

    def start_async(self, backoff_factor: float, on_failure) -> AsyncInvoker:
        """Lambda's asynchronous invocation (queue, retries, on-failure destination) over
        this function's instances, one event at a time per instance."""
        self.async_invoker = AsyncInvoker(self.api, concurrency=self.instances, backoff_factor=backoff_factor,
                                          on_failure=on_failure, alive=self.alive).start()
        return self.async_invoker

    def invoke(self, payload: Any, retries: int = 0, timeout_s: float | None = None) -> Invocation:
        """Invokes like Lambda: synchronous when `retries` is 0, else async with retries."""
        inv: Invocation | None = None
        for attempt in range(1 + retries):
            if not self.alive():
                raise StoryError(f"{self.name} is not running (exit code {self.proc.poll() if self.proc else None});"
                                 f" see {self.log_path}")
            t0 = time.time()
            ok, result = self.api.invoke(payload, timeout_s=timeout_s, alive=self.alive)
            inv = Invocation(self.name, payload, ok, result, (time.time() - t0) * 1000, attempt + 1, t0)
            self.invocations.append(inv)
            if ok:
                break
        assert inv is not None
        return inv

    def stop(self) -> None:
        if self.async_invoker:
            self.async_invoker.stop()
        for p in self.procs_of:
            self.procs.stop(p)
        self.api.stop()


class PlaceholderBinary(StoryError):
    """A function binary that is not a Lambda function yet (before its issue merged)."""


def backends_under_test() -> tuple[str, ...]:
    """The backends the end-to-end tests play: `STORY_BACKENDS` (comma separated), else both."""
    chosen = tuple(b.strip() for b in os.environ.get("STORY_BACKENDS", "").split(",") if b.strip())
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        raise StoryError(f"STORY_BACKENDS names {unknown}; the backends are {', '.join(BACKENDS)}")
    return chosen or BACKENDS


def binary_path(name: str) -> Path:
    """The function's executable in the build arch.py chose: `$STORY_FUNCTIONS_DIR/<name>`
    when set (the harness test's stand-ins), else the debug build of `cargo build
    --workspace --all-targets`, or with `STORY_ARCH=arm64` the bootstrap of `sam build`."""
    try:
        return arch.binary_path(name)
    except arch.ArchError as e:
        raise StoryError(str(e)) from None


# ================================================================ events

def events_dir() -> Path:
    return Path(os.environ.get("STORY_EVENTS_DIR") or ROOT / "events")


def load_event(name: str) -> dict:
    path = events_dir() / name
    if not path.exists():
        raise StoryError(f"sample event {path} is missing (events/ holds the real-shaped alarm events)")
    return json.loads(path.read_text())


def direct_alarm(state: str, previous: str, at: float, prev_at: float) -> dict:
    """The any-tunnel alarm as a direct Lambda alarm action (events/direct-vpn-tunnel-down-*.json)."""
    ev = load_event("direct-vpn-tunnel-down-alarm.json" if state == "ALARM" else "direct-vpn-tunnel-down-ok.json")
    ev["time"] = iso_alarm(at)
    ev["alarmData"]["state"]["value"] = state
    ev["alarmData"]["state"]["timestamp"] = iso_alarm(at)
    ev["alarmData"]["previousState"]["value"] = previous
    ev["alarmData"]["previousState"]["timestamp"] = iso_alarm(prev_at)
    _retime_reason(ev["alarmData"]["state"], at)
    return ev


def sns_alarm(direct: dict) -> dict:
    """The same transition as `direct`, delivered through SNS (events/sns-vpn-tunnel-down-alarm.json)."""
    ev = load_event("sns-vpn-tunnel-down-alarm.json")
    msg = json.loads(ev["Records"][0]["Sns"]["Message"])
    data = direct["alarmData"]
    msg["NewStateValue"] = data["state"]["value"]
    msg["OldStateValue"] = data["previousState"]["value"]
    msg["StateChangeTime"] = data["state"]["timestamp"]
    msg["NewStateReason"] = data["state"]["reason"]
    ev["Records"][0]["Sns"]["Message"] = json.dumps(msg)
    ev["Records"][0]["Sns"]["MessageId"] = str(uuid.uuid4())
    ev["Records"][0]["Sns"]["Timestamp"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    ev["Records"][0]["Sns"]["Subject"] = f'{data["state"]["value"]}: "{msg["AlarmName"]}" in EU (Ireland)'
    return ev


def eventbridge_both_tunnels(state: str, previous: str, at: float, prev_at: float) -> dict:
    """The both-tunnels alarm through EventBridge (events/eventbridge-vpn-both-tunnels-down-alarm.json)."""
    ev = load_event("eventbridge-vpn-both-tunnels-down-alarm.json")
    ev["id"] = str(uuid.uuid4())
    ev["time"] = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ev["detail"]["state"]["value"] = state
    ev["detail"]["state"]["timestamp"] = iso_alarm(at)
    ev["detail"]["previousState"]["value"] = previous
    ev["detail"]["previousState"]["timestamp"] = iso_alarm(prev_at)
    if state == "OK":
        ev["detail"]["state"]["reason"] = ev["detail"]["state"]["reason"].replace("was less than", "was not less than") \
            .replace("[0.0", "[1.0").replace("OK -> ALARM", "ALARM -> OK")
    _retime_reason(ev["detail"]["state"], at, value=1.0 if state == "OK" else 0.0)
    return ev


def _retime_reason(state: dict, at: float, value: float | None = None) -> None:
    try:
        data = json.loads(state.get("reasonData") or "")
    except ValueError:
        return
    data["queryDate"] = iso_alarm(at)
    data["startDate"] = iso_alarm(at - at % 60)
    if value is not None:
        data["recentDatapoints"] = [value]
        for p in data.get("evaluatedDatapoints", []):
            p["value"] = value
    for p in data.get("evaluatedDatapoints", []):
        p["timestamp"] = iso_alarm(at - at % 60)
    state["reasonData"] = json.dumps(data, separators=(",", ":"))


def tunnel_log(tunnel_ip: str, at: float, details: str, phase1: str, phase2: str) -> dict:
    """A Site-to-Site VPN tunnel log record (JSON format, DESIGN.md section 5)."""
    return {"event_timestamp": int(at * 1000), "details": details, "dpd_enabled": True, "nat_t_detected": False,
            "ike_phase1_state": phase1, "ike_phase2_state": phase2, "tunnel_ip": tunnel_ip}


def sns_lambda_event(sqs_body: dict, subscription_arn: str) -> dict:
    """The SNS-to-Lambda event for one notification (SNS's JSON envelope as carried by SQS)."""
    return {"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": subscription_arn,
        "Sns": {"Type": sqs_body.get("Type", "Notification"), "MessageId": sqs_body["MessageId"],
                "TopicArn": sqs_body["TopicArn"], "Subject": sqs_body.get("Subject"),
                "Message": sqs_body["Message"], "Timestamp": sqs_body["Timestamp"],
                "SignatureVersion": sqs_body.get("SignatureVersion", "1"),
                "Signature": sqs_body.get("Signature", "EXAMPLE"),
                "SigningCertUrl": sqs_body.get("SigningCertURL", "https://sns.eu-west-1.amazonaws.com/local.pem"),
                "UnsubscribeUrl": sqs_body.get("UnsubscribeURL", "https://sns.eu-west-1.amazonaws.com/unsubscribe"),
                "MessageAttributes": sqs_body.get("MessageAttributes", {})}}]}


# ================================================================ the runbook, as SSM Automation runs it

class _CfnLoader:
    """Loads template.yaml with CloudFormation's short tags kept as `{"Tag": value}`."""

    @staticmethod
    def load(text: str) -> dict:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def tag(loader, suffix, node):
            if isinstance(node, yaml.ScalarNode):
                value = loader.construct_scalar(node)
            elif isinstance(node, yaml.SequenceNode):
                value = loader.construct_sequence(node, deep=True)
            else:
                value = loader.construct_mapping(node, deep=True)
            return {suffix: value}

        Loader.add_multi_constructor("!", tag)
        return yaml.load(text, Loader=Loader)


# Used only while template.yaml does not exist yet: the same two steps as the
# template's DiagnosisRunbook (BuildInput, then Diagnose invoking vpn-troubleshoot).
_BUILT_IN_SCRIPT = '''
import json
import re

VPN_ID = re.compile(r"vpn-[0-9a-f]{8,17}")

def build_input(events, context):
    vpn = (events.get("VpnConnectionId") or "").strip()
    if not vpn:
        resources = events.get("InvolvedResources") or []
        if isinstance(resources, str):
            resources = [resources]
        for resource in resources:
            found = VPN_ID.search(str(resource))
            if found:
                vpn = found.group(0)
                break
    if not vpn:
        raise ValueError("no VpnConnectionId given and none found in InvolvedResources")
    payload = {"VpnConnectionId": vpn, "LookbackMinutes": int(events.get("LookbackMinutes") or 60)}
    for key in ("IncidentRecordArn", "OpsItemId"):
        value = (events.get(key) or "").strip()
        if value:
            payload[key] = value
    return {"Payload": json.dumps(payload), "VpnConnectionId": vpn}
'''

BUILT_IN_RUNBOOK = {
    "parameters": {"VpnConnectionId": {"type": "String", "default": "", "allowedPattern": "^(vpn-[0-9a-f]{8,17})?$"},
                   "InvolvedResources": {"type": "StringList", "default": []},
                   "IncidentRecordArn": {"type": "String", "default": ""},
                   "OpsItemId": {"type": "String", "default": "", "allowedPattern": "^(oi-[0-9a-f]{12})?$"},
                   "LookbackMinutes": {"type": "Integer", "default": 60},
                   "AutomationAssumeRole": {"type": "String", "default": ""}},
    "mainSteps": [
        {"name": "BuildInput", "action": "aws:executeScript", "timeoutSeconds": 30, "onFailure": "Abort",
         "inputs": {"Runtime": "python3.11", "Handler": "build_input", "Script": _BUILT_IN_SCRIPT,
                    "InputPayload": {"VpnConnectionId": "{{ VpnConnectionId }}",
                                     "InvolvedResources": "{{ InvolvedResources }}",
                                     "IncidentRecordArn": "{{ IncidentRecordArn }}", "OpsItemId": "{{ OpsItemId }}",
                                     "LookbackMinutes": "{{ LookbackMinutes }}"}},
         "outputs": [{"Name": "Payload", "Selector": "$.Payload.Payload", "Type": "String"},
                     {"Name": "VpnConnectionId", "Selector": "$.Payload.VpnConnectionId", "Type": "String"}]},
        {"name": "Diagnose", "action": "aws:invokeLambdaFunction", "timeoutSeconds": 150, "onFailure": "Abort",
         "inputs": {"FunctionName": {"GetAtt": "VpnTroubleshootFunction.Arn"}, "InvocationType": "RequestResponse",
                    "Payload": "{{ BuildInput.Payload }}"}},
    ],
}


def load_runbook() -> tuple[dict, dict[str, str], str]:
    """(the Automation document content, function logical id -> binary, where it came from)."""
    path = ROOT / "template.yaml"
    if not path.exists():
        return BUILT_IN_RUNBOOK, {"VpnTroubleshootFunction": "vpn-troubleshoot"}, \
            "built-in copy (template.yaml not found)"
    tpl = _CfnLoader.load(path.read_text())
    resources = tpl.get("Resources", {})
    binaries = {}
    # `Fn::ForEach::...` entries (lists) are loops over other resources: not functions or documents.
    resources = {lid: res for lid, res in resources.items() if isinstance(res, dict)}
    for lid, res in resources.items():
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if res.get("Type") == "AWS::Serverless::Function" and binary:
            binaries[lid] = binary
    for lid, res in resources.items():
        props = res.get("Properties") or {}
        if res.get("Type") == "AWS::SSM::Document" and props.get("DocumentType") == "Automation":
            content = props["Content"]
            if any(s.get("action") == "aws:invokeLambdaFunction" for s in content.get("mainSteps", [])):
                return content, binaries, f"template.yaml resource {lid}"
    raise StoryError("template.yaml has no Automation document with an aws:invokeLambdaFunction step")


_REF = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def substitute(value: Any, variables: dict[str, Any]) -> Any:
    """SSM Automation's `{{ Name }}` substitution: a whole-value reference keeps its type."""
    if isinstance(value, str):
        whole = _REF.fullmatch(value.strip())
        if whole and whole.group(1) in variables:
            return variables[whole.group(1)]
        return _REF.sub(lambda m: str(variables.get(m.group(1), m.group(0))), value)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


def select(data: Any, selector: str) -> Any:
    """A `$.a.b` JSONPath selector of an Automation step output."""
    cur = data
    for part in selector.lstrip("$").strip(".").split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


class RunbookRunner:
    """Runs the diagnosis runbook's steps the way SSM Automation would: parameters with
    defaults, `aws:executeScript` (the template's own Python), `aws:invokeLambdaFunction`
    (RequestResponse, so it waits for the function and keeps its answer), step outputs
    by selector, then reports the execution status and outputs back to the emulator."""

    def __init__(self, emulator: Emulator, functions: dict[str, Function]):
        self.emulator, self.functions = emulator, functions
        self.document, self.binaries, self.source = load_runbook()

    def parameter_names(self) -> list[str]:
        return list(self.document.get("parameters", {}))

    def required(self) -> list[str]:
        return [k for k, p in self.document.get("parameters", {}).items() if "default" not in p]

    def types(self) -> dict[str, str]:
        return {k: p.get("type", "String") for k, p in self.document.get("parameters", {}).items()}

    def patterns(self) -> dict[str, str]:
        return {k: p["allowedPattern"] for k, p in self.document.get("parameters", {}).items()
                if "allowedPattern" in p}

    def run(self, execution: dict) -> dict:
        eid = execution["AutomationExecutionId"]
        variables: dict[str, Any] = {}
        for name, spec in self.document.get("parameters", {}).items():
            given = execution["Parameters"].get(name)
            if given is None:
                variables[name] = spec.get("default")
            elif spec.get("type") == "StringList":
                variables[name] = list(given)
            elif spec.get("type") == "Integer":
                variables[name] = int(given[0]) if given else spec.get("default")
            else:
                variables[name] = given[0] if given else spec.get("default", "")
        outputs: dict[str, list[str]] = {}
        steps: list[dict] = []
        status, failure, invocation = "Success", None, None
        for step in self.document.get("mainSteps", []):
            name, action = step["name"], step["action"]
            inputs = substitute(step.get("inputs", {}), variables)
            try:
                if action == "aws:executeScript":
                    namespace: dict[str, Any] = {"__name__": f"runbook_{name}"}
                    exec(compile(inputs["Script"], f"<{self.source}:{name}>", "exec"), namespace)  # noqa: S102
                    result = {"Payload": namespace[inputs["Handler"]](inputs.get("InputPayload", {}), None)}
                elif action == "aws:invokeLambdaFunction":
                    fn = self._function(inputs["FunctionName"])
                    payload = inputs.get("Payload")
                    payload = json.loads(payload) if isinstance(payload, str) else inputs.get("InputPayload", {})
                    invocation = self.functions[fn].invoke(payload, timeout_s=float(step.get("timeoutSeconds", 300)))
                    result = {"Payload": json.dumps(invocation.result), "StatusCode": 200,
                              **({} if invocation.ok else {"FunctionError": "Unhandled"})}
                    if not invocation.ok:
                        raise StoryError(f"{fn} answered an error: {short(invocation.result, 300)}")
                else:
                    raise StoryError(f"step action {action} is not run by the local story")
                for o in step.get("outputs", []):
                    v = select(result, o["Selector"])
                    variables[f"{name}.{o['Name']}"] = v
                    outputs[f"{name}.{o['Name']}"] = [v if isinstance(v, str) else json.dumps(v)]
                if action == "aws:invokeLambdaFunction":
                    variables[f"{name}.Payload"] = result["Payload"]
                    outputs[f"{name}.Payload"] = [result["Payload"]]
                steps.append({"name": name, "action": action, "status": "Success"})
            except Exception as e:  # a failing step fails the execution, as in SSM (onFailure: Abort)
                status, failure = "Failed", f"Step {name} failed: {type(e).__name__}: {e}"
                steps.append({"name": name, "action": action, "status": "Failed", "error": str(e)})
                break
        last = steps[-1] if steps else {"name": "none", "action": "none"}
        self.emulator.finish_automation(eid, status, outputs, failure,
                                        step={"name": last["name"], "action": last["action"]})
        return {"execution": eid, "status": status, "failure": failure, "steps": steps, "outputs": outputs,
                "invocation": invocation}

    def _function(self, ref: Any) -> str:
        if isinstance(ref, dict):  # !GetAtt Logical.Arn or !Ref Logical
            target = next(iter(ref.values()))
            target = target[0] if isinstance(target, list) else str(target).split(".")[0]
            if target in self.binaries:
                return self.binaries[target]
        name = str(ref).rsplit(":", 1)[-1]
        if name in self.functions:
            return name
        raise StoryError(f"the runbook invokes {ref!r}, which is not one of {sorted(self.functions)}")


# ================================================================ one backend's story

@dataclass
class Delivery:
    """One notification carried from SNS to notify-fanout, and what Slack got from it."""
    event: str
    impact: str
    message_id: str
    published_at: float
    message: Any = None            # the SNS message (Chatbot custom schema JSON, or text)
    notification: dict | None = None  # the pipeline's Notification carried in additionalContext.pipeline
    invocation: Invocation | None = None
    slack_posts: list[dict] = field(default_factory=list)
    slack_updates: list[dict] = field(default_factory=list)


class Story:
    """The alarm story: detection to resolution by the alarms alone."""

    FUNCTIONS = FUNCTIONS
    TITLE = "Incident story"

    def __init__(self, backend: str, moto: Moto, procs: Processes, out_dir: Path, pace: float):
        self.backend, self.moto, self.procs, self.pace = backend, moto, procs, pace
        self.out_dir = out_dir
        self.lines: list[str] = []
        self.emulator = Emulator().start()
        self.slack = SlackSink().start()
        # Every function reaches DynamoDB through the front (isolation and tokens as in
        # DynamoDB; faults when a test sets them), never moto directly.
        self.dynamo = DynamoFront(moto.url).start()
        self.functions: dict[str, Function] = {}
        self.instances: dict[str, int] = {}  # function -> processes (default 1)
        self.deliveries: list[Delivery] = []
        self.runbook_runs: list[dict] = []
        self.alarm_times: dict[str, float] = {}
        self.step_no = 0
        self.problems: list[str] = []  # what went wrong without stopping the story
        self.names = {k: f"{STACK}-{backend.lower()}-{k}" for k in ("state", "notifications", "notify-queue", "slack")}

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A function's log is appended to (an instance restarted within a story goes on in
        # it), so a previous run's logs in the same directory go first: the story reads
        # them back (refused-event metrics, the storm's counts) and must see this run only.
        for old in (self.out_dir / "logs").glob("*.log"):
            old.unlink()
        ddb, sns, sqs, sm = self.dynamodb(), *(self.moto.client(s) for s in ("sns", "sqs", "secretsmanager"))
        self.table = self.names["state"]
        ddb.create_table(TableName=self.table, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        ddb.update_time_to_live(TableName=self.table,
                                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
        self.topic = sns.create_topic(Name=self.names["notifications"])["TopicArn"]
        self.queue_url = sqs.create_queue(QueueName=self.names["notify-queue"])["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        # notify-fanout's SNS subscription, carried through SQS so the story delivers each
        # notification to the function itself, in order, with Lambda's retry policy.
        self.subscription = sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]
        # The stack's failed-events queue: the on-failure destination of asynchronous invocations.
        self.failed_events_url = sqs.create_queue(QueueName=f"{STACK}-{self.backend.lower()}-failed-events")[
            "QueueUrl"]
        self.oncall_webhook = self.slack.webhook_url("oncall")
        secret = {"destinations": {
            "ops": {"type": "bot", "token": self.slack.token, "channel": "C0LOCALOPS",
                    "mention": "here", "mention_min_impact": 1},
            "oncall": {"type": "webhook", "url": self.oncall_webhook}},
            # Every notification to #ops (threaded); critical ones also to #oncall (webhook).
            "routing": {"rules": [{"name": "critical-to-oncall", "min_impact": 1, "destinations": ["oncall"]},
                                  {"name": "everything-to-ops", "destinations": ["ops"]}],
                        "default": ["ops"]}}
        self.secret_arn = sm.create_secret(Name=self.names["slack"], SecretString=json.dumps(secret))["ARN"]

        self.runner = RunbookRunner(self.emulator, self.functions)
        plans = []
        if self.backend == "IncidentManager":
            # Mirrors template.yaml's IncidentResponsePlan for one watched VPN.
            plans.append({"arn": RESPONSE_PLAN, "title": "VPN connection is DOWN", "impact": 3,
                          "summary": "The VPN connection to the remote site is not working.",
                          "dedupe_string": f"VPN connection {VPN} is DOWN", "chatbot_sns": [self.topic],
                          "automation": {"document": RUNBOOK, "parameters": {
                              "AutomationAssumeRole": [AUTOMATION_ROLE], "LookbackMinutes": ["60"],
                              "VpnConnectionId": [VPN]},
                              "dynamic": {"IncidentRecordArn": "INCIDENT_RECORD_ARN",
                                          "InvolvedResources": "INVOLVED_RESOURCES"}}})
        self.emulator.apply_scenario({
            "documents": [{"name": RUNBOOK, "parameters": self.runner.parameter_names(),
                           "required": self.runner.required(), "types": self.runner.types(),
                           "patterns": self.runner.patterns()}],
            "response_plans": plans,
            "vpn_connections": [{"id": VPN, "customer_gateway_ip": "198.51.100.7", "history_minutes": 90,
                                 "routes": [], "tags": {"Name": "branch-office"},
                                 "tunnels": [{"outside_ip": TUNNEL_1}, {"outside_ip": TUNNEL_2}]}],
        })

        common = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local",
            "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": self.moto.url, **endpoint_env(self.emulator.url), **self.dynamo.endpoint_env(),
            "AWS_LAMBDA_LOG_LEVEL": os.environ.get("STORY_LOG_LEVEL", "INFO"), "RUST_BACKTRACE": "1",
        }
        env = {
            "alarm-to-incident": {"INCIDENT_BACKEND": self.backend, "NOTIFICATION_TOPIC_ARN": self.topic,
                                  "STATE_TABLE_NAME": self.table, "RUNBOOK_DOCUMENT_NAME": RUNBOOK,
                                  "AUTOMATION_ROLE_ARN": AUTOMATION_ROLE,
                                  **({"RESPONSE_PLAN_ARN": RESPONSE_PLAN} if self.backend == "IncidentManager"
                                     else {})},
            "notify-fanout": {"SLACK_SECRET_ARN": self.secret_arn, "STATE_TABLE_NAME": self.table,
                              # The Web API base of bot-token destinations (default https://slack.com/api).
                              "SLACK_API_URL": self.slack.url + "/api"},
            "vpn-troubleshoot": {"NOTIFICATION_TOPIC_ARN": self.topic, "INCIDENT_BACKEND": self.backend,
                                 "REMEDIATION_ENABLED": "false", "REMEDIATION_MIN_DOWN_MINUTES": "15",
                                 "LOOKBACK_MINUTES": "60", "STATE_TABLE_NAME": self.table},
        }
        timeouts = {"alarm-to-incident": 60.0, "notify-fanout": 60.0, "vpn-troubleshoot": 120.0}
        self.extend_setup(common, env, timeouts)
        for name in self.FUNCTIONS:
            binary = binary_path(name)
            if not binary.exists():
                raise StoryError(f"{binary} is missing: {arch.build_hint()}")
            self.functions[name] = Function(name, binary, {**common, **env[name]}, self.procs,
                                            self.out_dir / "logs" / f"{name}.log", timeouts[name],
                                            instances=self.instances.get(name, 1))
        for f in self.functions.values():
            f.start()

    def extend_setup(self, common: dict[str, str], env: dict[str, dict[str, str]],
                     timeouts: dict[str, float]) -> None:
        """More resources, functions and environment (the responders' story)."""

    def pump_more(self) -> bool:
        """More work to move along each round (the responders' story); True when something moved."""
        return False

    def close(self) -> None:
        for f in self.functions.values():
            try:
                f.stop()
            except Exception:  # keep stopping the others
                pass
        self.slack.stop()
        self.emulator.stop()
        self.dynamo.stop()

    def dynamodb(self):
        """A boto3 DynamoDB client through the front, as the functions reach it."""
        import boto3
        import botocore.config
        return boto3.client("dynamodb", endpoint_url=self.dynamo.url, region_name=REGION,
                            aws_access_key_id="local", aws_secret_access_key="local",
                            config=botocore.config.Config(retries={"total_max_attempts": 2}))

    def send_to_failed_events(self, record: dict) -> None:
        """The on-failure destination: the record goes to the failed-events queue."""
        self.moto.client("sqs").send_message(QueueUrl=self.failed_events_url, MessageBody=json.dumps(record))

    def failed_events(self) -> list[dict]:
        """The on-failure records in the failed-events queue (read, left in place)."""
        sqs, out = self.moto.client("sqs"), []
        for _ in range(100):  # bounded: 10 per receive
            got = sqs.receive_message(QueueUrl=self.failed_events_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                      VisibilityTimeout=30)
            if not got.get("Messages"):
                break
            out.extend(json.loads(m["Body"]) for m in got["Messages"])
        return out

    # ------------------------------------------------------------ transcript helpers

    def say(self, line: str = "") -> None:
        log(line, self.lines)

    def step(self, title: str) -> None:
        self.step_no += 1
        self.say()
        self.say(f"[{self.step_no}] {title}")
        self._calls_mark = len(self.emulator.calls)
        self._slack_mark = len(self.slack.events)

    def wait(self) -> None:
        if self.pace > 0:
            time.sleep(self.pace)

    def report_aws_calls(self) -> None:
        """The emulator calls since the last report (what the functions asked of AWS)."""
        calls = self.emulator.calls[self._calls_mark:]
        self._calls_mark = len(self.emulator.calls)
        if calls:
            summary = [f"{c['service']}:{c['op']}" + (f" -> {c['error']}" if "error" in c else "") for c in calls]
            self.say(f"      AWS (emulator): {', '.join(summary)}")

    def show_invocation(self, inv: Invocation, label: str = "") -> None:
        verdict = "ok" if inv.ok else "ERROR"
        retry = f" (attempt {inv.attempt})" if inv.attempt > 1 else ""
        self.say(f"    {inv.function}{label}: {verdict}{retry} in {inv.duration_ms:.0f} ms -> {short(inv.result)}")
        self.report_aws_calls()

    # ------------------------------------------------------------ moving things along

    def deliver_alarm(self, event: dict, how: str) -> Invocation:
        inv = self.functions["alarm-to-incident"].invoke(event, retries=ASYNC_RETRIES)
        self.show_invocation(inv, f" ({how})")
        if not inv.ok:
            raise StoryError(f"alarm-to-incident failed on the {how} delivery after {inv.attempt} attempts: "
                             f"{short(inv.result, 400)}")
        return inv

    def pump(self) -> None:
        """Runs the runbooks SSM would start and delivers queued notifications, until quiet."""
        sqs = self.moto.client("sqs")
        for _ in range(MAX_PUMP_ROUNDS):
            progressed = self.pump_more()
            # Notifications first: SNS reaches Slack in seconds, while the runbook takes longer.
            for _ in range(50):  # bounded drain of the notification queue
                got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                          MessageAttributeNames=["All"])
                messages = got.get("Messages", [])
                if not messages:
                    break
                for m in messages:
                    progressed = True
                    self.deliver_notification(json.loads(m["Body"]))
                    sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            for ex in self.emulator.pending_automations():
                progressed = True
                self.say(f"    runbook {ex['DocumentName']} started by {ex['_source']} "
                         f"with {short({k: v for k, v in ex['Parameters'].items()}, 200)}")
                run = self.runner.run(ex)
                self.runbook_runs.append({**run, "invocation": run["invocation"].__dict__ if run["invocation"]
                                          else None, "started_by": ex["_source"], "parameters": ex["Parameters"]})
                if run["invocation"]:
                    self.show_invocation(run["invocation"], " (runbook step Diagnose)")
                self.say(f"    runbook {run['status']}" + (f": {run['failure']}" if run["failure"] else ""))
                if run["status"] != "Success":
                    self.problems.append(f"runbook {ex['AutomationExecutionId']} failed: {run['failure']}")
            if not progressed:
                return
        raise StoryError(f"still busy after {MAX_PUMP_ROUNDS} rounds of runbooks and notifications")

    def deliver_notification(self, body: dict) -> None:
        attrs = body.get("MessageAttributes", {})
        event = attrs.get("event_type", {}).get("Value", "?")
        impact = attrs.get("impact", {}).get("Value", "?")
        published = dt.datetime.fromisoformat(body["Timestamp"].replace("Z", "+00:00")).timestamp()
        d = Delivery(event, impact, body["MessageId"], published)
        try:
            d.message = json.loads(body["Message"])
            d.notification = json.loads(d.message["metadata"]["additionalContext"]["pipeline"])
        except (ValueError, KeyError, TypeError):
            d.message = d.message if d.message is not None else body["Message"]
        mark = len(self.slack.events)
        d.invocation = self.functions["notify-fanout"].invoke(sns_lambda_event(body, self.subscription),
                                                               retries=ASYNC_RETRIES)
        for e in self.slack.events[mark:]:
            if e["kind"] == "post":
                d.slack_posts.append(e)
            elif e["kind"] == "update":
                d.slack_updates.append(e)
        self.deliveries.append(d)
        self.show_invocation(d.invocation, f" <- notification '{event}' (impact {impact})")
        for p in d.slack_posts:
            msg = next(m for m in self.slack.messages if m["ts"] == p["ts"] and m["channel"] == p["channel"])
            where = f"reply in the thread of {p['thread_ts']}" if p["thread_ts"] else "new top-level message"
            self.say(f"      Slack #{msg['channel_name']}: {where} ({p['via']}): {short(readable(msg['text']), 110)}")
        for u in d.slack_updates:
            self.say(f"      Slack: top-level message {u['ts']} edited")
        if not d.invocation.ok:
            self.say(f"      notify-fanout failed {d.invocation.attempt} times: the message would go to the "
                     f"dead-letter queue")
            self.problems.append(f"notification '{event}' was not delivered: {short(d.invocation.result, 300)}")

    # ------------------------------------------------------------ the story

    def run(self) -> None:
        self.say("=" * 100)
        self.say(f"{self.TITLE}, backend {self.backend}: AWS on {self.moto.url} (moto) and {self.emulator.url} "
                 f"(emulator), Slack on {self.slack.url}")
        if self.slack.forwarder:
            self.say(f"    Slack messages are also forwarded to your Slack ({self.slack.forwarder.describe()})")
        self.say(f"    runbook steps from {self.runner.source}; function cold starts: " + ", ".join(
            f"{n} {f.cold_start_ms:.0f} ms" for n, f in self.functions.items()))
        group = f"/aws/vpn/{VPN}"

        self.step(f"A site-to-site VPN connection with two tunnels exists: {VPN}")
        for t in self.emulator.vpns[VPN]["VgwTelemetry"]:
            self.say(f"    tunnel {t['OutsideIpAddress']}: {t['Status']}")
        self.say(f"    tunnel logs go to CloudWatch Logs group {group} (JSON)")

        self.step("Tunnel 1 goes DOWN: IKE phase 1 authentication fails (pre-shared key)")
        t_down = time.time()
        self.emulator.apply_scenario({
            "tunnels": [{"vpn_connection_id": VPN, "outside_ip": TUNNEL_1, "status": "DOWN", "at": t_down}],
            "log_records": [{"log_group": group, "stream": f"{VPN}-{TUNNEL_1}", "records": [
                tunnel_log(TUNNEL_1, t_down - 50 + 10 * i, PSK_FAILURE, "down", "down") for i in range(4)] + [
                tunnel_log(TUNNEL_2, t_down - 30, "AWS tunnel is sending DPD request", "established",
                           "established")]}]})
        self.say(f"    telemetry: {TUNNEL_1} DOWN (StatusMessage \"\"), {TUNNEL_2} UP")
        self.say(f"    tunnel log: 4 x \"{PSK_FAILURE}\"")
        self.wait()

        self.step(f"CloudWatch alarm {ANY_TUNNEL_ALARM} goes to ALARM, delivered twice")
        t_alarm = time.time()
        self.alarm_times["any_alarm"] = t_alarm
        first = direct_alarm("ALARM", "OK", t_alarm, t_alarm - 86400)
        self.deliver_alarm(first, "direct alarm action")
        self.deliver_alarm(sns_alarm(first), "same transition again, through SNS")
        self.pump()
        self.wait()

        self.step(f"Tunnel 2 goes DOWN too: alarm {BOTH_TUNNELS_ALARM} goes to ALARM")
        t_both = time.time()
        self.alarm_times["both_alarm"] = t_both
        self.emulator.apply_scenario({
            "tunnels": [{"vpn_connection_id": VPN, "outside_ip": TUNNEL_2, "status": "DOWN", "at": t_both}],
            "log_records": [{"log_group": group, "stream": f"{VPN}-{TUNNEL_2}", "records": [
                tunnel_log(TUNNEL_2, t_both - 5, "Peer is not responsive - Declaring peer dead", "down", "down")]}]})
        self.deliver_alarm(eventbridge_both_tunnels("ALARM", "OK", t_both, t_both - 86400), "EventBridge")
        self.pump()
        self.wait()

        self.step(f"Tunnel 2 comes back: {BOTH_TUNNELS_ALARM} returns to OK")
        t_both_ok = time.time()
        self.alarm_times["both_ok"] = t_both_ok
        self.emulator.apply_scenario({"tunnels": [
            {"vpn_connection_id": VPN, "outside_ip": TUNNEL_2, "status": "UP", "at": t_both_ok}]})
        self.deliver_alarm(eventbridge_both_tunnels("OK", "ALARM", t_both_ok, t_both), "EventBridge")
        self.pump()
        self.wait()

        self.step(f"Tunnel 1 comes back: {ANY_TUNNEL_ALARM} returns to OK")
        t_ok = time.time()
        self.alarm_times["any_ok"] = t_ok
        self.emulator.apply_scenario({"tunnels": [
            {"vpn_connection_id": VPN, "outside_ip": TUNNEL_1, "status": "UP", "at": t_ok}]})
        self.deliver_alarm(direct_alarm("OK", "ALARM", t_ok, t_alarm), "direct alarm action")
        self.pump()

        self.step("Where things stand")
        self.show_incidents()
        figures = self.figures()
        self.say("    summary measured by the story (alarm time to the Slack post):")
        for k, v in figures.items():
            self.say(f"      {k}: {v}")
        self.show_slack_and_problems()

    def show_slack_and_problems(self) -> None:
        """The channels as a person would see them, then what went wrong, if anything."""
        self.say()
        self.say("Slack, as a person would see it:")
        for ln in self.slack.render().splitlines():
            self.say("    " + ln)
        if self.problems:
            self.say()
            self.say(f"{len(self.problems)} problem(s) in this story:")
            for p in self.problems:
                self.say(f"  - {p}")

    def show_incidents(self) -> None:
        if self.backend == "OpsCenter":
            for item in self.emulator.ops_items.values():
                self.say(f"    OpsItem {item['OpsItemId']} [{item['Status']}] severity {item.get('Severity')} "
                         f"priority {item.get('Priority')}: {item['Title']}")
                for k, v in sorted(item["OperationalData"].items()):
                    self.say(f"      {k}: {short(v.get('Value', ''), 120)}")
        else:
            for rec in self.emulator.incidents.values():
                self.say(f"    Incident {rec['arn']} [{rec['status']}] impact {rec['impact']}: {rec['title']}")
                for ev in self.emulator.timeline.get(rec["arn"], []):
                    self.say(f"      timeline {ev['eventType']}: {short(ev['eventData'], 120)}")
                for ri in self.emulator.related.get(rec["arn"], []):
                    self.say(f"      related: {ri.get('title', '')} {short(ri['identifier'], 100)}")

    def figures(self) -> dict[str, Any]:
        """Time to notify, diagnose, resolve: from the alarm's state change to the Slack post."""
        t0 = self.alarm_times.get("any_alarm")
        first_post = next((p for d in self.deliveries for p in d.slack_posts), None)
        diag = next((d for d in self.deliveries if d.event == "diagnosed" and d.slack_posts), None)
        resolved = next((d for d in self.deliveries if d.event == "resolved"), None)
        out: dict[str, Any] = {"incident_key": f"VPN connection {VPN} is DOWN"}
        if t0 and first_post:
            out["time_to_notify_s"] = round(first_post["at"] - t0, 3)
        if t0 and diag:
            out["time_to_diagnose_s"] = round(diag.slack_posts[0]["at"] - t0, 3)
        if t0 and resolved and (resolved.slack_posts or resolved.slack_updates):
            at = (resolved.slack_posts or resolved.slack_updates)[0]["at"]
            out["time_to_resolve_s"] = round(at - t0, 3)
        if t0 and "any_ok" in self.alarm_times:
            out["alarm_duration_s"] = round(self.alarm_times["any_ok"] - t0, 3)
        out["notifications"] = [d.event for d in self.deliveries]
        out["slack_top_level"] = len(self.slack.top_level("ops"))
        return out

    # ------------------------------------------------------------ records

    def save(self) -> None:
        d = self.out_dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "transcript.txt").write_text("\n".join(self.lines) + "\n")
        (d / "slack.txt").write_text(self.slack.render())
        (d / "slack.json").write_text(json.dumps({"messages": self.slack.messages, "events": self.slack.events},
                                                 indent=2, default=str))
        (d / "aws-emulator.json").write_text(json.dumps(self.emulator.snapshot(), indent=2, default=str))
        (d / "runbooks.json").write_text(json.dumps(self.runbook_runs, indent=2, default=str))
        (d / "notifications.json").write_text(json.dumps(
            [{**{k: v for k, v in x.__dict__.items() if k != "invocation"},
              "invocation": x.invocation.__dict__ if x.invocation else None} for x in self.deliveries],
            indent=2, default=str))
        (d / "invocations.json").write_text(json.dumps(
            {n: [i.__dict__ for i in f.invocations] for n, f in self.functions.items()}, indent=2, default=str))
        (d / "summary.json").write_text(json.dumps(self.figures(), indent=2, default=str))
        try:
            items = self.dynamodb().scan(TableName=self.table, Limit=1000)["Items"]
            (d / "state-table.json").write_text(json.dumps(items, indent=2))
        except Exception as e:  # the records are a convenience; a failed scan must not hide the story's result
            (d / "state-table.json").write_text(json.dumps({"error": str(e)}))


# ================================================================ main

def story_class(kind: str) -> type:
    """`alarms` (this file), `respond` (respond_story.py: the responders act from Slack),
    `quiet` (quiet_story.py: maintenance windows, silences and the reconciliation sweep), or
    `org` (org_story.py: one central stack for an AWS Organization's member accounts)."""
    if kind == "respond":
        from respond_story import RespondStory
        return RespondStory
    if kind == "quiet":
        from quiet_story import QuietStory
        return QuietStory
    if kind == "org":
        from org_story import OrgStory
        return OrgStory
    return Story


@contextlib.contextmanager
def running(backend: str, out_dir: Path, pace: float = 0):
    """A story's world set up and not played (for tests that drive the functions
    themselves): moto, the emulator, Slack and the functions; stopped on leaving.
    Raises PlaceholderBinary when the function binaries are not built."""
    procs = Processes()
    moto = Moto(procs, out_dir / "moto_server.log")
    try:
        moto.start()
        s = Story(backend, moto, procs, out_dir, pace=pace)
        try:
            s.setup()
        except PlaceholderBinary:
            s.close()
            raise
        try:
            yield s
        finally:
            s.close()
    finally:
        procs.stop_all()


def run_stories(backends: list[str], out_root: Path, pace: float, kind: str = "alarms") -> dict[str, Story]:
    """Runs the story per backend; returns the finished stories (their records are saved)."""
    cls = story_class(kind)
    procs = Processes()
    stories: dict[str, Story] = {}
    out_root.mkdir(parents=True, exist_ok=True)
    moto = Moto(procs, out_root / "moto_server.log")
    try:
        moto.start()
        for backend in backends:
            story = cls(backend, moto, procs, out_root / backend, pace)
            stories[backend] = story
            try:
                story.setup()
                story.run()
            finally:
                try:
                    story.save()
                finally:
                    story.close()
        return stories
    finally:
        procs.stop_all()


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["OpsCenter", "IncidentManager", "both"], default="both")
    ap.add_argument("--pace", type=float, default=float(os.environ.get("STORY_PACE", "1.5")),
                    help="seconds between the story's steps (durations in the summary come from real time)")
    ap.add_argument("--out", type=Path, default=ROOT / ".demo")
    ap.add_argument("--story", choices=["alarms", "respond", "quiet", "both", "all", "org"], default="all",
                    help="alarms: the alarms alone; respond: responders act from Slack (buttons, /incident, "
                         "escalation, post-incident summary); quiet: a maintenance window mutes the alarms, "
                         "the sweep finds the missed OK, a silence set from Slack holds an alarm back; "
                         "both: alarms and respond; all (default): the three; org: one central stack for an "
                         "AWS Organization (member accounts, a channel per team, a foreign event refused)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    kinds = {"both": ["alarms", "respond"], "all": ["alarms", "respond", "quiet"]}.get(args.story, [args.story])
    try:
        stories = {}
        for kind in kinds:
            out = args.out if kind == "alarms" else args.out / kind
            for backend, st in run_stories(backends, out, args.pace, kind).items():
                stories[f"{backend} ({kind})"] = st
    except KeyboardInterrupt:
        print("\nstopped; every process the story started has been stopped", file=sys.stderr)
        return 130
    except PlaceholderBinary as e:
        print(f"\nstory: {e}.\nThe functions' own issues provide the binaries; nothing else is wrong.",
              file=sys.stderr)
        return 3
    except StoryError as e:
        print(f"\nstory failed: {e}\nrecords so far: {args.out}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"\nstory failed; records so far: {args.out}", file=sys.stderr)
        return 1
    print()
    failed = False
    for backend, story in stories.items():
        verdict = "ok" if not story.problems else f"{len(story.problems)} problem(s)"
        failed = failed or bool(story.problems)
        print(f"{backend}: {verdict}; records in {story.out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
