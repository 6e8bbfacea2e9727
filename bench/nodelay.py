"""Runs a Python module (`python bench/nodelay.py moto.server ARGS...`) with TCP_NODELAY on
every socket its `socketserver`-based HTTP server accepts (unless `BENCH_KEEP_NAGLE` is
set), and `install()` does the same for any such server of this process (the servers of
local/httpserve.py, i.e. the Runtime API, emulator and Slack sink, now set it themselves).
With `BENCH_NO_FULL_GC` set the module runs without Python's full garbage collections
(`no_full_collections()`), and `BENCH_GC_LOG=<file>` logs the collections that pause it.

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


def log_gc_pauses(path: str) -> None:
    """Appends `<time> <generation> <pause ms> <collected>` to `path` for every garbage
    collection of this process that takes 5 ms or more (what `BENCH_GC_LOG` turns on
    for moto_server; see bench/NOTES.md on the warm stalls)."""
    import gc
    import time

    started: list[float] = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = (time.perf_counter() - started[0]) * 1000
        if pause >= 5:
            with open(path, "a") as f:
                f.write(f"{time.time():.3f} {info.get('generation')} {pause:.1f} {info.get('collected')}\n")

    gc.callbacks.append(callback)


def no_full_collections() -> None:
    """Young-generation collections only: a full collection walks every object the
    process holds (for moto_server, botocore's service models and everything stored so
    far), and took 180-270 ms per run here, up to seconds on a busy machine, stalling
    whichever request it hit. The bench's servers live for minutes, so never collecting
    cyclic garbage that reached the oldest generation costs some memory, not time."""
    import gc

    gc.freeze()  # what is there at start-up is never scanned again
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1_000_000_000)


if __name__ == "__main__":
    import os

    if not os.environ.get("BENCH_KEEP_NAGLE"):
        install()
    if os.environ.get("BENCH_GC_LOG"):
        log_gc_pauses(os.environ["BENCH_GC_LOG"])
    if os.environ.get("BENCH_NO_FULL_GC"):
        no_full_collections()
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
