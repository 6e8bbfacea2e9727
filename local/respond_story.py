#!/usr/bin/env python3
"""The responders' story (issue 11): the same VPN incident, but people act from Slack.

With the alarm story's AWS, Slack and functions, plus slack-actions behind its (local)
Function URL, the actions queue (moto SQS, worked as Lambda's event source mapping
would), EventBridge Scheduler (moto; due schedules fired by the story) and the
escalation topic (moto SNS, read through an SQS subscription like a pager would):

  tunnel 1 goes down, an incident opens; Alice looks (`/incident list`, `show`); tunnel 2
  goes down and the incident becomes critical; nobody acknowledges, so 16 minutes later
  (for the timers) it escalates: a second mention in the thread and a page; requests
  that must change nothing (bad signature, stale timestamp, replay, a user not allowed);
  Alice acknowledges (owner, escalation cancelled, the next timer never fires); she adds
  a note through the modal; Bob re-runs the diagnosis; tunnel 2 comes back; Alice
  resolves the incident and the post-incident summary lands in the thread and on the
  incident; Bob declares an incident no alarm caught.

    python3 local/story.py --story respond [--backend OpsCenter|IncidentManager|both]
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import slack_actions as sa  # noqa: E402
from slack_sink import readable  # noqa: E402
from story import (ACCOUNT, AUTOMATION_ROLE, FUNCTIONS, PSK_FAILURE,  # noqa: E402
                   REGION, RESPONSE_PLAN, STACK, TUNNEL_1, TUNNEL_2, VPN, Invocation, Story, StoryError,
                   direct_alarm, eventbridge_both_tunnels, short, tunnel_log)

SIGNING_SECRET = "local-demo-signing-secret-0123456789abcdef"
ALICE = sa.Person("U0ALICE", "alice")
BOB = sa.Person("U0BOB", "bob")
MALLORY = sa.Person("U0MALLORY", "mallory")
CAROL = sa.Person("U0CAROL", "carol")
# A button of an older message (or another app): slack-actions does not know it.
UNKNOWN_ACTION = "incident.escalate_v0"
ONCALL_GROUP = "S0ONCALL"
# Who may do what: the on-call group everything; Bob (not on call) may also declare and
# re-run; anyone else nothing (no "default": deny by default).
POLICY = {"acknowledge": {"usergroups": [ONCALL_GROUP]}, "resolve": {"usergroups": [ONCALL_GROUP]},
          "note": {"usergroups": [ONCALL_GROUP]}, "rerun": {"users": [BOB.id], "usergroups": [ONCALL_GROUP]},
          "declare": {"users": [BOB.id], "usergroups": [ONCALL_GROUP]}, "read": {"usergroups": [ONCALL_GROUP]}}
ESCALATION = {"ESCALATION_MIN_IMPACT": "1", "ESCALATION_AFTER_MINUTES": "15", "ESCALATION_REPEAT_MINUTES": "15",
              "ESCALATION_MAX_ATTEMPTS": "3"}
# How far the timers are moved forward when nobody answers (just past the first escalation).
TIMER_JUMP_S = 16 * 60
KEY = f"VPN connection {VPN} is DOWN"


class RespondStory(Story):
    FUNCTIONS = FUNCTIONS + ("slack-actions",)
    TITLE = "Responders' story"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pages: list[dict] = []
        self.answers: list[dict] = []   # what slack-actions answered over HTTP
        self.fired: list[dict] = []     # schedules fired
        self.summary_text = ""
        self.incident_summary = ""
        self.final_record: dict = {}
        self.card_buttons: list[str] = []

    # ------------------------------------------------------------ setup

    def extend_setup(self, common, env, timeouts) -> None:
        sqs, sns, sm, scheduler = (self.moto.client(s) for s in ("sqs", "sns", "secretsmanager", "scheduler"))
        n = f"{STACK}-{self.backend.lower()}"
        self.escalation_topic = sns.create_topic(Name=f"{n}-escalation")["TopicArn"]
        self.pager_url = sqs.create_queue(QueueName=f"{n}-pager")["QueueUrl"]
        pager_arn = sqs.get_queue_attributes(QueueUrl=self.pager_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"]
        sns.subscribe(TopicArn=self.escalation_topic, Protocol="sqs", Endpoint=pager_arn,
                      Attributes={"RawMessageDelivery": "false"})
        self.group = f"{n}-escalations"
        scheduler.create_schedule_group(Name=self.group)
        # The #ops bot destination offers the action buttons and names the escalation group.
        slack_secret = json.loads(sm.get_secret_value(SecretId=self.secret_arn)["SecretString"])
        slack_secret["destinations"]["ops"].update({"actions": True, "escalation_mention": f"subteam^{ONCALL_GROUP}"})
        sm.put_secret_value(SecretId=self.secret_arn, SecretString=json.dumps(slack_secret))
        # The on-call user group; Mallory is in the workspace but not in it.
        self.slack.usergroups = {ONCALL_GROUP: [ALICE.id, "U0CAROL"]}
        escalation = {**ESCALATION, "ESCALATION_TOPIC_ARN": self.escalation_topic,
                      "ESCALATION_TARGET_ARN": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:slack-actions",
                      "ESCALATION_SCHEDULER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/{STACK}-escalation-scheduler",
                      "ESCALATION_SCHEDULE_GROUP": self.group}
        env["alarm-to-incident"].update(escalation)
        self.add_slack_actions(env, timeouts, POLICY, escalation)

    def add_slack_actions(self, env, timeouts, policy: dict, extra: dict) -> None:
        """slack-actions behind its Function URL: the actions queue (and its dead-letter
        queue), the signing secret, its environment (`policy`, then `extra` on top) and
        the Slack app that signs what people do."""
        sqs, sm = (self.moto.client(s) for s in ("sqs", "secretsmanager"))
        n = f"{STACK}-{self.backend.lower()}"
        dlq = sqs.create_queue(QueueName=f"{n}-actions-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.actions_url = sqs.create_queue(QueueName=f"{n}-actions", Attributes={
            "VisibilityTimeout": "180",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})})["QueueUrl"]
        self.actions_dlq = dlq
        self.actions_arn = sqs.get_queue_attributes(QueueUrl=self.actions_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self.signing_arn = sm.create_secret(Name=f"{n}-slack-signing",
                                            SecretString=json.dumps({"signing_secret": SIGNING_SECRET}))["ARN"]
        env["slack-actions"] = {
            "SLACK_SIGNING_SECRET_ARN": self.signing_arn, "SLACK_SECRET_ARN": self.secret_arn,
            "SLACK_ACTION_POLICY": json.dumps(policy), "SLACK_API_URL": self.slack.url + "/api",
            "SLACK_RESPONSE_URL_PREFIXES": self.slack.url + "/actions/", "SLACK_SECRET_CACHE_SECONDS": "300",
            "STATE_TABLE_NAME": self.table, "ACTIONS_QUEUE_URL": self.actions_url,
            "NOTIFICATION_TOPIC_ARN": self.topic, "INCIDENT_BACKEND": self.backend,
            "AUTOMATION_ROLE_ARN": AUTOMATION_ROLE,
            **({"RESPONSE_PLAN_ARN": RESPONSE_PLAN} if self.backend == "IncidentManager" else {}),
            **extra}
        timeouts["slack-actions"] = 30.0
        self.app = sa.SlackApp(SIGNING_SECRET, self.slack, self._invoke_url)

    def _invoke_url(self, event: dict) -> Invocation:
        return self.functions["slack-actions"].invoke(event, timeout_s=30)

    # ------------------------------------------------------------ moving things along

    def pump_more(self) -> bool:
        sqs = self.moto.client("sqs")
        moved = False
        for inv in sa.drain_queue(sqs, self.actions_url, self.actions_arn,
                                  lambda ev: self.functions["slack-actions"].invoke(ev, timeout_s=30)):
            moved = True
            failed = (inv.result or {}).get("batchItemFailures") if inv.ok and isinstance(inv.result, dict) else None
            self.show_invocation(inv, f" <- actions queue ({len(inv.payload['Records'])} change(s))")
            if not inv.ok or failed:
                self.problems.append(f"slack-actions failed queued changes: {short(inv.result, 300)}")
        pager = getattr(self, "pager_url", None)
        for m in (sqs.receive_message(QueueUrl=pager, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=0).get("Messages", []) if pager else []):
            body = json.loads(m["Body"])
            self.pages.append({"subject": body.get("Subject"), "message": body.get("Message"), "at": time.time()})
            self.say(f"      PAGE (escalation topic): {body.get('Subject')}")
            sqs.delete_message(QueueUrl=self.pager_url, ReceiptHandle=m["ReceiptHandle"])
        return moved

    def top(self, key: str = KEY) -> dict:
        """The incident's top-level message in #ops (where its first notification started the thread)."""
        for d in self.deliveries:
            if d.notification and d.notification.get("incident_key") == key:
                for p in d.slack_posts:
                    if p["channel"] == "C0LOCALOPS" and not p["thread_ts"]:
                        return next(m for m in self.slack.messages if m["ts"] == p["ts"] and m["channel"] == p["channel"])
        raise StoryError(f"no top-level Slack message for {key!r}")

    def answer(self, who: sa.Person, label: str, inv: Invocation, mark: int) -> dict:
        """Shows what `who` saw: the HTTP answer (slash command) and ephemeral replies."""
        if not inv.ok:
            raise StoryError(f"slack-actions failed on {label}: {short(inv.result, 300)}")
        res = inv.result if isinstance(inv.result, dict) else {}
        status = res.get("statusCode")
        body = res.get("body") or ""
        shown = ""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            shown = parsed.get("text", "")
        elif body:
            shown = body
        self.answers.append({"who": who.id, "label": label, "status": status, "body": body,
                             "ms": round(inv.duration_ms, 1)})
        self.say(f"    {who.name}: {label} -> HTTP {status} in {inv.duration_ms:.0f} ms"
                 + (f": {short(readable(shown), 140)}" if shown else ""))
        if isinstance(parsed, dict) and parsed.get("blocks"):
            for b in parsed["blocks"]:
                t = (b.get("text") or {}).get("text") if isinstance(b.get("text"), dict) else None
                if t:
                    for ln in readable(t).splitlines()[:8]:
                        self.say(f"        | {ln}")
        for r in self.slack.responses[mark:]:
            self.say(f"      ephemeral to {r['user']}: {short(readable(r['text']), 140)}")
        self.report_aws_calls()
        return res

    def act(self, who: sa.Person, label: str, send) -> dict:
        mark = len(self.slack.responses)
        res = self.answer(who, label, send(), mark)
        mark = len(self.slack.responses)
        self.pump()
        for r in self.slack.responses[mark:]:
            self.say(f"      ephemeral to {r['user']}: {short(readable(r['text']), 140)}")
        return res

    def fire_due(self, jump_s: float, group: str | None = None) -> list[Invocation]:
        """Fires the schedules of `group` (the escalation group by default) due `jump_s` from
        now, invoking the function each targets, as EventBridge Scheduler would."""
        group = group or self.group
        scheduler = self.moto.client("scheduler")
        now = time.time() + jump_s
        pending = sa.schedules(scheduler, group)
        self.say(f"    schedules in {group}: " + (", ".join(
            f"{s['name']} at {s['expression']} {s['timezone'] or ''}".strip() for s in pending) or "none"))
        fired = []
        for s in sa.due_schedules(scheduler, group, now):
            target = s["target"]["Arn"].rsplit(":", 1)[-1]
            inv = sa.fire(scheduler, group, s, lambda ev: self.functions[target].invoke(ev, timeout_s=60))
            self.fired.append({"name": s["name"], "input": json.loads(s["target"]["Input"]), "ok": inv.ok,
                               "result": inv.result, "target": s["target"]["Arn"]})
            self.show_invocation(inv, f" <- schedule {s['name']}")
            if not inv.ok:
                self.problems.append(f"schedule {s['name']} failed: {short(inv.result, 300)}")
            fired.append(inv)
        if not fired:
            self.say("    nothing due")
        self.pump()
        return fired

    def incident_item(self) -> dict:
        item = self.dynamodb().get_item(TableName=self.table, Key={"pk": {"S": f"incident#{KEY}"}},
                                                     ConsistentRead=True).get("Item") or {}
        return item

    def record(self) -> dict:
        item = self.incident_item()
        return json.loads(item["record"]["S"]) if "record" in item else {}

    # ------------------------------------------------------------ the story

    def run(self) -> None:
        self.say("=" * 100)
        self.say(f"{self.TITLE}, backend {self.backend}: AWS on {self.moto.url} (moto: SNS, SQS, DynamoDB, "
                 f"Secrets Manager, EventBridge Scheduler) and {self.emulator.url} (emulator), Slack on {self.slack.url}")
        self.say(f"    people: {ALICE.name} ({ALICE.id}, on call: {ONCALL_GROUP}), {BOB.name} ({BOB.id}, may declare "
                 f"and re-run), {MALLORY.name} ({MALLORY.id}, no rights); escalation at impact 1 after 15 min")
        self.say("    function cold starts: " + ", ".join(
            f"{n} {f.cold_start_ms:.0f} ms" for n, f in self.functions.items()))
        group = f"/aws/vpn/{VPN}"

        self.step("Tunnel 1 goes DOWN (pre-shared key mismatch); its alarm opens an incident")
        t0 = time.time()
        self.alarm_times["any_alarm"] = t0
        self.emulator.apply_scenario({
            "tunnels": [{"vpn_connection_id": VPN, "outside_ip": TUNNEL_1, "status": "DOWN", "at": t0}],
            "log_records": [{"log_group": group, "stream": f"{VPN}-{TUNNEL_1}", "records": [
                tunnel_log(TUNNEL_1, t0 - 50 + 10 * i, PSK_FAILURE, "down", "down") for i in range(4)]}]})
        self.deliver_alarm(direct_alarm("ALARM", "OK", t0, t0 - 86400), "direct alarm action")
        self.pump()
        self.card_buttons = sa.buttons(self.top())
        self.say(f"    top-level message buttons: {self.card_buttons}")
        self.wait()

        self.step(f"{ALICE.name} looks: /incident list, /incident show")
        self.act(ALICE, "/incident list", lambda: self.app.command(ALICE, "list"))
        self.act(ALICE, "/incident show vpn-0f1e", lambda: self.app.command(ALICE, f"show {VPN}"))
        self.wait()

        self.step("Tunnel 2 goes DOWN too: the incident becomes critical; nobody owns it, so its escalation timer is set")
        t_both = time.time()
        self.alarm_times["both_alarm"] = t_both
        self.emulator.apply_scenario({"tunnels": [
            {"vpn_connection_id": VPN, "outside_ip": TUNNEL_2, "status": "DOWN", "at": t_both}]})
        self.deliver_alarm(eventbridge_both_tunnels("ALARM", "OK", t_both, t_both - 86400), "EventBridge")
        self.pump()
        self.say(f"    escalation on the record: {self.record().get('escalation')}")
        self.wait()

        self.step("Nobody acknowledges: 16 minutes later (for the timers) the escalation fires")
        self.fire_due(TIMER_JUMP_S)
        self.say(f"    escalation on the record now: {self.record().get('escalation')}")
        self.wait()

        self.step("Requests that must change nothing")
        before = self.incident_item().get("version")
        body = self.app.command_body(ALICE, "declare Forged incident")
        ts = int(time.time())
        self.act(ALICE, "forged signature", lambda: self.app.post(body, signature="v0=" + "0" * 64, timestamp=ts))
        old = int(time.time()) - 600
        self.act(ALICE, "captured request 10 minutes old",
                 lambda: self.app.post(body, timestamp=old))
        self.act(MALLORY, "Resolve (not allowed)", lambda: self.app.click(MALLORY, self.top(), "resolve", KEY))
        self.act(ALICE, "no Slack headers at all", lambda: self._invoke_url(sa.url_event(body, None, None)))
        # Verified but not understood: the person is told why (ephemeral, through the
        # response URL: Slack ignores the HTTP body of a button's answer).
        unknown = self.app.click_body(CAROL, self.top(), "acknowledge", KEY).replace(
            sa.ACTION_IDS["acknowledge"].encode(), UNKNOWN_ACTION.encode())
        self.act(CAROL, "a button slack-actions does not know", lambda: self.app.post(unknown))
        self.act(CAROL, "a button press without its user", lambda: self.app.interaction(CAROL, {
            "type": "block_actions", "team": {"id": sa.TEAM},
            "actions": [{"action_id": sa.ACTION_IDS["resolve"], "value": KEY, "type": "button"}]}))
        after = self.incident_item().get("version")
        self.say(f"    incident item version before {before}, after {after}: "
                 + ("unchanged" if before == after else "CHANGED"))
        if before != after:
            self.problems.append("a refused request changed the incident")
        self.wait()

        self.step(f"{ALICE.name} presses Acknowledge: she owns it, the escalation is cancelled")
        click = self.app.click_body(ALICE, self.top(), "acknowledge", KEY)
        ts = int(time.time())
        self.act(ALICE, "Acknowledge", lambda: self.app.post(click, timestamp=ts))
        self.act(ALICE, "the same signed press again (replay)", lambda: self.app.post(click, timestamp=ts))
        rec = self.record()
        self.say(f"    roles: {rec.get('roles')}; escalation: {rec.get('escalation')}")
        self.wait()

        self.step("The timers move on: nothing fires for the acknowledged incident")
        self.fire_due(TIMER_JUMP_S * 4)
        inv = self.functions["slack-actions"].invoke({"escalation": {"incidentKey": KEY, "attempt": 2}}, timeout_s=30)
        self.show_invocation(inv, " <- a late copy of attempt 2 (deleted schedule)")
        self.pump()
        self.wait()

        self.step(f"{ALICE.name} adds a note: Add note opens a modal, she submits it")
        mark = len(self.slack.views)
        self.act(ALICE, "Add note", lambda: self.app.click(ALICE, self.top(), "note", KEY))
        if len(self.slack.views) == mark:
            raise StoryError("the Add note button opened no modal")
        view = self.slack.views[-1]["view"]
        self.say(f"    modal opened: {short((view.get('title') or {}).get('text', ''), 80)}")
        self.act(ALICE, "submit the note", lambda: self.app.submit_note(
            ALICE, view, "Customer confirms their firewall was changed at 09:55; asked them to restore the PSK."))
        self.wait()

        self.step(f"{BOB.name} presses Re-run diagnosis")
        self.act(BOB, "Re-run diagnosis", lambda: self.app.click(BOB, self.top(), "rerun", KEY))
        self.wait()

        self.step("Tunnel 2 comes back")
        t_both_ok = time.time()
        self.alarm_times["both_ok"] = t_both_ok
        self.emulator.apply_scenario({"tunnels": [
            {"vpn_connection_id": VPN, "outside_ip": TUNNEL_2, "status": "UP", "at": t_both_ok}]})
        self.deliver_alarm(eventbridge_both_tunnels("OK", "ALARM", t_both_ok, t_both), "EventBridge")
        self.pump()
        self.wait()

        self.step(f"{ALICE.name} presses Resolve: the post-incident summary closes the thread")
        self.act(ALICE, "Resolve", lambda: self.app.click(ALICE, self.top(), "resolve", KEY))
        self.wait()

        self.step("Tunnel 1 comes back: its alarm returns to OK (the incident is resolved already)")
        t_ok = time.time()
        self.alarm_times["any_ok"] = t_ok
        self.emulator.apply_scenario({"tunnels": [
            {"vpn_connection_id": VPN, "outside_ip": TUNNEL_1, "status": "UP", "at": t_ok}]})
        self.deliver_alarm(direct_alarm("OK", "ALARM", t_ok, t0), "direct alarm action")
        self.pump()
        self.wait()

        self.step(f"{BOB.name} declares an incident no alarm caught")
        self.act(BOB, "/incident declare --impact 2 Payments API slow",
                 lambda: self.app.command(BOB, "declare --impact 2 Payments API answers slowly for EU customers"))
        self.act(ALICE, "/incident list", lambda: self.app.command(ALICE, "list"))

        self.step("Where things stand")
        self.final_record = self.record()
        self.show_incidents()
        self.summary_text = self.post_incident_summary()
        self.incident_summary = self.summary_on_incident()
        self.say()
        self.say("Post-incident summary (the resolved reply in the thread):")
        for ln in self.summary_text.splitlines():
            self.say("    " + ln)
        self.say()
        self.say("Post-incident summary (attached to the incident):")
        for ln in self.incident_summary.splitlines():
            self.say("    " + ln)
        self.say()
        self.say("Slack, as a person would see it:")
        for ln in self.slack.render().splitlines():
            self.say("    " + ln)
        self.say()
        self.say("Ephemeral replies (only the person saw them):")
        for r in self.slack.responses:
            self.say(f"    to {r['user']}: {short(readable(r['text']), 150)}")
        if self.problems:
            self.say()
            self.say(f"{len(self.problems)} problem(s) in this story:")
            for p in self.problems:
                self.say(f"  - {p}")

    def post_incident_summary(self) -> str:
        """The resolved reply of the incident's thread, as a person reads it."""
        from slack_sink import plain
        top = self.top()
        replies = self.slack.replies(top["ts"])
        resolved = [d for d in self.deliveries if d.event == "resolved" and d.notification
                    and d.notification.get("incident_key") == KEY]
        if not resolved:
            return "(no resolved notification)"
        posts = {p["ts"] for p in resolved[-1].slack_posts}
        reply = next((r for r in replies if r["ts"] in posts), None)
        if reply is None:
            return "(the resolved notification posted no reply in the thread)"
        return "\n".join(readable(ln) for ln in plain(reply["blocks"], reply["text"]))

    def resolve_note(self) -> dict | None:
        """The note the resolution attached to the incident (OpsItem data or timeline event)."""
        notes = []
        if self.backend == "OpsCenter":
            for item in self.emulator.ops_items.values():
                for k, v in item["OperationalData"].items():
                    if k.startswith("note "):
                        notes.append(v.get("Value", ""))
        else:
            for events in self.emulator.timeline.values():
                notes.extend(ev["eventData"] for ev in events)
        for raw in notes:
            try:
                note = json.loads(raw)
            except ValueError:
                continue
            if isinstance(note, dict) and str(note.get("title", "")).startswith("Resolved by"):
                return note
        return None

    def summary_on_incident(self) -> str:
        note = self.resolve_note()
        return note.get("text", "") if note else "(no resolution note on the incident)"

    def save(self) -> None:
        super().save()
        d = self.out_dir
        (d / "slack-actions.json").write_text(json.dumps(
            {"answers": self.answers, "ephemeral": self.slack.responses, "views": self.slack.views,
             "schedules_fired": self.fired, "pages": self.pages}, indent=2, default=str))
        (d / "incident-record.json").write_text(json.dumps(self.final_record, indent=2))
        (d / "post-incident-summary.txt").write_text(
            self.summary_text + "\n\n--- attached to the incident ---\n" + getattr(self, "incident_summary", "") + "\n")

