"""The emulator, driven by boto3 (the same wire protocols as the Rust SDK, from the same
Smithy models): shapes, validation, limits, idempotency and the scenario controls.
These tests need no Rust function."""

from __future__ import annotations

import json
import time
import urllib.request

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
import botocore.serialize
import botocore.session
import pytest

from emulator import Emulator

VPN = "vpn-0f1e2d3c4b5a69788"
T1, T2 = "203.0.113.10", "203.0.113.20"
PLAN = "arn:aws:ssm-incidents::123456789012:response-plan/vpn-plan"
DOC = "incident-pipeline-VpnDiagnosis"


@pytest.fixture()
def emu():
    e = Emulator().start()
    e.apply_scenario({
        "vpn_connections": [{"id": VPN, "tunnels": [{"outside_ip": T1}, {"outside_ip": T2}]}],
        "documents": [{"name": DOC, "parameters": ["VpnConnectionId", "OpsItemId", "IncidentRecordArn",
                                                   "AutomationAssumeRole", "LookbackMinutes"],
                       "required": ["VpnConnectionId"],
                       "types": {"VpnConnectionId": "String", "LookbackMinutes": "Integer"},
                       "patterns": {"VpnConnectionId": "^(vpn-[0-9a-f]{8,17})?$"}}],
        "response_plans": [{"arn": PLAN, "title": "VPN down", "impact": 3, "dedupe_string": "vpn-down",
                            "automation": {"document": DOC, "parameters": {"VpnConnectionId": [VPN]},
                                           "dynamic": {"IncidentRecordArn": "INCIDENT_RECORD_ARN"}}}],
        "parameters": {"/incident-pipeline/rules": '{"rules": []}'},
    })
    yield e
    e.stop()


def client(emu: Emulator, service: str):
    return boto3.client(service, endpoint_url=emu.url, region_name="eu-west-1", aws_access_key_id="local",
                        aws_secret_access_key="local",
                        # No client-side validation: the emulator's own checks are under test.
                        config=botocore.config.Config(retries={"total_max_attempts": 1},
                                                      parameter_validation=False))


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def dedup(s: str) -> dict:
    return {"/aws/dedup": {"Value": json.dumps({"dedupString": s}), "Type": "SearchableString"}}


# ---------------------------------------------------------------- OpsCenter

def test_create_ops_item_returns_id_and_get_returns_fields(emu):
    ssm = client(emu, "ssm")
    out = ssm.create_ops_item(Title="VPN connection vpn-0f1e2d3c4b5a69788 is DOWN", Description="Tunnel 1 down",
                              Source="incident-pipeline", Severity="2", Priority=3, Category="Availability",
                              OperationalData={**dedup("VPN connection x is DOWN"),
                                               "vpnId": {"Value": VPN, "Type": "SearchableString"}})
    assert out["OpsItemId"].startswith("oi-") and len(out["OpsItemId"]) == 15
    assert out["OpsItemArn"] == f"arn:aws:ssm:eu-west-1:123456789012:opsitem/{out['OpsItemId']}"
    item = ssm.get_ops_item(OpsItemId=out["OpsItemId"])["OpsItem"]
    assert item["Status"] == "Open"
    assert item["Severity"] == "2" and item["Priority"] == 3
    assert item["OperationalData"]["vpnId"]["Value"] == VPN
    assert item["CreatedTime"].year >= 2024


@pytest.mark.parametrize("kwargs, code", [
    ({"Severity": "5"}, "OpsItemInvalidParameterException"),
    ({"Priority": 6}, "ValidationException"),
    ({"OperationalData": {"awsThing": {"Value": "x", "Type": "String"}}}, "OpsItemInvalidParameterException"),
    ({"OperationalData": {"SSM-key": {"Value": "x", "Type": "String"}}}, "OpsItemInvalidParameterException"),
    ({"OperationalData": {"/aws/dedup": {"Value": "not json", "Type": "SearchableString"}}},
     "OpsItemInvalidParameterException"),
    ({"OperationalData": {"note": {"Value": "é" * 10_241, "Type": "String"}}}, "OpsItemInvalidParameterException"),
    ({"OperationalData": {"k" * 129: {"Value": "x", "Type": "String"}}}, "ValidationException"),
    ({"Title": "x" * 1025}, "ValidationException"),
])
def test_create_ops_item_rejects_invalid_fields(emu, kwargs, code):
    ssm = client(emu, "ssm")
    base = {"Title": "t", "Description": "d", "Source": "s", **kwargs}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ssm.create_ops_item(**base)
    assert error_code(e) == code


def test_create_ops_item_requires_title_description_source(emu):
    # boto3 checks required members itself; send the raw JSON the way a buggy client would.
    req = urllib.request.Request(emu.url, data=json.dumps({"Title": "t"}).encode(), method="POST", headers={
        "X-Amz-Target": "AmazonSSM.CreateOpsItem", "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    body = json.loads(e.value.read())
    assert e.value.code == 400 and body["__type"] == "ValidationException"
    assert "'Description'" in body["message"] and "'Source'" in body["message"]


def test_dedup_string_allows_one_open_item_until_resolved(emu):
    ssm = client(emu, "ssm")
    first = ssm.create_ops_item(Title="t", Description="d", Source="s", OperationalData=dedup("k1"))["OpsItemId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ssm.create_ops_item(Title="t", Description="d", Source="s", OperationalData=dedup("k1"))
    assert error_code(e) == "OpsItemAlreadyExistsException"
    assert e.value.response["OpsItemId"] == first
    ssm.update_ops_item(OpsItemId=first, Status="Resolved")
    second = ssm.create_ops_item(Title="t", Description="d", Source="s", OperationalData=dedup("k1"))["OpsItemId"]
    assert second != first


def test_describe_ops_items_filters_by_status_and_operational_data(emu):
    ssm = client(emu, "ssm")
    a = ssm.create_ops_item(Title="A", Description="d", Source="s", OperationalData=dedup("key-a"))["OpsItemId"]
    b = ssm.create_ops_item(Title="B", Description="d", Source="s", OperationalData=dedup("key-b"))["OpsItemId"]
    ssm.update_ops_item(OpsItemId=b, Status="Resolved")
    open_a = ssm.describe_ops_items(OpsItemFilters=[
        {"Key": "Status", "Values": ["Open"], "Operator": "Equal"},
        {"Key": "OperationalData", "Operator": "Equal",
         "Values": [json.dumps({"key": "/aws/dedup", "value": json.dumps({"dedupString": "key-a"})})]},
    ])["OpsItemSummaries"]
    assert [s["OpsItemId"] for s in open_a] == [a]
    by_value = ssm.describe_ops_items(OpsItemFilters=[
        {"Key": "OperationalDataValue", "Values": ["key-b"], "Operator": "Contains"}])["OpsItemSummaries"]
    assert [s["OpsItemId"] for s in by_value] == [b]
    assert by_value[0]["Status"] == "Resolved"


def test_update_ops_item_merges_and_deletes_operational_data(emu):
    ssm = client(emu, "ssm")
    oid = ssm.create_ops_item(Title="t", Description="d", Source="s",
                              OperationalData={"a": {"Value": "1", "Type": "String"}})["OpsItemId"]
    ssm.update_ops_item(OpsItemId=oid, OperationalData={"diagnosis": {"Value": "psk mismatch", "Type": "String"}},
                        OperationalDataToDelete=["a"], Severity="1", Priority=1)
    item = ssm.get_ops_item(OpsItemId=oid)["OpsItem"]
    assert set(item["OperationalData"]) == {"diagnosis"}
    assert item["Severity"] == "1" and item["Version"] == "2"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ssm.update_ops_item(OpsItemId="oi-000000000000", Status="Resolved")
    assert error_code(e) == "OpsItemNotFoundException"


def test_start_automation_checks_document_and_parameters_and_token(emu):
    ssm = client(emu, "ssm")
    token = "0b2f3c4d-1111-4222-8333-944455566677"
    eid = ssm.start_automation_execution(DocumentName=DOC, ClientToken=token,
                                         Parameters={"VpnConnectionId": [VPN], "OpsItemId": ["oi-0a1b2c3d4e5f"]})[
        "AutomationExecutionId"]
    again = ssm.start_automation_execution(DocumentName=DOC, ClientToken=token,
                                           Parameters={"VpnConnectionId": [VPN]})["AutomationExecutionId"]
    assert again == eid and len(emu.automations) == 1
    ex = ssm.get_automation_execution(AutomationExecutionId=eid)["AutomationExecution"]
    assert ex["AutomationExecutionStatus"] == "InProgress" and ex["Parameters"]["VpnConnectionId"] == [VPN]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ssm.start_automation_execution(DocumentName=DOC, Parameters={"VpnId": [VPN]})
    assert error_code(e) == "InvalidAutomationExecutionParametersException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ssm.start_automation_execution(DocumentName="AWS-Nope", Parameters={"VpnConnectionId": [VPN]})
    assert error_code(e) == "AutomationDefinitionNotFoundException"
    for bad in ({"VpnConnectionId": ["vpn-xyz"]}, {"VpnConnectionId": [VPN, VPN]},
                {"VpnConnectionId": [VPN], "LookbackMinutes": ["an hour"]}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ssm.start_automation_execution(DocumentName=DOC, Parameters=bad)
        assert error_code(e) == "InvalidAutomationExecutionParametersException"
    emu.finish_automation(eid, "Success", {"Diagnose.Payload": ['{"findings": 2}']})
    ex = ssm.get_automation_execution(AutomationExecutionId=eid)["AutomationExecution"]
    assert ex["AutomationExecutionStatus"] == "Success" and ex["Outputs"]["Diagnose.Payload"] == ['{"findings": 2}']


def test_get_parameter(emu):
    ssm = client(emu, "ssm")
    assert ssm.get_parameter(Name="/incident-pipeline/rules")["Parameter"]["Value"] == '{"rules": []}'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ssm.get_parameter(Name="/missing")
    assert error_code(e) == "ParameterNotFound"


def test_injected_fault_answers_once(emu):
    emu.apply_scenario({"faults": [{"op": "CreateOpsItem", "code": "ThrottlingException", "times": 1}]})
    ssm = client(emu, "ssm")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ssm.create_ops_item(Title="t", Description="d", Source="s")
    assert error_code(e) == "ThrottlingException"
    assert ssm.create_ops_item(Title="t", Description="d", Source="s")["OpsItemId"].startswith("oi-")


# ---------------------------------------------------------------- Incident Manager

def start(im, **kw):
    args = {"responsePlanArn": PLAN, "title": "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN", "impact": 3,
            "triggerDetails": {"source": "incident-pipeline", "timestamp": time.time(), "rawData": "{}",
                               "triggerArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down"}}
    args.update(kw)
    return im.start_incident(**args)["incidentRecordArn"]


def test_start_incident_dedupes_by_plan_and_token_and_starts_runbook(emu):
    im = client(emu, "ssm-incidents")
    arn = start(im, clientToken="tok-1")
    assert arn.startswith("arn:aws:ssm-incidents::123456789012:incident-record/vpn-plan/")
    assert start(im, clientToken="tok-1") == arn
    assert start(im, clientToken="tok-2") == arn  # same plan dedupe string while open
    assert len(emu.incidents) == 1
    rec = im.get_incident_record(arn=arn)["incidentRecord"]
    assert rec["status"] == "OPEN" and rec["impact"] == 3 and rec["dedupeString"] == "vpn-down"
    assert rec["incidentRecordSource"]["source"] == "incident-pipeline"
    # The response plan's runbook started with the incident's ARN (dynamic parameter).
    [ex] = emu.pending_automations()
    assert ex["Parameters"] == {"VpnConnectionId": [VPN], "IncidentRecordArn": [arn]}
    assert rec["automationExecutions"][0]["ssmExecutionArn"].endswith(ex["AutomationExecutionId"])


@pytest.mark.parametrize("kw, needle", [
    ({"title": "x" * 201}, "title"),
    ({"impact": 0}, "impact"),
    ({"triggerDetails": {"source": "aws.cloudwatch", "timestamp": 1.0}}, "aws."),
    ({"triggerDetails": {"source": "s", "timestamp": 1.0, "rawData": "x" * 10_001}}, "rawData"),
    ({"relatedItems": [{"identifier": {"type": "OTHER", "value": {"url": f"https://e.invalid/{i}"}}}
                       for i in range(101)]}, "relatedItems"),
])
def test_start_incident_enforces_limits(emu, kw, needle):
    im = client(emu, "ssm-incidents")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        start(im, **kw)
    assert error_code(e) == "ValidationException"
    assert needle in e.value.response["Error"]["Message"]
    assert emu.incidents == {}


def test_start_incident_unknown_plan_is_not_found(emu):
    im = client(emu, "ssm-incidents")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        start(im, responsePlanArn="arn:aws:ssm-incidents::123456789012:response-plan/nope")
    assert error_code(e) == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_timeline_related_items_and_resolve(emu):
    im = client(emu, "ssm-incidents")
    arn = start(im)
    ev = im.create_timeline_event(incidentRecordArn=arn, eventTime=time.time(), eventType="Custom Event",
                                  eventData=json.dumps("Diagnosis: pre-shared key mismatch"), clientToken="ev-1")
    again = im.create_timeline_event(incidentRecordArn=arn, eventTime=time.time(), eventType="Custom Event",
                                     eventData=json.dumps("dup"), clientToken="ev-1")
    assert again["eventId"] == ev["eventId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        im.create_timeline_event(incidentRecordArn=arn, eventTime=time.time(), eventType="Custom Event",
                                 eventData="plain text, not JSON")
    assert error_code(e) == "ValidationException"
    events = im.list_timeline_events(incidentRecordArn=arn)["eventSummaries"]
    assert [x["eventId"] for x in events] == [ev["eventId"]]
    full = im.get_timeline_event(incidentRecordArn=arn, eventId=ev["eventId"])["event"]
    assert json.loads(full["eventData"]) == "Diagnosis: pre-shared key mismatch"
    im.update_related_items(incidentRecordArn=arn, relatedItemsUpdate={"itemToAdd": {
        "identifier": {"type": "INVOLVED_RESOURCE",
                       "value": {"arn": f"arn:aws:ec2:eu-west-1:123456789012:vpn-connection/{VPN}"}},
        "title": "VPN connection"}})
    assert len(im.list_related_items(incidentRecordArn=arn)["relatedItems"]) == 1
    im.update_incident_record(arn=arn, impact=1)
    im.update_incident_record(arn=arn, status="RESOLVED", summary="Both tunnels back up")
    rec = im.get_incident_record(arn=arn)["incidentRecord"]
    assert rec["status"] == "RESOLVED" and rec["impact"] == 1 and "resolvedTime" in rec
    open_ = im.list_incident_records(filters=[{"key": "status", "condition": {"equals": {"stringValues": ["OPEN"]}}}])
    assert open_["incidentRecordSummaries"] == []
    # Resolved: the plan's dedupe string no longer matches, a new alarm opens a new incident.
    assert start(im) != arn


# ---------------------------------------------------------------- EC2

def test_describe_vpn_connections_has_telemetry_and_log_options(emu):
    ec2 = client(emu, "ec2")
    emu.apply_scenario({"tunnels": [{"vpn_connection_id": VPN, "outside_ip": T1, "status": "DOWN"}]})
    [vpn] = ec2.describe_vpn_connections(VpnConnectionIds=[VPN])["VpnConnections"]
    assert vpn["State"] == "available" and vpn["CustomerGatewayId"].startswith("cgw-")
    tel = {t["OutsideIpAddress"]: t for t in vpn["VgwTelemetry"]}
    assert tel[T1]["Status"] == "DOWN" and tel[T1]["StatusMessage"] == "" and tel[T1]["AcceptedRouteCount"] == 0
    assert tel[T2]["Status"] == "UP" and tel[T2]["AcceptedRouteCount"] == 2
    assert time.time() - tel[T1]["LastStatusChange"].timestamp() < 10
    opts = vpn["Options"]["TunnelOptions"][0]
    assert opts["OutsideIpAddress"] == T1
    assert opts["LogOptions"]["CloudWatchLogOptions"] == {
        "LogEnabled": True, "LogGroupArn": f"arn:aws:logs:eu-west-1:123456789012:log-group:/aws/vpn/{VPN}",
        "LogOutputFormat": "json"}
    assert opts["Phase1EncryptionAlgorithms"] == [{"Value": "AES256"}]
    assert opts["IkeVersions"] == [{"Value": "ikev2"}]
    filtered = ec2.describe_vpn_connections(Filters=[{"Name": "state", "Values": ["deleted"]}])
    assert filtered["VpnConnections"] == []


def test_describe_unknown_vpn_is_not_found(emu):
    ec2 = client(emu, "ec2")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_vpn_connections(VpnConnectionIds=["vpn-00000000000000000"])
    assert error_code(e) == "InvalidVpnConnectionID.NotFound"


def test_gateways_and_transit_gateway_attachments(emu):
    ec2 = client(emu, "ec2")
    emu.apply_scenario({"vpn_connections": [{"id": "vpn-0aaaabbbbccccdddd", "transit_gateway_id": "tgw-0123456789abcdef0",
                                             "tunnels": [{"outside_ip": "192.0.2.1"}, {"outside_ip": "192.0.2.2"}]}]})
    [vpn] = ec2.describe_vpn_connections(VpnConnectionIds=[VPN])["VpnConnections"]
    [cgw] = ec2.describe_customer_gateways(CustomerGatewayIds=[vpn["CustomerGatewayId"]])["CustomerGateways"]
    assert cgw["IpAddress"] == "198.51.100.7" and cgw["BgpAsn"] == "65000"
    [vgw] = ec2.describe_vpn_gateways(VpnGatewayIds=[vpn["VpnGatewayId"]])["VpnGateways"]
    assert vgw["VpcAttachments"][0]["State"] == "attached" and vgw["AmazonSideAsn"] == 64512
    [att] = ec2.describe_transit_gateway_attachments(
        Filters=[{"Name": "resource-id", "Values": ["vpn-0aaaabbbbccccdddd"]}])["TransitGatewayAttachments"]
    assert att["ResourceType"] == "vpn" and att["State"] == "available"


def test_replace_vpn_tunnel_dry_run_then_real(emu):
    ec2 = client(emu, "ec2")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.replace_vpn_tunnel(VpnConnectionId=VPN, VpnTunnelOutsideIpAddress=T1, DryRun=True)
    assert error_code(e) == "DryRunOperation"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert emu.replacements == []
    assert ec2.replace_vpn_tunnel(VpnConnectionId=VPN, VpnTunnelOutsideIpAddress=T1)["Return"] is True
    assert [r["VpnTunnelOutsideIpAddress"] for r in emu.replacements] == [T1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.replace_vpn_tunnel(VpnConnectionId=VPN, VpnTunnelOutsideIpAddress="192.0.2.99")
    assert error_code(e) == "InvalidParameterValue"


def test_tunnel_replacement_status_shows_pending_maintenance(emu):
    ec2 = client(emu, "ec2")
    emu.apply_scenario({"vpn_connections": [{"id": "vpn-0bbbbccccddddeeee", "tunnels": [
        {"outside_ip": "192.0.2.5", "pending_maintenance": "Tunnel endpoint replacement",
         "maintenance_auto_applied_after": time.time() + 86400}, {"outside_ip": "192.0.2.6"}]}]})
    out = ec2.get_vpn_tunnel_replacement_status(VpnConnectionId="vpn-0bbbbccccddddeeee",
                                                VpnTunnelOutsideIpAddress="192.0.2.5")
    assert out["MaintenanceDetails"]["PendingMaintenance"] == "Tunnel endpoint replacement"


# ---------------------------------------------------------------- Logs Insights

def log_scenario(emu, base: float) -> str:
    group = f"/aws/vpn/{VPN}"
    recs = [
        {"event_timestamp": int((base - 120) * 1000), "details": "AWS tunnel payload decryption was unsuccessful "
         "due to invalid Pre-shared Key", "dpd_enabled": True, "nat_t_detected": False,
         "ike_phase1_state": "down", "ike_phase2_state": "down", "tunnel_ip": T1},
        {"event_timestamp": int((base - 60) * 1000), "details": "tunnel is up", "dpd_enabled": True,
         "nat_t_detected": False, "ike_phase1_state": "established", "ike_phase2_state": "established",
         "tunnel_ip": T2},
        {"event_timestamp": int((base - 7200) * 1000), "details": "old", "tunnel_ip": T1},
    ]
    emu.apply_scenario({"log_records": [{"log_group": group, "records": recs}], "query_running_polls": 1})
    return group


def test_logs_insights_query_filters_and_polls(emu):
    logs = client(emu, "logs")
    base = time.time()
    group = log_scenario(emu, base)
    q = logs.start_query(logGroupName=group, startTime=int(base - 3600), endTime=int(base),
                         queryString=f'fields @timestamp, tunnel_ip, ike_phase1_state, details '
                                     f'| filter tunnel_ip = "{T1}" | sort @timestamp desc | limit 50')
    first = logs.get_query_results(queryId=q["queryId"])
    assert first["status"] == "Running" and first["results"] == []
    done = logs.get_query_results(queryId=q["queryId"])
    assert done["status"] == "Complete"
    [row] = done["results"]
    cells = {c["field"]: c["value"] for c in row}
    assert cells["tunnel_ip"] == T1 and "Pre-shared Key" in cells["details"]
    assert cells["ike_phase1_state"] == "down" and "@ptr" in cells
    assert done["statistics"]["recordsMatched"] == 1.0


def test_logs_insights_stats_and_arn_identifiers(emu):
    logs = client(emu, "logs")
    base = time.time()
    group = log_scenario(emu, base)
    emu.query_running_polls = 0
    arn = f"arn:aws:logs:eu-west-1:123456789012:log-group:{group}"
    q = logs.start_query(logGroupIdentifiers=[arn], startTime=int(base - 3600), endTime=int(base),
                         queryString="stats latest(ike_phase1_state) as phase1, count(*) as events by tunnel_ip")
    res = logs.get_query_results(queryId=q["queryId"])
    rows = sorted(({c["field"]: c["value"] for c in r} for r in res["results"]), key=lambda r: r["tunnel_ip"])
    assert rows == [{"tunnel_ip": T1, "phase1": "down", "events": "1"},
                    {"tunnel_ip": T2, "phase1": "established", "events": "1"}]


def test_logs_stop_query_and_errors(emu):
    logs = client(emu, "logs")
    base = time.time()
    group = log_scenario(emu, base)
    emu.query_running_polls = 1000
    q = logs.start_query(logGroupName=group, startTime=int(base - 60), endTime=int(base), queryString="fields @message")
    assert logs.get_query_results(queryId=q["queryId"])["status"] == "Running"
    assert logs.stop_query(queryId=q["queryId"])["success"] is True
    assert logs.get_query_results(queryId=q["queryId"])["status"] == "Cancelled"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs.start_query(logGroupName=group, startTime=1, endTime=2, queryString="parse @message 'x' as y")
    assert error_code(e) == "MalformedQueryException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs.start_query(logGroupName="/nope", startTime=1, endTime=2, queryString="fields @message")
    assert error_code(e) == "ResourceNotFoundException"


# ---------------------------------------------------------------- CloudWatch (rpcv2Cbor)

def cbor_call(emu: Emulator, op: str, params: dict) -> tuple[int, dict]:
    """One rpcv2Cbor call encoded and decoded by botocore's own CBOR implementation
    (boto3's CloudWatch client picks awsJson; the Rust SDK uses CBOR)."""
    model = botocore.session.get_session().get_service_model("cloudwatch")
    op_model = model.operation_model(op)
    req = botocore.serialize.create_serializer("smithy-rpc-v2-cbor", include_validation=False) \
        .serialize_to_request(params, op_model)
    http = urllib.request.Request(emu.url + req["url_path"], data=req["body"], method="POST",
                                  headers={k: v for k, v in req["headers"].items()})
    try:
        resp = urllib.request.urlopen(http, timeout=5)
        status, body, headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        status, body, headers = e.code, e.read(), e.headers
    assert headers["smithy-protocol"] == "rpc-v2-cbor"
    parser = botocore.parsers.create_parser("smithy-rpc-v2-cbor")
    parsed = parser.parse({"status_code": status, "headers": dict(headers), "body": body},
                          op_model.output_shape)
    return status, parsed


def test_get_metric_data_tunnel_state_over_cbor(emu):
    down_at = time.time() - 600
    emu.apply_scenario({"tunnels": [{"vpn_connection_id": VPN, "outside_ip": T1, "status": "DOWN", "at": down_at}]})
    end = time.time()
    status, out = cbor_call(emu, "GetMetricData", {
        "StartTime": end - 3600, "EndTime": end, "ScanBy": "TimestampAscending", "MetricDataQueries": [
            {"Id": "anydown", "MetricStat": {"Metric": {"Namespace": "AWS/VPN", "MetricName": "TunnelState",
                                                        "Dimensions": [{"Name": "VpnId", "Value": VPN}]},
                                             "Period": 60, "Stat": "Minimum"}},
            {"Id": "t2", "MetricStat": {"Metric": {"Namespace": "AWS/VPN", "MetricName": "TunnelState",
                                                   "Dimensions": [{"Name": "TunnelIpAddress", "Value": T2}]},
                                        "Period": 300, "Stat": "Maximum"}}]})
    assert status == 200
    anydown, t2 = out["MetricDataResults"]
    assert anydown["StatusCode"] == "Complete" and len(anydown["Values"]) >= 55
    assert anydown["Values"][0] == 1.0 and anydown["Values"][-1] == 0.0
    assert anydown["Timestamps"][0] < anydown["Timestamps"][-1]
    assert set(t2["Values"]) == {1.0}


def test_cbor_validation_error_is_a_cbor_error(emu):
    status, out = cbor_call(emu, "GetMetricData", {"StartTime": 1.0, "EndTime": 2.0, "MetricDataQueries": [
        {"Id": "", "MetricStat": {"Metric": {"Namespace": "AWS/VPN", "MetricName": "TunnelState"},
                                  "Period": 60, "Stat": "Minimum"}}]})
    assert status == 400 and out["Error"]["Code"] == "InvalidParameterValueException"


def test_describe_alarms_over_cbor_by_name_with_pages_and_validation(emu):
    emu.apply_scenario({"alarms": [
        {"name": f"vpn-tunnel-down-{i}", "state": "ALARM", "at": 1764064860.123 + i,
         "dimensions": {"VpnId": VPN}} for i in range(3)]})
    # The story moves an alarm without delivering anything (a muted action).
    emu.apply_scenario({"alarms": [{"name": "vpn-tunnel-down-1", "state": "OK", "at": 1764066000.5}]})
    status, out = cbor_call(emu, "DescribeAlarms", {
        "AlarmNames": ["vpn-tunnel-down-1", "vpn-tunnel-down-2", "not-there"], "MaxRecords": 1})
    assert status == 200
    [first] = out["MetricAlarms"]
    assert first["AlarmName"] == "vpn-tunnel-down-1" and first["StateValue"] == "OK"
    assert first["AlarmArn"] == "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down-1"
    assert first["StateUpdatedTimestamp"].timestamp() == 1764066000.5
    assert first["Dimensions"] == [{"Name": "VpnId", "Value": VPN}]
    status, out = cbor_call(emu, "DescribeAlarms", {
        "AlarmNames": ["vpn-tunnel-down-1", "vpn-tunnel-down-2"], "MaxRecords": 1, "NextToken": out["NextToken"]})
    assert [a["AlarmName"] for a in out["MetricAlarms"]] == ["vpn-tunnel-down-2"]
    assert "NextToken" not in out
    # The model's limit of 100 names is enforced.
    status, out = cbor_call(emu, "DescribeAlarms", {"AlarmNames": [f"a{i}" for i in range(101)]})
    assert status == 400 and out["Error"]["Code"] == "InvalidParameterValueException"
    status, out = cbor_call(emu, "DescribeAlarms", {"AlarmNames": ["a"], "AlarmNamePrefix": "a"})
    assert status == 400 and out["Error"]["Code"] == "InvalidParameterCombination"


def test_describe_alarm_contributors_over_cbor_lists_the_series_in_alarm_with_pages(emu):
    query = 'SELECT MIN(TunnelState) FROM "AWS/VPN" GROUP BY VpnId'
    series = [{"id": f"3f9a1c7e5b2d804{i}", "attributes": {"VpnId": f"vpn-0{i}"}, "at": 1764064924.919 + i}
              for i in range(3)]
    emu.apply_scenario({"alarms": [
        {"name": "vpn-tunnel-down-all", "state": "ALARM", "at": 1764064924.919, "expression": query,
         "contributors": series},
        {"name": "vpn-tunnel-down-one", "state": "OK", "at": 1.0, "dimensions": {"VpnId": VPN}}]})
    # DescribeAlarms answers the alarm with its query, as a Metrics Insights alarm.
    status, out = cbor_call(emu, "DescribeAlarms", {"AlarmNames": ["vpn-tunnel-down-all"]})
    [alarm] = out["MetricAlarms"]
    assert alarm["Metrics"] == [{"Id": "m1", "Expression": query, "Period": 60, "ReturnData": True}]
    assert "MetricName" not in alarm and "Dimensions" not in alarm
    listed, token = [], None
    for _ in range(5):
        status, out = cbor_call(emu, "DescribeAlarmContributors",
                                {"AlarmName": "vpn-tunnel-down-all", **({"NextToken": token} if token else {})})
        assert status == 200, out
        # Parsed with the model: every required AlarmContributor member is there.
        shape = botocore.session.get_session().get_service_model("cloudwatch").shape_for("AlarmContributor")
        assert all(set(shape.required_members) <= set(c) for c in out["AlarmContributors"]), out
        listed += out["AlarmContributors"]
        token = out.get("NextToken")
        if token is None:
            break
    assert [c["ContributorAttributes"]["VpnId"] for c in listed] == ["vpn-00", "vpn-01", "vpn-02"]
    assert listed[2]["StateTransitionedTimestamp"].timestamp() == 1764064926.919
    # VPN 1's series recovers: it is no longer listed.
    emu.apply_scenario({"alarms": [{"name": "vpn-tunnel-down-all", "state": "ALARM", "at": 1764064924.919,
                                    "contributors": [series[0], series[2]]}]})
    status, out = cbor_call(emu, "DescribeAlarmContributors", {"AlarmName": "vpn-tunnel-down-all"})
    assert [c["ContributorId"] for c in out["AlarmContributors"]] == [series[0]["id"], series[2]["id"]]
    # Declined: no such alarm (404), not a multi-time-series alarm, no name (the model).
    status, out = cbor_call(emu, "DescribeAlarmContributors", {"AlarmName": "gone"})
    assert status == 404 and out["Error"]["Code"] == "ResourceNotFoundException"
    status, out = cbor_call(emu, "DescribeAlarmContributors", {"AlarmName": "vpn-tunnel-down-one"})
    assert status == 400 and out["Error"]["Code"] == "ValidationException"
    status, out = cbor_call(emu, "DescribeAlarmContributors", {})
    assert status == 400 and out["Error"]["Code"] == "InvalidParameterValueException"
    status, out = cbor_call(emu, "DescribeAlarmContributors", {"AlarmName": "vpn-tunnel-down-all", "NextToken": "x"})
    assert status == 400 and out["Error"]["Code"] == "InvalidNextToken"


def test_describe_alarms_fault_is_throttling(emu):
    emu.apply_scenario({"alarms": [{"name": "x", "state": "OK", "at": 1.0}],
                        "faults": [{"service": "cloudwatch", "op": "DescribeAlarms", "code": "Throttling",
                                    "status": 400, "message": "Rate exceeded"}]})
    status, out = cbor_call(emu, "DescribeAlarms", {"AlarmNames": ["x"]})
    assert status == 400 and out["Error"]["Code"] == "Throttling"
    status, out = cbor_call(emu, "DescribeAlarms", {"AlarmNames": ["x"]})
    assert status == 200 and out["MetricAlarms"][0]["StateValue"] == "OK"


# ---------------------------------------------------------------- control endpoints

def test_control_endpoints_over_http(emu):
    req = urllib.request.Request(emu.url + "/_scenario", method="POST", data=json.dumps(
        {"tunnels": [{"vpn_connection_id": VPN, "outside_ip": T2, "status": "DOWN"}]}).encode())
    assert json.loads(urllib.request.urlopen(req, timeout=5).read())["ok"] is True
    state = json.loads(urllib.request.urlopen(emu.url + "/_state", timeout=5).read())
    [vpn] = state["vpn_connections"]
    assert {t["OutsideIpAddress"]: t["Status"] for t in vpn["VgwTelemetry"]} == {T1: "UP", T2: "DOWN"}
    eid = emu._start_automation(DOC, {"VpnConnectionId": [VPN]}, "test")
    req = urllib.request.Request(f"{emu.url}/_automation/{eid}", method="POST",
                                 data=json.dumps({"status": "Failed", "failure_message": "boom"}).encode())
    assert json.loads(urllib.request.urlopen(req, timeout=5).read())["AutomationExecutionStatus"] == "Failed"
    calls = json.loads(urllib.request.urlopen(emu.url + "/_calls", timeout=5).read())
    assert calls["next"] == len(calls["calls"])
