"""The source analysis behind the wiring test, on small Rust crates written here.

Each case is something the wiring test must see (or must refuse to guess) on the real code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import rust_source as rs

SDK_OPS = {
    "aws-sdk-ssm": {"create_ops_item": "CreateOpsItem", "update_ops_item": "UpdateOpsItem", "get_parameter": "GetParameter", "add_tags_to_resource": "AddTagsToResource"},
    "aws-sdk-ec2": {"describe_vpn_connections": "DescribeVpnConnections", "replace_vpn_tunnel": "ReplaceVpnTunnel"},
    "aws-sdk-dynamodb": {"get_item": "GetItem", "query": "Query", "tag_resource": "TagResource"},
    "aws-sdk-sns": {"publish": "Publish", "tag_resource": "TagResource"},
}

SHARED_LIB = """
//! shared
pub mod config;
pub mod backend;
#[cfg(feature = "testing")]
pub mod testing;
"""

SHARED_CONFIG = """
pub struct Env { vars: std::collections::HashMap<String, String> }
impl Env {
    pub fn optional(&self, var: &str) -> Option<String> { self.vars.get(var).cloned() }
    pub fn required(&self, var: &str, expected: &str) -> Result<String, ()> { self.optional(var).ok_or(()) }
    pub fn parse_or<T: std::str::FromStr>(&self, var: &str, default: T) -> Result<T, ()> {
        match self.optional(var) { None => Ok(default), Some(v) => v.parse().map_err(|_| ()) }
    }
    pub fn http_url(&self, var: &str, default: &str) -> Result<String, ()> {
        Ok(self.optional(var).unwrap_or_else(|| default.to_string()))
    }
}
"""

SHARED_BACKEND = """
use aws_sdk_ssm::Client;
pub struct OpsCenter { client: Client }
impl OpsCenter {
    /// Calls `.create_ops_item()` -- in a comment, must not count.
    pub async fn open(&self) { let _ = self.client.create_ops_item().title("x").send().await; }
    pub async fn add_note(&self, id: &str) { self.put_data(id).await }
    async fn put_data(&self, id: &str) {
        let _ = self.client.update_ops_item().ops_item_id(id).send().await;
        let _s = ".get_parameter()";
    }
}
#[cfg(test)]
mod tests {
    #[test]
    fn open_sends() { let c = aws_sdk_ssm::Client::new(); c.get_parameter(); }
}
"""

SHARED_TESTING = """
pub fn mock() { client.add_tags_to_resource().send(); }
"""


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def workspace(tmp_path: Path, main: str, extra: dict[str, str] | None = None, fn_sdk=("aws-sdk-ec2",)):
    write(
        tmp_path,
        {
            "shared/src/lib.rs": SHARED_LIB,
            "shared/src/config.rs": SHARED_CONFIG,
            "shared/src/backend.rs": SHARED_BACKEND,
            "shared/src/testing.rs": SHARED_TESTING,
            "functions/f/src/main.rs": main,
            **(extra or {}),
        },
    )
    shared = rs.load_crate("incident-shared", [tmp_path / "shared/src/lib.rs"], ["aws-sdk-ssm"], [], set())
    f = rs.load_crate("f", [tmp_path / "functions/f/src/main.rs"], list(fn_sdk), ["incident-shared"], set())
    crates = {"incident-shared": shared, "f": f}
    return rs.analyse("f", crates, SDK_OPS, tmp_path)


def test_reaches_only_the_shared_functions_the_crate_names(tmp_path):
    a = workspace(tmp_path, "fn main() { let b = shared::backend::OpsCenter::new(); b.add_note(\"oi-1\"); }")
    assert a.actions == {"ssm:UpdateOpsItem"}, "add_note -> put_data -> UpdateOpsItem; open is never named"
    assert a.where_action("ssm:UpdateOpsItem") == ["shared/src/backend.rs:9"]
    assert not a.problems


def test_trait_method_name_reaches_every_implementation_the_crate_names(tmp_path):
    main = "use shared::backend::OpsCenter;\nasync fn run(b: &dyn Backend) { b.open().await; b.add_note(\"x\").await; }"
    a = workspace(tmp_path, main)
    assert a.actions == {"ssm:CreateOpsItem", "ssm:UpdateOpsItem"}
    assert a.reached["shared/src/backend.rs (module)"] == "module `backend` named at functions/f/src/main.rs:1"


def test_a_variable_named_like_a_method_does_not_reach_it(tmp_path):
    # Methods are called as `.open()` or `Type::open`: a local `open` (a flag, a
    # binding) names no method, while a free function of that name still counts.
    main = (
        "use shared::backend::OpsCenter;\n"
        "fn show(open: bool) -> bool { let resolve = open; resolve }\n"
        "async fn run(b: &OpsCenter) { b.add_note(\"x\").await; }"
    )
    a = workspace(tmp_path, main)
    assert a.actions == {"ssm:UpdateOpsItem"}, "open is only a variable here"
    a = workspace(tmp_path, main + "\nfn f() { let _ = OpsCenter::open; }")
    assert a.actions == {"ssm:CreateOpsItem", "ssm:UpdateOpsItem"}, "a path to the method counts"


def test_module_neither_named_nor_used_does_not_count(tmp_path):
    # The implementation is never named, so it is not in this binary; a variable that
    # happens to be called `backend` is not a path to the module.
    a = workspace(tmp_path, "async fn run(backend: &dyn Backend) { backend.open().await; }")
    assert a.actions == set()


def test_test_code_comments_strings_and_testing_feature_do_not_count(tmp_path):
    a = workspace(tmp_path, "fn main() { b.add_note(\"x\"); }")
    assert "ssm:GetParameter" not in a.actions, "only called from #[cfg(test)]"
    assert "ssm:AddTagsToResource" not in a.actions, "only in the feature = \"testing\" module"


def test_zero_argument_call_is_an_sdk_operation_a_call_with_arguments_is_not(tmp_path):
    main = """
    async fn h(ec2: &aws_sdk_ec2::Client, http: &reqwest::Client) {
        let _ = ec2.describe_vpn_connections().vpn_connection_ids("vpn-1").send().await;
        let _ = http.get("https://slack.com").query(&[("a", "b")]).send().await;
    }
    """
    a = workspace(tmp_path, main, fn_sdk=("aws-sdk-ec2", "aws-sdk-dynamodb"))
    assert a.actions == {"ec2:DescribeVpnConnections"}


def test_path_call_on_client_counts(tmp_path):
    main = "async fn h(c: &Client) { let f = aws_sdk_ec2::Client::replace_vpn_tunnel(c); }"
    a = workspace(tmp_path, main)
    assert a.actions == {"ec2:ReplaceVpnTunnel"}


def test_cfg_not_test_code_counts(tmp_path):
    main = "#[cfg(not(test))]\nfn real(c: &aws_sdk_ec2::Client) { c.replace_vpn_tunnel(); }\nfn main() {}"
    assert workspace(tmp_path, main).actions == {"ec2:ReplaceVpnTunnel"}


def test_operation_of_two_sdks_is_an_error_unless_the_file_names_one(tmp_path):
    amb = workspace(tmp_path, "async fn h(c: &C) { c.tag_resource().send().await; }", fn_sdk=("aws-sdk-dynamodb", "aws-sdk-sns"))
    assert not amb.calls
    assert len(amb.problems) == 1 and "tag_resource" in amb.problems[0] and "cannot tell" in amb.problems[0]

    ok = workspace(tmp_path, "use aws_sdk_sns::Client;\nasync fn h(c: &Client) { c.tag_resource().send().await; }", fn_sdk=("aws-sdk-dynamodb", "aws-sdk-sns"))
    assert ok.actions == {"sns:TagResource"} and not ok.problems


def test_modules_are_followed_from_main(tmp_path):
    main = "mod handler;\nfn main() {}"
    extra = {
        "functions/f/src/handler.rs": "mod ec2;\npub fn h() {}",
        "functions/f/src/handler/ec2.rs": "pub async fn d(c: &aws_sdk_ec2::Client) { c.describe_vpn_connections().send().await; }",
        "functions/f/src/unused.rs": "pub async fn d(c: &aws_sdk_ec2::Client) { c.replace_vpn_tunnel().send().await; }",
    }
    a = workspace(tmp_path, main, extra)
    assert a.actions == {"ec2:DescribeVpnConnections"}, "unused.rs is not in the module tree"


def test_env_reads_literal_const_and_turbofish(tmp_path):
    main = """
    const TOPIC: &str = "NOTIFICATION_TOPIC_ARN";
    fn cfg(env: &shared::config::Env) {
        env.required("STATE_TABLE_NAME", "the table");
        env.optional(TOPIC);
        env.parse_or::<u32>("LOOKBACK_MINUTES", 60);
        env.http_url("SLACK_API_URL", "https://slack.com/api");
        std::env::var("RUST_LOG");
        builder.optional();
    }
    """
    a = workspace(tmp_path, main)
    assert {(e.var, e.method) for e in a.env_reads} == {
        ("STATE_TABLE_NAME", "required"),
        ("NOTIFICATION_TOPIC_ARN", "optional"),
        ("LOOKBACK_MINUTES", "parse_or"),
        ("SLACK_API_URL", "http_url"),
        ("RUST_LOG", "std::env::var"),
    }
    assert not a.problems, "the Env reader's own `self.optional(var)` is not a read"


def test_env_read_with_a_computed_name_is_an_error(tmp_path):
    a = workspace(tmp_path, "fn cfg(env: &Env, name: String) { env.required(&format!(\"{name}_ARN\"), \"x\"); }")
    assert len(a.problems) == 1 and "cannot resolve" in a.problems[0] and "format" in a.problems[0]


def test_env_read_through_a_helper_resolves_its_call_sites(tmp_path):
    main = """
    fn from_env(env: &Env) {
        let a = minutes(env, "LOOKBACK_MINUTES", 60);
        let days = |var: &str, default: u32| -> u32 { env.parse_or(var, default).unwrap() };
        let b = days("THREAD_TTL_DAYS", 30);
    }
    fn minutes(env: &Env, var: &str, default: u32) -> u32 { env.parse_or::<u32>(var, default).unwrap() }
    """
    a = workspace(tmp_path, main)
    assert not a.problems
    assert {(e.var, e.where) for e in a.env_reads} == {
        ("LOOKBACK_MINUTES", "functions/f/src/main.rs:3"),
        ("THREAD_TTL_DAYS", "functions/f/src/main.rs:5"),
    }


def test_helper_without_literal_call_sites_is_an_error(tmp_path):
    main = "fn read(env: &Env, var: &str) { env.required(var, \"x\"); }\nfn main() { read(&e, &name); }"
    a = workspace(tmp_path, main)
    assert len(a.problems) == 1 and "`& name`" in a.problems[0]


def test_builder_method_named_like_an_env_reader_is_not_a_read(tmp_path):
    main = "async fn h(c: &C, arn: &str) { c.update_incident_record().arn(arn).send().await; }"
    a = workspace(tmp_path, main)
    assert not a.env_reads and not a.problems


def test_transaction_is_authorized_per_item_action(tmp_path):
    main = """
    async fn h(c: &aws_sdk_dynamodb::Client) {
        let items = vec![TransactWriteItem::builder().put(p).build(), TransactWriteItem::builder().condition_check(x).build()];
        c.transact_write_items().set_transact_items(Some(items)).send().await;
    }
    """
    ops = {"transact_write_items": "TransactWriteItems"}
    SDK_OPS["aws-sdk-dynamodb"].update(ops)
    try:
        a = workspace(tmp_path, main, fn_sdk=("aws-sdk-dynamodb",))
    finally:
        for k in ops:
            del SDK_OPS["aws-sdk-dynamodb"][k]
    assert a.actions == {"dynamodb:PutItem", "dynamodb:ConditionCheckItem"}


def test_placeholder_is_recognised(tmp_path):
    write(tmp_path, {"p/src/main.rs": "//! Placeholder\nfn main() {}\n", "q/src/main.rs": "fn main() { run(); }\n"})
    assert rs.is_placeholder(rs.load_crate("p", [tmp_path / "p/src/main.rs"], [], [], set()))
    assert not rs.is_placeholder(rs.load_crate("q", [tmp_path / "q/src/main.rs"], [], [], set()))


def test_missing_module_file_is_an_error(tmp_path):
    write(tmp_path, {"p/src/main.rs": "mod gone;\nfn main() {}\n"})
    with pytest.raises(rs.AnalysisError, match="gone"):
        rs.load_crate("p", [tmp_path / "p/src/main.rs"], [], [], set())


def test_sdk_operation_names_come_from_the_sdk_crate(tmp_path):
    write(tmp_path, {"sdk/src/operation/describe_vpn_connections.rs": "#[derive(Debug)]\npub struct DescribeVpnConnections;\n"})
    assert rs.sdk_operations(tmp_path / "sdk") == {"describe_vpn_connections": "DescribeVpnConnections"}


def test_real_sdk_crates_map_the_brief_operations():
    meta, crates, ops = rs.load_workspace(rs.repo_root())
    assert ops["aws-sdk-ssmincidents"]["create_timeline_event"] == "CreateTimelineEvent"
    assert ops["aws-sdk-ec2"]["replace_vpn_tunnel"] == "ReplaceVpnTunnel"
    assert "reset_vpn_connection" not in ops["aws-sdk-ec2"]
    assert ops["aws-sdk-cloudwatchlogs"]["start_query"] == "StartQuery"
    assert set(crates) == {"incident-shared", "alarm-to-incident", "notify-fanout", "vpn-troubleshoot", "slack-actions"}
