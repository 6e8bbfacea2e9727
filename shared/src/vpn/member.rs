//! The report when the diagnosis cannot enter the member account the VPN lives in
//! (organization mode): the member's diagnosis role is missing, refuses this stack,
//! or STS failed. A finding like any other, so the incident and its Slack thread say
//! what happened and what to do, instead of the runbook failing.

use chrono::{DateTime, Utc};

use super::analysis::{Finding, FindingCode, Report, Severity};
use super::facts::{Gap, LogStatus};
use super::VpnConnectionId;
use crate::incident::Impact;
pub use crate::member_access::MemberAccessFailure;

/// The diagnosis report of a VPN whose member account could not be entered: one
/// critical finding naming the role, the account and the error, and the next step.
pub fn member_unreachable(
    vpn: &VpnConnectionId,
    at: DateTime<Utc>,
    lookback_minutes: u32,
    failure: &MemberAccessFailure,
) -> Report {
    let headline = failure.headline();
    let next_step = if failure.retryable {
        "STS was throttling or unreachable: run the diagnosis runbook again in a minute."
            .to_string()
    } else {
        format!(
            "Deploy member.yaml to account {account} in {region} (a StackSet instance of the organization's \
             member stack), or check that its diagnosis role trusts this stack's vpn-troubleshoot role and the \
             organization (CentralDiagnosisPrincipalArn, OrganizationId), then run the diagnosis runbook again. \
             Until then, diagnose {vpn} from the member account's console.",
            account = failure.account,
            region = failure.region,
        )
    };
    let finding = Finding {
        code: FindingCode::MemberAccessFailed,
        severity: Severity::Critical,
        tunnel: None,
        title: format!("{}{}", headline[..1].to_uppercase(), &headline[1..]),
        evidence: vec![if failure.role_arn.is_empty() {
            failure.message.clone()
        } else {
            format!("sts:AssumeRole {}: {}", failure.role_arn, failure.message)
        }],
        next_step,
    };
    Report {
        vpn_connection_id: vpn.to_string(),
        generated_at: at,
        lookback_minutes,
        headline: format!("VPN connection {vpn} was not diagnosed: {headline}"),
        // Nothing is known about the tunnels: medium, as for a failed describe.
        impact: Impact::MEDIUM,
        complete: false,
        findings: vec![finding],
        tunnels: vec![],
        log_query: LogStatus::NotQueried,
        gaps: vec![Gap {
            source: format!("sts:AssumeRole in {}", failure.account),
            message: failure.message.clone(),
            retryable: failure.retryable,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_denied_is_a_critical_finding_naming_role_account_and_code() {
        let failure = MemberAccessFailure {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            role_arn: "arn:aws:iam::111122223333:role/incident-pipeline-diagnosis".into(),
            code: "AccessDenied".into(),
            message: "User: arn:aws:sts::123456789012:assumed-role/x/y is not authorized to perform: sts:AssumeRole".into(),
            retryable: false,
        };
        let vpn = VpnConnectionId::parse("vpn-0a1b2c3d4e5f67890").unwrap();
        let r = member_unreachable(&vpn, "2026-11-25T10:00:00Z".parse().unwrap(), 60, &failure);
        assert_eq!(r.codes(), [FindingCode::MemberAccessFailed]);
        let f = &r.findings[0];
        assert_eq!(
            f.title,
            "Cannot assume arn:aws:iam::111122223333:role/incident-pipeline-diagnosis in 111122223333: AccessDenied"
        );
        assert!(f
            .next_step
            .contains("Deploy member.yaml to account 111122223333 in eu-west-1"));
        assert!(r
            .headline
            .starts_with("VPN connection vpn-0a1b2c3d4e5f67890 was not diagnosed: cannot assume"));
        assert!(!r.complete);
        assert_eq!(r.impact.value(), 3);
        let note = r.to_note();
        assert!(note.text.contains("AccessDenied"), "{}", note.text);
    }
}
