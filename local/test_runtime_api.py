"""The local Lambda Runtime API, driven by a small client that behaves like
lambda_runtime (long-poll next, post response or error), run as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from runtime_api import ASYNC_RETRY_DELAYS_S, AsyncInvoker, RuntimeApi

CLIENT = textwrap.dedent("""
    import json, os, sys, time, urllib.request
    api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
    if os.environ.get("FAIL_INIT"):
        urllib.request.urlopen(urllib.request.Request(api + "/init/error", method="POST",
            data=json.dumps({"errorType": "BadConfig", "errorMessage": "STATE_TABLE_NAME is not set"}).encode()))
        sys.exit(1)
    seen = {}
    for _ in range(20):
        with urllib.request.urlopen(api + "/invocation/next", timeout=60) as r:
            rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
            deadline = int(r.headers["Lambda-Runtime-Deadline-Ms"])
            arn = r.headers["Lambda-Runtime-Invoked-Function-Arn"]
            event = json.loads(r.read())
        if event.get("exit"):
            sys.exit(3)
        if event.get("sleep"):
            time.sleep(event["sleep"])
        seen[rid] = seen.get(rid, 0) + 1
        if event.get("fail") or seen[rid] <= event.get("fail_first", 0):
            body, kind = {"errorType": "Retryable.Throttled", "errorMessage": "SSM throttled"}, "error"
        else:
            body, kind = {"echo": event, "arn": arn, "ms_left": deadline - int(time.time() * 1000),
                          "fn": os.environ["AWS_LAMBDA_FUNCTION_NAME"], "pid": os.getpid(),
                          "attempt": seen[rid]}, "response"
        urllib.request.urlopen(urllib.request.Request(f"{api}/invocation/{rid}/{kind}", method="POST",
                                                      data=json.dumps(body).encode()))
""")


@pytest.fixture()
def runtime(tmp_path):
    api = RuntimeApi("alarm-to-incident", timeout_s=5).start()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    procs = []

    def launch(**extra_env):
        p = subprocess.Popen([sys.executable, str(script)], env={**os.environ, **api.env(), **extra_env})
        procs.append(p)
        return p

    yield api, launch
    api.stop()
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)


def test_invoke_round_trip_with_lambda_headers(runtime):
    api, launch = runtime
    proc = launch()
    assert api.wait_ready(10, alive=lambda: proc.poll() is None)
    ok, out = api.invoke({"source": "aws.cloudwatch"}, alive=lambda: proc.poll() is None)
    assert ok is True
    assert out["echo"] == {"source": "aws.cloudwatch"}
    assert out["arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:alarm-to-incident"
    assert out["fn"] == "alarm-to-incident"
    assert 3000 < out["ms_left"] <= 5000
    [inv] = api.history
    assert inv.duration_ms is not None and inv.duration_ms < 3000


def test_function_error_is_returned(runtime):
    api, launch = runtime
    proc = launch()
    ok, out = api.invoke({"fail": True}, alive=lambda: proc.poll() is None)
    assert ok is False and out == {"errorType": "Retryable.Throttled", "errorMessage": "SSM throttled"}
    ok, _ = api.invoke({"after": "error"}, alive=lambda: proc.poll() is None)
    assert ok is True  # the environment keeps serving after an error, like Lambda


def test_invocations_are_served_in_order(runtime):
    api, launch = runtime
    proc = launch()
    results = [api.invoke({"n": i}, alive=lambda: proc.poll() is None)[1]["echo"]["n"] for i in range(5)]
    assert results == [0, 1, 2, 3, 4]


def test_timeout_and_process_exit_are_bounded(runtime):
    api, launch = runtime
    proc = launch()
    started = time.monotonic()
    ok, out = api.invoke({"sleep": 3}, timeout_s=0.5, alive=lambda: proc.poll() is None)
    assert ok is False and out["errorType"] == "Sandbox.Timedout"
    assert time.monotonic() - started < 4
    proc.wait(timeout=10)  # the client keeps going after its sleep; make it exit
    proc2 = launch()
    ok, out = api.invoke({"exit": True}, alive=lambda: proc2.poll() is None)
    assert ok is False and out["errorType"] == "Runtime.ExitError"


def test_init_error_is_reported(runtime):
    api, launch = runtime
    proc = launch(FAIL_INIT="1")
    assert api.wait_ready(10, alive=lambda: proc.poll() is None) is False
    assert api.init_error == {"errorType": "BadConfig", "errorMessage": "STATE_TABLE_NAME is not set"}
    ok, out = api.invoke({})
    assert ok is False and out["errorType"] == "Runtime.InitError"


def test_chunked_response_with_trailers_is_read():
    # lambda_runtime's streaming mode sends the response chunked, with trailers.
    import json
    import socket
    import threading
    import urllib.request

    api = RuntimeApi("notify-fanout").start()
    try:
        res = {}
        t = threading.Thread(target=lambda: res.update(r=api.invoke({"a": 1}, timeout_s=5)))
        t.start()
        with urllib.request.urlopen(f"http://{api.address}/2018-06-01/runtime/invocation/next", timeout=5) as r:
            rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        body = json.dumps({"delivered": 2}).encode()
        with socket.create_connection(("127.0.0.1", int(api.address.split(":")[1])), timeout=5) as s:
            s.sendall(f"POST /2018-06-01/runtime/invocation/{rid}/response HTTP/1.1\r\nHost: l\r\n"
                      f"Transfer-Encoding: chunked\r\n\r\n{5:x}\r\n".encode() + body[:5] + b"\r\n"
                      + f"{len(body) - 5:x}\r\n".encode() + body[5:] + b"\r\n0\r\n"
                      b"Lambda-Runtime-Function-Error-Type: none\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 202")
        t.join(5)
        assert res["r"] == (True, {"delivered": 2})
    finally:
        api.stop()


# ------------------------------------------------------------------ asynchronous invocation

def test_async_event_failing_every_attempt_goes_to_the_destination_with_one_request_id(runtime):
    api, launch = runtime
    proc = launch()
    records = []
    inv = AsyncInvoker(api, concurrency=1, backoff_factor=0.001, on_failure=records.append,
                       alive=lambda: proc.poll() is None).start()
    try:
        ev = inv.submit({"fail": True, "alarm": "vpn-tunnel-down"})
        assert inv.drain(30)
    finally:
        inv.stop()
    assert ev.outcome == "failed" and len(ev.attempts) == 3
    # Lambda keeps the request id across its retries.
    assert [i.request_id for i in api.history] == [ev.request_id] * 3
    [record] = records
    assert record == ev.destination_record
    assert record["requestContext"] == {
        "requestId": ev.request_id, "condition": "RetriesExhausted", "approximateInvokeCount": 3,
        "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:alarm-to-incident:$LATEST"}
    assert record["requestPayload"] == {"fail": True, "alarm": "vpn-tunnel-down"}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"] == {"errorType": "Retryable.Throttled", "errorMessage": "SSM throttled"}
    assert record["version"] == "1.0" and record["timestamp"].endswith("Z")
    assert inv.counts() == {"submitted": 1, "succeeded": 0, "failed": 1, "attempts": 3, "retried": 1, "open": 0}


def test_async_retry_waits_the_scaled_lambda_delay_and_then_succeeds(runtime):
    api, launch = runtime
    proc = launch()
    records = []
    factor = 0.005  # Lambda's 60 s and 120 s become 0.3 s and 0.6 s
    inv = AsyncInvoker(api, concurrency=1, backoff_factor=factor, on_failure=records.append,
                       alive=lambda: proc.poll() is None).start()
    try:
        ev = inv.submit({"fail_first": 2})
        assert inv.drain(30)
    finally:
        inv.stop()
    assert ev.ok and records == [] and ev.result["attempt"] == 3
    gaps = [b["started_at"] - a["ended_at"] for a, b in zip(ev.attempts, ev.attempts[1:])]
    # A lower bound only: the retry is never early (later is the machine's business).
    assert all(g >= d * factor - 0.01 for g, d in zip(gaps, ASYNC_RETRY_DELAYS_S)), gaps


def test_async_events_run_on_several_instances_at_once(runtime):
    api, launch = runtime
    procs = [launch() for _ in range(3)]
    alive = lambda: any(p.poll() is None for p in procs)  # noqa: E731
    assert api.wait_ready(20, alive=alive, instances=3)
    inv = AsyncInvoker(api, concurrency=3, backoff_factor=0.0, alive=alive).start()
    try:
        events = [inv.submit({"sleep": 2, "n": i}) for i in range(3)]
        assert inv.drain(60)
    finally:
        inv.stop()
    assert all(e.ok for e in events)
    assert len({e.result["pid"] for e in events}) == 3  # three processes, one event each
    # They overlapped: each started before any of them ended.
    starts = [e.attempts[0]["started_at"] for e in events]
    ends = [e.attempts[0]["ended_at"] for e in events]
    assert max(starts) < min(ends)


def test_async_invoker_refuses_bad_settings_and_reports_destination_errors(runtime):
    api, launch = runtime
    with pytest.raises(ValueError):
        AsyncInvoker(api, concurrency=0)
    with pytest.raises(ValueError):
        AsyncInvoker(api, backoff_factor=-1)
    proc = launch()

    def broken(record):
        raise OSError("failed-events queue unreachable")

    inv = AsyncInvoker(api, backoff_factor=0.0, on_failure=broken, alive=lambda: proc.poll() is None).start()
    try:
        ev = inv.submit({"fail": True})
        assert inv.drain(30)
    finally:
        inv.stop()
    assert ev.outcome == "failed" and ev.destination_record is not None
    assert inv.destination_errors == ["OSError: failed-events queue unreachable"]
    with pytest.raises(RuntimeError):
        inv.submit({})
