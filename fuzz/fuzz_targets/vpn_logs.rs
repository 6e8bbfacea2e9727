//! The tunnel-log parser (`shared::vpn` logs) on arbitrary bytes: each line is a
//! record or a specific error, never a panic; the records then go through the summary
//! and tunnel assignment vpn-troubleshoot runs on them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::vpn::{assign_tunnel, parse_line, TunnelLogSummary};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut records = vec![];
    // The whole input as one line (the size guard), then line by line.
    if let Ok(r) = parse_line(text) {
        records.push(r);
    }
    records.extend(text.lines().filter_map(|l| parse_line(l).ok()));
    let tunnels = ["203.0.113.10".to_string(), "203.0.113.20".to_string()];
    for r in &records {
        if let Some(ip) = assign_tunnel(r, &tunnels) {
            assert!(
                tunnels.iter().any(|t| t == ip),
                "assigned to an unknown tunnel"
            );
        }
        let json = serde_json::to_value(r).expect("a record always serializes");
        let _ = shared::vpn::parse_record(&json);
    }
    let summary = TunnelLogSummary::from_records(&records);
    assert_eq!(summary.records, records.len());
    let errors: usize = summary.events.values().map(|e| e.count).sum();
    assert!(errors <= records.len(), "more error events than records");
});
