"""The local Slack: answers like Slack, records, renders. No Rust function needed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from slack_sink import Forwarder, SlackSink, block_errors, readable


@pytest.fixture()
def sink():
    s = SlackSink(forward_env={}).start()
    yield s
    s.stop()


def call(sink: SlackSink, method: str, body: dict, token: str | None = "xoxb-local-demo-token",
         form: bool = False):
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if form:
        from urllib.parse import urlencode
        data = urlencode({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in body.items()}).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json; charset=utf-8"
    req = urllib.request.Request(sink.api_url + method, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def header_block(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def test_post_reply_update_answers_like_slack(sink):
    status, _, top = call(sink, "chat.postMessage", {"channel": "#ops", "text": "VPN down",
                                                       "blocks": [header_block("🔴 OPEN VPN down")]})
    assert status == 200 and top["ok"] is True and top["channel"] == "C0LOCALOPS"
    assert isinstance(top["ts"], str) and "." in top["ts"]
    _, _, reply = call(sink, "chat.postMessage", {"channel": "C0LOCALOPS", "text": "diagnosis",
                                                   "thread_ts": top["ts"]})
    assert reply["message"]["thread_ts"] == top["ts"]
    _, _, upd = call(sink, "chat.update", {"channel": "C0LOCALOPS", "ts": top["ts"], "text": "RESOLVED",
                                           "blocks": [header_block("✅ RESOLVED VPN down (34m 00s)")]})
    assert upd["ok"] is True and upd["ts"] == top["ts"]
    [msg] = sink.top_level()
    assert msg["text"] == "RESOLVED" and len(msg["edits"]) == 1 and msg["edits"][0]["text"] == "VPN down"
    assert [r["text"] for r in sink.replies(top["ts"])] == ["diagnosis"]
    assert [e["kind"] for e in sink.events] == ["post", "post", "update"]


def test_form_encoded_post_with_token_field(sink):
    status, _, out = call(sink, "chat.postMessage", {"channel": "ops", "text": "hi", "token": "xoxb-local-demo-token",
                                                     "blocks": [header_block("hi")]}, token=None, form=True)
    assert out["ok"] is True
    assert sink.messages[0]["blocks"][0]["type"] == "header"


@pytest.mark.parametrize("body, token, error", [
    ({"channel": "ops", "text": "x"}, None, "not_authed"),
    ({"channel": "ops", "text": "x"}, "xoxb-wrong", "invalid_auth"),
    ({"channel": "#nope", "text": "x"}, "xoxb-local-demo-token", "channel_not_found"),
    ({"channel": "ops"}, "xoxb-local-demo-token", "no_text"),
    ({"channel": "ops", "text": "x", "thread_ts": "1.000001"}, "xoxb-local-demo-token", "thread_not_found"),
    ({"channel": "ops", "text": "x", "blocks": [header_block("h" * 151)]}, "xoxb-local-demo-token",
     "invalid_blocks"),
])
def test_post_errors(sink, body, token, error):
    status, _, out = call(sink, "chat.postMessage", body, token=token)
    assert status == 200 and out == {"ok": False, "error": error, **({"errors": out["errors"]}
                                                                       if "errors" in out else {})}
    assert sink.messages == []


def test_update_limits_and_unknown_message(sink):
    _, _, top = call(sink, "chat.postMessage", {"channel": "ops", "text": "x"})
    assert call(sink, "chat.update", {"channel": "ops", "ts": top["ts"], "text": "y" * 4001})[2]["error"] == \
        "msg_too_long"
    assert call(sink, "chat.update", {"channel": "ops", "ts": "9.9", "text": "y"})[2]["error"] == "message_not_found"


def test_rate_limit_fault_has_retry_after(sink):
    sink.inject(status=429, error="ratelimited", retry_after=2)
    status, headers, out = call(sink, "chat.postMessage", {"channel": "ops", "text": "x"})
    assert status == 429 and headers["Retry-After"] == "2" and out["error"] == "ratelimited"
    assert call(sink, "chat.postMessage", {"channel": "ops", "text": "x"})[2]["ok"] is True
    assert len(sink.messages) == 1


def test_webhook_posts_to_its_channel_and_answers_ok(sink):
    url = sink.webhook_url("oncall")
    req = urllib.request.Request(url, data=json.dumps({"text": "critical"}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"ok"
    assert sink.messages[0]["channel_name"] == "oncall" and sink.messages[0]["via"] == "webhook"
    bad = urllib.request.Request(sink.url + "/services/T0/B0/nope", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=5)
    assert e.value.code == 404 and e.value.read() == b"no_service"


def test_block_limits():
    assert block_errors([{"type": "divider"}] * 51) == ["51 blocks (max 50)"]
    assert block_errors([{"type": "section", "text": {"type": "mrkdwn", "text": "x"}, "block_id": "a"},
                         {"type": "divider", "block_id": "a"}]) == ["block 1 block_id 'a' is not unique"]
    assert block_errors([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}]) == \
        ["block 0 has 11 fields (max 10)"]
    assert block_errors([{"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "b" * 76}, "action_id": "x"}]}]) == \
        ["block 0 button 0 text is 76 chars (max 75)"]


def test_render_indents_threads_and_shows_edits(sink):
    _, _, top = call(sink, "chat.postMessage", {"channel": "ops", "text": "fallback", "blocks": [
        header_block("🔴 OPEN [Impact 3] VPN connection vpn-0f1e2d3c4b5a69788 is DOWN"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Tunnel:* 203.0.113.10"}]}]})
    call(sink, "chat.postMessage", {"channel": "ops", "text": "🔎 Diagnosis: pre-shared key mismatch",
                                    "thread_ts": top["ts"]})
    # Slack keeps the previous blocks when chat.update sends only text.
    call(sink, "chat.update", {"channel": "ops", "ts": top["ts"], "text": "resolved"})
    assert sink.messages[0]["blocks"][0]["type"] == "header"
    call(sink, "chat.update", {"channel": "ops", "ts": top["ts"], "text": "resolved",
                               "blocks": [header_block("✅ RESOLVED after 34m 00s")]})
    text = sink.render()
    lines = text.splitlines()
    assert lines[0] == "#ops"
    assert "(edited 2x" in lines[1]
    assert "    == ✅ RESOLVED after 34m 00s ==" in lines
    assert "~ first posted as: == 🔴 OPEN [Impact 3]" in text
    reply = next(ln for ln in lines if "↳" in ln)
    assert reply.startswith("      ↳ ")
    assert "        🔎 Diagnosis: pre-shared key mismatch" in lines


def test_forwarding_is_off_without_env_and_refuses_non_slack_webhook():
    assert Forwarder.from_env({}) is None
    assert Forwarder.from_env({"SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x"}) is None
    assert Forwarder.from_env({"SLACK_BOT_TOKEN": "xoxb-1"}) is None  # a token needs a channel


def test_readable_turns_mrkdwn_sequences_into_text():
    assert readable("<!here> VPN &lt;down&gt; &amp; <https://x.invalid/a|the alarm> at "
                    "<!date^1795600004^{date_short_pretty} {time}|2026-11-25 09:46 UTC> for <!subteam^S01|@net> "
                    "in <#C0LOCALOPS|ops> by <@U123>") == \
        "@here VPN <down> & the alarm at 2026-11-25 09:46 UTC for @net in #ops by @U123"


def test_forwarder_mirrors_threads_and_edits_to_another_slack(sink):
    # The second sink plays the operator's real Slack (the URLs are loopback here, so the
    # forwarder is built directly rather than from the environment, which only takes slack.com).
    real = SlackSink(forward_env={}).start()
    try:
        hook = real.webhook_url("oncall")
        sink.forwarder = Forwarder(hook, real.token, "#ops", api_url=real.api_url)
        _, _, top = call(sink, "chat.postMessage", {"channel": "ops", "text": "opened"})
        call(sink, "chat.postMessage", {"channel": "ops", "text": "diagnosed", "thread_ts": top["ts"]})
        call(sink, "chat.update", {"channel": "ops", "ts": top["ts"], "text": "resolved"})
        sink.forwarder.close()
        assert sink.forwarder.sent == 3 and sink.forwarder.failed == 0
        [remote_top] = real.top_level("ops")
        assert remote_top["text"] == "resolved" and len(remote_top["edits"]) == 1
        assert [r["text"] for r in real.replies(remote_top["ts"])] == ["diagnosed"]
        # The webhook copy gets the posts (a webhook cannot edit).
        assert [m["text"] for m in real.top_level("oncall")] == ["opened", "diagnosed"]
    finally:
        sink.forwarder = None
        real.stop()
