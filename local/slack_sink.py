#!/usr/bin/env python3
"""A local Slack on 127.0.0.1 (dev-only): the parts of the Slack Web API and incoming
webhooks that notify-fanout uses (DESIGN.md section 6), so a person sees what the
channel would show, and tests can assert it.

- Incoming webhooks: `POST /services/T../B../<secret>` answers `ok` (text/plain), one
  channel per URL, no threads (as Slack).
- `POST /api/chat.postMessage` and `/api/chat.update`: Bearer token (or `token` form
  field) checked, JSON or form bodies, answers like Slack (`ok`, `channel`, `ts`,
  `message` with `thread_ts`), errors as HTTP 200 `{"ok": false, "error": ...}`
  (`not_authed`, `invalid_auth`, `channel_not_found`, `no_text`, `thread_not_found`,
  `message_not_found`, `msg_too_long`, `invalid_blocks`).
- Block Kit limits are enforced (50 blocks, header 150, section text 3000, 10 fields of
  2000, context 10 elements, actions 25 elements, button text 75, action_id/block_id
  255, url 3000, value 2000, unique block_id).
- Interactivity (slack-actions): `POST /api/views.open` (a `trigger_id` from
  `sink.trigger_id()`, valid 3 s and once, as Slack's; the modal's blocks checked),
  `GET|POST /api/usergroups.users.list?usergroup=S..` (members from
  `sink.usergroups`), and `response_url`s (`sink.response_url(user)` makes one; a
  POST there is recorded as an ephemeral reply to that user, or replaces/adds to the
  channel with `response_type: in_channel`).
- Faults for tests: `sink.inject(status=429, retry_after=1)` answers the next call(s)
  with that status (and `Retry-After`), or `sink.inject(error="invalid_auth")`.

Every message and edit is recorded (`sink.messages`, `sink.events`) and
`sink.render()` prints the conversation with threads indented and edits shown.

Optional forwarding (the operator's own Slack): with `SLACK_WEBHOOK_URL`, or
`SLACK_BOT_TOKEN` and `SLACK_CHANNEL`, in the environment, each recorded post and
edit is also sent there from a background thread, threads and edits mapped to the
real message ts. Credentials are never printed; failures are reported by count only.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from httpserve import Handler, Server  # noqa: E402

DEFAULT_TOKEN = "xoxb-local-demo-token"
TEXT_UPDATE_MAX = 4000       # chat.update answers msg_too_long above this (DESIGN.md section 6)
TEXT_POST_MAX = 40000        # Slack truncates chat.postMessage text beyond this; refuse instead


class SlackError(Exception):
    def __init__(self, error: str, detail: list[str] | None = None):
        super().__init__(error)
        self.error, self.detail = error, detail or []


def block_errors(blocks: Any) -> list[str]:
    """Block Kit limits a real workspace enforces (invalid_blocks)."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errs: list[str] = []
    if len(blocks) > 50:
        errs.append(f"{len(blocks)} blocks (max 50)")
    ids: set[str] = set()

    def text_of(obj: Any) -> str:
        return obj.get("text", "") if isinstance(obj, dict) else ""

    def check_len(what: str, value: Any, limit: int) -> None:
        if isinstance(value, str) and len(value) > limit:
            errs.append(f"{what} is {len(value)} chars (max {limit})")

    for i, b in enumerate(blocks):
        if not isinstance(b, dict) or "type" not in b:
            errs.append(f"block {i} has no type")
            continue
        bid = b.get("block_id")
        if bid is not None:
            check_len(f"block {i} block_id", bid, 255)
            if bid in ids:
                errs.append(f"block {i} block_id {bid!r} is not unique")
            ids.add(bid)
        t = b["type"]
        if t == "header":
            if text_of(b.get("text")) == "":
                errs.append(f"block {i} header has no text")
            check_len(f"block {i} header text", text_of(b.get("text")), 150)
        elif t == "section":
            fields = b.get("fields", [])
            if not text_of(b.get("text")) and not fields:
                errs.append(f"block {i} section needs text or fields")
            check_len(f"block {i} section text", text_of(b.get("text")), 3000)
            if len(fields) > 10:
                errs.append(f"block {i} has {len(fields)} fields (max 10)")
            for j, f in enumerate(fields):
                check_len(f"block {i} field {j}", text_of(f), 2000)
        elif t == "context":
            if len(b.get("elements", [])) > 10:
                errs.append(f"block {i} context has {len(b['elements'])} elements (max 10)")
        elif t == "actions":
            elements = b.get("elements", [])
            if len(elements) > 25:
                errs.append(f"block {i} actions has {len(elements)} elements (max 25)")
            action_ids: set[str] = set()
            for j, e in enumerate(elements):
                check_len(f"block {i} button {j} text", text_of(e.get("text")), 75)
                check_len(f"block {i} button {j} url", e.get("url"), 3000)
                check_len(f"block {i} button {j} value", e.get("value"), 2000)
                aid = e.get("action_id")
                check_len(f"block {i} button {j} action_id", aid, 255)
                if aid is not None and aid in action_ids:
                    errs.append(f"block {i} action_id {aid!r} is not unique")
                action_ids.add(aid)
        elif t not in ("divider", "image", "rich_text", "input", "file", "video"):
            errs.append(f"block {i} has unknown type {t!r}")
    return errs


_SLACK_SEQ = re.compile(r"<([^<>]+)>")


def readable(text: str) -> str:
    """Slack mrkdwn as a person reads it: `<!date^..|fallback>` -> fallback, `<url|label>` -> label,
    `<!here>` -> @here, `<@U1>` -> @U1, `<#C1|name>` -> #name, and the &amp; &lt; &gt; escapes undone."""
    def seq(m: re.Match) -> str:
        inner = m.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("!date^"):
            return label or target
        if target.startswith("!subteam^"):
            return label or "@" + target[len("!subteam^"):]
        if target.startswith("!"):
            return "@" + target[1:]
        if target.startswith("@"):
            return label or target
        if target.startswith("#"):
            return "#" + (label or target[1:])
        return label or target
    return _SLACK_SEQ.sub(seq, text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def plain(blocks: list[dict] | None, fallback: str) -> list[str]:
    """The lines a person reads in Slack for these blocks (or the text fallback)."""
    if not blocks:
        return fallback.splitlines() or [""]
    lines: list[str] = []
    for b in blocks:
        t = b.get("type")
        if t == "header":
            lines.append(f"== {b.get('text', {}).get('text', '')} ==")
        elif t == "section":
            if b.get("text"):
                lines.extend(b["text"].get("text", "").splitlines())
            for f in b.get("fields", []):
                lines.append("  " + f.get("text", "").replace("\n", " "))
        elif t == "context":
            lines.append("  " + " | ".join(e.get("text", e.get("alt_text", "")) for e in b.get("elements", [])))
        elif t == "actions":
            lines.append("  " + "  ".join(f"[{e.get('text', {}).get('text', '')}]" for e in b.get("elements", [])))
        elif t == "divider":
            lines.append("  ----")
    return lines


class SlackSink:
    def __init__(self, token: str = DEFAULT_TOKEN, channels: dict[str, str] | None = None,
                 forward_env: dict[str, str] | None = None, verbose: bool = False):
        self.token = token
        # id -> name; a name (with or without #) also resolves to its id.
        self.channels = channels or {"C0LOCALOPS": "ops", "C0LOCALONCALL": "oncall"}
        self.webhooks: dict[str, str] = {}
        self.messages: list[dict] = []
        self.events: list[dict] = []
        self.faults: list[dict] = []
        # Interactivity: user groups (id -> member user ids), issued triggers, opened
        # modals, response URLs (path -> user and channel) and what was posted to them.
        self.usergroups: dict[str, list[str]] = {}
        self.triggers: dict[str, dict] = {}
        self.views: list[dict] = []
        self.response_urls: dict[str, dict] = {}
        self.responses: list[dict] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._seq = 0
        self.server: Server | None = None
        self.verbose = verbose
        self.forwarder = Forwarder.from_env(forward_env if forward_env is not None else dict(os.environ))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "SlackSink":
        self.server = Server(self._app, verbose=self.verbose).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None
        if self.forwarder:
            self.forwarder.close()

    @property
    def url(self) -> str:
        if not self.server:
            raise RuntimeError("slack sink not started")
        return self.server.url

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def webhook_url(self, channel: str = "ops") -> str:
        """A new incoming-webhook URL that posts to `channel`."""
        path = f"/services/T0LOCAL/B{secrets.token_hex(4).upper()}/{secrets.token_hex(12)}"
        with self.lock:
            self.webhooks[path] = self._channel_id(channel)
        return self.url + path

    def trigger_id(self, user: str) -> str:
        """A new `trigger_id` for `user`, as Slack sends with a button click (valid 3 s, once)."""
        with self.lock:
            self._seq += 1
            tid = f"{self._seq}.{int(time.time())}.{secrets.token_hex(8)}"
            self.triggers[tid] = {"user": user, "issued": time.time(), "used": False}
            return tid

    def response_url(self, user: str, channel: str = "ops") -> str:
        """A new `response_url` for an interaction of `user` in `channel` (valid 30 minutes)."""
        path = f"/actions/T0LOCAL/{secrets.randbelow(10**12)}/{secrets.token_hex(12)}"
        with self.lock:
            self.response_urls[path] = {"user": user, "channel": self._channel_id(channel), "issued": time.time()}
        return self.url + path

    def ephemeral_to(self, user: str) -> list[str]:
        """The texts posted to `user` through response URLs, in order."""
        with self.lock:
            return [r["text"] for r in self.responses if r["user"] == user]

    def inject(self, status: int = 200, error: str | None = None, retry_after: int | None = None,
               times: int = 1, method: str | None = None) -> None:
        """The next `times` calls (of `method`, or any) answer with this status/error."""
        with self.lock:
            self.faults.append({"status": status, "error": error, "retry_after": retry_after,
                                "times": times, "method": method})

    # ------------------------------------------------------------ HTTP

    def _app(self, h: Handler) -> None:
        url = urlsplit(h.path)
        path = url.path
        with self.lock:
            method = path.rsplit("/", 1)[-1] if path.startswith("/api/") else "webhook"
            fault = self._take_fault(method)
            if fault:
                self.events.append({"kind": "fault", "at": time.time(), "method": method,
                                    "status": fault["status"], "error": fault["error"]})
                headers = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
                if method == "webhook" and fault["status"] != 200:
                    return h.send(fault["status"], fault["error"] or "error", "text/plain", headers)
                return h.send_json(fault["status"], {"ok": False, "error": fault["error"] or "ratelimited"}, headers)
            if path.startswith("/services/"):
                return self._webhook(h, path)
            if path.startswith("/actions/"):
                return self._response_url(h, path)
            if path == "/api/views.open":
                return self._api(h, url.query, self._views_open)
            if path == "/api/usergroups.users.list":
                return self._api(h, url.query, self._usergroup_users)
            if path == "/api/chat.postMessage":
                return self._api(h, url.query, self._post_message)
            if path == "/api/chat.update":
                return self._api(h, url.query, self._update)
            if path == "/api/auth.test":
                return self._api(h, url.query, lambda p: {"url": "https://local-demo.slack.invalid/",
                                                          "team": "local", "user": "incident-bot"})
            if path == "/_messages":
                return h.send_json(200, {"messages": self.messages, "events": self.events})
            if path == "/_render":
                return h.send(200, self.render(), "text/plain; charset=utf-8")
            h.send_json(404, {"ok": False, "error": "unknown_method"})

    def _take_fault(self, method: str) -> dict | None:
        for f in self.faults:
            if f["times"] > 0 and f["method"] in (None, method):
                f["times"] -= 1
                return f
        return None

    def _params(self, h: Handler, query: str) -> dict:
        ctype = h.headers.get("Content-Type", "")
        if "json" in ctype:
            try:
                params = json.loads(h.body or b"{}")
            except ValueError:
                raise SlackError("invalid_json") from None
            if not isinstance(params, dict):
                raise SlackError("invalid_json")
        else:
            params = {k: v[0] for k, v in parse_qs(h.body.decode("utf-8", "replace")).items()}
            if isinstance(params.get("blocks"), str):
                try:
                    params["blocks"] = json.loads(params["blocks"])
                except ValueError:
                    raise SlackError("invalid_blocks_format") from None
        for k, v in parse_qs(query).items():
            params.setdefault(k, v[0])
        return params

    def _api(self, h: Handler, query: str, fn) -> None:
        try:
            params = self._params(h, query)
            auth = h.headers.get("Authorization", "")
            token = auth[7:].strip() if auth.startswith("Bearer ") else params.get("token")
            if not token:
                raise SlackError("not_authed")
            if token != self.token:
                raise SlackError("invalid_auth")
            h.send_json(200, {"ok": True, **fn(params)}, content_type="application/json; charset=utf-8")
        except SlackError as e:
            self.events.append({"kind": "error", "at": time.time(), "error": e.error, "detail": e.detail})
            h.send_json(200, {"ok": False, "error": e.error, **({"errors": e.detail} if e.detail else {})},
                        content_type="application/json; charset=utf-8")

    def _webhook(self, h: Handler, path: str) -> None:
        channel = self.webhooks.get(path)
        if channel is None:
            return h.send(404, "no_service", "text/plain")
        try:
            params = json.loads(h.body or b"{}")
        except ValueError:
            return h.send(400, "invalid_payload", "text/plain")
        if not isinstance(params, dict):
            return h.send(400, "invalid_payload", "text/plain")
        if not params.get("text") and not params.get("blocks"):
            return h.send(400, "no_text", "text/plain")
        if params.get("blocks") is not None and block_errors(params["blocks"]):
            return h.send(400, "invalid_blocks", "text/plain")
        self._record(channel, params, via="webhook")
        h.send(200, "ok", "text/plain")

    # ------------------------------------------------------------ methods

    def _channel_id(self, ref: str) -> str:
        ref = (ref or "").lstrip("#")
        if ref in self.channels:
            return ref
        for cid, name in self.channels.items():
            if name == ref:
                return cid
        raise SlackError("channel_not_found")

    def _check_content(self, params: dict, max_text: int) -> None:
        text, blocks = params.get("text"), params.get("blocks")
        if not text and not blocks:
            raise SlackError("no_text")
        if isinstance(text, str) and len(text) > max_text:
            raise SlackError("msg_too_long")
        if blocks is not None:
            errs = block_errors(blocks)
            if errs:
                raise SlackError("invalid_blocks", errs)

    def _next_ts(self) -> str:
        self._seq += 1
        return f"{int(time.time())}.{self._seq:06d}"

    def _record(self, channel: str, params: dict, via: str) -> dict:
        thread_ts = params.get("thread_ts") or None
        msg = {"ts": self._next_ts(), "channel": channel, "channel_name": self.channels.get(channel, channel),
               "via": via, "text": params.get("text", ""), "blocks": params.get("blocks"),
               "thread_ts": str(thread_ts) if thread_ts else None, "posted_at": time.time(), "edits": []}
        self.messages.append(msg)
        self.events.append({"kind": "post", "at": msg["posted_at"], "ts": msg["ts"], "channel": channel,
                            "thread_ts": msg["thread_ts"], "via": via})
        self.changed.notify_all()
        if self.forwarder:
            self.forwarder.submit("post", msg)
        return msg

    def _find(self, channel: str, ts: str) -> dict | None:
        for m in self.messages:
            if m["channel"] == channel and m["ts"] == ts:
                return m
        return None

    def _post_message(self, p: dict) -> dict:
        channel = self._channel_id(p.get("channel", ""))
        self._check_content(p, TEXT_POST_MAX)
        thread_ts = p.get("thread_ts")
        if thread_ts:
            parent = self._find(channel, str(thread_ts))
            if parent is None:
                raise SlackError("thread_not_found")
            if parent["thread_ts"]:  # replying to a reply lands in the same thread, as in Slack
                p = {**p, "thread_ts": parent["thread_ts"]}
        msg = self._record(channel, p, via="bot")
        out = {"type": "message", "text": msg["text"], "ts": msg["ts"], "bot_id": "B0LOCALBOT"}
        if msg["blocks"] is not None:
            out["blocks"] = msg["blocks"]
        if msg["thread_ts"]:
            out["thread_ts"] = msg["thread_ts"]
        return {"channel": channel, "ts": msg["ts"], "message": out}

    def _update(self, p: dict) -> dict:
        channel = self._channel_id(p.get("channel", ""))
        msg = self._find(channel, str(p.get("ts", "")))
        if msg is None:
            raise SlackError("message_not_found")
        if msg["via"] != "bot":
            raise SlackError("cant_update_message")
        self._check_content(p, TEXT_UPDATE_MAX)
        msg["edits"].append({"at": time.time(), "text": msg["text"], "blocks": msg["blocks"]})
        msg["text"] = p.get("text", "")
        if "blocks" in p:
            msg["blocks"] = p["blocks"]
        self.events.append({"kind": "update", "at": time.time(), "ts": msg["ts"], "channel": channel})
        self.changed.notify_all()
        if self.forwarder:
            self.forwarder.submit("update", msg)
        return {"channel": channel, "ts": msg["ts"], "text": msg["text"],
                "message": {"type": "message", "text": msg["text"], "ts": msg["ts"],
                            **({"blocks": msg["blocks"]} if msg["blocks"] is not None else {})}}

    def _views_open(self, p: dict) -> dict:
        trigger = self.triggers.get(str(p.get("trigger_id", "")))
        if trigger is None:
            raise SlackError("invalid_trigger_id")
        if trigger["used"] or time.time() - trigger["issued"] > 3.0:
            raise SlackError("expired_trigger_id")
        view = p.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                raise SlackError("invalid_arguments") from None
        if not isinstance(view, dict) or view.get("type") != "modal" or not view.get("title"):
            raise SlackError("invalid_arguments", ["view must be a modal with a title"])
        errs = block_errors(view.get("blocks", []))
        if errs:
            raise SlackError("invalid_arguments", errs)
        trigger["used"] = True
        vid = f"V{secrets.token_hex(5).upper()}"
        self.views.append({"id": vid, "user": trigger["user"], "view": view, "at": time.time()})
        self.events.append({"kind": "view", "at": time.time(), "user": trigger["user"], "id": vid})
        self.changed.notify_all()
        return {"view": {"id": vid, **view}}

    def _usergroup_users(self, p: dict) -> dict:
        group = str(p.get("usergroup", ""))
        if group not in self.usergroups:
            raise SlackError("no_such_subteam")
        self.events.append({"kind": "usergroup", "at": time.time(), "usergroup": group})
        return {"users": list(self.usergroups[group])}

    def _response_url(self, h: Handler, path: str) -> None:
        target = self.response_urls.get(path)
        if target is None:
            return h.send(404, "no_service", "text/plain")
        if time.time() - target["issued"] > 1800:
            return h.send_json(404, {"ok": False, "error": "expired_url"})
        try:
            params = json.loads(h.body or b"{}")
        except ValueError:
            return h.send_json(400, {"ok": False, "error": "invalid_payload"})
        if not isinstance(params, dict) or (not params.get("text") and not params.get("blocks")):
            return h.send_json(400, {"ok": False, "error": "no_text"})
        if params.get("blocks") is not None and block_errors(params["blocks"]):
            return h.send_json(400, {"ok": False, "error": "invalid_blocks"})
        if params.get("response_type") == "in_channel":
            self._record(target["channel"], params, via="bot")
        else:
            reply = {"user": target["user"], "channel": target["channel"], "text": params.get("text", ""),
                     "blocks": params.get("blocks"), "at": time.time()}
            self.responses.append(reply)
            self.events.append({"kind": "ephemeral", "at": reply["at"], "user": target["user"],
                                "channel": target["channel"]})
            self.changed.notify_all()
        h.send_json(200, {"ok": True})

    # ------------------------------------------------------------ reading it back

    def top_level(self, channel: str | None = None) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if not m["thread_ts"] and channel in (None, m["channel"],
                                                                                  m["channel_name"])]

    def replies(self, ts: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if m["thread_ts"] == ts]

    def wait_for(self, predicate, timeout: float):
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                v = predicate()
                if v or time.monotonic() >= deadline:
                    return v
                self.changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    def render(self, width: int = 100, channel: str | None = None) -> str:
        """The channels (or one, by id or name) as a person would read them: threads
        indented, edits shown."""
        with self.lock:
            out: list[str] = []
            for cid in sorted({m["channel"] for m in self.messages}):
                if channel is not None and channel not in (cid, self.channels.get(cid)):
                    continue
                out.append(f"#{self.channels.get(cid, cid)}")
                for m in [m for m in self.messages if m["channel"] == cid and not m["thread_ts"]]:
                    out.extend(self._render_one(m, "  ", width))
                    for r in self.replies(m["ts"]):
                        out.extend(self._render_one(r, "      ", width, reply=True))
                out.append("")
            return "\n".join(out).rstrip() + "\n"

    def _render_one(self, m: dict, indent: str, width: int, reply: bool = False) -> list[str]:
        clock = time.strftime("%H:%M:%S", time.gmtime(m["posted_at"]))
        who = "incoming-webhook" if m["via"] == "webhook" else "incident-bot"
        edited = ""
        if m["edits"]:
            last = time.strftime("%H:%M:%S", time.gmtime(m["edits"][-1]["at"]))
            edited = f"  (edited {len(m['edits'])}x, last {last})"
        lines = [f"{indent}{'↳ ' if reply else ''}[{clock}] {who}{edited}"]
        for ln in plain(m["blocks"], readable(m["text"]) if not m["blocks"] else m["text"]):
            ln = readable(ln)
            for wrapped in textwrap.wrap(ln, width - len(indent) - 2, subsequent_indent="  ") or [""]:
                lines.append(f"{indent}  {wrapped}")
        if m["edits"]:
            first = readable(plain(m["edits"][0]["blocks"], m["edits"][0]["text"])[0])
            lines.append(f"{indent}  ~ first posted as: {first[:width - len(indent) - 22]}")
        return lines


class Forwarder:
    """Copies posts and edits to the operator's real Slack, off the request path.

    Bounded queue (1000), one worker, 10 s timeouts, failures counted. Never prints
    the webhook URL or the token (both are credentials).
    """

    def __init__(self, webhook: str | None, token: str | None, channel: str | None,
                 api_url: str = "https://slack.com/api"):
        self.webhook, self.token, self.channel, self.api_url = webhook, token, channel, api_url.rstrip("/")
        self.remote_ts: dict[str, str] = {}
        self.sent = 0
        self.failed = 0
        self.q: queue.Queue = queue.Queue(maxsize=1000)
        self.worker = threading.Thread(target=self._run, name="slack-forward", daemon=True)
        self.worker.start()

    @staticmethod
    def from_env(env: dict[str, str]) -> "Forwarder | None":
        webhook = env.get("SLACK_WEBHOOK_URL") or None
        token, channel = env.get("SLACK_BOT_TOKEN") or None, env.get("SLACK_CHANNEL") or None
        if webhook and not webhook.startswith("https://hooks.slack.com/"):
            print("slack sink: SLACK_WEBHOOK_URL is not a https://hooks.slack.com/ URL; not forwarding",
                  file=sys.stderr)
            webhook = None
        if not webhook and not (token and channel):
            return None
        return Forwarder(webhook, token if channel else None, channel)

    def describe(self) -> str:
        where = []
        if self.token:
            where.append(f"bot token to channel {self.channel}")
        if self.webhook:
            where.append("an incoming webhook")
        return " and ".join(where)

    def submit(self, kind: str, msg: dict) -> None:
        try:
            self.q.put_nowait((kind, json.loads(json.dumps(msg))))
        except queue.Full:
            self.failed += 1

    def close(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.q.empty() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.q.put(None)
        self.worker.join(timeout=max(0.1, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            kind, msg = item
            try:
                self._forward(kind, msg)
                self.sent += 1
            except (OSError, ValueError, urllib.error.URLError):
                self.failed += 1

    def _http(self, url: str, body: dict, token: str | None = None) -> bytes:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        for _ in range(3):  # bounded: honour one or two 429s, then give up
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.read()
            except urllib.error.HTTPError as e:
                if e.code != 429:
                    raise
                time.sleep(min(30, int(e.headers.get("Retry-After", "1") or 1)))
        raise OSError("rate limited")

    def _forward(self, kind: str, msg: dict) -> None:
        body = {"text": msg["text"], **({"blocks": msg["blocks"]} if msg["blocks"] else {})}
        if self.webhook and kind == "post":
            self._http(self.webhook, body)
        if self.token:
            if kind == "post":
                if msg["thread_ts"]:
                    remote_parent = self.remote_ts.get(msg["thread_ts"])
                    if remote_parent:
                        body["thread_ts"] = remote_parent
                out = json.loads(self._http(f"{self.api_url}/chat.postMessage",
                                            {**body, "channel": self.channel}, self.token))
                if out.get("ok"):
                    self.remote_ts[msg["ts"]] = out["ts"]
                    self._remote_channel = out.get("channel", self.channel)
                else:
                    raise ValueError(out.get("error", "slack error"))
            elif msg["ts"] in self.remote_ts:
                out = json.loads(self._http(f"{self.api_url}/chat.update",
                                            {**body, "channel": getattr(self, "_remote_channel", self.channel),
                                             "ts": self.remote_ts[msg["ts"]]}, self.token))
                if not out.get("ok"):
                    raise ValueError(out.get("error", "slack error"))


def main() -> int:
    sink = SlackSink(verbose="-v" in sys.argv).start()
    print(f"local Slack on {sink.url}\n  bot token:     {sink.token} (channels #ops C0LOCALOPS, #oncall C0LOCALONCALL)\n"
          f"  SLACK_API_URL={sink.url}/api\n  webhook (#ops): {sink.webhook_url('ops')}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print(sink.render())
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
