"""The AWS service models (botocore's JSON, the same Smithy models the Rust SDK is
generated from) used by the emulator to validate requests and to write responses
with the exact wire member names.

- `validate(service, operation, params)` checks required members, lengths, ranges,
  enums and patterns of the operation's input, the way the service front end does,
  and returns AWS-style messages ("Value null at 'title' failed to satisfy
  constraint: Member must not be null").
- `ec2_xml(operation, result)` writes an ec2Query response body from a dict keyed by
  model member names, using each member's `locationName` (`vpnConnectionSet`,
  `item`, `vgwTelemetry`, ...), which is what the Rust SDK's XML parser reads.
- `ec2_params(form)` turns flattened ec2Query form keys (`Filter.1.Value.1`) into
  nested dicts and lists.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any
from xml.sax.saxutils import escape

import botocore.loaders


@functools.lru_cache(maxsize=None)
def model(service: str) -> dict:
    return botocore.loaders.Loader().load_service_model(service, "service-2")


def shapes(service: str) -> dict:
    return model(service)["shapes"]


def operation(service: str, op: str) -> dict | None:
    return model(service)["operations"].get(op)


# ---------------------------------------------------------------- validation

def _pattern(p: str):
    # Java patterns with \p{..} classes cannot be compiled by `re`; those are skipped.
    if "\\p{" in p:
        return None
    try:
        return re.compile(p)
    except re.error:
        return None


def _member_errors(service: str, shape_name: str, value: Any, path: str, out: list[str]) -> None:
    s = shapes(service)[shape_name]
    t = s["type"]
    if t == "structure":
        if not isinstance(value, dict):
            out.append(f"Value at '{path}' failed to satisfy constraint: Member must be a structure")
            return
        members = s["members"]
        for req in s.get("required", []):
            if value.get(req) is None:
                out.append(f"Value null at '{_join(path, req)}' failed to satisfy constraint: Member must not be null")
        for k, v in value.items():
            if k in members and v is not None:
                _member_errors(service, members[k]["shape"], v, _join(path, k), out)
        if s.get("union"):
            set_members = [k for k, v in value.items() if v is not None]
            if len(set_members) != 1:
                out.append(f"Value at '{path}' failed to satisfy constraint: exactly one member of the union must be set")
        return
    if t == "list":
        if not isinstance(value, list):
            out.append(f"Value at '{path}' failed to satisfy constraint: Member must be a list")
            return
        _limits(s, len(value), value, path, out, what="length")
        for i, item in enumerate(value):
            _member_errors(service, s["member"]["shape"], item, f"{path}.{i + 1}.member", out)
        return
    if t == "map":
        if not isinstance(value, dict):
            out.append(f"Value at '{path}' failed to satisfy constraint: Member must be a map")
            return
        _limits(s, len(value), value, path, out, what="length")
        for k, v in value.items():
            _member_errors(service, s["key"]["shape"], k, f"{path}.key", out)
            _member_errors(service, s["value"]["shape"], v, f"{path}.{k}.value", out)
        return
    if t == "string":
        if not isinstance(value, str):
            out.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must be a string")
            return
        _limits(s, len(value), value, path, out, what="length")
        if "enum" in s and value not in s["enum"]:
            out.append(f"Value '{_short(value)}' at '{path}' failed to satisfy constraint: "
                       f"Member must satisfy enum value set: [{', '.join(s['enum'])}]")
        pat = _pattern(s["pattern"]) if "pattern" in s else None
        if pat is not None and value and not pat.search(value):
            out.append(f"Value '{_short(value)}' at '{path}' failed to satisfy constraint: "
                       f"Member must satisfy regular expression pattern: {s['pattern']}")
        return
    if t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must be an integer")
            return
        _limits(s, value, value, path, out, what="value")
        return
    if t in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must be a number")
        return
    if t == "boolean":
        if not isinstance(value, bool):
            out.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must be a boolean")
        return
    if t == "timestamp":
        if isinstance(value, bool) or not isinstance(value, (int, float, dt.datetime)):
            out.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must be a timestamp")


def _limits(s: dict, n: int, value: Any, path: str, out: list[str], what: str) -> None:
    shown = f"'{_short(value)}'" if isinstance(value, (str, int)) else "[...]"
    if "min" in s and n < s["min"]:
        rel = "value greater than or equal to" if what == "value" else "length greater than or equal to"
        out.append(f"Value {shown} at '{path}' failed to satisfy constraint: Member must have {rel} {s['min']}")
    if "max" in s and n > s["max"]:
        rel = "value less than or equal to" if what == "value" else "length less than or equal to"
        out.append(f"Value {shown} at '{path}' failed to satisfy constraint: Member must have {rel} {s['max']}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def validate(service: str, op: str, params: dict) -> list[str]:
    """AWS-style constraint violations of `params` against the operation's input."""
    o = operation(service, op)
    if o is None or "input" not in o:
        return []
    out: list[str] = []
    _member_errors(service, o["input"]["shape"], params, "", out)
    return out


def validation_message(errors: list[str]) -> str:
    n = len(errors)
    return f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(errors)


# ---------------------------------------------------------------- ec2Query

def ec2_params(form: dict[str, str]) -> dict:
    """`{"Filter.1.Name": "x", "Filter.1.Value.1": "y"}` -> `{"Filter": [{"Name": "x", "Value": ["y"]}]}`.

    Numbered segments become lists (ordered by index); everything else nested dicts.
    """
    root: dict = {}
    for key, value in form.items():
        parts = [int(p) if p.isdigit() else p for p in key.split(".")]
        node = root
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):  # "A=1" and "A.1=2" both sent: keep the structured one
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if isinstance(node, dict):
        if node and all(isinstance(k, int) for k in node):
            return [_lists(node[k]) for k in sorted(node)]
        return {k: _lists(v) for k, v in node.items()}
    return node


def iso8601(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int((ts % 1) * 1000):03d}Z"


def _xml(service: str, shape_name: str, value: Any) -> str:
    s = shapes(service)[shape_name]
    t = s["type"]
    if t == "structure":
        parts = []
        for name, m in s["members"].items():
            if name in value and value[name] is not None:
                tag = m.get("locationName", name)
                parts.append(f"<{tag}>{_xml(service, m['shape'], value[name])}</{tag}>")
        return "".join(parts)
    if t == "list":
        tag = s["member"].get("locationName", "member")
        return "".join(f"<{tag}>{_xml(service, s['member']['shape'], v)}</{tag}>" for v in value)
    if t == "boolean":
        return "true" if value else "false"
    if t == "timestamp":
        return iso8601(float(value))
    return escape(str(value))


def ec2_xml(op: str, result: dict, request_id: str) -> str:
    out_shape = operation("ec2", op)["output"]["shape"]
    ns = "http://ec2.amazonaws.com/doc/2016-11-15/"
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{op}Response xmlns="{ns}">'
            f"<requestId>{request_id}</requestId>{_xml('ec2', out_shape, result)}</{op}Response>")


def ec2_error_xml(code: str, message: str, request_id: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
