//! Every sample event in `events/` normalizes to exactly the expected alarm.

use std::collections::BTreeMap;
use std::path::PathBuf;

use shared::alarm::{normalize_str, Alarm, AlarmCondition, AlarmState, EventShape};

const VPN: &str = "vpn-0f1e2d3c4b5a69788";
const ACCOUNT: &str = "123456789012";
const ANY_ARN: &str =
    "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down-vpn-0f1e2d3c4b5a69788";

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn load(file: &str) -> Vec<Alarm> {
    let text =
        std::fs::read_to_string(events_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    normalize_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn one(file: &str) -> Alarm {
    let mut alarms = load(file);
    assert_eq!(alarms.len(), 1, "{file}");
    alarms.remove(0)
}

fn ts(alarm: &Alarm) -> String {
    alarm
        .changed_at
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The VPN any-tunnel alarm is the same transition in all three envelopes.
fn assert_vpn_tunnel_down(a: &Alarm, shape: EventShape, state: AlarmState) {
    assert_eq!(a.name, "vpn-tunnel-down-vpn-0f1e2d3c4b5a69788");
    assert_eq!(a.arn, ANY_ARN);
    assert_eq!(a.account, ACCOUNT);
    assert_eq!(a.region, "eu-west-1");
    assert_eq!(a.state, state);
    assert_eq!(a.shape, shape);
    assert_eq!(
        a.description.as_deref(),
        Some("Any tunnel of vpn-0f1e2d3c4b5a69788 is down (TunnelState Minimum < 1)")
    );
    assert_eq!(a.vpn_id(), Some(VPN));
    let AlarmCondition::Metric(m) = &a.condition else {
        panic!("expected a metric condition, got {:?}", a.condition)
    };
    assert_eq!(m.metric.namespace, "AWS/VPN");
    assert_eq!(m.metric.name, "TunnelState");
    assert_eq!(m.metric.dimensions, dims(&[("VpnId", VPN)]));
    assert_eq!(m.statistic.as_deref(), Some("Minimum"));
    assert_eq!(m.period_seconds, Some(60));
    assert_eq!(m.threshold, Some(1.0));
}

#[test]
fn direct_metric_alarm_normalizes_every_field() {
    let a = one("direct-vpn-tunnel-down-alarm.json");
    assert_vpn_tunnel_down(&a, EventShape::DirectAction, AlarmState::Alarm);
    assert_eq!(a.previous_state, Some(AlarmState::Ok));
    assert_eq!(ts(&a), "2026-11-25T10:01:00.490Z");
    assert!(a
        .reason
        .starts_with("Threshold Crossed: 1 out of the last 1 datapoints [0.0"));
    // The direct action carries no comparison operator.
    let AlarmCondition::Metric(m) = &a.condition else {
        unreachable!()
    };
    assert_eq!(m.comparison, None);
}

#[test]
fn direct_metric_ok_normalizes_every_field() {
    let a = one("direct-vpn-tunnel-down-ok.json");
    assert_vpn_tunnel_down(&a, EventShape::DirectAction, AlarmState::Ok);
    assert_eq!(a.previous_state, Some(AlarmState::Alarm));
    assert_eq!(ts(&a), "2026-11-25T10:35:00.211Z");
}

#[test]
fn direct_composite_alarm_has_rule_and_triggering_child() {
    let a = one("direct-composite-alarm.json");
    assert_eq!(a.name, "network-edge-degraded");
    assert_eq!(
        a.arn,
        "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:network-edge-degraded"
    );
    assert_eq!(a.state, AlarmState::Alarm);
    assert_eq!(a.previous_state, Some(AlarmState::Ok));
    assert_eq!(ts(&a), "2026-11-25T10:03:46.138Z");
    assert_eq!(a.description, None);
    let AlarmCondition::Composite(c) = &a.condition else {
        panic!("expected composite, got {:?}", a.condition)
    };
    assert_eq!(
        c.rule.as_deref(),
        Some("ALARM(\"vpn-tunnel-down-vpn-0f1e2d3c4b5a69788\") OR ALARM(\"vpn-tunnel-down-vpn-0a1b2c3d\")")
    );
    assert_eq!(c.triggering_children, vec![ANY_ARN.to_string()]);
    assert_eq!(a.vpn_id(), None);
}

#[test]
fn eventbridge_alarm_and_ok_normalize_every_field() {
    let a = one("eventbridge-vpn-tunnel-down-alarm.json");
    assert_vpn_tunnel_down(&a, EventShape::EventBridge, AlarmState::Alarm);
    assert_eq!(a.previous_state, Some(AlarmState::Ok));
    assert_eq!(ts(&a), "2026-11-25T10:01:00.490Z");

    let ok = one("eventbridge-vpn-tunnel-down-ok.json");
    assert_vpn_tunnel_down(&ok, EventShape::EventBridge, AlarmState::Ok);
    assert_eq!(ok.previous_state, Some(AlarmState::Alarm));
    assert_eq!(ts(&ok), "2026-11-25T10:35:00.211Z");
}

#[test]
fn eventbridge_insufficient_data_normalizes() {
    let a = one("eventbridge-vpn-insufficient-data.json");
    assert_vpn_tunnel_down(&a, EventShape::EventBridge, AlarmState::InsufficientData);
    assert_eq!(a.previous_state, Some(AlarmState::Alarm));
    assert_eq!(a.reason, "Insufficient Data: 1 datapoint was unknown.");
    assert_eq!(ts(&a), "2026-11-25T10:12:00.007Z");
}

#[test]
fn eventbridge_both_tunnels_alarm_uses_maximum() {
    let a = one("eventbridge-vpn-both-tunnels-down-alarm.json");
    assert_eq!(a.name, "vpn-both-tunnels-down-vpn-0f1e2d3c4b5a69788");
    assert_eq!(a.statistic(), Some("Maximum"));
    assert_eq!(a.vpn_id(), Some(VPN));
    assert_eq!(ts(&a), "2026-11-25T10:20:00.733Z");
}

#[test]
fn eventbridge_metric_math_alarm_keeps_expression_and_queries() {
    let a = one("eventbridge-metric-math-alarm.json");
    assert_eq!(a.name, "vpn-egress-bytes-drop");
    assert_eq!(a.metric(), None);
    let AlarmCondition::Math(m) = &a.condition else {
        panic!("expected math, got {:?}", a.condition)
    };
    assert_eq!(m.expression.as_deref(), Some("m1+m2"));
    assert_eq!(m.queries.len(), 3);
    assert_eq!(m.queries[0].label.as_deref(), Some("TunnelDataOut total"));
    assert!(m.queries[0].return_data);
    let m1 = m.queries[1].metric.as_ref().unwrap();
    assert_eq!(m1.name, "TunnelDataOut");
    assert_eq!(m1.dimensions, dims(&[("TunnelIpAddress", "203.0.113.10")]));
    assert_eq!(m.queries[1].statistic.as_deref(), Some("Sum"));
    assert_eq!(m.queries[1].period_seconds, Some(300));
    assert_eq!(m.threshold, Some(0.0));
    assert_eq!(a.dimension("TunnelIpAddress"), Some("203.0.113.10"));
}

#[test]
fn sns_alarm_and_ok_normalize_every_field() {
    let a = one("sns-vpn-tunnel-down-alarm.json");
    assert_vpn_tunnel_down(&a, EventShape::Sns, AlarmState::Alarm);
    assert_eq!(a.previous_state, Some(AlarmState::Ok));
    assert_eq!(ts(&a), "2026-11-25T10:01:00.490Z");
    let AlarmCondition::Metric(m) = &a.condition else {
        unreachable!()
    };
    // SNS writes MINIMUM; the model uses CloudWatch's API spelling.
    assert_eq!(m.comparison.as_deref(), Some("LessThanThreshold"));
    assert_eq!(m.evaluation_periods, Some(1));
    assert_eq!(m.treat_missing_data.as_deref(), Some("missing"));
    assert_eq!(m.unit, None);

    let ok = one("sns-vpn-tunnel-down-ok.json");
    assert_vpn_tunnel_down(&ok, EventShape::Sns, AlarmState::Ok);
    assert_eq!(ts(&ok), "2026-11-25T10:35:00.211Z");
}

#[test]
fn same_transition_in_three_envelopes_has_one_transition_id() {
    let ids: Vec<String> = [
        "direct-vpn-tunnel-down-alarm.json",
        "eventbridge-vpn-tunnel-down-alarm.json",
        "sns-vpn-tunnel-down-alarm.json",
        "sns-eventbridge-vpn-tunnel-down-alarm.json",
    ]
    .iter()
    .map(|f| one(f).transition_id())
    .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(ids[0], format!("{ANY_ARN}@2026-11-25T10:01:00.490Z"));
}

#[test]
fn sns_tunnel_ip_alarm_with_null_description_and_padded_treat_missing() {
    let a = one("sns-tunnel-ip-null-description-alarm.json");
    assert_eq!(a.name, "vpn tunnel 203.0.113.10 (site A) down");
    assert_eq!(a.description, None);
    assert_eq!(a.previous_state, Some(AlarmState::InsufficientData));
    assert_eq!(a.dimension("TunnelIpAddress"), Some("203.0.113.10"));
    assert_eq!(a.vpn_id(), None);
    let AlarmCondition::Metric(m) = &a.condition else {
        unreachable!()
    };
    assert_eq!(m.treat_missing_data.as_deref(), Some("breaching"));
    assert_eq!(m.unit, None);
    assert_eq!(ts(&a), "2026-11-25T10:01:02.000Z");
    assert!(a
        .console_url()
        .contains("alarm/vpn%20tunnel%20203.0.113.10%20%28site%20A%29%20down"));
}

#[test]
fn sns_period_86400_takes_region_from_arn_not_display_name() {
    let a = one("sns-period-86400-alarm.json");
    assert_eq!(a.region, "eu-south-1");
    assert_eq!(a.description, None, "empty description is no description");
    let AlarmCondition::Metric(m) = &a.condition else {
        unreachable!()
    };
    assert_eq!(m.period_seconds, Some(86400));
    assert_eq!(m.statistic.as_deref(), Some("Average"));
    assert_eq!(m.threshold, Some(0.99));
    assert_eq!(m.unit, None, "unit \"None\" means no unit");
    // Space instead of T in the timestamp.
    assert_eq!(ts(&a), "2026-11-25T00:00:29.641Z");
}

#[test]
fn sns_composite_alarm_has_rule_and_children() {
    let a = one("sns-composite-alarm.json");
    assert_eq!(a.shape, EventShape::Sns);
    assert_eq!(
        a.description.as_deref(),
        Some("Any VPN of the edge is degraded")
    );
    let AlarmCondition::Composite(c) = &a.condition else {
        panic!("expected composite, got {:?}", a.condition)
    };
    assert!(c
        .rule
        .as_deref()
        .unwrap()
        .starts_with("ALARM(\"vpn-tunnel-down-vpn-0f1e2d3c4b5a69788\")"));
    assert_eq!(c.triggering_children, vec![ANY_ARN.to_string()]);
}

#[test]
fn sns_anomaly_alarm_is_math_with_threshold_metric_id() {
    let a = one("sns-anomaly-detection-alarm.json");
    let AlarmCondition::Math(m) = &a.condition else {
        panic!("expected math, got {:?}", a.condition)
    };
    assert_eq!(
        m.expression.as_deref(),
        Some("ANOMALY_DETECTION_BAND(m1, 2)")
    );
    assert_eq!(m.threshold, None);
    assert_eq!(m.threshold_metric_id.as_deref(), Some("ad1"));
    assert_eq!(m.comparison.as_deref(), Some("LessThanLowerThreshold"));
    assert_eq!(a.vpn_id(), Some(VPN));
    assert_eq!(ts(&a), "2026-11-25T10:00:19.000Z");
}

#[test]
fn sns_carrying_eventbridge_event_is_eventbridge_shape() {
    let a = one("sns-eventbridge-vpn-tunnel-down-alarm.json");
    assert_vpn_tunnel_down(&a, EventShape::EventBridge, AlarmState::Alarm);
}

#[test]
fn every_event_file_normalizes_and_is_covered_here() {
    let mut files: Vec<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let this_file = include_str!("events.rs");
    for f in &files {
        assert!(!load(f).is_empty(), "{f}");
        assert!(
            this_file.contains(&format!("\"{f}\"")),
            "{f} has no expectations in this test file"
        );
    }
}

#[test]
fn sns_event_with_several_records_yields_several_alarms() {
    let a: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(events_dir().join("sns-vpn-tunnel-down-alarm.json")).unwrap(),
    )
    .unwrap();
    let b: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(events_dir().join("sns-composite-alarm.json")).unwrap(),
    )
    .unwrap();
    let both = serde_json::json!({"Records": [a["Records"][0], b["Records"][0]]});
    let alarms = shared::alarm::normalize(&both).unwrap();
    assert_eq!(alarms.len(), 2);
    assert_eq!(alarms[0].name, "vpn-tunnel-down-vpn-0f1e2d3c4b5a69788");
    assert_eq!(alarms[1].name, "network-edge-degraded");
}

const MUTE_RULE: &str =
    "arn:aws:cloudwatch:eu-west-1:123456789012:alarm-mute-rule:vpn-maintenance-window";

fn assert_muted_by_the_maintenance_window(a: &Alarm) {
    let m = a.muted.as_ref().expect("muteDetail");
    assert_eq!(m.rule_arn.as_deref(), Some(MUTE_RULE));
    let iso = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    };
    assert_eq!(
        iso(m.window_start).as_deref(),
        Some("2026-11-25T10:00:00.000Z")
    );
    assert_eq!(
        iso(m.window_end).as_deref(),
        Some("2026-11-25T12:00:00.000Z")
    );
}

#[test]
fn eventbridge_muted_alarm_carries_its_mute_rule_and_window() {
    let a = one("eventbridge-vpn-tunnel-down-muted-alarm.json");
    // Everything else is the same transition as the unmuted event.
    assert_vpn_tunnel_down(&a, EventShape::EventBridge, AlarmState::Alarm);
    assert_eq!(ts(&a), "2026-11-25T10:01:00.490Z");
    assert_eq!(a.previous_state, Some(AlarmState::Ok));
    assert_muted_by_the_maintenance_window(&a);
    let unmuted = one("eventbridge-vpn-tunnel-down-alarm.json");
    assert_eq!(a.transition_id(), unmuted.transition_id());
    assert_eq!(unmuted.muted, None);
    // Normalized JSON keeps it (the normalize tool shows it); unmuted alarms omit it.
    let v = serde_json::to_value(&a).unwrap();
    assert_eq!(v["muted"]["rule_arn"], MUTE_RULE);
    assert!(serde_json::to_value(&unmuted)
        .unwrap()
        .get("muted")
        .is_none());
}

#[test]
fn eventbridge_muted_ok_is_an_ok_inside_the_window() {
    let a = one("eventbridge-vpn-tunnel-down-muted-ok.json");
    assert_vpn_tunnel_down(&a, EventShape::EventBridge, AlarmState::Ok);
    assert_eq!(ts(&a), "2026-11-25T10:40:12.345Z");
    assert_eq!(a.previous_state, Some(AlarmState::Alarm));
    assert_muted_by_the_maintenance_window(&a);
}

#[test]
fn sns_carrying_a_muted_eventbridge_event_keeps_the_mute() {
    let a = one("sns-eventbridge-vpn-tunnel-down-muted-alarm.json");
    assert_vpn_tunnel_down(&a, EventShape::EventBridge, AlarmState::Alarm);
    assert_muted_by_the_maintenance_window(&a);
}

#[test]
fn mute_detail_fields_are_optional_but_typed() {
    let text =
        std::fs::read_to_string(events_dir().join("eventbridge-vpn-tunnel-down-muted-alarm.json"))
            .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["detail"]["muteDetail"] = serde_json::json!({});
    let a = shared::alarm::normalize(&v).unwrap().remove(0);
    assert_eq!(a.muted, Some(shared::alarm::MuteDetail::default()));
    v["detail"]["muteDetail"] = serde_json::json!({"muteWindowEnd": "soon"});
    let e = shared::alarm::normalize(&v).unwrap_err().to_string();
    assert_eq!(
        e,
        "EventBridge event: field `detail.muteDetail.muteWindowEnd` is not a timestamp: \"soon\""
    );
    v["detail"]["muteDetail"] = serde_json::json!("yes");
    assert!(shared::alarm::normalize(&v).is_err());
}
