//! Gathering the facts about one VPN connection: `DescribeVpnConnections` first
//! (everything else needs its gateway ids, tunnel IPs and log groups), then the
//! gateways, the metric history, the tunnel maintenance status and the tunnel logs
//! concurrently. A failed call becomes a gap in the facts, never an abort.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use futures::future::join_all;
use shared::vpn::{
    ConnectionLookup, ConnectionState, Gap, GatewayFacts, LogFacts, LogStatus, VpnConnectionId,
    VpnFacts,
};
use tracing::info;

use crate::logs_query::{log_groups, query_tunnel_logs, QueryBudget};
use crate::{ec2, metrics};

/// The read-only clients of the diagnosis.
#[derive(Clone, Copy)]
pub struct Readers<'a> {
    pub ec2: &'a aws_sdk_ec2::Client,
    pub cloudwatch: &'a aws_sdk_cloudwatch::Client,
    pub logs: &'a aws_sdk_cloudwatchlogs::Client,
}

/// Gathers the facts for the window ending at `now`.
pub async fn gather(
    readers: Readers<'_>,
    vpn: &VpnConnectionId,
    lookback_minutes: u32,
    now: DateTime<Utc>,
    budget: QueryBudget,
) -> VpnFacts {
    let mut facts = VpnFacts {
        vpn_id: vpn.clone(),
        collected_at: now,
        lookback_minutes,
        connection: ec2::describe_connection(readers.ec2, vpn).await,
        customer_gateway: None,
        attachment: None,
        metrics: vec![],
        logs: LogFacts::default(),
        gaps: vec![],
    };
    let ConnectionLookup::Found(c) = &facts.connection else {
        return facts;
    };
    if c.state != ConnectionState::Available {
        return facts;
    }
    let start = now - ChronoDuration::minutes(i64::from(lookback_minutes));
    let ips: Vec<String> = c.tunnels.iter().map(|t| t.outside_ip.clone()).collect();
    let groups = log_groups(c.tunnels.iter().filter_map(|t| t.logging()));

    let cgw = async {
        match &c.customer_gateway_id {
            Some(id) => Some(ec2::describe_customer_gateway(readers.ec2, id).await),
            None => None,
        }
    };
    let attachment = async {
        match (&c.vpn_gateway_id, &c.transit_gateway_id) {
            (Some(vgw), _) => Some(ec2::describe_vpn_gateway(readers.ec2, vgw).await),
            (None, Some(tgw)) => Some(ec2::describe_tgw_attachment(readers.ec2, vpn, tgw).await),
            (None, None) => None,
        }
    };
    let history = metrics::tunnel_state_history(readers.cloudwatch, &ips, start, now);
    let maintenance = join_all(ips.iter().map(|ip| ec2::maintenance(readers.ec2, vpn, ip)));
    let logs = async {
        if groups.is_empty() {
            LogFacts {
                status: LogStatus::NotEnabled,
                ..LogFacts::default()
            }
        } else {
            query_tunnel_logs(readers.logs, &groups, vpn, &ips, start, now, budget).await
        }
    };
    let (cgw, attachment, history, maintenance, logs) =
        tokio::join!(cgw, attachment, history, maintenance, logs);

    let mut gaps: Vec<Gap> = vec![];
    let mut keep = |r: Option<Result<GatewayFacts, Gap>>| match r {
        Some(Ok(g)) => Some(g),
        Some(Err(gap)) => {
            gaps.push(gap);
            None
        }
        None => None,
    };
    let customer_gateway = keep(cgw);
    let attachment = keep(attachment);
    let metrics = history.unwrap_or_else(|gap| {
        gaps.push(gap);
        vec![]
    });
    let mut connection = facts.connection.clone();
    if let ConnectionLookup::Found(c) = &mut connection {
        for (t, m) in c.tunnels.iter_mut().zip(maintenance) {
            match m {
                Ok(m) => t.maintenance = Some(m),
                Err(gap) => gaps.push(gap),
            }
        }
    }
    info!(
        gaps = gaps.len(),
        log_records = logs.records.len(),
        metric_series = metrics.len(),
        "facts gathered"
    );
    facts.connection = connection;
    facts.customer_gateway = customer_gateway;
    facts.attachment = attachment;
    facts.metrics = metrics;
    facts.logs = logs;
    facts.gaps = gaps;
    facts
}
