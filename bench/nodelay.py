"""Runs a Python module (`python bench/nodelay.py moto.server ARGS...`) with TCP_NODELAY on
every socket its `socketserver`-based HTTP server accepts, and `install()` does the same
for the servers of this process (the Runtime API, emulator and Slack sink of local/).

Why: `http.server` (and werkzeug, under moto_server) writes a response's headers and
body in two `send()` calls. On a kept-alive connection, Nagle's algorithm holds the body
until the client ACKs the headers, and Linux delays that ACK by up to 40 ms. Clients
that reuse connections (the Rust SDK, lambda_runtime, boto3, awslambdaric) then pay
about 40 ms per request that real AWS endpoints do not charge; a client that opens a
new connection per request (urllib) does not. Without this the bench would measure the
local servers' TCP quirk, not the functions.
"""

import runpy
import socket
import socketserver
import sys


def install() -> None:
    if getattr(socketserver.StreamRequestHandler, "_nodelay", False):
        return
    original = socketserver.StreamRequestHandler.setup

    def setup(self) -> None:
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not a TCP socket
        original(self)

    socketserver.StreamRequestHandler.setup = setup
    socketserver.StreamRequestHandler._nodelay = True


if __name__ == "__main__":
    install()
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
