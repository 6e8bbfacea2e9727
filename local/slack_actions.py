#!/usr/bin/env python3
"""What Slack and AWS do around slack-actions, for the local story and its tests (dev-only).

- Slack's requests, signed as Slack signs them (v0: HMAC-SHA256 of `v0:{timestamp}:{body}`
  with the app's signing secret), delivered as a Lambda Function URL event (payload
  format 2.0): the slash command `/incident ...` (form body, base64 as a Function URL
  may deliver it) and the interactivity payloads (`block_actions` button presses,
  `view_submission` of the Add-note modal).
- The SQS event source mapping of the actions queue: receive a batch, invoke the
  function with it, delete what it did not report as failed.
- EventBridge Scheduler: the escalation schedules are created in moto; `due_schedules`
  reads them and `fire` invokes their target with their input, then deletes them
  (ActionAfterCompletion DELETE), as the service does when their time comes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode

TEAM = "T0LOCAL"
APP = "A0LOCALAPP"
ACTION_IDS = {"acknowledge": "incident.acknowledge", "rerun": "incident.rerun",
              "resolve": "incident.resolve", "note": "incident.note"}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Slack's `X-Slack-Signature` for `body` sent at `timestamp`."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def url_event(body: bytes, timestamp: int | None, signature: str | None, base64_body: bool = False,
              method: str = "POST") -> dict:
    """A Lambda Function URL request (payload format 2.0) carrying Slack's POST."""
    now = time.time()
    headers = {"content-type": "application/x-www-form-urlencoded",
               "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
               "host": "abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-west-1.on.aws",
               "x-forwarded-proto": "https"}
    if timestamp is not None:
        headers["x-slack-request-timestamp"] = str(timestamp)
    if signature is not None:
        headers["x-slack-signature"] = signature
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "", "headers": headers,
        "requestContext": {
            "accountId": "anonymous", "apiId": "abcdefghijklmnopqrstuvwxyz012345",
            "domainName": headers["host"], "domainPrefix": "abcdefghijklmnopqrstuvwxyz012345",
            "http": {"method": method, "path": "/", "protocol": "HTTP/1.1", "sourceIp": "198.51.100.99",
                     "userAgent": headers["user-agent"]},
            "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
            "time": dt.datetime.now(dt.timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000)},
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }


@dataclass
class Person:
    id: str
    name: str


@dataclass
class SlackApp:
    """The Slack app as Slack runs it: it signs what a person does and sends it to the
    function's URL (here: an invocation through the function's Runtime API)."""
    signing_secret: str
    sink: Any                      # slack_sink.SlackSink (trigger ids, response URLs)
    invoke: Callable[[dict], Any]  # Function.invoke -> Invocation
    channel: str = "C0LOCALOPS"
    sent: list[dict] = field(default_factory=list)

    def post(self, body: bytes, *, base64_body: bool = False, timestamp: int | None = None,
             secret: str | None = None, signature: str | None = None) -> Any:
        ts = int(time.time()) if timestamp is None else timestamp
        sig = signature if signature is not None else sign(secret or self.signing_secret, ts, body)
        event = url_event(body, ts, sig, base64_body=base64_body)
        self.sent.append(event)
        return self.invoke(event)

    def command_body(self, who: Person, text: str) -> bytes:
        return urlencode({
            "token": "deprecated-verification-token", "team_id": TEAM, "team_domain": "local",
            "channel_id": self.channel, "channel_name": "ops", "user_id": who.id, "user_name": who.name,
            "command": "/incident", "text": text, "api_app_id": APP, "is_enterprise_install": "false",
            "response_url": self.sink.response_url(who.id), "trigger_id": self.sink.trigger_id(who.id),
        }).encode()

    def command(self, who: Person, text: str) -> Any:
        """`/incident <text>` typed by `who` (Function URLs may deliver form bodies base64-encoded)."""
        return self.post(self.command_body(who, text), base64_body=True)

    def click_body(self, who: Person, message: dict, action: str, key_fallback: str) -> bytes:
        button = find_button(message, ACTION_IDS[action])
        value = button["value"] if button else key_fallback
        payload = {
            "type": "block_actions", "user": {"id": who.id, "username": who.name, "name": who.name, "team_id": TEAM},
            "api_app_id": APP, "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": message["channel"],
                          "is_ephemeral": False},
            "trigger_id": self.sink.trigger_id(who.id), "team": {"id": TEAM, "domain": "local"},
            "enterprise": None, "is_enterprise_install": False,
            "channel": {"id": message["channel"], "name": message.get("channel_name", "ops")},
            "message": {"type": "message", "ts": message["ts"], "text": message.get("text", ""),
                        "blocks": message.get("blocks") or []},
            "state": {"values": {}},
            "response_url": self.sink.response_url(who.id, message["channel"]),
            "actions": [{"action_id": ACTION_IDS[action], "block_id": (button or {}).get("_block_id", "actions"),
                         "text": (button or {}).get("text", {"type": "plain_text", "text": action}),
                         "value": value, "type": "button", "action_ts": f"{time.time():.6f}"}],
        }
        return urlencode({"payload": json.dumps(payload)}).encode()

    def click(self, who: Person, message: dict, action: str, key_fallback: str) -> Any:
        """`who` presses a button of the incident's top-level message."""
        return self.post(self.click_body(who, message, action, key_fallback))

    def interaction(self, who: Person, payload: dict) -> Any:
        """Any interactivity payload (even one slack-actions cannot read), signed, with a
        response URL issued to `who` so what they are told is recorded."""
        payload = {**payload, "response_url": self.sink.response_url(who.id)}
        return self.post(urlencode({"payload": json.dumps(payload)}).encode())

    def submit_note(self, who: Person, view: dict, text: str) -> Any:
        """`who` types `text` into the Add-note modal and submits it."""
        block = next((b for b in view.get("blocks", []) if b.get("type") == "input"), {})
        element = block.get("element", {})
        payload = {
            "type": "view_submission", "team": {"id": TEAM, "domain": "local"},
            "user": {"id": who.id, "username": who.name, "name": who.name, "team_id": TEAM},
            "api_app_id": APP, "token": "deprecated-verification-token", "trigger_id": self.sink.trigger_id(who.id),
            "view": {**view, "id": "V0LOCAL", "team_id": TEAM, "state": {"values": {
                block.get("block_id", "note"): {element.get("action_id", "note_text"): {
                    "type": element.get("type", "plain_text_input"), "value": text}}}}},
            "response_urls": [], "is_enterprise_install": False,
        }
        return self.post(urlencode({"payload": json.dumps(payload)}).encode())


def find_button(message: dict, action_id: str) -> dict | None:
    """The button with `action_id` in a message's actions blocks (with its block id)."""
    for b in message.get("blocks") or []:
        if b.get("type") == "actions":
            for e in b.get("elements", []):
                if e.get("action_id") == action_id:
                    return {**e, "_block_id": b.get("block_id", "actions")}
    return None


def buttons(message: dict) -> list[str]:
    """The button labels of a message, in order."""
    return [e.get("text", {}).get("text", "") for b in message.get("blocks") or [] if b.get("type") == "actions"
            for e in b.get("elements", [])]


# ---------------------------------------------------------------- SQS event source mapping

def sqs_event(messages: list[dict], queue_arn: str) -> dict:
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                       "SentTimestamp": m.get("Attributes", {}).get("SentTimestamp", str(int(time.time() * 1000))),
                       "SenderId": "AROALOCAL", "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000))},
        "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn, "awsRegion": queue_arn.split(":")[3]} for m in messages]}


def drain_queue(sqs, queue_url: str, queue_arn: str, invoke: Callable[[dict], Any], max_batches: int = 20) -> list:
    """Lambda's SQS event source mapping: batches of up to 10; messages the function did not
    report in `batchItemFailures` are deleted; failed ones become visible again at once
    (the story does not wait out the visibility timeout)."""
    invocations = []
    for _ in range(max_batches):
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  AttributeNames=["All"], VisibilityTimeout=30)
        messages = got.get("Messages", [])
        if not messages:
            break
        inv = invoke(sqs_event(messages, queue_arn))
        invocations.append(inv)
        failed = set()
        if inv.ok and isinstance(inv.result, dict):
            failed = {f.get("itemIdentifier") for f in inv.result.get("batchItemFailures", [])}
        elif not inv.ok:
            failed = {m["MessageId"] for m in messages}
        for m in messages:
            if m["MessageId"] in failed:
                sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"],
                                              VisibilityTimeout=0)
            else:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        if failed:
            break  # as Lambda would, back off rather than spin on a failing message
    return invocations


# ---------------------------------------------------------------- EventBridge Scheduler

def _at(expression: str) -> float | None:
    """`at(yyyy-mm-ddThh:mm:ss)` in the schedule's time zone (UTC here) -> epoch seconds."""
    if not (expression.startswith("at(") and expression.endswith(")")):
        return None
    when = dt.datetime.fromisoformat(expression[3:-1])
    return when.replace(tzinfo=dt.timezone.utc).timestamp()


def schedules(scheduler, group: str) -> list[dict]:
    """Every schedule of `group`, with its expression, due time and target."""
    out = []
    for s in scheduler.list_schedules(GroupName=group).get("Schedules", []):
        full = scheduler.get_schedule(Name=s["Name"], GroupName=group)
        out.append({"name": full["Name"], "expression": full["ScheduleExpression"],
                    "due": _at(full["ScheduleExpression"]), "timezone": full.get("ScheduleExpressionTimezone"),
                    "target": full["Target"], "state": full.get("State"),
                    "after_completion": full.get("ActionAfterCompletion")})
    return out


def due_schedules(scheduler, group: str, now: float) -> list[dict]:
    return sorted((s for s in schedules(scheduler, group) if s["due"] is not None and s["due"] <= now
                   and s["state"] != "DISABLED"), key=lambda s: s["due"])


def fire(scheduler, group: str, schedule: dict, invoke: Callable[[dict], Any]) -> Any:
    """What the service does at the schedule's time: invoke the target with its input, then
    delete the one-time schedule (ActionAfterCompletion DELETE)."""
    inv = invoke(json.loads(schedule["target"]["Input"]))
    if schedule.get("after_completion") == "DELETE":
        scheduler.delete_schedule(Name=schedule["name"], GroupName=group)
    return inv
