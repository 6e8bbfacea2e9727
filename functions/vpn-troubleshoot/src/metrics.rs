//! `AWS/VPN TunnelState` history per tunnel (`GetMetricData`; the CloudWatch SDK
//! speaks rpcv2Cbor, so this is tested with mocks only).

use std::net::IpAddr;

use aws_sdk_cloudwatch::primitives::DateTime as SmithyTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_sdk_cloudwatch::Client;
use chrono::{DateTime, Utc};
use shared::error::AwsError;
use shared::vpn::{Gap, MetricPoint, TunnelMetricHistory};

use crate::ec2::{gap, to_chrono};

/// One datapoint per minute: a short drop between two 5-minute points stays visible.
const PERIOD_SECONDS: i32 = 60;
/// Pages of `GetMetricData` read at most (a day of minutes for two tunnels fits in one).
const MAX_PAGES: usize = 5;

/// The minimum of `TunnelState` per minute for each tunnel, oldest first. Query ids
/// are `t0`, `t1`, ... in the order of `tunnel_ips`.
pub async fn tunnel_state_history(
    cw: &Client,
    tunnel_ips: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<TunnelMetricHistory>, Gap> {
    let ips: Vec<&String> = tunnel_ips
        .iter()
        .filter(|ip| ip.parse::<IpAddr>().is_ok())
        .collect();
    if ips.is_empty() {
        return Ok(vec![]);
    }
    let queries: Vec<MetricDataQuery> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            MetricDataQuery::builder()
                .id(format!("t{i}"))
                .label(ip.as_str())
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace("AWS/VPN")
                                .metric_name("TunnelState")
                                .dimensions(
                                    Dimension::builder()
                                        .name("TunnelIpAddress")
                                        .value(ip.as_str())
                                        .build(),
                                )
                                .build(),
                        )
                        .period(PERIOD_SECONDS)
                        .stat("Minimum")
                        .build(),
                )
                .return_data(true)
                .build()
        })
        .collect();
    let mut histories: Vec<TunnelMetricHistory> = ips
        .iter()
        .map(|ip| TunnelMetricHistory {
            tunnel_ip: ip.to_string(),
            points: vec![],
        })
        .collect();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let out = cw
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(SmithyTime::from_secs(start.timestamp()))
            .end_time(SmithyTime::from_secs(end.timestamp()))
            .scan_by(ScanBy::TimestampAscending)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| {
                gap(
                    "GetMetricData TunnelState",
                    &AwsError::from_sdk("cloudwatch", "GetMetricData", e),
                )
            })?;
        for r in out.metric_data_results() {
            let Some(i) = r
                .id()
                .and_then(|id| id.strip_prefix('t'))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let Some(h) = histories.get_mut(i) else {
                continue;
            };
            h.points
                .extend(r.timestamps().iter().zip(r.values()).filter_map(|(t, v)| {
                    Some(MetricPoint {
                        at: to_chrono(t)?,
                        value: *v,
                    })
                }));
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(histories)
}
