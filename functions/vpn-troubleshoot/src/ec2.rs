//! EC2 calls of the diagnosis (describes, tunnel replacement status) and their
//! conversion into the plain facts of `shared::vpn`. The one write call,
//! `ReplaceVpnTunnel`, lives in `remediate`.

use aws_sdk_ec2::types::{Filter, TunnelOption, VgwTelemetry, VpnConnection};
use aws_sdk_ec2::Client;
use chrono::{DateTime, Utc};
use shared::error::{AwsError, Retryable};
use shared::vpn::{
    merge_tunnels, ConnectionFacts, ConnectionLookup, ConnectionState, Gap, GatewayFacts,
    GatewayKind, Maintenance, StaticRoute, Telemetry, TunnelLogging, TunnelOptions, TunnelStatus,
    VpnConnectionId,
};

pub(crate) const SERVICE: &str = "ec2";

/// `aws_smithy_types::DateTime` to chrono (out-of-range values are dropped).
pub(crate) fn to_chrono(t: &aws_sdk_ec2::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

pub(crate) fn gap(source: &str, e: &AwsError) -> Gap {
    Gap {
        source: source.to_string(),
        message: e.to_string(),
        retryable: e.retryable(),
    }
}

/// `DescribeVpnConnections` for one id: found, not found (a clear answer, not an
/// error), or failed.
pub async fn describe_connection(ec2: &Client, vpn: &VpnConnectionId) -> ConnectionLookup {
    match ec2
        .describe_vpn_connections()
        .vpn_connection_ids(vpn.as_str())
        .send()
        .await
    {
        Ok(out) => match out
            .vpn_connections()
            .iter()
            .find(|c| c.vpn_connection_id() == Some(vpn.as_str()))
        {
            Some(c) => ConnectionLookup::Found(connection_facts(c)),
            None => ConnectionLookup::NotFound {
                message: format!("no VPN connection {vpn} in the answer"),
            },
        },
        Err(e) => {
            let e = AwsError::from_sdk(SERVICE, "DescribeVpnConnections", e);
            if e.is_code("InvalidVpnConnectionID.NotFound") {
                ConnectionLookup::NotFound {
                    message: e.to_string(),
                }
            } else {
                ConnectionLookup::Failed {
                    message: e.to_string(),
                    retryable: e.retryable(),
                }
            }
        }
    }
}

/// The facts of a described connection. The pre-shared keys are never read.
pub fn connection_facts(c: &VpnConnection) -> ConnectionFacts {
    let options = c.options();
    let telemetry = c.vgw_telemetry().iter().filter_map(telemetry).collect();
    let tunnel_options = options
        .map(|o| {
            o.tunnel_options()
                .iter()
                .filter_map(tunnel_options)
                .collect()
        })
        .unwrap_or_default();
    ConnectionFacts {
        state: ConnectionState::parse(c.state().map_or("", |s| s.as_str())),
        customer_gateway_id: c.customer_gateway_id().map(str::to_string),
        vpn_gateway_id: c.vpn_gateway_id().map(str::to_string),
        transit_gateway_id: c.transit_gateway_id().map(str::to_string),
        static_routes_only: options.and_then(|o| o.static_routes_only()),
        local_ipv4_network_cidr: options
            .and_then(|o| o.local_ipv4_network_cidr())
            .map(str::to_string),
        remote_ipv4_network_cidr: options
            .and_then(|o| o.remote_ipv4_network_cidr())
            .map(str::to_string),
        routes: c
            .routes()
            .iter()
            .filter_map(|r| {
                Some(StaticRoute {
                    destination_cidr: r.destination_cidr_block()?.to_string(),
                    state: r.state().map(|s| s.as_str().to_string()),
                })
            })
            .collect(),
        tunnels: merge_tunnels(telemetry, tunnel_options),
    }
}

fn telemetry(t: &VgwTelemetry) -> Option<(String, Telemetry)> {
    Some((
        t.outside_ip_address()?.to_string(),
        Telemetry {
            status: TunnelStatus::parse(t.status().map_or("", |s| s.as_str())),
            status_message: t.status_message().map(str::to_string),
            last_status_change: t.last_status_change().and_then(to_chrono),
            accepted_route_count: t.accepted_route_count(),
            certificate_arn: t.certificate_arn().map(str::to_string),
        },
    ))
}

fn tunnel_options(o: &TunnelOption) -> Option<(String, TunnelOptions)> {
    let log = o.log_options().and_then(|l| l.cloud_watch_log_options());
    Some((
        o.outside_ip_address()?.to_string(),
        TunnelOptions {
            inside_cidr: o.tunnel_inside_cidr().map(str::to_string),
            ike_versions: o
                .ike_versions()
                .iter()
                .filter_map(|v| v.value())
                .map(str::to_string)
                .collect(),
            phase1_encryption: o
                .phase1_encryption_algorithms()
                .iter()
                .filter_map(|v| v.value())
                .map(str::to_string)
                .collect(),
            phase1_integrity: o
                .phase1_integrity_algorithms()
                .iter()
                .filter_map(|v| v.value())
                .map(str::to_string)
                .collect(),
            phase1_dh_groups: o
                .phase1_dh_group_numbers()
                .iter()
                .filter_map(|v| v.value())
                .collect(),
            phase2_encryption: o
                .phase2_encryption_algorithms()
                .iter()
                .filter_map(|v| v.value())
                .map(str::to_string)
                .collect(),
            phase2_integrity: o
                .phase2_integrity_algorithms()
                .iter()
                .filter_map(|v| v.value())
                .map(str::to_string)
                .collect(),
            phase2_dh_groups: o
                .phase2_dh_group_numbers()
                .iter()
                .filter_map(|v| v.value())
                .collect(),
            phase1_lifetime_seconds: o.phase1_lifetime_seconds(),
            phase2_lifetime_seconds: o.phase2_lifetime_seconds(),
            dpd_timeout_seconds: o.dpd_timeout_seconds(),
            dpd_timeout_action: o.dpd_timeout_action().map(str::to_string),
            startup_action: o.startup_action().map(str::to_string),
            logging: TunnelLogging {
                enabled: log.and_then(|l| l.log_enabled()).unwrap_or(false),
                log_group_arn: log.and_then(|l| l.log_group_arn()).map(str::to_string),
                output_format: log.and_then(|l| l.log_output_format()).map(str::to_string),
            },
        },
    ))
}

/// A gateway EC2 says does not exist: a finding, not a failure.
fn missing(kind: GatewayKind, id: &str) -> GatewayFacts {
    GatewayFacts {
        kind,
        id: id.to_string(),
        state: Some("not found".to_string()),
        ip_address: None,
        bgp_asn: None,
        vpc_attachments: vec![],
    }
}

/// `DescribeCustomerGateways` for the connection's customer gateway.
pub async fn describe_customer_gateway(ec2: &Client, id: &str) -> Result<GatewayFacts, Gap> {
    match ec2
        .describe_customer_gateways()
        .customer_gateway_ids(id)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .customer_gateways()
            .iter()
            .find(|g| g.customer_gateway_id() == Some(id))
            .map(|g| GatewayFacts {
                kind: GatewayKind::CustomerGateway,
                id: id.to_string(),
                state: g.state().map(str::to_string),
                ip_address: g.ip_address().map(str::to_string),
                bgp_asn: g.bgp_asn().or(g.bgp_asn_extended()).map(str::to_string),
                vpc_attachments: vec![],
            })
            .unwrap_or_else(|| missing(GatewayKind::CustomerGateway, id))),
        Err(e) => {
            let e = AwsError::from_sdk(SERVICE, "DescribeCustomerGateways", e);
            if e.is_code("InvalidCustomerGatewayID.NotFound") {
                Ok(missing(GatewayKind::CustomerGateway, id))
            } else {
                Err(gap("DescribeCustomerGateways", &e))
            }
        }
    }
}

/// `DescribeVpnGateways` for the connection's virtual private gateway.
pub async fn describe_vpn_gateway(ec2: &Client, id: &str) -> Result<GatewayFacts, Gap> {
    match ec2.describe_vpn_gateways().vpn_gateway_ids(id).send().await {
        Ok(out) => Ok(out
            .vpn_gateways()
            .iter()
            .find(|g| g.vpn_gateway_id() == Some(id))
            .map(|g| GatewayFacts {
                kind: GatewayKind::VpnGateway,
                id: id.to_string(),
                state: g.state().map(|s| s.as_str().to_string()),
                ip_address: None,
                bgp_asn: g.amazon_side_asn().map(|a| a.to_string()),
                vpc_attachments: g
                    .vpc_attachments()
                    .iter()
                    .map(|a| {
                        (
                            a.vpc_id().unwrap_or("(unknown VPC)").to_string(),
                            a.state().map_or("unknown", |s| s.as_str()).to_string(),
                        )
                    })
                    .collect(),
            })
            .unwrap_or_else(|| missing(GatewayKind::VpnGateway, id))),
        Err(e) => {
            let e = AwsError::from_sdk(SERVICE, "DescribeVpnGateways", e);
            if e.is_code("InvalidVpnGatewayID.NotFound") {
                Ok(missing(GatewayKind::VpnGateway, id))
            } else {
                Err(gap("DescribeVpnGateways", &e))
            }
        }
    }
}

/// `DescribeTransitGatewayAttachments` for the VPN attachment of the connection.
pub async fn describe_tgw_attachment(
    ec2: &Client,
    vpn: &VpnConnectionId,
    tgw: &str,
) -> Result<GatewayFacts, Gap> {
    let out = ec2
        .describe_transit_gateway_attachments()
        .filters(
            Filter::builder()
                .name("resource-id")
                .values(vpn.as_str())
                .build(),
        )
        .filters(
            Filter::builder()
                .name("transit-gateway-id")
                .values(tgw)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            gap(
                "DescribeTransitGatewayAttachments",
                &AwsError::from_sdk(SERVICE, "DescribeTransitGatewayAttachments", e),
            )
        })?;
    Ok(out
        .transit_gateway_attachments()
        .iter()
        .find(|a| a.resource_id() == Some(vpn.as_str()))
        .map(|a| GatewayFacts {
            kind: GatewayKind::TransitGatewayAttachment,
            id: a.transit_gateway_attachment_id().unwrap_or(tgw).to_string(),
            state: a.state().map(|s| s.as_str().to_string()),
            ip_address: None,
            bgp_asn: None,
            vpc_attachments: vec![],
        })
        .unwrap_or_else(|| {
            missing(
                GatewayKind::TransitGatewayAttachment,
                &format!("{tgw} attachment of {vpn}"),
            )
        }))
}

/// `GetVpnTunnelReplacementStatus`: pending endpoint maintenance of one tunnel.
pub async fn maintenance(
    ec2: &Client,
    vpn: &VpnConnectionId,
    tunnel_ip: &str,
) -> Result<Maintenance, Gap> {
    let out = ec2
        .get_vpn_tunnel_replacement_status()
        .vpn_connection_id(vpn.as_str())
        .vpn_tunnel_outside_ip_address(tunnel_ip)
        .send()
        .await
        .map_err(|e| {
            gap(
                &format!("GetVpnTunnelReplacementStatus {tunnel_ip}"),
                &AwsError::from_sdk(SERVICE, "GetVpnTunnelReplacementStatus", e),
            )
        })?;
    let m = out.maintenance_details();
    Ok(Maintenance {
        pending: m.and_then(|m| m.pending_maintenance()).map(str::to_string),
        auto_applied_after: m
            .and_then(|m| m.maintenance_auto_applied_after())
            .and_then(to_chrono),
        last_applied: m
            .and_then(|m| m.last_maintenance_applied())
            .and_then(to_chrono),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::primitives::DateTime as SmithyTime;
    use aws_sdk_ec2::types::{
        CloudWatchLogOptions, IkeVersionsListValue, Phase1DhGroupNumbersListValue, TelemetryStatus,
        VpnConnectionOptions, VpnState, VpnStaticRoute, VpnTunnelLogOptions,
    };

    fn telemetry(ip: &str, status: TelemetryStatus, routes: i32) -> VgwTelemetry {
        VgwTelemetry::builder()
            .outside_ip_address(ip)
            .status(status)
            .status_message(format!("{routes} BGP ROUTES"))
            .last_status_change(SmithyTime::from_secs(1_795_600_800))
            .accepted_route_count(routes)
            .build()
    }

    #[test]
    fn connection_facts_match_telemetry_to_options_by_outside_ip() {
        let c = VpnConnection::builder()
            .vpn_connection_id("vpn-0a1b2c3d")
            .state(VpnState::Available)
            .customer_gateway_id("cgw-1")
            .transit_gateway_id("tgw-1")
            .customer_gateway_configuration("<pre_shared_key>secret</pre_shared_key>")
            .routes(
                VpnStaticRoute::builder()
                    .destination_cidr_block("10.20.0.0/16")
                    .state(VpnState::Available)
                    .build(),
            )
            .options(
                VpnConnectionOptions::builder()
                    .static_routes_only(true)
                    .local_ipv4_network_cidr("10.20.0.0/16")
                    .tunnel_options(
                        TunnelOption::builder()
                            .outside_ip_address("192.0.2.1")
                            .pre_shared_key("never-read")
                            .ike_versions(IkeVersionsListValue::builder().value("ikev2").build())
                            .phase1_dh_group_numbers(
                                Phase1DhGroupNumbersListValue::builder().value(14).build(),
                            )
                            .startup_action("start")
                            .log_options(
                                VpnTunnelLogOptions::builder()
                                    .cloud_watch_log_options(
                                        CloudWatchLogOptions::builder()
                                            .log_enabled(true)
                                            .log_group_arn("arn:aws:logs:eu-west-1:1:log-group:vpn")
                                            .log_output_format("json")
                                            .build(),
                                    )
                                    .build(),
                            )
                            .build(),
                    )
                    .tunnel_options(
                        TunnelOption::builder()
                            .outside_ip_address("192.0.2.2")
                            .build(),
                    )
                    .build(),
            )
            // Telemetry listed in the other order than the options.
            .vgw_telemetry(telemetry("192.0.2.2", TelemetryStatus::Down, 0))
            .vgw_telemetry(telemetry("192.0.2.1", TelemetryStatus::Up, 4))
            .build();
        let f = connection_facts(&c);
        assert_eq!(f.state, ConnectionState::Available);
        assert_eq!(f.transit_gateway_id.as_deref(), Some("tgw-1"));
        assert_eq!(f.static_routes_only, Some(true));
        assert_eq!(f.local_ipv4_network_cidr.as_deref(), Some("10.20.0.0/16"));
        assert_eq!(
            f.routes,
            vec![StaticRoute {
                destination_cidr: "10.20.0.0/16".into(),
                state: Some("available".into())
            }]
        );
        assert_eq!(f.tunnels.len(), 2);
        let t1 = &f.tunnels[0];
        assert_eq!(t1.outside_ip, "192.0.2.1");
        assert_eq!(t1.status(), TunnelStatus::Up);
        assert_eq!(t1.telemetry.as_ref().unwrap().accepted_route_count, Some(4));
        assert_eq!(
            t1.telemetry.as_ref().unwrap().last_status_change,
            Some("2026-11-25T10:00:00Z".parse().unwrap())
        );
        let o = t1.options.as_ref().unwrap();
        assert_eq!(o.ike_versions, ["ikev2"]);
        assert_eq!(o.phase1_dh_groups, [14]);
        assert_eq!(o.startup_action.as_deref(), Some("start"));
        assert!(o.logging.enabled && o.logging.is_json());
        assert_eq!(o.logging.log_group_name().as_deref(), Some("vpn"));
        let t2 = &f.tunnels[1];
        assert_eq!(t2.status(), TunnelStatus::Down);
        assert!(!t2.options.as_ref().unwrap().logging.enabled);
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains("never-read") && !text.contains("secret"));
    }

    #[test]
    fn connection_facts_of_an_empty_answer_are_unknown_not_a_panic() {
        let f = connection_facts(&VpnConnection::builder().build());
        assert_eq!(f.state, ConnectionState::Unknown);
        assert!(f.tunnels.is_empty());
        assert_eq!(f.static_routes_only, None);
    }
}
