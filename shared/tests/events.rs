//! Every sample event in `events/` normalizes to exactly the expected alarm.

use std::collections::BTreeMap;
use std::path::PathBuf;

use shared::alarm::{normalize_str, Alarm, AlarmCondition, AlarmState, ArnOrigin, EventShape};
use shared::classify::Rules;
use shared::incident::Impact;

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
fn sns_anomaly_alarm_is_its_own_kind_with_band_and_metric() {
    let a = one("sns-anomaly-detection-alarm.json");
    let AlarmCondition::Anomaly(m) = &a.condition else {
        panic!("expected anomaly, got {:?}", a.condition)
    };
    assert_eq!(m.band, "ANOMALY_DETECTION_BAND(m1, 2)");
    assert_eq!(m.band_width, Some(2.0));
    assert_eq!(m.threshold_metric_id.as_deref(), Some("ad1"));
    assert_eq!(m.comparison.as_deref(), Some("LessThanLowerThreshold"));
    let metric = m.metric.as_ref().unwrap();
    assert_eq!(
        (metric.namespace.as_str(), metric.name.as_str()),
        ("AWS/VPN", "TunnelDataIn")
    );
    assert_eq!(m.statistic.as_deref(), Some("Average"));
    assert_eq!(m.period_seconds, Some(300));
    assert_eq!(m.evaluation_periods, Some(1));
    // SNS carries no reasonData: the band's values are unknown.
    assert_eq!((m.lower_bound, m.upper_bound, m.value), (None, None, None));
    assert_eq!(m.queries.len(), 2);
    assert_eq!(a.vpn_id(), Some(VPN));
    assert_eq!(a.statistic(), Some("Average"));
    assert_eq!(ts(&a), "2026-11-25T10:00:19.000Z");
    assert_eq!(
        a.condition.summary().as_deref(),
        Some("Average of AWS/VPN TunnelDataIn (VpnId=vpn-0f1e2d3c4b5a69788) below the anomaly band ANOMALY_DETECTION_BAND(m1, 2) for 1 × 300 s")
    );
}

const ANOMALY_ARN: &str =
    "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-data-in-anomaly";

/// The anomaly alarm of the EventBridge and direct-action samples (same alarm data).
fn assert_eventbridge_style_anomaly(a: &Alarm) {
    assert_eq!(a.name, "vpn-tunnel-data-in-anomaly");
    assert_eq!(a.arn, ANOMALY_ARN);
    assert_eq!(a.account, ACCOUNT);
    assert_eq!(a.region, "eu-west-1");
    assert_eq!(a.state, AlarmState::Alarm);
    assert_eq!(a.previous_state, Some(AlarmState::Ok));
    assert_eq!(ts(a), "2026-11-25T10:00:19.653Z");
    assert_eq!(
        a.description.as_deref(),
        Some("Traffic into vpn-0f1e2d3c4b5a69788 is outside its usual band")
    );
    let AlarmCondition::Anomaly(m) = &a.condition else {
        panic!("expected anomaly, got {:?}", a.condition)
    };
    assert_eq!(m.band, "ANOMALY_DETECTION_BAND(m1, 2)");
    assert_eq!(m.band_width, Some(2.0));
    // Not in the event's configuration: the band's query id stands in.
    assert_eq!(m.threshold_metric_id.as_deref(), Some("ad1"));
    assert_eq!(m.comparison, None);
    let metric = m.metric.as_ref().unwrap();
    assert_eq!(metric.name, "TunnelDataIn");
    assert_eq!(metric.dimensions, dims(&[("VpnId", VPN)]));
    assert_eq!(m.statistic.as_deref(), Some("Average"));
    assert_eq!(m.period_seconds, Some(300));
    // From reasonData: the band and the value at the latest datapoint.
    assert_eq!(m.lower_bound, Some(1024.5));
    assert_eq!(m.upper_bound, Some(88210.3));
    assert_eq!(m.value, Some(12.0));
    assert_eq!(a.vpn_id(), Some(VPN));
    assert_eq!(a.contributor, None);
    assert!(!a.is_multi_series_summary());
    assert_eq!(
        a.condition.summary().as_deref(),
        Some("Average of AWS/VPN TunnelDataIn (VpnId=vpn-0f1e2d3c4b5a69788) outside the anomaly band ANOMALY_DETECTION_BAND(m1, 2) over 300 s; band 1024.5 to 88210.3, value 12")
    );
}

#[test]
fn eventbridge_anomaly_alarm_reads_band_from_reason_data() {
    let a = one("eventbridge-anomaly-detection-alarm.json");
    assert_eq!(a.shape, EventShape::EventBridge);
    assert_eventbridge_style_anomaly(&a);
}

#[test]
fn direct_anomaly_alarm_is_the_same_transition_as_eventbridge() {
    let a = one("direct-anomaly-detection-alarm.json");
    assert_eq!(a.shape, EventShape::DirectAction);
    assert_eventbridge_style_anomaly(&a);
    assert_eq!(
        a.transition_id(),
        one("eventbridge-anomaly-detection-alarm.json").transition_id()
    );
}

#[test]
fn anomaly_alarms_classify_by_their_watched_metric() {
    let rules = Rules::from_json(
        r#"[{"name": "vpn-traffic", "match": {"namespace": "AWS/VPN", "metric": "TunnelDataIn",
             "dimensions": {"VpnId": "*"}}, "impact": 4, "title": "Unusual traffic on {VpnId}"}]"#,
        None,
    )
    .unwrap();
    for f in [
        "sns-anomaly-detection-alarm.json",
        "eventbridge-anomaly-detection-alarm.json",
    ] {
        let c = rules.classify(&one(f));
        assert_eq!(c.rule, "vpn-traffic", "{f}");
        assert_eq!(c.title, format!("Unusual traffic on {VPN}"), "{f}");
    }
}

#[test]
fn sns_message_without_alarm_arn_gets_its_arn_rebuilt_from_old_region_name() {
    let a = one("sns-no-alarm-arn-old-region-alarm.json");
    let vpn = "vpn-0c3d4e5f6a7b8c9d0";
    assert_eq!(a.name, format!("vpn-tunnel-down-{vpn}"));
    // "US - N. Virginia" (CloudWatch's spelling of 2013-2015) is us-east-1.
    assert_eq!(
        a.arn,
        format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:vpn-tunnel-down-{vpn}")
    );
    assert_eq!(a.arn_origin, ArnOrigin::RegionName);
    assert_eq!(a.region, "us-east-1");
    assert_eq!(a.account, ACCOUNT);
    assert_eq!(a.state, AlarmState::Alarm);
    assert_eq!(a.previous_state, Some(AlarmState::Ok));
    assert_eq!(a.shape, EventShape::Sns);
    assert_eq!(ts(&a), "2026-11-25T09:41:07.233Z");
    assert_eq!(a.vpn_id(), Some(vpn));
    let AlarmCondition::Metric(m) = &a.condition else {
        panic!("expected a metric condition, got {:?}", a.condition)
    };
    assert_eq!(m.statistic.as_deref(), Some("Minimum"));
    assert_eq!(m.threshold, Some(1.0));
    assert_eq!(m.comparison.as_deref(), Some("LessThanThreshold"));
    assert_eq!(m.treat_missing_data, None);
    // The built-in VPN rule takes it like any other tunnel-down alarm.
    let c = Rules::builtin(None).classify(&a);
    assert_eq!(
        (c.rule.as_str(), c.impact),
        ("vpn-tunnel-down", Impact::MEDIUM)
    );
    assert_eq!(c.key, format!("VPN connection {vpn} is DOWN"));
}

const INSIGHTS_ARN: &str =
    "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down-all-connections";
const INSIGHTS_SQL: &str = r#"SELECT MIN(TunnelState) FROM "AWS/VPN" GROUP BY VpnId"#;
const VPN2: &str = "vpn-0a1b2c3d4e5f67890";

fn assert_insights_condition(a: &Alarm) {
    assert_eq!(a.name, "vpn-tunnel-down-all-connections");
    assert_eq!(a.arn, INSIGHTS_ARN);
    assert_eq!(a.shape, EventShape::EventBridge);
    assert_eq!(
        a.description.as_deref(),
        Some("A tunnel of a VPN connection is down (Metrics Insights: MIN(TunnelState) per VpnId < 1)")
    );
    let AlarmCondition::Insights(q) = &a.condition else {
        panic!("expected Metrics Insights, got {:?}", a.condition)
    };
    assert_eq!(q.query, INSIGHTS_SQL);
    assert_eq!(q.period_seconds, Some(60));
    assert_eq!(q.statistic.as_deref(), Some("Minimum"));
    assert_eq!(q.group_by, vec!["VpnId".to_string()]);
    let m = q.metric.as_ref().unwrap();
    assert_eq!(
        (m.namespace.as_str(), m.name.as_str()),
        ("AWS/VPN", "TunnelState")
    );
    assert!(m.dimensions.is_empty());
}

#[test]
fn eventbridge_metrics_insights_alarm_level_event_is_a_multi_series_summary() {
    let a = one("eventbridge-metrics-insights-alarm.json");
    assert_insights_condition(&a);
    assert_eq!(a.state, AlarmState::Alarm);
    assert_eq!(a.previous_state, Some(AlarmState::Ok));
    assert_eq!(a.reason, "2 out of 2 time series evaluated to ALARM");
    assert_eq!(ts(&a), "2026-11-25T10:02:04.919Z");
    assert_eq!(a.contributor, None);
    assert!(a.is_multi_series_summary());
    assert_eq!(a.vpn_id(), None);
    assert_eq!(
        a.transition_id(),
        format!("{INSIGHTS_ARN}@2026-11-25T10:02:04.919Z")
    );
    assert_eq!(
        a.condition.summary().as_deref(),
        Some(
            r#"Metrics Insights SELECT MIN(TunnelState) FROM "AWS/VPN" GROUP BY VpnId over 60 s, one time series per VpnId"#
        )
    );
}

#[test]
fn contributor_events_are_per_time_series_transitions() {
    let one_vpn = one("eventbridge-insights-contributor-vpn1-alarm.json");
    let other = one("eventbridge-insights-contributor-vpn2-alarm.json");
    let ok = one("eventbridge-insights-contributor-vpn1-ok.json");
    for a in [&one_vpn, &other, &ok] {
        assert_insights_condition(a);
        // Contributors have no previous state in their events.
        assert_eq!(a.previous_state, None);
        assert!(!a.is_multi_series_summary());
    }
    let c1 = one_vpn.contributor.as_ref().unwrap();
    assert_eq!(c1.id, "3f9a1c7e5b2d8046");
    assert_eq!(c1.attributes, dims(&[("VpnId", VPN)]));
    assert_eq!(one_vpn.state, AlarmState::Alarm);
    assert_eq!(ts(&one_vpn), "2026-11-25T10:02:04.919Z");
    assert!(one_vpn
        .reason
        .starts_with("Threshold Crossed: 1 datapoint was less than the threshold (1.0)."));
    assert_eq!(one_vpn.vpn_id(), Some(VPN));
    assert_eq!(
        one_vpn.label(),
        format!("vpn-tunnel-down-all-connections (VpnId={VPN})")
    );
    assert_eq!(other.contributor.as_ref().unwrap().id, "a41d6e0b97c3f258");
    assert_eq!(other.vpn_id(), Some(VPN2));
    assert_eq!(ok.state, AlarmState::Ok);
    assert_eq!(ts(&ok), "2026-11-25T10:36:04.512Z");
    assert_eq!(ok.contributor, one_vpn.contributor);
    // Same alarm, same time: three different transitions (two series and the
    // alarm-level summary), so none is mistaken for a duplicate of another.
    let summary = one("eventbridge-metrics-insights-alarm.json");
    let ids = [
        one_vpn.transition_id(),
        other.transition_id(),
        summary.transition_id(),
    ];
    assert_eq!(
        ids[0],
        format!("contributor/3f9a1c7e5b2d8046/{INSIGHTS_ARN}@2026-11-25T10:02:04.919Z")
    );
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    assert_eq!(one_vpn.source_id(), ok.source_id());
}

#[test]
fn builtin_vpn_rules_give_one_incident_per_vpn_from_one_insights_alarm() {
    let rules = Rules::builtin(Some("VpnDiagnosis"));
    let a = rules.classify(&one("eventbridge-insights-contributor-vpn1-alarm.json"));
    let b = rules.classify(&one("eventbridge-insights-contributor-vpn2-alarm.json"));
    let ok = rules.classify(&one("eventbridge-insights-contributor-vpn1-ok.json"));
    // MIN(TunnelState) per VpnId is the article's any-tunnel alarm, per VPN.
    assert_eq!(
        (a.rule.as_str(), a.impact),
        ("vpn-tunnel-down", Impact::MEDIUM)
    );
    assert_eq!(a.key, format!("VPN connection {VPN} is DOWN"));
    assert_eq!(b.key, format!("VPN connection {VPN2} is DOWN"));
    assert_eq!(ok.key, a.key);
    // The same key as the single-VPN alarms: both kinds of alarm feed one incident.
    assert_eq!(
        a.key,
        rules
            .classify(&one("eventbridge-vpn-tunnel-down-alarm.json"))
            .key
    );
    // The runbook diagnoses that VPN.
    assert_eq!(
        a.runbook.unwrap().parameters["VpnConnectionId"],
        vec![VPN.to_string()]
    );
    // MAX(TunnelState) per VpnId: every tunnel of that VPN down.
    let text = std::fs::read_to_string(
        events_dir().join("eventbridge-insights-contributor-vpn2-alarm.json"),
    )
    .unwrap()
    .replace("SELECT MIN(TunnelState)", "SELECT MAX(TunnelState)");
    let max = normalize_str(&text).unwrap().remove(0);
    let c = rules.classify(&max);
    assert_eq!(
        (c.rule.as_str(), c.impact),
        ("vpn-all-tunnels-down", Impact::CRITICAL)
    );
    assert_eq!(c.key, format!("VPN connection {VPN2} is DOWN"));
}

#[test]
fn contributor_attributes_work_as_dimensions_in_configured_rules() {
    let rules = Rules::from_json(
        r#"{"rules": [{"name": "per-vpn", "match": {"alarmName": "^vpn-tunnel-down-all", "dimensions": {"VpnId": "*"}},
            "impact": 2, "title": "{VpnId} lost a tunnel", "dedupeKey": "site-{VpnId}",
            "summary": "{AlarmLabel} / {Contributor} / {ContributorId}"}], "builtins": false}"#,
        None,
    )
    .unwrap();
    let c = rules.classify(&one("eventbridge-insights-contributor-vpn2-alarm.json"));
    assert_eq!(c.rule, "per-vpn");
    assert_eq!(c.title, format!("{VPN2} lost a tunnel"));
    assert_eq!(c.key, format!("site-{VPN2}"));
    assert_eq!(
        c.summary,
        format!("vpn-tunnel-down-all-connections (VpnId={VPN2}) / VpnId={VPN2} / a41d6e0b97c3f258")
    );
    // The default incident of a contributor is per time series too.
    let d = Rules::from_json(r#"{"builtins": false}"#, None)
        .unwrap()
        .classify(&one("eventbridge-insights-contributor-vpn2-alarm.json"));
    assert_eq!(
        d.key,
        format!("CloudWatch alarm vpn-tunnel-down-all-connections (VpnId={VPN2})")
    );
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
    assert!(files.len() >= 22, "{files:?}");
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
