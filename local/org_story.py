#!/usr/bin/env python3
"""The organization story (issue 19): one central stack for a whole AWS Organization.

With the alarm story's AWS, Slack and real function binaries, the central stack runs in
account 123456789012 in organization mode (ORGANIZATION_ID set, two allowed members, an
account directory with OU tags), and two member accounts forward their alarm events to
the central bus (member.yaml):

  payments-prod (111122223333, OU payments, team=payments, eu-west-1) loses tunnel 1 of
  its VPN (IKE authentication failures in its own tunnel logs); retail-prod
  (444455556666, OU retail, team=retail, eu-central-1) loses both tunnels of its VPN.
  Each becomes its own incident, keyed by its account, routed by the account's tags to
  its team's Slack channel (#payments, #retail), and diagnosed in its own account:
  vpn-troubleshoot assumes the member's diagnosis role with STS (moto issues credentials
  that act in the member account; the emulator serves each account its own VPNs, logs
  and metrics by those credentials). An alarm event of an account outside the
  organization (999988887777) and a forged one (payments' envelope around retail's
  alarm) are refused and counted, touching nothing. A third member, logistics-prod
  (777788889999), was enrolled by a StackSet whose roles trust another central account:
  its incident opens (in #ops: no team rule matches it) and its diagnosis is a finding,
  "cannot assume ... in 777788889999: AccessDenied", not a failed runbook (the emulator
  checks the roles' trust, which moto does not). Someone of #retail presses Resolve on
  payments' incident: refused (it belongs to an account outside their Slack scope), nothing
  changes; their `/incident list` shows retail's incident only. payments-prod recovers and
  its incident resolves in #payments. retail-prod recovers too, but its OK never reaches
  the central bus (lost on the way): the reconciliation sweep reads retail's alarm in
  retail's account and region through the member's alarm-reader role (STS, trust checked
  by the emulator) and resolves the incident; logistics' alarm-reader role is missing, so
  the sweep reports and counts it and goes on.

    python3 local/story.py --story org [--backend OpsCenter|IncidentManager|both]
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import slack_actions as sa  # noqa: E402
from respond_story import RespondStory  # noqa: E402
from story import (ACCOUNT, AUTOMATION_ROLE, PSK_FAILURE, REGION, RESPONSE_PLAN, RUNBOOK,  # noqa: E402
                   TUNNEL_1, TUNNEL_2, VPN,
                   StoryError, eventbridge_both_tunnels, iso_alarm, load_event, short, tunnel_log, _retime_reason)

ORGANIZATION = "o-a1b2c3d4e5"
DIAGNOSIS_ROLE = "incident-pipeline-diagnosis"
PAYMENTS, RETAIL, FOREIGN = "111122223333", "444455556666", "999988887777"
# A member whose member stack trusts another central account (a staging stack's).
LOGISTICS, STAGING_CENTRAL = "777788889999", "210987654321"
LOGISTICS_VPN = "vpn-0d4d5e6f708192a3b"
MEMBERS = {
    PAYMENTS: {"name": "payments-prod", "ou": "payments", "team": "payments", "region": "eu-west-1",
               "vpn": "vpn-0a1a2b3c4d5e6f701", "channel": "C0PAYMENTS"},
    RETAIL: {"name": "retail-prod", "ou": "retail", "team": "retail", "region": "eu-central-1",
             "vpn": "vpn-0b2b3c4d5e6f70812", "channel": "C0RETAIL"},
}
DIRECTORY = {
    "accounts": {**{a: {"name": m["name"], "ou": m["ou"]} for a, m in MEMBERS.items()},
                 LOGISTICS: {"name": "logistics-prod", "ou": "logistics"}},
    "ous": {**{m["ou"]: {"tags": {"team": m["team"]}} for m in MEMBERS.values()},
            "logistics": {"tags": {"team": "logistics"}}},
}
# Each team's channel by the account's OU tag; anything else (the central account's own
# incidents) to #ops.
ROUTING = {"rules": [{"name": f"{m['team']}-team", "account_tags": {"team": m["team"]},
                      "destinations": [m["team"]], "stop": True} for m in MEMBERS.values()],
           "default": ["ops"]}
# The member roles the sweep reads alarms through (member.yaml's AlarmReaderRole).
ALARM_READER_ROLE = "incident-pipeline-alarm-reader"
# One person per team; each team's Slack user group may act on its own accounts' incidents.
PAYER = sa.Person("U0PAYER", "pat")
SHOPPER = sa.Person("U0SHOPPER", "sam")
TEAM_GROUPS = {"payments": "S0PAYMENTS", "retail": "S0RETAIL"}
POLICY = {"default": {"usergroups": list(TEAM_GROUPS.values())},
          "scopes": [{"usergroups": [g], "account_tags": {"team": team}} for team, g in TEAM_GROUPS.items()]}


def in_account(event: dict, account: str, region: str, vpn: str) -> dict:
    """A sample alarm event as the member account's alarm would send it: its account,
    region and VPN everywhere (envelope, alarm ARN, dimensions, description)."""
    text = json.dumps(event).replace(ACCOUNT, account).replace(VPN, vpn)
    out = json.loads(text.replace(f":{REGION}:", f":{region}:"))
    if "region" in out:
        out["region"] = region
    return out


def eventbridge_any_tunnel(state: str, previous: str, at: float, prev_at: float) -> dict:
    """The any-tunnel alarm through EventBridge (events/eventbridge-vpn-tunnel-down-*.json)."""
    ev = load_event("eventbridge-vpn-tunnel-down-alarm.json" if state == "ALARM" else
                    "eventbridge-vpn-tunnel-down-ok.json")
    ev["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    ev["detail"]["state"]["value"] = state
    ev["detail"]["state"]["timestamp"] = iso_alarm(at)
    ev["detail"]["previousState"]["value"] = previous
    ev["detail"]["previousState"]["timestamp"] = iso_alarm(prev_at)
    _retime_reason(ev["detail"]["state"], at, value=1.0 if state == "OK" else 0.0)
    return ev


class OrgStory(RespondStory):
    """The organization story: two member accounts, two teams, one central stack."""

    TITLE = "Organization story"

    def extend_setup(self, common: dict[str, str], env: dict[str, dict[str, str]],
                     timeouts: dict[str, float]) -> None:
        org = {"ORGANIZATION_ID": ORGANIZATION, "HOME_ACCOUNT_ID": ACCOUNT,
               "ALLOWED_ACCOUNTS": ",".join([*MEMBERS, LOGISTICS]), "ACCOUNT_DIRECTORY": json.dumps(DIRECTORY)}
        # The sweep reads member alarms through their alarm-reader role (STS through the
        # emulator, which checks the roles' trust).
        env["alarm-to-incident"].update(org, MEMBER_ALARM_READER_ROLE_NAME=ALARM_READER_ROLE,
                                        AWS_ENDPOINT_URL_STS=self.emulator.url)
        # slack-actions with account scopes: each team acts on its own accounts' incidents.
        self.add_slack_actions(env, timeouts, POLICY, org)
        self.slack.usergroups = {TEAM_GROUPS["payments"]: [PAYER.id], TEAM_GROUPS["retail"]: [SHOPPER.id]}
        self.marks: dict = {}
        # STS through the emulator: it checks the member roles' trust, then lets moto issue
        # the credentials (which act in the member account).
        env["vpn-troubleshoot"].update(org, MEMBER_DIAGNOSIS_ROLE_NAME=DIAGNOSIS_ROLE,
                                       AWS_ENDPOINT_URL_STS=self.emulator.url)
        # The central stack's Slack settings: one bot destination per team channel.
        for m in MEMBERS.values():
            self.slack.channels[m["channel"]] = m["team"]
        destinations = {m["team"]: {"type": "bot", "token": self.slack.token, "channel": m["channel"], "actions": True}
                        for m in MEMBERS.values()}
        destinations["ops"] = {"type": "bot", "token": self.slack.token, "channel": "C0LOCALOPS"}
        self.moto.client("secretsmanager").put_secret_value(
            SecretId=self.secret_arn, SecretString=json.dumps({"destinations": destinations, "routing": ROUTING}))
        if self.backend == "IncidentManager":
            # template.yaml's plan in organization mode: no static VPN id, no plan-wide
            # dedupe string (it would merge every member's incidents); the runbook reads the
            # VPN, its account and region from the involved resources.
            self.emulator.apply_scenario({"response_plans": [{
                "arn": RESPONSE_PLAN, "title": "VPN connection is DOWN", "impact": 3,
                "summary": "The VPN connection to the remote site is not working.", "chatbot_sns": [self.topic],
                "automation": {"document": RUNBOOK, "parameters": {
                    "AutomationAssumeRole": [AUTOMATION_ROLE], "LookbackMinutes": ["60"]},
                    "dynamic": {"IncidentRecordArn": "INCIDENT_RECORD_ARN",
                                "InvolvedResources": "INVOLVED_RESOURCES"}}}]})
        # The member accounts' own VPNs, served to credentials that act in them.
        self.emulator.resolve_accounts_with(self.moto.url)
        # The roles member.yaml created: trusting this central account, or (logistics) another.
        self.emulator.apply_scenario({"roles": [
            *({"account": a, "name": DIAGNOSIS_ROLE, "trusted_account": ACCOUNT} for a in MEMBERS),
            # logistics' member stack predates the alarm-reader role: it has none.
            *({"account": a, "name": ALARM_READER_ROLE, "trusted_account": ACCOUNT} for a in MEMBERS),
            {"account": LOGISTICS, "name": DIAGNOSIS_ROLE, "trusted_account": STAGING_CENTRAL}]})
        self.emulator.apply_scenario({"account": LOGISTICS, "vpn_connections": [{
            "id": LOGISTICS_VPN, "history_minutes": 90, "routes": [],
            "tunnels": [{"outside_ip": TUNNEL_1}, {"outside_ip": TUNNEL_2}]}]})
        for account, m in MEMBERS.items():
            self.emulator.apply_scenario({"account": account, "vpn_connections": [{
                "id": m["vpn"], "region": m["region"], "customer_gateway_ip": "198.51.100.7",
                "history_minutes": 90, "routes": [], "tags": {"Name": f"{m['name']}-branch"},
                "tunnels": [{"outside_ip": TUNNEL_1}, {"outside_ip": TUNNEL_2}]}]})
        self.refused: list[dict] = []

    # ------------------------------------------------------------ helpers

    def member_calls(self) -> dict[str, list[str]]:
        """What each member account was asked (served through its assumed-role credentials)."""
        return {a: [f"{c['service']}:{c['op']}" for c in self.emulator.member(a).calls] for a in [*MEMBERS, LOGISTICS]}

    def report_aws_calls(self) -> None:
        super().report_aws_calls()
        marks = getattr(self, "_member_marks", {})
        for account in [*MEMBERS, LOGISTICS]:
            calls = self.emulator.member(account).calls
            new = calls[marks.get(account, 0):]
            marks[account] = len(calls)
            if new:
                ops = ", ".join(f"{c['service']}:{c['op']}" for c in new)
                name = MEMBERS.get(account, {}).get("name", "logistics-prod")
                self.say(f"      AWS in {account} ({name}, through the assumed role): {ops}")
        self._member_marks = marks

    def deliver_refused(self, event: dict, how: str) -> None:
        inv = self.functions["alarm-to-incident"].invoke(event, retries=0)
        self.show_invocation(inv, f" ({how})")
        results = (inv.result or {}).get("results", []) if inv.ok and isinstance(inv.result, dict) else []
        if not inv.ok or [r.get("action") for r in results] != ["refused"]:
            raise StoryError(f"the {how} event was not refused: {short(inv.result, 300)}")
        self.refused.append({"how": how, "account": event.get("account"), "result": inv.result})

    def emf_lines(self, metric: str = "RefusedEvents") -> list[dict]:
        """The metric lines of `metric` alarm-to-incident wrote (CloudWatch embedded metric
        format): refused events, or (SweepUnreachableAccounts) members the sweep could not read."""
        path = self.out_dir / "logs" / "alarm-to-incident.log"
        out = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if '"_aws"' in line:
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue
                if metric in parsed:
                    out.append(parsed)
        return out

    def incident_item_of(self, key: str) -> dict:
        return self.moto.client("dynamodb").get_item(TableName=self.table, Key={"pk": {"S": f"incident#{key}"}},
                                                     ConsistentRead=True).get("Item") or {}

    def top_in(self, team: str) -> dict:
        """The first top-level message in a team's channel (its incident's card)."""
        tops = self.slack.top_level(team)
        if not tops:
            raise StoryError(f"no top-level message in #{team}")
        return tops[0]

    def sweep(self, reason: str) -> dict:
        inv = self.functions["alarm-to-incident"].invoke({"sweep": {"reason": reason}}, retries=0)
        self.show_invocation(inv, f" <- sweep ({reason})")
        if not inv.ok:
            raise StoryError(f"the sweep failed: {short(inv.result, 300)}")
        self.sweep_result = inv.result
        return inv.result

    # ------------------------------------------------------------ the story

    def run(self) -> None:
        self.say("=" * 100)
        self.say(f"{self.TITLE}, backend {self.backend}: AWS on {self.moto.url} (moto: STS, SNS, SQS, DynamoDB) and "
                 f"{self.emulator.url} (emulator, per account), Slack on {self.slack.url}")
        self.say(f"    runbook steps from {self.runner.source}; function cold starts: " + ", ".join(
            f"{n} {f.cold_start_ms:.0f} ms" for n, f in self.functions.items()))

        self.step(f"Organization {ORGANIZATION}: the central stack in {ACCOUNT}, two member accounts (member.yaml)")
        for account, m in MEMBERS.items():
            vpns = self.emulator.member(account).vpns
            self.say(f"    {account} {m['name']} (OU {m['ou']}, team={m['team']}, {m['region']}): VPN "
                     f"{', '.join(vpns)}; alarms forwarded to the central bus; routed to #{m['team']}")
        self.say(f"    {LOGISTICS} logistics-prod (OU logistics): VPN {LOGISTICS_VPN}; its member stack's roles trust "
                 f"{STAGING_CENTRAL} (a staging central stack), not {ACCOUNT}; no team channel: #ops")
        self.say(f"    {FOREIGN}: not a member (not in ALLOWED_ACCOUNTS)")

        pay, ret = MEMBERS[PAYMENTS], MEMBERS[RETAIL]
        self.step(f"{pay['name']}: tunnel 1 of {pay['vpn']} goes DOWN (pre-shared key), its alarm reaches the central bus")
        t_pay = time.time()
        group = f"/aws/vpn/{pay['vpn']}"
        self.emulator.apply_scenario({"account": PAYMENTS, "tunnels": [
            {"vpn_connection_id": pay["vpn"], "outside_ip": TUNNEL_1, "status": "DOWN", "at": t_pay}],
            "log_records": [{"log_group": group, "stream": f"{pay['vpn']}-{TUNNEL_1}", "records": [
                tunnel_log(TUNNEL_1, t_pay - 40 + 10 * i, PSK_FAILURE, "down", "down") for i in range(3)]}]})
        self.alarm_times["payments_alarm"] = t_pay
        self.deliver_alarm(in_account(eventbridge_any_tunnel("ALARM", "OK", t_pay, t_pay - 86400),
                                      PAYMENTS, pay["region"], pay["vpn"]), f"EventBridge, account {PAYMENTS}")
        self.pump()
        self.wait()

        self.step(f"{ret['name']}: both tunnels of {ret['vpn']} go DOWN in {ret['region']}")
        t_ret = time.time()
        self.emulator.apply_scenario({"account": RETAIL, "tunnels": [
            {"vpn_connection_id": ret["vpn"], "outside_ip": ip, "status": "DOWN", "at": t_ret}
            for ip in (TUNNEL_1, TUNNEL_2)]})
        self.alarm_times["retail_alarm"] = t_ret
        self.deliver_alarm(in_account(eventbridge_both_tunnels("ALARM", "OK", t_ret, t_ret - 86400),
                                      RETAIL, ret["region"], ret["vpn"]), f"EventBridge, account {RETAIL}")
        self.pump()
        self.wait()

        self.step(f"logistics-prod: tunnel 1 of {LOGISTICS_VPN} goes DOWN; its diagnosis role trusts another stack")
        t_log = time.time()
        self.emulator.apply_scenario({"account": LOGISTICS, "tunnels": [
            {"vpn_connection_id": LOGISTICS_VPN, "outside_ip": TUNNEL_1, "status": "DOWN", "at": t_log}]})
        self.deliver_alarm(in_account(eventbridge_any_tunnel("ALARM", "OK", t_log, t_log - 86400),
                                      LOGISTICS, REGION, LOGISTICS_VPN), f"EventBridge, account {LOGISTICS}")
        self.pump()
        self.wait()

        self.step(f"An alarm event of {FOREIGN}, an account outside the organization, reaches alarm-to-incident")
        t_foreign = time.time()
        self.deliver_refused(in_account(eventbridge_any_tunnel("ALARM", "OK", t_foreign, t_foreign - 86400),
                                        FOREIGN, REGION, "vpn-0c3c4d5e6f7081923"), f"EventBridge, account {FOREIGN}")
        self.pump()

        self.step(f"A forged event: {pay['name']}'s envelope around {ret['name']}'s alarm")
        forged = in_account(eventbridge_both_tunnels("OK", "ALARM", time.time(), t_ret), RETAIL, ret["region"],
                            ret["vpn"])
        forged["account"] = PAYMENTS
        self.deliver_refused(forged, f"EventBridge, envelope {PAYMENTS}, alarm ARN {RETAIL}")
        self.pump()

        self.step(f"Someone of #retail ({SHOPPER.name}) presses Resolve on {pay['name']}'s incident")
        pay_key = f"{PAYMENTS}/VPN connection {pay['vpn']} is DOWN"
        before = self.incident_item_of(pay_key).get("version")
        self.act(SHOPPER, f"Resolve on {pay['name']}'s card", lambda: self.app.click(
            SHOPPER, self.top_in("payments"), "resolve", pay_key))
        self.act(SHOPPER, "/incident list", lambda: self.app.command(SHOPPER, "list"))
        after = self.incident_item_of(pay_key).get("version")
        self.marks["refused_resolve"] = {"before": before, "after": after,
                                         "told": [r["text"] for r in self.slack.responses if r["user"] == SHOPPER.id]}
        self.say(f"    {pay['name']}'s incident item version before {before}, after {after}: "
                 + ("unchanged" if before == after else "CHANGED"))
        if before != after:
            self.problems.append("a person outside the account's scope changed its incident")
        self.wait()

        self.step(f"{pay['name']} recovers: its alarm returns to OK")
        t_ok = time.time()
        self.emulator.apply_scenario({"account": PAYMENTS, "tunnels": [
            {"vpn_connection_id": pay["vpn"], "outside_ip": TUNNEL_1, "status": "UP", "at": t_ok}]})
        self.deliver_alarm(in_account(eventbridge_any_tunnel("OK", "ALARM", t_ok, t_pay), PAYMENTS, pay["region"],
                                      pay["vpn"]), f"EventBridge, account {PAYMENTS}")
        self.pump()

        self.step(f"{ret['name']} recovers, but its OK is lost on the way (never reaches the central bus)")
        t_ret_ok = time.time()
        self.emulator.apply_scenario({"account": RETAIL, "tunnels": [
            {"vpn_connection_id": ret["vpn"], "outside_ip": ip, "status": "UP", "at": t_ret_ok}
            for ip in (TUNNEL_1, TUNNEL_2)]})
        both = in_account(eventbridge_both_tunnels("OK", "ALARM", t_ret_ok, t_ret), RETAIL, ret["region"], ret["vpn"])
        self.emulator.apply_scenario({"account": RETAIL, "alarms": [{
            "name": both["detail"]["alarmName"], "state": "OK", "at": t_ret_ok, "statistic": "Maximum",
            "dimensions": {"VpnId": ret["vpn"]}, "reason": both["detail"]["state"]["reason"]}]})
        ret_key = f"{RETAIL}/VPN connection {ret['vpn']} is DOWN"
        self.marks["retail_before_sweep"] = json.loads(self.incident_item_of(ret_key)["record"]["S"])["status"]
        self.say(f"    CloudWatch in {RETAIL} ({ret['region']}): {both['detail']['alarmName']} is OK; "
                 f"the incident is still {self.marks['retail_before_sweep']}")

        self.step("The scheduled reconciliation sweep reads each open incident's alarms where they live")
        result = self.sweep("scheduled")
        self.pump()
        self.say(f"    changed: {result.get('changed')}; unreachable: "
                 + "; ".join(f"{u['account']} {u['region']}: {u['reason']}" for u in result.get("unreachable", [])))
        self.wait()

        self.step("Where things stand")
        self.show_incidents()
        self.say("    refused events, counted by alarm-to-incident (CloudWatch embedded metric format on stdout):")
        for line in self.emf_lines():
            self.say(f"      {json.dumps(line, separators=(',', ':'))}")
        self.say("    member accounts the sweep could not read, counted the same way:")
        for line in self.emf_lines("SweepUnreachableAccounts"):
            self.say(f"      {json.dumps(line, separators=(',', ':'))}")
        self.say()
        for name in ("payments", "retail", "ops"):
            self.say(f"Slack #{name}, as a person would see it:")
            text = self.slack.render(channel=name).strip()
            for ln in (text.splitlines()[1:] if text else ["  (nothing)"]):
                self.say("    " + ln)
            self.say()
        if self.problems:
            self.say(f"{len(self.problems)} problem(s) in this story:")
            for p in self.problems:
                self.say(f"  - {p}")

    def save(self) -> None:
        # The alarm story's records, and what people were answered (no post-incident
        # summary of its own: RespondStory's files are about its single incident).
        super(RespondStory, self).save()
        (self.out_dir / "slack-actions.json").write_text(json.dumps(
            {"answers": self.answers, "ephemeral": self.slack.responses}, indent=2, default=str))

    def figures(self) -> dict:
        return {"refused_resolve": self.marks.get("refused_resolve"),
                "sweep": getattr(self, "sweep_result", None),
                "notifications": [d.event for d in self.deliveries],
                "incident_keys": sorted({(d.notification or {}).get("incident_key", "") for d in self.deliveries}),
                "refused": [r["how"] for r in getattr(self, "refused", [])],
                "slack_top_level": {n: len(self.slack.top_level(n)) for n in ("payments", "retail", "ops")}}
