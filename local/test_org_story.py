"""End to end: the organization story (issue 19) with the REAL function binaries, asserted
in detail on the OpsCenter backend and for its essentials on Incident Manager: a central
stack, member accounts, a channel per team.

- each member's alarm opens its own incident, keyed by its account, with the account on
  the OpsItem (accountId, accountName, OU) and on the Slack card;
- routing by the account's OU tag: payments' messages only in #payments, retail's only in
  #retail, nothing in #ops;
- the diagnosis ran in each member account through the assumed role: the member's
  emulator served the EC2, Logs and CloudWatch calls, the central account served none;
- the foreign account's event and the forged one were refused and counted (EMF lines),
  and opened nothing;
- a member whose role trusts another central account: its incident opens (#ops) and its
  diagnosis is the finding "cannot assume ... AccessDenied", the runbook succeeds;
- a person of #retail pressing Resolve on payments' incident is refused (an account outside
  their Slack scope), nothing changes, and their `/incident list` shows retail's only;
- payments resolved by its OK; retail's OK was lost, and the reconciliation sweep resolved it
  by reading retail's alarm in retail's account and region through the assumed alarm-reader
  role; logistics (no alarm-reader role) was reported and counted, not a failed sweep.
"""

from __future__ import annotations

import json
import os

import pytest

import org_story as org
import story


@pytest.fixture(scope="module")
def stories(tmp_path_factory) -> dict[str, org.OrgStory]:
    out = tmp_path_factory.mktemp("org")
    try:
        return story.run_stories(list(story.BACKENDS), out, pace=float(os.environ.get("STORY_PACE", "0")), kind="org")
    except story.PlaceholderBinary as e:
        pytest.skip(f"needs the function binaries: {e}")


@pytest.fixture(scope="module")
def s(stories) -> org.OrgStory:
    return stories["OpsCenter"]


def text_of(msg: dict) -> str:
    return msg["text"] + "\n" + json.dumps(msg["blocks"] or [], ensure_ascii=False)


def ops_items(s) -> dict[str, dict]:
    return {i["OperationalData"]["accountId"]["Value"]: i for i in s.emulator.ops_items.values()}


def test_org_story_had_no_problems(s):
    assert s.problems == []


def test_each_member_has_its_own_incident_with_its_account(s):
    items = ops_items(s)
    assert sorted(items) == sorted([*org.MEMBERS, org.LOGISTICS]), "one OpsItem per member, none for the foreign one"
    for account, m in org.MEMBERS.items():
        data = {k: v["Value"] for k, v in items[account]["OperationalData"].items()}
        assert data["incidentKey"] == f"{account}/VPN connection {m['vpn']} is DOWN"
        assert (data["accountName"], data["organizationalUnit"]) == (m["name"], m["ou"])
        assert f"arn:aws:ec2:{m['region']}:{account}:vpn-connection/{m['vpn']}" in data["/aws/resources"]
    assert items[org.PAYMENTS]["Status"] == "Resolved"
    assert items[org.RETAIL]["Status"] == "Resolved", "by the sweep"
    assert items[org.LOGISTICS]["Status"] == "Open"


def test_each_team_channel_gets_only_its_accounts_incident(s):
    for account, m in org.MEMBERS.items():
        (top,) = s.slack.top_level(m["team"])
        assert m["vpn"] in text_of(top)
        assert f"{account} ({m['name']})" in text_of(top), "the card names the account"
        others = [o["vpn"] for a, o in org.MEMBERS.items() if a != account]
        thread = [top] + s.slack.replies(top["ts"])
        assert not any(v in text_of(x) for x in thread for v in others)
    (ops,) = s.slack.top_level("ops")
    assert org.LOGISTICS_VPN in text_of(ops), "no team rule matches logistics: the default channel"
    payments = s.slack.top_level("payments")[0]
    events = [d.event for d in s.deliveries if d.notification and d.notification["account"] == org.PAYMENTS]
    assert events == ["opened", "diagnosed", "resolved"]
    assert len(s.slack.replies(payments["ts"])) == 2


def test_the_diagnosis_ran_in_each_member_account_through_the_assumed_role(s):
    calls = s.member_calls()
    for account in org.MEMBERS:
        assert "ec2:DescribeVpnConnections" in calls[account]
        assert "logs:StartQuery" in calls[account]
        assert "cloudwatch:GetMetricData" in calls[account]
    central = [f"{c['service']}:{c['op']}" for c in s.emulator.calls]
    assert not [c for c in central if c.startswith(("ec2:", "logs:", "cloudwatch:"))], central
    diagnosis = [c for c in central if c == "sts:AssumeRole"]
    assumed = [c["request"]["RoleArn"].rsplit("/", 1)[-1] for c in s.emulator.calls if c["op"] == "AssumeRole"]
    assert assumed.count(org.DIAGNOSIS_ROLE) == 3, assumed
    assert len(diagnosis) == len(assumed)
    log = (s.out_dir / "logs" / "vpn-troubleshoot.log").read_text()
    for account in org.MEMBERS:
        assert f'"role":"arn:aws:iam::{account}:role/{org.DIAGNOSIS_ROLE}"' in log
    diagnosed = {d.notification["account"]: d.notification for d in s.deliveries
                 if d.event == "diagnosed" and d.notification}
    assert diagnosed[org.RETAIL]["region"] == "eu-central-1"
    assert any("Both tunnels" in f["title"] for f in diagnosed[org.RETAIL]["findings"])
    assert any("pre-shared key" in f["title"] for f in diagnosed[org.PAYMENTS]["findings"])
    # Runbook parameters carried the member's account and region.
    params = [r["parameters"] for r in s.runbook_runs]
    assert sorted(p["AccountId"][0] for p in params) == sorted([*org.MEMBERS, org.LOGISTICS])
    assert {p["AccountId"][0]: p["Region"][0] for p in params}[org.RETAIL] == "eu-central-1"


def test_foreign_and_forged_events_are_refused_counted_and_open_nothing(s):
    assert [r["how"].split(",")[0] for r in s.refused] == ["EventBridge", "EventBridge"]
    reasons = [(line["Reason"], line["account"]) for line in s.emf_lines()]
    assert reasons == [("ForeignAccount", org.FOREIGN), ("AccountMismatch", org.PAYMENTS)]
    for line in s.emf_lines():
        assert line["RefusedEvents"] == 1
        assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "IncidentPipeline"
    # The forged OK did not resolve retail's incident (the sweep did, later), and nothing
    # was published for either.
    assert s.marks["retail_before_sweep"] == "open"
    assert all(d.notification["account"] in [*org.MEMBERS, org.LOGISTICS] for d in s.deliveries if d.notification)


def test_a_refusing_member_role_is_a_finding_on_the_incident_not_a_failed_runbook(s):
    headline = f"cannot assume arn:aws:iam::{org.LOGISTICS}:role/{org.DIAGNOSIS_ROLE} in {org.LOGISTICS}: AccessDenied"
    run = next(r for r in s.runbook_runs if r["parameters"]["AccountId"] == [org.LOGISTICS])
    assert run["status"] == "Success"
    assert s.member_calls()[org.LOGISTICS] == [], "nothing was read in the account"
    denied = [c for c in s.emulator.calls if c["op"] == "AssumeRole" and c.get("error") == "AccessDenied"
              and c["request"]["RoleArn"].endswith(f"/{org.DIAGNOSIS_ROLE}")]
    assert [c["request"]["RoleArn"] for c in denied] == [f"arn:aws:iam::{org.LOGISTICS}:role/{org.DIAGNOSIS_ROLE}"]
    (d,) = [d for d in s.deliveries if d.event == "diagnosed" and d.notification["account"] == org.LOGISTICS]
    assert d.notification["findings"][0]["title"] == headline[0].upper() + headline[1:]
    item = ops_items(s)[org.LOGISTICS]
    notes = [v["Value"] for k, v in item["OperationalData"].items() if k.startswith("note ")]
    assert any(headline in n for n in notes), notes
    (ops,) = s.slack.top_level("ops")
    assert any(headline in text_of(r) for r in s.slack.replies(ops["ts"]))


def test_incident_manager_keeps_member_incidents_apart_and_diagnoses_them_in_their_accounts(stories):
    im = stories["IncidentManager"]
    assert im.problems == []
    records = sorted(im.emulator.incidents.values(), key=lambda r: r["title"])
    titles = [(r["title"], r["status"]) for r in records]
    assert titles == [(f"VPN connection {org.MEMBERS[org.PAYMENTS]['vpn']} is DOWN", "RESOLVED"),
                      (f"VPN connection {org.MEMBERS[org.RETAIL]['vpn']} is DOWN", "RESOLVED"),
                      (f"VPN connection {org.LOGISTICS_VPN} is DOWN", "OPEN")]
    # The response plan's runbook found each VPN's account and region in the incident's
    # involved resources (the VPN connection ARN) and diagnosed it there.
    for account, m in org.MEMBERS.items():
        assert "ec2:DescribeVpnConnections" in im.member_calls()[account]
        (top,) = im.slack.top_level(m["team"])
        assert len(im.slack.replies(top["ts"])) >= 1
    params = {r["parameters"]["IncidentRecordArn"][0]: r for r in im.runbook_runs}
    assert len(params) == 3, "one runbook per incident"
    assert [(line["Reason"]) for line in im.emf_lines()] == ["ForeignAccount", "AccountMismatch"]


def test_a_person_of_one_team_cannot_resolve_another_teams_incident(s):
    mark = s.marks["refused_resolve"]
    assert mark["before"] == mark["after"], "the incident item did not change"
    pay_key = f"{org.PAYMENTS}/VPN connection {org.MEMBERS[org.PAYMENTS]['vpn']} is DOWN"
    (told,) = mark["told"]
    assert f"Incident `{pay_key}` belongs to an account outside your Slack scope" in told
    assert "Nothing was changed" in told
    assert "payments-prod" not in told, "nothing of the other account beyond the key"
    (listing,) = [a for a in s.answers if a["who"] == org.SHOPPER.id and a["label"] == "/incident list"]
    assert org.MEMBERS[org.RETAIL]["vpn"] in listing["body"]
    assert org.MEMBERS[org.PAYMENTS]["vpn"] not in listing["body"]
    # Payments' incident was resolved by its own OK, once, later.
    events = [d.event for d in s.deliveries if d.notification and d.notification["account"] == org.PAYMENTS]
    assert events == ["opened", "diagnosed", "resolved"]


def test_the_sweep_resolves_a_member_incident_whose_ok_was_lost_through_the_assumed_role(s):
    ret = org.MEMBERS[org.RETAIL]
    assert s.marks["retail_before_sweep"] == "open", "the OK was never delivered"
    result = s.sweep_result
    both = f"vpn-both-tunnels-down-{ret['vpn']}"
    assert [v for k, v in result["changed"].items() if ret["vpn"] in k] == ["applied:resolve"], result
    # Read in retail's account and region, with credentials of its alarm-reader role.
    reads = [c for c in s.emulator.member(org.RETAIL).calls if c["op"] == "DescribeAlarms"]
    assert reads and all(c.get("error") is None for c in reads)
    assumed = [c for c in s.emulator.calls if c["op"] == "AssumeRole"
               and c["request"]["RoleArn"].endswith(f"/{org.ALARM_READER_ROLE}")]
    assert {(c["request"]["RoleArn"].split(":")[4], c.get("error")) for c in assumed} == {
        (org.RETAIL, None), (org.LOGISTICS, "AccessDenied")}
    assert not [c for c in s.emulator.calls if c["op"] == "DescribeAlarms"], "nothing read in the central account"
    (resolved,) = [d for d in s.deliveries if d.event == "resolved" and d.notification["account"] == org.RETAIL]
    assert "reconciliation sweep" in json.dumps(resolved.notification)
    (top,) = s.slack.top_level("retail")
    assert any("reconciliation sweep" in text_of(r) for r in s.slack.replies(top["ts"]))
    # The member without the role: reported and counted, the sweep went on.
    (u,) = result["unreachable"]
    assert (u["account"], u["alarms"]) == (org.LOGISTICS, 1)
    assert u["reason"] == (f"cannot assume arn:aws:iam::{org.LOGISTICS}:role/{org.ALARM_READER_ROLE} "
                           f"in {org.LOGISTICS}: AccessDenied")
    (line,) = s.emf_lines("SweepUnreachableAccounts")
    assert (line["account"], line["code"], line["SweepUnreachableAccounts"]) == (org.LOGISTICS, "AccessDenied", 1)
    assert both  # the alarm CloudWatch reported OK
