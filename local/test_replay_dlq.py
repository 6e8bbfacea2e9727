"""scripts/replay-dlq.py against moto's SQS (the failed-events queue) and a stubbed Lambda
client that records each Invoke (moto runs Lambda functions only in Docker)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "replay-dlq.py"
spec = importlib.util.spec_from_file_location("replay_dlq", SCRIPT)
replay_dlq = importlib.util.module_from_spec(spec)
sys.modules["replay_dlq"] = replay_dlq  # dataclasses look their module up
spec.loader.exec_module(replay_dlq)

REGION = "eu-west-1"
FN = "arn:aws:lambda:eu-west-1:123456789012:function:stack-AlarmToIncidentFunction-abc"
ALARM = {"source": "aws.cloudwatch", "alarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down",
         "alarmData": {"alarmName": "vpn-tunnel-down", "state": {"value": "ALARM"}}}


def on_failure(payload: dict, request_id: str, fn: str = FN + ":$LATEST") -> str:
    return json.dumps({
        "version": "1.0", "timestamp": "2026-11-25T10:01:05.000Z",
        "requestContext": {"requestId": request_id, "functionArn": fn, "condition": "RetriesExhausted",
                           "approximateInvokeCount": 3},
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Retryable.AwsUnavailable", "errorMessage": "SNS Publish: unavailable"}})


@pytest.fixture()
def aws(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="failed-events")["QueueUrl"]
        yield sqs, url


def lambda_stub(answers: list[dict]) -> tuple:
    lam = boto3.client("lambda", region_name=REGION)
    stub = Stubber(lam)
    for a in answers:
        expected = a.pop("expect")
        response = {"StatusCode": a.get("StatusCode", 202),
                    "Payload": StreamingBody(io.BytesIO(b""), 0), **({"FunctionError": a["FunctionError"]}
                                                                      if "FunctionError" in a else {})}
        stub.add_response("invoke", response, expected)
    stub.activate()
    return lam, stub


def count(sqs, url) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                     "ApproximateNumberOfMessagesNotVisible"])
    a = attrs["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def test_replays_request_payload_to_the_unqualified_function_and_deletes(aws):
    sqs, url = aws
    second = {**ALARM, "alarmData": {**ALARM["alarmData"], "state": {"value": "OK"}}}
    sqs.send_message(QueueUrl=url, MessageBody=on_failure(ALARM, "r-1"))
    sqs.send_message(QueueUrl=url, MessageBody=on_failure(second, "r-2", FN + ":7"))
    lam, stub = lambda_stub([
        {"expect": {"FunctionName": FN, "InvocationType": "Event", "Payload": json.dumps(ALARM).encode()}},
        {"expect": {"FunctionName": FN, "InvocationType": "Event", "Payload": json.dumps(second).encode()}},
    ])
    out = io.StringIO()
    report = replay_dlq.replay(sqs, lam, url, out=out)
    stub.assert_no_pending_responses()
    assert (report.read, report.replayed, report.failed, report.skipped) == (2, 2, [], [])
    assert count(sqs, url) == 0
    text = out.getvalue()
    assert "replayed request r-1 (RetriesExhausted, 3 attempts, error Retryable.AwsUnavailable)" in text
    assert "vpn-tunnel-down" not in text, "payloads are never printed"


def test_dry_run_invokes_nothing_and_keeps_the_messages(aws):
    sqs, url = aws
    sqs.send_message(QueueUrl=url, MessageBody=on_failure(ALARM, "r-1"))
    lam, stub = lambda_stub([])
    out = io.StringIO()
    report = replay_dlq.replay(sqs, lam, url, dry_run=True, out=out)
    assert (report.read, report.would_replay, report.replayed) == (1, 1, 0)
    assert f"would replay request r-1 (RetriesExhausted, 3 attempts, error Retryable.AwsUnavailable) to {FN}" \
        in out.getvalue()
    assert count(sqs, url) == 1


def test_function_error_or_refused_invoke_keeps_the_message(aws):
    sqs, url = aws
    sqs.send_message(QueueUrl=url, MessageBody=on_failure(ALARM, "r-1"))
    lam, stub = lambda_stub([{"expect": {"FunctionName": "other", "InvocationType": "RequestResponse",
                                         "Payload": json.dumps(ALARM).encode()},
                              "StatusCode": 200, "FunctionError": "Unhandled"}])
    report = replay_dlq.replay(sqs, lam, url, function="other", sync=True, out=io.StringIO())
    assert report.failed and report.replayed == 0
    assert count(sqs, url) == 1


def test_not_an_on_failure_record_is_skipped_and_kept(aws):
    sqs, url = aws
    sqs.send_message(QueueUrl=url, MessageBody="{not json")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Records": []}))
    lam, stub = lambda_stub([])
    out = io.StringIO()
    report = replay_dlq.replay(sqs, lam, url, out=out)
    assert len(report.skipped) == 2 and report.replayed == 0
    assert "not JSON" in out.getvalue() and "no requestPayload" in out.getvalue()
    assert count(sqs, url) == 2


def test_eventbridge_dead_letters_of_the_organization_bus_replay_the_event_itself(aws):
    sqs, url = aws
    event = {"version": "0", "id": "e-1", "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
             "account": "111122223333", "region": REGION, "resources": [], "detail": {"alarmName": "vpn-tunnel-down"}}
    attrs = {"TARGET_ARN": FN, "ERROR_CODE": "Lambda.TooManyRequestsException",
             "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts", "RETRY_ATTEMPTS": "20",
             "RULE_ARN": "arn:aws:events:eu-west-1:123456789012:rule/stack-org-alarms/OrgAlarmRule"}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event),
                     MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()})
    # Without TARGET_ARN the function is unknown: skipped unless --function names it.
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({**event, "id": "e-2"}))
    lam, stub = lambda_stub([{"expect": {"FunctionName": FN, "InvocationType": "Event",
                                         "Payload": json.dumps(event).encode()}}])
    out = io.StringIO()
    report = replay_dlq.replay(sqs, lam, url, out=out)
    stub.assert_no_pending_responses()
    assert (report.replayed, len(report.skipped)) == (1, 1)
    text = out.getvalue()
    assert "replayed request event e-1 (MaximumRetryAttempts, 20 attempts, error Lambda.TooManyRequestsException)" in text
    assert "without the TARGET_ARN attribute (give --function)" in text
    assert "111122223333" not in text, "payloads are never printed"
    assert count(sqs, url) == 1


def test_main_dry_run_exit_status(aws, capsys):
    sqs, url = aws
    sqs.send_message(QueueUrl=url, MessageBody=on_failure(ALARM, "r-9"))
    assert replay_dlq.main(["--queue-url", url, "--dry-run", "--region", REGION]) == 0
    assert "would replay request r-9" in capsys.readouterr().out
    sqs.send_message(QueueUrl=url, MessageBody="garbage")
    assert replay_dlq.main(["--queue-url", url, "--dry-run", "--region", REGION]) == 1
