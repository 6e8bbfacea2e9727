"""Minimal CBOR (RFC 8949) codec for the emulator's rpcv2Cbor endpoint.

`aws-sdk-cloudwatch` speaks Smithy RPC v2 CBOR, which moto does not serve
(DESIGN.md section 7). This covers what that protocol uses: unsigned/negative
integers, byte and text strings (definite and indefinite length), arrays, maps,
booleans, null, half/single/double floats and tag 1 (epoch-seconds timestamps).
"""

from __future__ import annotations

import datetime as dt
import struct


class CborError(ValueError):
    pass


class Timestamp(float):
    """An epoch-seconds timestamp; encoded as tag 1 with a double."""


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([(major << 5) | n])
    if n < 1 << 8:
        return bytes([(major << 5) | 24, n])
    if n < 1 << 16:
        return bytes([(major << 5) | 25]) + struct.pack(">H", n)
    if n < 1 << 32:
        return bytes([(major << 5) | 26]) + struct.pack(">I", n)
    return bytes([(major << 5) | 27]) + struct.pack(">Q", n)


def dumps(v) -> bytes:
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, dt.datetime):
        return b"\xc1" + b"\xfb" + struct.pack(">d", v.timestamp())
    if isinstance(v, Timestamp):
        return b"\xc1" + b"\xfb" + struct.pack(">d", float(v))
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, float):
        return b"\xfb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode("utf-8")
        return _head(3, len(b)) + b
    if isinstance(v, (bytes, bytearray)):
        return _head(2, len(v)) + bytes(v)
    if isinstance(v, (list, tuple)):
        return _head(4, len(v)) + b"".join(dumps(x) for x in v)
    if isinstance(v, dict):
        return _head(5, len(v)) + b"".join(dumps(k) + dumps(x) for k, x in v.items())
    raise CborError(f"cannot encode {type(v).__name__}")


_BREAK = object()


class _Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.i = 0

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.d):
            raise CborError("truncated CBOR input")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def arg(self, info: int) -> int | None:
        if info < 24:
            return info
        if info == 24:
            return self.take(1)[0]
        if info == 25:
            return struct.unpack(">H", self.take(2))[0]
        if info == 26:
            return struct.unpack(">I", self.take(4))[0]
        if info == 27:
            return struct.unpack(">Q", self.take(8))[0]
        if info == 31:
            return None  # indefinite length
        raise CborError(f"reserved additional info {info}")

    def item(self, depth: int = 0):
        if depth > 64:
            raise CborError("CBOR nesting too deep")
        ib = self.take(1)[0]
        major, info = ib >> 5, ib & 0x1F
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info in (22, 23):
                return None
            if info == 25:
                return _half(self.take(2))
            if info == 26:
                return struct.unpack(">f", self.take(4))[0]
            if info == 27:
                return struct.unpack(">d", self.take(8))[0]
            if info == 31:
                return _BREAK
            raise CborError(f"unsupported simple value {info}")
        n = self.arg(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major in (2, 3):
            if n is None:
                chunks = []
                while True:
                    c = self.item(depth + 1)
                    if c is _BREAK:
                        break
                    chunks.append(c)
                raw = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
            else:
                raw = self.take(n)
            return raw if major == 2 else raw.decode("utf-8")
        if major == 4:
            out = []
            while n is None or len(out) < n:
                x = self.item(depth + 1)
                if x is _BREAK:
                    break
                out.append(x)
            return out
        if major == 5:
            m = {}
            count = 0
            while n is None or count < n:
                k = self.item(depth + 1)
                if k is _BREAK:
                    break
                m[k] = self.item(depth + 1)
                count += 1
            return m
        if major == 6:
            inner = self.item(depth + 1)
            return Timestamp(inner) if n == 1 else inner
        raise CborError(f"major type {major}")


def _half(b: bytes) -> float:
    h = struct.unpack(">H", b)[0]
    exp, frac = (h >> 10) & 0x1F, h & 0x3FF
    sign = -1.0 if h & 0x8000 else 1.0
    if exp == 0:
        return sign * frac * 2 ** -24
    if exp == 31:
        return sign * float("inf") if frac == 0 else float("nan")
    return sign * (1 + frac / 1024) * 2 ** (exp - 15)


def loads(data: bytes):
    if not data:
        return {}
    r = _Reader(data)
    v = r.item()
    if r.i != len(data):
        raise CborError("trailing bytes after CBOR item")
    return v
