//! Alarm normalization (`shared::alarm::normalize`) on arbitrary bytes: any event in
//! any of the three envelopes, broken or not, gives alarms or a specific error and
//! never panics (also read as one SNS message with its topic). What it gives is then
//! used the way alarm-to-incident uses it (classification, lifecycle key, notification
//! round trip), so a panic further on counts too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::alarm::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        // Not JSON: the string entry point must say so, not panic.
        assert!(shared::alarm::normalize_str(text).is_err());
        return;
    };
    // The same bytes as one SNS message (notify-fanout's entry point, with the topic
    // standing in for a missing Region): never a panic either.
    let _ = shared::alarm::normalize_sns_message(&value, "arn:aws:sns:eu-west-1:123456789012:t");
    let Ok(alarms) = normalize(&value) else {
        return;
    };
    for alarm in &alarms {
        // Every accessor the pipeline reads, on every alarm produced.
        let _ = alarm.metric();
        let _ = alarm.metrics();
        let _ = alarm.statistic();
        let _ = alarm.dimension("VpnId");
        let _ = alarm.label();
        let _ = alarm.condition.summary();
        let _ = alarm.is_multi_series_summary();
        // The source id splits back into the alarm ARN and contributor.
        let source = alarm.source_id();
        let (arn, contributor) = shared::alarm::split_source_id(&source);
        assert_eq!(arn, alarm.arn, "source id {source:?}");
        assert_eq!(contributor, alarm.contributor.as_ref().map(|c| c.id.as_str()));
        let _ = shared::classify::Rules::builtin(Some("Runbook")).classify(alarm);
        // The alarm survives its own serde round trip (the state table stores it).
        let json = serde_json::to_string(alarm).expect("an Alarm always serializes");
        let back: shared::alarm::Alarm =
            serde_json::from_str(&json).expect("a serialized Alarm parses back");
        assert_eq!(&back, alarm, "serde round trip changed the alarm");
    }
});
