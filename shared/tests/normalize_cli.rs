//! The `normalize` example as an operator runs it: JSON output per file, exit codes,
//! and classification by a rules file. Runs the example binary cargo built with the
//! tests (`cargo test` builds examples).

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// `target/debug/examples/normalize`, next to this test's own binary
/// (`target/debug/deps/normalize_cli-*`).
fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = debug
        .join("examples")
        .join(format!("normalize{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build the examples (cargo test builds them)",
        bin.display()
    );
    bin
}

fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .expect("the normalize example runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Concatenated JSON values (one array per file), in order.
fn arrays(o: &Output) -> Vec<Vec<Value>> {
    serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter::<Value>()
        .map(|v| match v.unwrap() {
            Value::Array(a) => a,
            other => panic!("not an array: {other}"),
        })
        .collect()
}

fn event(name: &str) -> String {
    events_dir().join(name).to_string_lossy().into_owned()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("normalize-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn json_prints_one_array_per_file_in_order() {
    let o = run(&[
        "--json",
        &event("sns-no-alarm-arn-old-region-alarm.json"),
        &event("eventbridge-insights-contributor-vpn2-alarm.json"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = arrays(&o);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].len(), 1);
    let old = &a[0][0];
    assert_eq!(
        old["arn"],
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:vpn-tunnel-down-vpn-0c3d4e5f6a7b8c9d0"
    );
    assert_eq!(old["arn_origin"], "region_name");
    assert_eq!(old["condition"]["type"], "metric");
    assert_eq!(
        old["transitionId"],
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:vpn-tunnel-down-vpn-0c3d4e5f6a7b8c9d0@2026-11-25T09:41:07.233Z"
    );
    assert!(
        old.get("classification").is_none(),
        "no rules, no classification"
    );
    let c = &a[1][0];
    assert_eq!(c["condition"]["type"], "metrics_insights");
    assert_eq!(c["condition"]["group_by"][0], "VpnId");
    assert_eq!(c["contributor"]["id"], "a41d6e0b97c3f258");
    assert_eq!(
        c["contributor"]["attributes"]["VpnId"],
        "vpn-0a1b2c3d4e5f67890"
    );
    // What it printed is the alarm the functions work on.
    let back: shared::alarm::Alarm = serde_json::from_value(c.clone()).unwrap();
    assert_eq!(back.vpn_id(), Some("vpn-0a1b2c3d4e5f67890"));
}

#[test]
fn a_rejected_file_exits_non_zero_with_its_error_and_the_others_still_print() {
    let bad = temp_file(
        "bad.json",
        r#"{"detail-type": "CloudWatch Alarm Configuration Change", "source": "aws.cloudwatch"}"#,
    );
    let o = run(&[
        "--json",
        &bad.to_string_lossy(),
        &event("eventbridge-vpn-tunnel-down-alarm.json"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.json: unsupported EventBridge detail-type \"CloudWatch Alarm Configuration Change\""), "{err}");
    let a = arrays(&o);
    assert_eq!(a.len(), 1, "the good file still prints");
    assert_eq!(a[0][0]["name"], "vpn-tunnel-down-vpn-0f1e2d3c4b5a69788");

    let missing = run(&["--json", "/nonexistent/event.json"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("/nonexistent/event.json: cannot read"));
}

#[test]
fn rules_file_adds_each_alarms_classification() {
    let rules = temp_file(
        "rules.json",
        r#"{"rules": [{"name": "site-vpn", "match": {"namespace": "AWS/VPN", "dimensions": {"VpnId": "*"}},
            "impact": 2, "title": "Site VPN {VpnId} down", "dedupeKey": "site-{VpnId}"}]}"#,
    );
    let o = run(&[
        "--json",
        "--rules",
        &rules.to_string_lossy(),
        &event("eventbridge-insights-contributor-vpn1-alarm.json"),
        &event("eventbridge-metrics-insights-alarm.json"),
        &event("direct-composite-alarm.json"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = arrays(&o);
    let c = &a[0][0]["classification"];
    assert_eq!(c["rule"], "site-vpn");
    assert_eq!(c["impact"], 2);
    assert_eq!(c["title"], "Site VPN vpn-0f1e2d3c4b5a69788 down");
    assert_eq!(c["dedupeKey"], "site-vpn-0f1e2d3c4b5a69788");
    // The alarm-level event of the multi-time-series alarm says it opens nothing.
    assert!(a[1][0]["incident"]
        .as_str()
        .unwrap()
        .starts_with("no incident"));
    // Composite: no rule matches, the default incident.
    assert_eq!(a[2][0]["classification"]["rule"], "default");
    assert_eq!(a[2][0]["classification"]["impact"], 3);

    // `--rules -`: the built-in rules alone.
    let b = run(&[
        "--json",
        "--rules",
        "-",
        &event("eventbridge-insights-contributor-vpn1-alarm.json"),
    ]);
    assert_eq!(
        arrays(&b)[0][0]["classification"]["rule"],
        "vpn-tunnel-down"
    );
}

#[test]
fn bad_rules_or_usage_exit_2() {
    let rules = temp_file(
        "bad-rules.json",
        r#"[{"name": "a", "impact": 9, "title": "x"}]"#,
    );
    let o = run(&[
        "--rules",
        &rules.to_string_lossy(),
        &event("direct-composite-alarm.json"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("impact must be 1 (critical) to 5"),
        "{}",
        stderr(&o)
    );
    let none = run(&["--json"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("usage: normalize"));
    assert_eq!(run(&["--frobnicate", "x"]).status.code(), Some(2));
}

#[test]
fn the_human_summary_of_every_sample_event_is_what_make_normalize_prints() {
    let o = run(&["--rules", "-", &events_dir().to_string_lossy()]);
    assert!(o.status.success(), "{}", stdout(&o));
    let out = stdout(&o);
    let files = std::fs::read_dir(events_dir()).unwrap().count();
    assert!(
        out.ends_with(&format!("{files} files, 0 failed\n")),
        "{out}"
    );
    assert!(out.contains("vpn-tunnel-down-all-connections (VpnId=vpn-0a1b2c3d4e5f67890)"));
    assert!(out
        .contains("impact 3 (rule vpn-tunnel-down): VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"));
    assert!(out.contains("below the anomaly band ANOMALY_DETECTION_BAND(m1, 2)"));
}
