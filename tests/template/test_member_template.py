"""member.yaml (organization mode, deployed to member accounts with StackSets) against the
central template and the Rust sources.

* The member diagnosis role holds exactly what vpn-troubleshoot calls through the member
  clients (functions/vpn-troubleshoot/src/member.rs: `MemberClients`), and the remediation
  role exactly ReplaceVpnTunnel, on tagged VPNs.
* Both roles trust only the central stack's vpn-troubleshoot role, pinned to the
  organization; the central role may assume only those role names, only inside the
  organization.
* The alarm-reader role (the reconciliation sweep) holds exactly DescribeAlarms and
  DescribeAlarmContributors, on the
  forwarded alarms only, and trusts only the central alarm-to-incident role, pinned to the
  organization; that role may assume only it, only inside the organization, only in
  organization mode.
* Alarm events go to the central bus through a role, with a dead-letter queue; the central
  bus admits only the organization, and its rule reaches alarm-to-incident.
* Organization mode is off by default: a single-account deployment creates none of it.
"""

from __future__ import annotations

import re

import pytest

import rust_source as rs
import test_template_wiring as tw

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is required: pip install 'cfn-lint>=1.58'")

MEMBER = tw.REPO / "member.yaml"
MEMBER_RS = tw.REPO / "functions" / "vpn-troubleshoot" / "src" / "member.rs"
# SDK crate of each client type to the IAM prefix of its actions.
CLIENT_PREFIX = {"aws_sdk_ec2": "ec2", "aws_sdk_cloudwatch": "cloudwatch", "aws_sdk_cloudwatchlogs": "logs"}


@pytest.fixture(scope="module")
def member() -> dict:
    tpl, matches = cfnlint_decode.decode(str(MEMBER))
    assert not matches, f"member.yaml does not parse: {matches}"
    return tpl


@pytest.fixture(scope="module")
def central(template) -> dict:
    return template


template = tw.template
resources = tw.resources
workspace = tw.workspace
iam_data = tw.iam_data


def member_client_prefixes() -> set[str]:
    """The IAM prefixes of the clients `MemberClients` holds (what a member role is used for)."""
    src = MEMBER_RS.read_text()
    body = re.search(r"pub struct MemberClients \{(.*?)\}", src, re.S)
    assert body, "MemberClients not found in member.rs"
    crates = set(re.findall(r"(aws_sdk_[a-z0-9]+)::Client", body.group(1)))
    unknown = crates - set(CLIENT_PREFIX)
    assert not unknown, f"MemberClients holds clients this test does not know: {unknown}"
    return {CLIENT_PREFIX[c] for c in crates}


def statements(role: dict) -> list[dict]:
    out = []
    for pol in role["Properties"]["Policies"]:
        out += tw.statements_of(pol["PolicyDocument"])
    return out


def vpn_troubleshoot_actions(resources, workspace) -> set[str]:
    return tw.function_analysis("VpnTroubleshootFunction", resources, workspace).actions


def test_member_template_needs_no_transform_for_stacksets(member):
    # StackSets deploys plain CloudFormation; no SAM, no language extensions.
    assert "Transform" not in member
    assert {r["Type"] for r in member["Resources"].values()} <= {
        "AWS::IAM::Role",
        "AWS::Events::Rule",
        "AWS::SQS::Queue",
        "AWS::SQS::QueuePolicy",
        "AWS::CloudWatch::Alarm",
    }


def test_diagnosis_role_grants_exactly_what_vpn_troubleshoot_calls_in_a_member(member, resources, workspace):
    prefixes = member_client_prefixes()
    assert prefixes == {"ec2", "cloudwatch", "logs"}
    called = {a for a in vpn_troubleshoot_actions(resources, workspace) if a.split(":")[0] in prefixes}
    remediation = {"ec2:ReplaceVpnTunnel"}
    assert remediation <= called, "the remediation call moved: update this test"
    granted = {a for s in statements(member["Resources"]["DiagnosisRole"]) for a in tw.actions_of(s)}
    assert granted == called - remediation, (
        f"missing {sorted(called - remediation - granted)}, extra {sorted(granted - (called - remediation))}"
    )
    # The same reads as the central role's own (home account) statements.
    central = {a for s in tw.role_statements("VpnTroubleshootRole", resources) for a in tw.actions_of(s)}
    assert granted <= central


def test_remediation_role_only_replaces_tunnels_of_tagged_vpns(member):
    role = member["Resources"]["RemediationRole"]
    assert role["Condition"] == "RemediationRoleHere"
    assert member["Conditions"]["RemediationRoleHere"]["Fn::And"][0] == {"Condition": "RolesHere"}
    assert member["Parameters"]["RemediationEnabled"]["Default"] == "false"
    (stmt,) = statements(role)
    assert tw.actions_of(stmt) == ["ec2:ReplaceVpnTunnel"]
    assert stmt["Resource"]["Fn::Sub"].endswith(":vpn-connection/*")
    assert stmt["Condition"] == {"StringEquals": {"aws:ResourceTag/incident-pipeline-remediation": "true"}}


@pytest.mark.parametrize("role_id", ["DiagnosisRole", "RemediationRole"])
def test_member_roles_trust_only_the_central_function_inside_the_organization(member, role_id):
    (trust,) = member["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": {"Ref": "CentralDiagnosisPrincipalArn"}}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}


def test_roles_are_created_in_one_region_per_account(member):
    # IAM is global: a second region's instance with the same role name would fail.
    assert member["Parameters"]["CreateRoles"]["Default"] == "true"
    assert member["Resources"]["DiagnosisRole"]["Condition"] == "RolesHere"
    assert "Condition" not in member["Resources"]["ForwardAlarmEventsRule"], "every region forwards its alarms"


def test_member_role_names_match_what_the_central_stack_assumes(member, central):
    assert member["Parameters"]["DiagnosisRoleName"]["Default"] == central["Parameters"]["MemberDiagnosisRoleName"]["Default"]
    assert member["Resources"]["DiagnosisRole"]["Properties"]["RoleName"] == {"Ref": "DiagnosisRoleName"}
    assert member["Resources"]["RemediationRole"]["Properties"]["RoleName"] == {"Ref": "RemediationRoleName"}


def test_central_role_assumes_only_the_member_roles_inside_the_organization(resources):
    stmts = [s for s in tw.role_statements("VpnTroubleshootRole", resources) if "sts:AssumeRole" in tw.actions_of(s)]
    (stmt,) = stmts
    subs = [r["Fn::Sub"] for r in tw.as_list(stmt["Resource"])]
    assert subs == [
        "arn:${AWS::Partition}:iam::*:role/${MemberDiagnosisRoleName}",
        "arn:${AWS::Partition}:iam::*:role/${MemberRemediationRoleName}",
    ]
    assert stmt["Condition"] == {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}}
    role = resources["VpnTroubleshootRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    conditional = [s for s in role if isinstance(s, dict) and "Fn::If" in s and s["Fn::If"][0] == "OrgOn"]
    assert conditional, "the AssumeRole statement exists only in organization mode"


def test_member_forwards_alarm_events_to_the_central_bus_through_a_role_with_a_dead_letter_queue(member):
    res = member["Resources"]
    rule = res["ForwardAlarmEventsRule"]["Properties"]
    assert "EventBusName" not in rule, "the default bus, where CloudWatch puts alarm events"
    assert rule["EventPattern"]["source"] == ["aws.cloudwatch"]
    assert "CloudWatch Alarm State Change" in rule["EventPattern"]["detail-type"]
    # Only this account's alarms, by name prefix (empty: all of them).
    (prefix,) = rule["EventPattern"]["resources"]
    assert prefix["prefix"]["Fn::Sub"].endswith(":${AWS::AccountId}:alarm:${AlarmNamePrefix}")
    assert member["Parameters"]["AlarmNamePrefix"]["Default"] == ""
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": "CentralEventBusArn"}
    # EventBridge requires a role for an event-bus target in another account or region.
    assert tw.ref_id(target["RoleArn"]) == "ForwardRole"
    assert "RetryPolicy" not in target, "event-bus targets take no retry policy"
    assert tw.ref_id(target["DeadLetterConfig"]["Arn"]) == "ForwardDeadLetterQueue"
    (put,) = statements(res["ForwardRole"])
    assert (tw.actions_of(put), put["Resource"]) == (["events:PutEvents"], {"Ref": "CentralEventBusArn"})
    (trust,) = res["ForwardRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    (dlq,) = res["ForwardDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert tw.ref_id(dlq["Condition"]["ArnEquals"]["aws:SourceArn"]) == "ForwardAlarmEventsRule"
    assert tw.ref_id(res["ForwardDeadLetterAlarm"]["Properties"]["Dimensions"][0]["Value"]) == "ForwardDeadLetterQueue"


def test_central_bus_admits_only_the_organization_and_reaches_alarm_to_incident(resources):
    policy = resources["OrgEventBusPolicy"]["Properties"]
    assert policy["Statement"]["Action"] == "events:PutEvents"
    assert policy["Statement"]["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}
    rule = resources["OrgAlarmRule"]["Properties"]
    assert tw.ref_id(rule["EventBusName"]) == "OrgEventBus"
    (target,) = rule["Targets"]
    assert tw.ref_id(target["Arn"]) == "AlarmToIncidentFunction"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert tw.ref_id(target["DeadLetterConfig"]["Arn"]) == "OrgEventsDeadLetterQueue"
    perm = resources["OrgAlarmRulePermission"]["Properties"]
    assert (perm["Principal"], tw.ref_id(perm["SourceArn"])) == ("events.amazonaws.com", "OrgAlarmRule")
    alarm = resources["RefusedEventsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("IncidentPipeline", "RefusedEvents")


def test_refusal_metric_names_match_the_code():
    src = (tw.REPO / "shared" / "src" / "org.rs").read_text()
    assert 'METRICS_NAMESPACE: &str = "IncidentPipeline"' in src
    assert 'REFUSED_METRIC: &str = "RefusedEvents"' in src
    assert '&[&["FunctionName"], &["FunctionName", "Reason"]]' in src


def test_organization_mode_is_off_by_default(central, resources):
    params = central["Parameters"]
    for name in ("OrganizationId", "MemberAccountIds", "AccountDirectory", "MemberRemediationRoleName"):
        assert params[name]["Default"] == "", name
    org_resources = [rid for rid, r in resources.items() if r.get("Condition") == "OrgOn"]
    assert sorted(org_resources) == sorted(
        [
            "OrgEventBus",
            "OrgEventBusPolicy",
            "OrgAlarmRule",
            "OrgAlarmRulePermission",
            "OrgEventsDeadLetterQueue",
            "OrgEventsDeadLetterQueuePolicy",
            "OrgEventsDeadLetterAlarm",
            "RefusedEventsAlarm",
        ]
    )
    assert central["Conditions"]["OrgOn"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OrganizationId"}, ""]}]}


def test_runbook_passes_account_and_region_to_the_diagnosis(resources):
    content = resources["DiagnosisRunbook"]["Properties"]["Content"]
    assert {"AccountId", "Region"} <= set(content["parameters"])
    build = next(s for s in content["mainSteps"] if s["name"] == "BuildInput")
    assert build["inputs"]["InputPayload"]["AccountId"] == "{{ AccountId }}"
    assert build["inputs"]["InputPayload"]["Region"] == "{{ Region }}"
    # The script itself: Incident Manager's involved resources give account and region.
    namespace: dict = {}
    exec(build["inputs"]["Script"], namespace)  # noqa: S102 - the template's own script
    out = namespace["build_input"](
        {
            "VpnConnectionId": "",
            "InvolvedResources": ["arn:aws:ec2:eu-central-1:111122223333:vpn-connection/vpn-0a1b2c3d4e5f67890"],
            "IncidentRecordArn": "arn:aws:ssm-incidents::123456789012:incident-record/p/1",
            "OpsItemId": "",
            "LookbackMinutes": "60",
            "AccountId": "",
            "Region": "",
        },
        None,
    )
    import json

    payload = json.loads(out["Payload"])
    assert payload["AccountId"] == "111122223333" and payload["Region"] == "eu-central-1", payload
    single = json.loads(
        namespace["build_input"]({"VpnConnectionId": "vpn-0a1b2c3d", "OpsItemId": "oi-01", "LookbackMinutes": "60"}, None)["Payload"]
    )
    assert "AccountId" not in single and "Region" not in single, "single account: input unchanged"


def test_alarm_reader_role_grants_only_the_sweeps_reads_on_the_forwarded_alarms(member, resources, workspace):
    role = member["Resources"]["AlarmReaderRole"]
    assert role["Condition"] == "AlarmReaderRoleHere"
    assert member["Conditions"]["AlarmReaderRoleHere"]["Fn::And"][0] == {"Condition": "RolesHere"}
    assert member["Parameters"]["CentralSweepPrincipalArn"]["Default"] == "", "existing StackSets update without it"
    (stmt,) = statements(role)
    assert tw.actions_of(stmt) == ["cloudwatch:DescribeAlarms", "cloudwatch:DescribeAlarmContributors"]
    assert stmt["Resource"]["Fn::Sub"] == "arn:${AWS::Partition}:cloudwatch:*:${AWS::AccountId}:alarm:${AlarmNamePrefix}*"
    # What the sweep calls (the same reader in every account).
    called = tw.function_analysis("AlarmToIncidentFunction", resources, workspace).actions
    assert {a for a in called if a.startswith("cloudwatch:")} == {
        "cloudwatch:DescribeAlarms",
        "cloudwatch:DescribeAlarmContributors",
    }
    assert "sts:AssumeRole" in called
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": {"Ref": "CentralSweepPrincipalArn"}}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}


def test_alarm_to_incident_assumes_only_the_alarm_reader_inside_the_organization(member, central, resources):
    assert (
        member["Parameters"]["AlarmReaderRoleName"]["Default"]
        == central["Parameters"]["MemberAlarmReaderRoleName"]["Default"]
    )
    assert member["Resources"]["AlarmReaderRole"]["Properties"]["RoleName"] == {"Ref": "AlarmReaderRoleName"}
    role = resources["AlarmToIncidentRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    conditional = [s for s in role if isinstance(s, dict) and "Fn::If" in s and s["Fn::If"][0] == "OrgSweepOn"]
    (stmt,) = [c["Fn::If"][1] for c in conditional]
    assert tw.actions_of(stmt) == ["sts:AssumeRole"]
    assert stmt["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberAlarmReaderRoleName}"}
    assert stmt["Condition"] == {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}}
    assert conditional[0]["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    assert central["Conditions"]["OrgSweepOn"]["Fn::And"][0] == {"Condition": "OrgOn"}
    # Everywhere else, alarm-to-incident assumes nothing.
    plain = [s for s in role if isinstance(s, dict) and "Fn::If" not in s]
    assert not [s for s in plain if "sts:AssumeRole" in tw.actions_of(s)]
    variables = resources["AlarmToIncidentFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["MEMBER_ALARM_READER_ROLE_NAME"] == {"Fn::If": ["OrgSweepOn", {"Ref": "MemberAlarmReaderRoleName"}, ""]}
    out = central["Outputs"]["CentralSweepPrincipalArn"]
    assert (out["Condition"], out["Value"]) == ("OrgOn", {"Fn::GetAtt": ["AlarmToIncidentRole", "Arn"]})


def test_unreachable_metric_name_matches_the_docs():
    src = (tw.REPO / "shared" / "src" / "org.rs").read_text()
    assert 'UNREACHABLE_METRIC: &str = "SweepUnreachableAccounts"' in src
    assert "SweepUnreachableAccounts" in (tw.REPO / "docs" / "DEPLOY.md").read_text()
