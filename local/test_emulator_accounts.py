"""The emulator serves several accounts (organization mode): each request in the account
its credentials act in, each account with its own VPNs, tunnel logs and metrics. Keys are
mapped by the scenario, or by moto itself for credentials moto issued with
sts:AssumeRole (moto 5.2: assumed-role keys act in the role's account)."""

from __future__ import annotations

import json
import urllib.request

import boto3
import botocore.config
import pytest

import story
from emulator import Emulator

CENTRAL, MEMBER_A, MEMBER_B = "123456789012", "111122223333", "444455556666"
VPN_CENTRAL, VPN_A = "vpn-0f1e2d3c4b5a69788", "vpn-0a1a1a1a1a1a1a1a1"
T1, T2 = "203.0.113.10", "203.0.113.20"


def ec2(emu: Emulator, key: str, secret: str = "local", token: str | None = None):
    return boto3.client("ec2", endpoint_url=emu.url, region_name="eu-west-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, aws_session_token=token,
                        config=botocore.config.Config(retries={"total_max_attempts": 1}))


def vpn_ids(client) -> list[str]:
    return [v["VpnConnectionId"] for v in client.describe_vpn_connections()["VpnConnections"]]


@pytest.fixture()
def emu():
    e = Emulator().start()
    e.apply_scenario({"vpn_connections": [{"id": VPN_CENTRAL, "tunnels": [{"outside_ip": T1}, {"outside_ip": T2}]}]})
    e.apply_scenario({"account": MEMBER_A,
                      "vpn_connections": [{"id": VPN_A, "tunnels": [{"outside_ip": T1}, {"outside_ip": T2}]}]})
    yield e
    e.stop()


def test_each_account_sees_only_its_own_vpns(emu):
    emu.apply_scenario({"access_keys": {"AKIAMEMBERA": MEMBER_A, "AKIAMEMBERB": MEMBER_B}})
    assert vpn_ids(ec2(emu, "local")) == [VPN_CENTRAL]
    assert vpn_ids(ec2(emu, "AKIAMEMBERA")) == [VPN_A]
    assert vpn_ids(ec2(emu, "AKIAMEMBERB")) == [], "an account with nothing has nothing"
    # The member's resources carry the member's account in their ARNs.
    conn = ec2(emu, "AKIAMEMBERA").describe_vpn_connections()["VpnConnections"][0]
    log_arn = conn["Options"]["TunnelOptions"][0]["LogOptions"]["CloudWatchLogOptions"]["LogGroupArn"]
    assert f":{MEMBER_A}:log-group:" in log_arn
    # Calls are recorded where they were served.
    assert [c["op"] for c in emu.member(MEMBER_A).calls] == ["DescribeVpnConnections"] * 2
    state = json.loads(urllib.request.urlopen(f"{emu.url}/_state?account={MEMBER_A}").read())
    assert [v["VpnConnectionId"] for v in state["vpn_connections"]] == [VPN_A]
    assert MEMBER_A in emu.snapshot()["accounts"]


def test_credentials_moto_issued_by_assume_role_act_in_the_roles_account(emu, tmp_path):
    procs = story.Processes()
    try:
        moto = story.Moto(procs, tmp_path / "moto.log").start()
        emu.resolve_accounts_with(moto.url)
        sts = moto.client("sts")
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{MEMBER_A}:role/incident-pipeline-diagnosis",
                                RoleSessionName="test")["Credentials"]
        member = ec2(emu, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
        assert vpn_ids(member) == [VPN_A]
        assert emu.access_keys[creds["AccessKeyId"]] == MEMBER_A, "resolved once, then cached"
        # Keys moto does not know stay in the emulator's own (central) account.
        assert vpn_ids(ec2(emu, "local")) == [VPN_CENTRAL]
    finally:
        procs.stop_all()
