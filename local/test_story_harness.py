"""The story's machinery (processes, moto resources, SNS -> SQS -> notify-fanout delivery,
the runbook run as SSM Automation would, Slack attribution, records, clean shutdown),
tested with small stand-in functions written in Python that speak the same Runtime API
and reach AWS through the same `AWS_ENDPOINT_URL*` variables.

The stand-ins implement only what the harness needs to see: they are test doubles of the
contracts, not the functions. The real story with the real binaries is test_story.py.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path
import pytest

import story

RUNTIME = textwrap.dedent('''
    #!{python}
    import json, os, sys, urllib.request
    import boto3
    API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation"
    KEY = "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN"

    def publish(event_type, impact, extra=None):
        # The shape of shared::notification::Notification inside the Chatbot custom schema.
        import datetime
        now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        n = {{"event": event_type, "incident_key": KEY, "title": KEY, "summary": "The VPN connection to the "
             "remote site is not working.", "impact": impact,
             "status": "resolved" if event_type == "resolved" else "open", "backend": "OpsCenter",
             "incident_ref": None, "incident_url": None, "account": "123456789012", "region": "eu-west-1",
             "alarm": None, "vpn_id": "vpn-0f1e2d3c4b5a69788", "tunnel_ip": None, "occurred_at": now,
             "opened_at": None, "duration_seconds": None, "next_steps": [], "links": [], "findings": [],
             "timeline": [], **(extra or {{}})}}
        msg = {{"version": "1.0", "source": "custom", "id": KEY + "#" + event_type,
               "content": {{"textType": "client-markdown", "title": KEY, "description": event_type}},
               "metadata": {{"threadId": KEY, "summary": KEY, "eventType": event_type,
                            "additionalContext": {{"pipeline": json.dumps(n), "event": event_type,
                                                  "impact": str(impact), "incidentKey": KEY}}}}}}
        boto3.client("sns").publish(TopicArn=os.environ["NOTIFICATION_TOPIC_ARN"], Message=json.dumps(msg),
            MessageAttributes={{"event_type": {{"DataType": "String", "StringValue": event_type}},
                               "impact": {{"DataType": "String", "StringValue": str(impact)}}}})

    def serve(handler):
        for _ in range(1000):
            with urllib.request.urlopen(API + "/next", timeout=3600) as r:
                rid, event = r.headers["Lambda-Runtime-Aws-Request-Id"], json.loads(r.read())
            try:
                body, kind = handler(event), "response"
            except Exception as e:
                body, kind = {{"errorType": type(e).__name__, "errorMessage": str(e)}}, "error"
            urllib.request.urlopen(urllib.request.Request(f"{{API}}/{{rid}}/{{kind}}", method="POST",
                                                          data=json.dumps(body).encode()))
''')

A2I = '''
seen, state = set(), {"item": None, "firing": set()}

def transition(event):
    if "alarmData" in event:
        return event["alarmArn"], event["alarmData"]["state"]["value"], event["alarmData"]["state"]["timestamp"]
    if "detail" in event:
        return event["resources"][0], event["detail"]["state"]["value"], event["detail"]["state"]["timestamp"]
    m = json.loads(event["Records"][0]["Sns"]["Message"])
    return m["AlarmArn"], m["NewStateValue"], m["StateChangeTime"]

def handler(event):
    arn, value, at = transition(event)
    if (arn, at) in seen:
        return {"outcome": "duplicate"}
    seen.add((arn, at))
    ssm = boto3.client("ssm")
    im = os.environ["INCIDENT_BACKEND"] == "IncidentManager"
    if value == "ALARM":
        state["firing"].add(arn)
        if state["item"] is None:
            if im:  # the response plan starts the runbook
                state["item"] = boto3.client("ssm-incidents").start_incident(
                    responsePlanArn=os.environ["RESPONSE_PLAN_ARN"], title=KEY, impact=3,
                    triggerDetails={"source": "custom.incident-pipeline", "timestamp": 1.0})["incidentRecordArn"]
            else:
                state["item"] = ssm.create_ops_item(Title=KEY, Description="d", Source="IncidentPipeline")[
                    "OpsItemId"]
                ssm.start_automation_execution(DocumentName=os.environ["RUNBOOK_DOCUMENT_NAME"], Parameters={
                    "VpnConnectionId": ["vpn-0f1e2d3c4b5a69788"], "OpsItemId": [state["item"]]})
            publish("opened", 3)
            return {"outcome": "opened", "incident": state["item"]}
        publish("escalated", 1)
        return {"outcome": "escalated"}
    state["firing"].discard(arn)
    if state["firing"]:
        publish("deescalated", 3)
        return {"outcome": "deescalated"}
    if im:
        boto3.client("ssm-incidents").update_incident_record(arn=state["item"], status="RESOLVED")
    else:
        ssm.update_ops_item(OpsItemId=state["item"], Status="Resolved")
    publish("resolved", 3, {"duration_seconds": 5})
    return {"outcome": "resolved"}

serve(handler)
'''

VPN = '''
def handler(event):
    if "OpsItemId" in event:
        boto3.client("ssm").update_ops_item(OpsItemId=event["OpsItemId"], OperationalData={
            "diagnosis": {"Value": "IKE phase 1 authentication failed", "Type": "String"}})
    else:
        import time
        boto3.client("ssm-incidents").create_timeline_event(
            incidentRecordArn=event["IncidentRecordArn"], eventTime=time.time(), eventType="Custom Event",
            eventData=json.dumps("IKE phase 1 authentication failed"))
    publish("diagnosed", 3)
    return {"findings": [{"title": "IKE phase 1 authentication failed"}], "input": event}

serve(handler)
'''

NOTIFY = '''
secret = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["SLACK_SECRET_ARN"])["SecretString"])
bot, hook = secret["destinations"]["ops"], secret["destinations"]["oncall"]
threads = {}

def call(method, body):
    req = urllib.request.Request(os.environ["SLACK_API_URL"] + "/" + method, data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + bot["token"], "Content-Type": "application/json"}, method="POST")
    out = json.loads(urllib.request.urlopen(req, timeout=5).read())
    if not out["ok"]:
        raise RuntimeError(out["error"])
    return out

def handler(event):
    n = json.loads(json.loads(event["Records"][0]["Sns"]["Message"])["metadata"]["additionalContext"]["pipeline"])
    text = f"{n['event']} [impact {n['impact']}] {n['incident_key']}"
    if n["incident_key"] not in threads:
        threads[n["incident_key"]] = call("chat.postMessage", {"channel": bot["channel"], "text": text})["ts"]
    else:
        ts = threads[n["incident_key"]]
        call("chat.postMessage", {"channel": bot["channel"], "text": text, "thread_ts": ts})
        call("chat.update", {"channel": bot["channel"], "ts": ts, "text": "current: " + text})
    if n["impact"] == 1:
        urllib.request.urlopen(urllib.request.Request(hook["url"], data=json.dumps({"text": text}).encode(),
                                                      headers={"Content-Type": "application/json"}), timeout=5)
    return {"delivered": True}

serve(handler)
'''


STALE_LOG_LINE = '{"message": "a line of the previous run"}'


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    import sys
    bin_dir = tmp_path_factory.mktemp("standins")
    head = RUNTIME.format(python=sys.executable).lstrip()
    for name, body in (("alarm-to-incident", A2I), ("vpn-troubleshoot", VPN), ("notify-fanout", NOTIFY)):
        p = bin_dir / name
        p.write_text(head + body)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    old = {k: os.environ.get(k) for k in ("STORY_FUNCTIONS_DIR", "STORY_EVENTS_DIR")}
    os.environ["STORY_FUNCTIONS_DIR"] = str(bin_dir)
    if not story.events_dir().exists():
        pytest.skip(f"the sample events are not in {story.events_dir()} (set STORY_EVENTS_DIR)")
    out = tmp_path_factory.mktemp("demo")
    # A previous run's logs in the same directory (make demo reuses .demo/).
    for backend in story.BACKENDS:
        (out / backend / "logs").mkdir(parents=True)
        (out / backend / "logs" / "alarm-to-incident.log").write_text(STALE_LOG_LINE + "\n")
    try:
        stories = story.run_stories(list(story.BACKENDS), out, pace=0)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return stories, out


@pytest.fixture(params=story.BACKENDS)
def run(request, harness):
    stories, out = harness
    return stories[request.param], out


def test_notifications_carried_in_order_to_notify_fanout(run):
    s, _ = run
    assert [d.event for d in s.deliveries] == ["opened", "diagnosed", "escalated", "deescalated", "resolved"]
    assert all(d.invocation.ok and d.invocation.attempt == 1 for d in s.deliveries)
    assert s.deliveries[0].notification["incident_key"] == "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN"
    # Each notify-fanout invocation got exactly one SNS record, as Lambda's SNS trigger sends.
    payload = s.deliveries[0].invocation.payload
    assert len(payload["Records"]) == 1 and payload["Records"][0]["EventSource"] == "aws:sns"
    assert payload["Records"][0]["Sns"]["MessageAttributes"]["event_type"] == {"Type": "String", "Value": "opened"}


def test_slack_posts_are_attributed_to_their_notification(run):
    s, _ = run
    opened = s.deliveries[0]
    assert len(opened.slack_posts) == 1 and opened.slack_posts[0]["thread_ts"] is None
    top_ts = opened.slack_posts[0]["ts"]
    for d in s.deliveries[1:]:
        replies = [p for p in d.slack_posts if p["channel"] == "C0LOCALOPS"]
        assert [p["thread_ts"] for p in replies] == [top_ts]
        assert [u["ts"] for u in d.slack_updates] == [top_ts]
    escalated = s.deliveries[2]
    assert [p["via"] for p in escalated.slack_posts] == ["bot", "webhook"]
    assert len(s.slack.top_level("ops")) == 1 and len(s.slack.replies(top_ts)) == 4


def test_alarm_delivered_twice_opens_once(run):
    s, _ = run
    a2i = s.functions["alarm-to-incident"].invocations
    assert [i.result.get("outcome") for i in a2i] == ["opened", "duplicate", "escalated", "deescalated", "resolved"]
    assert "Records" in a2i[1].payload  # the duplicate came through the SNS envelope
    opens = "StartIncident" if s.backend == "IncidentManager" else "CreateOpsItem"
    assert sum(1 for c in s.emulator.calls if c["op"] == opens) == 1
    # The SNS copy carries the direct action's exact state-change time.
    sns_msg = json.loads(a2i[1].payload["Records"][0]["Sns"]["Message"])
    assert sns_msg["StateChangeTime"] == a2i[0].payload["alarmData"]["state"]["timestamp"]


def test_runbook_runs_like_ssm_automation(run):
    s, _ = run
    [rb] = s.runbook_runs
    assert rb["status"] == "Success"
    assert [st["name"] for st in rb["steps"]] == ["BuildInput", "Diagnose"]
    if s.backend == "OpsCenter":
        item = next(iter(s.emulator.ops_items))
        assert rb["started_by"] == "StartAutomationExecution"
        # BuildInput (the runbook's own script) shaped the function input.
        assert rb["invocation"]["payload"] == {"VpnConnectionId": story.VPN, "LookbackMinutes": 60, "OpsItemId": item}
        assert s.emulator.ops_items[item]["OperationalData"]["diagnosis"]["Value"] == \
            "IKE phase 1 authentication failed"
    else:
        arn = next(iter(s.emulator.incidents))
        assert rb["started_by"] == "ResponsePlan"
        assert rb["parameters"]["IncidentRecordArn"] == [arn]
        assert rb["parameters"]["AutomationAssumeRole"] == [story.AUTOMATION_ROLE]
        assert rb["invocation"]["payload"] == {"VpnConnectionId": story.VPN, "LookbackMinutes": 60,
                                               "IncidentRecordArn": arn}
        assert [json.loads(e["eventData"]) for e in s.emulator.timeline[arn]] == ["IKE phase 1 authentication failed"]
    ex = s.emulator.automations[rb["execution"]]
    assert ex["AutomationExecutionStatus"] == "Success"
    assert json.loads(ex["Outputs"]["Diagnose.Payload"][0])["findings"][0]["title"].startswith("IKE phase 1")


def test_scenario_and_figures(run):
    s, _ = run
    tel = {t["OutsideIpAddress"]: t["Status"] for t in s.emulator.vpns[story.VPN]["VgwTelemetry"]}
    assert tel == {story.TUNNEL_1: "UP", story.TUNNEL_2: "UP"}
    history = s.emulator.tunnel_history[(story.VPN, story.TUNNEL_1)]
    assert [v for _, v in history] == [1, 0, 1]
    f = s.figures()
    assert 0 <= f["time_to_notify_s"] <= f["time_to_diagnose_s"] <= f["time_to_resolve_s"]
    assert f["notifications"] == ["opened", "diagnosed", "escalated", "deescalated", "resolved"]
    assert f["slack_top_level"] == 1


def test_a_previous_runs_logs_are_not_read_as_this_runs(run):
    s, _ = run
    log = (s.out_dir / "logs" / "alarm-to-incident.log").read_text()
    assert STALE_LOG_LINE not in log


def test_records_written_and_processes_stopped(run):
    s, out = run
    names = {p.name for p in (out / s.backend).iterdir()}
    assert {"transcript.txt", "slack.txt", "slack.json", "aws-emulator.json", "runbooks.json", "notifications.json",
            "invocations.json", "summary.json", "state-table.json", "logs"} <= names
    transcript = (out / s.backend / "transcript.txt").read_text()
    assert "[3] CloudWatch alarm vpn-tunnel-down-vpn-0f1e2d3c4b5a69788 goes to ALARM, delivered twice" in transcript
    assert "Slack, as a person would see it:" in transcript
    assert all(f.proc.poll() is not None for f in s.functions.values())
    assert (out / "moto_server.log").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_story_stops_every_process(tmp_path, sig):
    import signal
    import subprocess
    import sys
    import time
    import uuid

    if not story.events_dir().exists():
        pytest.skip(f"the sample events are not in {story.events_dir()} (set STORY_EVENTS_DIR)")
    bin_dir = tmp_path / "standins"
    bin_dir.mkdir()
    head = RUNTIME.format(python=sys.executable).lstrip()
    for name, body in (("alarm-to-incident", A2I), ("vpn-troubleshoot", VPN), ("notify-fanout", NOTIFY)):
        p = bin_dir / name
        p.write_text(head + body)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    marker = f"story-test-{uuid.uuid4()}"
    env = {**os.environ, "STORY_FUNCTIONS_DIR": str(bin_dir), "STORY_TEST_MARKER": marker,
           "STORY_EVENTS_DIR": str(story.events_dir())}
    proc = subprocess.Popen([sys.executable, str(Path(story.__file__)), "--backend", "OpsCenter", "--pace", "30",
                             "--out", str(tmp_path / "demo")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.monotonic() + 60
    while "[2] Tunnel 1 goes DOWN" not in seen and time.monotonic() < deadline:  # bounded
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "[2] Tunnel 1 goes DOWN" in seen, seen
    assert marked_processes(marker), "the story's children are running"
    proc.send_signal(getattr(signal, sig))
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, seen + rest
    assert "every process the story started has been stopped" in rest
    assert marked_processes(marker) == []
    assert (tmp_path / "demo" / "OpsCenter" / "transcript.txt").exists()


def marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment carries `marker`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if marker.encode() in (d / "environ").read_bytes():
                status = (d / "status").read_text()
                if "\nState:\tZ" not in status:
                    found.append(int(d.name))
        except OSError:
            continue
    return found


TEMPLATE = """
Transform: [AWS::LanguageExtensions, AWS::Serverless-2016-10-31]
Resources:
  Fn::ForEach::Alarms:
    - VpnId
    - !Ref VpnConnectionIds
    - Alarm&{VpnId}:
        Type: AWS::CloudWatch::Alarm
  VpnTroubleshootFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: vpn-troubleshoot
  DiagnosisRunbook:
    Type: AWS::SSM::Document
    Properties:
      DocumentType: Automation
      Content:
        schemaVersion: "0.3"
        assumeRole: "{{ AutomationAssumeRole }}"
        parameters:
          VpnConnectionId: {type: String, default: "", allowedPattern: "^(vpn-[0-9a-f]{8,17})?$"}
          InvolvedResources: {type: StringList, default: []}
          LookbackMinutes: {type: Integer, default: 60}
          AutomationAssumeRole: {type: String, default: ""}
        mainSteps:
          - name: BuildInput
            action: aws:executeScript
            inputs:
              Runtime: python3.11
              Handler: build
              InputPayload:
                VpnConnectionId: "{{ VpnConnectionId }}"
                InvolvedResources: "{{ InvolvedResources }}"
                LookbackMinutes: "{{ LookbackMinutes }}"
              Script: |-
                import json
                def build(events, context):
                    vpn = events["VpnConnectionId"] or events["InvolvedResources"][0].rsplit("/", 1)[1]
                    return {"Payload": json.dumps({"VpnConnectionId": vpn, "LookbackMinutes": events["LookbackMinutes"]})}
            outputs:
              - {Name: Payload, Selector: $.Payload.Payload, Type: String}
          - name: Diagnose
            action: aws:invokeLambdaFunction
            timeoutSeconds: 150
            inputs:
              FunctionName: !GetAtt VpnTroubleshootFunction.Arn
              Payload: "{{ BuildInput.Payload }}"
"""


def test_runbook_comes_from_template_yaml(tmp_path, monkeypatch):
    from emulator import Emulator

    (tmp_path / "template.yaml").write_text(TEMPLATE)
    monkeypatch.setattr(story, "ROOT", tmp_path)
    calls = []

    class Fn:
        def invoke(self, payload, timeout_s=None):
            calls.append((payload, timeout_s))
            return story.Invocation("vpn-troubleshoot", payload, True, {"findings": []}, 1.0, 1, 0.0)

    emu = Emulator()
    runner = story.RunbookRunner(emu, {"vpn-troubleshoot": Fn()})
    assert runner.source == "template.yaml resource DiagnosisRunbook"
    assert runner.types() == {"VpnConnectionId": "String", "InvolvedResources": "StringList",
                              "LookbackMinutes": "Integer", "AutomationAssumeRole": "String"}
    emu.apply_scenario({"documents": [{"name": "doc", "parameters": runner.parameter_names(),
                                       "types": runner.types(), "patterns": runner.patterns()}]})
    eid = emu._start_automation("doc", {"InvolvedResources": [
        f"arn:aws:ec2:eu-west-1:123456789012:vpn-connection/{story.VPN}"], "LookbackMinutes": ["30"]}, "ResponsePlan")
    out = runner.run(emu.automations[eid])
    assert out["status"] == "Success", out["failure"]
    assert calls == [({"VpnConnectionId": story.VPN, "LookbackMinutes": 30}, 150.0)]
    assert emu.automations[eid]["Outputs"]["Diagnose.Payload"] == ['{"findings": []}']


def test_failing_runbook_step_fails_the_execution(tmp_path, monkeypatch):
    from emulator import Emulator

    (tmp_path / "template.yaml").write_text(TEMPLATE)
    monkeypatch.setattr(story, "ROOT", tmp_path)
    emu = Emulator()
    runner = story.RunbookRunner(emu, {"vpn-troubleshoot": None})
    emu.apply_scenario({"documents": [{"name": "doc", "parameters": runner.parameter_names()}]})
    eid = emu._start_automation("doc", {}, "StartAutomationExecution")  # no VPN anywhere: the script fails
    out = runner.run(emu.automations[eid])
    assert out["status"] == "Failed" and out["failure"].startswith("Step BuildInput failed: IndexError")
    assert emu.automations[eid]["AutomationExecutionStatus"] == "Failed"
