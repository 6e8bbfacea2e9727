#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (scripts/fuzz.sh) from the project's
sample events (events/), the Slack rendering inputs (shared/tests/slack/input) and the
VPN diagnosis fixtures (functions/vpn-troubleshoot/tests/fixtures/cases).

usage: fuzz/seeds.py OUT_DIR     (writes OUT_DIR/<target>/<name>)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# slack_render header bytes (see fuzz_targets/slack_render.rs).
POST, REPLY, CARD = 0 << 3, 1 << 3, 2 << 3
NO_MENTION, HERE, SUBTEAM = 7, 0, 2
MILESTONES, WEBHOOK, THREAD = 1 << 5, 1 << 6, 1 << 7
FORM_NOTIFICATION, FORM_SUBJECT = 0b1, 0b10
OPTION_SETS = [
    NO_MENTION | POST,
    HERE | POST,
    NO_MENTION | REPLY | THREAD,
    SUBTEAM | CARD | MILESTONES,
    NO_MENTION | POST | WEBHOOK,
]

KEY = "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
T0 = "2026-11-25T10:01:00Z"


def notification(event: str, **extra) -> dict:
    """A `shared::notification::Notification` as serde writes it."""
    n = {
        "event": event,
        "incident_key": KEY,
        "title": KEY,
        "summary": "The VPN connection to the remote site is not working.",
        "impact": 2,
        "status": "resolved" if event == "resolved" else "open",
        "backend": "OpsCenter",
        "incident_ref": "oi-0123456789ab",
        "incident_url": "https://eu-west-1.console.aws.amazon.com/systems-manager/opsitems/oi-0123456789ab",
        "account": "123456789012",
        "region": "eu-west-1",
        "alarm": {
            "name": "vpn-0a1b2c3d4e5f67890 tunnel down (any)",
            "arn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down",
            "state": "ALARM",
            "reason": "Threshold Crossed: 1 datapoint [0.0 (25/11/26 10:00:00)] was less than the threshold (1.0).",
            "url": "https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1#alarmsV2:alarm/vpn-tunnel-down",
        },
        "vpn_id": "vpn-0a1b2c3d4e5f67890",
        "tunnel_ip": "203.0.113.10",
        "occurred_at": T0,
        "opened_at": None,
        "duration_seconds": None,
        "next_steps": ["Check the customer gateway", "Run the diagnosis runbook <now> & see"],
        "links": [{"label": "VPN console", "url": "https://console.aws.amazon.com/vpc/home#VpnConnections"}],
        "findings": [],
        "timeline": [],
        "roles": {"reporter": {"kind": "alarm", "name": "vpn-tunnel-down"}, "team": "#network"},
    }
    n.update(extra)
    return n


def notifications() -> dict[str, dict]:
    finding = {
        "severity": "critical",
        "title": "IKE phase 1 authentication fails",
        "evidence": "12 records: AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key",
        "next_step": "Compare the pre-shared key on the customer gateway",
    }
    timeline = [
        {"at": T0, "text": "Incident opened", "actor": "alarm vpn-tunnel-down"},
        {"at": "2026-11-25T10:05:00Z", "text": "Acknowledged", "actor": "Jane Doe (U0123ABCD)"},
    ]
    resolved_at = "2026-11-25T10:41:00Z"
    post = {
        "title": KEY,
        "peak_impact": 1,
        "detected_at": T0,
        "notified_at": "2026-11-25T10:01:02Z",
        "acknowledged_at": "2026-11-25T10:05:00Z",
        "diagnosed_at": "2026-11-25T10:03:00Z",
        "resolved_at": resolved_at,
        "time_to_notify_seconds": 2,
        "time_to_acknowledge_seconds": 240,
        "time_to_diagnose_seconds": 120,
        "time_to_resolve_seconds": 2400,
        "resolved_by": {"kind": "person", "id": "U0123ABCD", "name": "Jane Doe"},
        "roles": {"owner": {"kind": "person", "id": "U0123ABCD", "name": "Jane Doe"}},
        "findings": [finding],
        "participants": ["alarm vpn-tunnel-down", "Jane Doe (U0123ABCD)"],
        "timeline": timeline,
        "retrospective": [{"heading": "What happened", "facts": ["Both tunnels down for 40m"]}],
    }
    return {
        "opened": notification("opened"),
        "updated": notification("updated", impact=1),
        "diagnosed": notification("diagnosed", findings=[finding] * 3),
        "acknowledged": notification(
            "acknowledged",
            roles={"owner": {"kind": "person", "id": "U0123ABCD", "name": "Jane Doe"}},
        ),
        "resolved": notification(
            "resolved", opened_at=T0, occurred_at=resolved_at, duration_seconds=2400, timeline=timeline
        ),
        "resolved-summary": notification(
            "resolved", opened_at=T0, occurred_at=resolved_at, duration_seconds=2400, post_incident=post
        ),
    }


def sns_messages(event: dict) -> list[tuple[str | None, str]]:
    """What notify-fanout would receive for a sample event: the SNS messages inside
    it, or the event itself published to SNS."""
    records = event.get("Records")
    if isinstance(records, list):
        out = []
        for r in records:
            sns = r.get("Sns", {}) if isinstance(r, dict) else {}
            if isinstance(sns.get("Message"), str):
                out.append((sns.get("Subject"), sns["Message"]))
        return out
    return [(None, json.dumps(event))]


def write(out: Path, target: str, name: str, data: bytes) -> None:
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    events = sorted((ROOT / "events").glob("*.json"))
    slack_inputs = sorted((ROOT / "shared/tests/slack/input").glob("*"))
    cases = sorted((ROOT / "functions/vpn-troubleshoot/tests/fixtures/cases").glob("*.json"))

    for f in events + [p for p in slack_inputs if p.suffix == ".json"]:
        write(out, "alarm_normalize", f.name, f.read_bytes())
        for i, (_, message) in enumerate(sns_messages(json.loads(f.read_text()))):
            if message != json.dumps(json.loads(f.read_text())):
                write(out, "alarm_normalize", f"{f.stem}-sns-message-{i}.json", message.encode())

    seeds: list[tuple[str, int, bytes]] = []
    for f in events:
        for i, (subject, message) in enumerate(sns_messages(json.loads(f.read_text()))):
            if subject:
                seeds.append((f"{f.stem}-{i}", FORM_SUBJECT, subject.encode() + b"\0" + message.encode()))
            else:
                seeds.append((f"{f.stem}-{i}", 0, message.encode()))
    for f in slack_inputs:
        seeds.append((f.stem, 0, f.read_bytes()))
    for name, n in notifications().items():
        seeds.append((f"notification-{name}", FORM_NOTIFICATION, json.dumps(n, indent=1).encode()))
        # The same notification as it travels (a JSON string inside the Chatbot JSON).
        chatbot = {
            "version": "1.0",
            "source": "custom",
            "content": {"textType": "client-markdown", "title": n["title"], "description": n["summary"]},
            "metadata": {"threadId": KEY, "additionalContext": {"pipeline": json.dumps(n)}},
        }
        seeds.append((f"chatbot-{name}", 0, json.dumps(chatbot).encode()))
    for name, form, body in seeds:
        for j, opts in enumerate(OPTION_SETS):
            write(out, "slack_render", f"{name}-{j}", bytes([opts, form]) + body)

    for f in cases:
        case = json.loads(f.read_text())
        lines = case.get("log_lines") or []
        if not lines:
            continue
        text = "\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines)
        write(out, "vpn_logs", f.stem, text.encode())
        first = lines[0]
        write(out, "vpn_logs", f"{f.stem}-first", (first if isinstance(first, str) else json.dumps(first)).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
