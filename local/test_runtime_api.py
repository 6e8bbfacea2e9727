"""The local Lambda Runtime API, driven by a small client that behaves like
lambda_runtime (long-poll next, post response or error), run as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from runtime_api import RuntimeApi

CLIENT = textwrap.dedent("""
    import json, os, sys, time, urllib.request
    api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
    if os.environ.get("FAIL_INIT"):
        urllib.request.urlopen(urllib.request.Request(api + "/init/error", method="POST",
            data=json.dumps({"errorType": "BadConfig", "errorMessage": "STATE_TABLE_NAME is not set"}).encode()))
        sys.exit(1)
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
        if event.get("fail"):
            body, kind = {"errorType": "Retryable.Throttled", "errorMessage": "SSM throttled"}, "error"
        else:
            body, kind = {"echo": event, "arn": arn, "ms_left": deadline - int(time.time() * 1000),
                          "fn": os.environ["AWS_LAMBDA_FUNCTION_NAME"]}, "response"
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
