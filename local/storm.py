#!/usr/bin/env python3
"""Alarm storm through the end-to-end setup (issue 10).

1,000 alarm events across 20 VPN connections (two alarms each: any tunnel down, both
tunnels down), interleaved, with duplicates (the same transition again, also through
another envelope), late OKs and out-of-order deliveries, go through the real
alarm-to-incident binary; the notifications it publishes travel SNS -> SQS ->
notify-fanout -> the local Slack, as in local/story.py (whose processes, emulator,
Slack sink and Runtime API this reuses).

The expected outcome is computed from the event list by `expected_outcome`, a
transcription of `shared::lifecycle::decide` (per alarm: a transition at or before the
last one applied is ignored; an incident opens on ALARM, resolves when every alarm
feeding it is OK).

    python3 local/storm.py [--events 1000] [--vpns 20] [--seed 10] [--out .demo/storm]

prints the figures (events in, incidents, Slack messages, seconds, per-channel rate).

**Concurrent storm with faults** (issue 16, `run_concurrent_storm`, `--concurrency N`):
as Lambda delivers a storm. alarm-to-incident and notify-fanout each run as N
instances; every event is an asynchronous invocation (two retries, Lambda's delays
scaled by `--backoff`, then the failed-events queue, `runtime_api.AsyncInvoker`); the
notification queue is pumped into notify-fanout while alarms are still arriving; every
DynamoDB call goes through the front (`dynamo_front.py`) with seeded faults
(`STORM_FAULTS`: answers 6 s late, connections closed after the commit, 500s after
the commit, throttling, latency). In which order concurrent invocations applied the
transitions is known only afterwards: the front's commit log gives it, and the model
replays exactly that order.

    python3 local/storm.py --concurrency 4 --seed 1234 [--no-idempotency]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import story  # noqa: E402
from story import ACCOUNT, REGION, Story, sns_lambda_event  # noqa: E402

ANY, BOTH = "any", "both"


def vpn_id(i: int) -> str:
    return f"vpn-0a{i:015x}"


def key_of(vpn: str) -> str:
    return f"VPN connection {vpn} is DOWN"


def alarm_name(kind: str, vpn: str) -> str:
    return f"vpn-tunnel-down-{vpn}" if kind == ANY else f"vpn-both-tunnels-down-{vpn}"


def alarm_arn(kind: str, vpn: str) -> str:
    return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm_name(kind, vpn)}"


@dataclass(frozen=True)
class Transition:
    vpn: str
    kind: str          # ANY | BOTH
    state: str         # ALARM | OK
    previous: str
    at: float          # the alarm's state-change time (epoch seconds)
    prev_at: float


@dataclass
class Delivery:
    transition: Transition
    envelope: str      # direct | sns | eventbridge
    why: str           # first | duplicate | late


@dataclass
class Plan:
    transitions: list[Transition]
    deliveries: list[Delivery]


def plan_storm(n_events: int = 1000, n_vpns: int = 20, seed: int = 10, base: float | None = None) -> Plan:
    """The storm: each VPN's alarms flap a few times; every transition is delivered at
    least once, many twice or more (other envelopes), some late (after newer ones of the
    same alarm), then everything is interleaved across VPNs with local reordering."""
    rng = random.Random(seed)
    base = base if base is not None else time.time() - 6 * 3600
    transitions: list[Transition] = []
    for i in range(n_vpns):
        vpn = vpn_id(i)
        t = base + i * 7.0
        for kind in (ANY, BOTH):
            # The any-tunnel alarm flaps 2-4 times; the both-tunnels one 0-2 times inside.
            flaps = rng.randint(2, 4) if kind == ANY else rng.randint(0, 2)
            at = t + (30.0 if kind == BOTH else 0.0)
            state, prev_at = "OK", base - 86400
            # Leave some alarms firing at the end: an odd number of changes ends in ALARM.
            changes = 2 * flaps - (1 if rng.random() < 0.35 else 0)
            for _ in range(max(changes, 0)):
                new = "ALARM" if state == "OK" else "OK"
                at += rng.uniform(60, 600)
                transitions.append(Transition(vpn, kind, new, state, round(at, 3), prev_at))
                state, prev_at = new, round(at, 3)
    # Every transition once, in time order across all VPNs ...
    ordered = sorted(transitions, key=lambda x: x.at)
    deliveries = [Delivery(tr, "direct" if tr.kind == ANY else "eventbridge", "first") for tr in ordered]
    # ... then duplicates and late copies until n_events.
    while len(deliveries) < n_events:
        tr = rng.choice(transitions)
        envelope = rng.choice(["direct", "sns"]) if tr.kind == ANY else "eventbridge"
        pos = len(deliveries) if rng.random() < 0.3 else rng.randrange(len(deliveries) + 1)
        first = next(j for j, d in enumerate(deliveries) if d.transition == tr)
        deliveries.insert(pos, Delivery(tr, envelope, "late" if pos > first + 20 else "duplicate"))
    # Out-of-order delivery: swap neighbours within a small window.
    for j in range(len(deliveries)):
        k = min(len(deliveries) - 1, j + rng.randint(0, 4))
        deliveries[j], deliveries[k] = deliveries[k], deliveries[j]
    return Plan(transitions, deliveries[:n_events])


def applied_in_commit_order(commits: list[dict], plan: Plan) -> list[Delivery]:
    """The transitions as the state table applied them: every committed write of an
    `alarm#<arn>` item, in the order DynamoDB (the front) committed them, mapped back to
    the storm's transitions (by alarm and state-change time, to the millisecond)."""
    by_arn: dict[str, list[Transition]] = {}
    for tr in plan.transitions:
        by_arn.setdefault(alarm_arn(tr.kind, tr.vpn), []).append(tr)
    out: list[Delivery] = []
    for c in commits:
        for w in c["writes"]:
            pk = w.get("pk", "")
            if w.get("kind") != "Put" or not pk.startswith("alarm#"):
                continue
            ms = int(w["changed_at_ms"])
            candidates = [t for t in by_arn.get(pk[len("alarm#"):], []) if abs(t.at * 1000 - ms) < 2]
            if len(candidates) != 1:
                raise ValueError(f"commit {c['seq']} of {pk} at {ms} matches {len(candidates)} storm transitions")
            out.append(Delivery(candidates[0], "committed", "applied"))
    return out


def expected_outcome(deliveries: list[Delivery]) -> dict[str, dict[str, Any]]:
    """Per incident key: how many incidents open, and whether the last is open at the end
    (shared::lifecycle::decide, transcribed)."""
    last_applied: dict[str, float] = {}
    records: dict[str, dict[str, Any]] = {}
    for d in deliveries:
        tr, arn = d.transition, alarm_arn(d.transition.kind, d.transition.vpn)
        if arn in last_applied and tr.at <= last_applied[arn]:
            continue  # duplicate or stale
        last_applied[arn] = tr.at
        key = key_of(tr.vpn)
        rec = records.setdefault(key, {"opened": 0, "open": False, "alarms": {}})
        if not rec["open"]:
            if tr.state == "ALARM":
                rec.update(opened=rec["opened"] + 1, open=True, alarms={arn: "ALARM"})
            continue
        if tr.state == "ALARM":
            rec["alarms"][arn] = "ALARM"
        elif arn in rec["alarms"]:
            rec["alarms"][arn] = "OK"
            if all(s == "OK" for s in rec["alarms"].values()):
                rec["open"] = False
    return {k: {"opened": v["opened"], "open": v["open"]} for k, v in records.items() if v["opened"]}


# ================================================================ events on the wire

def _retarget(text: str, vpn: str) -> str:
    return text.replace(story.VPN, vpn)


def direct_event(tr: Transition) -> dict:
    ev = story.direct_alarm(tr.state, tr.previous, tr.at, tr.prev_at)
    return json.loads(_retarget(json.dumps(ev), tr.vpn))


def sns_event(tr: Transition) -> dict:
    ev = story.sns_alarm(story.direct_alarm(tr.state, tr.previous, tr.at, tr.prev_at))
    return json.loads(_retarget(json.dumps(ev), tr.vpn))


def eventbridge_event(tr: Transition) -> dict:
    ev = story.eventbridge_both_tunnels(tr.state, tr.previous, tr.at, tr.prev_at)
    return json.loads(_retarget(json.dumps(ev), tr.vpn))


def wire_event(d: Delivery) -> dict:
    return {"direct": direct_event, "sns": sns_event, "eventbridge": eventbridge_event}[d.envelope](d.transition)


# ================================================================ the run

@dataclass
class StormResult:
    plan: Plan
    expected: dict[str, dict[str, Any]]
    story: Story
    seconds: float = 0.0
    alarm_failures: list[Any] = field(default_factory=list)
    notify_failures: list[Any] = field(default_factory=list)
    notifications: list[dict] = field(default_factory=list)
    coalesced: int = 0     # updates notify-fanout showed on the top-level message only

    def slack_rate(self) -> dict[str, dict[str, Any]]:
        """Per channel: messages posted and edited, the most in any one-second window, and
        the shortest gap between two of them."""
        out: dict[str, dict[str, Any]] = {}
        events = [e for e in self.story.slack.events if e["kind"] in ("post", "update")]
        for ch in sorted({e["channel"] for e in events}):
            times = sorted(e["at"] for e in events if e["channel"] == ch)
            worst, lo = 0, 0
            for hi, t in enumerate(times):
                while times[lo] <= t - 1.0:
                    lo += 1
                worst = max(worst, hi - lo + 1)
            gaps = [b - a for a, b in zip(times, times[1:])]
            span = (times[-1] - times[0]) if len(times) > 1 else 0.0
            out[self.story.slack.channels.get(ch, ch)] = {
                "posts": sum(1 for e in events if e["channel"] == ch and e["kind"] == "post"),
                "updates": sum(1 for e in events if e["channel"] == ch and e["kind"] == "update"),
                "max_in_1s": worst, "min_gap_s": round(min(gaps), 3) if gaps else None,
                "mean_per_s": round(len(times) / span, 2) if span else float(len(times))}
        return out

    def figures(self) -> dict[str, Any]:
        slack = self.story.slack
        return {
            "events_in": len(self.plan.deliveries),
            "distinct_transitions": len(self.plan.transitions),
            "vpn_connections": len({t.vpn for t in self.plan.transitions}),
            "incidents_expected_opened": sum(v["opened"] for v in self.expected.values()),
            "incidents_expected_open_at_end": sum(v["open"] for v in self.expected.values()),
            "ops_items": len(self.story.emulator.ops_items),
            "ops_items_open": sum(i["Status"] != "Resolved" for i in self.story.emulator.ops_items.values()),
            "notifications": len(self.notifications),
            "slack_top_level": len([m for m in slack.messages if not m["thread_ts"]]),
            "slack_messages": len(slack.messages),
            "slack_edits": sum(len(m["edits"]) for m in slack.messages),
            "slack_coalesced_updates": self.coalesced,
            "slack_rate": self.slack_rate(),
            "alarm_invocation_failures": len(self.alarm_failures),
            "notify_invocation_failures": len(self.notify_failures),
            "seconds": round(self.seconds, 1),
        }


def drain_notifications(s: Story, result: StormResult, shuffle: random.Random | None = None) -> None:
    """Delivers what is queued, in publish order (SNS timestamp, then the queue's), or
    in a seeded random order when `shuffle` is given."""
    sqs = s.moto.client("sqs")
    while True:
        messages: list[dict] = []
        while True:
            got = sqs.receive_message(QueueUrl=s.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                      MessageAttributeNames=["All"], AttributeNames=["SentTimestamp"])
            if not got.get("Messages"):
                break
            messages.extend(got["Messages"])
        if not messages:
            return
        messages.sort(key=lambda m: (json.loads(m["Body"])["Timestamp"], int(m["Attributes"]["SentTimestamp"])))
        if shuffle is not None:  # SNS -> Lambda does not keep the order: deliver a batch shuffled
            shuffle.shuffle(messages)
        for m in messages:
            body = json.loads(m["Body"])
            attrs = body.get("MessageAttributes", {})
            result.notifications.append({"event": attrs.get("event_type", {}).get("Value"),
                                         "message_id": body["MessageId"]})
            inv = s.functions["notify-fanout"].invoke(sns_lambda_event(body, s.subscription),
                                                       retries=story.ASYNC_RETRIES)
            if not inv.ok:
                result.notify_failures.append(inv.result)
            elif isinstance(inv.result, dict):
                result.coalesced += int(inv.result.get("coalesced", 0))
            sqs.delete_message(QueueUrl=s.queue_url, ReceiptHandle=m["ReceiptHandle"])


def run_storm(out_dir: Path, n_events: int = 1000, n_vpns: int = 20, seed: int = 10,
              drain_every: int = 1, slack_faults: list[dict] | None = None,
              shuffled: bool = False) -> StormResult:
    """Runs the storm (OpsCenter backend; the runbooks SSM would start are not run:
    the diagnosis is the story's subject, not the storm's). The notification queue is
    delivered to notify-fanout every `drain_every` alarm events, in publish order.
    `slack_faults`: `SlackSink.inject` arguments applied before the first event.
    `shuffled`: each batch of notifications is delivered in a random (seeded) order."""
    plan = plan_storm(n_events, n_vpns, seed)
    procs = story.Processes()
    out_dir.mkdir(parents=True, exist_ok=True)
    moto = story.Moto(procs, out_dir / "moto_server.log")
    try:
        moto.start()
        s = Story("OpsCenter", moto, procs, out_dir, pace=0)
        result = StormResult(plan, expected_outcome(plan.deliveries), s)
        try:
            s.setup()
            for f in slack_faults or []:
                s.slack.inject(**f)
            shuffle = random.Random(seed) if shuffled else None
            started = time.monotonic()
            a2i = s.functions["alarm-to-incident"]
            for n, d in enumerate(plan.deliveries, 1):
                inv = a2i.invoke(wire_event(d), retries=story.ASYNC_RETRIES)
                if not inv.ok:
                    result.alarm_failures.append({"delivery": n, "result": inv.result})
                if n % drain_every == 0:
                    drain_notifications(s, result, shuffle)
            drain_notifications(s, result, shuffle)
            result.seconds = time.monotonic() - started
        finally:
            try:
                (out_dir / "storm-figures.json").write_text(json.dumps(result.figures(), indent=2, default=str))
                s.save()
            finally:
                s.close()
        return result
    finally:
        procs.stop_all()


# ================================================================ concurrent, with faults

# DynamoDB faults of the concurrent storm, per operation (dynamo_front.py rules), drawn
# with the storm's seed, each at most `times` per run so a run's length stays bounded
# (a 6 s answer holds one instance for 6 s). What they stand for: an answer after the
# SDK's 5 s attempt timeout (`delay_response`), a reset after the commit
# (`drop_after_commit`), a 500 after the commit ("may or may not have succeeded"), a
# throttled request, added latency. `storm_faults` adds one certain fault of each main
# kind at a seeded position, so no run goes without them.
STORM_FAULTS: list[dict] = [
    {"operation": "TransactWriteItems", "action": "delay_response", "seconds": 6.0, "probability": 0.03, "times": 3},
    {"operation": "TransactWriteItems", "action": "drop_after_commit", "probability": 0.03, "times": 3},
    {"operation": "TransactWriteItems", "action": "error_after_commit", "probability": 0.02, "times": 2},
    {"operation": "PutItem", "action": "drop_after_commit", "probability": 0.01, "times": 8},
    {"operation": "PutItem", "action": "error_after_commit", "probability": 0.01, "times": 4},
    {"operation": "PutItem", "action": "delay_response", "seconds": 6.0, "probability": 0.004, "times": 2},
    {"operation": "DeleteItem", "action": "drop_after_commit", "probability": 0.1, "times": 2},
    {"operation": "GetItem", "action": "throttle", "probability": 0.01, "times": 12},
    {"operation": "*", "action": "throttling", "probability": 0.004, "times": 6},
    {"operation": "GetItem", "action": "latency", "seconds": 0.25, "probability": 0.02, "times": 20},
]
def storm_faults(seed: int) -> list[dict]:
    """`STORM_FAULTS` plus one certain fault per main kind, placed by the seed."""
    rng = random.Random(seed)
    certain = [
        {"operation": "TransactWriteItems", "action": "delay_response", "seconds": 6.0, "after": rng.randrange(3, 30)},
        {"operation": "TransactWriteItems", "action": "drop_after_commit", "after": rng.randrange(3, 30)},
        {"operation": "PutItem", "action": "drop_after_commit", "after": rng.randrange(20, 300)},
        {"operation": "PutItem", "action": "error_after_commit", "after": rng.randrange(20, 300)},
        {"operation": "GetItem", "action": "throttle", "after": rng.randrange(50, 1000)},
    ]
    return [{**r, "times": 1} for r in certain] + STORM_FAULTS


# Log lines of the functions counted per run (what the concurrency and the faults made
# them do), by message.
LOG_EVENTS = {
    "own_write_recognized": ("own write found committed after its answer was lost",
                             "own alarm write found committed after its answer was lost",
                             "the write that refused ours is our own (answer lost)"),
    "lease_waits_started": ("another invocation is working on the incident; waiting for it",),
    "decided_again_after_conflict": ("state changed meanwhile; deciding again",),
    "own_lease_taken_over": ("the lease is this request's own (an earlier attempt); taking it over",),
    "steps_finished_for_another": ("finishing steps left by an earlier invocation",),
    "thread_waits": ("thread is being started by another invocation, waiting",),
    "record_after_post_retried": ("could not record the delivery after posting; trying again",
                                  "could not record the new thread after posting; trying again"),
    "progress_save_retried": ("could not save the run's progress; trying once more",),
}


def log_counts(out_dir: Path) -> dict[str, int]:
    counts = dict.fromkeys(LOG_EVENTS, 0)
    for path in sorted((out_dir / "logs").glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            for name, texts in LOG_EVENTS.items():
                if any(message.startswith(t) for t in texts):
                    counts[name] += 1
    return counts


# The storm's Slack pace: 50 ms between calls to one channel instead of Slack's 1 s.
# The concurrent storm is about DynamoDB and concurrency; at 1 s a channel it would
# last as long as #ops needs at one message a second (about 100 s), and the 1 s pace
# itself is asserted by the sequential storm (test_storm.py). 50 ms keeps the slot
# reservations (pace#<channel>, conditional writes under faults) in play.
STORM_SLACK_INTERVAL_MS = "50"


class StormStory(Story):
    """The story's setup with notify-fanout's channel pace set for the storm."""

    def extend_setup(self, common: dict[str, str], env: dict[str, dict[str, str]],
                     timeouts: dict[str, float]) -> None:
        env["notify-fanout"]["SLACK_CHANNEL_INTERVAL_MS"] = STORM_SLACK_INTERVAL_MS


@dataclass
class ConcurrentResult:
    plan: Plan
    story: Story
    seed: int
    concurrency: int
    idempotency: bool
    alarm_events: list[Any] = field(default_factory=list)
    notify_events: list[Any] = field(default_factory=list)
    notifications: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)
    front: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)
    seconds: float = 0.0
    drained: bool = False

    def applied(self) -> list[Delivery]:
        return applied_in_commit_order(self.commits, self.plan)

    def expected(self) -> dict[str, dict[str, Any]]:
        """The rule model replayed in the order the transitions were committed."""
        return expected_outcome(self.applied())

    def expected_in_delivery_order(self) -> dict[str, dict[str, Any]]:
        return expected_outcome(self.plan.deliveries)

    def incidents_by_key(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for item in self.story.emulator.ops_items.values():
            key = json.loads(item["OperationalData"]["/aws/dedup"]["Value"])["dedupString"]
            out.setdefault(key, []).append(item)
        return out

    def last_transition_lost(self) -> list[str]:
        """Alarms whose latest delivered transition is not the last one applied."""
        latest: dict[str, float] = {}
        for d in self.plan.deliveries:
            arn = alarm_arn(d.transition.kind, d.transition.vpn)
            latest[arn] = max(latest.get(arn, 0.0), d.transition.at)
        applied: dict[str, float] = {}
        for d in self.applied():
            arn = alarm_arn(d.transition.kind, d.transition.vpn)
            applied[arn] = d.transition.at
        return sorted(a for a, at in latest.items() if applied.get(a) != at)

    def resolved_per_incident(self) -> dict[str, dict[str, int]]:
        """Per OpsItem: resolved notifications published (distinct notification ids, and
        SNS messages) and posted to #ops."""
        out: dict[str, dict[str, int]] = {oid: {"published_ids": 0, "published": 0, "posted": 0}
                                          for oid in self.story.emulator.ops_items}
        ids: dict[str, set] = {}
        for n in self.notifications:
            if n["event"] == "resolved" and n.get("incident_ref") in out:
                out[n["incident_ref"]]["published"] += 1
                ids.setdefault(n["incident_ref"], set()).add(n.get("notification_id"))
        for oid, s in ids.items():
            out[oid]["published_ids"] = len(s)
        for oid, count in resolved_posts(self.story).items():
            if oid in out:
                out[oid]["posted"] = count
        return out

    def figures(self) -> dict[str, Any]:
        expected = self.expected()
        by_key = self.incidents_by_key()
        alarm_attempts = Counter(len(e.attempts) for e in self.alarm_events)
        notify_attempts = Counter(len(e.attempts) for e in self.notify_events)
        tops = top_level_counts(self.story)
        return {
            "seed": self.seed, "concurrency": self.concurrency, "idempotency": self.idempotency,
            "events_in": len(self.plan.deliveries),
            "distinct_transitions": len(self.plan.transitions),
            "vpn_connections": len({t.vpn for t in self.plan.transitions}),
            "transitions_applied": len(self.applied()),
            "incidents_expected": sum(v["opened"] for v in expected.values()),
            "incidents_expected_in_delivery_order": sum(
                v["opened"] for v in self.expected_in_delivery_order().values()),
            "incidents_opened": sum(len(v) for v in by_key.values()),
            "open_at_end_expected": sum(v["open"] for v in expected.values()),
            "open_at_end": sum(i["Status"] != "Resolved" for v in by_key.values() for i in v),
            "alarm_invocations": sum(alarm_attempts[k] * k for k in alarm_attempts),
            "alarm_events_retried": sum(v for k, v in alarm_attempts.items() if k > 1),
            "notifications": len(self.notifications),
            "notify_invocations": sum(notify_attempts[k] * k for k in notify_attempts),
            "notify_events_retried": sum(v for k, v in notify_attempts.items() if k > 1),
            "dead_lettered": len(self.dead_letters),
            "slack_top_level": sum(tops.values()),
            "slack_messages": len(self.story.slack.messages),
            "dynamodb_requests": self.front.get("requests", {}),
            "faults_injected": self.front.get("faults_by_kind", {}),
            "token_replays": self.front.get("token_replays", {}),
            "function_logs": self.logs,
            "seconds": round(self.seconds, 1),
        }


def incident_of(message: dict) -> str | None:
    """The OpsItem a top-level #ops message is about."""
    import re
    found = set(re.findall(r"OpsCenter (oi-[0-9a-f]{12})", json.dumps(message["blocks"])))
    return next(iter(found)) if len(found) == 1 else None


def top_level_counts(s: Story) -> Counter:
    return Counter(incident_of(m) for m in s.slack.top_level("ops"))


def resolved_posts(s: Story) -> Counter:
    """Per OpsItem: #ops messages posted (not edited) as a RESOLVED notification."""
    thread_of = {m["ts"]: incident_of(m) for m in s.slack.top_level("ops")}
    out: Counter = Counter()
    for m in s.slack.messages:
        if "ops" not in (m["channel"], m["channel_name"]):
            continue
        posted = m["edits"][0]["text"] if m["edits"] else m["text"]
        if "RESOLVED" in posted.split("·")[0]:
            out[thread_of.get(m["thread_ts"] or m["ts"])] += 1
    return out


def _notification_facts(body: dict) -> dict:
    attrs = body.get("MessageAttributes", {})
    facts = {"event": attrs.get("event_type", {}).get("Value"), "message_id": body["MessageId"]}
    try:
        n = json.loads(json.loads(body["Message"])["metadata"]["additionalContext"]["pipeline"])
        facts.update(incident_ref=n.get("incident_ref"), notification_id=n.get("notification_id"))
    except (ValueError, KeyError, TypeError):
        pass
    return facts


def run_concurrent_storm(out_dir: Path, n_events: int = 1000, n_vpns: int = 20, seed: int = 10,
                         concurrency: int = 4, faults: list[dict] | None = None, idempotency: bool = True,
                         backoff_factor: float = 0.05, limit_s: float = 900.0) -> ConcurrentResult:
    """The storm as Lambda delivers it (see the module doc). Bounded by `limit_s`."""
    plan = plan_storm(n_events, n_vpns, seed)
    procs = story.Processes()
    out_dir.mkdir(parents=True, exist_ok=True)
    moto = story.Moto(procs, out_dir / "moto_server.log")
    try:
        moto.start()
        s = StormStory("OpsCenter", moto, procs, out_dir, pace=0)
        s.instances = {"alarm-to-incident": concurrency, "notify-fanout": concurrency}
        result = ConcurrentResult(plan, s, seed, concurrency, idempotency)
        try:
            s.setup()
            a2i = s.functions["alarm-to-incident"].start_async(backoff_factor, s.send_to_failed_events)
            nf = s.functions["notify-fanout"].start_async(backoff_factor, s.send_to_failed_events)
            s.dynamo.configure({"rules": storm_faults(seed) if faults is None else faults, "seed": seed,
                                "idempotency": idempotency})
            sqs = s.moto.client("sqs")
            started = time.monotonic()
            result.alarm_events = [a2i.submit(wire_event(d)) for d in plan.deliveries]

            def pump() -> int:
                moved = 0
                for _ in range(100):  # bounded: 10 messages per receive
                    got = sqs.receive_message(QueueUrl=s.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                              MessageAttributeNames=["All"])
                    if not got.get("Messages"):
                        break
                    for m in got["Messages"]:
                        body = json.loads(m["Body"])
                        result.notifications.append(_notification_facts(body))
                        result.notify_events.append(nf.submit(story.sns_lambda_event(body, s.subscription)))
                        sqs.delete_message(QueueUrl=s.queue_url, ReceiptHandle=m["ReceiptHandle"])
                        moved += 1
                return moved

            deadline = started + limit_s
            while time.monotonic() < deadline:
                moved = pump()
                if not moved and not a2i.counts()["open"] and not nf.counts()["open"] and not pump():
                    result.drained = True
                    break
                time.sleep(0.2)
            result.seconds = time.monotonic() - started
            result.dead_letters = s.failed_events()
            result.commits = s.dynamo.commit_log()
            result.front = s.dynamo.stats()
        finally:
            try:
                for f in s.functions.values():
                    f.stop()  # their logs are complete once they stopped
                result.logs = log_counts(out_dir)
                (out_dir / "storm-figures.json").write_text(json.dumps(result.figures(), indent=2, default=str))
                (out_dir / "dead-letters.json").write_text(json.dumps(result.dead_letters, indent=2, default=str))
                (out_dir / "dynamodb-commits.json").write_text(json.dumps(result.commits, default=str))
                s.save()
            except Exception as e:  # the figures are a convenience; keep the run's own error
                print(f"storm: could not save the figures: {e}", file=sys.stderr)
            finally:
                s.close()
        return result
    finally:
        procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--vpns", type=int, default=20)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--drain-every", type=int, default=1,
                    help="alarm events between deliveries of the queued notifications")
    ap.add_argument("--shuffled", action="store_true",
                    help="deliver each batch of notifications in a random order (as SNS may)")
    ap.add_argument("--out", type=Path, default=story.ROOT / ".demo" / "storm")
    ap.add_argument("--concurrency", type=int, default=0,
                    help="run as Lambda would: N instances per function, asynchronous invocation, DynamoDB faults")
    ap.add_argument("--no-idempotency", action="store_true",
                    help="with --concurrency: the DynamoDB front ignores ClientRequestToken (moto's behaviour)")
    ap.add_argument("--backoff", type=float, default=0.05,
                    help="with --concurrency: factor on Lambda's 60 s / 120 s between attempts")
    args = ap.parse_args(argv)
    if args.concurrency:
        c = run_concurrent_storm(args.out, args.events, args.vpns, args.seed, args.concurrency,
                                 idempotency=not args.no_idempotency, backoff_factor=args.backoff)
        print(json.dumps(c.figures(), indent=2, default=str))
        return 0
    r = run_storm(args.out, args.events, args.vpns, args.seed, args.drain_every, shuffled=args.shuffled)
    print(json.dumps(r.figures(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())


