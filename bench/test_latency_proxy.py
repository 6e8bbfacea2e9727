"""The latency proxy of the time-to-Slack bench (bench/latency_proxy.py): it adds the
configured delays (read from its request log, and elapsed time never below them),
counts new connections, keeps connections alive whatever the upstream does, passes
bodies and headers unchanged, tells what each request is, and reports Publishes.

Loopback only; the servers are started and stopped by the tests. No upper bound on any
elapsed time (the machine is shared): only lower bounds, which a sleep guarantees."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "local"))

import latency_proxy as lp  # noqa: E402
from httpserve import Server  # noqa: E402


def profile(mode: str = "add", latency: float = 0, handshake: float = 0, share: float = 0, ops=None,
            sns: float = 0) -> lp.Profile:
    return lp.profile_from_dict({"name": "test", "mode": mode, "sns_delivery_ms": sns,
                                 "default": {"latency_ms": 0, "handshake_ms": 0},
                                 "services": {"dynamodb": {"latency_ms": latency, "handshake_ms": handshake,
                                                           "request_share": share, "ops": ops or {}}}})


class Upstream:
    """Echoes what it got (method, path, headers, body as hex) as JSON; can sleep and
    answer `Connection: close` like moto_server."""

    def __init__(self, sleep_s: float = 0.0, close: bool = False, body: bytes | None = None):
        self.sleep_s, self.close, self.body = sleep_s, close, body
        self.seen: list[dict] = []
        self.server = Server(self._app).start()

    def _app(self, h) -> None:  # noqa: ANN001
        self.seen.append({"method": h.command, "path": h.path, "headers": dict(h.headers.items()), "body": h.body})
        if self.sleep_s:
            time.sleep(self.sleep_s)
        body = self.body if self.body is not None else json.dumps(
            {"method": h.command, "path": h.path, "body_hex": h.body.hex()}).encode()
        headers = {"X-Upstream": "yes", "Connection": "close"} if self.close else {"X-Upstream": "yes"}
        h.send(200, body, "application/x-test", headers)
        if self.close:
            h.close_connection = True

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.stop()


def signed(service: str, target: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"AWS4-HMAC-SHA256 Credential=local/20260101/eu-west-1/{service}/aws4_request, "
                          "SignedHeaders=host, Signature=00"}
    if target:
        h["X-Amz-Target"] = target
    return h


def request(conn: http.client.HTTPConnection, body: bytes = b"{}", headers=None, path: str = "/") -> tuple:
    t = time.monotonic()
    conn.request("POST", path, body=body, headers=headers or signed("dynamodb", "DynamoDB_20120810.GetItem"))
    r = conn.getresponse()
    data = r.read()
    return r, data, (time.monotonic() - t) * 1000


def connect(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def test_first_request_of_each_connection_pays_the_handshake_and_every_request_the_latency(upstream):
    proxy = lp.LatencyProxy(profile(latency=30, handshake=50))
    try:
        url = proxy.add("fn/dynamodb", upstream.url)
        a = connect(url)
        _, _, first = request(a)
        _, _, second = request(a)
        b = connect(url)
        _, _, third = request(b)
        a.close()
        b.close()
    finally:
        proxy.stop()
    assert [(c["conn"], c["new_conn"], c["handshake_ms"], c["latency_ms"]) for c in proxy.calls] == [
        (1, True, 50.0, 30.0), (1, False, 0.0, 30.0), (2, True, 50.0, 30.0)]
    assert [c["injected_ms"] for c in proxy.calls] == [80.0, 30.0, 80.0]
    # A sleep never returns early: the client waited at least what was configured.
    assert first >= 80 and second >= 30 and third >= 80
    assert all(c["t_done"] - c["t_recv"] >= c["injected_ms"] / 1000 for c in proxy.calls)


def test_operation_latency_overrides_the_service_latency(upstream):
    proxy = lp.LatencyProxy(profile(latency=5, ops={"TransactWriteItems": 12}))
    try:
        conn = connect(proxy.add("fn/dynamodb", upstream.url))
        request(conn, headers=signed("dynamodb", "DynamoDB_20120810.TransactWriteItems"))
        request(conn, headers=signed("dynamodb", "DynamoDB_20120810.GetItem"))
        conn.close()
    finally:
        proxy.stop()
    assert [(c["op"], c["latency_ms"]) for c in proxy.calls] == [("TransactWriteItems", 12.0), ("GetItem", 5.0)]


def test_pad_mode_counts_the_local_server_time_as_part_of_the_latency():
    slow = Upstream(sleep_s=0.03)
    proxy = lp.LatencyProxy(profile(mode="pad", latency=10))
    try:
        conn = connect(proxy.add("fn/dynamodb", slow.url))
        request(conn)
        conn.close()
    finally:
        proxy.stop()
        slow.stop()
    (c,) = proxy.calls
    assert c["upstream_ms"] >= 30
    assert c["injected_ms"] == 0.0  # the 30 ms the server took already exceed the 10 ms modelled


def test_pad_mode_holds_the_answer_until_the_latency_and_request_share_goes_first(upstream):
    proxy = lp.LatencyProxy(profile(mode="pad", latency=40, share=0.75))
    try:
        conn = connect(proxy.add("fn/dynamodb", upstream.url))
        _, _, took = request(conn)
        conn.close()
    finally:
        proxy.stop()
    (c,) = proxy.calls
    assert c["t_fwd"] - c["t_recv"] >= 0.030  # 75 % before the server sees the request
    assert c["t_done"] - c["t_recv"] >= 0.040 and took >= 40
    assert c["injected_ms"] <= 40


def test_bodies_and_headers_pass_unchanged_both_ways(upstream):
    answer = bytes(range(256)) * 3
    binary = Upstream(body=answer)
    proxy = lp.LatencyProxy(profile())
    try:
        echo = connect(proxy.add("fn/echo", upstream.url))
        body = "é\u2603".encode() + bytes([0, 255, 10, 13])
        r, data, _ = request(echo, body=body, headers={**signed("dynamodb", "DynamoDB_20120810.PutItem"),
                                                       "X-Custom": "kept"}, path="/some/path?x=1&y=%20")
        echo.close()
        raw = connect(proxy.add("fn/binary", binary.url))
        r2, data2, _ = request(raw)
        raw.close()
    finally:
        proxy.stop()
        binary.stop()
    got = json.loads(data)
    assert bytes.fromhex(got["body_hex"]) == body
    assert got["path"] == "/some/path?x=1&y=%20" and got["method"] == "POST"
    seen = upstream.seen[0]["headers"]
    assert seen["X-Custom"] == "kept" and seen["X-Amz-Target"] == "DynamoDB_20120810.PutItem"
    assert r.getheader("X-Upstream") == "yes" and r.getheader("Content-Type") == "application/x-test"
    assert data2 == answer and int(r2.getheader("Content-Length")) == len(answer)
    assert [c["bytes_in"] for c in proxy.calls] == [len(body), 2]


def test_chunked_request_is_forwarded_with_its_whole_body(upstream):
    proxy = lp.LatencyProxy(profile())
    try:
        conn = connect(proxy.add("fn/dynamodb", upstream.url))
        conn.putrequest("POST", "/")
        for k, v in signed("dynamodb", "DynamoDB_20120810.GetItem").items():
            conn.putheader(k, v)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for chunk in (b"hello ", b"chunked ", b"world"):
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
        data = conn.getresponse().read()
        conn.close()
    finally:
        proxy.stop()
    assert bytes.fromhex(json.loads(data)["body_hex"]) == b"hello chunked world"
    assert "Transfer-Encoding" not in upstream.seen[0]["headers"]


def test_connection_stays_open_to_the_client_when_the_upstream_closes_every_one():
    closing = Upstream(close=True)  # as moto_server
    proxy = lp.LatencyProxy(profile(handshake=20))
    try:
        conn = connect(proxy.add("fn/dynamodb", closing.url))
        r1, _, _ = request(conn)
        r2, _, _ = request(conn)
        conn.close()
    finally:
        proxy.stop()
        closing.stop()
    assert r1.getheader("Connection") is None and r2.status == 200
    assert [(c["conn"], c["new_conn"]) for c in proxy.calls] == [(1, True), (1, False)]


def test_unreachable_upstream_answers_502_and_is_logged():
    # A loopback port held bound but not listening: a connection to it is refused, and
    # nothing else can take it meanwhile (a stopped server's port could be handed to the
    # proxy's own listener, which then forwarded to itself: the test failed now and then).
    hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hold.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{hold.getsockname()[1]}"
    proxy = lp.LatencyProxy(profile())
    try:
        conn = connect(proxy.add("fn/dynamodb", url))
        r, data, _ = request(conn)
        conn.close()
    finally:
        proxy.stop()
        hold.close()
    assert r.status == 502 and json.loads(data)["__type"] == "LatencyProxyUpstreamError"
    assert proxy.calls[0]["status"] == 502 and "error" in proxy.calls[0]


def test_publish_is_reported_with_its_form_and_answer():
    answer = b"<PublishResponse><PublishResult><MessageId>m-1</MessageId></PublishResult></PublishResponse>"
    sns = Upstream(body=answer)
    got: list[dict] = []
    proxy = lp.LatencyProxy(profile(), on_publish=got.append)
    try:
        conn = connect(proxy.add("a2i/sns", sns.url, "sns"))
        form = b"Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aeu-west-1%3A1%3At&Message=hi"
        request(conn, body=form, headers={**signed("sns"), "Content-Type": "application/x-www-form-urlencoded"})
        request(conn, body=b"Action=ListTopics", headers={**signed("sns"),
                                                          "Content-Type": "application/x-www-form-urlencoded"})
        conn.close()
    finally:
        proxy.stop()
        sns.stop()
    assert [c["op"] for c in proxy.calls] == ["Publish", "ListTopics"]
    assert len(got) == 1 and got[0]["form"] == form.decode() and got[0]["response"] == answer.decode()
    assert got[0]["function"] == "a2i" and got[0]["t_done"] >= got[0]["t_recv"]


def test_request_identification():
    assert lp.signing_service(signed("secretsmanager")) == "secretsmanager"
    assert lp.signing_service({"Authorization": "Bearer xoxb"}) is None
    assert lp.operation_of("POST", "/", {"X-Amz-Target": "AmazonSSM.CreateOpsItem"}, b"") == "CreateOpsItem"
    assert lp.operation_of("POST", "/", {"Content-Type": "application/x-www-form-urlencoded"},
                           b"Action=Publish&Message=x") == "Publish"
    assert lp.operation_of("POST", "/startIncident", {}, b"{}") == "StartIncident"
    assert lp.operation_of("POST", "/api/chat.postMessage", {}, b"{}") == "chat.postMessage"
    assert lp.operation_of("POST", "/services/T0/B1/x", {}, b"{}") == "webhook"
    assert lp.operation_of("POST", "/service/GraniteServiceVersion20100801/operation/GetMetricData", {},
                           b"") == "GetMetricData"
    assert lp.dynamodb_detail(b'{"Key": {"pk": {"S": "alarm#arn:x"}}}') == "alarm"
    assert lp.dynamodb_detail(b'{"Key": {"pk": {"S": "silences"}}}') == "silences"
    assert lp.dynamodb_detail(b'{"Key": {"pk": {"S": "Odd-Key"}}}') == "?"
    assert lp.dynamodb_detail(json.dumps({"TransactItems": [
        {"Put": {"Item": {"pk": {"S": "alarm#a"}}}}, {"Update": {"Key": {"pk": {"S": "incident#k"}}}}]}).encode()
    ) == "alarm+incident"
    assert lp.dynamodb_detail(b"not json") == ""


def test_shipped_profiles_load_and_none_adds_nothing():
    names = sorted(p.stem for p in lp.PROFILES.glob("*.json"))
    assert {"aws-us-east-1", "none"} <= set(names)
    for name in names:
        lp.load_profile(name)
    assert lp.load_profile("none").is_zero
    default = lp.load_profile(lp.DEFAULT_PROFILE)
    assert not default.is_zero and default.sns_delivery_ms > 0
    for service in ("dynamodb", "sns", "secretsmanager", "ssm", "ssm-incidents", "slack"):
        assert default.service(service).latency_ms > 0 and default.service(service).handshake_ms > 0


def test_bad_profiles_are_refused_with_the_reason(tmp_path):
    with pytest.raises(lp.ProfileError, match="known: .*aws-us-east-1"):
        lp.load_profile("no-such-profile")
    with pytest.raises(lp.ProfileError, match="mode"):
        lp.profile_from_dict({"mode": "fast"})
    with pytest.raises(lp.ProfileError, match="negative"):
        lp.profile_from_dict({"services": {"sns": {"latency_ms": -1}}})
    with pytest.raises(lp.ProfileError, match="request_share"):
        lp.profile_from_dict({"services": {"sns": {"request_share": 2}}})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(lp.ProfileError, match="not JSON"):
        lp.load_profile(str(bad))


def test_as_a_process_it_prints_its_listeners_logs_requests_and_stops_on_sigterm(upstream, tmp_path):
    log = tmp_path / "calls.jsonl"
    p = subprocess.Popen([sys.executable, str(BENCH / "latency_proxy.py"), "--profile", "none", "--log", str(log),
                          "--listen", f"fn/dynamodb:dynamodb={upstream.url}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("READY ")
        urls = json.loads(line[len("READY "):])
        conn = connect(urls["fn/dynamodb"])
        r, _, _ = request(conn)
        conn.close()
        assert r.status == 200
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(e["function"], e["service"], e["op"], e["new_conn"]) for e in entries] == [
        ("fn", "dynamodb", "GetItem", True)]
    assert p.returncode == 0


def test_bad_listener_spec_is_refused():
    r = subprocess.run([sys.executable, str(BENCH / "latency_proxy.py"), "--profile", "none",
                        "--listen", "fn/x=http://example.com:80"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "loopback" in r.stderr


def test_concurrent_requests_on_separate_connections_are_served_together():
    # The upstream answers only once all three requests are in: a proxy that served one
    # at a time would leave the barrier broken (answered 500) instead.
    barrier = threading.Barrier(3, timeout=20)

    class Together(Upstream):
        def _app(self, h) -> None:  # noqa: ANN001
            try:
                barrier.wait()
                h.send(200, b"{}")
            except threading.BrokenBarrierError:
                h.send(500, b"{}")

    up = Together()
    proxy = lp.LatencyProxy(profile(latency=10))
    url = proxy.add("fn/dynamodb", up.url)
    statuses: list[int] = []

    def one() -> None:
        c = connect(url)
        r, _, _ = request(c)
        statuses.append(r.status)
        c.close()
    threads = [threading.Thread(target=one) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        proxy.stop()
        up.stop()
    assert statuses == [200, 200, 200]
    assert len({c["conn"] for c in proxy.calls}) == 3 and all(c["new_conn"] for c in proxy.calls)
