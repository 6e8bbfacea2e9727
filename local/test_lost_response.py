"""The issue's lost-response repro, end to end with the REAL binaries (issue 16): a
DynamoDB write commits and its answer is lost (answered 6 s late, past the SDK's 5 s
attempt timeout, or the connection closed after the commit), through the local
DynamoDB front (local/dynamo_front.py) in front of moto.

Before owner tokens, the first case (with moto's behaviour: the SDK's retry of the
committed transaction fails its own conditions) made alarm-to-incident take its own
write for another invocation's, wait out its own 90 s lease, fail `Retryable.Busy`
three times into the failed-events queue, and block every later event of the key.
Now each case must: open the incident once, publish once, end without a failed
event, on the first attempt, and leave the key free for the next events.

Events are delivered as Lambda delivers alarm actions: asynchronously (two retries,
delays scaled down, then the failed-events queue).
"""

from __future__ import annotations

import json
import time

import pytest

import story
import storm

# Lambda's 60 s and 120 s between attempts, scaled to 0.6 s and 1.2 s.
BACKOFF = 0.01
# Past the SDK's 5 s attempt timeout (shared::aws::ATTEMPT_TIMEOUT).
LATE = 6.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("lost")
    procs = story.Processes()
    moto = story.Moto(procs, out / "moto_server.log")
    try:
        moto.start()
        s = story.Story("OpsCenter", moto, procs, out, pace=0)
        try:
            s.setup()
        except story.PlaceholderBinary as e:
            s.close()
            pytest.skip(f"needs the function binaries: {e}")
        for name in ("alarm-to-incident", "notify-fanout"):
            s.functions[name].start_async(BACKOFF, s.send_to_failed_events)
        try:
            yield s
        finally:
            s.close()
    finally:
        procs.stop_all()


def alarm(vpn: str, state: str, at: float, kind: str = storm.ANY) -> dict:
    prev = "OK" if state == "ALARM" else "ALARM"
    tr = storm.Transition(vpn, kind, state, prev, at, at - 600)
    return storm.direct_event(tr) if kind == storm.ANY else storm.eventbridge_event(tr)


def deliver(s: story.Story, fn: str, event: dict):
    inv = s.functions[fn].async_invoker
    ev = inv.submit(event)
    assert inv.drain(120), f"{fn} still busy"
    return ev


def items_of(s: story.Story, vpn: str) -> list[dict]:
    return [i for i in s.emulator.ops_items.values()
            if json.loads(i["OperationalData"]["/aws/dedup"]["Value"])["dedupString"] == storm.key_of(vpn)]


def queued(s: story.Story) -> list[dict]:
    sqs = s.moto.client("sqs")
    out = []
    for _ in range(20):
        got = sqs.receive_message(QueueUrl=s.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  MessageAttributeNames=["All"])
        if not got.get("Messages"):
            break
        for m in got["Messages"]:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=s.queue_url, ReceiptHandle=m["ReceiptHandle"])
    return out


def events_of(notes: list[dict]) -> list[str]:
    return [n["MessageAttributes"]["event_type"]["Value"] for n in notes]


def faults(s: story.Story, rules: list[dict], idempotency: bool) -> None:
    s.dynamo.configure({"rules": rules, "idempotency": idempotency})


@pytest.fixture(autouse=True)
def empty_failed_events(world):
    """Each case starts with an empty failed-events queue (the world is shared)."""
    world.moto.client("sqs").purge_queue(QueueUrl=world.failed_events_url)
    queued(world)


def injected(s: story.Story) -> list[tuple[str, str]]:
    return [(f["operation"], f["action"]) for f in s.dynamo.stats()["faults"]]


def open_then_carry_on(s: story.Story, vpn: str) -> None:
    """The key is not blocked: the next events of the incident are handled at once."""
    faults(s, [], True)
    at = time.time() - 60
    up = deliver(s, "alarm-to-incident", alarm(vpn, "ALARM", at, storm.BOTH))
    assert up.ok and len(up.attempts) == 1, up.attempts
    assert up.result["results"][0]["action"] == "escalate"
    ok = deliver(s, "alarm-to-incident", alarm(vpn, "OK", at + 30, storm.BOTH))
    assert ok.ok and len(ok.attempts) == 1, ok.attempts
    assert events_of(queued(s)) == ["escalated", "deescalated"]


@pytest.mark.parametrize("action,idempotency", [
    ("delay_response", False),    # the issue: moto ignores the token, the retry fails its own conditions
    ("delay_response", True),     # DynamoDB: the retry with the same token answers the first result
    ("drop_after_commit", False),
])
def test_transaction_answer_lost_opens_once_and_leaves_the_key_free(world, action, idempotency):
    s = world
    vpn = storm.vpn_id({"delay_response": 1, "drop_after_commit": 3}[action] + (10 if idempotency else 0))
    before = len(s.dynamo.stats()["faults"])
    faults(s, [{"operation": "TransactWriteItems", "action": action, "seconds": LATE, "times": 1,
                "key_prefix": "incident#"}], idempotency)
    ev = deliver(s, "alarm-to-incident", alarm(vpn, "ALARM", time.time() - 120))
    assert injected(s)[before:] == [("TransactWriteItems", action)]
    assert ev.ok, ev.attempts
    assert len(ev.attempts) == 1, "finished on the first attempt, no Lambda retry"
    assert ev.result["results"][0]["action"] == "open"
    assert len(items_of(s, vpn)) == 1
    assert events_of(queued(s)) == ["opened"]
    assert s.failed_events() == []
    if idempotency:
        assert s.dynamo.stats()["token_replays"]["same_result"] >= 1
    open_then_carry_on(s, vpn)


@pytest.mark.parametrize("action", ["drop_after_commit", "error_after_commit", "delay_response"])
def test_progress_save_answer_lost_runs_each_step_once(world, action):
    """The save after a step (a conditional PutItem, no token) commits and its answer
    is lost: the SDK's retry fails the version condition on the invocation's own write
    (ALL_OLD shows it), so the run goes on; the step is not run again."""
    s = world
    vpn = storm.vpn_id(20 + ["drop_after_commit", "error_after_commit", "delay_response"].index(action))
    before = len(s.dynamo.stats()["faults"])
    faults(s, [{"operation": "PutItem", "action": action, "seconds": LATE, "times": 1,
                "key_prefix": "incident#"}], True)
    ev = deliver(s, "alarm-to-incident", alarm(vpn, "ALARM", time.time() - 120))
    assert injected(s)[before:] == [("PutItem", action)]
    assert ev.ok and len(ev.attempts) == 1, ev.attempts
    assert len(items_of(s, vpn)) == 1
    assert events_of(queued(s)) == ["opened"]
    assert s.failed_events() == []
    open_then_carry_on(s, vpn)


NOTIFY_WRITES = [("delivery#", 0), ("delivery#", 1), ("thread#", 0), ("thread#", 1), ("pace#", 0)]


@pytest.mark.parametrize("prefix,after", NOTIFY_WRITES)
def test_notify_fanout_claim_or_record_answer_lost_posts_once(world, prefix, after):
    """notify-fanout's writes, each in turn: the delivery claim, its `done` record, the
    thread claim, the thread record after the top-level post, the channel's send slot.
    The write commits, the connection closes before the answer; the SDK's retry (or the
    read back) finds the invocation's own item: one top-level message, the delivery
    done, no Lambda retry."""
    s = world
    vpn = storm.vpn_id(30 + NOTIFY_WRITES.index((prefix, after)))
    faults(s, [], True)
    deliver(s, "alarm-to-incident", alarm(vpn, "ALARM", time.time() - 120))
    [note] = queued(s)
    tops = len(s.slack.top_level("ops"))
    before = len(s.dynamo.stats()["faults"])
    faults(s, [{"operation": "PutItem", "action": "drop_after_commit", "times": 1, "key_prefix": prefix,
                "after": after}], True)
    ev = deliver(s, "notify-fanout", story.sns_lambda_event(note, s.subscription))
    assert injected(s)[before:] == [("PutItem", "drop_after_commit")]
    assert ev.ok and len(ev.attempts) == 1, ev.attempts
    assert len(s.slack.top_level("ops")) == tops + 1
    assert s.failed_events() == []
    # Delivered again (SNS at least once): nothing posted twice.
    faults(s, [], True)
    again = deliver(s, "notify-fanout", story.sns_lambda_event(note, s.subscription))
    assert again.ok and again.result["already_delivered"] >= 1
    assert len(s.slack.top_level("ops")) == tops + 1
