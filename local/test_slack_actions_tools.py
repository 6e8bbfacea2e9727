"""The local Slack's interactivity (views.open, usergroups.users.list, response URLs) and
the request signing the story uses, checked against Slack's documented example."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

import slack_actions as sa
from slack_sink import SlackSink

# "Verifying requests from Slack": the documented signing secret, timestamp and body.
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TS = 1531420618
DOC_BODY = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")


def test_sign_matches_slacks_documented_example():
    assert sa.sign(DOC_SECRET, DOC_TS, DOC_BODY) == \
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_url_event_is_a_function_url_request_with_slack_headers():
    ev = sa.url_event(b"a=b", 1, "v0=x", base64_body=True)
    assert ev["version"] == "2.0" and ev["isBase64Encoded"] is True and ev["body"] == "YT1i"
    assert ev["headers"]["x-slack-request-timestamp"] == "1" and ev["headers"]["x-slack-signature"] == "v0=x"
    assert ev["requestContext"]["http"]["method"] == "POST"


@pytest.fixture
def sink():
    s = SlackSink().start()
    yield s
    s.stop()


def call(sink, method: str, body: dict | None = None, query: str = "") -> dict:
    req = urllib.request.Request(f"{sink.url}/api/{method}{query}", data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {sink.token}",
                                          "Content-Type": "application/json; charset=utf-8"},
                                 method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_views_open_takes_a_fresh_trigger_once(sink):
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Add a note"}, "blocks": []}
    tid = sink.trigger_id("U1")
    assert call(sink, "views.open", {"trigger_id": tid, "view": view})["ok"] is True
    assert call(sink, "views.open", {"trigger_id": tid, "view": view})["error"] == "expired_trigger_id"
    assert call(sink, "views.open", {"trigger_id": "nope", "view": view})["error"] == "invalid_trigger_id"
    old = sink.trigger_id("U1")
    sink.triggers[old]["issued"] = time.time() - 4
    assert call(sink, "views.open", {"trigger_id": old, "view": view})["error"] == "expired_trigger_id"
    assert [v["user"] for v in sink.views] == ["U1"]


def test_usergroups_users_list(sink):
    sink.usergroups = {"S0ONCALL": ["U1", "U2"]}
    assert call(sink, "usergroups.users.list", query="?usergroup=S0ONCALL")["users"] == ["U1", "U2"]
    assert call(sink, "usergroups.users.list", query="?usergroup=S0NONE")["error"] == "no_such_subteam"


def test_response_url_records_ephemeral_replies_for_its_user(sink):
    url = sink.response_url("U1")
    req = urllib.request.Request(url, data=json.dumps({"response_type": "ephemeral", "text": "On it"}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.loads(r.read()) == {"ok": True}
    assert sink.ephemeral_to("U1") == ["On it"]
    assert sink.messages == []
