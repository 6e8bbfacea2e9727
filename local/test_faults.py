"""Fault matrix (issue 10) with the REAL function binaries in the local end-to-end setup
(local/story.py): AWS made unavailable for one function by pointing its SDK endpoint
(the standard `AWS_ENDPOINT_URL_<SERVICE>`) at a closed port, then restored, and two
alarm-to-incident instances racing on the same incident key (DynamoDB conditional
writes). Each fault must either recover by retry or fail the invocation with a specific
error (so Lambda retries and finally sends the event to the failed-events queue), and
the redelivered event must finish the work exactly once.

Faults already covered elsewhere: Slack 429/500/timeouts and invalid_auth
(functions/notify-fanout/tests/delivery.rs), backend throttling and Logs Insights
failing or hanging (functions/*/tests, local/test_emulator.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

import story
import storm


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}"


@pytest.fixture()
def world(tmp_path):
    try:
        with story.running("OpsCenter", tmp_path) as s:
            yield s
    except story.PlaceholderBinary as e:
        pytest.skip(f"needs the function binaries of issues 4-6: {e}")


def restart(s: story.Story, name: str, **env) -> story.Function:
    """Restarts one function with changed environment variables (None removes one)."""
    old = s.functions[name]
    old.stop()
    new_env = {k: v for k, v in {**old.env, **env}.items() if v is not None}
    f = story.Function(name, old.binary, new_env, s.procs, old.log_path, timeout_s=60.0)
    f.start()
    s.functions[name] = f
    return f


def alarm(vpn: str, state: str, at: float, kind: str = storm.ANY) -> dict:
    prev = "OK" if state == "ALARM" else "ALARM"
    tr = storm.Transition(vpn, kind, state, prev, at, at - 600)
    return storm.direct_event(tr) if kind == storm.ANY else storm.eventbridge_event(tr)


def queued(s: story.Story) -> list[dict]:
    sqs = s.moto.client("sqs")
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=s.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  MessageAttributeNames=["All"])
        if not got.get("Messages"):
            return out
        for m in got["Messages"]:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=s.queue_url, ReceiptHandle=m["ReceiptHandle"])


VPN = storm.vpn_id(1)
KEY = storm.key_of(VPN)


def test_sns_publish_failure_fails_retryable_then_the_retry_publishes_once(world):
    s = world
    original = s.functions["alarm-to-incident"].env.get("AWS_ENDPOINT_URL_SNS")
    restart(s, "alarm-to-incident", AWS_ENDPOINT_URL_SNS=closed_port_url())
    event = alarm(VPN, "ALARM", time.time() - 60)
    inv = s.functions["alarm-to-incident"].invoke(event)
    assert not inv.ok
    assert inv.result["errorType"].startswith("Retryable."), inv.result
    assert "sns" in inv.result["errorMessage"].lower() or "publish" in inv.result["errorMessage"].lower(), inv.result
    assert queued(s) == []
    # Lambda's retry, SNS back: the same event finishes the work, nothing twice.
    restart(s, "alarm-to-incident", AWS_ENDPOINT_URL_SNS=original)
    again = s.functions["alarm-to-incident"].invoke(event)
    assert again.ok, again.result
    items = list(s.emulator.ops_items.values())
    assert len(items) == 1
    notes = queued(s)
    assert [n["MessageAttributes"]["event_type"]["Value"] for n in notes] == ["opened"]
    FAULTS["SNS publish failure"] = {"first": inv.result["errorType"], "retry": "ok, 1 OpsItem, 1 notification"}


def test_secrets_manager_unavailable_fails_retryable_then_the_retry_posts_once(world):
    s = world
    s.functions["alarm-to-incident"].invoke(alarm(VPN, "ALARM", time.time() - 60))
    [note] = queued(s)
    event = story.sns_lambda_event(note, s.subscription)
    original = s.functions["notify-fanout"].env.get("AWS_ENDPOINT_URL_SECRETS_MANAGER")
    restart(s, "notify-fanout", AWS_ENDPOINT_URL_SECRETS_MANAGER=closed_port_url())
    inv = s.functions["notify-fanout"].invoke(event)
    assert not inv.ok
    text = json.dumps(inv.result)
    assert inv.result["errorType"].startswith("Retryable."), inv.result
    assert "secret" in text.lower(), inv.result
    assert s.slack.messages == []
    restart(s, "notify-fanout", AWS_ENDPOINT_URL_SECRETS_MANAGER=original)
    again = s.functions["notify-fanout"].invoke(event)
    assert again.ok, again.result
    assert len(s.slack.top_level("ops")) == 1
    # Redelivered once more (SNS/Lambda at-least-once): no second post.
    s.functions["notify-fanout"].invoke(event)
    assert len(s.slack.top_level("ops")) == 1
    FAULTS["Secrets Manager unavailable"] = {"first": inv.result["errorType"],
                                             "retry": "ok, 1 top-level message, redelivery posts nothing"}


def test_dynamodb_conditional_write_conflict_two_instances_race_on_one_key(world):
    s = world
    second = story.Function("alarm-to-incident", s.functions["alarm-to-incident"].binary,
                            s.functions["alarm-to-incident"].env, s.procs,
                            s.out_dir / "logs" / "alarm-to-incident-2.log", timeout_s=60.0)
    second.start()
    try:
        outcomes = []
        for round_no in range(5):
            vpn = storm.vpn_id(10 + round_no)
            at = time.time() - 120
            events = [alarm(vpn, "ALARM", at, storm.ANY), alarm(vpn, "ALARM", at + 1, storm.BOTH)]
            results: list = [None, None]

            def run(i, fn, ev):
                results[i] = fn.invoke(ev, retries=story.ASYNC_RETRIES)

            threads = [threading.Thread(target=run, args=(i, fn, ev)) for i, (fn, ev) in
                       enumerate(zip([s.functions["alarm-to-incident"], second], events))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            outcomes.append(results)
            assert all(r is not None and r.ok for r in results), [r.result for r in results if r]
            items = [i for i in s.emulator.ops_items.values()
                     if json.loads(i["OperationalData"]["/aws/dedup"]["Value"])["dedupString"] == storm.key_of(vpn)]
            assert len(items) == 1, f"round {round_no}: {len(items)} OpsItems for one key"
        first_attempt_failures = [r for rs in outcomes for r in rs if r.attempt > 1]
        logs = "".join(p.read_text(errors="replace") for p in (s.out_dir / "logs").glob("alarm-to-incident*.log"))
        conflicts = sum("condition" in ln.lower() or "conflict" in ln.lower() for ln in logs.splitlines())
        print(f"\nrace: {conflicts} log lines about conditional-write conflicts")
        FAULTS["DynamoDB conditional-write conflict"] = {
            "first": f"{len(first_attempt_failures)} of 10 racing invocations needed a Lambda retry; "
                     f"{conflicts} log lines about conflicts",
            "retry": "ok, 1 OpsItem per key in 5 races"}
    finally:
        second.stop()


FAULTS: dict[str, dict] = {}


def teardown_module(module):
    if FAULTS:
        print("\nfault matrix: " + json.dumps(FAULTS))
