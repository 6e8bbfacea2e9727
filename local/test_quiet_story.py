"""End to end (issue 15): the quiet story with the REAL function binaries, OpsCenter.

Asserted: a maintenance window (alarm mute rule) mutes the both-tunnels alarm: its
EventBridge events carry muteDetail, alarm-to-incident records and notes them and pages
no one (no Slack post or edit during the window); the OK of the tunnel-down alarm inside
the window is never delivered, and the scheduled reconciliation sweep resolves the
incident with a note saying it found the OK; a silence set from Slack holds back an
ALARM (delivered twice: one transition), `/incident silences` shows it, and when the
silence is lifted while the alarm still fires, the timer runs the sweep and the incident
opens then.
"""
from __future__ import annotations

import json
import os

import pytest

import quiet_story as qs
import story


@pytest.fixture(scope="module")
def s(tmp_path_factory) -> qs.QuietStory:
    out = tmp_path_factory.mktemp("quiet")
    try:
        stories = story.run_stories(["OpsCenter"], out, pace=float(os.environ.get("STORY_PACE", "0")), kind="quiet")
    except story.PlaceholderBinary as e:
        pytest.skip(f"needs the function binaries: {e}")
    return stories["OpsCenter"]


def actions(s) -> list[str]:
    return [d["action"] for d in s.held]


def test_story_had_no_problems(s):
    assert s.problems == []


def test_muted_events_are_recorded_noted_and_page_no_one(s):
    assert actions(s)[:4] == ["open", "ignore_duplicate", "held_muted", "record"]
    assert s.marks["window_end_posts"] == s.marks["window"], "Slack unchanged during the window"
    item = next(iter(s.emulator.ops_items.values()))
    notes = [json.loads(v["Value"]) for k, v in item["OperationalData"].items() if k.startswith("note ")]
    muted = [n for n in notes if qs.MUTE_RULE in json.dumps(n)]
    assert muted, notes
    # The timer at the window's end was set in the hold group.
    calls = [c for c in s.emulator.calls if c["op"] == "DescribeAlarms"]
    assert calls and all(len(c["request"]["AlarmNames"]) <= 100 for c in calls)


def test_the_sweep_resolves_the_incident_whose_ok_was_missed_and_says_so(s):
    [first] = [x for x in s.sweeps if x["reason"] == "scheduled"]
    assert first["result"]["changed"][story.ANY_TUNNEL_ALARM] == "applied:resolve"
    resolved = [d for d in s.deliveries if d.event == "resolved"]
    assert len(resolved) == 1
    assert "Found by the reconciliation sweep" in resolved[0].notification["summary"]
    replies = [p for p in resolved[0].slack_posts if p["thread_ts"]]
    assert replies, "the resolution is told in the thread"
    first_item = next(iter(s.emulator.ops_items.values()))  # in the order they were created
    assert first_item["Status"] == "Resolved"


def test_a_silence_holds_an_alarm_back_and_the_incident_opens_when_it_is_lifted(s):
    assert actions(s)[4:6] == ["held_silenced", "ignore_duplicate"]
    assert s.marks["silence_end_posts"] == s.marks["silence"], "nothing posted while silenced"
    silences = [a for a in s.answers if a["label"] == "/incident silences"]
    assert silences and "Held back: 1" in silences[0]["body"]
    refused = [a for a in s.answers if "not allowed" in a["label"]]
    assert "not allowed to silence alarms" in refused[0]["body"]
    [lifted] = [f for f in s.fired if f["name"].startswith("silence-lifted-")]
    assert lifted["target"] == qs.ALARM_TO_INCIDENT and lifted["ok"]
    assert lifted["result"]["changed"][story.ANY_TUNNEL_ALARM] == "released:open"
    opened = [d for d in s.deliveries if d.event == "opened"]
    assert len(opened) == 2, "the second incident opened when the silence ended"
    assert "held back by silence" in opened[1].notification["summary"]
    assert len(s.emulator.ops_items) == 2
    book = s.final_book
    assert book["silences"][0]["held_count"] == 1 and book["silences"][0]["lifted"]["by"]["id"] == "U0ALICE"
