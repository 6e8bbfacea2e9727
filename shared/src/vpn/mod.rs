//! VPN diagnosis, the pure part: the validated connection id, the facts gathered
//! about a site-to-site VPN connection ([`VpnFacts`]), the tunnel-log record parser,
//! the analysis from facts to findings ([`analyse`]) and their rendering for the
//! incident and the notification topic.
//!
//! Nothing here calls AWS: vpn-troubleshoot gathers the facts (EC2 describes,
//! CloudWatch metrics, Logs Insights) and hands them to [`analyse`], so every case
//! of the diagnosis is tested from fixture facts and log records.

mod analysis;
mod facts;
mod logs;
mod member;
mod remediation;
mod render;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use analysis::{analyse, Finding, FindingCode, Report, Severity, TunnelSummary};
pub use facts::{
    merge_tunnels, ConnectionFacts, ConnectionLookup, ConnectionState, Gap, GatewayFacts,
    GatewayKind, LogFacts, LogStatus, Maintenance, MetricPoint, StaticRoute, Telemetry,
    TunnelFacts, TunnelLogging, TunnelMetricHistory, TunnelOptions, TunnelStatus, VpnFacts,
};
pub use logs::{
    assign_tunnel, classify_details, parse_line, parse_record, EventStats, IkeState, LogEvent,
    LogParseError, TunnelLogRecord, TunnelLogSummary,
};
pub use member::{member_unreachable, MemberAccessFailure};
pub use remediation::{decide_remediation, RemediationDecision, RemediationPolicy};
pub use render::{incident_key, NotificationContext};

/// A validated VPN connection id: `vpn-` followed by 8 to 17 hexadecimal digits,
/// stored in lower case (EC2 ids are lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VpnConnectionId(String);

/// Why a VPN connection id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid VPN connection id {value:?}: expected \"vpn-\" followed by 8 to 17 hexadecimal digits, e.g. vpn-0a1b2c3d4e5f67890")]
pub struct InvalidVpnId {
    /// The refused value, cut short.
    pub value: String,
}

impl crate::error::Retryable for InvalidVpnId {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "BadInput"
    }
}

impl VpnConnectionId {
    /// Validates `s` (surrounding whitespace ignored, hex digits in any case).
    pub fn parse(s: &str) -> Result<VpnConnectionId, InvalidVpnId> {
        let t = s.trim();
        let ok = t.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("vpn-"))
            && (8..=17).contains(&(t.len() - 4))
            && t.bytes().skip(4).all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(VpnConnectionId(t.to_ascii_lowercase()))
        } else {
            Err(InvalidVpnId {
                value: crate::text::truncate(s, 64),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VpnConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for VpnConnectionId {
    type Error = InvalidVpnId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        VpnConnectionId::parse(&s)
    }
}

impl From<VpnConnectionId> for String {
    fn from(id: VpnConnectionId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpn_id_accepts_8_to_17_hex_digits() {
        assert_eq!(
            VpnConnectionId::parse("vpn-0a1b2c3d").unwrap().as_str(),
            "vpn-0a1b2c3d"
        );
        assert_eq!(
            VpnConnectionId::parse(" VPN-0A1B2C3D4E5F67890 ")
                .unwrap()
                .as_str(),
            "vpn-0a1b2c3d4e5f67890"
        );
    }

    #[test]
    fn vpn_id_rejects_bad_shapes_with_clear_message() {
        for bad in [
            "",
            "vpn-",
            "vpn-0a1b2c3",
            "vpn-0a1b2c3d4e5f678901",
            "vpn-0a1b2c3g",
            "vgw-0a1b2c3d",
            "vpn_0a1b2c3d",
            "vpn-0a1b2c3d é",
            "é",
        ] {
            let err = VpnConnectionId::parse(bad).unwrap_err();
            assert!(
                err.to_string()
                    .contains("expected \"vpn-\" followed by 8 to 17"),
                "{bad}"
            );
        }
        let long = "x".repeat(500);
        assert!(
            VpnConnectionId::parse(&long)
                .unwrap_err()
                .value
                .chars()
                .count()
                <= 64
        );
    }

    #[test]
    fn vpn_id_deserializes_with_validation() {
        let id: VpnConnectionId = serde_json::from_str("\"vpn-0123abcd\"").unwrap();
        assert_eq!(id.to_string(), "vpn-0123abcd");
        assert!(serde_json::from_str::<VpnConnectionId>("\"vpn-12\"").is_err());
    }
}
