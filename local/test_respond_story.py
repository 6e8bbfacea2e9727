"""End to end (issue 11): the responders' story with the REAL function binaries, both
backends, asserted. People act from Slack through slack-actions (signed Function URL
requests), the actions queue is worked as Lambda's SQS event source would, and the
escalation schedules in moto's EventBridge Scheduler are fired by the story.

Asserted, per backend: `/incident list` and `show` answer inline; a forged signature, a
stale timestamp, missing headers, a replay and an unauthorised user change nothing; an
unacknowledged critical incident escalates on schedule (unanswered reply, page, next
attempt), an acknowledged one does not; Acknowledge makes Alice the owner; Add note opens
the modal and the note reaches the incident; Re-run starts the runbook again (OpsCenter)
or says why not (Incident Manager); Resolve closes it with the post-incident summary in the
thread and on the incident; `/incident declare` opens a second incident; every answer to
Slack came within its 3 s.
"""
from __future__ import annotations

import json
import os

import pytest

import respond_story as rs
import story


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    out = tmp_path_factory.mktemp("respond")
    try:
        return story.run_stories(list(story.backends_under_test()), out, pace=float(os.environ.get("STORY_PACE", "0")),
                                 kind="respond")
    except story.PlaceholderBinary as e:
        pytest.skip(f"needs the function binaries: {e}")


@pytest.fixture(params=story.backends_under_test())
def s(request, stories) -> rs.RespondStory:
    return stories[request.param]


def answers(s, label: str) -> list[dict]:
    return [a for a in s.answers if a["label"] == label]


def test_story_had_no_problems(s):
    assert s.problems == []


def test_every_answer_to_slack_within_three_seconds(s):
    assert s.answers
    assert all(a["ms"] < 3000 for a in s.answers), [(a["label"], a["ms"]) for a in s.answers]


def test_list_and_show_answer_inline(s):
    first_list = answers(s, "/incident list")[0]
    assert first_list["status"] == 200
    body = json.loads(first_list["body"])
    assert body["response_type"] == "ephemeral"
    assert rs.KEY in json.dumps(body["blocks"])
    show = json.loads(answers(s, "/incident show vpn-0f1e")[0]["body"])
    assert rs.KEY in json.dumps(show)


@pytest.mark.parametrize("label", ["forged signature", "captured request 10 minutes old", "no Slack headers at all",
                                   "the same signed press again (replay)"])
def test_unverified_requests_get_401_and_a_fixed_body(s, label):
    [a] = answers(s, label)
    assert (a["status"], a["body"]) == (401, "invalid request")


def test_refused_button_presses_are_told_to_the_person_and_change_nothing(s):
    for label in ["a button slack-actions does not know", "a button press without its user"]:
        [a] = answers(s, label)
        # Acknowledged with an empty body; the answer went to the response URL.
        assert (a["status"], a["body"]) == (200, ""), a
    told = s.slack.ephemeral_to(rs.CAROL.id)
    assert len(told) == 2, told
    assert f"This button (`{rs.UNKNOWN_ACTION}`) is not one the incident app knows" in told[0]
    assert told[1] == "Sorry, that request could not be understood; nothing was changed."


def test_unauthorised_user_is_told_and_nothing_changes(s):
    [a] = answers(s, "Resolve (not allowed)")
    assert a["status"] == 200
    [told] = s.slack.ephemeral_to(rs.MALLORY.id)
    assert "You are not allowed to resolve incidents" in told
    # The forged declare never opened anything: only the real incident and Bob's.
    titles = [d.notification["title"] for d in s.deliveries if d.event == "opened" and d.notification]
    assert len(titles) == 2 and not any("Forged" in t for t in titles)


def test_unacknowledged_critical_incident_escalates_on_schedule(s):
    first = s.fired[0]
    assert first["input"] == {"escalation": {"incidentKey": rs.KEY, "attempt": 1}}
    assert first["ok"] and first["result"]["escalated"] is True
    unanswered = [d for d in s.deliveries if d.event == "unanswered"]
    assert len(unanswered) == 1 and unanswered[0].impact == "1"
    assert len(s.pages) == 1 and rs.KEY in s.pages[0]["subject"] + s.pages[0]["message"]


def test_acknowledged_incident_does_not_escalate(s):
    # Only attempt 1 ever fired: acknowledging deleted attempt 2's schedule, and a late
    # copy of it changes nothing.
    assert [f["input"]["escalation"]["attempt"] for f in s.fired] == [1]
    late = [i for i in s.functions["slack-actions"].invocations
            if isinstance(i.payload, dict) and i.payload.get("escalation", {}).get("attempt") == 2]
    assert [i.result["escalated"] for i in late] == [False]
    assert sum(d.event == "unanswered" for d in s.deliveries) == 1


def test_acknowledge_makes_alice_the_owner(s):
    record = s.final_record
    assert record["roles"]["owner"] == {"kind": "person", "id": rs.ALICE.id, "name": rs.ALICE.name}
    assert record["milestones"]["acknowledged_at"]
    acked = [d for d in s.deliveries if d.event == "acknowledged"]
    assert len(acked) == 1


def test_note_through_the_modal_reaches_the_incident(s):
    assert len(s.slack.views) == 1 and s.slack.views[0]["user"] == rs.ALICE.id
    notes = [d for d in s.deliveries if d.event == "note" and "firewall" in json.dumps(d.notification)]
    assert len(notes) == 1
    assert any("firewall" in e["text"] for e in s.final_record["timeline"])


def test_rerun_starts_the_runbook_again_or_says_why_not(s):
    if s.backend == "OpsCenter":
        starts = [r for r in s.runbook_runs if r["started_by"] == "StartAutomationExecution"]
        assert len(starts) == 2 and all(r["status"] == "Success" for r in starts)
    else:
        assert any("response plan" in t for t in s.slack.ephemeral_to(rs.BOB.id))


def test_resolve_by_a_person_closes_with_the_post_incident_summary(s):
    record = s.final_record
    assert record["status"] == "resolved"
    resolved = [d for d in s.deliveries if d.event == "resolved"]
    assert len(resolved) == 1
    summary = resolved[0].notification["post_incident"]
    assert summary["resolved_by"] == {"kind": "person", "id": rs.ALICE.id, "name": rs.ALICE.name}
    assert summary["time_to_acknowledge_seconds"] is not None
    headings = [i["heading"] for i in summary["retrospective"]]
    assert headings == ["What happened", "Impact", "What went well", "What to improve", "Follow-up actions"]
    assert "alice" in s.summary_text
    assert "What to improve" in s.incident_summary
    if s.backend == "OpsCenter":
        assert [i["Status"] for i in s.emulator.ops_items.values()].count("Resolved") == 1
    else:
        assert [r["status"] for r in s.emulator.incidents.values()].count("RESOLVED") == 1


def test_declare_opens_a_second_incident_with_bob_as_reporter(s):
    declared = [d for d in s.deliveries if d.event == "opened" and d.notification
                and d.notification["incident_key"].startswith("Declared: ")]
    assert len(declared) == 1
    n = declared[0].notification
    assert n["impact"] == 2 and n["roles"]["reporter"]["id"] == rs.BOB.id


def test_no_signing_secret_token_or_response_url_in_any_log_line(s):
    lines = []
    for p in sorted((s.out_dir / "logs").glob("*.log")):
        lines.extend((p.name, ln) for ln in p.read_text(errors="replace").splitlines())
    assert any(f == "slack-actions.log" for f, _ in lines)
    needles = {"signing secret": rs.SIGNING_SECRET, "bot token": s.slack.token}
    for path in s.slack.response_urls:
        needles[f"response_url {path[:20]}"] = path.rsplit("/", 1)[1]
    leaks = [f"{f}: {what}: {ln[:160]}" for what, value in needles.items() for f, ln in lines if value in ln]
    assert leaks == []


def test_incident_card_offers_the_action_buttons(s):
    assert {"Acknowledge", "Add note", "Re-run diagnosis", "Resolve"} <= set(s.card_buttons), s.card_buttons
