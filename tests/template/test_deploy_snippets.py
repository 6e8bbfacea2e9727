"""CloudFormation in docs/DEPLOY.md is linted like template.yaml, so the documentation stays
deployable: every ```yaml block after a `<!-- cfn-lint: NAME ... -->` marker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rust_source as rs

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is required: pip install 'cfn-lint>=1.58'")

DEPLOY = rs.repo_root() / "docs" / "DEPLOY.md"
MARKED = re.compile(r"<!-- cfn-lint: (?P<name>[\w-]+)[^>]*-->\s*```yaml\n(?P<body>.*?)```", re.S)


def snippets() -> dict[str, str]:
    return {m["name"]: m["body"] for m in MARKED.finditer(DEPLOY.read_text())}


def test_deploy_md_has_the_metrics_insights_alarm_snippet():
    assert "metrics-insights-vpn-alarm" in snippets()


@pytest.mark.parametrize("name", sorted(snippets()))
def test_snippet_passes_cfn_lint(name, tmp_path):
    path = tmp_path / f"{name}.yaml"
    path.write_text(snippets()[name])
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    cmd = [str(cfn_lint)] if cfn_lint.exists() else [sys.executable, "-m", "cfnlint"]
    done = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_metrics_insights_alarm_is_routed_by_the_stacks_alarm_events_rule():
    template, matches = cfnlint_decode.decode_str(snippets()["metrics-insights-vpn-alarm"])
    assert not matches, matches
    alarm = template["Resources"]["VpnTunnelDownAllConnections"]["Properties"]
    [query] = alarm["Metrics"]
    # The query of the sample events (events/eventbridge-insights-contributor-*.json).
    assert query["Expression"] == 'SELECT MIN(TunnelState) FROM "AWS/VPN" GROUP BY VpnId'
    assert query["Period"] == 60
    assert "AlarmActions" not in alarm and "OKActions" not in alarm
    assert "${AlarmNamePrefix}" in json.dumps(alarm["AlarmName"])
    # The pipeline's rule takes both detail-types of ExtraAlarmNamePrefix alarms.
    stack, matches = cfnlint_decode.decode(str(rs.repo_root() / "template.yaml"))
    assert not matches, matches
    pattern = stack["Resources"]["AlarmEventsRule"]["Properties"]["EventPattern"]
    assert set(pattern["detail-type"]) == {"CloudWatch Alarm State Change", "CloudWatch Alarm Contributor State Change"}
    assert "ExtraAlarmNamePrefix" in json.dumps(pattern["resources"])
