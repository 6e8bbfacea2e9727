"""A minimal AWS Lambda Runtime API (2018-06-01) on 127.0.0.1, so the real function
binaries run unmodified: start one with `AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>`
(see `RuntimeApi.env()`), then `invoke(payload)` hands it one event the way Lambda
does and returns what it answered.

Why not `cargo lambda watch` + `cargo lambda invoke`: `cargo lambda watch` builds the
workspace itself, with its own profile and feature set, so it would recompile the AWS
SDK crates (aws-sdk-ec2 alone takes about 6 minutes and 8 GB here, DESIGN.md
section 7) next to the `cargo build --workspace --all-targets` artefacts that CI and
every developer already have. Serving the Runtime API ourselves runs those same
debug binaries with no second build, and gives the story exact control of each
invocation (request id, deadline, ordering) for its assertions.

Served: GET /2018-06-01/runtime/invocation/next (long poll; headers
Lambda-Runtime-Aws-Request-Id, -Deadline-Ms, -Invoked-Function-Arn, -Trace-Id),
POST .../invocation/{id}/response, .../invocation/{id}/error, .../init/error.

Each function process (an execution environment) runs one invocation at a time, as in
Lambda. Several processes of the same binary may poll one Runtime API: that is a
function scaled out to several instances, each taking the next queued invocation.
`invoke` is a synchronous invocation (the story's default, one instance);
`AsyncInvoker` is Lambda's asynchronous invocation (alarm actions, SNS, EventBridge):
an event queue served by up to `concurrency` instances at once, two retries after an
error with the same request id (Lambda keeps the id across its retries), the delays
between attempts scaled by a factor the test sets, then the on-failure destination
record.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import os
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from httpserve import Handler, Server  # noqa: E402

PREFIX = "/2018-06-01/runtime"


# Lambda's waits between the attempts of an asynchronous invocation: "a one-minute wait
# between the first two attempts, and two minutes between the second and third attempts"
# (Lambda developer guide, "How Lambda handles errors and retries with asynchronous
# invocation").
ASYNC_RETRY_DELAYS_S = (60.0, 120.0)


class Invocation:
    def __init__(self, payload: Any, timeout_s: float, function_arn: str, request_id: str | None = None):
        self.request_id = request_id or str(uuid.uuid4())
        self.payload = payload
        self.body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
        self.timeout_s = timeout_s
        self.deadline_ms = 0
        self.function_arn = function_arn
        self.trace_id = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
        self.queued_at = time.time()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.ok: bool | None = None
        self.result: Any = None
        self.done = threading.Event()

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at) * 1000

    def record(self) -> dict:
        return {"request_id": self.request_id, "payload": self.payload, "ok": self.ok, "result": self.result,
                "queued_at": self.queued_at, "started_at": self.started_at, "ended_at": self.ended_at,
                "duration_ms": self.duration_ms}


class RuntimeApi:
    def __init__(self, function_name: str, region: str = "eu-west-1", account: str = "123456789012",
                 timeout_s: float = 30.0, memory_mb: int = 128, verbose: bool = False):
        self.function_name = function_name
        self.function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.region = region
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.pending: deque[Invocation] = deque()
        self.active: dict[str, Invocation] = {}
        self.history: list[Invocation] = []
        self.init_error: dict | None = None
        self.polls = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.server: Server | None = None
        self.verbose = verbose

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "RuntimeApi":
        self.server = Server(self._app, verbose=self.verbose).start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.server:
            self.server.stop()
            self.server = None

    @property
    def address(self) -> str:
        if not self.server:
            raise RuntimeError("runtime API not started")
        return f"127.0.0.1:{self.server.port}"

    def env(self) -> dict[str, str]:
        """What Lambda sets for a function process (lambda_runtime 1.5 requires the first four)."""
        return {"AWS_LAMBDA_RUNTIME_API": self.address, "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb), "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{uuid.uuid4().hex}",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand", "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region, "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023"}

    def wait_ready(self, timeout: float, alive: Callable[[], bool] = lambda: True, instances: int = 1) -> bool:
        """True once `instances` function processes asked for their first event (their init is done)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.polls < instances and self.init_error is None and time.monotonic() < deadline and alive():
                self.cond.wait(0.1)
            return self.polls >= instances

    # ------------------------------------------------------------ invoking

    def invoke(self, payload: Any, timeout_s: float | None = None,
               alive: Callable[[], bool] = lambda: True, request_id: str | None = None) -> tuple[bool, Any]:
        """Runs one invocation; returns (True, response JSON) or (False, error JSON).
        `request_id`: the id of an earlier attempt this one retries (Lambda keeps it).

        Bounded: gives up `timeout_s` (+2 s grace) after queueing, or as soon as
        `alive()` says the function process is gone.
        """
        inv = Invocation(payload, timeout_s or self.timeout_s, self.function_arn, request_id)
        with self.cond:
            if self.init_error is not None:
                return False, {"errorType": "Runtime.InitError",
                               "errorMessage": str(self.init_error.get("errorMessage", "")),
                               "initErrorType": str(self.init_error.get("errorType", ""))}
            self.pending.append(inv)
            self.history.append(inv)
            self.cond.notify_all()
        limit = time.monotonic() + inv.timeout_s + 2
        while not inv.done.wait(0.1):
            if time.monotonic() > limit:
                self._finish(inv, False, {"errorType": "Sandbox.Timedout",
                                          "errorMessage": f"no answer within {inv.timeout_s:.0f} s"})
                break
            if not alive():
                self._finish(inv, False, {"errorType": "Runtime.ExitError",
                                          "errorMessage": "the function process exited"})
                break
        return bool(inv.ok), inv.result

    def _finish(self, inv: Invocation, ok: bool, result: Any) -> None:
        with self.cond:
            if inv.done.is_set():
                return
            if inv in self.pending:
                self.pending.remove(inv)
            self.active.pop(inv.request_id, None)
            inv.ok, inv.result, inv.ended_at = ok, result, time.time()
            inv.done.set()

    # ------------------------------------------------------------ HTTP

    def _app(self, h: Handler) -> None:
        path = h.path.split("?", 1)[0]
        if h.command == "GET" and path == f"{PREFIX}/invocation/next":
            return self._next(h)
        if h.command == "POST" and path == f"{PREFIX}/init/error":
            with self.cond:
                self.init_error = self._error_body(h)
                self.cond.notify_all()
            return h.send_json(202, {"status": "OK"})
        parts = path[len(PREFIX):].strip("/").split("/")
        if h.command == "POST" and len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            inv = self.active.get(parts[1])
            if inv is None:
                return h.send_json(400, {"errorType": "InvalidRequestID",
                                         "errorMessage": f"no active invocation {parts[1]}"})
            if parts[2] == "response":
                try:
                    result = json.loads(h.body) if h.body else None
                except ValueError:
                    result = h.body.decode("utf-8", "replace")
                self._finish(inv, True, result)
            else:
                self._finish(inv, False, self._error_body(h))
            return h.send_json(202, {"status": "OK"})
        h.send_json(404, {"errorType": "NotFound", "errorMessage": f"{h.command} {path}"})

    @staticmethod
    def _error_body(h: Handler) -> dict:
        try:
            body = json.loads(h.body or b"{}")
        except ValueError:
            body = {"errorMessage": h.body.decode("utf-8", "replace")}
        if not isinstance(body, dict):
            body = {"errorMessage": str(body)}
        body.setdefault("errorType", h.headers.get("Lambda-Runtime-Function-Error-Type", "Unhandled"))
        return body

    def _next(self, h: Handler) -> None:
        # A long poll, as Lambda's: it waits for the next invocation and ends, at the
        # latest, when the server stops (503), which also ends the function process.
        with self.cond:
            self.polls += 1
            self.cond.notify_all()
            while not self.pending and not self.stopping:
                self.cond.wait(0.5)
            if self.stopping:
                return h.send_json(503, {"errorType": "ServiceUnavailable", "errorMessage": "stopping"})
            inv = self.pending.popleft()
            inv.started_at = time.time()
            inv.deadline_ms = int((inv.started_at + inv.timeout_s) * 1000)
            self.active[inv.request_id] = inv
        h.send(200, inv.body, "application/json", {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": inv.function_arn,
            "Lambda-Runtime-Trace-Id": inv.trace_id})


# ================================================================ asynchronous invocation

@dataclass
class AsyncEvent:
    """One event given to Lambda for asynchronous invocation, and what became of it."""
    request_id: str
    payload: Any
    submitted_at: float
    attempts: list[dict] = field(default_factory=list)
    outcome: str | None = None          # "ok" | "failed" (sent to the on-failure destination)
    destination_record: dict | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def result(self) -> Any:
        return self.attempts[-1]["result"] if self.attempts else None


class AsyncInvoker:
    """Lambda's asynchronous invocation of one function.

    Events wait in a queue; up to `concurrency` of them run at once (one per function
    instance polling the Runtime API). An attempt that fails (function error, timeout,
    process gone) is retried twice with the same request id, after
    `ASYNC_RETRY_DELAYS_S` times `backoff_factor` (1.0 is Lambda's 1 and 2 minutes;
    tests scale them down). After the last failed attempt `on_failure` receives the
    on-failure destination record, in Lambda's shape:

        {"version": "1.0", "timestamp": ..., "requestContext": {"requestId", "functionArn":
         "...:$LATEST", "condition": "RetriesExhausted", "approximateInvokeCount": 3},
         "requestPayload": <the event>, "responseContext": {"statusCode": 200,
         "executedVersion": "$LATEST", "functionError": "Unhandled"},
         "responsePayload": {"errorType", "errorMessage"}}
    """

    def __init__(self, api: RuntimeApi, concurrency: int = 1, backoff_factor: float = 1.0, retries: int = 2,
                 on_failure: Callable[[dict], None] | None = None, alive: Callable[[], bool] = lambda: True,
                 timeout_s: float | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency {concurrency} must be at least 1")
        if backoff_factor < 0:
            raise ValueError(f"backoff factor {backoff_factor} must not be negative")
        self.api, self.concurrency, self.backoff_factor, self.retries = api, concurrency, backoff_factor, retries
        self.on_failure, self.alive, self.timeout_s = on_failure, alive, timeout_s
        self.events: list[AsyncEvent] = []
        self._due: list[tuple[float, int, AsyncEvent]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._open = 0          # submitted and not finished
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self.destination_errors: list[str] = []

    def start(self) -> "AsyncInvoker":
        for i in range(self.concurrency):
            t = threading.Thread(target=self._work, name=f"async-{self.api.function_name}-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._workers:
            t.join(timeout=(self.timeout_s or self.api.timeout_s) + 5)
        self._workers.clear()

    def submit(self, payload: Any) -> AsyncEvent:
        """Queues one event (Lambda answers 202 at once); returns its record."""
        ev = AsyncEvent(str(uuid.uuid4()), payload, time.time())
        with self._cond:
            if self._stopping:
                raise RuntimeError("the asynchronous invoker is stopped")
            self.events.append(ev)
            self._open += 1
            heapq.heappush(self._due, (time.monotonic(), next(self._seq), ev))
            self._cond.notify()
        return ev

    def drain(self, timeout: float) -> bool:
        """Waits until every submitted event succeeded or went to the on-failure destination."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._open and time.monotonic() < deadline:
                self._cond.wait(min(0.5, max(0.01, deadline - time.monotonic())))
            return self._open == 0

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"submitted": len(self.events), "succeeded": sum(e.outcome == "ok" for e in self.events),
                    "failed": sum(e.outcome == "failed" for e in self.events),
                    "attempts": sum(len(e.attempts) for e in self.events),
                    "retried": sum(len(e.attempts) > 1 for e in self.events), "open": self._open}

    def _next_due(self) -> AsyncEvent | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                wait = (self._due[0][0] - now) if self._due else 0.5
                self._cond.wait(min(0.5, max(0.001, wait)))
            return None

    def _work(self) -> None:
        while True:
            ev = self._next_due()
            if ev is None:
                return
            started = time.time()
            ok, result = self.api.invoke(ev.payload, timeout_s=self.timeout_s, alive=self.alive,
                                         request_id=ev.request_id)
            ev.attempts.append({"ok": ok, "result": result, "started_at": started, "ended_at": time.time()})
            n = len(ev.attempts)
            if ok:
                self._finish(ev, "ok")
            elif n <= self.retries and not self._stopping:
                delay = ASYNC_RETRY_DELAYS_S[min(n, len(ASYNC_RETRY_DELAYS_S)) - 1] * self.backoff_factor
                with self._cond:
                    heapq.heappush(self._due, (time.monotonic() + delay, next(self._seq), ev))
                    self._cond.notify()
            else:
                ev.destination_record = self.failure_record(ev)
                if self.on_failure is not None:
                    try:
                        self.on_failure(ev.destination_record)
                    except Exception as e:  # the record stays on the event; the test sees the error
                        self.destination_errors.append(f"{type(e).__name__}: {e}")
                self._finish(ev, "failed")

    def _finish(self, ev: AsyncEvent, outcome: str) -> None:
        with self._cond:
            ev.outcome = outcome
            self._open -= 1
            ev.done.set()
            self._cond.notify_all()

    def failure_record(self, ev: AsyncEvent) -> dict:
        error = ev.result if isinstance(ev.result, dict) else {"errorMessage": str(ev.result)}
        return {
            "version": "1.0",
            "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "requestContext": {"requestId": ev.request_id, "functionArn": f"{self.api.function_arn}:$LATEST",
                               "condition": "RetriesExhausted", "approximateInvokeCount": len(ev.attempts)},
            "requestPayload": ev.payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": error.get("errorType", "Unhandled"),
                                "errorMessage": error.get("errorMessage", "")},
        }
