#!/usr/bin/env python3
"""The quiet story (issue 15): maintenance windows, silences and the reconciliation sweep.

With the responders' story's AWS, Slack and functions (slack-actions behind its Function
URL, the actions queue, moto's EventBridge Scheduler), plus alarm states in the emulator
that `DescribeAlarms` returns:

  tunnel 1 goes down and an incident opens as usual; then a maintenance window starts
  (an alarm mute rule on the VPN's alarms): tunnel 2 goes down and its alarm's
  EventBridge event carries `muteDetail`, so alarm-to-incident records it, notes it on
  the incident and pages no one (Slack unchanged); both tunnels come back inside the
  window, the muted OK of the both-tunnels alarm arrives through EventBridge (recorded),
  but the OK of the tunnel-down alarm is missed (its direct action muted, its event
  lost), so the incident stays open; the scheduled reconciliation sweep reads the alarms
  (`DescribeAlarms`), finds the OK and resolves the incident, saying so in the thread.
  Then Alice silences the VPN from Slack; tunnel 1 goes down again, the alarm is held
  back (delivered twice: one transition) and shown on `/incident silences`; Alice lifts
  the silence while the alarm still fires, the timer at its end runs the sweep, and the
  incident opens then.

    python3 local/story.py --story quiet [--backend OpsCenter|IncidentManager|both]
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from respond_story import ALICE, MALLORY, POLICY, RespondStory  # noqa: E402
from story import (ACCOUNT, ANY_TUNNEL_ALARM, BOTH_TUNNELS_ALARM, REGION, STACK, TUNNEL_1,  # noqa: E402
                   TUNNEL_2, VPN, Invocation, StoryError, direct_alarm, eventbridge_both_tunnels, iso_alarm,
                   load_event, short)

KEY = f"VPN connection {VPN} is DOWN"
MUTE_RULE = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm-mute-rule:{STACK}-vpn-maintenance"
ALARM_TO_INCIDENT = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:alarm-to-incident"
# How far the timers are moved forward to fire a silence's "lifted" timer (one minute out).
LIFT_JUMP_S = 90


def mute_detail(start: float, end: float) -> dict:
    return {"mutedByArn": MUTE_RULE, "muteWindowStart": iso_alarm(start), "muteWindowEnd": iso_alarm(end)}


def muted_both_tunnels(state: str, previous: str, at: float, prev_at: float, window: tuple[float, float]) -> dict:
    """The both-tunnels alarm's EventBridge event while the mute rule mutes it."""
    ev = eventbridge_both_tunnels(state, previous, at, prev_at)
    ev["detail"]["muteDetail"] = mute_detail(*window)
    return ev


def eventbridge_tunnel_down(direct: dict) -> dict:
    """The same transition as the direct action `direct`, as its EventBridge event
    (events/eventbridge-vpn-tunnel-down-alarm.json)."""
    ev = copy.deepcopy(load_event("eventbridge-vpn-tunnel-down-alarm.json"))
    ev["id"] = str(uuid.uuid4())
    ev["time"] = direct["time"][:19] + "Z"
    ev["detail"] = copy.deepcopy(direct["alarmData"])
    return ev


class QuietStory(RespondStory):
    TITLE = "Quiet story (maintenance windows, silences, the sweep)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sweeps: list[dict] = []
        self.marks: dict[str, int] = {}
        self.held: list[dict] = []
        self.final_book: dict = {}

    # ------------------------------------------------------------ setup

    def extend_setup(self, common, env, timeouts) -> None:
        super().extend_setup(common, env, timeouts)
        scheduler = self.moto.client("scheduler")
        self.hold_group = f"{STACK}-{self.backend.lower()}-holds"
        scheduler.create_schedule_group(Name=self.hold_group)
        holds = {"HOLD_SCHEDULE_GROUP": self.hold_group,
                 "HOLD_SCHEDULER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/{STACK}-hold-scheduler"}
        env["alarm-to-incident"].update(holds)
        env["slack-actions"].update({**holds, "HOLD_TARGET_ARN": ALARM_TO_INCIDENT,
                                     # The on-call group may also silence.
                                     "SLACK_ACTION_POLICY": json.dumps({**POLICY, "silence": POLICY["note"]})})

    # ------------------------------------------------------------ helpers

    def alarm_state(self, name: str, state: str, at: float, statistic: str) -> None:
        """What CloudWatch knows about the alarm (what DescribeAlarms answers)."""
        value, verb = ("1.0", "was not less than") if state == "OK" else ("0.0", "was less than")
        reason = (f"Threshold Crossed: 1 out of the last 1 datapoints [{value}] {verb} the threshold (1.0) "
                  f"(minimum 1 datapoint for {'ALARM -> OK' if state == 'OK' else 'OK -> ALARM'} transition).")
        self.emulator.apply_scenario({"alarms": [{"name": name, "state": state, "at": at, "statistic": statistic,
                                                  "dimensions": {"VpnId": VPN}, "reason": reason}]})

    def alarm_result(self, inv: Invocation) -> str:
        try:
            return inv.result["results"][0]["action"]
        except (TypeError, KeyError, IndexError):
            return "?"

    def deliver(self, event: dict, how: str) -> str:
        inv = self.deliver_alarm(event, how)
        action = self.alarm_result(inv)
        self.held.append({"how": how, "action": action})
        return action

    def sweep(self, reason: str) -> dict:
        inv = self.functions["alarm-to-incident"].invoke({"sweep": {"reason": reason}}, retries=0)
        self.show_invocation(inv, f" <- sweep ({reason})")
        if not inv.ok:
            raise StoryError(f"the sweep failed: {short(inv.result, 300)}")
        self.sweeps.append({"reason": reason, "result": inv.result})
        return inv.result

    def slack_posts(self) -> int:
        """Messages and edits in channels (ephemeral answers to a person are not counted)."""
        return sum(1 for e in self.slack.events if e["kind"] in ("post", "update"))

    # ------------------------------------------------------------ the story

    def run(self) -> None:
        self.say("=" * 100)
        self.say(f"{self.TITLE}, backend {self.backend}: AWS on {self.moto.url} (moto) and {self.emulator.url} "
                 f"(emulator, DescribeAlarms), Slack on {self.slack.url}")

        self.step("Tunnel 1 goes DOWN: its alarm opens an incident (direct action and EventBridge: one transition)")
        t0 = time.time()
        self.alarm_times["any_alarm"] = t0
        self.emulator.apply_scenario({"tunnels": [{"vpn_connection_id": VPN, "outside_ip": TUNNEL_1,
                                                   "status": "DOWN", "at": t0}]})
        self.alarm_state(ANY_TUNNEL_ALARM, "ALARM", t0, "Minimum")
        first = direct_alarm("ALARM", "OK", t0, t0 - 86400)
        self.deliver(first, "direct alarm action")
        self.deliver(eventbridge_tunnel_down(first), "EventBridge (the template's AlarmEventsRule)")
        self.pump()
        self.wait()

        self.step(f"A maintenance window starts: mute rule {MUTE_RULE.rsplit(':', 1)[-1]} mutes the VPN's alarms")
        window = (time.time() - 1, time.time() + 1800)
        self.say(f"    window {iso_alarm(window[0])} to {iso_alarm(window[1])}: alarm actions (SNS, Lambda) "
                 f"do not run; EventBridge events still come, with detail.muteDetail")
        self.marks["window"] = self.slack_posts()
        self.marks["window_notifications"] = len(self.deliveries)

        self.step("Inside the window tunnel 2 goes DOWN: the both-tunnels alarm fires, muted")
        t_both = time.time()
        self.emulator.apply_scenario({"tunnels": [{"vpn_connection_id": VPN, "outside_ip": TUNNEL_2,
                                                   "status": "DOWN", "at": t_both}]})
        self.alarm_state(BOTH_TUNNELS_ALARM, "ALARM", t_both, "Maximum")
        self.say("    direct alarm action: muted, not delivered")
        self.deliver(muted_both_tunnels("ALARM", "OK", t_both, t_both - 86400, window), "EventBridge, muted")
        self.pump()
        self.wait()

        self.step("Both tunnels come back inside the window")
        t_both_ok = time.time()
        self.emulator.apply_scenario({"tunnels": [
            {"vpn_connection_id": VPN, "outside_ip": TUNNEL_2, "status": "UP", "at": t_both_ok},
            {"vpn_connection_id": VPN, "outside_ip": TUNNEL_1, "status": "UP", "at": t_both_ok + 0.2}]})
        self.alarm_state(BOTH_TUNNELS_ALARM, "OK", t_both_ok, "Maximum")
        self.deliver(muted_both_tunnels("OK", "ALARM", t_both_ok, t_both, window),
                     "EventBridge, muted OK (resolving is never muted)")
        t_ok = t_both_ok + 0.2
        self.alarm_times["any_ok"] = t_ok
        self.alarm_state(ANY_TUNNEL_ALARM, "OK", t_ok, "Minimum")
        self.say(f"    {ANY_TUNNEL_ALARM} is OK at {iso_alarm(t_ok)}: its direct action is muted and its "
                 f"EventBridge event is lost (say the rule was not deployed yet): the pipeline never hears of it")
        self.pump()
        self.marks["window_end_posts"] = self.slack_posts()
        self.say(f"    Slack during the window: {self.marks['window_end_posts'] - self.marks['window']} new "
                 f"message(s) or edit(s)")
        self.say(f"    the incident is still open: {self.record().get('status')}")
        self.wait()

        self.step("The scheduled reconciliation sweep reads the alarms and finds the OK")
        self.sweep("scheduled")
        self.pump()
        self.say(f"    the incident now: {self.record().get('status')}")
        self.wait()

        self.step(f"{ALICE.name} silences the VPN from Slack for the next piece of work")
        self.act(ALICE, f"/incident silence {VPN} 1h", lambda: self.app.command(
            ALICE, f"silence {VPN} 1h customer gateway firmware upgrade"))
        self.act(MALLORY, f"/incident silence {VPN} 1h (not allowed)", lambda: self.app.command(
            MALLORY, f"silence {VPN} 1h"))
        self.marks["silence"] = self.slack_posts()
        self.wait()

        self.step("Tunnel 1 goes DOWN again under the silence: recorded, held back, nobody paged")
        t2 = time.time()
        self.alarm_times["silenced_alarm"] = t2
        self.emulator.apply_scenario({"tunnels": [{"vpn_connection_id": VPN, "outside_ip": TUNNEL_1,
                                                   "status": "DOWN", "at": t2}]})
        self.alarm_state(ANY_TUNNEL_ALARM, "ALARM", t2, "Minimum")
        again = direct_alarm("ALARM", "OK", t2, t_ok)
        self.deliver(again, "direct alarm action")
        self.deliver(eventbridge_tunnel_down(again), "EventBridge")
        self.pump()
        self.act(ALICE, "/incident silences", lambda: self.app.command(ALICE, "silences"))
        self.marks["silence_end_posts"] = self.slack_posts()
        self.wait()

        self.step(f"The work is done but tunnel 1 is still DOWN: {ALICE.name} lifts the silence")
        book = self.silence_book()
        sid = book["silences"][0]["id"] if book.get("silences") else "?"
        self.act(ALICE, f"/incident unsilence {sid}", lambda: self.app.command(ALICE, f"unsilence {sid}"))
        self.say("    one minute later the timer set when it was lifted runs the sweep")
        self.fire_due(LIFT_JUMP_S, group=self.hold_group)
        self.say(f"    the incident now: {self.record().get('status')}")

        self.final_book = self.silence_book()

        self.step("Where things stand")
        self.show_incidents()
        self.show_slack_and_problems()

    def silence_book(self) -> dict:
        item = self.moto.client("dynamodb").get_item(TableName=self.table, Key={"pk": {"S": "silences"}},
                                                     ConsistentRead=True).get("Item") or {}
        return json.loads(item["book"]["S"]) if "book" in item else {}

    def save(self) -> None:
        super().save()
        (self.out_dir / "quiet.json").write_text(json.dumps(
            {"sweeps": self.sweeps, "deliveries": self.held, "marks": self.marks,
             "silences": self.final_book, "schedules_fired": self.fired}, indent=2, default=str))
