"""template.yaml against the Rust workspace: binaries, environment, IAM, and the article's fixes.

Reads template.yaml (cfn-lint's loader, which understands !Sub, !If, Fn::ForEach) and the
Rust sources at test time, so it checks whatever main holds. See rust_source.py for what the
source analysis can and cannot see; anything it cannot attribute fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rust_source as rs

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is required: pip install 'cfn-lint>=1.58'")

REPO = rs.repo_root()
TEMPLATE = REPO / "template.yaml"

# Set by the Lambda runtime itself; code may read them without the template setting them.
LAMBDA_PROVIDED_ENV = {
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_XRAY_DAEMON_ADDRESS",
    "AWS_XRAY_CONTEXT_MISSING",
    "_X_AMZN_TRACE_ID",
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "TZ",
}

# Read by the code but deliberately not set by the template, and why.
NOT_SET_ON_PURPOSE = {
    "RUST_LOG": "shared::logging falls back to it only when AWS_LAMBDA_LOG_LEVEL (LoggingConfig) is absent, i.e. outside Lambda",
}

# Actions a function role holds that its code never calls, and why.
# Platform: used by Lambda itself with the function's role.
PLATFORM_ACTIONS = {
    "logs:CreateLogStream": "Lambda writes the function's logs (own log group only)",
    "logs:PutLogEvents": "Lambda writes the function's logs (own log group only)",
    "sqs:SendMessage": "Lambda delivers failed asynchronous events to the on-failure destination",
    "sqs:ReceiveMessage": "the SQS event source mapping polls the function's queue with its role",
    "sqs:DeleteMessage": "the SQS event source mapping deletes what the function handled",
    "sqs:GetQueueAttributes": "the SQS event source mapping reads the queue's attributes",
}
# Implied: IAM checks them on behalf of an action the code calls.
IMPLIED_ACTIONS = {
    "iam:PassRole": {"ssm:StartAutomationExecution", "scheduler:CreateSchedule"},  # runbook / scheduler role
    "kms:Decrypt": {"secretsmanager:GetSecretValue"},  # secret under a customer managed key
    "ssm:AddTagsToResource": {"ssm:CreateOpsItem"},  # CreateOpsItem with Tags needs both
}
# Actions granted on "*" although IAM lists a resource type for them, and why.
UNSCOPED_OK = {
    "cloudwatch:GetMetricData": "its only IAM resource type is a CloudWatch dataset; metric queries name none",
    "logs:GetQueryResults": "the request carries only a query id, no log group to scope to",
}

ARTICLE_VPN_PATTERN = "^vpn-[0-9a-f]{8,17}$"


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def template() -> dict:
    tpl, matches = cfnlint_decode.decode(str(TEMPLATE))
    assert not matches, f"template.yaml does not parse: {matches}"
    return tpl


@pytest.fixture(scope="module")
def resources(template) -> dict:
    """Every resource, including those inside Fn::ForEach (logical ids left unexpanded)."""
    out = {}

    def add(section):
        for key, value in section.items():
            if key.startswith("Fn::ForEach::"):
                add(value[2])
            else:
                out[key] = value

    add(template["Resources"])
    return out


@pytest.fixture(scope="module")
def workspace():
    meta, crates, sdk_ops = rs.load_workspace(REPO)
    return meta, crates, sdk_ops


# IAM actions newer than cfn-lint's list (its Policies.json, 1.58 being the newest
# release): service -> (API operation, resource types). Each must be an operation of the
# service's botocore model, the action being named like the operation (as for
# DescribeAlarms); a list that gains it makes the entry redundant, which is checked too.
NEWER_THAN_CFN_LINT = {"cloudwatch": [("DescribeAlarmContributors", ["alarm"])]}


@pytest.fixture(scope="module")
def iam_data() -> dict:
    import botocore.session
    import cfnlint

    path = Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"
    data = json.loads(path.read_text())
    session = botocore.session.get_session()
    for service, ops in NEWER_THAN_CFN_LINT.items():
        known = set(session.get_service_model(service).operation_names)
        actions = data[service]["Actions"]
        for op, resources in ops:
            assert op in known, f"{service}:{op} is no operation of botocore's {service} model"
            assert op.lower() not in actions, f"cfn-lint knows {service}:{op} now: drop it from NEWER_THAN_CFN_LINT"
            actions[op.lower()] = {"Resources": resources}
    return data


def functions(resources) -> dict[str, dict]:
    return {k: v for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Function"}


def function_ids() -> list[str]:
    tpl, _ = cfnlint_decode.decode(str(TEMPLATE))
    return sorted(k for k, v in tpl["Resources"].items() if isinstance(v, dict) and v.get("Type") == "AWS::Serverless::Function")


# ------------------------------------------------------------------------------- helpers


def branches(value) -> list:
    """The values an expression may take across Fn::If branches (AWS::NoValue dropped)."""
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Fn::If":
            return branches(arg[1]) + branches(arg[2])
        if key == "Ref" and arg == "AWS::NoValue":
            return []
    return [value]


def as_list(value) -> list:
    out = []
    for v in branches(value):
        if isinstance(v, list):
            for item in v:
                out.extend(branches(item))
        else:
            out.append(v)
    return out


def ref_id(value) -> str | None:
    """Logical id named by Ref or GetAtt, if any."""
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref" and isinstance(arg, str):
            return arg
        if key == "Fn::GetAtt":
            return arg[0] if isinstance(arg, list) else str(arg).split(".")[0]
    return None


def statements_of(doc) -> list[dict]:
    out = []
    for d in branches(doc):
        for s in as_list(d.get("Statement", [])):
            out.append(s)
    return out


def role_statements(role_id: str, resources: dict) -> list[dict]:
    """Every Allow statement attached to a role: inline, template managed policies, RolePolicy."""
    role = resources[role_id]
    props = role["Properties"]
    stmts = []
    for pol in as_list(props.get("Policies", [])):
        stmts += statements_of(pol["PolicyDocument"])
    for arn in as_list(props.get("ManagedPolicyArns", [])):
        target = ref_id(arn)
        assert target in resources, f"{role_id}: managed policy {arn!r} is not defined in the template, so its actions cannot be checked"
        stmts += statements_of(resources[target]["Properties"]["PolicyDocument"])
    for rid, res in resources.items():
        if res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"):
            p = res["Properties"]
            roles = as_list(p.get("Roles", [])) + as_list(p.get("RoleName", []))
            if any(ref_id(r) == role_id for r in roles):
                stmts += statements_of(p["PolicyDocument"])
    return [s for s in stmts if s.get("Effect") == "Allow"]


def actions_of(stmt) -> list[str]:
    return [a for a in as_list(stmt["Action"])]


def all_policy_statements(resources) -> list[tuple[str, dict]]:
    out = []
    for rid, res in resources.items():
        p = res.get("Properties", {})
        if res.get("Type") == "AWS::IAM::Role":
            for pol in as_list(p.get("Policies", [])):
                out += [(rid, s) for s in statements_of(pol["PolicyDocument"])]
        elif res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"):
            out += [(rid, s) for s in statements_of(p["PolicyDocument"])]
    return out


def function_analysis(fid, resources, workspace):
    meta, crates, sdk_ops = workspace
    binary = resources[fid]["Metadata"]["BuildProperties"]["Binary"]
    package = rs.bin_names(meta)[binary]
    crate = crates[package]
    if rs.is_placeholder(crate):
        pytest.skip(f"{package} is still the foundation's placeholder `fn main() {{}}`: nothing to check yet")
    return rs.analyse(package, crates, sdk_ops, REPO)


# ------------------------------------------------------------------------------- template shape


def test_template_uses_language_extensions_and_arm64_rust_runtime(template):
    assert template["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    glob = template["Globals"]["Function"]
    assert glob["Runtime"] == "provided.al2023"
    assert glob["Architectures"] == ["arm64"]


def test_template_defines_the_four_functions(resources):
    binaries = sorted(f["Metadata"]["BuildProperties"]["Binary"] for f in functions(resources).values())
    assert binaries == ["alarm-to-incident", "notify-fanout", "slack-actions", "vpn-troubleshoot"]


@pytest.mark.parametrize("fid", function_ids())
def test_function_builds_a_workspace_binary_with_cargo_lambda(fid, resources, workspace):
    meta, _, _ = workspace
    fn = resources[fid]
    props = fn["Properties"]
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    binary = fn["Metadata"]["BuildProperties"]["Binary"]
    bins = rs.bin_names(meta)
    assert binary in bins, f"{fid}: Binary {binary!r} is not a workspace binary ({sorted(bins)})"
    assert bins[binary] == binary, "binary name = package name = directory name"
    assert (REPO / "functions" / binary / "src" / "main.rs").exists()
    assert (TEMPLATE.parent / props["CodeUri"]).resolve() == Path(meta["workspace_root"]).resolve(), (
        f"{fid}: CodeUri must be the workspace root so cargo lambda builds the workspace"
    )
    assert props["Handler"] == "bootstrap"
    assert "Runtime" not in props and "Architectures" not in props, "runtime and architecture come from Globals"


@pytest.mark.parametrize("fid", function_ids())
def test_function_logs_json_to_its_own_log_group_with_retention(fid, resources):
    props = resources[fid]["Properties"]
    logging = props["LoggingConfig"]
    assert logging["LogFormat"] == "JSON"
    assert logging["ApplicationLogLevel"] in ("INFO", "WARN", "ERROR"), "never TRACE/DEBUG when deployed"
    group = resources[ref_id(logging["LogGroup"])]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert resources[fid].get("Condition") == group.get("Condition")


@pytest.mark.parametrize("fid", function_ids())
def test_function_failures_reach_an_alarmed_queue(fid, resources):
    cfg = resources[fid]["Properties"]["EventInvokeConfig"]
    dest = cfg["DestinationConfig"]["OnFailure"]
    assert dest["Type"] == "SQS"
    queue = ref_id(dest["Destination"])
    assert resources[queue]["Type"] == "AWS::SQS::Queue"
    alarms = [
        r
        for r in resources.values()
        if r.get("Type") == "AWS::CloudWatch::Alarm"
        and any(ref_id(d["Value"]) == queue for d in r["Properties"].get("Dimensions", []))
    ]
    assert alarms, f"no alarm watches the failed-events queue {queue}"
    assert alarms[0]["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"


@pytest.mark.parametrize("fid", function_ids())
def test_function_has_its_own_role_and_no_aws_managed_policy(fid, resources):
    props = resources[fid]["Properties"]
    role_id = ref_id(props["Role"])
    assert resources[role_id]["Type"] == "AWS::IAM::Role"
    others = [f for f, r in functions(resources).items() if f != fid and ref_id(r["Properties"]["Role"]) == role_id]
    assert not others, f"{fid} shares its role with {others}"
    assert "Policies" not in props, "permissions live in the function's own role, not in SAM policy templates"
    trust = resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]


# ------------------------------------------------------------------------------- IAM in general


def test_every_policy_action_exists_in_iam(resources, iam_data):
    unknown = []
    for rid, stmt in all_policy_statements(resources):
        for action in actions_of(stmt):
            assert isinstance(action, str), f"{rid}: computed action {action!r}"
            assert "*" not in action, f"{rid}: wildcard action {action} grants more than the code calls"
            prefix, name = action.split(":", 1)
            if name.lower() not in iam_data.get(prefix, {}).get("Actions", {}):
                unknown.append(f"{rid}: {action}")
    assert not unknown, f"actions IAM does not know (typo, or an API that does not exist): {unknown}"


def test_no_star_resource_where_the_action_can_be_scoped(resources, iam_data):
    offenders = []
    for rid, stmt in all_policy_statements(resources):
        if "*" not in as_list(stmt.get("Resource", [])):
            continue
        for action in actions_of(stmt):
            prefix, name = action.split(":", 1)
            scopable = iam_data[prefix]["Actions"][name.lower()].get("Resources")
            if scopable and action not in UNSCOPED_OK:
                offenders.append(f"{rid}/{stmt.get('Sid')}: {action} supports {scopable}")
    assert not offenders, "Resource \"*\" for actions that IAM can scope:\n" + "\n".join(offenders)


def test_no_action_reset_vpn_connection_anywhere():
    # The article's remediation API does not exist; ReplaceVpnTunnel is the real one.
    assert "ResetVpnConnection" not in TEMPLATE.read_text()


# ------------------------------------------------------------------------------- code vs template


@pytest.mark.parametrize("fid", function_ids())
def test_source_analysis_attributes_everything(fid, resources, workspace):
    analysis = function_analysis(fid, resources, workspace)
    assert not analysis.problems, "the wiring test cannot attribute:\n" + "\n".join(analysis.problems)


@pytest.mark.parametrize("fid", function_ids())
def test_every_env_var_the_code_reads_is_set_and_nothing_else(fid, resources, workspace):
    analysis = function_analysis(fid, resources, workspace)
    variables = resources[fid]["Properties"].get("Environment", {}).get("Variables", {})
    read = analysis.env_vars - LAMBDA_PROVIDED_ENV - set(NOT_SET_ON_PURPOSE)
    missing = sorted(read - set(variables))
    assert not missing, f"{fid} reads {missing} (" + "; ".join(
        f"{e.var} at {e.where}" for e in analysis.env_reads if e.var in missing
    ) + ") but template.yaml does not set them"
    unused = sorted(set(variables) - read)
    assert not unused, f"{fid}: template.yaml sets {unused} but the code never reads them (stale or misspelled?)"
    for e in analysis.env_reads:
        if e.method in rs.REQUIRED_ENV_METHODS and e.var in variables:
            assert variables[e.var] != "", f"{fid}: {e.var} is required by {e.where} but set to an empty string"


@pytest.mark.parametrize("fid", function_ids())
def test_every_called_operation_is_an_iam_action(fid, resources, workspace, iam_data):
    analysis = function_analysis(fid, resources, workspace)
    unknown = []
    for action in sorted(analysis.actions):
        prefix, name = action.split(":", 1)
        if name.lower() not in iam_data.get(prefix, {}).get("Actions", {}):
            unknown.append(f"{action} at {', '.join(analysis.where_action(action))}")
    assert not unknown, (
        "operations whose IAM action is not named like the operation; map them in rust_source._iam_actions: "
        + "; ".join(unknown)
    )


@pytest.mark.parametrize("fid", function_ids())
def test_role_grants_exactly_the_actions_the_code_calls(fid, resources, workspace):
    analysis = function_analysis(fid, resources, workspace)
    role_id = ref_id(resources[fid]["Properties"]["Role"])
    stmts = role_statements(role_id, resources)
    granted = {a for s in stmts for a in actions_of(s)}
    called = analysis.actions

    missing = sorted(called - granted)
    assert not missing, (
        f"{fid} calls actions its role {role_id} does not grant: "
        + "; ".join(f"{a} at {', '.join(analysis.where_action(a))}" for a in missing)
        + "\nlibrary code counted as reachable, and why:\n"
        + "\n".join(f"  {k}: {v}" for k, v in sorted(analysis.reached.items()))
    )

    extra = set()
    for action in granted - called:
        if action in PLATFORM_ACTIONS:
            continue
        if action in IMPLIED_ACTIONS and IMPLIED_ACTIONS[action] & called:
            continue
        extra.add(action)
    assert not extra, f"{role_id} grants {sorted(extra)} but no code of {fid} calls them"


def _sqs_event_queues(fn) -> set[str]:
    """Queues the function's SQS event sources poll."""
    return {
        ref_id(e["Properties"]["Queue"])
        for e in (fn["Properties"].get("Events") or {}).values()
        if e.get("Type") == "SQS"
    }


def _env_queues(fn, resources) -> set[str]:
    """Queues the function is given in its environment (it sends to them itself)."""
    variables = fn["Properties"].get("Environment", {}).get("Variables", {})
    return {
        q
        for v in variables.values()
        for q in [ref_id(x) for x in branches(v)]
        if q in resources and resources[q]["Type"] == "AWS::SQS::Queue"
    }


@pytest.mark.parametrize("fid", function_ids())
def test_platform_actions_are_limited_to_own_log_group_and_failure_queue(fid, resources):
    props = resources[fid]["Properties"]
    role_id = ref_id(props["Role"])
    log_group = ref_id(props["LoggingConfig"]["LogGroup"])
    queue = ref_id(props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"])
    own_queues = _env_queues(resources[fid], resources)
    polled = _sqs_event_queues(resources[fid])
    for stmt in role_statements(role_id, resources):
        acts = set(actions_of(stmt))
        targets = {ref_id(r) for r in as_list(stmt["Resource"])}
        if acts & {"logs:CreateLogStream", "logs:PutLogEvents"}:
            assert targets == {log_group}, f"{role_id}/{stmt.get('Sid')}: log writes beyond {log_group}"
        if "sqs:SendMessage" in acts:
            assert targets == {queue} or targets <= own_queues, (
                f"{role_id}/{stmt.get('Sid')}: SendMessage beyond {queue} and the queues in its environment"
            )
        if acts & {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}:
            assert polled and targets <= polled, f"{role_id}/{stmt.get('Sid')}: polls queues it has no event source for"


def test_slack_actions_url_is_public_only_through_slack_signature_check(resources):
    fn = resources["SlackActionsFunction"]
    # Slack cannot sign AWS requests: the handler verifies Slack's own signature.
    assert fn["Properties"]["FunctionUrlConfig"] == {"AuthType": "NONE"}
    variables = fn["Properties"]["Environment"]["Variables"]
    assert "SLACK_SIGNING_SECRET_ARN" in variables
    (event,) = fn["Properties"]["Events"].values()
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = resources[ref_id(event["Properties"]["Queue"])]["Properties"]
    assert ref_id(queue["RedrivePolicy"]["deadLetterTargetArn"]) == "ActionsDeadLetterQueue"
    assert queue["VisibilityTimeout"] >= 6 * fn["Properties"]["Timeout"]


def test_escalation_scheduler_role_may_only_invoke_slack_actions(resources):
    role = resources["EscalationSchedulerRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
    stmts = role_statements("EscalationSchedulerRole", resources)
    assert [actions_of(s) for s in stmts] == [["lambda:InvokeFunction"]]
    target = stmts[0]["Resource"]["Fn::Sub"]
    assert target.endswith(":function:${AWS::StackName}-slack-actions")
    assert resources["SlackActionsFunction"]["Properties"]["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-slack-actions"}


def test_scheduler_role_is_passed_only_to_the_scheduler(resources):
    passes = [
        (rid, s)
        for rid, s in all_policy_statements(resources)
        if "iam:PassRole" in actions_of(s) and ref_id(s["Resource"]) == "EscalationSchedulerRole"
    ]
    assert passes, "no function may pass the scheduler role"
    for rid, s in passes:
        assert s["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}, rid


def test_hold_scheduler_role_may_only_invoke_alarm_to_incident_and_is_passed_only_to_the_scheduler(resources):
    role = resources["HoldSchedulerRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
    stmts = role_statements("HoldSchedulerRole", resources)
    assert [(actions_of(s), ref_id(s["Resource"])) for s in stmts] == [
        (["lambda:InvokeFunction"], "AlarmToIncidentFunction")
    ]
    passes = [
        (rid, s)
        for rid, s in all_policy_statements(resources)
        if "iam:PassRole" in actions_of(s) and ref_id(s["Resource"]) == "HoldSchedulerRole"
    ]
    assert {rid for rid, _ in passes} == {"AlarmToIncidentRole", "SlackActionsRole"}
    for rid, s in passes:
        assert s["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}, rid
    # Timers only in the hold group, under their own name prefixes.
    for rid, prefix in (("AlarmToIncidentRole", "mute-end-*"), ("SlackActionsRole", "silence-*")):
        sched = [s for s in role_statements(rid, resources) if "scheduler:CreateSchedule" in actions_of(s)
                 and "HoldScheduleGroup" in json.dumps(s["Resource"])]
        assert len(sched) == 1, rid
        assert sched[0]["Resource"]["Fn::Sub"].endswith("/${HoldScheduleGroup}/" + prefix), rid


def test_alarm_events_and_the_sweep_reach_alarm_to_incident_with_retries_and_a_dead_letter_queue(resources):
    rule = resources["AlarmEventsRule"]["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.cloudwatch"]
    assert set(pattern["detail-type"]) == {"CloudWatch Alarm State Change", "CloudWatch Alarm Contributor State Change"}
    prefixes = [p["prefix"]["Fn::Sub"] for p in as_list(pattern["resources"])]
    assert prefixes[0].endswith(":alarm:${AWS::StackName}-")
    assert prefixes[1].endswith(":alarm:${ExtraAlarmNamePrefix}")
    sweep = resources["SweepRule"]["Properties"]
    assert sweep["ScheduleExpression"] == {"Fn::Sub": "rate(${SweepIntervalMinutes} minutes)"}
    assert json.loads(sweep["Targets"][0]["Input"]) == {"sweep": {"reason": "scheduled"}}
    for rid in ("AlarmEventsRule", "SweepRule"):
        (target,) = resources[rid]["Properties"]["Targets"]
        assert ref_id(target["Arn"]) == "AlarmToIncidentFunction"
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
        assert ref_id(target["DeadLetterConfig"]["Arn"]) == "FailedEventsQueue"
        perms = [r["Properties"] for r in resources.values() if r.get("Type") == "AWS::Lambda::Permission"
                 and ref_id(r["Properties"].get("SourceArn")) == rid]
        assert [(p["Principal"], ref_id(p["FunctionName"])) for p in perms] == [
            ("events.amazonaws.com", "AlarmToIncidentFunction")
        ], rid
    (stmt,) = resources["FailedEventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert stmt["Principal"] == {"Service": "events.amazonaws.com"}
    assert {ref_id(a) for a in stmt["Condition"]["ArnEquals"]["aws:SourceArn"]} == {"AlarmEventsRule", "SweepRule"}


# ------------------------------------------------------------------------------- the article's stack, corrected


def test_watched_vpns_are_a_checked_list(template):
    p = template["Parameters"]["VpnConnectionIds"]
    assert p["Type"] == "CommaDelimitedList"
    # Each id as the article's pattern says, or the whole list empty (tests/template/test_no_own_vpns.py).
    assert p["AllowedPattern"] == "^(" + ARTICLE_VPN_PATTERN[1:-1] + ")?$"
    assert p["Default"] == ""
    loops = [v for k, v in template["Resources"].items() if k.startswith("Fn::ForEach::")]
    assert any(loop[1] == {"Ref": "VpnConnectionIds"} for loop in loops)


def _vpn_alarms(template):
    loop = next(v for k, v in template["Resources"].items() if k.startswith("Fn::ForEach::") and v[1] == {"Ref": "VpnConnectionIds"})
    return loop[0], loop[2]


def test_vpn_alarms_match_the_article_and_reach_alarm_to_incident(template):
    var, body = _vpn_alarms(template)
    alarms = {k: v for k, v in body.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    stats = sorted(a["Properties"]["Statistic"] for a in alarms.values())
    assert stats == ["Maximum", "Minimum"], "any-tunnel (Minimum) and both-tunnels (Maximum) alarms"
    for a in alarms.values():
        p = a["Properties"]
        assert (p["Namespace"], p["MetricName"]) == ("AWS/VPN", "TunnelState")
        assert p["Dimensions"] == [{"Name": "VpnId", "Value": {"Ref": var}}]
        assert (p["Period"], p["EvaluationPeriods"], p["Threshold"]) == (60, 1, 1)
        assert p["ComparisonOperator"] == "LessThanThreshold"
        for key in ("AlarmActions", "OKActions"):
            assert [ref_id(x) for x in p[key]] == ["AlarmToIncidentFunction"]


def test_each_vpn_alarm_may_invoke_alarm_to_incident(template):
    _, body = _vpn_alarms(template)
    alarm_names = sorted(v["Properties"]["AlarmName"]["Fn::Sub"] for v in body.values() if v["Type"] == "AWS::CloudWatch::Alarm")
    perms = [v["Properties"] for v in body.values() if v["Type"] == "AWS::Lambda::Permission"]
    assert all(p["Principal"] == "lambda.alarms.cloudwatch.amazonaws.com" for p in perms)
    assert all(ref_id(p["FunctionName"]) == "AlarmToIncidentFunction" for p in perms)
    source_names = sorted(p["SourceArn"]["Fn::Sub"].split(":alarm:")[1] for p in perms)
    assert source_names == alarm_names


def test_response_plan_fixes_the_article(resources):
    plan = resources["IncidentResponsePlan"]
    assert plan["Condition"] == "UseIncidentManager"
    p = plan["Properties"]
    assert isinstance(p["ChatChannel"]["ChatbotSns"], list), "ChatbotSns must be a list of topic ARNs"
    tmpl = p["IncidentTemplate"]
    assert tmpl["Impact"] == 3
    assert tmpl["Summary"] == "The VPN connection to the remote site is not working."
    auto = p["Actions"][0]["SsmAutomation"]
    assert ref_id(auto["DocumentName"]) == "DiagnosisRunbook", "the template's own runbook, not AWSSupport-TroubleshootVPN"
    params = as_list(auto["Parameters"])
    assert all(set(x) == {"Key", "Values"} and isinstance(x["Values"], list) for x in params)
    dyn = {d["Key"]: d["Value"]["Variable"] for d in auto["DynamicParameters"]}
    assert dyn["IncidentRecordArn"] == "INCIDENT_RECORD_ARN"


def test_runbook_invokes_vpn_troubleshoot_with_the_contract_parameters(resources):
    doc = resources["DiagnosisRunbook"]["Properties"]
    assert doc["DocumentType"] == "Automation"
    content = doc["Content"]
    assert {"VpnConnectionId", "IncidentRecordArn", "OpsItemId", "AutomationAssumeRole"} <= set(content["parameters"])
    invoke = [s for s in content["mainSteps"] if s["action"] == "aws:invokeLambdaFunction"]
    assert len(invoke) == 1
    assert ref_id(invoke[0]["inputs"]["FunctionName"]) == "VpnTroubleshootFunction"
    assert invoke[0]["inputs"].get("InvocationType", "RequestResponse") == "RequestResponse"
    fn_timeout = resources["VpnTroubleshootFunction"]["Properties"]["Timeout"]
    assert fn_timeout < invoke[0]["timeoutSeconds"] <= 300


def test_automation_role_may_only_invoke_the_diagnosis_function(resources):
    stmts = role_statements("AutomationRole", resources)
    assert [(actions_of(s), [ref_id(r) for r in as_list(s["Resource"])]) for s in stmts] == [
        (["lambda:InvokeFunction"], ["VpnTroubleshootFunction"])
    ]


def test_state_table_matches_the_shared_contract(resources):
    p = resources["StateTable"]["Properties"]
    assert p["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert p["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert p["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert p["BillingMode"] == "PAY_PER_REQUEST"
