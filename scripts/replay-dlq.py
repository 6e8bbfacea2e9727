#!/usr/bin/env python3
"""Replays failed events from the failed-events SQS queue to their Lambda function.

Every function of template.yaml sends an asynchronous event that failed all its retries
(or grew too old) to FailedEventsQueue as a Lambda on-failure destination record:

    {"version": "1.0", "timestamp": "...",
     "requestContext": {"requestId": "...", "functionArn": "arn:aws:lambda:...:function:NAME:$LATEST",
                        "condition": "RetriesExhausted" | "EventAgeExceeded", "approximateInvokeCount": 3},
     "requestPayload": {...the original event...},
     "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
     "responsePayload": {"errorType": "...", "errorMessage": "..."}}

The organization mode's dead-letter queue (`OrgEventsDeadLetterQueueUrl`) holds what
EventBridge could not deliver to alarm-to-incident: the member's alarm event itself, with
the message attributes `TARGET_ARN`, `ERROR_CODE`, `EXHAUSTED_RETRY_CONDITION` and
`RETRY_ATTEMPTS`; it is replayed the same way, the event as the payload.

This script invokes the function named in each record with its `requestPayload`
(asynchronously by default, as the original invocation; `--sync` waits for the answer)
and deletes the message once the invocation was accepted (or succeeded, with --sync).
A message that fails again stays in the queue (visible again after 60 s; --dry-run
hides what it read for 5 s only). Payloads are never printed: they may carry alarm details;
only the function, request id, condition and error type are.

    python3 scripts/replay-dlq.py --queue-url URL [--function NAME] [--dry-run] [--sync]
                                  [--max N] [--endpoint-url URL] [--region REGION]

--function overrides the function of every record (e.g. replay to a fixed version).
--endpoint-url points both SQS and Lambda at another endpoint (tests, LocalStack).
Exit status: 0 when every message read was replayed (or would be, with --dry-run),
1 when some failed or were not on-failure records, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    read: int = 0
    replayed: int = 0
    would_replay: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def function_of(record: dict, override: str | None) -> str:
    """The function to invoke: --function, else the record's function ARN without the
    version qualifier Lambda appends (`:$LATEST`, `:3`), so the current code runs."""
    if override:
        return override
    arn = record["requestContext"]["functionArn"]
    parts = arn.split(":")
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    return ":".join(parts[:7]) if len(parts) > 7 else arn


def _attr(attributes: dict, name: str) -> str | None:
    value = (attributes or {}).get(name, {})
    return value.get("StringValue") if isinstance(value, dict) else None


def parse_record(body: str, attributes: dict | None = None) -> dict:
    """The on-failure record (an EventBridge dead letter as one), or ValueError saying
    what is wrong with it."""
    try:
        record = json.loads(body)
    except ValueError as e:
        raise ValueError(f"not JSON ({e.__class__.__name__})") from None
    if isinstance(record, dict) and "detail-type" in record and "requestPayload" not in record:
        target = _attr(attributes, "TARGET_ARN")
        if not target:
            raise ValueError("an EventBridge dead letter without the TARGET_ARN attribute (give --function)")
        return {"requestPayload": record,
                "requestContext": {"requestId": f"event {record.get('id', '?')}", "functionArn": target,
                                   "condition": _attr(attributes, "EXHAUSTED_RETRY_CONDITION") or "?",
                                   "approximateInvokeCount": _attr(attributes, "RETRY_ATTEMPTS") or "?"},
                "responsePayload": {"errorType": _attr(attributes, "ERROR_CODE")}}
    if not isinstance(record, dict) or "requestPayload" not in record:
        raise ValueError("not a Lambda on-failure record (no requestPayload)")
    ctx = record.get("requestContext")
    if not isinstance(ctx, dict) or not isinstance(ctx.get("functionArn"), str):
        raise ValueError("not a Lambda on-failure record (no requestContext.functionArn)")
    return record


def describe(record: dict) -> str:
    ctx = record.get("requestContext", {})
    err = record.get("responsePayload")
    err_type = err.get("errorType") if isinstance(err, dict) else None
    return (f"request {ctx.get('requestId', '?')} ({ctx.get('condition', '?')}, "
            f"{ctx.get('approximateInvokeCount', '?')} attempts, error {err_type or '?'})")


def replay(sqs: Any, lam: Any, queue_url: str, *, function: str | None = None, dry_run: bool = False,
           sync: bool = False, max_messages: int = 100, out=None) -> Report:
    out = out or sys.stdout
    report = Report()
    seen: set[str] = set()
    while report.read < max_messages:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=min(10, max_messages - report.read),
                                  WaitTimeSeconds=0, VisibilityTimeout=60 if not dry_run else 5,
                                  MessageAttributeNames=["All"])
        messages = [m for m in got.get("Messages", []) if m["MessageId"] not in seen]
        if not messages:
            break
        for m in messages:
            seen.add(m["MessageId"])
            report.read += 1
            try:
                record = parse_record(m["Body"], m.get("MessageAttributes"))
            except ValueError as e:
                report.skipped.append(m["MessageId"])
                print(f"skip {m['MessageId']}: {e}; left in the queue", file=out)
                continue
            target = function_of(record, function)
            what = describe(record)
            if dry_run:
                report.would_replay += 1
                print(f"would replay {what} to {target}", file=out)
                continue
            try:
                answer = lam.invoke(FunctionName=target, InvocationType="RequestResponse" if sync else "Event",
                                    Payload=json.dumps(record["requestPayload"]).encode())
            except Exception as e:  # botocore ClientError/EndpointConnectionError: keep the message
                report.failed.append(m["MessageId"])
                print(f"FAILED {what} to {target}: {type(e).__name__}; left in the queue", file=out)
                continue
            status = answer.get("StatusCode")
            if answer.get("FunctionError") or status not in ((200,) if sync else (202,)):
                report.failed.append(m["MessageId"])
                print(f"FAILED {what} to {target}: status {status}, {answer.get('FunctionError') or 'no error'}; "
                      f"left in the queue", file=out)
                continue
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            report.replayed += 1
            print(f"replayed {what} to {target} (status {status})", file=out)
    print(f"{report.read} read, {report.replayed} replayed, {report.would_replay} would be replayed, "
          f"{len(report.failed)} failed, {len(report.skipped)} skipped", file=out)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue-url", required=True, help="the failed-events queue (stack output or console)")
    ap.add_argument("--function", help="invoke this function instead of the one in each record")
    ap.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
    ap.add_argument("--sync", action="store_true", help="wait for each invocation (RequestResponse)")
    ap.add_argument("--max", type=int, default=100, help="messages to read at most (default 100)")
    ap.add_argument("--endpoint-url", help="endpoint for SQS and Lambda (tests, LocalStack)")
    ap.add_argument("--region", help="AWS Region (default from the environment or profile)")
    args = ap.parse_args(argv)
    if args.max < 1:
        ap.error("--max must be at least 1")
    import boto3

    session = boto3.session.Session(region_name=args.region)
    sqs = session.client("sqs", endpoint_url=args.endpoint_url)
    lam = session.client("lambda", endpoint_url=args.endpoint_url)
    report = replay(sqs, lam, args.queue_url, function=args.function, dry_run=args.dry_run, sync=args.sync,
                    max_messages=args.max)
    return 1 if report.failed or report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
