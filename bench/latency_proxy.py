#!/usr/bin/env python3
"""A latency proxy for the local endpoints (issue 18): sits between a function and a
local server (moto_server, the project's emulator, the local Slack) and makes each
request take about as long as it would in AWS, from a *latency profile*
(`bench/profiles/<name>.json`):

- per request, the service's (or the operation's) latency;
- per new connection, a connection-setup cost on its first request: the local servers
  are plain HTTP on loopback, while in AWS each new connection to an endpoint pays
  DNS, a TCP handshake and a TLS handshake before its first byte.

Every request is logged (start and end times, service, operation, connection new or
reused, injected and upstream times): the bench's critical-path report is read from
that log (`bench/critical_path.py`).

One listener per service endpoint, so a function keeps one connection per service as
it would with the real, distinct AWS hostnames (all of moto's services behind one
URL would otherwise share one kept-alive connection). The proxy speaks keep-alive
HTTP/1.1 to the function whatever the upstream does (moto closes every connection),
so connection reuse is the client's, as against AWS. Bodies pass unchanged, both
ways; hop-by-hop headers are dropped and `Content-Length` is set again.

How a delay is applied (`mode` of the profile):
- `pad` (default): the request is forwarded `handshake + share * latency` after it
  arrived, and its answer held until `handshake + latency` after it arrived, counting
  the local server's (and this proxy's) own time as part of it: a call costs about
  max(modelled, local time), so a Python mock that takes 3 ms to answer does not add
  its 3 ms on top of a modelled DynamoDB call of 5 ms. `share` (`request_share`,
  default 0) is the part of the latency before the server sees the request: for Slack
  it is most of it, so the local Slack's receive time is when Slack has the message.
- `add`: the whole latency is added to whatever the local server takes.

    python3 bench/latency_proxy.py --profile aws-us-east-1 \\
        --listen a2i/dynamodb=http://127.0.0.1:5000 --listen nf/slack:slack=http://127.0.0.1:6000 \\
        --log /tmp/calls.jsonl [--on-publish http://127.0.0.1:7000/published]

prints `READY {"a2i/dynamodb": "http://127.0.0.1:PORT", ...}` and serves until SIGTERM.
A listener is `LABEL[:SERVICE]=UPSTREAM`; `LABEL` is `function/name`, and `SERVICE`
forces the service (else it is read from each request: the SigV4 credential scope,
`X-Amz-Target`, the query `Action`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "local"))

from httpserve import Handler, Server  # noqa: E402

PROFILES = BENCH / "profiles"
DEFAULT_PROFILE = "aws-us-east-1"
# Not forwarded (RFC 9110 section 7.6.1, plus the ones this proxy sets itself).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "expect"}
UPSTREAM_TIMEOUT_S = 60


class ProfileError(Exception):
    pass


# ================================================================ profiles

@dataclass
class ServiceLatency:
    """What one service costs: per request and per new connection (milliseconds)."""

    latency_ms: float = 0.0
    handshake_ms: float = 0.0
    ops: dict[str, float] = field(default_factory=dict)
    request_share: float = 0.0

    def latency(self, op: str) -> float:
        return self.ops.get(op, self.latency_ms)


@dataclass
class Profile:
    name: str
    mode: str = "pad"
    services: dict[str, ServiceLatency] = field(default_factory=dict)
    default: ServiceLatency = field(default_factory=ServiceLatency)
    # Publish (request start) to the subscribed function's invocation, as SNS delivers it.
    sns_delivery_ms: float = 0.0
    description: str = ""

    def service(self, name: str) -> ServiceLatency:
        return self.services.get(name, self.default)

    @property
    def is_zero(self) -> bool:
        every = [self.default, *self.services.values()]
        return self.sns_delivery_ms == 0 and all(
            s.latency_ms == 0 and s.handshake_ms == 0 and not any(s.ops.values()) for s in every)


def _service_latency(name: str, spec: Any) -> ServiceLatency:
    if not isinstance(spec, dict):
        raise ProfileError(f"service {name!r}: expected an object, got {type(spec).__name__}")
    try:
        s = ServiceLatency(latency_ms=float(spec.get("latency_ms", 0)), handshake_ms=float(spec.get("handshake_ms", 0)),
                           ops={str(k): float(v) for k, v in (spec.get("ops") or {}).items()},
                           request_share=float(spec.get("request_share", 0)))
    except (TypeError, ValueError) as e:
        raise ProfileError(f"service {name!r}: {e}") from None
    if min(s.latency_ms, s.handshake_ms, *s.ops.values(), 0.0) < 0:
        raise ProfileError(f"service {name!r}: latencies must not be negative")
    if not 0 <= s.request_share <= 1:
        raise ProfileError(f"service {name!r}: request_share must be between 0 and 1")
    return s


def profile_from_dict(data: dict, name: str = "?") -> Profile:
    """Reads a profile; unknown keys (`sources`, `notes` ...) are documentation."""
    if not isinstance(data, dict):
        raise ProfileError(f"profile {name}: expected a JSON object")
    mode = data.get("mode", "pad")
    if mode not in ("pad", "add"):
        raise ProfileError(f"profile {name}: mode must be 'pad' or 'add', not {mode!r}")
    services = data.get("services") or {}
    if not isinstance(services, dict):
        raise ProfileError(f"profile {name}: `services` must be an object")
    try:
        sns = float(data.get("sns_delivery_ms", 0))
    except (TypeError, ValueError):
        raise ProfileError(f"profile {name}: sns_delivery_ms must be a number") from None
    return Profile(name=str(data.get("name", name)), mode=mode,
                   services={k: _service_latency(k, v) for k, v in services.items()},
                   default=_service_latency("default", data.get("default") or {}), sns_delivery_ms=sns,
                   description=str(data.get("description", "")))


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (`bench/profiles/<name>.json`) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES / f"{name_or_path}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.json")))
        raise ProfileError(f"no latency profile {name_or_path!r} (known: {known})")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ProfileError(f"profile {path}: not JSON: {e}") from None
    return profile_from_dict(data, path.stem)


# ================================================================ what a request is

_SCOPE = re.compile(r"Credential=[^/,]+/\d{8}/[^/,]+/([^/,]+)/aws4_request")
_DDB_PK = re.compile(r"^([a-z]+)(?:#|$)")  # `alarm#...`, or a bare `silences`


def signing_service(headers: Any) -> str | None:
    """The service of a SigV4-signed request (its credential scope)."""
    m = _SCOPE.search(headers.get("Authorization", "") or "")
    return m.group(1) if m else None


def operation_of(method: str, path: str, headers: Any, body: bytes) -> str:
    """The API operation: `X-Amz-Target`'s, the awsQuery `Action`, the rpcv2Cbor path's,
    a Slack Web API method, or the REST route."""
    target = headers.get("X-Amz-Target", "") or ""
    if "." in target:
        return target.rsplit(".", 1)[1]
    url = urlsplit(path)
    if "/operation/" in url.path:
        return url.path.rsplit("/", 1)[1]
    if url.path.startswith("/api/"):
        return url.path[len("/api/"):]
    if url.path.startswith("/services/"):
        return "webhook"
    ctype = headers.get("Content-Type", "") or ""
    if "x-www-form-urlencoded" in ctype:
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return action[0]
    action = parse_qs(url.query).get("Action")
    if action:
        return action[0]
    first = url.path.strip("/").split("/", 1)[0]
    # restJson routes (ssm-incidents: POST /startIncident): the operation's name.
    return first[:1].upper() + first[1:] if first else f"{method} /"


def dynamodb_detail(body: bytes) -> str:
    """Which items a DynamoDB request touches, by key prefix (`alarm`, `incident`,
    `delivery`, `thread`, `pace`, the single `silences` item...): `GetItem incident` reads better than `GetItem`."""
    try:
        req = json.loads(body or b"{}")
    except ValueError:
        return ""
    keys: list[str] = []

    def add(item: Any) -> None:
        pk = (((item or {}).get("pk") or {}).get("S")) if isinstance(item, dict) else None
        if isinstance(pk, str):
            m = _DDB_PK.match(pk)
            keys.append(m.group(1) if m else "?")

    if not isinstance(req, dict):
        return ""
    add(req.get("Key"))
    add(req.get("Item"))
    for t in req.get("TransactItems") or []:
        for kind in ("Put", "Update", "Delete", "ConditionCheck", "Get"):
            part = t.get(kind) if isinstance(t, dict) else None
            if isinstance(part, dict):
                add(part.get("Item") or part.get("Key"))
    for table in (req.get("RequestItems") or {}).values():
        for k in (table.get("Keys") or []) if isinstance(table, dict) else []:
            add(k)
    return "+".join(keys)


# ================================================================ the proxy

class ArrivalHandler(Handler):
    """Notes when a request's first line arrived, before its headers and body are read,
    so a request's time in the log starts when the function sent it."""

    arrived: float = 0.0

    def parse_request(self) -> bool:
        self.arrived = time.time()
        return super().parse_request()


@dataclass
class Listener:
    label: str
    upstream: str
    service: str | None = None
    server: Server | None = None

    @property
    def function(self) -> str:
        return self.label.split("/", 1)[0]


class LatencyProxy:
    """The listeners of one bench run, their profile and their request log."""

    def __init__(self, profile: Profile, log_path: Path | None = None,
                 on_publish: Callable[[dict], None] | None = None):
        self.profile = profile
        self.log_path = log_path
        self.on_publish = on_publish
        self.listeners: dict[str, Listener] = {}
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self._seq = 0
        self._conns = 0

    # ------------------------------------------------------------ lifecycle

    def add(self, label: str, upstream: str, service: str | None = None) -> str:
        """Starts a listener forwarding to `upstream`; returns its URL."""
        if label in self.listeners:
            raise ValueError(f"listener {label} exists")
        up = urlsplit(upstream)
        if up.scheme != "http" or not up.hostname or up.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"upstream of {label} must be a loopback http URL, not {upstream!r}")
        lst = Listener(label, upstream.rstrip("/"), service)
        server = Server(lambda h, lst=lst: self._handle(lst, h))
        server.RequestHandlerClass = ArrivalHandler
        lst.server = server.start()
        self.listeners[label] = lst
        return lst.server.url

    def urls(self) -> dict[str, str]:
        return {k: v.server.url for k, v in self.listeners.items() if v.server}

    def stop(self) -> None:
        for lst in self.listeners.values():
            if lst.server:
                lst.server.stop()
                lst.server = None

    # ------------------------------------------------------------ one request

    def _new_connection(self, h: Handler) -> tuple[int, bool]:
        """(connection id, True on the connection's first request). The handler object
        lives as long as its client connection, so it carries the id."""
        conn = getattr(h, "_proxy_conn", None)
        if conn is not None:
            return conn, False
        with self.lock:
            self._conns += 1
            conn = self._conns
        h._proxy_conn = conn  # type: ignore[attr-defined]
        return conn, True

    def _handle(self, lst: Listener, h: Handler) -> None:
        t_recv = getattr(h, "arrived", 0.0) or time.time()
        conn, new = self._new_connection(h)
        service = lst.service or signing_service(h.headers) or "default"
        op = operation_of(h.command, h.path, h.headers, h.body)
        detail = dynamodb_detail(h.body) if service == "dynamodb" else ""
        lat = self.profile.service(service)
        latency = lat.latency(op)
        handshake = lat.handshake_ms if new else 0.0
        before = handshake + latency * lat.request_share
        pad = self.profile.mode == "pad"
        # pad: deadlines from the request's arrival, so the proxy's own parsing and the
        # local server's time are part of the modelled cost, not added to it.
        slept = _sleep_until(t_recv + before / 1000) if pad else _sleep_ms(before)
        t_fwd = time.time()
        status, reason, headers, body, error = self._forward(lst, h)
        t_up = time.time()
        upstream_ms = (t_up - t_fwd) * 1000
        if pad:
            slept += _sleep_until(t_recv + (handshake + latency) / 1000)
        else:
            slept += _sleep_ms(latency * (1 - lat.request_share))
        self._respond(h, status, reason, headers, body)
        t_done = time.time()
        entry = {"function": lst.function, "listener": lst.label, "service": service, "op": op, "detail": detail,
                 "conn": conn, "new_conn": new, "t_recv": t_recv, "t_fwd": t_fwd, "t_upstream_done": t_up,
                 "t_done": t_done, "handshake_ms": handshake, "latency_ms": latency,
                 "injected_ms": slept, "upstream_ms": upstream_ms, "status": status,
                 "bytes_in": len(h.body), "bytes_out": len(body)}
        if error:
            entry["error"] = error
        self._log(entry)
        if self.on_publish and service == "sns" and op == "Publish" and status == 200:
            self.on_publish({"form": h.body.decode("utf-8", "replace"), "response": body.decode("utf-8", "replace"),
                             "t_recv": t_recv, "t_done": t_done, "handshake_ms": handshake,
                             "function": lst.function})

    def _forward(self, lst: Listener, h: Handler) -> tuple[int, str, list[tuple[str, str]], bytes, str | None]:
        up = urlsplit(lst.upstream)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(h.body))
        c = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=UPSTREAM_TIMEOUT_S)
        try:
            c.connect()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.request(h.command, h.path, body=h.body, headers=headers)
            r = c.getresponse()
            body = r.read()
            return r.status, r.reason, [(k, v) for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP], body, None
        except (OSError, http.client.HTTPException) as e:
            msg = f"{type(e).__name__}: {e}"
            body = json.dumps({"__type": "LatencyProxyUpstreamError", "message": f"{lst.upstream}: {msg}"}).encode()
            return 502, "Bad Gateway", [("Content-Type", "application/json")], body, msg
        finally:
            c.close()

    @staticmethod
    def _respond(h: Handler, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        h.send_response_only(status, reason)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body and h.command != "HEAD":
            h.wfile.write(body)
        h.wfile.flush()

    def _log(self, entry: dict) -> None:
        with self.lock:
            self._seq += 1
            entry["seq"] = self._seq
            self.calls.append(entry)
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(entry, separators=(",", ":")) + "\n")


def _sleep_ms(ms: float) -> float:
    """Sleeps `ms`; returns it (what was injected)."""
    if ms > 0:
        time.sleep(ms / 1000)
    return max(0.0, ms)


def _sleep_until(deadline: float) -> float:
    """Sleeps until `deadline` (epoch seconds) if it is ahead; returns the ms slept."""
    return _sleep_ms((deadline - time.time()) * 1000)


# ================================================================ as a process of its own

class PublishHook:
    """Reports each Publish to the bench over one kept-alive connection, from a thread
    of its own (the function's answer never waits for it; a new connection per report
    would cost the bench's hand-over a few milliseconds under load)."""

    def __init__(self, url: str):
        u = urlsplit(url)
        self.host, self.port, self.path = u.hostname or "127.0.0.1", u.port or 80, u.path or "/"
        self.queue: "queue.Queue[dict]" = queue.Queue()
        self.conn: http.client.HTTPConnection | None = None
        threading.Thread(target=self._run, name="publish-hook", daemon=True).start()

    def __call__(self, payload: dict) -> None:
        self.queue.put(payload)

    def _send(self, body: bytes) -> None:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
        self.conn.getresponse().read()

    def _run(self) -> None:
        while True:
            body = json.dumps(self.queue.get()).encode()
            for attempt in range(2):  # a kept-alive connection the server closed: once more on a new one
                try:
                    self._send(body)
                    break
                except (OSError, http.client.HTTPException) as e:
                    if self.conn is not None:
                        self.conn.close()
                    self.conn = None
                    if attempt:
                        print(f"latency proxy: publish hook failed: {e}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help="name under bench/profiles/ or a path")
    ap.add_argument("--listen", action="append", default=[], metavar="LABEL[:SERVICE]=UPSTREAM")
    ap.add_argument("--log", type=Path, help="append one JSON line per request")
    ap.add_argument("--on-publish", help="POST each SNS Publish (form, response, times) here, from a thread")
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.profile)
    except ProfileError as e:
        print(f"latency proxy: {e}", file=sys.stderr)
        return 2
    proxy = LatencyProxy(profile, args.log, PublishHook(args.on_publish) if args.on_publish else None)
    # Sleeping threads wake within about this long when another holds the interpreter.
    sys.setswitchinterval(0.0005)
    try:
        for spec in args.listen:
            name, _, upstream = spec.partition("=")
            label, _, service = name.partition(":")
            if not upstream or not label:
                raise ValueError(f"--listen {spec!r}: expected LABEL[:SERVICE]=UPSTREAM")
            proxy.add(label, upstream, service or None)
    except ValueError as e:
        print(f"latency proxy: {e}", file=sys.stderr)
        proxy.stop()
        return 2
    import nodelay  # noqa: E402  (bench/nodelay.py: no full GC pauses in a long-lived server)
    nodelay.no_full_collections()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("READY " + json.dumps(proxy.urls()), flush=True)
    while not stop.wait(0.5):
        pass
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
