//! The guarded remediation: `ReplaceVpnTunnel` for the one tunnel that
//! `shared::vpn::decide_remediation` picked, dry run first. This is the only EC2 write
//! call of the function, and it is never made unless the decision is `Replace`.
//! (`ResetVpnConnection`, which the article calls, does not exist.)

use aws_sdk_ec2::Client;
use serde::Serialize;
use shared::error::AwsError;
use shared::vpn::{RemediationDecision, VpnConnectionId};
use tracing::{info, warn};

use crate::ec2::SERVICE;

/// What the remediation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum RemediationOutcome {
    /// No write call was made.
    NotAttempted { reason: String },
    /// The dry run was refused (permissions, state): the real call was not made.
    #[serde(rename_all = "camelCase")]
    DryRunRefused { tunnel_ip: String, error: String },
    /// The dry run passed but the replacement failed.
    #[serde(rename_all = "camelCase")]
    Failed { tunnel_ip: String, error: String },
    /// AWS accepted the replacement of the tunnel endpoint.
    #[serde(rename_all = "camelCase")]
    Replaced {
        tunnel_ip: String,
        down_minutes: i64,
    },
}

impl RemediationOutcome {
    /// One line for the incident and the notification.
    pub fn describe(&self, vpn: &VpnConnectionId) -> String {
        match self {
            RemediationOutcome::NotAttempted { reason } => format!("Remediation not attempted: {reason}."),
            RemediationOutcome::DryRunRefused { tunnel_ip, error } => format!(
                "Remediation: the ReplaceVpnTunnel dry run for tunnel {tunnel_ip} of {vpn} was refused, nothing was changed: {error}."
            ),
            RemediationOutcome::Failed { tunnel_ip, error } => {
                format!("Remediation: ReplaceVpnTunnel for tunnel {tunnel_ip} of {vpn} failed: {error}.")
            }
            RemediationOutcome::Replaced { tunnel_ip, down_minutes } => format!(
                "Remediation: replaced the AWS endpoint of tunnel {tunnel_ip} of {vpn} (down {down_minutes} min) with \
                 ReplaceVpnTunnel; the tunnel renegotiates in a few minutes, the other tunnel was not touched."
            ),
        }
    }

    pub fn made_write_call(&self) -> bool {
        matches!(
            self,
            RemediationOutcome::Replaced { .. } | RemediationOutcome::Failed { .. }
        )
    }
}

/// Carries out the decision: nothing for `Skip`; for `Replace`, a dry run and, when
/// EC2 answers `DryRunOperation` (the dry run would have succeeded), the replacement.
pub async fn remediate(
    ec2: &Client,
    vpn: &VpnConnectionId,
    decision: &RemediationDecision,
) -> RemediationOutcome {
    let (tunnel_ip, down_minutes) = match decision {
        RemediationDecision::Skip { reason } => {
            return RemediationOutcome::NotAttempted {
                reason: reason.clone(),
            }
        }
        RemediationDecision::Replace {
            tunnel_ip,
            down_minutes,
            ..
        } => (tunnel_ip.clone(), *down_minutes),
    };
    let request = |dry_run: bool| {
        ec2.replace_vpn_tunnel()
            .vpn_connection_id(vpn.as_str())
            .vpn_tunnel_outside_ip_address(&tunnel_ip)
            .apply_pending_maintenance(false)
            .dry_run(dry_run)
    };
    match request(true).send().await {
        Err(e) => {
            let e = AwsError::from_sdk(SERVICE, "ReplaceVpnTunnel", e);
            if !e.is_code("DryRunOperation") {
                warn!(tunnel = %tunnel_ip, error = %e, "ReplaceVpnTunnel dry run refused");
                return RemediationOutcome::DryRunRefused {
                    tunnel_ip,
                    error: e.to_string(),
                };
            }
        }
        Ok(_) => {
            // EC2 answers a permitted dry run with the DryRunOperation error; success
            // means the dry-run flag was not honoured, so do not go further.
            return RemediationOutcome::DryRunRefused {
                tunnel_ip,
                error: "the dry run did not answer DryRunOperation".into(),
            };
        }
    }
    match request(false).send().await {
        Ok(out) if out.r#return() != Some(false) => {
            info!(tunnel = %tunnel_ip, down_minutes, "tunnel endpoint replaced");
            RemediationOutcome::Replaced {
                tunnel_ip,
                down_minutes,
            }
        }
        Ok(_) => RemediationOutcome::Failed {
            tunnel_ip,
            error: "EC2 answered Return=false".into(),
        },
        Err(e) => RemediationOutcome::Failed {
            tunnel_ip,
            error: AwsError::from_sdk(SERVICE, "ReplaceVpnTunnel", e).to_string(),
        },
    }
}
