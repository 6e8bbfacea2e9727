//! What vpn-troubleshoot gathered about one VPN connection, in plain types that
//! fixtures can be written in (JSON) and that the analysis reads without AWS types.
//!
//! `DescribeVpnConnections` returns the tunnels twice: `VgwTelemetry` (status, routes)
//! and `Options.TunnelOptions` (IKE settings, logging), two lists matched only by the
//! tunnel's outside IP address; [`merge_tunnels`] joins them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::logs::TunnelLogRecord;
use super::VpnConnectionId;

/// Everything known about one VPN connection at `collected_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpnFacts {
    pub vpn_id: VpnConnectionId,
    pub collected_at: DateTime<Utc>,
    /// The window of the metric history and of the log query.
    pub lookback_minutes: u32,
    pub connection: ConnectionLookup,
    #[serde(default)]
    pub customer_gateway: Option<GatewayFacts>,
    /// The virtual private gateway, or the transit gateway attachment of the connection.
    #[serde(default)]
    pub attachment: Option<GatewayFacts>,
    /// `AWS/VPN TunnelState` per tunnel over the window.
    #[serde(default)]
    pub metrics: Vec<TunnelMetricHistory>,
    #[serde(default)]
    pub logs: LogFacts,
    /// Facts that could not be gathered: the report says it is partial.
    #[serde(default)]
    pub gaps: Vec<Gap>,
}

impl VpnFacts {
    /// The connection, when `DescribeVpnConnections` found it.
    pub fn found(&self) -> Option<&ConnectionFacts> {
        match &self.connection {
            ConnectionLookup::Found(c) => Some(c),
            _ => None,
        }
    }

    /// The metric history of one tunnel.
    pub fn metric_for(&self, tunnel_ip: &str) -> Option<&TunnelMetricHistory> {
        self.metrics.iter().find(|m| m.tunnel_ip == tunnel_ip)
    }

    /// When the tunnel went down, if it is down: the later of the telemetry's last
    /// status change and the start of the trailing run of zeros in the metric
    /// history (the later one is the conservative answer for remediation).
    pub fn down_since(&self, tunnel: &TunnelFacts) -> Option<DateTime<Utc>> {
        let telemetry = tunnel.telemetry.as_ref()?;
        if telemetry.status != TunnelStatus::Down {
            return None;
        }
        let from_metric = self
            .metric_for(&tunnel.outside_ip)
            .and_then(TunnelMetricHistory::down_since);
        match (telemetry.last_status_change, from_metric) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The outcome of `DescribeVpnConnections` for the id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "lookup", rename_all = "snake_case")]
pub enum ConnectionLookup {
    Found(ConnectionFacts),
    /// EC2 answered that the id does not exist (`InvalidVpnConnectionID.NotFound`),
    /// or returned no connection.
    NotFound {
        message: String,
    },
    /// The describe failed for another reason (access denied, throttled, unreachable).
    Failed {
        message: String,
        retryable: bool,
    },
}

/// The connection as `DescribeVpnConnections` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionFacts {
    pub state: ConnectionState,
    #[serde(default)]
    pub customer_gateway_id: Option<String>,
    #[serde(default)]
    pub vpn_gateway_id: Option<String>,
    #[serde(default)]
    pub transit_gateway_id: Option<String>,
    /// True for static routing, false for BGP (dynamic routing).
    #[serde(default)]
    pub static_routes_only: Option<bool>,
    /// The traffic selectors AWS proposes (`0.0.0.0/0` unless set).
    #[serde(default)]
    pub local_ipv4_network_cidr: Option<String>,
    #[serde(default)]
    pub remote_ipv4_network_cidr: Option<String>,
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
    #[serde(default)]
    pub tunnels: Vec<TunnelFacts>,
}

impl ConnectionFacts {
    /// BGP unless the connection says static routes only.
    pub fn uses_bgp(&self) -> bool {
        self.static_routes_only == Some(false)
    }
}

/// `VpnState` of EC2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    Pending,
    Available,
    Deleting,
    Deleted,
    #[serde(other)]
    Unknown,
}

impl ConnectionState {
    pub fn parse(s: &str) -> ConnectionState {
        match s {
            "pending" => ConnectionState::Pending,
            "available" => ConnectionState::Available,
            "deleting" => ConnectionState::Deleting,
            "deleted" => ConnectionState::Deleted,
            _ => ConnectionState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Pending => "pending",
            ConnectionState::Available => "available",
            ConnectionState::Deleting => "deleting",
            ConnectionState::Deleted => "deleted",
            ConnectionState::Unknown => "unknown",
        }
    }
}

/// A static route of the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    pub destination_cidr: String,
    /// `pending`, `available`, `deleting`, `deleted`.
    #[serde(default)]
    pub state: Option<String>,
}

/// One tunnel: telemetry and options joined on the outside IP address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelFacts {
    pub outside_ip: String,
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
    #[serde(default)]
    pub options: Option<TunnelOptions>,
    /// From `GetVpnTunnelReplacementStatus`, when it answered.
    #[serde(default)]
    pub maintenance: Option<Maintenance>,
}

impl TunnelFacts {
    pub fn status(&self) -> TunnelStatus {
        self.telemetry
            .as_ref()
            .map_or(TunnelStatus::Unknown, |t| t.status)
    }

    pub fn logging(&self) -> Option<&TunnelLogging> {
        self.options.as_ref().map(|o| &o.logging)
    }
}

/// `VgwTelemetry` of one tunnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    pub status: TunnelStatus,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub last_status_change: Option<DateTime<Utc>>,
    #[serde(default)]
    pub accepted_route_count: Option<i32>,
    #[serde(default)]
    pub certificate_arn: Option<String>,
}

/// `TelemetryStatus` of EC2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TunnelStatus {
    Up,
    Down,
    #[serde(other)]
    Unknown,
}

impl TunnelStatus {
    pub fn parse(s: &str) -> TunnelStatus {
        match s.to_ascii_uppercase().as_str() {
            "UP" => TunnelStatus::Up,
            "DOWN" => TunnelStatus::Down,
            _ => TunnelStatus::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TunnelStatus::Up => "UP",
            TunnelStatus::Down => "DOWN",
            TunnelStatus::Unknown => "UNKNOWN",
        }
    }
}

/// The tunnel options that matter for a diagnosis (never the pre-shared key).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TunnelOptions {
    #[serde(default)]
    pub inside_cidr: Option<String>,
    #[serde(default)]
    pub ike_versions: Vec<String>,
    #[serde(default)]
    pub phase1_encryption: Vec<String>,
    #[serde(default)]
    pub phase1_integrity: Vec<String>,
    #[serde(default)]
    pub phase1_dh_groups: Vec<i32>,
    #[serde(default)]
    pub phase2_encryption: Vec<String>,
    #[serde(default)]
    pub phase2_integrity: Vec<String>,
    #[serde(default)]
    pub phase2_dh_groups: Vec<i32>,
    #[serde(default)]
    pub phase1_lifetime_seconds: Option<i32>,
    #[serde(default)]
    pub phase2_lifetime_seconds: Option<i32>,
    #[serde(default)]
    pub dpd_timeout_seconds: Option<i32>,
    /// `clear`, `none` or `restart`.
    #[serde(default)]
    pub dpd_timeout_action: Option<String>,
    /// `add` (AWS waits for the customer gateway to initiate) or `start`.
    #[serde(default)]
    pub startup_action: Option<String>,
    #[serde(default)]
    pub logging: TunnelLogging,
}

/// `LogOptions.CloudWatchLogOptions` of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TunnelLogging {
    pub enabled: bool,
    #[serde(default)]
    pub log_group_arn: Option<String>,
    /// `json` or `text`.
    #[serde(default)]
    pub output_format: Option<String>,
}

impl TunnelLogging {
    /// The log group name from the ARN (`arn:...:log-group:NAME` or `...:NAME:*`).
    pub fn log_group_name(&self) -> Option<String> {
        let arn = self.log_group_arn.as_deref()?;
        let name = arn.split_once(":log-group:")?.1;
        let name = name.strip_suffix(":*").unwrap_or(name);
        (!name.is_empty()).then(|| name.to_string())
    }

    pub fn is_json(&self) -> bool {
        self.output_format
            .as_deref()
            .is_none_or(|f| f.eq_ignore_ascii_case("json"))
    }
}

/// `MaintenanceDetails` of `GetVpnTunnelReplacementStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Maintenance {
    /// The pending maintenance, e.g. a description of the endpoint update.
    #[serde(default)]
    pub pending: Option<String>,
    #[serde(default)]
    pub auto_applied_after: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_applied: Option<DateTime<Utc>>,
}

impl Maintenance {
    pub fn is_pending(&self) -> bool {
        self.pending
            .as_deref()
            .is_some_and(|p| !p.trim().is_empty())
    }
}

/// A customer gateway, virtual private gateway or transit gateway attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayFacts {
    pub kind: GatewayKind,
    pub id: String,
    #[serde(default)]
    pub state: Option<String>,
    /// Customer gateway: its public IP address.
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub bgp_asn: Option<String>,
    /// Virtual private gateway: its VPC attachments as `vpc-id` and state.
    #[serde(default)]
    pub vpc_attachments: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayKind {
    CustomerGateway,
    VpnGateway,
    TransitGatewayAttachment,
}

impl GatewayKind {
    pub fn label(self) -> &'static str {
        match self {
            GatewayKind::CustomerGateway => "customer gateway",
            GatewayKind::VpnGateway => "virtual private gateway",
            GatewayKind::TransitGatewayAttachment => "transit gateway attachment",
        }
    }
}

/// `AWS/VPN TunnelState` (1 up, 0 down) of one tunnel, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelMetricHistory {
    pub tunnel_ip: String,
    pub points: Vec<MetricPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub at: DateTime<Utc>,
    pub value: f64,
}

impl MetricPoint {
    fn is_up(&self) -> bool {
        self.value >= 1.0
    }
}

impl TunnelMetricHistory {
    fn sorted(&self) -> Vec<MetricPoint> {
        let mut points: Vec<MetricPoint> = self
            .points
            .iter()
            .copied()
            .filter(|p| p.value.is_finite())
            .collect();
        points.sort_by_key(|p| p.at);
        points
    }

    /// How many times the tunnel changed between up and down in the window.
    pub fn transitions(&self) -> usize {
        self.sorted()
            .windows(2)
            .filter(|w| w[0].is_up() != w[1].is_up())
            .count()
    }

    /// Start of the trailing run of down points, when the last point is down.
    pub fn down_since(&self) -> Option<DateTime<Utc>> {
        let points = self.sorted();
        let last = points.last()?;
        if last.is_up() {
            return None;
        }
        points
            .iter()
            .rev()
            .take_while(|p| !p.is_up())
            .last()
            .map(|p| p.at)
    }

    /// Minutes with a down datapoint in the window (datapoints are per minute).
    pub fn down_points(&self) -> usize {
        self.sorted().iter().filter(|p| !p.is_up()).count()
    }
}

/// The tunnel-log part of the facts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogFacts {
    /// `"status": "complete"`, or `"partial"`/`"failed"` with a `"reason"`.
    #[serde(flatten)]
    pub status: LogStatus,
    /// The log groups queried.
    #[serde(default)]
    pub log_groups: Vec<String>,
    #[serde(default)]
    pub records: Vec<TunnelLogRecord>,
    /// Rows that were not tunnel-log JSON (text format, truncated, foreign).
    #[serde(default)]
    pub unreadable: usize,
}

/// Whether and how far the tunnel logs were read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LogStatus {
    /// Not queried (connection not found or not available).
    #[default]
    NotQueried,
    /// No tunnel of the connection logs to CloudWatch Logs.
    NotEnabled,
    /// The query finished; `records` is everything it matched (up to its limit).
    Complete,
    /// The query was stopped before it finished; `records` is what it had returned.
    Partial { reason: String },
    /// The query could not run or failed.
    Failed { reason: String },
}

/// A fact that could not be gathered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    /// What was being gathered, e.g. `GetMetricData TunnelState`.
    pub source: String,
    pub message: String,
    /// True when running the diagnosis again may fill the gap.
    pub retryable: bool,
}

/// Joins `VgwTelemetry` and `TunnelOptions` on the outside IP address, in the order
/// of the tunnel options (tunnel 1, tunnel 2), then telemetry-only tunnels.
pub fn merge_tunnels(
    telemetry: Vec<(String, Telemetry)>,
    options: Vec<(String, TunnelOptions)>,
) -> Vec<TunnelFacts> {
    let mut tunnels: Vec<TunnelFacts> = Vec::new();
    for (ip, o) in options {
        if ip.is_empty() || tunnels.iter().any(|t| t.outside_ip == ip) {
            continue;
        }
        tunnels.push(TunnelFacts {
            outside_ip: ip,
            telemetry: None,
            options: Some(o),
            maintenance: None,
        });
    }
    for (ip, t) in telemetry {
        if ip.is_empty() {
            continue;
        }
        match tunnels.iter_mut().find(|x| x.outside_ip == ip) {
            Some(x) if x.telemetry.is_none() => x.telemetry = Some(t),
            Some(_) => {}
            None => tunnels.push(TunnelFacts {
                outside_ip: ip,
                telemetry: Some(t),
                options: None,
                maintenance: None,
            }),
        }
    }
    tunnels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tel(status: TunnelStatus) -> Telemetry {
        Telemetry {
            status,
            status_message: None,
            last_status_change: None,
            accepted_route_count: None,
            certificate_arn: None,
        }
    }

    #[test]
    fn merge_tunnels_matches_by_outside_ip_not_position() {
        let merged = merge_tunnels(
            vec![
                ("192.0.2.2".into(), tel(TunnelStatus::Down)),
                ("192.0.2.1".into(), tel(TunnelStatus::Up)),
            ],
            vec![
                ("192.0.2.1".into(), TunnelOptions::default()),
                ("192.0.2.2".into(), TunnelOptions::default()),
            ],
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].outside_ip, "192.0.2.1");
        assert_eq!(merged[0].status(), TunnelStatus::Up);
        assert_eq!(merged[1].status(), TunnelStatus::Down);
    }

    #[test]
    fn merge_tunnels_keeps_telemetry_only_and_skips_empty_ips() {
        let merged = merge_tunnels(
            vec![
                ("192.0.2.9".into(), tel(TunnelStatus::Up)),
                (String::new(), tel(TunnelStatus::Down)),
            ],
            vec![("192.0.2.1".into(), TunnelOptions::default())],
        );
        let ips: Vec<&str> = merged.iter().map(|t| t.outside_ip.as_str()).collect();
        assert_eq!(ips, ["192.0.2.1", "192.0.2.9"]);
        assert_eq!(merged[0].status(), TunnelStatus::Unknown);
        assert!(merged[1].options.is_none());
    }

    #[test]
    fn log_group_name_from_arn() {
        let mut l = TunnelLogging {
            enabled: true,
            log_group_arn: Some(
                "arn:aws:logs:eu-west-1:123456789012:log-group:/vpn/tunnels:*".into(),
            ),
            output_format: Some("json".into()),
        };
        assert_eq!(l.log_group_name().as_deref(), Some("/vpn/tunnels"));
        l.log_group_arn = Some("arn:aws:logs:eu-west-1:123456789012:log-group:vpn".into());
        assert_eq!(l.log_group_name().as_deref(), Some("vpn"));
        l.log_group_arn = Some("not-an-arn".into());
        assert_eq!(l.log_group_name(), None);
    }

    fn history(values: &[f64]) -> TunnelMetricHistory {
        let start: DateTime<Utc> = "2026-11-25T09:00:00Z".parse().unwrap();
        TunnelMetricHistory {
            tunnel_ip: "192.0.2.1".into(),
            // Given newest first on purpose: the helpers sort.
            points: values
                .iter()
                .enumerate()
                .rev()
                .map(|(i, v)| MetricPoint {
                    at: start + chrono::Duration::minutes(i as i64),
                    value: *v,
                })
                .collect(),
        }
    }

    #[test]
    fn metric_history_counts_transitions_and_trailing_down_run() {
        let h = history(&[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(h.transitions(), 3);
        assert_eq!(
            h.down_since(),
            Some("2026-11-25T09:04:00Z".parse().unwrap())
        );
        assert_eq!(h.down_points(), 4);
        assert_eq!(history(&[0.0, 1.0]).down_since(), None);
        assert_eq!(history(&[]).down_since(), None);
        assert_eq!(history(&[f64::NAN, 0.0]).transitions(), 0);
    }
}
