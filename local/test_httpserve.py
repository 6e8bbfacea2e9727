"""The HTTP server base of the local servers: a response leaves in one write on a
TCP_NODELAY socket, so clients that keep their connection open (the Rust SDK,
lambda_runtime, boto3) never wait on Nagle + delayed ACK (about 40 ms a request)."""

from __future__ import annotations

import http.client
import json
import socket
import threading

from httpserve import Handler, Server


class CountingSocket(socket.socket):
    """An accepted connection that records every send."""

    sends: list[bytes] = []
    lock = threading.Lock()

    def send(self, data, *args):  # noqa: ANN001
        with self.lock:
            CountingSocket.sends.append(bytes(data))
        return super().send(data, *args)

    def sendall(self, data, *args):  # noqa: ANN001
        with self.lock:
            CountingSocket.sends.append(bytes(data))
        return super().sendall(data, *args)


class CountingServer(Server):
    def get_request(self):  # noqa: ANN201
        sock, addr = super().get_request()
        return CountingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach()), addr


def test_response_is_one_write_on_a_nodelay_socket_over_a_kept_alive_connection():
    CountingSocket.sends = []
    nodelay: list[int] = []

    def app(h: Handler) -> None:
        nodelay.append(h.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        h.send_json(200, {"path": h.path, "padding": "x" * 2000})

    server = CountingServer(app).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        bodies = []
        for path in ("/one", "/two", "/three"):
            conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200
            bodies.append(json.loads(r.read()))
        conn.close()
    finally:
        server.stop()

    assert [b["path"] for b in bodies] == ["/one", "/two", "/three"]
    assert all(v != 0 for v in nodelay) and len(nodelay) == 3
    # One write per response, holding the status line, the headers and the body.
    assert len(CountingSocket.sends) == 3, [s[:40] for s in CountingSocket.sends]
    for sent, path in zip(CountingSocket.sends, ("/one", "/two", "/three")):
        head, _, body = sent.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["path"] == path


def test_head_and_empty_responses_are_one_write_too():
    CountingSocket.sends = []

    def app(h: Handler) -> None:
        h.send(204 if h.command == "DELETE" else 200, b"" if h.command == "DELETE" else b"hello", "text/plain")

    server = CountingServer(app).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("HEAD", "/x")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
        conn.request("DELETE", "/x")
        r = conn.getresponse()
        assert r.status == 204 and r.read() == b""
        conn.close()
    finally:
        server.stop()

    assert len(CountingSocket.sends) == 2
    assert CountingSocket.sends[0].endswith(b"\r\n\r\n")  # HEAD: headers only
    assert b"Content-Length: 5" in CountingSocket.sends[0]
    assert CountingSocket.sends[1].startswith(b"HTTP/1.1 204")
