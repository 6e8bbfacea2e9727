"""Python reference: the SNS-subscribed function operators deploy today to get CloudWatch
alarms into Slack. It formats the alarm carried by each SNS record and posts it to an
incoming webhook with urllib (no third-party packages). Run by `bench/run.py` through the
same local Lambda Runtime API, endpoints and events as notify-fanout:

    python -m awslambdaric slack_notify.handler     (cwd bench/reference)

Env: SLACK_WEBHOOK_URL.
"""

import json
import logging
import os
import urllib.request

logger = logging.getLogger()
logger.setLevel(logging.INFO)

WEBHOOK_URL = os.environ["SLACK_WEBHOOK_URL"]
COLORS = {"ALARM": "#d62728", "OK": "#2ca02c", "INSUFFICIENT_DATA": "#ff7f0e"}


def format_alarm(alarm, subject):
    state = alarm.get("NewStateValue", "UNKNOWN")
    trigger = alarm.get("Trigger") or {}
    dims = ", ".join(f"{d.get('name')}={d.get('value')}" for d in trigger.get("Dimensions") or [])
    region = alarm.get("Region", "")
    name = alarm.get("AlarmName", "unknown alarm")
    return {
        "text": subject or f"{state}: {name}",
        "attachments": [{
            "color": COLORS.get(state, "#777777"),
            "title": f"{state}: {name}",
            "text": alarm.get("NewStateReason", ""),
            "fields": [
                {"title": "Description", "value": alarm.get("AlarmDescription") or "", "short": False},
                {"title": "Metric", "value": f"{trigger.get('Namespace')} {trigger.get('MetricName')}", "short": True},
                {"title": "Dimensions", "value": dims, "short": True},
                {"title": "Previous state", "value": alarm.get("OldStateValue", ""), "short": True},
                {"title": "Region", "value": region, "short": True},
            ],
            "ts": alarm.get("StateChangeTime"),
        }],
    }


def handler(event, context):
    posted = 0
    for record in event.get("Records", []):
        sns = record["Sns"]
        try:
            alarm = json.loads(sns["Message"])
        except ValueError:
            alarm = {"AlarmName": sns.get("Subject") or "message", "NewStateReason": sns["Message"]}
        body = json.dumps(format_alarm(alarm, sns.get("Subject"))).encode()
        req = urllib.request.Request(WEBHOOK_URL, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        posted += 1
        logger.info("posted %s to Slack", alarm.get("AlarmName"))
    return {"posted": posted}
