#!/usr/bin/env python3
"""A faithful local DynamoDB front (dev only, never deployed): a small HTTP proxy in
front of moto_server that speaks DynamoDB's awsJson1_0 exactly as the Rust SDK sends it
(`X-Amz-Target: DynamoDB_20120810.<Operation>`) and adds what moto lacks for storms as
Lambda delivers them. The functions reach it through `AWS_ENDPOINT_URL_DYNAMODB`.

What moto 5.2 does not do, and this front does:

- **Isolation.** moto's TransactWriteItems deep-copies every table, applies the items
  one by one to the live tables and restores the copy on failure: two concurrent calls
  raise "dictionary changed size during iteration", and a read running beside a
  transaction can see half of it. DynamoDB isolates each request (a transaction is
  atomic and serializable with every other write, and no read sees part of one). The
  front holds a readers-writer lock over moto's DynamoDB backend: reads (GetItem,
  Query, Scan, BatchGetItem, TransactGetItems, Describe*/List*) run side by side, any
  other request runs alone. That is stricter than DynamoDB (which isolates per item),
  never weaker, so every interleaving the front lets happen can happen in AWS too.
- **ClientRequestToken idempotency of TransactWriteItems** (DynamoDB API reference):
  the same token within 10 minutes of the first request completing answers that first
  result and writes nothing again; the same token with another request body answers
  `IdempotentParameterMismatchException`; the same token while the first is still
  running answers `TransactionInProgressException`. moto ignores the token (a retried
  transaction whose first attempt committed fails its own conditions). Front choice,
  where AWS documents no detail: a completed answer is remembered when it is a success
  or a `TransactionCanceledException` (the transaction ran to its decision), not when
  it was throttled or failed before running. `idempotency: false` turns it off (moto's
  behaviour, to test what a function does without it).
- **Fault injection per operation**, set by the test: `POST /_faults` with
  `{"rules": [...], "seed": N, "idempotency": true|false}`; each rule:

      {"operation": "PutItem" | "*", "action": ACTION, "probability": 1.0,
       "times": N (at most N injections; absent = no limit), "after": K (skip the first
       K matching requests), "key_prefix": "incident#" (only requests naming a key
       starting with it), "seconds": S (latency / delay)}

  ACTION is one of
  - `latency`: wait S seconds, then forward (added latency before DynamoDB sees it);
  - `delay_response`: forward (DynamoDB commits), then answer S seconds late (S past the
    SDK's 5 s attempt timeout: the client gives up on an attempt that succeeded);
  - `drop_after_commit`: forward, then close the connection without an answer
    (`"reset": true` resets it instead: RST, "connection reset by peer");
  - `error_after_commit`: forward, then answer 500 InternalServerError (DynamoDB:
    "the request may or may not have succeeded");
  - `throttle`: answer 400 ProvisionedThroughputExceededException, nothing forwarded;
  - `throttling`: answer 400 ThrottlingException, nothing forwarded;
  - `unavailable`: answer 503 ServiceUnavailable, nothing forwarded.

  Error bodies have DynamoDB's shape: `{"__type": "com.amazonaws.dynamodb.v20120810#<Code>",
  "message": "..."}` (ThrottlingException under `com.amazon.coral.availability#`), with
  `x-amzn-RequestId` and `x-amz-crc32` headers.

Observability for tests: `GET /_stats` (requests per operation, faults injected, token
replays), `GET /_commits` (every write moto accepted, in commit order, with the scalar
attributes of the items written: the order in which the functions' conditional writes
really took effect).

Run alone: `python3 local/dynamo_front.py --backend http://127.0.0.1:PORT` prints its URL.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from httpserve import Handler, Server  # noqa: E402

TARGET_PREFIX = "DynamoDB_20120810."
# Operations that only read: they may run beside each other, never beside a write.
READ_OPERATIONS = frozenset({
    "GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable", "ListTables",
    "DescribeTimeToLive", "DescribeContinuousBackups", "DescribeEndpoints", "DescribeLimits",
    "ListTagsOfResource",
})
# "A client request token is valid for 10 minutes after the first request that uses it
# is completed" (TransactWriteItems, DynamoDB API reference).
TOKEN_WINDOW_SECONDS = 600.0
ACTIONS = ("latency", "delay_response", "drop_after_commit", "error_after_commit", "throttle", "throttling",
           "unavailable")
DDB_ERROR = "com.amazonaws.dynamodb.v20120810#"
MESSAGES = {
    "ProvisionedThroughputExceededException": "The level of configured provisioned throughput for the table was "
                                              "exceeded. Consider increasing your provisioning level with the "
                                              "UpdateTable API.",
    "ThrottlingException": "Rate of requests exceeds the allowed throughput.",
    "InternalServerError": "Internal server error",
    "ServiceUnavailable": "The service is currently unavailable or busy.",
    "TransactionInProgressException": "The transaction with the given request token is already in progress.",
    "IdempotentParameterMismatchException": "The request uses the same client token as a previous, but "
                                            "non-identical request.",
}


class FrontError(ValueError):
    """A fault rule or control request the front cannot use."""


class RWLock:
    """Many readers or one writer; a waiting writer stops new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class Rule:
    def __init__(self, spec: dict):
        if not isinstance(spec, dict):
            raise FrontError(f"a fault rule is an object, got {type(spec).__name__}")
        unknown = set(spec) - {"operation", "action", "probability", "times", "after", "key_prefix", "seconds",
                               "reset"}
        if unknown:
            raise FrontError(f"unknown fault rule keys: {sorted(unknown)}")
        self.operation = str(spec.get("operation", "*"))
        self.action = spec.get("action")
        if self.action not in ACTIONS:
            raise FrontError(f"fault action {self.action!r} is not one of {', '.join(ACTIONS)}")
        self.probability = float(spec.get("probability", 1.0))
        if not 0.0 <= self.probability <= 1.0:
            raise FrontError(f"probability {self.probability} is not between 0 and 1")
        times = spec.get("times")
        self.times = None if times is None else int(times)
        self.after = int(spec.get("after", 0))
        self.key_prefix = spec.get("key_prefix")
        self.seconds = float(spec.get("seconds", 6.0 if self.action == "delay_response" else 0.0))
        if self.seconds < 0 or self.seconds > 120:
            raise FrontError(f"seconds {self.seconds} is outside 0-120")
        self.reset = bool(spec.get("reset", False))
        self.seen = 0
        self.injected = 0

    def spec(self) -> dict:
        return {"operation": self.operation, "action": self.action, "probability": self.probability,
                "times": self.times, "after": self.after, "key_prefix": self.key_prefix, "seconds": self.seconds,
                "reset": self.reset, "seen": self.seen, "injected": self.injected}

    def matches(self, op: str, keys: list[str]) -> bool:
        if self.operation not in ("*", op):
            return False
        if self.key_prefix is not None and not any(k.startswith(self.key_prefix) for k in keys):
            return False
        return True


class TokenEntry:
    def __init__(self, fingerprint: str):
        self.fingerprint = fingerprint
        self.done = False
        self.completed_at = 0.0
        self.status = 0
        self.body = b""
        self.headers: dict[str, str] = {}


def _keys_of(op: str, body: dict) -> list[str]:
    """The partition keys (string values of every key attribute) a request names."""
    out: list[str] = []

    def add(key: Any) -> None:
        if isinstance(key, dict):
            for v in key.values():
                if isinstance(v, dict) and isinstance(v.get("S"), str):
                    out.append(v["S"])

    if op in ("PutItem",):
        add({"pk": body.get("Item", {}).get("pk")})
    elif op in ("GetItem", "UpdateItem", "DeleteItem"):
        add(body.get("Key"))
    elif op in ("TransactWriteItems", "TransactGetItems"):
        for item in body.get("TransactItems", []):
            for kind, action in item.items():
                if not isinstance(action, dict):
                    continue
                if kind == "Put":
                    add({"pk": action.get("Item", {}).get("pk")})
                else:
                    add(action.get("Key"))
    return out


def _scalars(item: dict) -> dict:
    """The short scalar attributes of an item (what the commit log keeps of a write)."""
    out = {}
    for k, v in (item or {}).items():
        if not isinstance(v, dict):
            continue
        for t in ("S", "N", "BOOL"):
            if t in v and (t != "S" or len(v[t]) <= 300):
                out[k] = v[t]
    return out


def _fingerprint(body: dict) -> str:
    rest = {k: v for k, v in body.items() if k != "ClientRequestToken"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DynamoFront:
    """The front: `start()` it with moto's URL, point the SDK at `url`."""

    def __init__(self, backend_url: str, *, idempotency: bool = True, seed: int | None = None,
                 verbose: bool = False):
        parts = urlsplit(backend_url)
        if parts.scheme != "http" or not parts.hostname:
            raise FrontError(f"backend URL {backend_url!r} is not http://host:port")
        self.backend_host, self.backend_port = parts.hostname, parts.port or 80
        self.idempotency = idempotency
        self.rng = random.Random(seed)
        self.seed = seed
        self.rules: list[Rule] = []
        self.lock = threading.Lock()          # the front's own state (rules, tokens, stats)
        self.isolation = RWLock()             # over moto's DynamoDB backend
        self.tokens: dict[str, TokenEntry] = {}
        self.requests: dict[str, int] = {}
        self.faults: list[dict] = []
        self.replays = {"same_result": 0, "mismatch": 0, "in_progress": 0}
        self.commits: list[dict] = []
        self.errors: list[str] = []
        self.server: Server | None = None
        self.verbose = verbose

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "DynamoFront":
        self.server = Server(self._app, verbose=self.verbose).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        if not self.server:
            raise FrontError("the DynamoDB front is not started")
        return self.server.url

    def endpoint_env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_DYNAMODB": self.url}

    # ------------------------------------------------------------ control

    def configure(self, spec: dict) -> dict:
        """Sets the fault rules (replacing the old ones), the seed and idempotency."""
        if not isinstance(spec, dict):
            raise FrontError("the fault configuration is a JSON object")
        rules = [Rule(r) for r in spec.get("rules", [])]
        with self.lock:
            self.rules = rules
            if "seed" in spec:
                self.seed = spec["seed"]
                self.rng = random.Random(spec["seed"])
            if "idempotency" in spec:
                self.idempotency = bool(spec["idempotency"])
        return self.config()

    def config(self) -> dict:
        with self.lock:
            return {"rules": [r.spec() for r in self.rules], "seed": self.seed, "idempotency": self.idempotency}

    def stats(self) -> dict:
        with self.lock:
            by_action: dict[str, int] = {}
            for f in self.faults:
                name = f"{f['operation']}:{f['action']}"
                by_action[name] = by_action.get(name, 0) + 1
            return {"requests": dict(self.requests), "faults": list(self.faults), "faults_by_kind": by_action,
                    "token_replays": dict(self.replays), "commits": len(self.commits), "errors": list(self.errors)}

    def commit_log(self) -> list[dict]:
        with self.lock:
            return list(self.commits)

    # ------------------------------------------------------------ HTTP

    def _app(self, h: Handler) -> None:
        path = h.path.split("?", 1)[0]
        if path == "/_faults":
            if h.command == "POST":
                try:
                    return h.send_json(200, self.configure(json.loads(h.body or b"{}")))
                except (FrontError, ValueError, TypeError) as e:
                    return h.send_json(400, {"message": str(e)})
            return h.send_json(200, self.config())
        if path == "/_stats" and h.command == "GET":
            return h.send_json(200, self.stats())
        if path == "/_commits" and h.command == "GET":
            return h.send_json(200, self.commit_log())
        target = h.headers.get("X-Amz-Target", "")
        if h.command != "POST" or not target.startswith(TARGET_PREFIX):
            return self._error(h, 400, "UnknownOperationException", "expected X-Amz-Target DynamoDB_20120810.<Op>",
                               prefix="com.amazon.coral.service#")
        op = target[len(TARGET_PREFIX):]
        try:
            body = json.loads(h.body or b"{}")
        except ValueError:
            return self._error(h, 400, "SerializationException", "request body is not JSON",
                               prefix="com.amazon.coral.service#")
        self._serve(h, op, body if isinstance(body, dict) else {})

    def _pick(self, op: str, keys: list[str]) -> Rule | None:
        with self.lock:
            self.requests[op] = self.requests.get(op, 0) + 1
            for r in self.rules:
                if not r.matches(op, keys):
                    continue
                r.seen += 1
                if r.seen <= r.after or (r.times is not None and r.injected >= r.times):
                    continue
                if r.probability < 1.0 and self.rng.random() >= r.probability:
                    continue
                r.injected += 1
                self.faults.append({"operation": op, "action": r.action, "key": keys[0] if keys else None,
                                    "at": time.time()})
                return r
            return None

    def _serve(self, h: Handler, op: str, body: dict) -> None:
        keys = _keys_of(op, body)
        rule = self._pick(op, keys)
        if rule and rule.action == "throttle":
            return self._error(h, 400, "ProvisionedThroughputExceededException")
        if rule and rule.action == "throttling":
            return self._error(h, 400, "ThrottlingException", prefix="com.amazon.coral.availability#")
        if rule and rule.action == "unavailable":
            return self._error(h, 503, "ServiceUnavailable", prefix="com.amazon.coral.availability#")
        if rule and rule.action == "latency":
            time.sleep(rule.seconds)
        token = body.get("ClientRequestToken") if op == "TransactWriteItems" else None
        entry: TokenEntry | None = None
        if token and self.idempotency:
            answer, entry = self._token(token, _fingerprint(body))
            if answer is not None:
                status, payload, headers = answer
                return self._answer(h, status, payload, headers)
        status, payload, headers = self._forward(h, op, body)
        if entry is not None:
            self._complete(token, entry, status, payload, headers)
        if rule and rule.action == "delay_response":
            time.sleep(rule.seconds)
        elif rule and rule.action == "drop_after_commit":
            return self._drop(h, rule.reset)
        elif rule and rule.action == "error_after_commit":
            return self._error(h, 500, "InternalServerError")
        self._answer(h, status, payload, headers)

    def _token(self, token: str, fingerprint: str) -> tuple[tuple[int, bytes, dict] | None, TokenEntry | None]:
        """A stored answer for the token, or a fresh entry to complete after forwarding."""
        now = time.time()
        with self.lock:
            for t in [t for t, e in self.tokens.items() if e.done and now - e.completed_at > TOKEN_WINDOW_SECONDS]:
                del self.tokens[t]
            e = self.tokens.get(token)
            if e is None:
                e = self.tokens[token] = TokenEntry(fingerprint)
                return None, e
            if e.fingerprint != fingerprint:
                self.replays["mismatch"] += 1
                return (400, self._error_body("IdempotentParameterMismatchException"),
                        {"X-Amzn-ErrorType": "IdempotentParameterMismatchException"}), None
            if not e.done:
                self.replays["in_progress"] += 1
                return (400, self._error_body("TransactionInProgressException"),
                        {"X-Amzn-ErrorType": "TransactionInProgressException"}), None
            self.replays["same_result"] += 1
            return (e.status, e.body, e.headers), None

    def _complete(self, token: str, entry: TokenEntry, status: int, payload: bytes, headers: dict) -> None:
        ran = status == 200 or (status == 400 and b"TransactionCanceledException" in payload)
        with self.lock:
            if ran:
                entry.done, entry.completed_at = True, time.time()
                entry.status, entry.body, entry.headers = status, payload, headers
            elif self.tokens.get(token) is entry:
                del self.tokens[token]  # throttled or failed before running: a retry runs it anew

    def _forward(self, h: Handler, op: str, body: dict) -> tuple[int, bytes, dict]:
        read = op in READ_OPERATIONS
        (self.isolation.acquire_read if read else self.isolation.acquire_write)()
        try:
            conn = http.client.HTTPConnection(self.backend_host, self.backend_port, timeout=60)
            try:
                headers = {k: v for k, v in h.headers.items()
                           if k.lower() not in ("host", "content-length", "connection", "transfer-encoding",
                                                "expect")}
                conn.request("POST", "/", body=h.body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                out = {k: v for k, v in resp.getheaders()
                       if k.lower() in ("x-amzn-requestid", "x-amzn-errortype", "content-type")}
                status = resp.status
            finally:
                conn.close()
            if status == 200 and not read:
                self._log_commit(op, body)
            return status, payload, out
        except OSError as e:
            with self.lock:
                self.errors.append(f"{op}: moto unreachable: {e}")
            return 500, self._error_body("InternalServerError"), {"X-Amzn-ErrorType": "InternalServerError"}
        finally:
            (self.isolation.release_read if read else self.isolation.release_write)()

    def _log_commit(self, op: str, body: dict) -> None:
        writes: list[dict] = []
        if op == "PutItem":
            writes.append({"kind": "Put", "table": body.get("TableName"), **_scalars(body.get("Item"))})
        elif op in ("UpdateItem", "DeleteItem"):
            writes.append({"kind": op[:-4], "table": body.get("TableName"), **_scalars(body.get("Key"))})
        elif op == "TransactWriteItems":
            for item in body.get("TransactItems", []):
                for kind, action in item.items():
                    if kind == "Put":
                        writes.append({"kind": kind, "table": action.get("TableName"), **_scalars(action.get("Item"))})
                    elif kind in ("Update", "Delete"):
                        writes.append({"kind": kind, "table": action.get("TableName"), **_scalars(action.get("Key"))})
        elif op == "BatchWriteItem":
            for table, reqs in body.get("RequestItems", {}).items():
                for r in reqs:
                    if "PutRequest" in r:
                        writes.append({"kind": "Put", "table": table, **_scalars(r["PutRequest"].get("Item"))})
                    elif "DeleteRequest" in r:
                        writes.append({"kind": "Delete", "table": table, **_scalars(r["DeleteRequest"].get("Key"))})
        if writes:
            with self.lock:  # under the isolation lock too: the log's order is the commit order
                self.commits.append({"seq": len(self.commits) + 1, "operation": op, "at": time.time(),
                                     "writes": writes})

    # ------------------------------------------------------------ answers

    @staticmethod
    def _error_body(code: str, message: str | None = None, prefix: str = DDB_ERROR) -> bytes:
        return json.dumps({"__type": prefix + code, "message": message or MESSAGES.get(code, code)}).encode()

    def _error(self, h: Handler, status: int, code: str, message: str | None = None,
               prefix: str = DDB_ERROR) -> None:
        self._answer(h, status, self._error_body(code, message, prefix), {"X-Amzn-ErrorType": code})

    @staticmethod
    def _answer(h: Handler, status: int, payload: bytes, headers: dict) -> None:
        out = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        out.setdefault("x-amzn-RequestId", uuid.uuid4().hex.upper())
        # DynamoDB sends the CRC32 of the body it answers with.
        out["x-amz-crc32"] = str(zlib.crc32(payload) & 0xFFFFFFFF)
        h.send(status, payload, "application/x-amz-json-1.0", out)

    @staticmethod
    def _drop(h: Handler, reset: bool) -> None:
        """No answer: the connection ends (FIN, or with `reset` an RST: "connection reset by peer")."""
        h.close_connection = True
        if not reset:
            return
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # The socket closes only when its file objects are closed too; closing it here,
            # before the server's orderly shutdown (FIN), makes the kernel send the RST.
            h.rfile.close()
            h.wfile.close()
            h.connection.close()
        except OSError:
            pass
        # The stdlib handler flushes and closes its files after the request: give it inert ones.
        h.rfile, h.wfile = io.BytesIO(), io.BytesIO()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", required=True, help="moto_server's URL, e.g. http://127.0.0.1:5000")
    ap.add_argument("--no-idempotency", action="store_true", help="ignore ClientRequestToken, as moto does")
    args = ap.parse_args(argv)
    front = DynamoFront(args.backend, idempotency=not args.no_idempotency).start()
    print(f"DynamoDB front on {front.url} -> {args.backend}")
    print(f"export AWS_ENDPOINT_URL_DYNAMODB={front.url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        front.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
