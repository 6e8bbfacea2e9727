"""The critical-path analysis of the time-to-Slack bench (bench/critical_path.py) on
recorded runs: a hand-made run whose every figure is known, and a run recorded by
`bench/time_to_slack.py` (bench/testdata/, release binaries, profile aws-us-east-1)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import critical_path as cp  # noqa: E402
import latency_proxy as lp  # noqa: E402

A2I, NF = cp.A2I, cp.NF
T = 1000.0  # time 0 of the hand-made run, in seconds


def at(ms: float) -> float:
    return T + ms / 1000


def call(fn: str, service: str, op: str, start: float, end: float, detail: str = "", new: bool = False,
         latency: float = 5.0, handshake: float = 0.0) -> dict:
    return {"function": fn, "service": service, "op": op, "detail": detail, "new_conn": new, "t_recv": at(start),
            "t_done": at(end), "latency_ms": latency, "handshake_ms": handshake, "upstream_ms": 1.0,
            "injected_ms": end - start - 1.0 - 0.25}  # 0.25 ms of the proxy's own per call


def made_run() -> dict:
    """A cold OpsCenter run (ms from time 0): alarm-to-incident starts at 11, publishes
    80-95; notify-fanout is handed the event at 160, starts at 171; the local Slack has
    the message at 290 (the post runs 215-330). The thread read (205-210) runs inside
    the delivery claim (201-214)."""
    calls = [
        call(A2I, "dynamodb", "GetItem", 13, 26, "alarm", new=True, handshake=8),
        call(A2I, "dynamodb", "GetItem", 27, 32, "incident"),
        call(A2I, "dynamodb", "TransactWriteItems", 33, 45, "alarm+incident", latency=12),
        call(A2I, "ssm", "CreateOpsItem", 46, 70, new=True, latency=60, handshake=8),
        call(A2I, "dynamodb", "PutItem", 71, 76, "incident"),
        call(A2I, "sns", "Publish", 80, 95, new=True, latency=15, handshake=8),
        call(A2I, "dynamodb", "PutItem", 96, 101, "incident"),  # after the Publish: not on the path
        call(NF, "secretsmanager", "GetSecretValue", 172, 200, new=True, latency=20, handshake=8),
        call(NF, "dynamodb", "PutItem", 201, 214, "delivery", new=True, handshake=8),
        call(NF, "dynamodb", "GetItem", 205, 210, "thread"),
        call(NF, "slack", "chat.postMessage", 215, 330, new=True, latency=100, handshake=10),
        call(NF, "dynamodb", "PutItem", 331, 336, "thread"),  # after the message
    ]
    return {"t0": T, "cold": True,
            "a2i": {"spawned": T, "ready": at(10), "started": at(11), "ended": at(110)},
            "publish": {"t_recv": at(80), "t_done": at(95)}, "handover": at(160), "due": at(159),
            "nf": {"spawned": at(160), "ready": at(170), "started": at(171), "ended": at(340)},
            "slack_at": at(290), "calls": calls}


@pytest.fixture(scope="module")
def profile() -> lp.Profile:
    return lp.load_profile("aws-us-east-1")


def test_segments_add_up_to_the_time_to_slack(profile):
    a = cp.analyse(made_run(), profile)
    assert a["time_to_slack_ms"] == pytest.approx(290)
    seg = dict(a["segments"])
    assert seg["alarm-to-incident start (init)"] == pytest.approx(11)
    assert seg["alarm-to-incident calls"] == pytest.approx(13 + 5 + 12 + 24 + 5 + 15)
    assert seg["alarm-to-incident own time"] == pytest.approx(2 + 1 + 1 + 1 + 1 + 4)
    assert seg["SNS delivery (Publish answered -> notify-fanout handed the event)"] == pytest.approx(65)
    assert seg["notify-fanout start (init)"] == pytest.approx(11)
    # The thread read inside the delivery claim adds nothing; the post counts until Slack has the message.
    assert seg["notify-fanout calls"] == pytest.approx(28 + 13 + 0 + 75)
    assert seg["notify-fanout own time"] == pytest.approx(1 + 1 + 1)
    assert a["unaccounted_ms"] == pytest.approx(0, abs=1e-6)
    assert a["init_ms"] == {A2I: pytest.approx(10), NF: pytest.approx(10)}
    assert a["handover_late_ms"] == pytest.approx(1)
    assert a["proxy_ms"] == pytest.approx(10 * 0.25)  # the ten calls on the two paths


def test_path_stops_at_the_publish_and_at_the_message(profile):
    a = cp.analyse(made_run(), profile)
    assert [(c["op"], c["detail"]) for c in a["paths"][A2I]] == [
        ("GetItem", "alarm"), ("GetItem", "incident"), ("TransactWriteItems", "alarm+incident"),
        ("CreateOpsItem", ""), ("PutItem", "incident"), ("Publish", "")]
    assert [c["op"] for c in a["paths"][NF]] == ["GetSecretValue", "PutItem", "GetItem", "chat.postMessage"]
    thread = a["paths"][NF][2]
    assert thread["adds_ms"] == 0 and thread["own_before_ms"] == 0 and thread["duration_ms"] == pytest.approx(5)


def test_roles_say_what_must_be_sequential(profile):
    a = cp.analyse(made_run(), profile)
    roles = {(c["function"], c["op"], c["detail"]): c["role"] for p in a["paths"].values() for c in p}
    assert roles == {
        (A2I, "GetItem", "alarm"): "required", (A2I, "GetItem", "incident"): "concurrent",
        (A2I, "TransactWriteItems", "alarm+incident"): "required", (A2I, "CreateOpsItem", ""): "required",
        (A2I, "PutItem", "incident"): "concurrent", (A2I, "Publish", ""): "required",
        (NF, "GetSecretValue", ""): "required", (NF, "PutItem", "delivery"): "required",
        (NF, "GetItem", "thread"): "concurrent", (NF, "chat.postMessage", ""): "required"}
    assert cp.classify(A2I, "ssm", "DescribeOpsItems", "")[0] == "merge"
    assert cp.classify(A2I, "ssm", "StartAutomationExecution", "")[0] == "off-path"
    assert cp.classify(NF, "dynamodb", "PutItem", "pace")[0] == "concurrent"
    role, _, why = cp.classify(NF, "kms", "Decrypt", "")
    assert role == "required" and why.startswith("UNCLASSIFIED")


def test_lower_bound_is_the_required_steps_at_the_profiles_cost(profile):
    cold = cp.analyse(made_run(), profile)
    # read 5+8, decide 12, open 60+8, publish: its connection 8 (the rest is the delivery),
    # SNS delivery 73, settings 20+8, claim 5+8, post 10 + 98 % of 100.
    assert [(s["function"], s["step"], s["ms"]) for s in cold["lower_bound_steps"]] == [
        (A2I, "read state", 13.0), (A2I, "decide + claim", 12.0), (A2I, "open incident", 68.0),
        (A2I, "publish", 8.0), ("SNS", "delivery to notify-fanout", 73.0), (NF, "read settings", 28.0),
        (NF, "claim delivery", 13.0), (NF, "post", pytest.approx(108.0))]
    assert cold["lower_bound_ms"] == pytest.approx(323.0)
    warm_run = made_run()
    warm_run["cold"] = False
    warm = cp.analyse(warm_run, profile)
    assert warm["lower_bound_ms"] == pytest.approx(5 + 12 + 60 + 0 + 73 + 20 + 5 + 98)


def test_lower_bound_of_the_none_profile_is_zero():
    a = cp.analyse(made_run(), lp.load_profile("none"))
    assert a["lower_bound_ms"] == 0


def test_aggregate_takes_medians_of_the_most_common_call_sequence(profile):
    runs = [made_run(), made_run(), made_run()]
    slower = runs[1]
    slower["slack_at"] = at(310)  # 20 ms later, one run of three
    variant = runs[2]
    variant["calls"] = [c for c in variant["calls"] if c["detail"] != "thread" or c["t_recv"] > at(300)]
    agg = cp.aggregate([cp.analyse(r, profile) for r in runs])
    assert agg["runs"] == 3 and agg["p50_ms"] == pytest.approx(290) and agg["max_ms"] == pytest.approx(310)
    assert agg["ratio"] == pytest.approx(290 / 323)
    nf = agg["paths"][NF]
    assert nf["variants"] == 2 and nf["runs"] == 2 and nf["of"] == 3
    assert [c["op"] for c in nf["calls"]] == ["GetSecretValue", "PutItem", "GetItem", "chat.postMessage"]
    assert nf["calls"][3]["adds_ms"] == pytest.approx(85)  # median of 75 and 95
    assert agg["adds_by_role"][f"{NF}|concurrent"] == 0
    text = "\n".join(cp.render(agg, "OpsCenter, cold"))
    assert "p50 / lower bound = **0.90**" in text and "| 1 | secretsmanager GetSecretValue | yes |" in text


def test_aggregate_refuses_no_runs():
    with pytest.raises(ValueError):
        cp.aggregate([])


RECORDED = BENCH / "testdata" / "tts-opscenter-cold.json"


@pytest.mark.skipif(not RECORDED.exists(), reason="no recorded run")
def test_recorded_run_of_the_release_binaries(profile):
    run = json.loads(RECORDED.read_text())
    a = cp.analyse(copy.deepcopy(run), profile)
    assert a["unaccounted_ms"] == pytest.approx(0, abs=1e-6)
    assert sum(v for _, v in a["segments"]) == pytest.approx(a["time_to_slack_ms"])
    a2i = [(c["service"], c["op"], c["role"]) for c in a["paths"][A2I]]
    # alarm-to-incident's open path as recorded: every call before the Publish classified.
    assert a2i[0] == ("dynamodb", "GetItem", "required") and a2i[-1] == ("sns", "Publish", "required")
    assert ("ssm", "CreateOpsItem", "required") in a2i
    assert all(not c["why"].startswith("UNCLASSIFIED") for p in a["paths"].values() for c in p)
    nf = [(c["service"], c["op"]) for c in a["paths"][NF]]
    assert nf[0] == ("secretsmanager", "GetSecretValue") and nf[-1] == ("slack", "chat.postMessage")
    # Cold: the first call of each process to each service is on a new connection.
    for fn in (A2I, NF):
        seen: set[str] = set()
        for c in a["paths"][fn]:
            assert c["new_conn"] == (c["service"] not in seen), (fn, c["service"], c["op"])
            seen.add(c["service"])
    assert a["lower_bound_ms"] == pytest.approx(323.0)
