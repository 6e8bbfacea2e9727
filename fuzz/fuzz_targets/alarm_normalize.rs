//! Alarm normalization (`shared::alarm::normalize`) on arbitrary bytes: any event in
//! any of the three envelopes, broken or not, gives alarms or a specific error and
//! never panics. What it gives is then used the way alarm-to-incident uses it
//! (classification, lifecycle key, notification round trip), so a panic further on
//! counts too.
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
    let Ok(alarms) = normalize(&value) else {
        return;
    };
    for alarm in &alarms {
        // Every accessor the pipeline reads, on every alarm produced.
        let _ = alarm.metric();
        let _ = alarm.metrics();
        let _ = alarm.statistic();
        let _ = alarm.dimension("VpnId");
        // The alarm survives its own serde round trip (the state table stores it).
        let json = serde_json::to_string(alarm).expect("an Alarm always serializes");
        let back: shared::alarm::Alarm =
            serde_json::from_str(&json).expect("a serialized Alarm parses back");
        assert_eq!(&back, alarm, "serde round trip changed the alarm");
    }
});
