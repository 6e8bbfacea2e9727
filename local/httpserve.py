"""Small HTTP/1.1 server base shared by the local emulator, the Slack sink and the
Lambda Runtime API (dev-only, never deployed).

Every server binds 127.0.0.1 on an ephemeral port (port 0), runs in a daemon thread
and speaks keep-alive HTTP/1.1, because the Rust clients (hyper) keep connections
open. Request bodies are read by Content-Length or chunked transfer encoding.

A response leaves in one `send()` (status line, headers and body are buffered, then
flushed together) on a socket with TCP_NODELAY. `http.server` on its own writes the
headers and the body separately; on a kept-alive connection Nagle's algorithm then
holds the body until the client ACKs the headers, and Linux delays that ACK by up to
40 ms, so every request of a client that reuses its connection (the Rust SDK,
lambda_runtime, boto3) would wait about 40 ms for nothing. `bench/nodelay.py` explains
the measurement.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# Idle keep-alive connections are closed after this many seconds so that a server
# stops promptly and no handler thread waits forever on a silent client.
IDLE_TIMEOUT_SECONDS = 30
# Upper bound on a request body: the largest legitimate payload (a Lambda event)
# is 6 MB; anything larger is refused rather than buffered.
MAX_BODY_BYTES = 8 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    """Reads the whole request, then calls `self.server.app(self)`."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_SECONDS
    # Buffered writes: a response is flushed as one segment by `send()` (or, for the
    # stdlib's own error pages, at the end of the request).
    wbufsize = 64 * 1024
    server: "Server"

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not a TCP socket

    def handle_expect_100(self) -> bool:
        # The client waits for this interim response before it sends the body.
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        # Quiet by default: the owners record what matters in their own logs.
        if self.server.verbose:
            super().log_message(format, *args)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise BodyTooLarge(length)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        out = bytearray()
        # Bounded: every chunk adds at least one byte (the size limit ends the loop), and
        # a 0-size chunk or EOF ends it; at most 100 trailer lines are read.
        while True:
            line = self.rfile.readline(1024)
            if not line:
                break
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (lambda_runtime sends some in streaming mode) end with a blank line.
                for _ in range(100):
                    trailer = self.rfile.readline(8192)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                break
            if len(out) + size > MAX_BODY_BYTES:
                raise BodyTooLarge(len(out) + size)
            out += self.rfile.read(size)
            self.rfile.readline(8)  # CRLF after each chunk
        return bytes(out)

    def send(self, status: int, body: bytes | str = b"", content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, obj, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
        self.send(status, json.dumps(obj, separators=(",", ":"), default=str), content_type, headers)

    def _dispatch(self) -> None:
        try:
            self.body = self.read_body()
        except (BodyTooLarge, ValueError) as e:
            self.send_json(413, {"message": f"request body refused: {e}"})
            self.close_connection = True
            return
        try:
            self.server.app(self)
        except Exception as e:  # a bug in a handler must answer 500, not hang the client
            self.server.errors.append(f"{self.command} {self.path}: {type(e).__name__}: {e}")
            try:
                self.send_json(500, {"__type": "InternalServerError", "message": f"{type(e).__name__}: {e}"})
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app: Callable[[Handler], None], verbose: bool = False):
        super().__init__(("127.0.0.1", 0), Handler)
        self.app = app
        self.verbose = verbose
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None

    def handle_error(self, request, client_address) -> None:
        # A client closing its keep-alive connection is normal; anything else is recorded.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, TimeoutError)):
            return
        self.errors.append(f"{client_address}: {type(exc).__name__}: {exc}")

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"http-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)
