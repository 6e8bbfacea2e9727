//! The report as people see it: findings for the Chatbot/Slack notification, the
//! note on the incident (Incident Manager timeline event, OpsItem operational data).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::analysis::{Finding, Report};
use super::VpnConnectionId;
use crate::incident::{IncidentRef, Note};
use crate::notification::{EventType, FindingSummary, IncidentStatus, Link, Notification};
use crate::text::truncate;

/// Longest evidence text of one finding in a notification.
const EVIDENCE_CHARS: usize = 600;
/// Longest note text: Incident Manager timeline `eventData` is at most 12,000
/// characters, and the note is wrapped in JSON by the backend.
const NOTE_CHARS: usize = 8_000;

/// The incident key of a VPN connection, as alarm-to-incident's built-in rule
/// builds it ("VPN connection {VpnId} is DOWN"): the Slack thread of the incident.
pub fn incident_key(vpn: &VpnConnectionId) -> String {
    format!("VPN connection {vpn} is DOWN")
}

/// Where the notification goes and what it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationContext {
    pub incident_key: String,
    pub incident: Option<IncidentRef>,
    pub account: String,
    pub region: String,
    pub occurred_at: DateTime<Utc>,
    /// The member account's name, OU and tags (organization mode), for the card and routing.
    pub account_info: Option<crate::org::AccountInfo>,
}

impl Finding {
    /// The finding as the notification shows it.
    pub fn to_summary(&self) -> FindingSummary {
        FindingSummary {
            severity: self.severity.as_str().to_string(),
            title: self.title.clone(),
            evidence: truncate(&self.evidence.join("; "), EVIDENCE_CHARS),
            next_step: self.next_step.clone(),
        }
    }
}

impl Report {
    /// The `diagnosed` notification for the SNS topic.
    pub fn to_notification(&self, ctx: &NotificationContext) -> Notification {
        let down = self
            .tunnels
            .iter()
            .filter(|t| t.status == super::TunnelStatus::Down)
            .collect::<Vec<_>>();
        let mut next_steps: Vec<String> = Vec::new();
        for f in &self.findings {
            if f.severity != super::Severity::Info && !next_steps.contains(&f.next_step) {
                next_steps.push(f.next_step.clone());
            }
        }
        if next_steps.is_empty() {
            next_steps.extend(self.findings.first().map(|f| f.next_step.clone()));
        }
        next_steps.truncate(3);
        let mut links = vec![Link {
            label: format!("VPN connection {}", self.vpn_connection_id),
            url: format!(
                "https://{r}.console.aws.amazon.com/vpcconsole/home?region={r}#VpnConnectionDetails:VpnConnectionId={id}",
                r = ctx.region,
                id = self.vpn_connection_id
            ),
        }];
        let incident_url = ctx.incident.as_ref().map(|i| i.console_url(&ctx.region));
        if let Some(url) = &incident_url {
            links.push(Link {
                label: "Incident".to_string(),
                url: url.clone(),
            });
        }
        Notification {
            event: EventType::Diagnosed,
            incident_key: ctx.incident_key.clone(),
            title: self.headline.clone(),
            summary: format!(
                "Diagnosis of {} ({} finding{}{}).",
                self.vpn_connection_id,
                self.findings.len(),
                if self.findings.len() == 1 { "" } else { "s" },
                if self.complete {
                    ""
                } else {
                    ", partial: some facts could not be gathered"
                }
            ),
            impact: self.impact,
            status: IncidentStatus::Open,
            backend: ctx.incident.as_ref().map(|i| match i {
                IncidentRef::IncidentManager(_) => "IncidentManager".to_string(),
                IncidentRef::OpsCenter(_) => "OpsCenter".to_string(),
            }),
            incident_ref: ctx.incident.as_ref().map(|i| i.id().to_string()),
            incident_url,
            account: ctx.account.clone(),
            region: ctx.region.clone(),
            alarm: None,
            vpn_id: Some(self.vpn_connection_id.clone()),
            tunnel_ip: match down.as_slice() {
                [one] => Some(one.outside_ip.clone()),
                _ => None,
            },
            occurred_at: ctx.occurred_at,
            opened_at: None,
            duration_seconds: None,
            next_steps,
            links,
            findings: self.findings.iter().map(Finding::to_summary).collect(),
            timeline: vec![],
            roles: Default::default(),
            post_incident: None,
            notification_id: None,
            account_info: ctx.account_info.clone(),
        }
    }

    /// The note added to the incident.
    pub fn to_note(&self) -> Note {
        let mut text = format!("{}\n", self.headline);
        for f in &self.findings {
            text.push_str(&format!(
                "\n[{}] {}\n",
                f.severity.as_str().to_uppercase(),
                f.title
            ));
            for e in &f.evidence {
                text.push_str(&format!("  - {e}\n"));
            }
            text.push_str(&format!("  Next step: {}\n", f.next_step));
        }
        if !self.complete {
            text.push_str("\nPartial diagnosis: some facts could not be gathered (see above).\n");
        }
        let mut data = BTreeMap::new();
        data.insert(
            "vpnConnectionId".to_string(),
            self.vpn_connection_id.clone(),
        );
        data.insert("impact".to_string(), self.impact.value().to_string());
        data.insert("complete".to_string(), self.complete.to_string());
        data.insert(
            "findings".to_string(),
            self.findings
                .iter()
                .map(|f| {
                    serde_json::to_value(f.code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(","),
        );
        Note {
            title: truncate(&format!("VPN diagnosis: {}", self.headline), 200),
            text: truncate(&text, NOTE_CHARS),
            at: self.generated_at,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::Impact;
    use crate::vpn::{FindingCode, LogStatus, Severity};

    fn report(findings: Vec<Finding>) -> Report {
        Report {
            vpn_connection_id: "vpn-0a1b2c3d".into(),
            generated_at: "2026-11-25T10:00:00Z".parse().unwrap(),
            lookback_minutes: 60,
            headline: "Both tunnels of vpn-0a1b2c3d are DOWN".into(),
            impact: Impact::CRITICAL,
            complete: true,
            findings,
            tunnels: vec![],
            log_query: LogStatus::Complete,
            gaps: vec![],
        }
    }

    fn finding(code: FindingCode, severity: Severity, next: &str) -> Finding {
        Finding {
            code,
            severity,
            tunnel: None,
            title: format!("{code:?}"),
            evidence: vec!["a".repeat(400), "b".repeat(400)],
            next_step: next.into(),
        }
    }

    #[test]
    fn notification_carries_findings_next_steps_and_links() {
        let r = report(vec![
            finding(
                FindingCode::BothTunnelsDown,
                Severity::Critical,
                "check the device",
            ),
            finding(
                FindingCode::Phase1AuthFailure,
                Severity::Critical,
                "fix the key",
            ),
            finding(
                FindingCode::DpdTimeout,
                Severity::Warning,
                "check the device",
            ),
            finding(
                FindingCode::TunnelLoggingDisabled,
                Severity::Info,
                "enable logs",
            ),
        ]);
        let n = r.to_notification(&NotificationContext {
            incident_key: "VPN connection vpn-0a1b2c3d is DOWN".into(),
            incident: Some(IncidentRef::OpsCenter("oi-0123456789ab".into())),
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            occurred_at: r.generated_at,
            account_info: None,
        });
        assert_eq!(n.event, EventType::Diagnosed);
        assert_eq!(n.impact, Impact::CRITICAL);
        // Distinct next steps of non-info findings, in report order.
        assert_eq!(n.next_steps, ["check the device", "fix the key"]);
        assert_eq!(n.findings.len(), 4);
        assert_eq!(n.findings[0].evidence.chars().count(), EVIDENCE_CHARS);
        assert_eq!(n.backend.as_deref(), Some("OpsCenter"));
        assert_eq!(n.links.len(), 2);
        assert!(n.links[0]
            .url
            .contains("#VpnConnectionDetails:VpnConnectionId=vpn-0a1b2c3d"));
        assert_eq!(n.summary, "Diagnosis of vpn-0a1b2c3d (4 findings).");
    }

    #[test]
    fn note_lists_findings_and_codes() {
        let r = report(vec![finding(
            FindingCode::BothTunnelsDown,
            Severity::Critical,
            "check the device",
        )]);
        let note = r.to_note();
        assert_eq!(
            note.title,
            "VPN diagnosis: Both tunnels of vpn-0a1b2c3d are DOWN"
        );
        assert!(note.text.contains("[CRITICAL] BothTunnelsDown\n  - aaa"));
        assert!(note.text.contains("  Next step: check the device\n"));
        assert_eq!(note.data["findings"], "both_tunnels_down");
        assert_eq!(note.data["complete"], "true");
        assert_eq!(
            incident_key(&VpnConnectionId::parse("vpn-0a1b2c3d").unwrap()),
            "VPN connection vpn-0a1b2c3d is DOWN"
        );
    }
}
