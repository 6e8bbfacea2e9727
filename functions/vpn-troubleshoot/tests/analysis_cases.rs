//! The table of analysis cases: one fixture per finding of the issue and their
//! combinations (tests/fixtures/cases/*.json over tests/fixtures/base-facts.json).

mod common;

use serde_json::{json, Value};
use shared::vpn::{analyse, decide_remediation, RemediationDecision, RemediationPolicy, Report};

fn check_case(name: &str, case: &Value) -> Vec<String> {
    let mut problems = vec![];
    let (facts, unreadable) = common::case_facts(case);
    let report = analyse(&facts);
    let expect = &case["expect"];

    let got: Vec<Value> = report
        .findings
        .iter()
        .map(|f| json!({"code": f.code, "severity": f.severity, "tunnel": f.tunnel}))
        .collect();
    if Some(&got) != expect["findings"].as_array() {
        problems.push(format!(
            "findings\n    want {}\n    got  {}",
            expect["findings"],
            Value::Array(got)
        ));
    }
    if let Some(impact) = expect["impact"].as_u64() {
        if u64::from(report.impact.value()) != impact {
            problems.push(format!(
                "impact: want {impact}, got {}",
                report.impact.value()
            ));
        }
    }
    if let Some(complete) = expect["complete"].as_bool() {
        if report.complete != complete {
            problems.push(format!(
                "complete: want {complete}, got {}",
                report.complete
            ));
        }
    }
    if let Some(n) = expect["unreadable"].as_u64() {
        if unreadable as u64 != n {
            problems.push(format!("unreadable log lines: want {n}, got {unreadable}"));
        }
    }
    if let Some(h) = expect["headline"].as_str() {
        if !report.headline.contains(h) {
            problems.push(format!(
                "headline: want it to contain {h:?}, got {:?}",
                report.headline
            ));
        }
    }
    if let Some(h) = expect["headline_excludes"].as_str() {
        if report.headline.contains(h) {
            problems.push(format!(
                "headline must not contain {h:?}: {:?}",
                report.headline
            ));
        }
    }
    for (field, key) in [("next_steps", "next_step"), ("evidence", "evidence")] {
        for (code, want) in expect[field].as_object().into_iter().flatten() {
            let want = want.as_str().unwrap_or_default();
            let found = report.findings.iter().any(|f| {
                serde_json::to_value(f.code).ok().as_ref() == Some(&json!(code))
                    && match key {
                        "next_step" => f.next_step.contains(want),
                        _ => f.evidence.iter().any(|e| e.contains(want)),
                    }
            });
            if !found {
                problems.push(format!(
                    "{code} {key}: no finding contains {want:?}\n    {}",
                    dump(&report, code)
                ));
            }
        }
    }
    for r in expect["remediation"].as_array().into_iter().flatten() {
        let policy = RemediationPolicy {
            enabled: r["enabled"].as_bool().unwrap_or(false),
            min_down_minutes: r["min_down_minutes"].as_u64().unwrap_or(15) as u32,
        };
        let decision = decide_remediation(&facts, &report, policy);
        let ok = match (&decision, r["decision"].as_str()) {
            (RemediationDecision::Replace { tunnel_ip, .. }, Some("replace")) => {
                r["tunnel"].as_str() == Some(tunnel_ip)
            }
            (RemediationDecision::Skip { reason }, Some("skip")) => {
                reason.contains(r["reason"].as_str().unwrap_or_default())
            }
            _ => false,
        };
        if !ok {
            problems.push(format!("remediation {r}: got {decision:?}"));
        }
    }
    problems
        .into_iter()
        .map(|p| format!("{name}: {p}"))
        .collect()
}

fn dump(report: &Report, code: &str) -> String {
    report
        .findings
        .iter()
        .filter(|f| serde_json::to_value(f.code).ok().as_ref() == Some(&json!(code)))
        .map(|f| format!("evidence {:?} next {:?}", f.evidence, f.next_step))
        .collect::<Vec<_>>()
        .join("\n    ")
}

#[test]
fn analysis_cases_table() {
    let dir = common::fixtures().join("cases");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("cases dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 20,
        "expected the full table, found {}",
        names.len()
    );
    let mut problems = vec![];
    for name in &names {
        let case = common::read_json(&dir.join(name));
        problems.extend(check_case(name, &case));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_finding_code_is_covered_by_a_case() {
    let dir = common::fixtures().join("cases");
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir)
        .expect("cases dir")
        .filter_map(|e| e.ok())
    {
        let case = common::read_json(&entry.path());
        for f in case["expect"]["findings"].as_array().into_iter().flatten() {
            seen.insert(f["code"].as_str().unwrap_or_default().to_string());
        }
    }
    let all = [
        "connection_not_found",
        "describe_failed",
        "connection_not_available",
        "both_tunnels_down",
        "one_tunnel_down",
        "gateway_not_available",
        "phase1_auth_failure",
        "phase1_proposal_mismatch",
        "phase2_traffic_selector_mismatch",
        "phase2_proposal_mismatch",
        "dpd_timeout",
        "phase1_not_established",
        "phase2_not_established",
        "tunnel_up_no_routes",
        "no_static_routes",
        "tunnel_flapping",
        "maintenance_pending",
        "tunnel_logging_disabled",
        "tunnel_log_format_text",
        "all_tunnels_up",
        "diagnosis_incomplete",
    ];
    let missing: Vec<&&str> = all.iter().filter(|c| !seen.contains(**c)).collect();
    assert!(
        missing.is_empty(),
        "finding codes without a case: {missing:?}"
    );
}

#[test]
fn report_and_rendering_for_both_down_with_phase1_auth_failures() {
    let (facts, _) = common::case_facts(&common::load_case("both-down-phase1-auth"));
    let report = analyse(&facts);
    let note = report.to_note();
    assert_eq!(
        note.title,
        "VPN diagnosis: Both tunnels of vpn-0a1b2c3d4e5f67890 are DOWN: IKE phase 1 authentication failures (pre-shared key mismatch)"
    );
    assert!(note.text.contains(
        "[CRITICAL] IKE phase 1 authentication fails on tunnels 1 and 2: pre-shared key mismatch"
    ));
    assert_eq!(
        note.data["findings"],
        "both_tunnels_down,phase1_auth_failure"
    );
    assert_eq!(note.data["impact"], "1");

    let n = report.to_notification(&shared::vpn::NotificationContext {
        incident_key: "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN".into(),
        incident: Some(shared::incident::IncidentRef::OpsCenter(
            "oi-0123456789ab".into(),
        )),
        account: "123456789012".into(),
        region: "eu-west-1".into(),
        occurred_at: facts.collected_at,
        account_info: None,
    });
    assert_eq!(n.event, shared::notification::EventType::Diagnosed);
    assert_eq!(n.findings.len(), 2);
    assert_eq!(n.findings[0].severity, "critical");
    assert_eq!(n.backend.as_deref(), Some("OpsCenter"));
    let chatbot = n.to_chatbot();
    assert_eq!(
        chatbot["metadata"]["threadId"],
        "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
    );
    assert_eq!(chatbot["metadata"]["eventType"], "diagnosed");
    let description = chatbot["content"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains("*[critical]* IKE phase 1 authentication fails"),
        "{description}"
    );
    assert_eq!(
        chatbot["content"]["nextSteps"].as_array().map(Vec::len),
        Some(2)
    );
}
