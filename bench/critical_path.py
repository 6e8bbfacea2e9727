"""The critical path to the first Slack message (issue 18), read from one run's record:
the latency proxy's request log (`bench/latency_proxy.py`), the Runtime API's
invocation times and the local Slack's receive time. Pure: no I/O, so it is tested on
recorded runs (`bench/test_critical_path.py`).

A run goes: the alarm is handed to alarm-to-incident (time 0); its invocation starts
(after its init when cold); it calls DynamoDB, the backend, ... and SNS Publish; SNS
delivers the notification to notify-fanout; notify-fanout starts (init when cold),
calls Secrets Manager, DynamoDB, ... and Slack; the local Slack records the message.
Those segments add up to the time to Slack, and within each function the calls are
laid on a line: what a call adds is the part of it no earlier call already covered,
and the time between calls is the function's own (CPU, runtime, SDK).

Every call on the path gets a role from [RULES], the dependency model of the two
functions (which call needs which one's result):
- `required`: part of the chain that must be sequential (the decision needs the state
  read, the backend incident must exist before the message names it, no post without
  the delivery claim ...);
- `concurrent`: needs nothing from the call before it: could run alongside a
  required call;
- `merge`: could be folded into another call;
- `off-path`: does not gate the message: could run after the Publish or the post.

The lower bound is the sum, over the required steps in order, of what the profile
says each costs (a step's calls run at once: its costliest), with a connection setup
at each service's first required call in a cold process, plus the modelled SNS
delivery: the time to Slack if everything that can run concurrently did, and the
functions took no time of their own. Issue 18's target: cold time to Slack at most
1.3 times that.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any, Iterable

A2I, NF = "alarm-to-incident", "notify-fanout"
ROLES = ("required", "concurrent", "merge", "off-path")


@dataclass(frozen=True)
class Rule:
    function: str
    service: str
    op: str
    detail: str
    role: str
    step: str
    why: str

    def matches(self, function: str, service: str, op: str, detail: str) -> bool:
        return (fnmatchcase(function, self.function) and fnmatchcase(service, self.service)
                and fnmatchcase(op, self.op) and fnmatchcase(detail or "", self.detail))


# The dependency model, first match wins. `detail` is the DynamoDB key prefix the
# proxy read from the request (`alarm`, `incident`, `silences`, `delivery`, `thread`, `pace`).
RULES: tuple[Rule, ...] = (
    # alarm-to-incident: read, decide, open, publish.
    Rule(A2I, "dynamodb", "GetItem", "alarm", "required", "read state",
         "the decision needs the alarm's last applied transition"),
    Rule(A2I, "dynamodb", "GetItem", "incident", "concurrent", "read state",
         "for an ALARM the incident key comes from the rules, not from the alarm item: read both at once "
         "(or one BatchGetItem)"),
    Rule(A2I, "dynamodb", "GetItem", "silences", "concurrent", "read state",
         "the silences (issue 15's holds) are read for every transition but an OK: independent of the "
         "alarm and incident items, read at the same time"),
    Rule(A2I, "dynamodb", "TransactWriteItems", "*", "required", "decide + claim",
         "the conditional write that applies the change exactly once; after the reads, before any side effect"),
    Rule(A2I, "ssm", "DescribeOpsItems", "*", "merge", "open incident",
         "looks for an open OpsItem of the key before creating one: CreateOpsItem's dedup string already finds it "
         "(OpsItemAlreadyExistsException names the open item)"),
    Rule(A2I, "ssm", "CreateOpsItem", "*", "required", "open incident",
         "the message names the incident (id and console link)"),
    Rule(A2I, "ssm-incidents", "StartIncident", "*", "required", "open incident",
         "the message names the incident (record ARN and console link)"),
    Rule(A2I, "ssm", "StartAutomationExecution", "*", "off-path", "",
         "the diagnosis runbook does not gate the message: start it alongside or after the Publish"),
    Rule(A2I, "ssm*", "*", "*", "off-path", "", "backend work the message does not wait for"),
    Rule(A2I, "dynamodb", "PutItem", "incident", "concurrent", "",
         "saves progress after a step (for retries); nothing on the way to the message reads it, so it can run "
         "alongside the next step; the save of the incident reference must still land before a retry could "
         "open it again"),
    Rule(A2I, "sns", "Publish", "*", "required", "publish", "hands the notification to SNS"),
    Rule(A2I, "scheduler", "*", "*", "off-path", "", "the escalation timer does not gate the message"),
    # notify-fanout: settings, claim, post.
    Rule(NF, "secretsmanager", "GetSecretValue", "*", "required", "read settings",
         "destinations and their credentials come from the secret (cached per container)"),
    Rule(NF, "dynamodb", "*", "delivery", "required", "claim delivery",
         "no post without the delivery claim (an SNS retry or duplicate must not post twice)"),
    Rule(NF, "dynamodb", "GetItem", "thread", "concurrent", "claim delivery",
         "independent of the delivery claim: read at the same time (or claim the thread first with a "
         "conditional put and read only on conflict)"),
    Rule(NF, "dynamodb", "*", "thread", "concurrent", "claim delivery",
         "a conditional put of the incident's new thread, independent of the delivery claim: both at once "
         "(or one TransactWriteItems)"),
    Rule(NF, "dynamodb", "*", "pace", "concurrent", "claim delivery",
         "the channel's send slot is independent of the claims: reserve it at the same time"),
    Rule(NF, "slack", "*", "*", "required", "post", "the message itself"),
)


def classify(function: str, service: str, op: str, detail: str) -> tuple[str, str, str]:
    """(role, step, why) of a call; an unknown call counts as required, flagged."""
    for r in RULES:
        if r.matches(function, service, op, detail):
            return r.role, r.step, r.why
    return "required", f"{service} {op}", "UNCLASSIFIED: not in bench/critical_path.py RULES; counted as required"


@dataclass
class PathCall:
    function: str
    service: str
    op: str
    detail: str
    new_conn: bool
    phase: str          # "init" or "invocation"
    start_ms: float     # from time 0
    duration_ms: float  # the whole request, as the proxy saw it
    adds_ms: float      # the part on the path no earlier call covered
    own_before_ms: float  # the function's own time between the previous call (or its start) and this one
    modeled_ms: float   # what the profile makes it cost: latency (+ connection setup when new)
    upstream_ms: float  # the local server's own time
    proxy_ms: float     # the proxy's own forwarding work (neither modelled nor the server's)
    role: str
    step: str
    why: str

    @property
    def name(self) -> str:
        return f"{self.service} {self.op}" + (f" ({self.detail})" if self.detail else "")


def _ms(a: float, b: float) -> float:
    return (b - a) * 1000


def function_path(calls: Iterable[dict], function: str, start: float, invoked: float, end: float,
                  t0: float) -> tuple[list[PathCall], float]:
    """The calls of `function` between `start` (spawn or hand-over) and `end`, laid on
    the line; returns them and the function's own time after the last one."""
    mine = sorted((c for c in calls if c["function"] == function and start <= c["t_recv"] <= end),
                  key=lambda c: c["t_recv"])
    out: list[PathCall] = []
    cursor = invoked if not mine or mine[0]["t_recv"] >= invoked else start
    for c in mine:
        phase = "init" if c["t_recv"] < invoked else "invocation"
        if phase == "invocation":
            cursor = max(cursor, invoked)  # the init's calls are inside the start segment
        stop = min(c["t_done"], end)
        own = max(0.0, _ms(cursor, c["t_recv"])) if phase == "invocation" else 0.0
        adds = max(0.0, _ms(max(c["t_recv"], cursor), stop))
        role, step, why = classify(function, c["service"], c["op"], c.get("detail", ""))
        out.append(PathCall(function, c["service"], c["op"], c.get("detail", ""), bool(c["new_conn"]), phase,
                            _ms(t0, c["t_recv"]), _ms(c["t_recv"], c["t_done"]), adds, own,
                            c["latency_ms"] + c["handshake_ms"], c["upstream_ms"],
                            max(0.0, _ms(c["t_recv"], c["t_done"]) - c["upstream_ms"] - c.get("injected_ms", 0.0)),
                            role, step, why))
        cursor = max(cursor, stop)
    tail = max(0.0, _ms(max(cursor, invoked), end))
    return out, tail


def lower_bound(paths: dict[str, list[PathCall]], profile: Any, cold: bool) -> tuple[float, list[dict]]:
    """The sum of the required steps, each at the profile's cost (see the module doc).
    `profile` is a latency_proxy.Profile."""
    steps: list[dict] = []
    for function in (A2I, NF):
        seen_services: set[str] = set()
        order: list[str] = []
        cost: dict[str, float] = {}
        calls: dict[str, list[str]] = {}
        for c in paths.get(function, []):
            if c.role != "required":
                continue
            svc = profile.service(c.service)
            handshake = svc.handshake_ms if cold and c.service not in seen_services else 0.0
            seen_services.add(c.service)
            latency = svc.latency(c.op)
            if function == A2I and c.service == "sns" and c.op == "Publish":
                # From the request leaving to notify-fanout's invocation is the SNS delivery, below.
                latency = 0.0
            if function == NF and c.service == "slack":
                latency *= svc.request_share  # until Slack has the message
            if c.step not in cost:
                order.append(c.step)
                cost[c.step] = 0.0
                calls[c.step] = []
            cost[c.step] = max(cost[c.step], handshake + latency)
            calls[c.step].append(c.name)
        for s in order:
            steps.append({"function": function, "step": s, "ms": cost[s], "calls": calls[s]})
        if function == A2I:
            publish = profile.service("sns").latency("Publish")
            steps.append({"function": "SNS", "step": "delivery to notify-fanout",
                          "ms": max(profile.sns_delivery_ms, publish), "calls": ["sns Publish -> Lambda"]})
    return sum(s["ms"] for s in steps), steps


def analyse(run: dict, profile: Any) -> dict:
    """One run's segments, per-function paths and lower bound.

    `run`: t0, cold, a2i {spawned, ready, started, ended}, publish {t_recv, t_done},
    handover, nf {spawned, ready, started, ended}, slack_at, calls (proxy log entries)."""
    t0, cold = run["t0"], run["cold"]
    a2i, nf, pub = run["a2i"], run["nf"], run["publish"]
    a2i_start = a2i.get("spawned") or t0
    nf_start = nf.get("spawned") or run["handover"]
    a2i_calls, a2i_tail = function_path(run["calls"], A2I, a2i_start, a2i["started"], pub["t_done"], t0)
    nf_calls, nf_tail = function_path(run["calls"], NF, nf_start, nf["started"], run["slack_at"], t0)
    segments = [
        ("alarm-to-incident start" + (" (init)" if cold else ""), _ms(t0, a2i["started"])),
        ("alarm-to-incident calls", sum(c.adds_ms for c in a2i_calls if c.phase == "invocation")),
        ("alarm-to-incident own time", sum(c.own_before_ms for c in a2i_calls) + a2i_tail),
        ("SNS delivery (Publish answered -> notify-fanout handed the event)", _ms(pub["t_done"], run["handover"])),
        ("notify-fanout start" + (" (init)" if cold else ""), _ms(run["handover"], nf["started"])),
        ("notify-fanout calls", sum(c.adds_ms for c in nf_calls if c.phase == "invocation")),
        ("notify-fanout own time", sum(c.own_before_ms for c in nf_calls) + nf_tail),
    ]
    total = _ms(t0, run["slack_at"])
    bound, steps = lower_bound({A2I: a2i_calls, NF: nf_calls}, profile, cold)
    inits = {}
    for name, f in (("alarm-to-incident", a2i), ("notify-fanout", nf)):
        if f.get("spawned") and f.get("ready"):
            inits[name] = _ms(f["spawned"], f["ready"])
    return {"time_to_slack_ms": total, "segments": segments, "unaccounted_ms": total - sum(v for _, v in segments),
            "paths": {A2I: [asdict(c) for c in a2i_calls], NF: [asdict(c) for c in nf_calls]},
            "lower_bound_ms": bound, "lower_bound_steps": steps, "init_ms": inits,
            "publish_ms": _ms(pub["t_recv"], pub["t_done"]),
            # How late the bench handed the event over compared with the model (its own
            # reaction time; 0 when the hand-over was due before the Publish answered).
            "handover_late_ms": _ms(run["due"], run["handover"]) if run.get("due") else 0.0,
            "proxy_ms": sum(c.proxy_ms for c in a2i_calls + nf_calls),
            "cpu_ms": dict(run.get("cpu_ms") or {})}


# ================================================================ many runs

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (as bench/run.py)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def _signature(path: list[dict]) -> tuple:
    return tuple((c["service"], c["op"], c["detail"], c["phase"]) for c in path)


def aggregate(analyses: list[dict]) -> dict:
    """Medians over runs: time to Slack (p50/p95), segments, lower bound, and per
    function the path of the most common call sequence with each call's median."""
    if not analyses:
        raise ValueError("no runs to aggregate")
    totals = [a["time_to_slack_ms"] for a in analyses]
    bounds = [a["lower_bound_ms"] for a in analyses]
    seg_names = [n for n, _ in analyses[0]["segments"]]
    segments = [(n, statistics.median(a["segments"][i][1] for a in analyses)) for i, n in enumerate(seg_names)]
    paths = {}
    for fn in (A2I, NF):
        sigs = Counter(_signature(a["paths"][fn]) for a in analyses)
        sig, count = sigs.most_common(1)[0]
        same = [a["paths"][fn] for a in analyses if _signature(a["paths"][fn]) == sig]
        rows = []
        for i, first in enumerate(same[0]):
            col = [p[i] for p in same]
            rows.append({**{k: first[k] for k in ("function", "service", "op", "detail", "phase", "role", "step",
                                                    "why")},
                         "new_conn": sum(1 for c in col if c["new_conn"]) / len(col),
                         **{k: statistics.median(c[k] for c in col)
                            for k in ("start_ms", "duration_ms", "adds_ms", "own_before_ms", "modeled_ms",
                                      "upstream_ms")}})
        paths[fn] = {"runs": count, "of": len(analyses), "variants": len(sigs), "calls": rows}
    steps = analyses[0]["lower_bound_steps"]
    by_role = {}
    for fn in (A2I, NF):
        for role in ROLES:
            by_role[(fn, role)] = statistics.median(
                sum(c["adds_ms"] for c in a["paths"][fn] if c["role"] == role and c["phase"] == "invocation")
                for a in analyses)
    p50 = statistics.median(totals)
    bound = statistics.median(bounds)
    inits = {k: statistics.median(a["init_ms"][k] for a in analyses if k in a["init_ms"])
             for k in (A2I, NF) if any(k in a["init_ms"] for a in analyses)}
    return {"runs": len(analyses), "p50_ms": p50, "p95_ms": pct(totals, 95), "min_ms": min(totals),
            "max_ms": max(totals), "lower_bound_ms": bound, "ratio": p50 / bound if bound > 0 else None,
            "segments": segments, "paths": paths, "lower_bound_steps": steps,
            "adds_by_role": {f"{fn}|{role}": v for (fn, role), v in by_role.items()}, "init_ms": inits,
            "unaccounted_ms": statistics.median(a["unaccounted_ms"] for a in analyses),
            "publish_ms": statistics.median(a["publish_ms"] for a in analyses),
            "handover_late_ms": statistics.median(a["handover_late_ms"] for a in analyses),
            "proxy_ms": statistics.median(a["proxy_ms"] for a in analyses),
            "cpu_ms": {k: statistics.median(a["cpu_ms"][k] for a in analyses if k in a["cpu_ms"])
                       for k in (A2I, NF) if any(k in a["cpu_ms"] for a in analyses)}}


# ================================================================ rendering

def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def path_table(agg: dict, fn: str) -> list[str]:
    p = agg["paths"][fn]
    lines = [f"| # | call | new conn. | starts at | takes | adds to the path | own time before | "
             f"modelled | local server | role | why |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, c in enumerate(p["calls"], 1):
        name = f"{c['service']} {c['op']}" + (f" ({c['detail']})" if c["detail"] else "")
        if c["phase"] == "init":
            name += " [init]"
        new = "yes" if c["new_conn"] >= 0.5 else "no"
        lines.append(f"| {i} | {name} | {new} | {fmt(c['start_ms'])} | {fmt(c['duration_ms'])} | "
                     f"{fmt(c['adds_ms'])} | {fmt(c['own_before_ms'])} | {fmt(c['modeled_ms'])} | "
                     f"{fmt(c['upstream_ms'])} | {c['role']} | {c['why']} |")
    return lines


def render(agg: dict, title: str) -> list[str]:
    """Markdown for one (backend, mode) of one profile."""
    L = [f"#### {title}", ""]
    ratio = f"{agg['ratio']:.2f}" if agg["ratio"] is not None else "n/a"
    L.append(f"Time to Slack over {agg['runs']} runs: p50 **{fmt(agg['p50_ms'])} ms**, p95 {fmt(agg['p95_ms'])} ms "
             f"(min {fmt(agg['min_ms'])}, max {fmt(agg['max_ms'])}); lower bound {fmt(agg['lower_bound_ms'])} ms; "
             f"p50 / lower bound = **{ratio}**.")
    L.append("")
    L.append("| segment | median (ms) |")
    L.append("|---|---|")
    for name, v in agg["segments"]:
        L.append(f"| {name} | {fmt(v)} |")
    L.append("")
    for fn in (A2I, NF):
        p = agg["paths"][fn]
        variants = "" if p["variants"] == 1 else f" ({p['variants']} different call sequences seen; this one in " \
                                                 f"{p['runs']} of {p['of']} runs)"
        L.append(f"{fn}, calls on the path to the message{variants}; times in ms, medians:")
        L.append("")
        L.extend(path_table(agg, fn))
        L.append("")
    if agg.get("cpu_ms"):
        L.append("The functions' time on a CPU per run (whole invocation" + (", with the init" if any(
            "init" in n for n, _ in agg["segments"]) else "") + "; the rest of their *start* and *own time* is "
                 "waiting for a CPU on this shared machine): " + ", ".join(
                     f"{k} {fmt(v)} ms" for k, v in agg["cpu_ms"].items()) + ".")
        L.append("")
    L.append(f"The bench's own share, inside the figures above: the latency proxy's forwarding "
             f"{fmt(agg['proxy_ms'])} ms over all calls on the path; the hand-over to notify-fanout "
             f"{fmt(agg['handover_late_ms'])} ms after the modelled delivery was due (medians).")
    L.append("")
    L.append("Lower bound (the required steps at the profile's cost): " + "; ".join(
        f"{s['function']} {s['step']} {fmt(s['ms'])}" for s in agg["lower_bound_steps"]) + ".")
    L.append("")
    return L
