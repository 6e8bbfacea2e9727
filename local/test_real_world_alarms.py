"""End to end (issue 15): real-shaped alarm events from events/ through the REAL
alarm-to-incident binary, in the local setup of local/story.py (OpsCenter on the
project's emulator, state in moto's DynamoDB):

- one Metrics Insights alarm over every VPN (`SELECT MIN(TunnelState) FROM "AWS/VPN"
  GROUP BY VpnId`): its contributor events for two VPNs open two incidents, one per
  VPN; the alarm-level event of the same evaluation opens nothing; the first VPN's
  contributor OK resolves that VPN's incident only;
- an SNS alarm message older than `AlarmArn` (Region "US - N. Virginia") opens its
  incident, with the ARN rebuilt;
- the second VPN's contributor OK is lost: a sweep invocation reads the alarm
  (DescribeAlarms) and its contributors (DescribeAlarmContributors, served by the
  emulator over rpcv2Cbor), finds that series no longer listed in ALARM and resolves its
  incident, with a note that says so; a series it lists that the pipeline never saw
  opens its incident.

One setup for the module (a few seconds); each event is one invocation.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

import story

EVENTS = Path(__file__).resolve().parent.parent / "events"
ALL_VPNS = "vpn-tunnel-down-all-connections"
ALL_VPNS_ARN = f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{ALL_VPNS}"
VPN1, VPN2 = "vpn-0f1e2d3c4b5a69788", "vpn-0a1b2c3d4e5f67890"
OLD_VPN = "vpn-0c3d4e5f6a7b8c9d0"


def key(vpn: str) -> str:
    return f"VPN connection {vpn} is DOWN"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    try:
        with story.running("OpsCenter", tmp_path_factory.mktemp("real-world-alarms")) as s:
            yield s
    except story.PlaceholderBinary as e:
        pytest.skip(f"needs the function binaries: {e}")


def deliver(s: story.Story, name: str) -> dict:
    event = json.loads((EVENTS / name).read_text())
    inv = s.functions["alarm-to-incident"].invoke(event, timeout_s=60)
    assert inv.ok, f"{name}: {inv.result}"
    [result] = inv.result["results"]
    return result


def items_by_key(s: story.Story) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for item in s.emulator.ops_items.values():
        dedup = json.loads(item["OperationalData"]["/aws/dedup"]["Value"])["dedupString"]
        out.setdefault(dedup, []).append(item)
    return out


def test_one_insights_alarm_opens_one_incident_per_vpn_and_each_ok_resolves_its_own(world):
    s = world
    first = deliver(s, "eventbridge-insights-contributor-vpn1-alarm.json")
    second = deliver(s, "eventbridge-insights-contributor-vpn2-alarm.json")
    assert (first["action"], first["incidentKey"]) == ("open", key(VPN1))
    assert (second["action"], second["incidentKey"]) == ("open", key(VPN2))
    assert first["contributor"] == f"VpnId={VPN1}"
    # The alarm-level event of the same evaluation: recorded, no aggregate incident.
    summary = deliver(s, "eventbridge-metrics-insights-alarm.json")
    assert summary["action"] == "record_summary"
    assert "multi-time-series" in summary["note"]
    # A redelivered contributor event is a duplicate.
    assert deliver(s, "eventbridge-insights-contributor-vpn2-alarm.json")["action"] == "ignore_duplicate"
    items = items_by_key(s)
    assert set(items) == {key(VPN1), key(VPN2)}
    assert all(len(v) == 1 for v in items.values()), items
    assert all(v[0]["Status"] == "Open" for v in items.values())

    ok = deliver(s, "eventbridge-insights-contributor-vpn1-ok.json")
    assert (ok["action"], ok["incidentKey"]) == ("resolve", key(VPN1))
    items = items_by_key(s)
    assert items[key(VPN1)][0]["Status"] == "Resolved"
    assert items[key(VPN2)][0]["Status"] == "Open"
    # Each contributor has its own watermark item in the state table.
    table = s.moto.client("dynamodb")
    arn = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down-all-connections"
    for pk in [f"alarm#contributor/3f9a1c7e5b2d8046/{arn}", f"alarm#contributor/a41d6e0b97c3f258/{arn}",
               f"alarm#{arn}"]:
        got = table.get_item(TableName=s.table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        assert "Item" in got, pk


def test_sns_message_without_alarm_arn_opens_one_incident(world):
    s = world
    result = deliver(s, "sns-no-alarm-arn-old-region-alarm.json")
    assert (result["action"], result["incidentKey"]) == ("open", key(OLD_VPN))
    [item] = items_by_key(s)[key(OLD_VPN)]
    resources = json.loads(item["OperationalData"]["/aws/resources"]["Value"])
    assert {"arn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:vpn-tunnel-down-{OLD_VPN}"} in resources
    assert deliver(s, "sns-no-alarm-arn-old-region-alarm.json")["action"] == "ignore_duplicate"
    assert len(items_by_key(s)[key(OLD_VPN)]) == 1


def test_a_contributor_incident_whose_ok_was_lost_is_resolved_by_the_sweep(world):
    s = world
    # VPN 2's series in ALARM (open, or already open from the first test).
    assert deliver(s, "eventbridge-insights-contributor-vpn2-alarm.json")["action"] in ("open", "ignore_duplicate")
    [item] = items_by_key(s)[key(VPN2)]
    assert item["Status"] == "Open"
    # CloudWatch now: the alarm still in ALARM for another VPN's series; VPN 2's series
    # recovered, its OK never delivered (not listed any more).
    event = json.loads((EVENTS / "eventbridge-insights-contributor-vpn2-alarm.json").read_text())
    at = datetime.fromisoformat(event["detail"]["state"]["timestamp"].replace("+0000", "+00:00")).timestamp()
    s.emulator.apply_scenario({"alarms": [{
        "name": ALL_VPNS, "state": "ALARM", "at": at,
        "expression": event["detail"]["configuration"]["metrics"][0]["expression"],
        "contributors": [{"id": "9b8a7c6d5e4f3021", "attributes": {"VpnId": "vpn-0123456789abcdef0"}, "at": at}],
    }]})
    before = len(s.emulator.calls)
    inv = s.functions["alarm-to-incident"].invoke({"sweep": {"reason": "scheduled"}}, retries=0, timeout_s=60)
    assert inv.ok, inv.result
    report = inv.result
    assert report["changed"][f"{ALL_VPNS} (VpnId={VPN2})"] == "applied:resolve", report
    # The series listed in ALARM whose event never came opens its incident, as the event would.
    assert report["changed"][f"{ALL_VPNS} (VpnId=vpn-0123456789abcdef0)"] == "applied:open", report
    assert items_by_key(s)[key("vpn-0123456789abcdef0")][0]["Status"] == "Open"
    ops = [c["op"] for c in s.emulator.calls[before:]]
    assert "DescribeAlarms" in ops and "DescribeAlarmContributors" in ops, ops
    [item] = items_by_key(s)[key(VPN2)]
    assert item["Status"] == "Resolved"
    notes = [v["Value"] for k, v in item["OperationalData"].items() if k.startswith("note ")]
    assert any("Found by the reconciliation sweep" in n and "DescribeAlarmContributors" in n for n in notes), notes
    table = s.moto.client("dynamodb")
    got = table.get_item(TableName=s.table, Key={"pk": {"S": f"alarm#contributor/a41d6e0b97c3f258/{ALL_VPNS_ARN}"}},
                         ConsistentRead=True)
    assert got["Item"]["state"]["S"] == "OK", got["Item"]
    # In step now: a second sweep changes nothing for VPN 2.
    again = s.functions["alarm-to-incident"].invoke({"sweep": {"reason": "scheduled"}}, retries=0, timeout_s=60)
    assert again.ok and f"{ALL_VPNS} (VpnId={VPN2})" not in again.result["changed"], again.result
