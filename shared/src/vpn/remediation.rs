//! When the guarded remediation may replace a tunnel endpoint (`ReplaceVpnTunnel`).
//!
//! Only when enabled, only when exactly one tunnel is DOWN and every other tunnel is
//! UP (never both: replacing the last working tunnel would cut the site off), only
//! after the tunnel has been down for the configured minutes, and not when the logs
//! show a customer-gateway configuration error (a new AWS endpoint cannot fix a
//! wrong pre-shared key or proposal on the device).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::analysis::Report;
use super::facts::{ConnectionState, TunnelStatus, VpnFacts};
use super::logs::LogEvent;

/// `REMEDIATION_ENABLED` and `REMEDIATION_MIN_DOWN_MINUTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemediationPolicy {
    pub enabled: bool,
    pub min_down_minutes: u32,
}

/// The decision, with its reason for the incident timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum RemediationDecision {
    #[serde(rename_all = "camelCase")]
    Replace {
        tunnel_ip: String,
        down_since: DateTime<Utc>,
        down_minutes: i64,
    },
    Skip {
        reason: String,
    },
}

fn skip(reason: impl Into<String>) -> RemediationDecision {
    RemediationDecision::Skip {
        reason: reason.into(),
    }
}

/// Decides whether to replace a tunnel endpoint, from the facts and their report.
pub fn decide_remediation(
    facts: &VpnFacts,
    report: &Report,
    policy: RemediationPolicy,
) -> RemediationDecision {
    if !policy.enabled {
        return skip("remediation is off (REMEDIATION_ENABLED is false)");
    }
    let Some(c) = facts.found() else {
        return skip("the VPN connection was not described");
    };
    if c.state != ConnectionState::Available {
        return skip(format!("the VPN connection is {}", c.state.as_str()));
    }
    let down: Vec<_> = c
        .tunnels
        .iter()
        .filter(|t| t.status() == TunnelStatus::Down)
        .collect();
    let up = c
        .tunnels
        .iter()
        .filter(|t| t.status() == TunnelStatus::Up)
        .count();
    if down.len() != 1 || up + 1 != c.tunnels.len() || up == 0 {
        return skip(format!(
            "needs exactly one tunnel DOWN and the others UP; found {} DOWN, {} UP of {}",
            down.len(),
            up,
            c.tunnels.len()
        ));
    }
    let tunnel = down[0];
    let Some(since) = facts.down_since(tunnel) else {
        return skip(format!(
            "no time of the last status change for tunnel {}",
            tunnel.outside_ip
        ));
    };
    let minutes = (facts.collected_at - since).num_minutes();
    if minutes < i64::from(policy.min_down_minutes) {
        return skip(format!(
            "tunnel {} has been down {minutes} min, less than REMEDIATION_MIN_DOWN_MINUTES ({})",
            tunnel.outside_ip, policy.min_down_minutes
        ));
    }
    let device_error = report
        .tunnels
        .iter()
        .find(|t| t.outside_ip == tunnel.outside_ip)
        .and_then(|t| {
            [
                LogEvent::Phase1AuthFailure,
                LogEvent::Phase1ProposalMismatch,
                LogEvent::TrafficSelectorMismatch,
                LogEvent::Phase2ProposalMismatch,
            ]
            .into_iter()
            .find(|e| t.log_errors.get(e).copied().unwrap_or(0) > 0)
        });
    if let Some(e) = device_error {
        return skip(format!(
            "the logs of tunnel {} show a customer gateway configuration error ({}); a new AWS endpoint cannot fix it",
            tunnel.outside_ip,
            serde_json::to_value(e).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        ));
    }
    RemediationDecision::Replace {
        tunnel_ip: tunnel.outside_ip.clone(),
        down_since: since,
        down_minutes: minutes,
    }
}
