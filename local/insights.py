"""A subset of the CloudWatch Logs Insights query language, evaluated over records
held in memory (the emulator's tunnel logs). moto accepts queries but ignores their
filters, so the emulator runs them itself.

Supported commands: `fields`, `display`, `filter`, `sort`, `limit`, `dedup`,
`stats` (count, count_distinct, min, max, avg, sum, latest, earliest; `by` fields
and `bin(5m)`). Filter expressions: `and`/`or`/`not`, parentheses, `= != < <= > >=`,
`like`/`not like` with "text" or /regex/, `=~ /regex/`, `in [..]`/`not in [..]`,
and the functions ispresent, isempty, isblank, strcontains, tolower, toupper.
Anything else is a MalformedQueryException naming what is not supported, so a
query that the local demo cannot answer fails loudly instead of returning
wrong data.

Records are dicts of fields: `@timestamp` (epoch ms), `@message`, `@logStream`,
`@log` and the fields discovered in a JSON message (nested keys joined by `.`).
JSON booleans become 1/0, as Logs Insights shows them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Callable


class MalformedQuery(ValueError):
    pass


# ---------------------------------------------------------------- records

def record(message: str | dict, timestamp_ms: int, log_group: str, stream: str) -> dict:
    """A log event as Insights sees it: system fields plus discovered JSON fields."""
    text = message if isinstance(message, str) else json.dumps(message, separators=(",", ":"))
    rec: dict[str, Any] = {"@timestamp": int(timestamp_ms), "@message": text,
                           "@logStream": stream, "@log": log_group}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        _flatten(parsed, "", rec)
    return rec


def _flatten(obj: dict, prefix: str, out: dict) -> None:
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _flatten(v, key + ".", out)
        elif isinstance(v, bool):
            out[key] = 1 if v else 0
        elif isinstance(v, list):
            out[key] = json.dumps(v, separators=(",", ":"))
        elif v is not None:
            out[key] = v


def render(field: str, value: Any) -> str:
    if field == "@timestamp" or field.startswith("bin("):
        return dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------- tokens

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<num>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<op>=~|!=|<=|>=|=|<|>|\(|\)|\[|\]|,|\*)
  | (?P<ident>`[^`]+`|[@A-Za-z_][\w.@$-]*)
  | (?P<regex>/(?:[^/\\]|\\.)*/i?)
""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            raise MalformedQuery(f"unexpected character {text[i]!r} at position {i} in {text!r}")
        i = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        val = m.group(kind)
        if kind == "ident" and val.startswith("`"):
            val = val[1:-1]
        out.append((kind, val))
    return out


def _split_pipes(query: str) -> list[str]:
    lines = [ln for ln in query.splitlines() if not ln.strip().startswith("#")]
    text, parts, cur, quote, depth = "\n".join(lines), [], [], None, 0
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'/":
            quote = c
            cur.append(c)
        elif c in "([":
            depth += 1
            cur.append(c)
        elif c in ")]":
            depth -= 1
            cur.append(c)
        elif c == "|" and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


# ---------------------------------------------------------------- expressions

class _Parser:
    def __init__(self, toks: list[tuple[str, str]]):
        self.t = toks
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str] | None:
        return self.t[self.i + k] if self.i + k < len(self.t) else None

    def kw(self, word: str) -> bool:
        p = self.peek()
        if p and p[0] == "ident" and p[1].lower() == word:
            self.i += 1
            return True
        return False

    def op(self, sym: str) -> bool:
        p = self.peek()
        if p and p[0] == "op" and p[1] == sym:
            self.i += 1
            return True
        return False

    def expect_op(self, sym: str) -> None:
        if not self.op(sym):
            raise MalformedQuery(f"expected {sym!r} near {self._near()}")

    def _near(self) -> str:
        return " ".join(v for _, v in self.t[self.i:self.i + 4]) or "end of query"

    def done(self) -> bool:
        return self.i >= len(self.t)

    # expr := and ('or' and)*
    def expr(self) -> Callable[[dict], Any]:
        left = self.and_()
        while self.kw("or"):
            right = self.and_()
            left = (lambda a, b: lambda r: bool(a(r)) or bool(b(r)))(left, right)
        return left

    def and_(self):
        left = self.not_()
        while self.kw("and"):
            right = self.not_()
            left = (lambda a, b: lambda r: bool(a(r)) and bool(b(r)))(left, right)
        return left

    def not_(self):
        if self.kw("not"):
            inner = self.not_()
            return lambda r: not inner(r)
        return self.cmp()

    def cmp(self):
        left = self.operand()
        p = self.peek()
        if p is None:
            return left
        if p[0] == "op" and p[1] in ("=", "!=", "<", "<=", ">", ">="):
            self.i += 1
            right = self.operand()
            return _compare(p[1], left, right)
        if p[0] == "op" and p[1] == "=~":
            self.i += 1
            rx = self.pattern(regex_only=True)
            return lambda r: _matches(rx, left(r))
        negate = False
        if p[0] == "ident" and p[1].lower() == "not" and self.peek(1) and self.peek(1)[1].lower() in ("like", "in"):
            self.i += 1
            negate = True
        if self.kw("like"):
            rx = self.pattern()
            return (lambda r: not _matches(rx, left(r))) if negate else (lambda r: _matches(rx, left(r)))
        if self.kw("in"):
            self.expect_op("[")
            values = []
            while not self.op("]"):
                if values:
                    self.expect_op(",")
                values.append(self.literal())
            f = lambda r: any(_eq(left(r), v) for v in values)  # noqa: E731
            return (lambda r: not f(r)) if negate else f
        return left

    def pattern(self, regex_only: bool = False):
        kind, val = self.t[self.i] if not self.done() else (None, None)
        self.i += 1
        if kind == "regex":
            flags = re.IGNORECASE if val.endswith("i") else 0
            body = val[1:-2] if val.endswith("i") else val[1:-1]
            try:
                return re.compile(body, flags)
            except re.error as e:
                raise MalformedQuery(f"invalid regular expression /{body}/: {e}") from None
        if kind == "str" and not regex_only:
            return re.compile(re.escape(_unquote(val)))
        raise MalformedQuery(f"expected a /regex/{'' if regex_only else ' or a string'} near {val!r}")

    def literal(self):
        kind, val = self.t[self.i] if not self.done() else (None, None)
        self.i += 1
        if kind == "str":
            return _unquote(val)
        if kind == "num":
            return float(val)
        raise MalformedQuery(f"expected a literal near {val!r}")

    def operand(self):
        if self.done():
            raise MalformedQuery("expression ends too early")
        kind, val = self.t[self.i]
        if kind == "op" and val == "(":
            self.i += 1
            inner = self.expr()
            self.expect_op(")")
            return inner
        if kind == "str":
            self.i += 1
            s = _unquote(val)
            return lambda r: s
        if kind == "num":
            self.i += 1
            n = float(val)
            return lambda r: n
        if kind == "ident":
            self.i += 1
            if self.op("("):
                args = []
                while not self.op(")"):
                    if args:
                        self.expect_op(",")
                    args.append(self.expr())
                return _function(val.lower(), args)
            if val.lower() in ("true", "false"):
                b = 1 if val.lower() == "true" else 0
                return lambda r: b
            return lambda r, name=val: r.get(name)
        raise MalformedQuery(f"unexpected {val!r}")


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1])


def _num(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _eq(a, b) -> bool:
    if a is None or b is None:
        return False
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return na == nb
    return str(a) == str(b)


def _compare(op: str, left, right):
    def f(r):
        a, b = left(r), right(r)
        if op == "=":
            return _eq(a, b)
        if op == "!=":
            return a is not None and not _eq(a, b)
        if a is None or b is None:
            return False
        na, nb = _num(a), _num(b)
        x, y = (na, nb) if na is not None and nb is not None else (str(a), str(b))
        return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
    return f


def _matches(rx: re.Pattern, v) -> bool:
    return v is not None and rx.search(str(v)) is not None


def _function(name: str, args: list):
    def arg(i):
        if i >= len(args):
            raise MalformedQuery(f"{name}() needs {i + 1} argument(s)")
        return args[i]

    if name == "ispresent":
        a = arg(0)
        return lambda r: a(r) is not None
    if name == "isempty":
        a = arg(0)
        return lambda r: a(r) is None or str(a(r)) == ""
    if name == "isblank":
        a = arg(0)
        return lambda r: a(r) is None or str(a(r)).strip() == ""
    if name == "strcontains":
        a, b = arg(0), arg(1)
        return lambda r: a(r) is not None and str(b(r)) in str(a(r))
    if name in ("tolower", "toupper"):
        a = arg(0)
        fn = str.lower if name == "tolower" else str.upper
        return lambda r: None if a(r) is None else fn(str(a(r)))
    raise MalformedQuery(f"function {name}() is not supported by the local emulator")


def _parse_expr(text: str):
    p = _Parser(_tokens(text))
    f = p.expr()
    if not p.done():
        raise MalformedQuery(f"unexpected {p._near()!r} in filter")
    return f


# ---------------------------------------------------------------- commands

_AGGS = ("count", "count_distinct", "min", "max", "avg", "sum", "latest", "earliest")
_BIN_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _split_commas(text: str) -> list[str]:
    out, cur, depth = [], [], 0
    for c in text:
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _field_name(text: str) -> str:
    t = text.strip()
    return t[1:-1] if t.startswith("`") else t


def _parse_stats(body: str):
    m = re.search(r"\s+by\s+", body, re.IGNORECASE)
    aggs_text, by_text = (body[:m.start()], body[m.end():]) if m else (body, "")
    aggs = []
    for a in _split_commas(aggs_text):
        am = re.fullmatch(r"(\w+)\s*\(\s*([^)]*)\)\s*(?:as\s+(\S+))?", a, re.IGNORECASE)
        if not am or am.group(1).lower() not in _AGGS:
            raise MalformedQuery(f"stats expression {a!r} is not supported by the local emulator")
        fn, field, alias = am.group(1).lower(), am.group(2).strip(), am.group(3)
        aggs.append((fn, _field_name(field) if field else "*", alias or f"{am.group(1)}({field})"))
    by = []
    for b in _split_commas(by_text):
        bm = re.fullmatch(r"bin\s*\(\s*(\d+)\s*(ms|s|m|min|h|d)\s*\)(?:\s+as\s+(\S+))?", b, re.IGNORECASE)
        if bm:
            width = int(bm.group(1)) * _BIN_UNITS[bm.group(2).lower()]
            name = bm.group(3) or f"bin({bm.group(1)}{bm.group(2)})"
            by.append((name, lambda r, w=width: (r["@timestamp"] // w) * w))
        else:
            fm = re.fullmatch(r"(\S+)(?:\s+as\s+(\S+))?", b.strip())
            if not fm:
                raise MalformedQuery(f"stats grouping {b!r} is not supported")
            f = _field_name(fm.group(1))
            by.append((fm.group(2) or f, lambda r, f=f: r.get(f)))
    return aggs, by


def _aggregate(fn: str, field: str, rows: list[dict]):
    if fn == "count":
        return len(rows) if field == "*" else sum(1 for r in rows if r.get(field) is not None)
    vals = [r for r in rows if r.get(field) is not None]
    if fn == "count_distinct":
        return len({str(r[field]) for r in vals})
    if fn in ("latest", "earliest"):
        if not vals:
            return None
        pick = max if fn == "latest" else min
        return pick(vals, key=lambda r: r["@timestamp"])[field]
    nums = [n for n in (_num(r[field]) for r in vals) if n is not None]
    if not nums:
        return None
    return {"min": min(nums), "max": max(nums), "sum": sum(nums), "avg": sum(nums) / len(nums)}[fn]


def run(query: str, records: list[dict], limit: int | None = None) -> tuple[list[list[dict]], int]:
    """Runs `query` over `records`; returns (result rows as [{field, value}], records matched)."""
    rows = list(records)
    fields: list[str] | None = None
    explicit_sort = False
    max_rows = limit or 10_000
    grouped = False
    for cmd in _split_pipes(query):
        name, _, body = cmd.partition(" ")
        name, body = name.lower(), body.strip()
        if name in ("fields", "display"):
            names = [_field_name(f) for f in _split_commas(body)]
            for n in names:
                if "(" in n or " " in n:
                    raise MalformedQuery(f"computed field {n!r} is not supported by the local emulator")
            fields = names if name == "display" or fields is None or grouped else fields + names
        elif name == "filter":
            pred = _parse_expr(body)
            rows = [r for r in rows if pred(r)]
        elif name == "sort":
            keys = []
            for part in _split_commas(body):
                bits = part.split()
                desc = len(bits) > 1 and bits[1].lower() == "desc"
                keys.append((_field_name(bits[0]), desc))
            for f, desc in reversed(keys):
                present = [r for r in rows if r.get(f) is not None]
                missing = [r for r in rows if r.get(f) is None]
                present.sort(key=lambda r: (_num(r[f]) is None, _num(r[f]) or 0, str(r[f])), reverse=desc)
                rows = present + missing
            explicit_sort = True
        elif name == "limit":
            try:
                max_rows = min(max_rows, int(body))
            except ValueError:
                raise MalformedQuery(f"limit needs a number, got {body!r}") from None
        elif name == "dedup":
            seen, kept = set(), []
            names = [_field_name(f) for f in _split_commas(body)]
            for r in rows:
                key = tuple(str(r.get(n)) for n in names)
                if key not in seen:
                    seen.add(key)
                    kept.append(r)
            rows = kept
        elif name == "stats":
            aggs, by = _parse_stats(body)
            groups: dict[tuple, list[dict]] = {}
            for r in rows:
                groups.setdefault(tuple(fn(r) for _, fn in by), []).append(r)
            if not by and not groups:
                groups[()] = []
            out = []
            for key, members in groups.items():
                row = {name_: k for (name_, _), k in zip(by, key) if k is not None}
                for fn, field, alias in aggs:
                    v = _aggregate(fn, field, members)
                    if v is not None:
                        row[alias] = v
                out.append(row)
            rows = out
            fields = [n for n, _ in by] + [a for _, _, a in aggs]
            grouped = True
        else:
            raise MalformedQuery(f"command {name!r} is not supported by the local emulator")
    matched = len(rows)
    if not explicit_sort and not grouped:
        rows.sort(key=lambda r: r.get("@timestamp", 0), reverse=True)
    if fields is None:
        fields = ["@timestamp", "@message", "@logStream", "@log"]
    result = []
    for i, r in enumerate(rows[:max_rows]):
        cells = [{"field": f, "value": render(f, r[f])} for f in fields if r.get(f) is not None]
        if not grouped:
            cells.append({"field": "@ptr", "value": f"ptr-{i}-{r.get('@timestamp', 0)}"})
        result.append(cells)
    return result, matched
