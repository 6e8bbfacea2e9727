#!/usr/bin/env python3
"""The project's own AWS emulator: dev-only, never deployed.

It serves, on 127.0.0.1, exactly the AWS operations the functions use that moto
does not serve (DESIGN.md sections 4, 5 and 7), speaking the real wire protocols so
the unmodified Rust SDK clients talk to it through `AWS_ENDPOINT_URL_<SERVICE>`:

| service (SDK env suffix)      | protocol                          | operations |
|-------------------------------|-----------------------------------|------------|
| SSM (`SSM`)                   | awsJson1_1, `AmazonSSM.<Op>`      | CreateOpsItem, UpdateOpsItem, GetOpsItem, DescribeOpsItems, StartAutomationExecution, GetAutomationExecution, GetParameter |
| Incident Manager (`SSM_INCIDENTS`) | restJson1                    | StartIncident, UpdateIncidentRecord, GetIncidentRecord, ListIncidentRecords, CreateTimelineEvent, ListTimelineEvents, GetTimelineEvent, UpdateRelatedItems, ListRelatedItems |
| EC2 (`EC2`)                   | ec2Query (form in, XML out)       | DescribeVpnConnections (with VgwTelemetry and tunnel LogOptions), DescribeCustomerGateways, DescribeVpnGateways, DescribeTransitGatewayAttachments, ReplaceVpnTunnel (DryRun), GetVpnTunnelReplacementStatus |
| CloudWatch Logs (`CLOUDWATCH_LOGS`) | awsJson1_1, `Logs_20140328.<Op>` | StartQuery, GetQueryResults, StopQuery (a Logs Insights subset, see insights.py) |
| CloudWatch (`CLOUDWATCH`)     | rpcv2Cbor                         | GetMetricData, GetMetricStatistics for `AWS/VPN TunnelState` from the tunnel history; DescribeAlarms of the alarms a scenario sets (`alarms`); DescribeAlarmContributors of its multi-time-series ones (`expression`, `contributors`) |

Inputs are checked against the botocore service models (required members, lengths,
ranges, enums: awsmodel.py) and against the service rules of DESIGN.md section 4:
incident title <= 200, impact 1-5, trigger source not starting with `aws.`, rawData
<= 10,000, <= 100 related items, clientToken idempotency, timeline eventData must be
JSON; OpsItem Title/Description/Source required, Severity "1"-"4", Priority 1-5,
operational data keys not starting with aws/amazon/amzn/ssm except the OpsCenter
keys `/aws/dedup`, `/aws/resources`, `/aws/automations`, and one open OpsItem per
dedup string. Choices where AWS documents no detail are marked "emulator choice".

Control endpoints (JSON): POST /_scenario (see `apply_scenario`), POST /_reset,
GET /_state, GET /_calls, GET /_automations, POST /_automation/<id> (finish a run).

Several accounts (organization mode): every request is served in the account of its
credentials, as in AWS. The access key of the request's SigV4 `Authorization` header is
mapped to an account: keys given in the scenario (`access_keys`), else, once
`resolve_accounts_with(moto_url)` is set, moto's own answer to `sts:GetCallerIdentity`
for that key (credentials moto issued with `sts:AssumeRole` act in the role's account),
else this emulator's own account. Each other account has its own state (VPNs, logs,
metrics, ...): `apply_scenario({"account": "111122223333", ...})`, `member(account)`.

Run alone: `python3 local/emulator.py` prints its URL and serves until Ctrl-C.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import sys
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import awsmodel  # noqa: E402
import cbor  # noqa: E402
import insights  # noqa: E402
from httpserve import Handler, Server  # noqa: E402

ACCOUNT = "123456789012"
DEFAULT_REGION = "eu-west-1"
CALLER_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/incident-pipeline-local/function"

# OpsCenter: user keys must not start with these (case-insensitive); the listed
# /aws/ keys are OpsCenter's own and are accepted with their documented JSON shapes.
RESERVED_OPSDATA_PREFIXES = ("aws", "amazon", "amzn", "ssm", "/aws", "/amazon", "/amzn", "/ssm")
OPSCENTER_KEYS = ("/aws/dedup", "/aws/resources", "/aws/automations")
OPS_CLOSED = ("Resolved", "Closed", "Cancelled")
# "The value has a maximum size of 20 KB" (CreateOpsItem, OperationalData).
OPSDATA_VALUE_MAX_BYTES = 20 * 1024


class ApiError(Exception):
    """An AWS error answer: code (`__type` / `x-amzn-errortype` / `<Code>`), message, HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: Any):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.extra = code, message, status, extra


def now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return awsmodel.iso8601(ts)


def _ts(v: Any) -> float:
    """A timestamp from a request: epoch seconds (JSON), ISO 8601 (EC2 filters) or CBOR tag 1."""
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    raise ApiError("ValidationException", f"not a timestamp: {v!r}")


def _region_of(h: Handler) -> str:
    m = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", h.headers.get("Authorization", ""))
    return m.group(1) if m else DEFAULT_REGION


def _public(d: dict) -> dict:
    """A stored object without the emulator's private `_` keys."""
    return {k: v for k, v in d.items() if not k.startswith("_")}


class Emulator:
    """In-memory AWS state plus the HTTP front end. Thread-safe (one lock)."""

    def __init__(self, account: str = ACCOUNT, verbose: bool = False, root: bool = True):
        self.account = account
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.server: Server | None = None
        self.verbose = verbose
        # The emulator the server answers with: it hands requests made with another
        # account's credentials to that account's emulator (`members`).
        self.root = root
        self.members: dict[str, Emulator] = {}
        self.access_keys: dict[str, str] = {}
        self.sts_url: str | None = None
        # Role ARN -> the account its trust policy names (organization mode, `_sts`).
        self.roles: dict[str, str] = {}
        self.reset()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "Emulator":
        self.server = Server(self._app, verbose=self.verbose).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        if not self.server:
            raise RuntimeError("emulator not started")
        return self.server.url

    def reset(self) -> None:
        with self.lock:
            self.ops_items: dict[str, dict] = {}
            self.automations: dict[str, dict] = {}
            self.automation_tokens: dict[str, str] = {}
            self.documents: dict[str, dict] = {}
            self.parameters: dict[str, dict] = {}
            self.response_plans: dict[str, dict] = {}
            self.incidents: dict[str, dict] = {}
            self.incident_tokens: dict[str, str] = {}
            self.timeline: dict[str, list[dict]] = {}
            self.timeline_tokens: dict[str, str] = {}
            self.related: dict[str, list[dict]] = {}
            self.update_tokens: set[str] = set()
            self.vpns: dict[str, dict] = {}
            self.customer_gateways: dict[str, dict] = {}
            self.vpn_gateways: dict[str, dict] = {}
            self.tgw_attachments: dict[str, dict] = {}
            self.tunnel_history: dict[tuple[str, str], list[tuple[float, int]]] = {}
            self.maintenance: dict[tuple[str, str], dict] = {}
            self.replacements: list[dict] = []
            self.log_groups: dict[str, dict] = {}
            self.queries: dict[str, dict] = {}
            self.query_running_polls = 1
            self.alarms: dict[str, dict] = {}
            self.calls: list[dict] = []
            self.faults: list[dict] = []
            self.region = DEFAULT_REGION

    # ------------------------------------------------------------ scenario (control)

    def apply_scenario(self, spec: dict) -> dict:
        """Sets the world a story runs in. Every key is optional:

        - `account`: apply the rest to that account's state (organization mode).
        - `access_keys`: {access key id: account} for requests signed with those keys.
        - `roles`: [{account, name, trusted_account}] IAM roles that sts:AssumeRole through
          this emulator may assume (see `_sts`): a role missing here, or trusting another
          account, is refused with AccessDenied as IAM would.
        - `reset`: true to start from nothing.
        - `vpn_connections`: [{id, customer_gateway_id?, vpn_gateway_id? | transit_gateway_id?,
          state?, static_routes_only?, log_group_arn?, log_enabled?, history_minutes?,
          tunnels: [{outside_ip, status?, status_message?, accepted_route_count?,
          inside_cidr?, pending_maintenance?, maintenance_auto_applied_after?}], routes?, tags?}]
        - `customer_gateways` / `vpn_gateways`: overrides of the gateways created with a VPN.
        - `tunnels`: telemetry changes [{vpn_connection_id, outside_ip, status, status_message?,
          accepted_route_count?, at?}] (also recorded as TunnelState metric history).
        - `log_records`: [{log_group, stream?, records: [JSON objects with event_timestamp]}].
        - `log_groups`: names to create empty.
        - `query_running_polls`: GetQueryResults answers "Running" this many times first (default 1).
        - `parameters`: {name: value} for GetParameter.
        - `documents`: [{name, parameters: [names], required?: [names], types?: {name: String|StringList|
          Integer|Boolean}, patterns?: {name: allowedPattern}}] Automation runbooks.
        - `response_plans`: [{arn | name, title?, impact?, dedupe_string?, summary?,
          chatbot_sns?, automation?: {document, parameters: {k: [v]}, dynamic: {k: INCIDENT_RECORD_ARN|INVOLVED_RESOURCES}}}]
        - `alarms`: [{name, state: OK|ALARM|INSUFFICIENT_DATA, at (epoch seconds of the state
          change, as the alarm events carry it), reason?, namespace?, metric?, dimensions? {name: value},
          statistic?, period?, threshold?, comparison?, description?, expression?, contributors?}]:
          metric alarms as DescribeAlarms returns them; setting one again changes its state (the
          story moves alarms without delivering their actions, as a mute rule does). `expression`
          (a Metrics Insights query, `SELECT ... GROUP BY ...`) makes it a multi-time-series alarm
          (`Metrics` instead of one metric); `contributors`: [{id, attributes {name: value}, at,
          reason?}] are its time series in ALARM now, as DescribeAlarmContributors lists them (a
          series not listed is OK; setting the list again replaces it).
        - `faults`: [{service?, op, code, status?, message?, times?}] errors injected on the next calls.
        """
        account = spec.get("account")
        if account and account != self.account:
            return self.member(account).apply_scenario({k: v for k, v in spec.items() if k != "account"})
        with self.lock:
            if spec.get("reset"):
                self.reset()
            self.access_keys.update(spec.get("access_keys", {}))
            for r in spec.get("roles", []):
                self.roles[f"arn:aws:iam::{r['account']}:role/{r['name']}"] = r["trusted_account"]
            for v in spec.get("vpn_connections", []):
                self._add_vpn(v)
            for g in spec.get("customer_gateways", []):
                self.customer_gateways.setdefault(g["CustomerGatewayId"], {}).update(g)
            for g in spec.get("vpn_gateways", []):
                self.vpn_gateways.setdefault(g["VpnGatewayId"], {}).update(g)
            for t in spec.get("tunnels", []):
                self._set_tunnel(t)
            for name in spec.get("log_groups", []):
                self._log_group(name)
            for batch in spec.get("log_records", []):
                self._add_log_records(batch)
            if "query_running_polls" in spec:
                self.query_running_polls = max(0, int(spec["query_running_polls"]))
            for name, value in spec.get("parameters", {}).items():
                self.parameters[name] = {"Name": name, "Type": "String", "Value": value, "Version": 1,
                                         "LastModifiedDate": now(), "DataType": "text",
                                         "ARN": f"arn:aws:ssm:{DEFAULT_REGION}:{self.account}:parameter/{name.lstrip('/')}"}
            for d in spec.get("documents", []):
                self.documents[d["name"]] = {"parameters": list(d.get("parameters", [])),
                                             "required": list(d.get("required", [])),
                                             "types": dict(d.get("types", {})),
                                             "patterns": dict(d.get("patterns", {}))}
            for p in spec.get("response_plans", []):
                arn = p.get("arn") or f"arn:aws:ssm-incidents::{self.account}:response-plan/{p['name']}"
                self.response_plans[arn] = {
                    "name": arn.rsplit("/", 1)[-1], "title": p.get("title", "Incident"),
                    "impact": int(p.get("impact", 3)), "dedupeString": p.get("dedupe_string", ""),
                    "summary": p.get("summary"), "chatbotSns": p.get("chatbot_sns", []),
                    "automation": p.get("automation")}
            for a in spec.get("alarms", []):
                self._set_alarm(a)
            for f in spec.get("faults", []):
                self.faults.append({"service": f.get("service"), "op": f["op"], "code": f["code"],
                                    "status": int(f.get("status", 400)),
                                    "message": f.get("message", "injected by the local scenario"),
                                    "times": int(f.get("times", 1))})
            self.changed.notify_all()
            return {"ok": True, "vpn_connections": sorted(self.vpns),
                    "response_plans": sorted(self.response_plans)}

    def _set_alarm(self, a: dict) -> None:
        name = a["name"]
        if a["state"] not in ("OK", "ALARM", "INSUFFICIENT_DATA"):
            raise ValueError(f"alarm {name}: state {a['state']!r} is not OK, ALARM or INSUFFICIENT_DATA")
        old = self.alarms.get(name, {})
        # CloudWatch keeps milliseconds.
        at = int(round(float(a["at"]) * 1000)) / 1000
        self.alarms[name] = {
            **old,
            "name": name, "state": a["state"], "at": at,
            "reason": a.get("reason", f"Set by the local scenario: {a['state']}"),
            "namespace": a.get("namespace", old.get("namespace", "AWS/VPN")),
            "metric": a.get("metric", old.get("metric", "TunnelState")),
            "dimensions": a.get("dimensions", old.get("dimensions", {})),
            "statistic": a.get("statistic", old.get("statistic", "Minimum")),
            "period": int(a.get("period", old.get("period", 60))),
            "threshold": float(a.get("threshold", old.get("threshold", 1.0))),
            "comparison": a.get("comparison", old.get("comparison", "LessThanThreshold")),
            "description": a.get("description", old.get("description")),
            "expression": a.get("expression", old.get("expression")),
            "contributors": [self._contributor(name, c) for c in a["contributors"]]
            if "contributors" in a else old.get("contributors", []),
            "created": old.get("created", at),
        }
        if self.alarms[name]["contributors"] and not self.alarms[name]["expression"]:
            raise ValueError(f"alarm {name}: contributors need an expression (a multi-time-series alarm)")

    @staticmethod
    def _contributor(alarm: str, c: dict) -> dict:
        if not c.get("id") or not isinstance(c.get("attributes"), dict) or not c["attributes"]:
            raise ValueError(f"alarm {alarm}: a contributor needs an id and attributes: {c!r}")
        return {"id": c["id"], "attributes": dict(c["attributes"]),
                "at": int(round(float(c["at"]) * 1000)) / 1000,
                "reason": c.get("reason", "Threshold Crossed: set by the local scenario")}

    def _add_vpn(self, v: dict) -> None:
        vid = v["id"]
        region = v.get("region", DEFAULT_REGION)
        created = now() - 60 * float(v.get("history_minutes", 60))
        cgw = v.get("customer_gateway_id", "cgw-" + vid[4:21].ljust(17, "0")[:17])
        self.customer_gateways.setdefault(cgw, {
            "CustomerGatewayId": cgw, "BgpAsn": str(v.get("customer_bgp_asn", 65000)),
            "IpAddress": v.get("customer_gateway_ip", "198.51.100.7"), "State": "available",
            "Type": "ipsec.1", "DeviceName": v.get("customer_device", "branch-office-router")})
        tgw = v.get("transit_gateway_id")
        vgw = None if tgw else v.get("vpn_gateway_id", "vgw-" + vid[4:21].ljust(17, "0")[:17])
        if vgw:
            self.vpn_gateways.setdefault(vgw, {
                "VpnGatewayId": vgw, "State": "available", "Type": "ipsec.1", "AmazonSideAsn": 64512,
                "VpcAttachments": [{"VpcId": v.get("vpc_id", "vpc-0a1b2c3d4e5f60718"), "State": "attached"}]})
        if tgw:
            att = v.get("transit_gateway_attachment_id", "tgw-attach-" + vid[4:21])
            self.tgw_attachments[att] = {
                "TransitGatewayAttachmentId": att, "TransitGatewayId": tgw,
                "TransitGatewayOwnerId": self.account, "ResourceOwnerId": self.account,
                "ResourceType": "vpn", "ResourceId": vid, "State": "available", "CreationTime": created,
                "Association": {"TransitGatewayRouteTableId": "tgw-rtb-0a1b2c3d4e5f60718", "State": "associated"}}
        log_arn = v.get("log_group_arn")
        if log_arn is None and v.get("log_enabled", True):
            log_arn = f"arn:aws:logs:{region}:{self.account}:log-group:/aws/vpn/{vid}"
        tunnels, telemetry = [], []
        for i, t in enumerate(v.get("tunnels", [])):
            ip = t["outside_ip"]
            status = t.get("status", "UP")
            tunnels.append({
                "OutsideIpAddress": ip,
                "TunnelInsideCidr": t.get("inside_cidr", f"169.254.{10 + i}.0/30"),
                "PreSharedKey": "local-demo-psk-not-secret",
                "Phase1EncryptionAlgorithms": [{"Value": "AES256"}],
                "Phase2EncryptionAlgorithms": [{"Value": "AES256"}],
                "Phase1IntegrityAlgorithms": [{"Value": "SHA2-256"}],
                "Phase2IntegrityAlgorithms": [{"Value": "SHA2-256"}],
                "Phase1DHGroupNumbers": [{"Value": 14}], "Phase2DHGroupNumbers": [{"Value": 14}],
                "IkeVersions": [{"Value": "ikev2"}],
                "DpdTimeoutSeconds": 30, "DpdTimeoutAction": "clear", "StartupAction": "add",
                "LogOptions": {"CloudWatchLogOptions": {
                    "LogEnabled": bool(v.get("log_enabled", True)) and log_arn is not None,
                    **({"LogGroupArn": log_arn} if log_arn else {}),
                    "LogOutputFormat": v.get("log_format", "json")}},
            })
            telemetry.append({"OutsideIpAddress": ip, "Status": status,
                              "StatusMessage": t.get("status_message", ""),
                              "LastStatusChange": created,
                              "AcceptedRouteCount": int(t.get("accepted_route_count", 2 if status == "UP" else 0))})
            self.tunnel_history[(vid, ip)] = [(created, 1 if status == "UP" else 0)]
            if t.get("pending_maintenance"):
                self.maintenance[(vid, ip)] = {
                    "PendingMaintenance": t["pending_maintenance"],
                    **({"MaintenanceAutoAppliedAfter": t["maintenance_auto_applied_after"]}
                       if t.get("maintenance_auto_applied_after") else {})}
        self.vpns[vid] = {
            "VpnConnectionId": vid, "State": v.get("state", "available"), "Type": "ipsec.1",
            "CustomerGatewayId": cgw, "Category": "VPN",
            **({"VpnGatewayId": vgw} if vgw else {}), **({"TransitGatewayId": tgw} if tgw else {}),
            "CustomerGatewayConfiguration": "<vpn_connection id=\"%s\"></vpn_connection>" % vid,
            "Options": {"StaticRoutesOnly": bool(v.get("static_routes_only", False)),
                        "TunnelInsideIpVersion": "ipv4", "OutsideIpAddressType": "PublicIpv4",
                        "LocalIpv4NetworkCidr": "0.0.0.0/0", "RemoteIpv4NetworkCidr": "0.0.0.0/0",
                        "TunnelOptions": tunnels},
            "Routes": [{"DestinationCidrBlock": r, "Source": "Static", "State": "available"}
                       for r in v.get("routes", [])],
            "Tags": [{"Key": k, "Value": val} for k, val in v.get("tags", {"Name": "branch-office"}).items()],
            "VgwTelemetry": telemetry,
            "GatewayAssociationState": "associated",
            "_created": created, "_region": region,
        }
        if log_arn:
            self._log_group(log_arn.split(":log-group:", 1)[1].removesuffix(":*"))

    def _set_tunnel(self, t: dict) -> None:
        vpn = self.vpns.get(t["vpn_connection_id"])
        if vpn is None:
            raise ValueError(f"scenario: unknown VPN connection {t['vpn_connection_id']}")
        at = float(t.get("at", now()))
        for tel in vpn["VgwTelemetry"]:
            if tel["OutsideIpAddress"] == t["outside_ip"]:
                if "status" in t and t["status"] != tel["Status"]:
                    tel["Status"] = t["status"]
                    tel["LastStatusChange"] = at
                    self.tunnel_history[(vpn["VpnConnectionId"], t["outside_ip"])].append(
                        (at, 1 if t["status"] == "UP" else 0))
                if "status_message" in t:
                    tel["StatusMessage"] = t["status_message"]
                if "accepted_route_count" in t:
                    tel["AcceptedRouteCount"] = int(t["accepted_route_count"])
                elif "status" in t:
                    tel["AcceptedRouteCount"] = 2 if t["status"] == "UP" else 0
                return
        raise ValueError(f"scenario: {t['outside_ip']} is not a tunnel of {t['vpn_connection_id']}")

    def _log_group(self, name: str) -> dict:
        return self.log_groups.setdefault(name, {
            "arn": f"arn:aws:logs:{DEFAULT_REGION}:{self.account}:log-group:{name}", "events": []})

    def _add_log_records(self, batch: dict) -> None:
        group = self._log_group(batch["log_group"])
        for rec in batch["records"]:
            ts = rec.get("event_timestamp", now()) if isinstance(rec, dict) else now()
            ts_ms = int(ts if ts > 1e12 else ts * 1000)
            stream = batch.get("stream") or (rec.get("tunnel_ip", "tunnel") if isinstance(rec, dict) else "tunnel")
            group["events"].append(insights.record(rec, ts_ms, batch["log_group"], stream))

    def finish_automation(self, execution_id: str, status: str = "Success", outputs: dict | None = None,
                          failure_message: str | None = None, step: dict | None = None) -> dict:
        """Marks a runbook run finished, the way SSM Automation reports it."""
        with self.lock:
            ex = self.automations.get(execution_id)
            if ex is None:
                raise KeyError(execution_id)
            end = now()
            ex["AutomationExecutionStatus"] = status
            ex["ExecutionEndTime"] = end
            ex["Outputs"] = outputs or {}
            if failure_message:
                ex["FailureMessage"] = failure_message
            if step:
                ex["StepExecutions"] = [{
                    "StepName": step.get("name", "Diagnose"), "Action": step.get("action", "aws:invokeLambdaFunction"),
                    "ExecutionStartTime": ex["ExecutionStartTime"], "ExecutionEndTime": end,
                    "StepStatus": status, "Inputs": step.get("inputs", {}),
                    "Outputs": step.get("outputs", {}),
                    **({"FailureMessage": failure_message} if failure_message else {})}]
            self.changed.notify_all()
            return _public(ex)

    def pending_automations(self) -> list[dict]:
        with self.lock:
            return [dict(a) for a in self.automations.values() if a["AutomationExecutionStatus"] == "InProgress"]

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Waits (bounded) until `predicate()` is truthy after a state change; returns its value."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                v = predicate()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self.changed.wait(min(left, 0.5))

    def snapshot(self) -> dict:
        with self.lock:
            return json.loads(json.dumps({
                "ops_items": list(self.ops_items.values()),
                "automation_executions": list(self.automations.values()),
                "incident_records": list(self.incidents.values()),
                "timeline_events": self.timeline, "related_items": self.related,
                "vpn_connections": [_public(v) for v in self.vpns.values()],
                "tunnel_replacements": self.replacements,
                "log_groups": {k: len(v["events"]) for k, v in self.log_groups.items()},
                "queries": [{k: v for k, v in q.items() if k != "results"} for q in self.queries.values()],
                "calls": self.calls,
                **({"accounts": {a: m.snapshot() for a, m in self.members.items()}} if self.members else {}),
            }, default=str))

    # ------------------------------------------------------------ several accounts

    def member(self, account: str) -> "Emulator":
        """The emulator of `account` (this one for its own account; created on first use)."""
        if account == self.account:
            return self
        with self.lock:
            if account not in self.members:
                self.members[account] = Emulator(account, verbose=self.verbose, root=False)
            return self.members[account]

    def resolve_accounts_with(self, sts_url: str) -> None:
        """Maps unknown access keys to accounts by asking moto (`sts:GetCallerIdentity`)."""
        self.sts_url = sts_url

    def account_of(self, h: Handler) -> str:
        """The account the request's credentials act in."""
        m = re.search(r"Credential=([A-Za-z0-9]+)/", h.headers.get("Authorization", ""))
        key = m.group(1) if m else ""
        with self.lock:
            known = self.access_keys.get(key)
        if known or not key or not self.sts_url:
            return known or self.account
        account = self._caller_account(key)
        with self.lock:
            self.access_keys[key] = account
        return account

    def _caller_account(self, key: str) -> str:
        # moto does not check signatures: a request naming the key is enough for it to
        # say whose key it is (an assumed role's account, else its default account).
        import urllib.request
        req = urllib.request.Request(
            self.sts_url, data=b"Action=GetCallerIdentity&Version=2011-06-15", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Authorization": f"AWS4-HMAC-SHA256 Credential={key}/20260101/{DEFAULT_REGION}/sts/aws4_request, "
                                      "SignedHeaders=host, Signature=0"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read().decode("utf-8", "replace")
        except OSError:
            return self.account
        m = re.search(r"<Account>(\d{12})</Account>", body)
        return m.group(1) if m else self.account

    # ------------------------------------------------------------ HTTP front end

    def _app(self, h: Handler) -> None:
        url = urlsplit(h.path)
        path = url.path
        if path.startswith("/_"):
            account = parse_qs(url.query).get("account", [None])[0]
            if account and self.root:
                return self.member(account)._control(h, path, parse_qs(url.query))
            return self._control(h, path, parse_qs(url.query))
        if self.root:
            account = self.account_of(h)
            if account != self.account:
                return self.member(account)._app(h)
        target = h.headers.get("X-Amz-Target", "")
        if target.startswith("AmazonSSM."):
            return self._json_rpc(h, "ssm", target.split(".", 1)[1], self.SSM)
        if target.startswith("Logs_20140328."):
            return self._json_rpc(h, "logs", target.split(".", 1)[1], self.LOGS)
        if path.startswith("/service/GraniteServiceVersion20100801/operation/"):
            return self._cbor_rpc(h, path.rsplit("/", 1)[1])
        route = (h.command, path)
        if route in self.INCIDENTS:
            return self._rest_json(h, route, url.query)
        ctype = h.headers.get("Content-Type", "")
        if h.command == "POST" and "x-www-form-urlencoded" in ctype and b"Action=AssumeRole&" in h.body + b"&":
            return self._sts(h)
        if h.command == "POST" and "x-www-form-urlencoded" in ctype:
            return self._ec2(h)
        h.send_json(404, {"__type": "UnknownOperationException",
                          "message": f"the local emulator does not serve {h.command} {path} (target {target!r})"})

    def _record(self, service: str, op: str, params: Any, error: ApiError | None) -> None:
        self.calls.append({"at": now(), "service": service, "op": op, "request": params,
                           **({"error": error.code, "message": error.message} if error else {})})

    def _call(self, service: str, op: str, params: dict, fn: Callable[[dict], Any], region: str) -> Any:
        with self.lock:
            try:
                for f in self.faults:
                    if f["op"] == op and f["service"] in (None, service) and f["times"] > 0:
                        f["times"] -= 1
                        raise ApiError(f["code"], f["message"], f["status"])
                self.region = region
                result = fn(params)
                self._record(service, op, params, None)
                return result
            except ApiError as e:
                self._record(service, op, params, e)
                raise
            finally:
                self.changed.notify_all()

    def _json_rpc(self, h: Handler, service: str, op: str, table: dict) -> None:
        fn = table.get(op)
        ctype = "application/x-amz-json-1.1"
        if fn is None:
            return h.send_json(400, {"__type": "UnknownOperationException",
                                     "message": f"{op} is not served by the local emulator"}, content_type=ctype)
        try:
            params = json.loads(h.body or b"{}")
            if not isinstance(params, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as e:
            return h.send_json(400, {"__type": "SerializationException", "message": str(e)}, content_type=ctype)
        try:
            errors = awsmodel.validate(service, op, params)
            if errors:
                e = ApiError("ValidationException", awsmodel.validation_message(errors))
                with self.lock:
                    self._record(service, op, params, e)
                raise e
            result = self._call(service, op, params, lambda p: fn(self, p), _region_of(h))
            h.send_json(200, result, content_type=ctype)
        except ApiError as e:
            # SSM's error shapes name the text `Message`, Logs' `message`: send both.
            h.send_json(e.status, {"__type": e.code, "message": e.message, "Message": e.message, **e.extra},
                        content_type=ctype)

    def _rest_json(self, h: Handler, route: tuple[str, str], query: str) -> None:
        op, fn, status = self.INCIDENTS[route]
        try:
            params = json.loads(h.body) if h.body else {}
            for k, v in parse_qs(query).items():
                params[k] = v[0]
        except ValueError as e:
            return h.send_json(400, {"message": str(e)}, headers={"X-Amzn-Errortype": "SerializationException"})
        try:
            errors = awsmodel.validate("ssm-incidents", op, params)
            if errors:
                e = ApiError("ValidationException", awsmodel.validation_message(errors))
                with self.lock:
                    self._record("ssm-incidents", op, params, e)
                raise e
            result = self._call("ssm-incidents", op, params, lambda p: fn(self, p), _region_of(h))
            if status == 204:
                h.send(204)
            else:
                h.send_json(status, result)
        except ApiError as e:
            h.send_json(e.status, {"message": e.message, **e.extra}, headers={"X-Amzn-Errortype": e.code})

    def _ec2(self, h: Handler) -> None:
        form = {k: v[0] for k, v in parse_qs(h.body.decode("utf-8"), keep_blank_values=True).items()}
        op = form.pop("Action", "")
        form.pop("Version", None)
        params = awsmodel.ec2_params(form)
        request_id = str(uuid.uuid4())
        fn = self.EC2.get(op)
        try:
            if fn is None:
                raise ApiError("InvalidAction", f"The action {op} is not valid for this web service "
                                                f"(not served by the local emulator).")
            result = self._call("ec2", op, params, lambda p: fn(self, p), _region_of(h))
            h.send(200, awsmodel.ec2_xml(op, result, request_id), content_type="text/xml;charset=UTF-8")
        except ApiError as e:
            h.send(e.status, awsmodel.ec2_error_xml(e.code, e.message, request_id),
                   content_type="text/xml;charset=UTF-8")

    def _sts(self, h: Handler) -> None:
        """sts:AssumeRole with the trust check moto leaves out (it lets anyone assume any
        role, even one that does not exist): the role must be one of the scenario's `roles`
        and trust the caller's account. Allowed requests go on to moto, whose credentials
        then act in the role's account (`account_of`)."""
        form = {k: v[0] for k, v in parse_qs(h.body.decode("utf-8"), keep_blank_values=True).items()}
        role = form.get("RoleArn", "")
        caller = self.account_of(h)
        trusted = self.roles.get(role)
        if trusted != caller or not self.sts_url:
            message = (f"User: arn:aws:sts::{caller}:assumed-role/incident-pipeline-local/function is not authorized "
                       f"to perform: sts:AssumeRole on resource: {role}")
            with self.lock:
                self._record("sts", "AssumeRole", form, ApiError("AccessDenied", message, 403))
            body = ('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                    f'<Code>AccessDenied</Code><Message>{message}</Message></Error>'
                    f'<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>')
            return h.send(403, body.encode(), content_type="text/xml")
        import urllib.error
        import urllib.request
        req = urllib.request.Request(self.sts_url, data=h.body, method="POST", headers={
            "Content-Type": h.headers.get("Content-Type", ""), "Authorization": h.headers.get("Authorization", "")})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        with self.lock:
            self._record("sts", "AssumeRole", form, None)
        h.send(status, body, content_type="text/xml")

    def _cbor_rpc(self, h: Handler, op: str) -> None:
        headers = {"smithy-protocol": "rpc-v2-cbor"}
        fn = self.METRICS.get(op)
        try:
            if fn is None:
                raise ApiError("UnknownOperationException", f"{op} is not served by the local emulator", 404)
            try:
                params = cbor.loads(h.body)
            except cbor.CborError as e:
                raise ApiError("SerializationException", f"bad CBOR body: {e}") from None
            if not isinstance(params, dict):
                raise ApiError("SerializationException", "CBOR body is not a map")
            errors = awsmodel.validate("cloudwatch", op, params)
            if errors:
                raise ApiError("InvalidParameterValueException", awsmodel.validation_message(errors))
            result = self._call("cloudwatch", op, params, lambda p: fn(self, p), _region_of(h))
            h.send(200, cbor.dumps(result), content_type="application/cbor", headers=headers)
        except ApiError as e:
            h.send(e.status, cbor.dumps({"__type": e.code, "message": e.message}),
                   content_type="application/cbor", headers=headers)

    def _control(self, h: Handler, path: str, query: dict) -> None:
        try:
            if path == "/_scenario" and h.command == "POST":
                return h.send_json(200, self.apply_scenario(json.loads(h.body or b"{}")))
            if path == "/_reset" and h.command == "POST":
                self.reset()
                return h.send_json(200, {"ok": True})
            if path == "/_state":
                return h.send_json(200, self.snapshot())
            if path == "/_calls":
                since = int(query.get("since", ["0"])[0])
                with self.lock:
                    return h.send_json(200, {"calls": self.calls[since:], "next": len(self.calls)})
            if path == "/_automations":
                with self.lock:
                    return h.send_json(200, {"executions": list(self.automations.values())})
            m = re.fullmatch(r"/_automation/([0-9a-f-]{36})", path)
            if m and h.command == "POST":
                body = json.loads(h.body or b"{}")
                return h.send_json(200, self.finish_automation(
                    m.group(1), body.get("status", "Success"), body.get("outputs"),
                    body.get("failure_message"), body.get("step")))
            h.send_json(404, {"message": f"no control endpoint {h.command} {path}"})
        except (ValueError, KeyError) as e:
            h.send_json(400, {"message": f"{type(e).__name__}: {e}"})

    # ------------------------------------------------------------ SSM: OpsCenter

    def _check_opsdata(self, data: dict) -> None:
        for key, entry in data.items():
            low = key.lower()
            if len(entry.get("Value", "").encode("utf-8")) > OPSDATA_VALUE_MAX_BYTES:
                raise ApiError("OpsItemInvalidParameterException",
                               f"Operational data {key!r} is larger than 20 KB.", ParameterNames=["OperationalData"])
            if key in OPSCENTER_KEYS:
                try:
                    value = json.loads(entry.get("Value", ""))
                except ValueError:
                    raise ApiError("OpsItemInvalidParameterException",
                                   f"Operational data {key} must hold JSON.", ParameterNames=["OperationalData"]) from None
                ok = (key == "/aws/dedup" and isinstance(value, dict) and isinstance(value.get("dedupString"), str)
                      and value["dedupString"].strip() != "") or \
                     (key == "/aws/resources" and isinstance(value, list) and all("arn" in r for r in value)) or \
                     (key == "/aws/automations" and isinstance(value, list)
                      and all("automationId" in a and "automationType" in a for a in value))
                if not ok:
                    raise ApiError("OpsItemInvalidParameterException",
                                   f"Operational data {key} has the wrong JSON shape "
                                   f"(/aws/dedup: {{\"dedupString\": \"...\"}}; /aws/resources: [{{\"arn\": ...}}]; "
                                   f"/aws/automations: [{{\"automationType\", \"automationId\"}}]).",
                                   ParameterNames=["OperationalData"])
            elif low.startswith(RESERVED_OPSDATA_PREFIXES):
                raise ApiError("OpsItemInvalidParameterException",
                               f"Operational data key {key!r} is reserved: user keys can't begin with "
                               f"aws, amazon, amzn or ssm.", ParameterNames=["OperationalData"])

    @staticmethod
    def _check_severity(p: dict) -> None:
        if "Severity" in p and p["Severity"] not in ("1", "2", "3", "4"):
            raise ApiError("OpsItemInvalidParameterException",
                           f"Severity must be \"1\" to \"4\", got {p['Severity']!r}.", ParameterNames=["Severity"])

    @staticmethod
    def _dedup_of(item: dict) -> str | None:
        entry = item.get("OperationalData", {}).get("/aws/dedup")
        if not entry:
            return None
        try:
            return json.loads(entry["Value"]).get("dedupString")
        except (ValueError, AttributeError):
            return None

    def ssm_create_ops_item(self, p: dict) -> dict:
        self._check_severity(p)
        data = p.get("OperationalData", {})
        self._check_opsdata(data)
        dedup = self._dedup_of(p)
        if dedup:
            for item in self.ops_items.values():
                if item["Status"] not in OPS_CLOSED and self._dedup_of(item) == dedup:
                    # Emulator choice: a duplicate of an open item is refused with the open item's id.
                    raise ApiError("OpsItemAlreadyExistsException",
                                   f"An open OpsItem with dedup string {dedup!r} already exists.",
                                   OpsItemId=item["OpsItemId"])
        oid = "oi-" + secrets.token_hex(6)
        t = now()
        item = {"OpsItemId": oid, "OpsItemArn": f"arn:aws:ssm:{self.region}:{self.account}:opsitem/{oid}",
                "Title": p["Title"], "Description": p["Description"], "Source": p["Source"],
                "Status": "Open", "CreatedTime": t, "LastModifiedTime": t, "CreatedBy": CALLER_ARN,
                "LastModifiedBy": CALLER_ARN, "Version": "1", "OperationalData": dict(data),
                "OpsItemType": p.get("OpsItemType", "/aws/issue"), "_history": []}
        for k in ("Priority", "Severity", "Category", "Notifications", "RelatedOpsItems",
                  "ActualStartTime", "ActualEndTime", "PlannedStartTime", "PlannedEndTime"):
            if k in p:
                item[k] = p[k]
        self.ops_items[oid] = item
        return {"OpsItemId": oid, "OpsItemArn": item["OpsItemArn"]}

    def _ops_item(self, oid: str) -> dict:
        item = self.ops_items.get(oid)
        if item is None:
            raise ApiError("OpsItemNotFoundException", f"OpsItem {oid} not found.")
        return item

    def ssm_update_ops_item(self, p: dict) -> dict:
        item = self._ops_item(p["OpsItemId"])
        self._check_severity(p)
        data = p.get("OperationalData", {})
        self._check_opsdata(data)
        item["OperationalData"].update(data)
        for k in p.get("OperationalDataToDelete", []):
            item["OperationalData"].pop(k, None)
        change = {"at": now()}
        for k in ("Title", "Description", "Status", "Priority", "Severity", "Category", "Notifications",
                  "RelatedOpsItems", "ActualStartTime", "ActualEndTime", "PlannedStartTime", "PlannedEndTime"):
            if k in p:
                change[k] = p[k]
                item[k] = p[k]
        if data:
            change["OperationalData"] = sorted(data)
        item["_history"].append(change)
        item["LastModifiedTime"] = change["at"]
        item["LastModifiedBy"] = CALLER_ARN
        item["Version"] = str(int(item["Version"]) + 1)
        return {}

    def ssm_get_ops_item(self, p: dict) -> dict:
        return {"OpsItem": _public(self._ops_item(p["OpsItemId"]))}

    def _ops_filter(self, f: dict) -> Callable[[dict], bool]:
        key, op, values = f["Key"], f["Operator"], f["Values"]

        def text_match(actual: str | None) -> bool:
            if actual is None:
                return False
            if op == "Equal":
                return any(actual == v for v in values)
            if op == "Contains":
                return any(v in actual for v in values)
            raise ApiError("OpsItemInvalidParameterException", f"operator {op} does not apply to {key}",
                           ParameterNames=["OpsItemFilters"])

        def searchable(item: dict) -> dict[str, str]:
            return {k: e.get("Value", "") for k, e in item.get("OperationalData", {}).items()
                    if e.get("Type") == "SearchableString"}

        simple = {"Status", "Source", "Title", "OpsItemId", "Severity", "Category", "OpsItemType", "CreatedBy"}
        if key in simple:
            return lambda item: text_match(item.get(key))
        if key == "Priority":
            nums = [int(v) for v in values]
            cmp = {"Equal": lambda a, b: a == b, "GreaterThan": lambda a, b: a > b,
                   "LessThan": lambda a, b: a < b}.get(op)
            if cmp is None:
                raise ApiError("OpsItemInvalidParameterException", f"operator {op} does not apply to Priority",
                               ParameterNames=["OpsItemFilters"])
            return lambda item: "Priority" in item and any(cmp(item["Priority"], n) for n in nums)
        if key in ("CreatedTime", "LastModifiedTime", "ActualStartTime", "ActualEndTime"):
            times = [_ts(v) for v in values]
            if op not in ("GreaterThan", "LessThan"):
                raise ApiError("OpsItemInvalidParameterException", f"{key} takes GreaterThan or LessThan",
                               ParameterNames=["OpsItemFilters"])
            return lambda item: key in item and any(
                item[key] > t if op == "GreaterThan" else item[key] < t for t in times)
        if key == "OperationalData":
            wanted = []
            for v in values:
                try:
                    kv = json.loads(v)
                    wanted.append((kv["key"], kv["value"]))
                except (ValueError, KeyError, TypeError):
                    raise ApiError("OpsItemInvalidParameterException",
                                   'OperationalData filter values are JSON {"key": "...", "value": "..."}',
                                   ParameterNames=["OpsItemFilters"]) from None

            def match(item: dict) -> bool:
                data = searchable(item)
                return any(k in data and (data[k] == val if op == "Equal" else val in data[k]) for k, val in wanted)
            return match
        if key == "OperationalDataKey":
            return lambda item: any(text_match(k) for k in searchable(item))
        if key == "OperationalDataValue":
            return lambda item: any(text_match(v) for v in searchable(item).values())
        if key == "ResourceId":
            def arns(item: dict) -> list[str]:
                try:
                    return [r["arn"] for r in json.loads(item["OperationalData"]["/aws/resources"]["Value"])]
                except (KeyError, ValueError, TypeError):
                    return []
            return lambda item: any(text_match(a) for a in arns(item))
        if key == "AutomationId":
            def ids(item: dict) -> list[str]:
                try:
                    return [a["automationId"] for a in
                            json.loads(item["OperationalData"]["/aws/automations"]["Value"])]
                except (KeyError, ValueError, TypeError):
                    return []
            return lambda item: any(text_match(a) for a in ids(item))
        raise ApiError("OpsItemInvalidParameterException",
                       f"filter key {key} is not supported by the local emulator", ParameterNames=["OpsItemFilters"])

    def ssm_describe_ops_items(self, p: dict) -> dict:
        preds = [self._ops_filter(f) for f in p.get("OpsItemFilters", [])]
        items = [i for i in self.ops_items.values() if all(f(i) for f in preds)]
        items.sort(key=lambda i: i["CreatedTime"], reverse=True)
        start = int(p.get("NextToken") or 0)
        size = int(p.get("MaxResults", 50))
        page = items[start:start + size]
        summary_keys = ("CreatedBy", "CreatedTime", "LastModifiedBy", "LastModifiedTime", "Priority", "Source",
                        "Status", "OpsItemId", "Title", "OperationalData", "Category", "Severity", "OpsItemType",
                        "ActualStartTime", "ActualEndTime", "PlannedStartTime", "PlannedEndTime")
        out = {"OpsItemSummaries": [{k: i[k] for k in summary_keys if k in i} for i in page]}
        if start + size < len(items):
            out["NextToken"] = str(start + size)
        return out

    # ------------------------------------------------------------ SSM: Automation, parameters

    def _start_automation(self, document: str, parameters: dict[str, list[str]], source: str,
                          client_token: str | None = None) -> str:
        doc = self.documents.get(document)
        if doc is None:
            raise ApiError("AutomationDefinitionNotFoundException",
                           f"Automation document {document!r} was not found (the scenario registers the runbook).")
        unknown = sorted(set(parameters) - set(doc["parameters"]))
        missing = sorted(set(doc["required"]) - set(parameters))
        if unknown or missing:
            raise ApiError("InvalidAutomationExecutionParametersException",
                           f"Parameters of {document}: unknown {unknown}, missing {missing}; "
                           f"the document takes {doc['parameters']}.")
        for k, v in parameters.items():
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ApiError("InvalidAutomationExecutionParametersException",
                               f"Parameter {k} must be a list of strings.")
            kind = doc["types"].get(k, "StringList")
            if kind in ("String", "Integer", "Boolean") and len(v) > 1:
                raise ApiError("InvalidAutomationExecutionParametersException",
                               f"Parameter {k} is a {kind} and takes one value, got {len(v)}.")
            if kind == "Integer" and v and not re.fullmatch(r"-?\d+", v[0]):
                raise ApiError("InvalidAutomationExecutionParametersException",
                               f"Parameter {k} is an Integer, got {v[0]!r}.")
            pattern = doc["patterns"].get(k)
            if pattern and not all(re.search(pattern, x) for x in v):
                raise ApiError("InvalidAutomationExecutionParametersException",
                               f"Parameter {k} value {v!r} does not match the allowed pattern {pattern}.")
        if client_token and client_token in self.automation_tokens:
            return self.automation_tokens[client_token]
        eid = str(uuid.uuid4())
        self.automations[eid] = {
            "AutomationExecutionId": eid, "DocumentName": document, "DocumentVersion": "1",
            "ExecutionStartTime": now(), "AutomationExecutionStatus": "InProgress", "Mode": "Auto",
            "Parameters": parameters, "Outputs": {}, "StepExecutions": [], "ExecutedBy": CALLER_ARN,
            "_source": source}
        if client_token:
            self.automation_tokens[client_token] = eid
        return eid

    def ssm_start_automation_execution(self, p: dict) -> dict:
        eid = self._start_automation(p["DocumentName"], p.get("Parameters", {}), "StartAutomationExecution",
                                     p.get("ClientToken"))
        return {"AutomationExecutionId": eid}

    def ssm_get_automation_execution(self, p: dict) -> dict:
        ex = self.automations.get(p["AutomationExecutionId"])
        if ex is None:
            raise ApiError("AutomationExecutionNotFoundException",
                           f"Automation execution {p['AutomationExecutionId']} not found.")
        return {"AutomationExecution": _public(ex)}

    def ssm_get_parameter(self, p: dict) -> dict:
        param = self.parameters.get(p["Name"])
        if param is None:
            raise ApiError("ParameterNotFound", f"Parameter {p['Name']} not found.")
        return {"Parameter": param}

    SSM = {"CreateOpsItem": ssm_create_ops_item, "UpdateOpsItem": ssm_update_ops_item,
           "GetOpsItem": ssm_get_ops_item, "DescribeOpsItems": ssm_describe_ops_items,
           "StartAutomationExecution": ssm_start_automation_execution,
           "GetAutomationExecution": ssm_get_automation_execution, "GetParameter": ssm_get_parameter}

    # ------------------------------------------------------------ Incident Manager

    def _incident(self, arn: str) -> dict:
        rec = self.incidents.get(arn)
        if rec is None:
            raise ApiError("ResourceNotFoundException", f"Incident record {arn} does not exist.", 404,
                           resourceIdentifier=arn, resourceType="INCIDENT_RECORD")
        return rec

    def im_start_incident(self, p: dict) -> dict:
        plan = self.response_plans.get(p["responsePlanArn"])
        if plan is None:
            raise ApiError("ResourceNotFoundException", f"Response plan {p['responsePlanArn']} does not exist.",
                           404, resourceIdentifier=p["responsePlanArn"], resourceType="RESPONSE_PLAN")
        trigger = p.get("triggerDetails")
        if trigger and trigger["source"].startswith("aws."):
            raise ApiError("ValidationException",
                           f"triggerDetails.source {trigger['source']!r} must not start with 'aws.' "
                           f"(reserved for AWS services).")
        token = p.get("clientToken")
        if token and token in self.incident_tokens:
            return {"incidentRecordArn": self.incident_tokens[token]}
        dedupe = plan["dedupeString"]
        if dedupe:
            for rec in self.incidents.values():
                if rec["status"] == "OPEN" and rec["dedupeString"] == dedupe:
                    # Deduplicated by the plan's dedupe string: the open incident answers.
                    if token:
                        self.incident_tokens[token] = rec["arn"]
                    rec["_duplicates"] = rec.get("_duplicates", 0) + 1
                    return {"incidentRecordArn": rec["arn"]}
        arn = f"arn:aws:ssm-incidents::{self.account}:incident-record/{plan['name']}/{uuid.uuid4()}"
        t = now()
        rec = {"arn": arn, "title": p.get("title") or plan["title"], "impact": p.get("impact", plan["impact"]),
               "status": "OPEN", "creationTime": t, "lastModifiedTime": t, "lastModifiedBy": CALLER_ARN,
               "dedupeString": dedupe,
               "incidentRecordSource": {"createdBy": CALLER_ARN, "source": trigger["source"] if trigger else "manual",
                                        **({"resourceArn": trigger["triggerArn"]}
                                           if trigger and trigger.get("triggerArn") else {})},
               "automationExecutions": [],
               **({"summary": plan["summary"]} if plan.get("summary") else {}),
               **({"chatChannel": {"chatbotSns": plan["chatbotSns"]}} if plan["chatbotSns"] else {}),
               "_trigger": trigger, "_plan": p["responsePlanArn"]}
        self.incidents[arn] = rec
        self.timeline[arn] = []
        self.related[arn] = [self._related_item(i) for i in p.get("relatedItems", [])]
        if token:
            self.incident_tokens[token] = arn
        auto = plan.get("automation")
        if auto:
            params = {k: list(v) for k, v in auto.get("parameters", {}).items()}
            for k, var in auto.get("dynamic", {}).items():
                if var == "INCIDENT_RECORD_ARN":
                    params[k] = [arn]
                elif var == "INVOLVED_RESOURCES":
                    params[k] = [i["identifier"]["value"].get("arn", "") for i in self.related[arn]
                                 if i["identifier"]["type"] == "INVOLVED_RESOURCE"]
            eid = self._start_automation(auto["document"], params, "ResponsePlan")
            rec["automationExecutions"].append(
                {"ssmExecutionArn": f"arn:aws:ssm:{self.region}:{self.account}:automation-execution/{eid}"})
        return {"incidentRecordArn": arn}

    @staticmethod
    def _related_item(item: dict) -> dict:
        out = dict(item)
        if "generatedId" not in out:
            out["generatedId"] = f"related-item/{item['identifier']['type']}/{secrets.token_hex(16).upper()}"
        return out

    def im_update_incident_record(self, p: dict) -> dict:
        rec = self._incident(p["arn"])
        token = p.get("clientToken")
        if token and ("update", token) in self.update_tokens:
            return {}
        for k in ("title", "summary", "impact", "chatChannel", "notificationTargets"):
            if k in p:
                rec[k] = p[k]
        if "status" in p:
            if p["status"] == "RESOLVED" and rec["status"] != "RESOLVED":
                rec["resolvedTime"] = now()
            elif p["status"] == "OPEN":
                rec.pop("resolvedTime", None)
            rec["status"] = p["status"]
        rec["lastModifiedTime"] = now()
        rec["lastModifiedBy"] = CALLER_ARN
        if token:
            self.update_tokens.add(("update", token))
        return {}

    def im_get_incident_record(self, p: dict) -> dict:
        return {"incidentRecord": _public(self._incident(p["arn"]))}

    def im_list_incident_records(self, p: dict) -> dict:
        records = list(self.incidents.values())
        for f in p.get("filters", []):
            key, cond = f["key"], f["condition"]
            getter = {"status": lambda r: r["status"], "impact": lambda r: r["impact"],
                      "creationTime": lambda r: r["creationTime"], "resolvedTime": lambda r: r.get("resolvedTime"),
                      "createdBy": lambda r: r["incidentRecordSource"]["createdBy"]}.get(key)
            if getter is None:
                raise ApiError("ValidationException", f"filter key {key!r} is not one of status, impact, "
                                                      f"creationTime, resolvedTime, createdBy")
            if "equals" in cond:
                vals = cond["equals"].get("stringValues", []) + cond["equals"].get("integerValues", [])
                records = [r for r in records if getter(r) in vals]
            if "before" in cond:
                records = [r for r in records if getter(r) is not None and getter(r) < _ts(cond["before"])]
            if "after" in cond:
                records = [r for r in records if getter(r) is not None and getter(r) > _ts(cond["after"])]
        records.sort(key=lambda r: r["creationTime"], reverse=True)
        start, size = int(p.get("nextToken") or 0), int(p.get("maxResults", 100))
        keys = ("arn", "creationTime", "impact", "incidentRecordSource", "resolvedTime", "status", "title")
        out = {"incidentRecordSummaries": [{k: r[k] for k in keys if k in r} for r in records[start:start + size]]}
        if start + size < len(records):
            out["nextToken"] = str(start + size)
        return out

    def im_create_timeline_event(self, p: dict) -> dict:
        arn = p["incidentRecordArn"]
        self._incident(arn)
        token = p.get("clientToken")
        if token and token in self.timeline_tokens:
            return {"eventId": self.timeline_tokens[token], "incidentRecordArn": arn}
        if p["eventType"] not in ("Custom Event", "Note"):
            raise ApiError("ValidationException", f"eventType {p['eventType']!r} is not 'Custom Event' or 'Note'.")
        try:
            json.loads(p["eventData"])
        except ValueError:
            raise ApiError("ValidationException", "eventData must be a valid JSON string "
                                                  "(e.g. a JSON-quoted text).") from None
        eid = str(uuid.uuid4())
        t = now()
        self.timeline[arn].append({"eventId": eid, "incidentRecordArn": arn, "eventTime": _ts(p["eventTime"]),
                                   "eventUpdatedTime": t, "eventType": p["eventType"], "eventData": p["eventData"],
                                   "eventReferences": p.get("eventReferences", [])})
        if token:
            self.timeline_tokens[token] = eid
        return {"eventId": eid, "incidentRecordArn": arn}

    def im_list_timeline_events(self, p: dict) -> dict:
        arn = p["incidentRecordArn"]
        events = list(self.timeline.get(arn, []))
        for f in p.get("filters", []):
            key, cond = f["key"], f["condition"]
            if key == "eventType" and "equals" in cond:
                events = [e for e in events if e["eventType"] in cond["equals"].get("stringValues", [])]
            elif key == "eventTime":
                if "before" in cond:
                    events = [e for e in events if e["eventTime"] < _ts(cond["before"])]
                if "after" in cond:
                    events = [e for e in events if e["eventTime"] > _ts(cond["after"])]
            else:
                raise ApiError("ValidationException", f"filter key {key!r} is not eventTime or eventType")
        events.sort(key=lambda e: e["eventTime"], reverse=p.get("sortOrder", "DESCENDING") == "DESCENDING")
        start, size = int(p.get("nextToken") or 0), int(p.get("maxResults", 100))
        keys = ("eventId", "eventReferences", "eventTime", "eventType", "eventUpdatedTime", "incidentRecordArn")
        out = {"eventSummaries": [{k: e[k] for k in keys} for e in events[start:start + size]]}
        if start + size < len(events):
            out["nextToken"] = str(start + size)
        return out

    def im_get_timeline_event(self, p: dict) -> dict:
        for e in self.timeline.get(p.get("incidentRecordArn", ""), []):
            if e["eventId"] == p.get("eventId"):
                return {"event": e}
        raise ApiError("ResourceNotFoundException", f"Timeline event {p.get('eventId')} does not exist.", 404,
                       resourceIdentifier=str(p.get("eventId")), resourceType="TIMELINE_EVENT")

    def im_update_related_items(self, p: dict) -> dict:
        arn = p["incidentRecordArn"]
        self._incident(arn)
        token = p.get("clientToken")
        if token and ("related", token) in self.update_tokens:
            return {}
        upd = p["relatedItemsUpdate"]
        if len([k for k in ("itemToAdd", "itemToRemove") if upd.get(k)]) != 1:
            raise ApiError("ValidationException", "relatedItemsUpdate takes exactly one of itemToAdd, itemToRemove.")
        items = self.related[arn]
        if "itemToAdd" in upd:
            ident = upd["itemToAdd"]["identifier"]
            if not any(i["identifier"] == ident for i in items):
                if len(items) >= 100:
                    raise ApiError("ValidationException", "An incident has at most 100 related items.")
                items.append(self._related_item(upd["itemToAdd"]))
        else:
            self.related[arn] = [i for i in items if i["identifier"] != upd["itemToRemove"]]
        if token:
            self.update_tokens.add(("related", token))
        return {}

    def im_list_related_items(self, p: dict) -> dict:
        arn = p["incidentRecordArn"]
        self._incident(arn)
        return {"relatedItems": self.related[arn]}

    INCIDENTS = {
        ("POST", "/startIncident"): ("StartIncident", im_start_incident, 200),
        ("POST", "/updateIncidentRecord"): ("UpdateIncidentRecord", im_update_incident_record, 204),
        ("GET", "/getIncidentRecord"): ("GetIncidentRecord", im_get_incident_record, 200),
        ("POST", "/listIncidentRecords"): ("ListIncidentRecords", im_list_incident_records, 200),
        ("POST", "/createTimelineEvent"): ("CreateTimelineEvent", im_create_timeline_event, 201),
        ("POST", "/listTimelineEvents"): ("ListTimelineEvents", im_list_timeline_events, 200),
        ("GET", "/getTimelineEvent"): ("GetTimelineEvent", im_get_timeline_event, 200),
        ("POST", "/updateRelatedItems"): ("UpdateRelatedItems", im_update_related_items, 204),
        ("POST", "/listRelatedItems"): ("ListRelatedItems", im_list_related_items, 200),
    }

    # ------------------------------------------------------------ EC2

    @staticmethod
    def _bool(v: Any) -> bool:
        return str(v).lower() == "true"

    def _dry_run(self, p: dict) -> None:
        if self._bool(p.get("DryRun", "false")):
            raise ApiError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)

    @staticmethod
    def _filters(p: dict, getters: dict[str, Callable[[dict], Any]], items: list[dict]) -> list[dict]:
        for f in p.get("Filter", []):
            name, values = f.get("Name"), f.get("Value", [])
            getter = getters.get(name)
            if getter is None:
                raise ApiError("InvalidParameterValue", f"The filter '{name}' is invalid")
            items = [i for i in items if str(getter(i)) in values]
        return items

    def _by_ids(self, table: dict, ids: list[str], code: str, noun: str) -> list[dict]:
        if not ids:
            return list(table.values())
        missing = [i for i in ids if i not in table]
        if missing:
            raise ApiError(code, f"The {noun} ID '{missing[0]}' does not exist")
        return [table[i] for i in ids]

    def ec2_describe_vpn_connections(self, p: dict) -> dict:
        self._dry_run(p)
        items = self._by_ids(self.vpns, p.get("VpnConnectionId", []), "InvalidVpnConnectionID.NotFound",
                             "vpnConnection")
        items = self._filters(p, {"vpn-connection-id": lambda v: v["VpnConnectionId"], "state": lambda v: v["State"],
                                  "customer-gateway-id": lambda v: v["CustomerGatewayId"],
                                  "vpn-gateway-id": lambda v: v.get("VpnGatewayId"),
                                  "transit-gateway-id": lambda v: v.get("TransitGatewayId"),
                                  "type": lambda v: v["Type"]}, items)
        return {"VpnConnections": [_public(v) for v in items]}

    def ec2_describe_customer_gateways(self, p: dict) -> dict:
        self._dry_run(p)
        items = self._by_ids(self.customer_gateways, p.get("CustomerGatewayId", []),
                             "InvalidCustomerGatewayID.NotFound", "customerGateway")
        items = self._filters(p, {"customer-gateway-id": lambda g: g["CustomerGatewayId"],
                                  "state": lambda g: g["State"], "ip-address": lambda g: g["IpAddress"]}, items)
        return {"CustomerGateways": items}

    def ec2_describe_vpn_gateways(self, p: dict) -> dict:
        self._dry_run(p)
        items = self._by_ids(self.vpn_gateways, p.get("VpnGatewayId", []), "InvalidVpnGatewayID.NotFound",
                             "vpnGateway")
        items = self._filters(p, {"vpn-gateway-id": lambda g: g["VpnGatewayId"], "state": lambda g: g["State"]},
                              items)
        return {"VpnGateways": items}

    def ec2_describe_transit_gateway_attachments(self, p: dict) -> dict:
        self._dry_run(p)
        items = self._by_ids(self.tgw_attachments, p.get("TransitGatewayAttachmentIds", []),
                             "InvalidTransitGatewayAttachmentID.NotFound", "transitGatewayAttachment")
        items = self._filters(p, {"resource-id": lambda a: a["ResourceId"], "resource-type": lambda a: a["ResourceType"],
                                  "transit-gateway-id": lambda a: a["TransitGatewayId"],
                                  "transit-gateway-attachment-id": lambda a: a["TransitGatewayAttachmentId"],
                                  "state": lambda a: a["State"]}, items)
        return {"TransitGatewayAttachments": items}

    def _tunnel_of(self, p: dict) -> tuple[dict, str]:
        for req in ("VpnConnectionId", "VpnTunnelOutsideIpAddress"):
            if not p.get(req):
                raise ApiError("MissingParameter", f"The request must contain the parameter {req}")
        vpn = self.vpns.get(p["VpnConnectionId"])
        if vpn is None:
            raise ApiError("InvalidVpnConnectionID.NotFound",
                           f"The vpnConnection ID '{p['VpnConnectionId']}' does not exist")
        ip = p["VpnTunnelOutsideIpAddress"]
        if not any(t["OutsideIpAddress"] == ip for t in vpn["VgwTelemetry"]):
            raise ApiError("InvalidParameterValue",
                           f"The tunnel outside IP address {ip} does not belong to {vpn['VpnConnectionId']}")
        return vpn, ip

    def ec2_replace_vpn_tunnel(self, p: dict) -> dict:
        vpn, ip = self._tunnel_of(p)
        self._dry_run(p)
        self.replacements.append({"at": now(), "VpnConnectionId": vpn["VpnConnectionId"],
                                  "VpnTunnelOutsideIpAddress": ip,
                                  "ApplyPendingMaintenance": self._bool(p.get("ApplyPendingMaintenance", "false"))})
        return {"Return": True}

    def ec2_get_vpn_tunnel_replacement_status(self, p: dict) -> dict:
        vpn, ip = self._tunnel_of(p)
        self._dry_run(p)
        return {"VpnConnectionId": vpn["VpnConnectionId"], "CustomerGatewayId": vpn["CustomerGatewayId"],
                **({"VpnGatewayId": vpn["VpnGatewayId"]} if "VpnGatewayId" in vpn else {}),
                **({"TransitGatewayId": vpn["TransitGatewayId"]} if "TransitGatewayId" in vpn else {}),
                "VpnTunnelOutsideIpAddress": ip,
                "MaintenanceDetails": self.maintenance.get((vpn["VpnConnectionId"], ip), {})}

    EC2 = {"DescribeVpnConnections": ec2_describe_vpn_connections,
           "DescribeCustomerGateways": ec2_describe_customer_gateways,
           "DescribeVpnGateways": ec2_describe_vpn_gateways,
           "DescribeTransitGatewayAttachments": ec2_describe_transit_gateway_attachments,
           "ReplaceVpnTunnel": ec2_replace_vpn_tunnel,
           "GetVpnTunnelReplacementStatus": ec2_get_vpn_tunnel_replacement_status}

    # ------------------------------------------------------------ CloudWatch Logs Insights

    def _group_name(self, ident: str) -> str:
        if ident.startswith("arn:"):
            m = re.search(r":log-group:([^:]+)", ident)
            if not m:
                raise ApiError("InvalidParameterException", f"{ident} is not a log group ARN")
            return m.group(1)
        return ident

    def logs_start_query(self, p: dict) -> dict:
        given = [k for k in ("logGroupName", "logGroupNames", "logGroupIdentifiers") if p.get(k)]
        if len(given) != 1:
            raise ApiError("InvalidParameterException",
                           "Exactly one of logGroupName, logGroupNames, logGroupIdentifiers must be given.")
        raw = p[given[0]]
        names = [self._group_name(n) for n in (raw if isinstance(raw, list) else [raw])]
        for n in names:
            if n not in self.log_groups:
                raise ApiError("ResourceNotFoundException", f"Log group {n} does not exist.")
        if p["endTime"] < p["startTime"]:
            raise ApiError("InvalidParameterException", "endTime is before startTime.")
        lo, hi = p["startTime"] * 1000, p["endTime"] * 1000 + 999
        records = [e for n in names for e in self.log_groups[n]["events"] if lo <= e["@timestamp"] <= hi]
        try:
            rows, matched = insights.run(p["queryString"], records, p.get("limit"))
        except insights.MalformedQuery as e:
            raise ApiError("MalformedQueryException", str(e)) from None
        qid = str(uuid.uuid4())
        self.queries[qid] = {"queryId": qid, "logGroups": names, "queryString": p["queryString"],
                             "startTime": p["startTime"], "endTime": p["endTime"], "status": "Running",
                             "polls_left": self.query_running_polls, "results": rows,
                             "statistics": {"recordsMatched": float(matched), "recordsScanned": float(len(records)),
                                            "bytesScanned": float(sum(len(r["@message"]) for r in records))}}
        if self.query_running_polls == 0:
            self.queries[qid]["status"] = "Complete"
        return {"queryId": qid}

    def logs_get_query_results(self, p: dict) -> dict:
        q = self.queries.get(p["queryId"])
        if q is None:
            raise ApiError("ResourceNotFoundException", f"Query {p['queryId']} does not exist.")
        if q["status"] == "Running":
            if q["polls_left"] > 0:
                q["polls_left"] -= 1
                return {"status": "Running", "results": [],
                        "statistics": {"recordsMatched": 0.0, "recordsScanned": 0.0, "bytesScanned": 0.0}}
            q["status"] = "Complete"
        if q["status"] != "Complete":
            return {"status": q["status"], "results": [], "statistics": q["statistics"]}
        return {"status": "Complete", "results": q["results"], "statistics": q["statistics"]}

    def logs_stop_query(self, p: dict) -> dict:
        q = self.queries.get(p["queryId"])
        if q is None:
            raise ApiError("ResourceNotFoundException", f"Query {p['queryId']} does not exist.")
        if q["status"] != "Running":
            return {"success": False}
        q["status"] = "Cancelled"
        return {"success": True}

    LOGS = {"StartQuery": logs_start_query, "GetQueryResults": logs_get_query_results, "StopQuery": logs_stop_query}

    # ------------------------------------------------------------ CloudWatch metrics (TunnelState)

    def _tunnel_samples(self, dims: dict[str, str], start: float, end: float, period: int) -> dict[float, list[int]]:
        """Per period bucket, the TunnelState values (1 up, 0 down) the tunnels had in it."""
        if "VpnId" in dims:
            vpn = self.vpns.get(dims["VpnId"])
            keys = [(vpn["VpnConnectionId"], t["OutsideIpAddress"]) for t in vpn["VgwTelemetry"]] if vpn else []
        elif "TunnelIpAddress" in dims:
            keys = [k for k in self.tunnel_history if k[1] == dims["TunnelIpAddress"]]
        else:
            keys = []
        buckets: dict[float, list[int]] = {}
        first = int(start // period) * period
        last = min(end, now())
        b = float(first)
        steps = 0
        while b < last and steps < 100_000:  # bounded: at most 100k buckets per query
            for key in keys:
                history = self.tunnel_history[key]
                if history[0][0] > b + period:
                    continue
                value_at_start = [v for t, v in history if t <= b]
                vals = ([value_at_start[-1]] if value_at_start else []) + [v for t, v in history if b < t < b + period]
                if vals:
                    buckets.setdefault(b, []).extend(vals)
            b += period
            steps += 1
        return buckets

    @staticmethod
    def _stat(stat: str, vals: list[int]) -> float:
        return {"Minimum": min(vals), "Maximum": max(vals), "Sum": sum(vals), "SampleCount": len(vals),
                "Average": sum(vals) / len(vals)}.get(stat, float("nan"))

    def cw_get_metric_data(self, p: dict) -> dict:
        start, end = _ts(p["StartTime"]), _ts(p["EndTime"])
        descending = p.get("ScanBy", "TimestampDescending") == "TimestampDescending"
        results = []
        for q in p["MetricDataQueries"]:
            ms = q.get("MetricStat")
            if not ms:
                results.append({"Id": q["Id"], "Label": q.get("Label", q["Id"]), "Timestamps": [], "Values": [],
                                "StatusCode": "Complete",
                                "Messages": [{"Code": "Unsupported",
                                              "Value": "metric math is not evaluated by the local emulator"}]})
                continue
            metric = ms["Metric"]
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            points: list[tuple[float, float]] = []
            if metric.get("Namespace") == "AWS/VPN" and metric.get("MetricName") == "TunnelState":
                for b, vals in self._tunnel_samples(dims, start, end, int(ms["Period"])).items():
                    if b >= start - ms["Period"]:
                        points.append((b, float(self._stat(ms["Stat"], vals))))
            points.sort(reverse=descending)
            results.append({"Id": q["Id"], "Label": q.get("Label", metric.get("MetricName", q["Id"])),
                            "Timestamps": [cbor.Timestamp(t) for t, _ in points],
                            "Values": [v for _, v in points], "StatusCode": "Complete"})
        return {"MetricDataResults": results, "Messages": []}

    def cw_get_metric_statistics(self, p: dict) -> dict:
        dims = {d["Name"]: d["Value"] for d in p.get("Dimensions", [])}
        stats = p.get("Statistics", [])
        points = []
        if p.get("Namespace") == "AWS/VPN" and p.get("MetricName") == "TunnelState":
            for b, vals in sorted(self._tunnel_samples(dims, _ts(p["StartTime"]), _ts(p["EndTime"]),
                                                       int(p["Period"])).items()):
                points.append({"Timestamp": cbor.Timestamp(b), "Unit": "None",
                               **{s: float(self._stat(s, vals)) for s in stats}})
        return {"Label": p.get("MetricName", ""), "Datapoints": points}

    def _metric_alarm(self, a: dict, region: str) -> dict:
        out = {
            "AlarmName": a["name"],
            "AlarmArn": f"arn:aws:cloudwatch:{region}:{self.account}:alarm:{a['name']}",
            "AlarmConfigurationUpdatedTimestamp": cbor.Timestamp(a["created"]),
            "ActionsEnabled": True, "OKActions": [], "AlarmActions": [], "InsufficientDataActions": [],
            "StateValue": a["state"], "StateReason": a["reason"],
            # The alarm events' state.timestamp of the same transition.
            "StateUpdatedTimestamp": cbor.Timestamp(a["at"]),
            "StateTransitionedTimestamp": cbor.Timestamp(a["at"]),
            "EvaluationPeriods": 1, "Threshold": a["threshold"],
            "ComparisonOperator": a["comparison"], "TreatMissingData": "missing",
        }
        if a.get("expression"):
            # A Metrics Insights alarm: one query, no metric of its own.
            out["Metrics"] = [{"Id": "m1", "Expression": a["expression"], "Period": a["period"], "ReturnData": True}]
        else:
            out.update({"MetricName": a["metric"], "Namespace": a["namespace"], "Statistic": a["statistic"],
                        "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(a["dimensions"].items())],
                        "Period": a["period"]})
        if a.get("description"):
            out["AlarmDescription"] = a["description"]
        return out

    def cw_describe_alarms(self, p: dict) -> dict:
        """Metric alarms by name (at most 100, the model's limit) or name prefix, in name order,
        `MaxRecords` per page (default 50) with an opaque `NextToken` (emulator choice: the next
        name). Asking for composite or log alarms only returns none: the scenario sets metric alarms."""
        if p.get("AlarmNames") and p.get("AlarmNamePrefix"):
            raise ApiError("InvalidParameterCombination",
                           "AlarmNames and AlarmNamePrefix cannot be specified together.")
        types = p.get("AlarmTypes") or ["MetricAlarm"]
        names = sorted(self.alarms)
        if p.get("AlarmNames"):
            names = [n for n in names if n in set(p["AlarmNames"])]
        if p.get("AlarmNamePrefix"):
            names = [n for n in names if n.startswith(p["AlarmNamePrefix"])]
        if p.get("StateValue"):
            names = [n for n in names if self.alarms[n]["state"] == p["StateValue"]]
        if "MetricAlarm" not in types:
            names = []
        token = p.get("NextToken")
        if token is not None:
            if token not in names:
                raise ApiError("InvalidNextToken", "The service returned an invalid NextToken.")
            names = names[names.index(token):]
        page = int(p.get("MaxRecords", 50))
        out = {"MetricAlarms": [self._metric_alarm(self.alarms[n], self.region) for n in names[:page]],
               "CompositeAlarms": []}
        if len(names) > page:
            out["NextToken"] = names[page]
        return out

    # Contributors per DescribeAlarmContributors page (the API documents no page size; small,
    # so the story's readers follow NextToken).
    CONTRIBUTORS_PER_PAGE = 2

    def cw_describe_alarm_contributors(self, p: dict) -> dict:
        """The time series in ALARM of one multi-time-series alarm (the API lists no other), in
        id order, [`CONTRIBUTORS_PER_PAGE`] per page with an opaque `NextToken` (emulator choice:
        the next id). An alarm that does not exist is ResourceNotFoundException (404, as the API
        reference says); one that is not multi-time-series is a ValidationException (emulator
        choice: AWS documents no error for it)."""
        name = p["AlarmName"]
        a = self.alarms.get(name)
        if a is None:
            raise ApiError("ResourceNotFoundException", f"Alarm {name} does not exist.", 404)
        if not a.get("expression"):
            raise ApiError("ValidationException", f"Alarm {name} is not a multi-time-series alarm.")
        listed = sorted(a["contributors"], key=lambda c: c["id"])
        token = p.get("NextToken")
        if token is not None:
            ids = [c["id"] for c in listed]
            if token not in ids:
                raise ApiError("InvalidNextToken", "The service returned an invalid NextToken.")
            listed = listed[ids.index(token):]
        page = self.CONTRIBUTORS_PER_PAGE
        out = {"AlarmContributors": [
            {"ContributorId": c["id"], "ContributorAttributes": c["attributes"], "StateReason": c["reason"],
             "StateTransitionedTimestamp": cbor.Timestamp(c["at"])} for c in listed[:page]]}
        if len(listed) > page:
            out["NextToken"] = listed[page]["id"]
        return out

    METRICS = {"GetMetricData": cw_get_metric_data, "GetMetricStatistics": cw_get_metric_statistics,
               "DescribeAlarms": cw_describe_alarms, "DescribeAlarmContributors": cw_describe_alarm_contributors}


def endpoint_env(url: str) -> dict[str, str]:
    """The SDK's standard endpoint variables that send a function's calls here."""
    return {"AWS_ENDPOINT_URL_SSM": url, "AWS_ENDPOINT_URL_SSM_INCIDENTS": url, "AWS_ENDPOINT_URL_EC2": url,
            "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": url, "AWS_ENDPOINT_URL_CLOUDWATCH": url}


def main() -> int:
    emu = Emulator(verbose="-v" in sys.argv).start()
    print(f"local AWS emulator on {emu.url}", flush=True)
    for k, v in endpoint_env(emu.url).items():
        print(f"  export {k}={v}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
