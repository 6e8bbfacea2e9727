"""template.yaml with `VpnConnectionIds` empty: a central stack of an organization that
watches no VPN of its own must deploy, and create nothing for a VPN that is not there.

cfn-lint and `sam validate` check the template for every parameter value at once (they do
not take parameter values: cfn-lint's `--parameters` does not change what it checks), so
this test does what CloudFormation does with the values given:

1. expands `Fn::ForEach` with SAM CLI's own AWS::LanguageExtensions processor (the one
   `sam build --language-extensions` runs) for the list empty (`""`, which CloudFormation
   passes as `[""]`), as `[]`, one VPN and two;
2. evaluates the template's conditions for those values (Fn::Equals, Not, And, Or, Join,
   Select, Split, Ref, Condition: what the conditions use), and then every resource's
   `Condition`: with the list empty, no per-VPN alarm, permission or policy is created,
   the response plan names no VPN (title, dedupe string, static runbook parameter) and no
   `Fn::Select` is ever out of range;
3. asserts the parameter's pattern accepts the empty value and still refuses bad ids.
"""

from __future__ import annotations

import json
import re

import pytest

import test_template_wiring as tw

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is required: pip install 'cfn-lint>=1.58'")
lx = pytest.importorskip(
    "samcli.lib.cfn_language_extensions.api", reason="SAM CLI is required: pip install 'aws-sam-cli>=1.170'"
)

ONE = "vpn-0123456789abcdef0"
TWO = "vpn-0123456789abcdef1"
PER_VPN = ("VpnAlarm", "VpnBothTunnelsAlarm", "VpnAlarmPermission", "VpnBothTunnelsAlarmPermission", "ReplaceTunnelPolicy")


@pytest.fixture(scope="module")
def template() -> dict:
    tpl, matches = cfnlint_decode.decode(str(tw.TEMPLATE))
    assert not matches, matches
    return json.loads(json.dumps(tpl, default=str))


def params(template: dict, **values) -> dict:
    """Every parameter at its default, `values` on top (a list for CommaDelimitedList)."""
    out = {}
    for name, p in template["Parameters"].items():
        v = values.get(name, p.get("Default"))
        if p["Type"] == "CommaDelimitedList" and isinstance(v, str):
            v = v.split(",")  # "" -> [""], as CloudFormation passes an empty list
        out[name] = v
    out.update({"AWS::AccountId": "123456789012", "AWS::Region": "eu-west-1", "AWS::Partition": "aws",
                "AWS::StackName": "incident-pipeline", "AWS::NoValue": None})
    return out


class Evaluator:
    """The intrinsic functions conditions use, as CloudFormation evaluates them."""

    def __init__(self, template: dict, values: dict):
        self.conditions = template.get("Conditions", {})
        self.values = values
        self.done: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self.done:
            self.done[name] = bool(self.eval(self.conditions[name]))
        return self.done[name]

    def eval(self, node):
        if isinstance(node, list):
            return [self.eval(n) for n in node]
        if not isinstance(node, dict) or len(node) != 1:
            return node
        (fn, arg), = node.items()
        if fn == "Ref":
            return self.values[arg]
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            a, b = self.eval(arg)
            return a == b
        if fn == "Fn::Not":
            return not self.eval(arg[0])
        if fn == "Fn::And":
            return all(self.eval(a) for a in arg)
        if fn == "Fn::Or":
            return any(self.eval(a) for a in arg)
        if fn == "Fn::Join":
            sep, items = arg[0], self.eval(arg[1])
            return sep.join(items)
        if fn == "Fn::Split":
            sep, text = arg[0], self.eval(arg[1])
            return text.split(sep)
        if fn == "Fn::Select":
            index, items = int(self.eval(arg[0])), self.eval(arg[1])
            assert 0 <= index < len(items), f"Fn::Select index {index} out of range of {items!r}"
            return items[index]
        if fn == "Fn::If":
            return self.eval(arg[1] if self.condition(arg[0]) else arg[2])
        if fn == "Fn::Sub" and isinstance(arg, list):
            text, extra = arg
            extra = {k: self.eval(v) for k, v in extra.items()}
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(extra.get(m.group(1), m.group(0))), text)
        return node


def expanded(template: dict, vpns) -> tuple[dict, Evaluator]:
    """The template after Fn::ForEach for `vpns`, and the evaluator of its conditions."""
    values = params(template, VpnConnectionIds=vpns, IncidentBackend="IncidentManager", RemediationEnabled="true")
    given = {k: v for k, v in values.items() if k in template["Parameters"]}
    out = lx.process_template(template, parameter_values=given)
    return out, Evaluator(out, values)


def created(out: dict, ev: Evaluator) -> set[str]:
    return {rid for rid, r in out["Resources"].items() if "Condition" not in r or ev.condition(r["Condition"])}


@pytest.mark.parametrize("vpns", ["", []], ids=["empty-string", "empty-list"])
def test_no_own_vpn_creates_no_per_vpn_resource(template, vpns):
    out, ev = expanded(template, vpns)
    assert ev.condition("HasOwnVpns") is False
    assert ev.condition("IsSingleVpn") is False
    assert ev.condition("SingleVpnOnly") is False
    assert ev.condition("IncidentManagerSingleVpn") is False
    assert ev.condition("HasOwnVpnsAndRemediation") is False
    per_vpn = {rid for rid in out["Resources"] if rid.startswith(PER_VPN)}
    assert not (per_vpn & created(out, ev)), "a resource for a VPN that is not there"
    # Everything else still deploys: the functions, the runbook, the response plan.
    assert {"AlarmToIncidentFunction", "VpnTroubleshootFunction", "DiagnosisRunbook", "IncidentResponsePlan"} <= created(
        out, ev
    )


@pytest.mark.parametrize("vpns", ["", []], ids=["empty-string", "empty-list"])
def test_the_response_plan_names_no_vpn_when_there_is_none(template, vpns):
    out, ev = expanded(template, vpns)
    plan = out["Resources"]["IncidentResponsePlan"]["Properties"]
    assert ev.eval(plan["IncidentTemplate"]["Title"]) == "VPN connection is DOWN"
    assert ev.eval(plan["IncidentTemplate"].get("DedupeString")) is None, "no plan-wide dedupe string"
    params_ = [ev.eval(p) for p in plan["Actions"][0]["SsmAutomation"]["Parameters"]]
    assert "VpnConnectionId" not in [p["Key"] for p in params_ if p], "the runbook finds the VPN in the incident"
    # The runbook's own default lets it run without one.
    runbook = out["Resources"]["DiagnosisRunbook"]["Properties"]["Content"]["parameters"]["VpnConnectionId"]
    assert runbook["default"] == ""
    assert re.fullmatch(runbook["allowedPattern"], "")


@pytest.mark.parametrize(
    "vpns,alarms", [(ONE, 2), (f"{ONE},{TWO}", 4)], ids=["one", "two"]
)
def test_watched_vpns_still_get_their_alarms(template, vpns, alarms):
    out, ev = expanded(template, vpns)
    made = created(out, ev)
    assert ev.condition("HasOwnVpns") is True
    assert len([rid for rid in made if out["Resources"][rid]["Type"] == "AWS::CloudWatch::Alarm" and rid.startswith(("VpnAlarm", "VpnBoth"))]) == alarms
    assert ev.condition("IsSingleVpn") is (vpns == ONE)
    plan = out["Resources"]["IncidentResponsePlan"]["Properties"]
    if vpns == ONE:
        assert ev.eval(plan["IncidentTemplate"]["Title"]) == f"VPN connection {ONE} is DOWN"
        keys = [p["Key"] for p in (ev.eval(x) for x in plan["Actions"][0]["SsmAutomation"]["Parameters"]) if p]
        assert "VpnConnectionId" in keys
    # Remediation on: one replace policy per watched VPN.
    assert len([rid for rid in made if rid.startswith("ReplaceTunnelPolicy")]) == alarms // 2


def test_every_per_vpn_resource_is_conditional_on_having_vpns(template):
    loop = template["Resources"]["Fn::ForEach::WatchedVpns"]
    for rid, r in loop[2].items():
        cond = r.get("Condition")
        assert cond in ("HasOwnVpns", "HasOwnVpnsAndRemediation"), f"{rid}: {cond}"
    assert template["Conditions"]["HasOwnVpnsAndRemediation"] == {
        "Fn::And": [{"Condition": "HasOwnVpns"}, {"Condition": "RemediationOn"}]
    }


def test_the_parameter_accepts_empty_and_refuses_bad_ids(template):
    p = template["Parameters"]["VpnConnectionIds"]
    assert p["Default"] == ""
    pattern = p["AllowedPattern"]
    for good in ["", ONE, "vpn-01234567"]:
        assert re.fullmatch(pattern, good), good
    for bad in ["vpn-XYZ", "vgw-0123456789abcdef0", " ", "vpn-0123456789abcdef0 "]:
        assert not re.fullmatch(pattern, bad), bad
