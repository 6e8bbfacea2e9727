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
- payments resolved, retail still open.
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
    assert items[org.RETAIL]["Status"] == "Open"


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
    assert central.count("sts:AssumeRole") == 3
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
    # The forged OK did not resolve retail's incident, and nothing was published for either.
    assert ops_items(s)[org.RETAIL]["Status"] == "Open"
    assert all(d.notification["account"] in [*org.MEMBERS, org.LOGISTICS] for d in s.deliveries if d.notification)


def test_a_refusing_member_role_is_a_finding_on_the_incident_not_a_failed_runbook(s):
    headline = f"cannot assume arn:aws:iam::{org.LOGISTICS}:role/{org.DIAGNOSIS_ROLE} in {org.LOGISTICS}: AccessDenied"
    run = next(r for r in s.runbook_runs if r["parameters"]["AccountId"] == [org.LOGISTICS])
    assert run["status"] == "Success"
    assert s.member_calls()[org.LOGISTICS] == [], "nothing was read in the account"
    denied = [c for c in s.emulator.calls if c["op"] == "AssumeRole" and c.get("error") == "AccessDenied"]
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
                      (f"VPN connection {org.MEMBERS[org.RETAIL]['vpn']} is DOWN", "OPEN"),
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
