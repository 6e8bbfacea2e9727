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
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
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
    args = ap.parse_args(argv)
    r = run_storm(args.out, args.events, args.vpns, args.seed, args.drain_every, shuffled=args.shuffled)
    print(json.dumps(r.figures(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())


