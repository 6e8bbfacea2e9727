"""What the Rust sources of a Lambda function read and call, for the template wiring test.

A deliberately small static analysis, good enough to keep template.yaml honest:

* Sources: the module tree of the function's crate (from src/main.rs), plus the workspace
  library crates it depends on (`shared`). Code under `#[cfg(test)]` (or any cfg that is
  false in a release build, such as `feature = "testing"`) and `#[test]` items is dropped.
* Reachability: the whole function crate counts. In a library crate a `fn` counts once its
  name appears as an identifier in code that counts (by name, so trait methods reached
  through `dyn Trait` count for every implementation); a `fn` of an `impl Type` block
  (inherent or trait) also needs `Type` named there, since no value of a type that code
  never names can reach its methods (common names such as `from_env` or `new` would
  otherwise pull in every type's), and its name used as a member (`.name` or `::name`),
  the only way Rust calls or refers to a method: a bare `open` is a variable or a free
  function, never a method (a `let open`/`open: bool` would otherwise pull in every
  `fn open` of an impl). This over-approximates, which can only make the test ask for
  more permissions, never fewer.
* SDK operations: a zero-argument method call `.create_ops_item()` (how every AWS SDK for
  Rust operation starts its fluent builder) or a path call `Client::create_ops_item(..)`,
  whose name is an operation of an `aws-sdk-*` crate the calling crate depends on. The
  operation's IAM action is read from the SDK crate itself (`src/operation/<op>.rs`).
  A name that several of those SDK crates define, and that the file does not disambiguate
  by naming exactly one of them, is an error, not a guess.
* Environment: `.required("X"`, `.optional("X"`, `.parse_or("X"`, `.flag("X"`, `.arn("X"`,
  `.optional_arn("X"`, `.http_url("X"` (the `shared::config::Env` reader) and `std::env::var("X")`. A name
  given as a `const` is resolved; any other non-literal name is an error.

Everything that cannot be attributed is reported in `Analysis.problems`; the test fails on
any of them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# IAM service prefix of each AWS SDK for Rust crate the project may use.
SDK_CRATE_IAM_PREFIX = {
    "aws-sdk-cloudwatch": "cloudwatch",
    "aws-sdk-cloudwatchlogs": "logs",
    "aws-sdk-dynamodb": "dynamodb",
    "aws-sdk-ec2": "ec2",
    "aws-sdk-eventbridge": "events",
    "aws-sdk-kms": "kms",
    "aws-sdk-lambda": "lambda",
    "aws-sdk-s3": "s3",
    "aws-sdk-scheduler": "scheduler",
    "aws-sdk-secretsmanager": "secretsmanager",
    "aws-sdk-sns": "sns",
    "aws-sdk-sqs": "sqs",
    "aws-sdk-ssm": "ssm",
    "aws-sdk-ssmincidents": "ssm-incidents",
    "aws-sdk-sts": "sts",
}

ENV_METHODS = {"required", "optional", "parse_or", "flag", "arn", "optional_arn", "http_url"}
REQUIRED_ENV_METHODS = {"required", "arn"}


# ------------------------------------------------------------------------------- lexing


@dataclass(frozen=True)
class Tok:
    kind: str  # ident | str | num | punct
    text: str
    line: int


_PUNCT2 = {"::", "->", "=>", "==", "!=", "<=", ">=", "&&", "||", "+=", "-=", "..", "#!"}


def tokenize(src: str) -> list[Tok]:
    """Rust tokens without comments; string literals keep their (unescaped enough) value."""
    toks: list[Tok] = []
    i, n, line = 0, len(src), 1
    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += src[i] == "\n"
                    i += 1
        elif c in "rb" and re.match(r'(br|rb|r)#*"', src[i : i + 40] or ""):
            m = re.match(r'(br|rb|r)(#*)"', src[i:])
            hashes = m.group(2)
            start = i + m.end()
            end = src.find('"' + hashes, start)
            end = n if end < 0 else end
            toks.append(Tok("str", src[start:end], line))
            line += src.count("\n", i, end)
            i = end + 1 + len(hashes)
        elif c == '"' or (c == "b" and i + 1 < n and src[i + 1] == '"'):
            start_line = line
            i += 1 if c == '"' else 2
            buf = []
            while i < n and src[i] != '"':
                if src[i] == "\\" and i + 1 < n:
                    buf.append(src[i : i + 2])
                    i += 2
                    continue
                line += src[i] == "\n"
                buf.append(src[i])
                i += 1
            i += 1
            toks.append(Tok("str", "".join(buf), start_line))
        elif c == "'":
            # char literal ('a', '\n', '\u{1F600}') or lifetime ('a)
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i:])
            if m:
                toks.append(Tok("str", m.group(1), line))
                i += m.end()
            else:
                m = re.match(r"'[A-Za-z_][A-Za-z0-9_]*", src[i:])
                i += m.end() if m else 1
        elif c.isalpha() or c == "_":
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", src[i:])
            toks.append(Tok("ident", m.group(0), line))
            i += m.end()
        elif c.isdigit():
            m = re.match(r"[0-9][0-9A-Za-z_.]*", src[i:])
            toks.append(Tok("num", m.group(0), line))
            i += m.end()
        else:
            two = src[i : i + 2]
            if two in _PUNCT2:
                toks.append(Tok("punct", two, line))
                i += 2
            else:
                toks.append(Tok("punct", c, line))
                i += 1
    return toks


def _match_close(toks: list[Tok], i: int) -> int:
    """Index of the bracket closing the one at `i` (any of ( [ {)."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [pairs[toks[i].text]]
    j = i + 1
    while j < len(toks) and stack:
        t = toks[j].text if toks[j].kind == "punct" else None
        if t in pairs:
            stack.append(pairs[t])
        elif t in (")", "]", "}"):
            stack.pop()
        j += 1
    return j - 1


# ------------------------------------------------------------------------------- cfg


def _eval_cfg(toks: list[Tok], enabled_features: set[str]) -> bool:
    """Evaluates a cfg predicate (tokens inside `cfg( ... )`) for a release build."""
    pos = 0

    def parse() -> bool:
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t.kind == "ident" and t.text in ("all", "any", "not") and pos < len(toks) and toks[pos].text == "(":
            close = _match_close(toks, pos)
            pos += 1
            vals = []
            while pos < close:
                vals.append(parse())
                if pos < close and toks[pos].text == ",":
                    pos += 1
            pos = close + 1
            if t.text == "all":
                return all(vals)
            if t.text == "any":
                return any(vals)
            return not vals[0]
        if t.kind == "ident" and pos < len(toks) and toks[pos].text == "=":
            value = toks[pos + 1].text
            pos += 2
            if t.text == "feature":
                return value in enabled_features
            return True  # target_os = "linux" and the like: assume present
        if t.kind == "ident":
            return t.text not in ("test", "debug_assertions", "doc", "doctest", "miri")
        return True

    return parse() if toks else True


def strip_inactive(toks: list[Tok], enabled_features: set[str]) -> list[Tok]:
    """Drops items under a cfg that is false in a release build, and `#[test]` items."""
    out: list[Tok] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.text == "#" and i + 1 < len(toks) and toks[i + 1].text == "[":
            close = _match_close(toks, i + 1)
            attr = toks[i + 2 : close]
            inactive = False
            if attr and attr[0].text == "cfg" and len(attr) > 1 and attr[1].text == "(":
                inactive = not _eval_cfg(attr[2:-1], enabled_features)
            elif len(attr) == 1 and attr[0].text == "test":
                inactive = True
            if inactive:
                i = _skip_item(toks, close + 1)
                continue
            out.extend(toks[i : close + 1])
            i = close + 1
            continue
        out.append(t)
        i += 1
    return out


def _skip_item(toks: list[Tok], i: int) -> int:
    """Index after the item starting at `i` (attributes, then up to `;` or a `{}` body)."""
    while i + 1 < len(toks) and toks[i].text == "#" and toks[i + 1].text == "[":
        i = _match_close(toks, i + 1) + 1
    depth = 0
    while i < len(toks):
        t = toks[i].text if toks[i].kind == "punct" else None
        if t in ("(", "["):
            depth += 1
        elif t in (")", "]"):
            depth -= 1
        elif t == ";" and depth == 0:
            return i + 1
        elif t == "{" and depth == 0:
            return _match_close(toks, i) + 1
        i += 1
    return i


# ------------------------------------------------------------------------------- crates


@dataclass
class FnItem:
    name: str
    file: Path
    line: int
    body: list[Tok]
    start: int = 0  # index of `fn` in the file's tokens
    body_start: int = 0  # index of the body's `{`
    end: int = 0  # index of the body's `}`
    impl_type: str | None = None  # `Type` of the enclosing `impl [Trait for] Type { .. }`


@dataclass
class SourceFile:
    path: Path
    toks: list[Tok]
    fns: list[FnItem] = field(default_factory=list)
    outside_fns: list[Tok] = field(default_factory=list)
    outside_ranges: list[tuple[int, int]] = field(default_factory=list)
    # Tokens that define or implement a type rather than use it: the name after
    # `struct`/`enum`/`trait`/`type`/`union`, and `impl` headers up to their `{`.
    not_uses: set[int] = field(default_factory=set)


@dataclass
class Crate:
    name: str
    root_dir: Path
    files: list[SourceFile]
    sdk_deps: list[str]  # aws-sdk-* package names (normal dependencies)
    lib_deps: list[str]  # workspace library crates it depends on (package names)

    def all_tokens(self):
        for f in self.files:
            for t in f.toks:
                yield f, t


def _module_files(root: Path, toks_of) -> list[Path]:
    """Files of the module tree starting at a crate root file, following `mod x;`."""
    seen: list[Path] = []
    todo = [root]
    problems = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        toks = toks_of(path)
        base = path.parent if path.name in ("main.rs", "lib.rs", "mod.rs") else path.parent / path.stem
        for k, t in enumerate(toks):
            if t.text == "path" and k >= 2 and toks[k - 1].text == "[" and toks[k - 2].text == "#":
                problems.append(f"{path}:{t.line}: #[path] module attribute is not supported by the wiring test")
            if t.text == "mod" and k + 2 < len(toks) and toks[k + 1].kind == "ident" and toks[k + 2].text == ";":
                name = toks[k + 1].text
                for cand in (base / f"{name}.rs", base / name / "mod.rs"):
                    if cand.exists():
                        todo.append(cand)
                        break
                else:
                    problems.append(f"{path}:{t.line}: module file for `mod {name};` not found")
    if problems:
        raise AnalysisError("\n".join(problems))
    return seen


class AnalysisError(Exception):
    pass


def _impl_blocks(toks: list[Tok]) -> list[tuple[int, int, str]]:
    """(open brace index, close brace index, type name) of each `impl` block."""
    out = []
    for i, t in enumerate(toks):
        if t.kind != "ident" or t.text != "impl" or (i > 0 and toks[i - 1].text in ("->", "(", ",", ":", "<", "&")):
            continue  # `impl Trait` in argument or return position is not a block
        j, depth, idents, after_for = i + 1, 0, [], None
        while j < len(toks):
            x = toks[j]
            if x.kind == "punct" and x.text in ("<",):
                depth += 1
            elif x.kind == "punct" and x.text in (">",):
                depth -= 1
            elif x.kind == "punct" and x.text in ("{", ";"):
                break
            elif x.kind == "ident" and depth == 0:
                if x.text == "for":
                    after_for = len(idents)
                elif x.text == "where":
                    break
                else:
                    idents.append(x.text)
            j += 1
        while j < len(toks) and toks[j].text != "{" and toks[j].text != ";":
            j += 1
        if j >= len(toks) or toks[j].text != "{":
            continue
        candidates = idents[after_for:] if after_for is not None else idents
        # The last path segment before any generics: `crate::x::Type` -> `Type`.
        name = next((c for c in candidates if c not in ("dyn", "crate", "super", "self", "mut", "const", "unsafe")), None)
        if after_for is None and candidates:
            name = candidates[0]
        if name:
            out.append((j, _match_close(toks, j), name))
    return out


def _split_fns(sf: SourceFile) -> None:
    toks = sf.toks
    inside = [False] * len(toks)
    impls = _impl_blocks(toks)
    for k, t in enumerate(toks):
        if t.kind == "ident" and t.text in ("struct", "enum", "trait", "type", "union") and k + 1 < len(toks):
            sf.not_uses.add(k + 1)
    for i, t in enumerate(toks):
        if t.kind == "ident" and t.text == "impl" and any(lo > i and all(toks[m].text != "{" for m in range(i, lo))
                                                          for lo, _, _ in impls):
            m = i
            while m < len(toks) and toks[m].text not in ("{", ";"):
                sf.not_uses.add(m)
                m += 1
    i = 0
    while i < len(toks):
        if toks[i].text == "fn" and i + 1 < len(toks) and toks[i + 1].kind == "ident":
            name, line = toks[i + 1].text, toks[i].line
            j, depth = i + 2, 0
            body_start = None
            while j < len(toks):
                t = toks[j].text if toks[j].kind == "punct" else None
                if t in ("(", "["):
                    depth += 1
                elif t in (")", "]"):
                    depth -= 1
                elif t == ";" and depth == 0:
                    break
                elif t == "{" and depth == 0:
                    body_start = j
                    break
                j += 1
            if body_start is None:
                # A declaration without body (trait method): naming it reaches nothing.
                for k in range(i, min(j + 1, len(toks))):
                    inside[k] = True
            if body_start is not None:
                end = _match_close(toks, body_start)
                impl_type = next((ty for lo, hi, ty in impls if lo < i < hi), None)
                sf.fns.append(FnItem(name, sf.path, line, toks[body_start : end + 1], i, body_start, end, impl_type))
                # The signature belongs to the fn too: its name must not make it reachable.
                for k in range(i, end + 1):
                    inside[k] = True
        i += 1
    sf.outside_fns = [t for k, t in enumerate(toks) if not inside[k]]
    sf.outside_ranges = _ranges(inside)


def _ranges(inside: list[bool]) -> list[tuple[int, int]]:
    """Index ranges [lo, hi) of tokens outside every fn."""
    out, lo = [], None
    for k, flag in enumerate(inside + [True]):
        if not flag and lo is None:
            lo = k
        elif flag and lo is not None:
            out.append((lo, k))
            lo = None
    return out


def load_workspace(repo: Path) -> tuple[dict, dict[str, Crate], dict[str, dict[str, str]]]:
    """cargo metadata, the workspace crates, and the SDK operation index per SDK crate."""
    meta = cargo_metadata(repo)
    by_id = {p["id"]: p for p in meta["packages"]}
    members = [by_id[i] for i in meta["workspace_members"]]
    member_names = {p["name"] for p in members}
    crates: dict[str, Crate] = {}
    for p in members:
        default_features = set(p.get("features", {}).get("default", []))
        roots = [Path(t["src_path"]) for t in p["targets"] if set(t["kind"]) & {"bin", "lib"}]
        normal = [d for d in p["dependencies"] if d.get("kind") is None]
        crates[p["name"]] = load_crate(
            p["name"],
            roots,
            sdk_deps=sorted(d["name"] for d in normal if d["name"].startswith("aws-sdk-")),
            lib_deps=sorted(d["name"] for d in normal if d["name"] in member_names),
            features=default_features,
        )
    sdk_ops: dict[str, dict[str, str]] = {}
    for p in meta["packages"]:
        if p["name"].startswith("aws-sdk-") and any(p["name"] in c.sdk_deps for c in crates.values()):
            sdk_ops[p["name"]] = sdk_operations(Path(p["manifest_path"]).parent)
    return meta, crates, sdk_ops


def load_crate(name: str, roots: list[Path], sdk_deps: list[str], lib_deps: list[str], features: set[str]) -> Crate:
    """A crate's compiled sources (module trees of its bin and lib targets), split into fns."""
    cache: dict[Path, list[Tok]] = {}

    def toks_of(path: Path) -> list[Tok]:
        if path not in cache:
            cache[path] = strip_inactive(tokenize(path.read_text()), features)
        return cache[path]

    paths: list[Path] = []
    for r in roots:
        for f in _module_files(r, toks_of):
            if f not in paths:
                paths.append(f)
    files = []
    for path in paths:
        sf = SourceFile(path, toks_of(path))
        _split_fns(sf)
        files.append(sf)
    return Crate(name, roots[0].parent, files, sdk_deps, lib_deps)


def cargo_metadata(repo: Path) -> dict:
    errors = []
    for extra in (["--offline"], []):
        proc = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", *extra],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            return json.loads(proc.stdout)
        errors.append(proc.stderr.strip())
    raise AnalysisError("cargo metadata failed:\n" + "\n".join(errors))


def sdk_operations(sdk_dir: Path) -> dict[str, str]:
    """snake_case operation (the client method) -> PascalCase operation (the IAM action)."""
    ops = {}
    op_dir = sdk_dir / "src" / "operation"
    for f in sorted(op_dir.glob("*.rs")):
        m = re.search(r"^pub struct (\w+);", f.read_text(), re.MULTILINE)
        if m:
            ops[f.stem] = m.group(1)
    if not ops:
        raise AnalysisError(f"no operations found under {op_dir}")
    return ops


def bin_names(meta: dict) -> dict[str, str]:
    """Workspace binary name -> package name."""
    by_id = {p["id"]: p for p in meta["packages"]}
    out = {}
    for i in meta["workspace_members"]:
        p = by_id[i]
        for t in p["targets"]:
            if "bin" in t["kind"]:
                out[t["name"]] = p["name"]
    return out


# ------------------------------------------------------------------------------- analysis


@dataclass
class Call:
    action: str  # service:Operation
    where: str  # file:line


@dataclass
class EnvRead:
    var: str
    method: str
    where: str
    # For a name passed to a helper: the call site (file, token index). It counts only
    # when the call site is in reachable code.
    site: tuple[Path, int] | None = None


@dataclass
class Analysis:
    package: str
    calls: list[Call] = field(default_factory=list)
    env_reads: list[EnvRead] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reached: dict[str, str] = field(default_factory=dict)  # "file:line fn" -> why

    @property
    def actions(self) -> set[str]:
        return {c.action for c in self.calls}

    @property
    def env_vars(self) -> set[str]:
        return {e.var for e in self.env_reads}

    def where_action(self, action: str) -> list[str]:
        return sorted({c.where for c in self.calls if c.action == action})


def _rel(path: Path, repo: Path) -> str:
    try:
        return str(path.relative_to(repo))
    except ValueError:
        return str(path)


def analyse(package: str, crates: dict[str, Crate], sdk_ops: dict[str, dict[str, str]], repo: Path) -> Analysis:
    crate = crates[package]
    result = Analysis(package)
    missing = [d for d in _all_sdk_deps(crate, crates) if d not in SDK_CRATE_IAM_PREFIX]
    if missing:
        result.problems.append(f"{package}: unknown IAM prefix for SDK crate(s) {missing}: add them to SDK_CRATE_IAM_PREFIX")
    libs = [crates[d] for d in _lib_closure(crate, crates)]
    ctx = _Context(repo, sdk_ops, _string_consts([crate] + libs), result)

    # Names in reachable code, each with where it was first seen (for messages).
    names: dict[str, str] = {}
    path_names: dict[str, str] = {}  # identifiers used as a path segment (`x::` or `::x`)
    member_names: dict[str, str] = {}  # identifiers after `.` or `::` (how methods are named)

    def add_names(toks, lo, hi, path, skip_use, not_uses=frozenset()):
        k = lo
        while k < hi:
            t = toks[k]
            if k in not_uses:
                k += 1
                continue
            if skip_use and t.kind == "ident" and t.text in ("use", "mod") and (k == lo or toks[k - 1].text != "::"):
                while k < hi and toks[k].text != ";":
                    k += 1
                continue
            if t.kind == "ident":
                where = f"{_rel(path, repo)}:{t.line}"
                names.setdefault(t.text, where)
                if (k > 0 and toks[k - 1].text == "::") or (k + 1 < len(toks) and toks[k + 1].text == "::"):
                    path_names.setdefault(t.text, where)
                if k > 0 and toks[k - 1].text in (".", "::"):
                    member_names.setdefault(t.text, where)
            k += 1

    # The function crate: all of it.
    for sf in crate.files:
        add_names(sf.toks, 0, len(sf.toks), sf.path, skip_use=False)
        _scan(sf, 0, len(sf.toks), crate, ctx, skip_env=False)

    # Library crates: a module counts once reachable code names it (a path segment) or an
    # item it defines; a fn counts once its module counts and its name is used.
    modules = [(lib, sf, _module_name(sf.path), _defined_items(sf)) for lib in libs for sf in lib.files]
    live: set[Path] = set()
    reached: set[tuple[Path, int]] = set()
    changed = True
    while changed:
        changed = False
        for lib, sf, mod_name, items in modules:
            if sf.path in live:
                continue
            why = _module_reference(sf, mod_name, items, names, path_names)
            if why:
                live.add(sf.path)
                changed = True
                result.reached[f"{_rel(sf.path, repo)} (module)"] = why
                for lo, hi in sf.outside_ranges:
                    add_names(sf.toks, lo, hi, sf.path, skip_use=True, not_uses=sf.not_uses)
                    _scan(sf, lo, hi, lib, ctx, skip_env=False)
        for lib, sf, _, _ in modules:
            if sf.path not in live:
                continue
            for fn in sf.fns:
                if (sf.path, fn.start) in reached or fn.name not in names:
                    continue
                if fn.impl_type is not None and (fn.impl_type not in names or fn.name not in member_names):
                    continue
                reached.add((sf.path, fn.start))
                changed = True
                named_at = member_names[fn.name] if fn.impl_type else names[fn.name]
                result.reached[f"{_rel(fn.file, repo)}:{fn.line} fn {fn.name}"] = f"`{fn.name}` named at {named_at}" + (
                    f", `{fn.impl_type}` at {names[fn.impl_type]}" if fn.impl_type else "")
                add_names(sf.toks, fn.body_start, fn.end + 1, sf.path, skip_use=True)
                is_env_reader = fn.name in ENV_METHODS and _defines_env_reader(sf)
                _scan(sf, fn.body_start, fn.end + 1, lib, ctx, skip_env=is_env_reader)
    # A helper's variable counts only from call sites in reachable code.
    crate_files = {sf.path for sf in crate.files}
    live_bodies: dict[Path, list[tuple[int, int]]] = {}
    for _, sf, _, _ in modules:
        for fn in sf.fns:
            if (sf.path, fn.start) in reached:
                live_bodies.setdefault(sf.path, []).append((fn.body_start, fn.end))

    def site_live(read: EnvRead) -> bool:
        if read.site is None or read.site[0] in crate_files:
            return True
        path, k = read.site
        return path in live and not any(fn.start <= k <= fn.end for f in modules if f[1].path == path
                                        for fn in f[1].fns) or any(lo <= k <= hi for lo, hi in live_bodies.get(path, []))

    result.env_reads = [r for r in result.env_reads if site_live(r)]
    return result


@dataclass
class _Context:
    repo: Path
    sdk_ops: dict[str, dict[str, str]]
    consts: dict[str, str]
    result: Analysis


def _module_name(path: Path) -> str | None:
    if path.name in ("lib.rs", "main.rs"):
        return None  # crate root: counts once anything of the crate does
    return path.parent.name if path.name == "mod.rs" else path.stem


def _defined_items(sf: SourceFile) -> set[str]:
    """Items other modules can name: `pub` (or `pub(crate)`...) structs, enums, traits, ..."""
    t = sf.toks
    out = set()
    for k in range(1, len(t) - 1):
        if t[k].text in ("struct", "enum", "trait", "type", "union", "const", "static") and t[k + 1].kind == "ident":
            j = k - 1
            if t[j].text == ")":  # pub(crate), pub(super), pub(in path)
                while j > 0 and t[j].text != "(":
                    j -= 1
                j -= 1
            if t[j].text == "pub":
                out.add(t[k + 1].text)
    return out


def _module_reference(sf: SourceFile, mod_name: str | None, items: set[str], names, path_names) -> str | None:
    if mod_name is None:
        return "crate root"
    if mod_name in path_names:
        return f"module `{mod_name}` named at {path_names[mod_name]}"
    for item in sorted(items):
        if item in names:
            return f"`{item}` named at {names[item]}"
    return None


def _all_sdk_deps(crate: Crate, crates: dict[str, Crate]) -> list[str]:
    deps = set(crate.sdk_deps)
    for d in _lib_closure(crate, crates):
        deps |= set(crates[d].sdk_deps)
    return sorted(deps)


def _lib_closure(crate: Crate, crates: dict[str, Crate]) -> list[str]:
    out, todo = [], list(crate.lib_deps)
    while todo:
        d = todo.pop()
        if d not in out:
            out.append(d)
            todo.extend(crates[d].lib_deps)
    return out


def _defines_env_reader(sf: SourceFile) -> bool:
    t = sf.toks
    return any(t[k].text == "struct" and t[k + 1].text == "Env" for k in range(len(t) - 1))


def _string_consts(crates: list[Crate]) -> dict[str, str]:
    out = {}
    for c in crates:
        for sf in c.files:
            t = sf.toks
            for k in range(len(t) - 6):
                # const NAME: &str = "value";   (also &'static str)
                if t[k].text in ("const", "static") and t[k + 1].kind == "ident" and t[k + 2].text == ":":
                    j = k + 3
                    while j < len(t) and t[j].text not in ("=", ";"):
                        j += 1
                    if j + 1 < len(t) and t[j].text == "=" and t[j + 1].kind == "str":
                        out[t[k + 1].text] = t[j + 1].text
    return out


# Operations whose IAM authorization is not an action of the same name.
# dynamodb: TransactWriteItems/TransactGetItems are authorized per item action.
_TRANSACT_ITEM_ACTIONS = {"put": "PutItem", "update": "UpdateItem", "delete": "DeleteItem", "condition_check": "ConditionCheckItem"}


def _iam_actions(sf: SourceFile, k: int, sdk: str, op: str, ctx: _Context) -> list[str] | None:
    prefix = SDK_CRATE_IAM_PREFIX.get(sdk, sdk)
    if sdk == "aws-sdk-dynamodb" and op == "TransactGetItems":
        return ["dynamodb:GetItem"]
    if sdk == "aws-sdk-dynamodb" and op == "TransactWriteItems":
        # Which item actions: the `TransactWriteItem::builder().put(..)` chains of the file.
        t = sf.toks
        kinds = set()
        for j in range(len(t) - 6):
            if t[j].text == "TransactWriteItem" and t[j + 1].text == "::" and t[j + 2].text == "builder":
                m = j + 3
                while m + 2 < len(t) and t[m].text in ("(", ")"):
                    m += 1
                if t[m].text == "." and t[m + 1].text in _TRANSACT_ITEM_ACTIONS:
                    kinds.add(_TRANSACT_ITEM_ACTIONS[t[m + 1].text])
        if not kinds:
            return None
        return sorted(f"dynamodb:{a}" for a in kinds)
    return [f"{prefix}:{op}"]


def _scan(sf: SourceFile, lo: int, hi: int, crate: Crate, ctx: _Context, skip_env: bool) -> None:
    toks, result = sf.toks, ctx.result
    rel = _rel(sf.path, ctx.repo)
    file_sdk_mentions = None
    for k in range(max(lo, 1), hi):
        t = toks[k]
        if t.kind != "ident":
            continue
        prev = toks[k - 1].text
        nxt = toks[k + 1].text if k + 1 < len(toks) else ""
        # ---- SDK operation calls
        if prev in (".", "::") and nxt == "(":
            zero_arg = k + 2 < len(toks) and toks[k + 2].text == ")"
            path_call = prev == "::" and k >= 2 and toks[k - 2].text == "Client"
            if zero_arg or path_call:
                cands = [d for d in crate.sdk_deps if t.text in ctx.sdk_ops.get(d, {})]
                if len(cands) > 1:
                    if file_sdk_mentions is None:
                        file_sdk_mentions = _sdk_mentions(sf.path)
                    narrowed = [d for d in cands if d in file_sdk_mentions]
                    cands = narrowed if len(narrowed) == 1 else cands
                if len(cands) == 1:
                    d = cands[0]
                    actions = _iam_actions(sf, k, d, ctx.sdk_ops[d][t.text], ctx)
                    if actions is None:
                        result.problems.append(
                            f"{rel}:{t.line}: `.{t.text}()` is authorized per item, and the wiring test found no "
                            "`TransactWriteItem::builder().put/update/delete/condition_check(..)` in this file"
                        )
                    for a in actions or []:
                        result.calls.append(Call(a, f"{rel}:{t.line}"))
                elif len(cands) > 1:
                    result.problems.append(
                        f"{rel}:{t.line}: `.{t.text}()` is an operation of {cands}; the wiring test cannot tell "
                        "which client is called. Name the SDK crate in this file (e.g. a `use aws_sdk_x::Client` "
                        "import) so only one of them is mentioned."
                    )
        # ---- environment reads
        if skip_env:
            continue
        if prev == "." and t.text in ENV_METHODS:
            j = k + 1
            if j < len(toks) and toks[j].text == "::" and j + 1 < len(toks) and toks[j + 1].text == "<":
                depth = 0
                while j < len(toks):
                    if toks[j].text == "<":
                        depth += 1
                    elif toks[j].text == ">":
                        depth -= 1
                        if depth == 0:
                            j += 1
                            break
                    j += 1
            if j < len(toks) and toks[j].text == "(":
                args = _args(toks, j)
                if len(args) == ENV_ARITY[t.text]:
                    _env_arg(sf, args[0], t.text, crate, ctx)
        if t.text in ("var", "var_os") and prev == "::" and k >= 2 and toks[k - 2].text == "env" and nxt == "(":
            args = _args(toks, k + 1)
            if len(args) == 1:
                _env_arg(sf, args[0], "std::env::" + t.text, crate, ctx)


# Number of arguments of each `shared::config::Env` reader: a call with another count is
# some other API (an SDK builder's `.arn(..)`, say), not an environment read.
ENV_ARITY = {"optional": 1, "required": 2, "parse_or": 2, "flag": 2, "arn": 2, "optional_arn": 2,
             "http_url": 2}


def _args(toks: list[Tok], open_idx: int) -> list[tuple[int, int]]:
    """Token ranges [lo, hi) of the arguments of the call whose `(` is at open_idx."""
    close = _match_close(toks, open_idx)
    out, lo, depth = [], open_idx + 1, 0
    for j in range(open_idx + 1, close):
        x = toks[j].text if toks[j].kind == "punct" else None
        if x in ("(", "[", "{"):
            depth += 1
        elif x in (")", "]", "}"):
            depth -= 1
        elif x == "," and depth == 0:
            out.append((lo, j))
            lo = j + 1
    if lo < close:
        out.append((lo, close))
    return out


def _env_arg(sf: SourceFile, arg: tuple[int, int], method: str, crate: Crate, ctx: _Context, depth: int = 0) -> None:
    toks, result = sf.toks, ctx.result
    lo, hi = arg
    first = toks[lo]
    where = f"{_rel(sf.path, ctx.repo)}:{first.line}"
    single = hi - lo == 1
    site = (sf.path, lo) if depth > 0 else None
    if single and first.kind == "str":
        result.env_reads.append(EnvRead(first.text, method, where, site))
        return
    if single and first.kind == "ident" and first.text in ctx.consts:
        result.env_reads.append(EnvRead(ctx.consts[first.text], method, where, site))
        return
    if single and first.kind == "ident" and depth == 0:
        # A helper's parameter: `fn minutes(env: &Env, var: &str, ..) { env.parse_or(var, ..) }`
        # or `let days = |var: &str, ..| env.parse_or(var, ..)`: read the literal at each call site.
        sites = _helper_call_sites(sf, lo, first.text, crate)
        if sites:
            for site_sf, site_arg in sites:
                _env_arg(site_sf, site_arg, method, crate, ctx, depth + 1)
            return
    text = " ".join(t.text for t in toks[lo:hi])
    result.problems.append(
        f"{where}: environment variable read by `{method}` with a name the wiring test cannot resolve "
        f"(`{text}`): pass a string literal, a `const NAME: &str`, or a helper parameter given literals."
    )


def _helper_call_sites(sf: SourceFile, idx: int, param: str, crate: Crate):
    """Call sites of the fn or closure around token `idx` that takes `param`, with that argument."""
    toks = sf.toks
    # Innermost closure `let name = [move] |..param..|` before idx, else the enclosing fn.
    helper = None
    for j in range(idx - 1, -1, -1):
        if toks[j].text == "|" and j >= 4:
            # find the opening bar of this parameter list
            o = j - 1
            while o > 0 and toks[o].text != "|":
                o -= 1
            params = toks[o + 1 : j]
            start = o - 1 if toks[o - 1].text == "move" else o
            if toks[start - 1].text == "=" and toks[start - 2].kind == "ident" and toks[start - 3].text == "let":
                pos = _param_position(params, param)
                if pos is not None:
                    helper = (toks[start - 2].text, pos, False)
                    break
        if toks[j].text == "fn" and toks[j + 1].kind == "ident" and toks[j + 2].text in ("(", "<"):
            p_open = j + 2
            if toks[p_open].text == "<":
                depth = 0
                while p_open < len(toks):
                    if toks[p_open].text == "<":
                        depth += 1
                    elif toks[p_open].text == ">":
                        depth -= 1
                        if depth == 0:
                            p_open += 1
                            break
                    p_open += 1
            params = toks[p_open + 1 : _match_close(toks, p_open)]
            pos = _param_position(params, param)
            if pos is not None:
                has_self = any(t.text == "self" for t in params[:3])
                helper = (toks[j + 1].text, pos - 1 if has_self else pos, has_self)
            break
    if helper is None:
        return []
    name, pos, _method = helper
    sites = []
    for other in crate.files:
        t = other.toks
        for j in range(1, len(t) - 1):
            if t[j].text == name and t[j + 1].text == "(" and t[j - 1].text != "fn":
                args = _args(t, j + 1)
                if pos < len(args):
                    sites.append((other, args[pos]))
    return sites


def _param_position(params: list[Tok], name: str) -> int | None:
    pos, depth, expect_name = 0, 0, True
    for t in params:
        x = t.text if t.kind == "punct" else None
        if x in ("(", "[", "<"):
            depth += 1
        elif x in (")", "]", ">"):
            depth -= 1
        elif x == "," and depth == 0:
            pos += 1
            expect_name = True
            continue
        if expect_name and depth == 0 and t.kind == "ident" and t.text not in ("mut", "ref"):
            if t.text == name:
                return pos
            expect_name = False
    return None


def _sdk_mentions(path: Path) -> set[str]:
    text = path.read_text()
    return {"aws-sdk-" + m for m in re.findall(r"\baws_sdk_([a-z0-9]+)\b", text)}


def is_placeholder(crate: Crate) -> bool:
    """True for the foundation's placeholder binaries: `fn main() {}` and nothing else."""
    toks = [t.text for sf in crate.files for t in sf.toks]
    return toks == ["fn", "main", "(", ")", "{", "}"]


def repo_root() -> Path:
    return Path(os.environ.get("INCIDENT_PIPELINE_REPO", Path(__file__).resolve().parents[2]))
