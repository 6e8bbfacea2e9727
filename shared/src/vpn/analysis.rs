//! From gathered facts to findings: a pure function, no AWS calls, so every case
//! (and every combination) is a table test over fixture facts and log records.
//!
//! Each finding carries a severity, the evidence it rests on (telemetry, gateway
//! state, metric history, log records) and the next step for the responder. Causes
//! found in the tunnel logs shape the tunnel-status findings: with both tunnels
//! down, "check the customer gateway's internet link" is the wrong advice when the
//! logs show that gateway negotiating IKE with a wrong pre-shared key.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::facts::{
    ConnectionFacts, ConnectionLookup, ConnectionState, Gap, GatewayFacts, GatewayKind, LogStatus,
    TunnelFacts, TunnelOptions, TunnelStatus, VpnFacts,
};
use super::logs::{assign_tunnel, IkeState, LogEvent, TunnelLogRecord, TunnelLogSummary};
use crate::incident::Impact;

/// How urgent a finding is. Ordered most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// What a finding is about; stable identifiers for tests, filters and dashboards.
/// Declaration order is the display order within a severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingCode {
    ConnectionNotFound,
    DescribeFailed,
    ConnectionNotAvailable,
    BothTunnelsDown,
    OneTunnelDown,
    GatewayNotAvailable,
    Phase1AuthFailure,
    Phase1ProposalMismatch,
    Phase2TrafficSelectorMismatch,
    Phase2ProposalMismatch,
    DpdTimeout,
    Phase1NotEstablished,
    Phase2NotEstablished,
    TunnelUpNoRoutes,
    NoStaticRoutes,
    TunnelFlapping,
    MaintenancePending,
    TunnelLoggingDisabled,
    TunnelLogFormatText,
    AllTunnelsUp,
    DiagnosisIncomplete,
    /// The member account's diagnosis role could not be assumed (organization mode).
    MemberAccessFailed,
}

/// One conclusion of the diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub code: FindingCode,
    pub severity: Severity,
    /// The tunnel outside IP when the finding is about one tunnel.
    pub tunnel: Option<String>,
    pub title: String,
    pub evidence: Vec<String>,
    pub next_step: String,
}

/// One tunnel as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSummary {
    /// 1 or 2, in the order of the connection's tunnel options.
    pub number: usize,
    pub outside_ip: String,
    pub status: TunnelStatus,
    /// Since when the tunnel is in `status` (telemetry, refined by metric history).
    pub since: Option<DateTime<Utc>>,
    pub status_message: Option<String>,
    pub accepted_routes: Option<i32>,
    pub logging_enabled: bool,
    pub log_records: usize,
    pub last_phase1: Option<IkeState>,
    pub last_phase2: Option<IkeState>,
    pub log_errors: BTreeMap<LogEvent, usize>,
    pub pending_maintenance: Option<String>,
}

/// The diagnosis of one VPN connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub vpn_connection_id: String,
    pub generated_at: DateTime<Utc>,
    pub lookback_minutes: u32,
    /// One line: the state and the most likely cause.
    pub headline: String,
    /// The impact the findings suggest (both tunnels down: critical).
    pub impact: Impact,
    /// False when some facts could not be gathered (see `gaps`).
    pub complete: bool,
    pub findings: Vec<Finding>,
    pub tunnels: Vec<TunnelSummary>,
    /// How far the tunnel logs were read: `{"status": "complete"}`, ...
    pub log_query: LogStatus,
    pub gaps: Vec<Gap>,
}

impl Report {
    pub fn has(&self, code: FindingCode) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }

    pub fn codes(&self) -> Vec<FindingCode> {
        self.findings.iter().map(|f| f.code).collect()
    }
}

/// Runs the diagnosis over the facts.
pub fn analyse(facts: &VpnFacts) -> Report {
    let ctx = Ctx::new(facts);
    let mut findings = Vec::new();
    match &facts.connection {
        ConnectionLookup::NotFound { message } => findings.push(not_found(&ctx, message)),
        ConnectionLookup::Failed { message, retryable } => {
            findings.push(describe_failed(&ctx, message, *retryable))
        }
        ConnectionLookup::Found(c) => analyse_connection(&ctx, c, &mut findings),
    }
    let gaps = ctx.gaps();
    if !gaps.is_empty() {
        findings.push(incomplete(&ctx, &gaps));
    }
    findings.sort_by_key(|f| (f.severity, f.code, f.tunnel.clone()));

    Report {
        vpn_connection_id: ctx.vpn.clone(),
        generated_at: facts.collected_at,
        lookback_minutes: facts.lookback_minutes,
        headline: headline(&ctx, &findings),
        impact: impact(&findings),
        complete: gaps.is_empty(),
        tunnels: ctx.tunnel_summaries(),
        log_query: facts.logs.status.clone(),
        gaps,
        findings,
    }
}

/// The facts plus what is derived once: log summaries per tunnel.
struct Ctx<'a> {
    facts: &'a VpnFacts,
    vpn: String,
    now: DateTime<Utc>,
    tunnels: Vec<&'a TunnelFacts>,
    /// Per tunnel (same order as `tunnels`).
    logs: Vec<TunnelLogSummary>,
}

impl<'a> Ctx<'a> {
    fn new(facts: &'a VpnFacts) -> Ctx<'a> {
        let tunnels: Vec<&TunnelFacts> = facts
            .found()
            .map(|c| c.tunnels.iter().collect())
            .unwrap_or_default();
        let ips: Vec<String> = tunnels.iter().map(|t| t.outside_ip.clone()).collect();
        let mut per_tunnel: Vec<Vec<&TunnelLogRecord>> = vec![Vec::new(); ips.len()];
        for r in &facts.logs.records {
            if let Some(ip) = assign_tunnel(r, &ips) {
                if let Some(i) = ips.iter().position(|x| x == ip) {
                    per_tunnel[i].push(r);
                }
            }
        }
        Ctx {
            facts,
            vpn: facts.vpn_id.to_string(),
            now: facts.collected_at,
            logs: per_tunnel
                .into_iter()
                .map(TunnelLogSummary::from_records)
                .collect(),
            tunnels,
        }
    }

    fn label(&self, t: &TunnelFacts) -> String {
        match self
            .tunnels
            .iter()
            .position(|x| x.outside_ip == t.outside_ip)
        {
            Some(i) => format!("tunnel {} ({})", i + 1, t.outside_ip),
            None => format!("tunnel {}", t.outside_ip),
        }
    }

    fn labels(&self, ts: &[&TunnelFacts]) -> String {
        let numbers: Vec<String> = ts
            .iter()
            .filter_map(|t| {
                self.tunnels
                    .iter()
                    .position(|x| x.outside_ip == t.outside_ip)
            })
            .map(|i| (i + 1).to_string())
            .collect();
        match ts {
            [one] => self.label(one),
            _ if numbers.len() == ts.len() => format!("tunnels {}", numbers.join(" and ")),
            _ => format!("{} tunnels", ts.len()),
        }
    }

    fn log_summary(&self, t: &TunnelFacts) -> Option<&TunnelLogSummary> {
        self.tunnels
            .iter()
            .position(|x| x.outside_ip == t.outside_ip)
            .and_then(|i| self.logs.get(i))
    }

    fn logs_read(&self) -> bool {
        matches!(
            self.facts.logs.status,
            LogStatus::Complete | LogStatus::Partial { .. }
        )
    }

    /// The most recent error the logs show for the tunnel (ties: the more specific).
    fn cause(&self, t: &TunnelFacts) -> Option<LogEvent> {
        let s = self.log_summary(t)?;
        s.events
            .iter()
            .max_by_key(|(event, stats)| (stats.last_at, std::cmp::Reverse(**event)))
            .map(|(event, _)| *event)
    }

    fn down(&self) -> Vec<&'a TunnelFacts> {
        self.tunnels
            .iter()
            .copied()
            .filter(|t| t.status() == TunnelStatus::Down)
            .collect()
    }

    fn up(&self) -> Vec<&'a TunnelFacts> {
        self.tunnels
            .iter()
            .copied()
            .filter(|t| t.status() == TunnelStatus::Up)
            .collect()
    }

    fn customer_gateway_ip(&self) -> String {
        self.facts
            .customer_gateway
            .as_ref()
            .and_then(|g| g.ip_address.clone())
            .unwrap_or_else(|| "its public IP".to_string())
    }

    /// One line of evidence on a tunnel's status.
    fn tunnel_line(&self, t: &TunnelFacts) -> String {
        let mut line = format!("{}: {}", cap(&self.label(t)), t.status().as_str());
        let since = match t.status() {
            TunnelStatus::Down => self.facts.down_since(t),
            _ => t.telemetry.as_ref().and_then(|x| x.last_status_change),
        };
        if let Some(at) = since {
            line.push_str(&format!(" since {}", when(at, self.now)));
        }
        if let Some(m) = t
            .telemetry
            .as_ref()
            .and_then(|x| x.status_message.as_deref())
            .filter(|m| !m.is_empty())
        {
            line.push_str(&format!(", status message {}", quote(m)));
        }
        if let Some(n) = t.telemetry.as_ref().and_then(|x| x.accepted_route_count) {
            line.push_str(&format!(", {n} accepted routes"));
        }
        line
    }

    /// Gaps of the facts plus an incomplete log read.
    fn gaps(&self) -> Vec<Gap> {
        let mut gaps = self.facts.gaps.clone();
        match &self.facts.logs.status {
            LogStatus::Partial { reason } => gaps.push(Gap {
                source: "Logs Insights query".into(),
                message: format!(
                    "{reason}; the findings use the {} records read so far",
                    self.facts.logs.records.len()
                ),
                retryable: true,
            }),
            LogStatus::Failed { reason } => gaps.push(Gap {
                source: "Logs Insights query".into(),
                message: reason.clone(),
                retryable: true,
            }),
            _ => {}
        }
        if self
            .facts
            .found()
            .is_some_and(|c| c.state == ConnectionState::Available && c.tunnels.is_empty())
        {
            gaps.push(Gap {
                source: "DescribeVpnConnections".into(),
                message: "no tunnel in the answer (neither VgwTelemetry nor TunnelOptions)".into(),
                retryable: true,
            });
        }
        if self
            .facts
            .found()
            .is_some_and(|c| c.state == ConnectionState::Available)
        {
            for t in self.tunnels.iter().filter(|t| t.telemetry.is_none()) {
                gaps.push(Gap {
                    source: "DescribeVpnConnections VgwTelemetry".into(),
                    message: format!("no telemetry for {}: its status is unknown", self.label(t)),
                    retryable: true,
                });
            }
        }
        gaps
    }

    fn tunnel_summaries(&self) -> Vec<TunnelSummary> {
        self.tunnels
            .iter()
            .zip(&self.logs)
            .enumerate()
            .map(|(i, (t, logs))| TunnelSummary {
                number: i + 1,
                outside_ip: t.outside_ip.clone(),
                status: t.status(),
                since: match t.status() {
                    TunnelStatus::Down => self.facts.down_since(t),
                    _ => t.telemetry.as_ref().and_then(|x| x.last_status_change),
                },
                status_message: t.telemetry.as_ref().and_then(|x| x.status_message.clone()),
                accepted_routes: t.telemetry.as_ref().and_then(|x| x.accepted_route_count),
                logging_enabled: t.logging().is_some_and(|l| l.enabled),
                log_records: logs.records,
                last_phase1: logs.last_phase1,
                last_phase2: logs.last_phase2,
                log_errors: logs.events.iter().map(|(e, s)| (*e, s.count)).collect(),
                pending_maintenance: t
                    .maintenance
                    .as_ref()
                    .filter(|m| m.is_pending())
                    .and_then(|m| m.pending.clone()),
            })
            .collect()
    }
}

fn analyse_connection(ctx: &Ctx, c: &ConnectionFacts, out: &mut Vec<Finding>) {
    if c.state != ConnectionState::Available {
        out.push(not_available(ctx, c));
        return;
    }
    tunnel_status(ctx, out);
    gateways(ctx, c, out);
    log_causes(ctx, out);
    not_established(ctx, out);
    routes(ctx, c, out);
    flapping(ctx, out);
    maintenance(ctx, out);
    logging(ctx, out);
    if !ctx.tunnels.is_empty()
        && ctx.up().len() == ctx.tunnels.len()
        && !out.iter().any(|f| f.severity == Severity::Critical)
    {
        out.push(all_up(ctx));
    }
}

fn not_found(ctx: &Ctx, message: &str) -> Finding {
    Finding {
        code: FindingCode::ConnectionNotFound,
        severity: Severity::Critical,
        tunnel: None,
        title: format!("VPN connection {} does not exist in this account and region", ctx.vpn),
        evidence: vec![format!("DescribeVpnConnections: {}", quote(message))],
        next_step: format!(
            "Check the VpnConnectionId given to the runbook (and the alarm's VpnId dimension) against the VPN \
             connections of this account and region. If {} was deleted on purpose, delete its alarms and resolve \
             the incident.",
            ctx.vpn
        ),
    }
}

fn describe_failed(ctx: &Ctx, message: &str, retryable: bool) -> Finding {
    Finding {
        code: FindingCode::DescribeFailed,
        severity: Severity::Critical,
        tunnel: None,
        title: format!("Could not describe VPN connection {}", ctx.vpn),
        evidence: vec![format!("DescribeVpnConnections: {}", quote(message))],
        next_step: if retryable {
            "EC2 was throttling or unreachable: run the diagnosis runbook again in a minute."
                .to_string()
        } else {
            "Grant the vpn-troubleshoot role ec2:DescribeVpnConnections (and the other describes it uses), then run \
             the diagnosis runbook again."
                .to_string()
        },
    }
}

fn not_available(ctx: &Ctx, c: &ConnectionFacts) -> Finding {
    let (title, next) = match c.state {
        ConnectionState::Pending => (
            format!("VPN connection {} is still being created (pending)", ctx.vpn),
            "Wait until the connection is available (usually a few minutes), then configure the customer gateway \
             with its downloaded configuration."
                .to_string(),
        ),
        state => (
            format!("VPN connection {} is {}", ctx.vpn, state.as_str()),
            format!(
                "The connection is gone, so the site has no VPN path. If that was not intended, create a new VPN \
                 connection for customer gateway {} and configure the device with the new tunnel addresses and \
                 keys; if it was, delete its alarms and resolve the incident.",
                c.customer_gateway_id.as_deref().unwrap_or("(unknown)")
            ),
        ),
    };
    Finding {
        code: FindingCode::ConnectionNotAvailable,
        severity: Severity::Critical,
        tunnel: None,
        title,
        evidence: vec![format!(
            "DescribeVpnConnections: State = {}",
            c.state.as_str()
        )],
        next_step: next,
    }
}

fn cause_label(e: LogEvent) -> &'static str {
    match e {
        LogEvent::Phase1AuthFailure => {
            "IKE phase 1 authentication failures (pre-shared key mismatch)"
        }
        LogEvent::Phase1ProposalMismatch => "IKE phase 1 proposal mismatch",
        LogEvent::TrafficSelectorMismatch => "phase 2 traffic selector mismatch",
        LogEvent::Phase2ProposalMismatch => "phase 2 proposal mismatch",
        LogEvent::DpdTimeout => "the customer gateway stopped answering (DPD timeouts)",
        LogEvent::Other => "unknown",
    }
}

fn is_config_cause(e: LogEvent) -> bool {
    matches!(
        e,
        LogEvent::Phase1AuthFailure
            | LogEvent::Phase1ProposalMismatch
            | LogEvent::TrafficSelectorMismatch
            | LogEvent::Phase2ProposalMismatch
    )
}

/// Both (all) tunnels down, or one down while another carries the traffic.
fn tunnel_status(ctx: &Ctx, out: &mut Vec<Finding>) {
    let down = ctx.down();
    let up = ctx.up();
    if down.is_empty() {
        return;
    }
    let causes: Vec<Option<LogEvent>> = down.iter().map(|t| ctx.cause(t)).collect();
    let mut evidence: Vec<String> = ctx.tunnels.iter().map(|t| ctx.tunnel_line(t)).collect();
    if let Some(g) = &ctx.facts.customer_gateway {
        evidence.push(gateway_line(g));
    }
    for (t, cause) in down.iter().zip(&causes) {
        if let Some(c) = cause {
            evidence.push(format!(
                "Tunnel logs of {}: {}",
                ctx.label(t),
                cause_label(*c)
            ));
        }
    }
    if ctx.facts.logs.status == LogStatus::NotEnabled {
        evidence
            .push("Tunnel logging is off: AWS keeps no record of the IKE negotiation".to_string());
    }
    let cgw = ctx.customer_gateway_ip();

    if up.is_empty() && down.len() == ctx.tunnels.len() {
        let all_config = causes.iter().all(|c| c.is_some_and(is_config_cause));
        let mut next = if all_config {
            format!(
                "The customer gateway at {cgw} answers IKE, so its internet link works: fix the device \
                 configuration named in the findings below, for every tunnel."
            )
        } else {
            format!(
                "Check the customer gateway at {cgw}: that it is powered and its internet link is up, and that \
                 UDP 500, UDP 4500 and ESP (IP protocol 50) between it and both tunnel outside IPs are allowed. \
                 Then check that the device shows an IKE security association for each tunnel."
            )
        };
        if ctx.facts.logs.status == LogStatus::NotEnabled {
            next.push_str(
                " Enable tunnel logging (see below) so the next diagnosis can name the cause.",
            );
        }
        let title = if ctx.tunnels.len() == 1 {
            format!(
                "The only tunnel of {} is DOWN: the site has no VPN connectivity",
                ctx.vpn
            )
        } else {
            format!(
                "Both tunnels of {} are DOWN: the site has no VPN connectivity",
                ctx.vpn
            )
        };
        out.push(Finding {
            code: FindingCode::BothTunnelsDown,
            severity: Severity::Critical,
            tunnel: None,
            title,
            evidence,
            next_step: next,
        });
    } else if !up.is_empty() {
        let next = match causes.as_slice() {
            [Some(c)] if is_config_cause(*c) => format!(
                "Fix the {} for {} on the device; the other tunnel works, so compare the two tunnels' settings \
                 on the device.",
                cause_label(*c),
                ctx.label(down[0])
            ),
            [Some(LogEvent::DpdTimeout)] => format!(
                "The device stopped answering on {} only: check that it still has this tunnel configured and \
                 initiates or answers IKE for outside IP {}.",
                ctx.label(down[0]),
                down[0].outside_ip
            ),
            _ => format!(
                "Compare the device's configuration of {} with the working tunnel (pre-shared key, inside CIDR, \
                 IKE settings, peer address). If the device side is right, replace the AWS tunnel endpoint with \
                 ReplaceVpnTunnel (the guarded remediation does this when enabled).",
                ctx.labels(&down)
            ),
        };
        out.push(Finding {
            code: FindingCode::OneTunnelDown,
            severity: Severity::Warning,
            tunnel: (down.len() == 1).then(|| down[0].outside_ip.clone()),
            title: format!(
                "{} of {} is DOWN: redundancy lost, traffic runs on {}",
                cap(&ctx.labels(&down)),
                ctx.vpn,
                ctx.labels(&up)
            ),
            evidence,
            next_step: next,
        });
    }
}

fn gateway_line(g: &GatewayFacts) -> String {
    let mut s = format!(
        "{} {} is {}",
        cap(g.kind.label()),
        g.id,
        g.state.as_deref().unwrap_or("in an unknown state")
    );
    if let Some(ip) = &g.ip_address {
        s.push_str(&format!(", public IP {ip}"));
    }
    if let Some(asn) = &g.bgp_asn {
        s.push_str(&format!(", BGP ASN {asn}"));
    }
    for (vpc, state) in &g.vpc_attachments {
        s.push_str(&format!(", {vpc} {state}"));
    }
    s
}

fn gateways(ctx: &Ctx, c: &ConnectionFacts, out: &mut Vec<Finding>) {
    for g in [&ctx.facts.customer_gateway, &ctx.facts.attachment]
        .into_iter()
        .flatten()
    {
        let available = g.state.as_deref() == Some("available");
        let attached = g.kind != GatewayKind::VpnGateway
            || g.vpc_attachments.iter().any(|(_, s)| s == "attached");
        if available && attached {
            continue;
        }
        let (title, next) = match g.kind {
            GatewayKind::VpnGateway if available => (
                format!("Virtual private gateway {} is not attached to a VPC", g.id),
                format!(
                    "Traffic from the tunnels cannot reach any VPC: attach {} to the VPC (AttachVpnGateway) and \
                     enable route propagation in its route tables.",
                    g.id
                ),
            ),
            GatewayKind::TransitGatewayAttachment => (
                format!(
                    "Transit gateway attachment {} of {} is {}",
                    g.id,
                    ctx.vpn,
                    g.state.as_deref().unwrap_or("unknown")
                ),
                format!(
                    "Traffic cannot flow through transit gateway {} until the attachment is available: check \
                     the attachment and its route table association in the VPC console.",
                    c.transit_gateway_id.as_deref().unwrap_or("(unknown)")
                ),
            ),
            kind => (
                format!("{} {} is {}", cap(kind.label()), g.id, g.state.as_deref().unwrap_or("unknown")),
                format!(
                    "The VPN connection depends on {}: restore it (or create a new one and a new VPN \
                     connection) before looking at the tunnels.",
                    g.id
                ),
            ),
        };
        out.push(Finding {
            code: FindingCode::GatewayNotAvailable,
            severity: Severity::Critical,
            tunnel: None,
            title,
            evidence: vec![gateway_line(g)],
            next_step: next,
        });
    }
}

/// One finding per kind of error seen in the tunnel logs, across tunnels.
fn log_causes(ctx: &Ctx, out: &mut Vec<Finding>) {
    let kinds = [
        LogEvent::Phase1AuthFailure,
        LogEvent::Phase1ProposalMismatch,
        LogEvent::TrafficSelectorMismatch,
        LogEvent::Phase2ProposalMismatch,
        LogEvent::DpdTimeout,
    ];
    for kind in kinds {
        let affected: Vec<&TunnelFacts> = ctx
            .tunnels
            .iter()
            .copied()
            .filter(|t| ctx.log_summary(t).is_some_and(|s| s.count(kind) > 0))
            .collect();
        if affected.is_empty() {
            continue;
        }
        // Critical when it explains a tunnel that is down while no tunnel carries
        // traffic; with redundancy left (or the tunnel back up) it is a warning.
        let explains_outage = ctx.up().is_empty()
            && affected
                .iter()
                .any(|t| t.status() == TunnelStatus::Down && ctx.cause(t) == Some(kind));
        let severity = if explains_outage {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let mut evidence = Vec::new();
        for t in &affected {
            let Some(s) = ctx.log_summary(t) else {
                continue;
            };
            let Some(stats) = s.events.get(&kind) else {
                continue;
            };
            let mut line = format!(
                "{}: {} record{} in the last {} min",
                cap(&ctx.label(t)),
                stats.count,
                if stats.count == 1 { "" } else { "s" },
                ctx.facts.lookback_minutes
            );
            if let Some(at) = stats.last_at {
                line.push_str(&format!(", latest at {}", clock(at)));
            }
            line.push_str(&format!(": {}", quote(&stats.last_details)));
            line.push_str(&format!(
                "; IKE phase 1 {}, phase 2 {}; tunnel {}",
                s.last_phase1.map_or("unknown", IkeState::as_str),
                s.last_phase2.map_or("unknown", IkeState::as_str),
                t.status().as_str()
            ));
            if kind == LogEvent::DpdTimeout {
                if let Some(n) = s.nat_t_detected {
                    line.push_str(&format!("; NAT-T detected: {n}"));
                }
            }
            evidence.push(line);
        }
        let which = ctx.labels(&affected);
        let first = affected[0];
        let opts = first.options.clone().unwrap_or_default();
        let (code, title, next) = match kind {
            LogEvent::Phase1AuthFailure => (
                FindingCode::Phase1AuthFailure,
                format!("IKE phase 1 authentication fails on {which}: pre-shared key mismatch"),
                "Set on the customer gateway the pre-shared key of each tunnel exactly as AWS has it (VPN console, \
                 Download configuration, or the connection's Secrets Manager secret when it stores its keys \
                 there), or set a new key on both sides (ModifyVpnTunnelOptions, one tunnel at a time). Check \
                 also that the device uses the tunnel's outside IP as its IKE peer and its own public IP as \
                 identity."
                    .to_string(),
            ),
            LogEvent::Phase1ProposalMismatch => (
                FindingCode::Phase1ProposalMismatch,
                format!("IKE phase 1 proposal rejected on {which}: encryption, integrity, DH group or IKE version mismatch"),
                format!(
                    "Configure the device's phase 1 (IKE) proposal with values the tunnel allows: {}.",
                    allowed_phase1(&opts)
                ),
            ),
            LogEvent::TrafficSelectorMismatch => {
                let c = ctx.facts.found();
                let local = c.and_then(|c| c.local_ipv4_network_cidr.clone()).unwrap_or_else(|| "0.0.0.0/0".into());
                let remote = c.and_then(|c| c.remote_ipv4_network_cidr.clone()).unwrap_or_else(|| "0.0.0.0/0".into());
                (
                    FindingCode::Phase2TrafficSelectorMismatch,
                    format!("IPsec phase 2 traffic selectors rejected on {which}"),
                    format!(
                        "Make the device's traffic selectors (proxy IDs, crypto ACL) match the connection: AWS \
                         proposes on-premises network {local} and AWS network {remote}. A route-based device uses \
                         0.0.0.0/0 on both sides; a policy-based device must summarise its networks into one pair, \
                         since AWS accepts one security association pair per tunnel."
                    ),
                )
            }
            LogEvent::Phase2ProposalMismatch => (
                FindingCode::Phase2ProposalMismatch,
                format!("IPsec phase 2 proposal rejected on {which}"),
                format!(
                    "Configure the device's phase 2 (IPsec) proposal with values the tunnel allows: {}; with PFS on, \
                     its group must be one of those DH groups.",
                    allowed_phase2(&opts)
                ),
            ),
            _ => (
                FindingCode::DpdTimeout,
                format!("Dead peer detection timeouts on {which}: the customer gateway stopped answering"),
                format!(
                    "Check the path from the customer gateway at {} to the tunnel outside IP ({}): the device is up, \
                     its internet link works, UDP 500 and 4500 are allowed. If the device is fine and the tunnel \
                     keeps dropping when idle, have the device answer DPD or send keepalive traffic; AWS DPD \
                     timeout is {} s with action {}.",
                    ctx.customer_gateway_ip(),
                    first.outside_ip,
                    opts.dpd_timeout_seconds.unwrap_or(30),
                    opts.dpd_timeout_action.as_deref().unwrap_or("clear")
                ),
            ),
        };
        out.push(Finding {
            code,
            severity,
            tunnel: (affected.len() == 1).then(|| first.outside_ip.clone()),
            title,
            evidence,
            next_step: next,
        });
    }
}

fn list_or_default<T: ToString>(items: &[T]) -> Option<String> {
    (!items.is_empty()).then(|| {
        items
            .iter()
            .map(T::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn allowed_phase1(o: &TunnelOptions) -> String {
    format!(
        "IKE versions {}; encryption {}; integrity {}; DH groups {}",
        list_or_default(&o.ike_versions).unwrap_or_else(|| "ikev1, ikev2 (default)".into()),
        list_or_default(&o.phase1_encryption)
            .unwrap_or_else(|| "AES128, AES256, AES128-GCM-16, AES256-GCM-16 (default)".into()),
        list_or_default(&o.phase1_integrity)
            .unwrap_or_else(|| "SHA1, SHA2-256, SHA2-384, SHA2-512 (default)".into()),
        list_or_default(&o.phase1_dh_groups).unwrap_or_else(|| "2, 14-24 (default)".into()),
    )
}

fn allowed_phase2(o: &TunnelOptions) -> String {
    format!(
        "encryption {}; integrity {}; DH groups {}",
        list_or_default(&o.phase2_encryption)
            .unwrap_or_else(|| "AES128, AES256, AES128-GCM-16, AES256-GCM-16 (default)".into()),
        list_or_default(&o.phase2_integrity)
            .unwrap_or_else(|| "SHA1, SHA2-256, SHA2-384, SHA2-512 (default)".into()),
        list_or_default(&o.phase2_dh_groups).unwrap_or_else(|| "2, 5, 14-24 (default)".into()),
    )
}

/// Down tunnels whose logs name no error: IKE not established, or no negotiation at all.
fn not_established(ctx: &Ctx, out: &mut Vec<Finding>) {
    if !ctx.logs_read() {
        return;
    }
    for t in ctx.down() {
        if !t.logging().is_some_and(|l| l.enabled) || ctx.cause(t).is_some() {
            continue;
        }
        let Some(s) = ctx.log_summary(t) else {
            continue;
        };
        // A stopped query proves nothing by what it did not return.
        if s.records == 0 && ctx.facts.logs.status != LogStatus::Complete {
            continue;
        }
        let startup = t
            .options
            .as_ref()
            .and_then(|o| o.startup_action.clone())
            .unwrap_or_else(|| "add".into());
        let (code, title, evidence, next) = if s.records == 0
            || !s.last_phase1.is_some_and(IkeState::is_up)
        {
            let evidence = if s.records == 0 {
                format!(
                    "No tunnel-log record for {} in the last {} min: no IKE negotiation reached AWS",
                    ctx.label(t),
                    ctx.facts.lookback_minutes
                )
            } else {
                format!(
                    "{} log records for {}, none an error; last IKE phase 1 state {}",
                    s.records,
                    ctx.label(t),
                    s.last_phase1.map_or("unknown", IkeState::as_str)
                )
            };
            (
                FindingCode::Phase1NotEstablished,
                format!("IKE phase 1 is not established on {} and the logs name no error", ctx.label(t)),
                evidence,
                format!(
                    "The customer gateway is not negotiating this tunnel: make it initiate IKE to {} (the tunnel's \
                     startup action is {startup}{}), and check that UDP 500 and 4500 from its public IP reach AWS.",
                    t.outside_ip,
                    if startup == "add" {
                        ": AWS waits for the device to start; set it to start to have AWS initiate"
                    } else {
                        ": AWS initiates, so the device does not answer"
                    }
                ),
            )
        } else if !s.last_phase2.is_some_and(IkeState::is_up) {
            (
                FindingCode::Phase2NotEstablished,
                format!("IKE phase 1 is up but IPsec phase 2 is not on {}", ctx.label(t)),
                format!(
                    "Last states in the logs: phase 1 {}, phase 2 {}",
                    s.last_phase1.map_or("unknown", IkeState::as_str),
                    s.last_phase2.map_or("unknown", IkeState::as_str)
                ),
                format!(
                    "Check the device's IPsec (phase 2) settings for this tunnel against the allowed values ({}) and \
                     its traffic selectors; then clear its IPsec SAs so it negotiates again.",
                    allowed_phase2(&t.options.clone().unwrap_or_default())
                ),
            )
        } else {
            continue;
        };
        out.push(Finding {
            code,
            severity: if ctx.up().is_empty() {
                Severity::Critical
            } else {
                Severity::Warning
            },
            tunnel: Some(t.outside_ip.clone()),
            title,
            evidence: vec![ctx.tunnel_line(t), evidence],
            next_step: next,
        });
    }
}

/// The AWS and customer inside addresses of a /30 inside CIDR (first and second host).
fn inside_addresses(cidr: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (addr, len) = cidr.split_once('/')?;
    if len != "30" {
        return None;
    }
    let base = u32::from(addr.parse::<Ipv4Addr>().ok()?) & !3;
    Some((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
}

fn routes(ctx: &Ctx, c: &ConnectionFacts, out: &mut Vec<Finding>) {
    let up = ctx.up();
    if c.uses_bgp() {
        let any_routes = up.iter().any(|t| {
            t.telemetry
                .as_ref()
                .and_then(|x| x.accepted_route_count)
                .unwrap_or(0)
                > 0
        });
        for t in &up {
            if t.telemetry.as_ref().and_then(|x| x.accepted_route_count) != Some(0) {
                continue;
            }
            let mut evidence = vec![ctx.tunnel_line(t)];
            let neighbour = match t
                .options
                .as_ref()
                .and_then(|o| o.inside_cidr.as_deref())
                .and_then(inside_addresses)
            {
                Some((aws, cgw)) => {
                    evidence.push(format!(
                        "Inside addresses: AWS {aws}, customer gateway {cgw}"
                    ));
                    format!("its BGP session to neighbour {aws} from {cgw}")
                }
                None => "its BGP session over the tunnel's inside addresses".to_string(),
            };
            let amazon_asn = ctx
                .facts
                .attachment
                .as_ref()
                .and_then(|g| g.bgp_asn.clone())
                .map(|a| format!(" (Amazon side ASN {a})"))
                .unwrap_or_default();
            out.push(Finding {
                code: FindingCode::TunnelUpNoRoutes,
                severity: if any_routes { Severity::Warning } else { Severity::Critical },
                tunnel: Some(t.outside_ip.clone()),
                title: format!("{} is UP but AWS accepts 0 BGP routes from it", cap(&ctx.label(t))),
                evidence,
                next_step: format!(
                    "IPsec works but BGP does not: on the customer gateway check {neighbour}{amazon_asn}, its own ASN, \
                     and that it advertises the on-premises prefixes. Enable BGP logging (BgpLogEnabled in the \
                     tunnel's log options) for the session's messages.{}",
                    if any_routes {
                        " The other tunnel carries routes, so traffic still flows."
                    } else {
                        " No tunnel carries routes: AWS has no path to the site."
                    }
                ),
            });
        }
    } else if c.static_routes_only == Some(true) && c.transit_gateway_id.is_none() {
        let available = c
            .routes
            .iter()
            .filter(|r| r.state.as_deref() == Some("available"))
            .count();
        if available == 0 {
            let evidence = if c.routes.is_empty() {
                vec!["The connection uses static routing and has no static route".to_string()]
            } else {
                c.routes
                    .iter()
                    .map(|r| {
                        format!(
                            "Static route {} is {}",
                            r.destination_cidr,
                            r.state.as_deref().unwrap_or("unknown")
                        )
                    })
                    .collect()
            };
            out.push(Finding {
                code: FindingCode::NoStaticRoutes,
                severity: if up.is_empty() { Severity::Warning } else { Severity::Critical },
                tunnel: None,
                title: format!("{} has no available static route: AWS has no path to the site", ctx.vpn),
                evidence,
                next_step: format!(
                    "Add the on-premises networks as static routes (aws ec2 create-vpn-connection-route \
                     --vpn-connection-id {} --destination-cidr-block <on-premises CIDR>) and propagate them to the \
                     VPC route tables.",
                    ctx.vpn
                ),
            });
        }
    }
}

/// The number of state changes in the window that makes a tunnel "flapping".
const FLAP_TRANSITIONS: usize = 4;

fn flapping(ctx: &Ctx, out: &mut Vec<Finding>) {
    for t in &ctx.tunnels {
        let Some(h) = ctx.facts.metric_for(&t.outside_ip) else {
            continue;
        };
        let n = h.transitions();
        if n < FLAP_TRANSITIONS {
            continue;
        }
        let opts = t.options.clone().unwrap_or_default();
        out.push(Finding {
            code: FindingCode::TunnelFlapping,
            severity: Severity::Warning,
            tunnel: Some(t.outside_ip.clone()),
            title: format!("{} is flapping: {n} state changes in the last {} min", cap(&ctx.label(t)), ctx.facts.lookback_minutes),
            evidence: vec![format!(
                "AWS/VPN TunnelState for {}: {n} changes between up and down, {} of {} datapoints down",
                t.outside_ip,
                h.down_points(),
                h.points.len()
            )],
            next_step: format!(
                "Match the device's lifetimes and DPD to the tunnel (phase 1 lifetime {} s, phase 2 lifetime {} s, \
                 DPD timeout {} s) and look for rekey or DPD entries around the drops; an unstable internet link at \
                 the site gives the same picture.",
                opts.phase1_lifetime_seconds.unwrap_or(28800),
                opts.phase2_lifetime_seconds.unwrap_or(3600),
                opts.dpd_timeout_seconds.unwrap_or(30)
            ),
        });
    }
}

fn maintenance(ctx: &Ctx, out: &mut Vec<Finding>) {
    let pending: Vec<&TunnelFacts> = ctx
        .tunnels
        .iter()
        .copied()
        .filter(|t| t.maintenance.as_ref().is_some_and(|m| m.is_pending()))
        .collect();
    if pending.is_empty() {
        return;
    }
    let evidence = pending
        .iter()
        .filter_map(|t| {
            let m = t.maintenance.as_ref()?;
            let mut line = format!(
                "{}: {}",
                cap(&ctx.label(t)),
                quote(m.pending.as_deref().unwrap_or_default())
            );
            if let Some(at) = m.auto_applied_after {
                line.push_str(&format!(
                    ", applied automatically after {}",
                    when(at, ctx.now)
                ));
            }
            Some(line)
        })
        .collect();
    out.push(Finding {
        code: FindingCode::MaintenancePending,
        severity: Severity::Warning,
        tunnel: (pending.len() == 1).then(|| pending[0].outside_ip.clone()),
        title: format!("Tunnel endpoint maintenance is pending on {}", ctx.labels(&pending)),
        evidence,
        next_step: format!(
            "Apply it at a time you choose rather than AWS's, one tunnel at a time: aws ec2 replace-vpn-tunnel \
             --vpn-connection-id {} --vpn-tunnel-outside-ip-address <tunnel IP> --apply-pending-maintenance, wait \
             until that tunnel is UP again, then the other.",
            ctx.vpn
        ),
    });
}

fn logging(ctx: &Ctx, out: &mut Vec<Finding>) {
    let off: Vec<&TunnelFacts> = ctx
        .tunnels
        .iter()
        .copied()
        .filter(|t| t.options.is_some() && !t.logging().is_some_and(|l| l.enabled))
        .collect();
    let any_down = !ctx.down().is_empty();
    if !off.is_empty() {
        let commands: Vec<String> = off
            .iter()
            .map(|t| {
                format!(
                    "aws ec2 modify-vpn-tunnel-options --vpn-connection-id {} --vpn-tunnel-outside-ip-address {} \
                     --tunnel-options 'LogOptions={{CloudWatchLogOptions={{LogEnabled=true,LogGroupArn=<log group \
                     ARN>,LogOutputFormat=json}}}}'",
                    ctx.vpn, t.outside_ip
                )
            })
            .collect();
        out.push(Finding {
            code: FindingCode::TunnelLoggingDisabled,
            severity: if any_down { Severity::Warning } else { Severity::Info },
            tunnel: (off.len() == 1).then(|| off[0].outside_ip.clone()),
            title: format!("Tunnel logging to CloudWatch Logs is off for {}", ctx.labels(&off)),
            evidence: off
                .iter()
                .map(|t| format!("{}: LogOptions.CloudWatchLogOptions.LogEnabled is false", cap(&ctx.label(t))))
                .collect(),
            next_step: format!(
                "Enable JSON tunnel logs, one tunnel at a time (changing tunnel options briefly interrupts that \
                 tunnel): {}. This diagnosis reads them, and so does AWSSupport-TroubleshootVPN, which needs JSON \
                 logs and four parameters, not one: LogGroupName, VpnConnectionId, TunnelAIPAddress and IKEVersion.",
                commands.join(" ; ")
            ),
        });
    }
    let text: Vec<&TunnelFacts> = ctx
        .tunnels
        .iter()
        .copied()
        .filter(|t| t.logging().is_some_and(|l| l.enabled && !l.is_json()))
        .collect();
    if !text.is_empty() {
        out.push(Finding {
            code: FindingCode::TunnelLogFormatText,
            severity: Severity::Info,
            tunnel: (text.len() == 1).then(|| text[0].outside_ip.clone()),
            title: format!("Tunnel logs of {} are in text format", ctx.labels(&text)),
            evidence: text
                .iter()
                .map(|t| format!("{}: LogOutputFormat is text", cap(&ctx.label(t))))
                .collect(),
            next_step:
                "Switch LogOutputFormat to json (ModifyVpnTunnelOptions): this diagnosis and \
                        AWSSupport-TroubleshootVPN read JSON records only."
                    .to_string(),
        });
    }
}

fn all_up(ctx: &Ctx) -> Finding {
    let mut evidence: Vec<String> = ctx.tunnels.iter().map(|t| ctx.tunnel_line(t)).collect();
    for t in &ctx.tunnels {
        if let Some(h) = ctx.facts.metric_for(&t.outside_ip) {
            let down = h.down_points();
            if down > 0 {
                evidence.push(format!(
                    "AWS/VPN TunnelState: {} was down in {down} of {} datapoints of the last {} min",
                    ctx.label(t),
                    h.points.len(),
                    ctx.facts.lookback_minutes
                ));
            }
        }
    }
    Finding {
        code: FindingCode::AllTunnelsUp,
        severity: Severity::Info,
        tunnel: None,
        title: format!("All tunnels of {} are UP now", ctx.vpn),
        evidence,
        next_step: "Nothing to fix on the VPN right now: the alarm returns to OK with its next datapoints and the \
                    incident then resolves itself. If it recurs, look at the flapping and DPD findings."
            .to_string(),
    }
}

fn incomplete(ctx: &Ctx, gaps: &[Gap]) -> Finding {
    let retry = gaps.iter().any(|g| g.retryable);
    let fix = gaps.iter().any(|g| !g.retryable);
    let next = match (retry, fix) {
        (true, false) => "Run the diagnosis runbook again to fill the gaps.",
        (false, _) => "Grant the vpn-troubleshoot role the permissions named above, then run the diagnosis runbook again.",
        (true, true) => {
            "Grant the vpn-troubleshoot role the permissions named above, then run the diagnosis runbook again to \
             fill the gaps."
        }
    };
    Finding {
        code: FindingCode::DiagnosisIncomplete,
        severity: Severity::Info,
        tunnel: None,
        title: format!(
            "The diagnosis of {} is partial: some facts could not be gathered",
            ctx.vpn
        ),
        evidence: gaps
            .iter()
            .map(|g| format!("{}: {}", g.source, quote(&g.message)))
            .collect(),
        next_step: next.to_string(),
    }
}

fn headline(ctx: &Ctx, findings: &[Finding]) -> String {
    let down = ctx.down();
    let causes: Vec<Option<LogEvent>> = down.iter().map(|t| ctx.cause(t)).collect();
    let common = causes
        .first()
        .copied()
        .flatten()
        .filter(|c| causes.iter().all(|x| *x == Some(*c)));
    let suffix = common
        .map(|c| format!(": {}", cause_label(c)))
        .unwrap_or_default();
    if findings
        .iter()
        .any(|f| f.code == FindingCode::BothTunnelsDown)
    {
        format!(
            "{}{suffix}",
            if ctx.tunnels.len() == 1 {
                format!("The only tunnel of {} is DOWN", ctx.vpn)
            } else {
                format!("Both tunnels of {} are DOWN", ctx.vpn)
            }
        )
    } else if findings
        .iter()
        .any(|f| f.code == FindingCode::OneTunnelDown)
    {
        format!(
            "{} of {} is DOWN, traffic on {}{suffix}",
            cap(&ctx.labels(&down)),
            ctx.vpn,
            ctx.labels(&ctx.up())
        )
    } else {
        findings
            .first()
            .map(|f| f.title.clone())
            .unwrap_or_else(|| format!("No problem found on {}", ctx.vpn))
    }
}

fn impact(findings: &[Finding]) -> Impact {
    use FindingCode::*;
    let critical = findings.iter().any(|f| {
        matches!(
            f.code,
            BothTunnelsDown | ConnectionNotAvailable | GatewayNotAvailable
        ) || (matches!(f.code, TunnelUpNoRoutes | NoStaticRoutes)
            && f.severity == Severity::Critical)
    });
    if critical {
        Impact::CRITICAL
    } else if findings
        .iter()
        .any(|f| matches!(f.code, OneTunnelDown | ConnectionNotFound | DescribeFailed))
    {
        Impact::MEDIUM
    } else if findings.iter().any(|f| f.severity <= Severity::Warning) {
        Impact::LOW
    } else {
        Impact::NONE
    }
}

/// Text from logs or AWS, quoted and made inert for Slack and Markdown (no mentions,
/// links or code spans), cut to a readable length.
pub(super) fn quote(s: &str) -> String {
    let cleaned: String = crate::text::truncate(s, 300)
        .chars()
        .map(|c| match c {
            '<' => '‹',
            '>' => '›',
            '`' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    format!("\"{cleaned}\"")
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn clock(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `2026-11-25 09:58 UTC (43 min ago)`.
fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let minutes = (now - at).num_minutes();
    if minutes >= 0 {
        format!("{} ({})", clock(at), ago(minutes))
    } else {
        format!(
            "{} (in {})",
            clock(at),
            ago(-minutes).trim_end_matches(" ago")
        )
    }
}

fn ago(minutes: i64) -> String {
    if minutes < 120 {
        format!("{minutes} min ago")
    } else if minutes < 48 * 60 {
        format!("{} h ago", minutes / 60)
    } else {
        format!("{} days ago", minutes / (24 * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses_of_a_slash_30() {
        assert_eq!(
            inside_addresses("169.254.10.0/30"),
            Some((
                "169.254.10.1".parse().unwrap(),
                "169.254.10.2".parse().unwrap()
            ))
        );
        assert_eq!(inside_addresses("169.254.10.4/29"), None);
        assert_eq!(inside_addresses("nonsense"), None);
    }

    #[test]
    fn quote_makes_slack_sequences_inert() {
        assert_eq!(quote("<!channel> `x`\n"), "\"‹!channel› 'x' \"");
    }

    #[test]
    fn when_formats_past_and_future() {
        let now: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        assert_eq!(
            when("2026-11-25T09:17:00Z".parse().unwrap(), now),
            "2026-11-25 09:17 UTC (43 min ago)"
        );
        assert_eq!(
            when("2026-11-27T10:00:00Z".parse().unwrap(), now),
            "2026-11-27 10:00 UTC (in 2 days)"
        );
        assert_eq!(
            when("2026-11-24T10:00:00Z".parse().unwrap(), now),
            "2026-11-24 10:00 UTC (24 h ago)"
        );
    }

    #[test]
    fn severity_orders_critical_first() {
        let mut v = vec![Severity::Info, Severity::Critical, Severity::Warning];
        v.sort();
        assert_eq!(v, [Severity::Critical, Severity::Warning, Severity::Info]);
    }
}
