//! The handler against aws-smithy-mocks clients (asserting the requests sent) and a
//! recording incident backend: the full report, a Logs Insights query that stays
//! Running past the budget, an unknown VPN id, a refused input, and the guarded
//! remediation (off: no write call; on: dry run first, one tunnel only), and the
//! diagnosis recorded on the incident's state-table item (`STATE_TABLE_NAME` set):
//! recorded with a conditional write, a conflict decided again, steps other functions
//! left pending kept as they are (never run here), a held lease waited for, no
//! incident item (manual run), a failing table that never fails the run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
use aws_sdk_cloudwatch::types::MetricDataResult;
use aws_sdk_cloudwatchlogs::operation::get_query_results::GetQueryResultsOutput;
use aws_sdk_cloudwatchlogs::operation::start_query::StartQueryOutput;
use aws_sdk_cloudwatchlogs::operation::stop_query::StopQueryOutput;
use aws_sdk_cloudwatchlogs::types::{QueryStatus, ResultField};
use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::describe_customer_gateways::DescribeCustomerGatewaysOutput;
use aws_sdk_ec2::operation::describe_vpn_connections::{
    DescribeVpnConnectionsError, DescribeVpnConnectionsOutput,
};
use aws_sdk_ec2::operation::describe_vpn_gateways::DescribeVpnGatewaysOutput;
use aws_sdk_ec2::operation::get_vpn_tunnel_replacement_status::GetVpnTunnelReplacementStatusOutput;
use aws_sdk_ec2::operation::replace_vpn_tunnel::{ReplaceVpnTunnelError, ReplaceVpnTunnelOutput};
use aws_sdk_ec2::primitives::DateTime as SmithyTime;
use aws_sdk_ec2::types::{
    AttachmentStatus, CloudWatchLogOptions, CustomerGateway, MaintenanceDetails, TelemetryStatus,
    TunnelOption, VgwTelemetry, VpcAttachment, VpnConnection, VpnConnectionOptions, VpnGateway,
    VpnState, VpnTunnelLogOptions,
};
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_smithy_mocks::{mock, Rule};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shared::backend::BackendKind;
use shared::effects::fakes::FixedClock;
use shared::error::{AwsError, AwsFailure, Retryable};
use shared::incident::{
    Actor, BackendError, Impact, IncidentBackend, IncidentRef, NewIncident, Note, Roles,
    RunbookRequest,
};
use shared::lifecycle::{Effect, IncidentRecord, Milestones};
use shared::mock_client;
use shared::notification::{IncidentStatus, TimelineEntry};
use shared::state::{DynamoStateStore, Owner, StateStore};
use shared::testing::aws_smithy_mocks::RuleMode;
use shared::vpn::RemediationPolicy;
use tokio::time::Instant;
use vpn_troubleshoot::config::Config;
use vpn_troubleshoot::handler::{handle, Deps, Invocation, RunbookOutput, REPORT_RESERVE};
use vpn_troubleshoot::logs_query::PollSchedule;

const VPN: &str = "vpn-0a1b2c3d4e5f67890";
const T1: &str = "203.0.113.10";
const T2: &str = "203.0.113.20";
const OPS_ITEM: &str = "oi-0123456789ab";
const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:incident-notifications";
const LOG_GROUP_ARN: &str = "arn:aws:logs:eu-west-1:123456789012:log-group:/vpn/tunnel-logs";
/// 2026-11-25T10:00:00Z
const NOW: i64 = 1_795_600_800;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap()
}

const TABLE: &str = "incident-state";
const KEY: &str = "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN";

/// When the diagnosis is recorded (the runner's clock): 2 minutes after the start.
fn diagnosed_at() -> DateTime<Utc> {
    now() + chrono::Duration::minutes(2)
}

// ---------------------------------------------------------------- backend fake

type Notes = Arc<Mutex<Vec<(IncidentRef, Note)>>>;

/// Records notes; any other backend call is a test failure.
struct RecordingBackend {
    notes: Notes,
    fail_with: Option<BackendError>,
}

#[async_trait]
impl IncidentBackend for RecordingBackend {
    fn name(&self) -> &'static str {
        "OpsCenter"
    }
    async fn find_open(&self, _: &str) -> Result<Option<IncidentRef>, BackendError> {
        panic!("vpn-troubleshoot must not look up incidents")
    }
    async fn open(&self, _: &NewIncident) -> Result<IncidentRef, BackendError> {
        panic!("vpn-troubleshoot must not open incidents")
    }
    async fn set_impact(&self, _: &IncidentRef, _: Impact, _: &Note) -> Result<(), BackendError> {
        panic!("vpn-troubleshoot must not change the impact")
    }
    async fn add_note(&self, incident: &IncidentRef, note: &Note) -> Result<(), BackendError> {
        self.notes
            .lock()
            .unwrap()
            .push((incident.clone(), note.clone()));
        match &self.fail_with {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
    async fn resolve(&self, _: &IncidentRef, _: &Note) -> Result<(), BackendError> {
        panic!("vpn-troubleshoot must not resolve incidents")
    }
    async fn start_runbook(
        &self,
        _: &IncidentRef,
        _: &RunbookRequest,
    ) -> Result<Option<String>, BackendError> {
        panic!("vpn-troubleshoot must not start runbooks")
    }
}

// ---------------------------------------------------------------- EC2 shapes

#[derive(Clone, Copy)]
struct Tunnel {
    ip: &'static str,
    up: bool,
    logging: bool,
}

fn connection(tunnels: &[Tunnel]) -> VpnConnection {
    let mut options = VpnConnectionOptions::builder().static_routes_only(false);
    let mut b = VpnConnection::builder()
        .vpn_connection_id(VPN)
        .state(VpnState::Available)
        .customer_gateway_id("cgw-0123456789abcdef0")
        .vpn_gateway_id("vgw-0123456789abcdef0");
    for (i, t) in tunnels.iter().enumerate() {
        let mut log = CloudWatchLogOptions::builder().log_enabled(t.logging);
        if t.logging {
            log = log.log_group_arn(LOG_GROUP_ARN).log_output_format("json");
        }
        options = options.tunnel_options(
            TunnelOption::builder()
                .outside_ip_address(t.ip)
                .tunnel_inside_cidr(format!("169.254.{}.0/30", 10 * (i + 1)))
                .log_options(
                    VpnTunnelLogOptions::builder()
                        .cloud_watch_log_options(log.build())
                        .build(),
                )
                .build(),
        );
        b = b.vgw_telemetry(
            VgwTelemetry::builder()
                .outside_ip_address(t.ip)
                .status(if t.up {
                    TelemetryStatus::Up
                } else {
                    TelemetryStatus::Down
                })
                .status_message(if t.up {
                    "3 BGP ROUTES"
                } else {
                    "IPSEC IS DOWN"
                })
                // Down for 43 minutes; up for days.
                .last_status_change(SmithyTime::from_secs(if t.up {
                    NOW - 5 * 86_400
                } else {
                    NOW - 43 * 60
                }))
                .accepted_route_count(if t.up { 3 } else { 0 })
                .build(),
        );
    }
    b.options(options.build()).build()
}

fn describe_connection(tunnels: &'static [Tunnel]) -> Rule {
    mock!(aws_sdk_ec2::Client::describe_vpn_connections)
        .match_requests(|r| r.vpn_connection_ids() == [VPN])
        .then_output(move || {
            DescribeVpnConnectionsOutput::builder()
                .vpn_connections(connection(tunnels))
                .build()
        })
}

fn describe_gateways() -> [Rule; 2] {
    [
        mock!(aws_sdk_ec2::Client::describe_customer_gateways)
            .match_requests(|r| r.customer_gateway_ids() == ["cgw-0123456789abcdef0"])
            .then_output(|| {
                DescribeCustomerGatewaysOutput::builder()
                    .customer_gateways(
                        CustomerGateway::builder()
                            .customer_gateway_id("cgw-0123456789abcdef0")
                            .state("available")
                            .ip_address("198.51.100.7")
                            .bgp_asn("65000")
                            .build(),
                    )
                    .build()
            }),
        mock!(aws_sdk_ec2::Client::describe_vpn_gateways)
            .match_requests(|r| r.vpn_gateway_ids() == ["vgw-0123456789abcdef0"])
            .then_output(|| {
                DescribeVpnGatewaysOutput::builder()
                    .vpn_gateways(
                        VpnGateway::builder()
                            .vpn_gateway_id("vgw-0123456789abcdef0")
                            .state(VpnState::Available)
                            .amazon_side_asn(64512)
                            .vpc_attachments(
                                VpcAttachment::builder()
                                    .vpc_id("vpc-0123456789abcdef0")
                                    .state(AttachmentStatus::Attached)
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            }),
    ]
}

fn maintenance_status() -> Rule {
    mock!(aws_sdk_ec2::Client::get_vpn_tunnel_replacement_status)
        .match_requests(|r| {
            r.vpn_connection_id() == Some(VPN)
                && [Some(T1), Some(T2)].contains(&r.vpn_tunnel_outside_ip_address())
        })
        .sequence()
        .output(|| {
            GetVpnTunnelReplacementStatusOutput::builder()
                .maintenance_details(MaintenanceDetails::builder().build())
                .build()
        })
        .times(2)
        .build()
}

type Replacements = Arc<Mutex<Vec<(Option<bool>, String)>>>;

/// `ReplaceVpnTunnel`: records (DryRun, tunnel) of every call; the dry run answers
/// `dry_run_code`, the real call `Return: true`.
fn replace_tunnel(log: Replacements, dry_run_code: &'static str) -> Rule {
    mock!(aws_sdk_ec2::Client::replace_vpn_tunnel)
        .match_requests(move |r| {
            assert_eq!(r.vpn_connection_id(), Some(VPN));
            assert_eq!(r.apply_pending_maintenance(), Some(false));
            log.lock().unwrap().push((
                r.dry_run(),
                r.vpn_tunnel_outside_ip_address()
                    .unwrap_or_default()
                    .to_string(),
            ));
            true
        })
        .sequence()
        .error(move || {
            ReplaceVpnTunnelError::generic(
                ErrorMetadata::builder()
                    .code(dry_run_code)
                    .message("Request would have succeeded, but DryRun flag is set.")
                    .build(),
            )
        })
        .output(|| ReplaceVpnTunnelOutput::builder().r#return(true).build())
        .build()
}

// ---------------------------------------------------------------- CloudWatch, Logs, SNS

fn metric_data(down_ip: Option<&'static str>) -> Rule {
    mock!(aws_sdk_cloudwatch::Client::get_metric_data)
        .match_requests(|r| {
            let q = r.metric_data_queries();
            let ips: Vec<&str> = q
                .iter()
                .filter_map(|q| q.metric_stat())
                .filter_map(|s| s.metric())
                .flat_map(|m| m.dimensions())
                .filter(|d| d.name() == Some("TunnelIpAddress"))
                .filter_map(|d| d.value())
                .collect();
            let stat = q[0].metric_stat().unwrap();
            let metric = stat.metric().unwrap();
            ips == [T1, T2]
                && q[0].id() == Some("t0")
                && metric.namespace() == Some("AWS/VPN")
                && metric.metric_name() == Some("TunnelState")
                && stat.stat() == Some("Minimum")
                && stat.period() == Some(60)
                && r.start_time().map(|t| t.secs()) == Some(NOW - 3600)
                && r.end_time().map(|t| t.secs()) == Some(NOW)
        })
        .then_output(move || {
            let series = |id: &str, down: bool| {
                MetricDataResult::builder()
                    .id(id)
                    .timestamps(SmithyTime::from_secs(NOW - 3000))
                    .values(1.0)
                    .timestamps(SmithyTime::from_secs(NOW - 2400))
                    .values(if down { 0.0 } else { 1.0 })
                    .timestamps(SmithyTime::from_secs(NOW - 60))
                    .values(if down { 0.0 } else { 1.0 })
                    .build()
            };
            GetMetricDataOutput::builder()
                .metric_data_results(series("t0", down_ip.is_none() || down_ip == Some(T1)))
                .metric_data_results(series("t1", down_ip.is_none() || down_ip == Some(T2)))
                .build()
        })
}

fn row(ip: &str, minutes_ago: i64, details: &str) -> Vec<ResultField> {
    let message = json!({
        "event_timestamp": NOW - minutes_ago * 60,
        "details": details,
        "dpd_enabled": true,
        "nat_t_detected": false,
        "ike_phase1_state": "down",
        "ike_phase2_state": "down",
        "tunnel_ip": ip,
    });
    vec![
        ResultField::builder()
            .field("@timestamp")
            .value("2026-11-25 09:50:00.000")
            .build(),
        ResultField::builder()
            .field("@logStream")
            .value(format!("{VPN}-{ip}"))
            .build(),
        ResultField::builder()
            .field("@message")
            .value(message.to_string())
            .build(),
        ResultField::builder()
            .field("@ptr")
            .value("CmAKJgoiMTIzNDU2Nzg5MDEyOi92cG4vdHVubmVsLWxvZ3MQ")
            .build(),
    ]
}

const PSK: &str = "AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key";

fn auth_failure_rows() -> Vec<Vec<ResultField>> {
    vec![
        row(T1, 2, PSK),
        row(T1, 20, PSK),
        row(T2, 3, PSK),
        row(T2, 30, PSK),
    ]
}

fn start_query() -> Rule {
    mock!(aws_sdk_cloudwatchlogs::Client::start_query)
        .match_requests(|r| {
            let q = r.query_string().unwrap_or_default();
            r.log_group_names() == ["/vpn/tunnel-logs"]
                && r.start_time() == Some(NOW - 3600)
                && r.end_time() == Some(NOW)
                && r.limit() == Some(1000)
                && q.contains(&format!("tunnel_ip in [\"{T1}\", \"{T2}\"]"))
                && q.contains(&format!("@logStream like \"{VPN}\""))
                && q.contains("sort @timestamp desc")
        })
        .then_output(|| StartQueryOutput::builder().query_id("q-0123").build())
}

fn query_results_complete() -> Rule {
    mock!(aws_sdk_cloudwatchlogs::Client::get_query_results)
        .match_requests(|r| r.query_id() == Some("q-0123"))
        .sequence()
        .output(|| {
            GetQueryResultsOutput::builder()
                .status(QueryStatus::Running)
                .build()
        })
        .output(|| {
            GetQueryResultsOutput::builder()
                .status(QueryStatus::Complete)
                .set_results(Some(auth_failure_rows()))
                .build()
        })
        .build()
}

fn stop_query() -> Rule {
    mock!(aws_sdk_cloudwatchlogs::Client::stop_query)
        .match_requests(|r| r.query_id() == Some("q-0123"))
        .then_output(|| StopQueryOutput::builder().success(true).build())
}

/// Topic, message JSON, message attributes.
type Message = (String, Value, Vec<(String, String)>);
type Published = Arc<Mutex<Vec<Message>>>;

fn publish(log: Published) -> Rule {
    mock!(aws_sdk_sns::Client::publish)
        .match_requests(move |r| {
            let message: Value =
                serde_json::from_str(r.message().unwrap_or_default()).unwrap_or(Value::Null);
            let mut attrs: Vec<(String, String)> = r
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_string()))
                .collect();
            attrs.sort();
            log.lock().unwrap().push((
                r.topic_arn().unwrap_or_default().to_string(),
                message,
                attrs,
            ));
            true
        })
        .then_output(|| PublishOutput::builder().message_id("msg-0001").build())
}

// ---------------------------------------------------------------- harness

struct World {
    ec2: Vec<Rule>,
    cloudwatch: Vec<Rule>,
    logs: Vec<Rule>,
    remediation: RemediationPolicy,
    backend_error: Option<BackendError>,
    /// Time left before the Lambda deadline.
    time_left: Duration,
    /// `Some`: `STATE_TABLE_NAME` is set and the table answers with these rules, in order.
    state: Option<Vec<Rule>>,
    /// Organization mode and the entry into member accounts.
    org: Option<shared::org::OrgPolicy>,
    members: Option<Box<dyn vpn_troubleshoot::member::MemberAccess>>,
}

struct Outcome {
    result: Result<RunbookOutput, vpn_troubleshoot::handler::HandlerError>,
    notes: Vec<(IncidentRef, Note)>,
    published: Vec<Message>,
    elapsed: Duration,
}

impl World {
    fn new(ec2: Vec<Rule>) -> World {
        World {
            ec2,
            cloudwatch: vec![],
            logs: vec![],
            remediation: RemediationPolicy {
                enabled: false,
                min_down_minutes: 15,
            },
            backend_error: None,
            time_left: Duration::from_secs(60),
            state: None,
            org: None,
            members: None,
        }
    }

    async fn run(mut self, event: Value) -> Outcome {
        let notes: Notes = Arc::default();
        let published: Published = Arc::default();
        let sns_rule = publish(published.clone());
        let deps = Deps {
            ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, self.ec2.iter()),
            cloudwatch: mock_client!(
                aws_sdk_cloudwatch,
                RuleMode::MatchAny,
                self.cloudwatch.iter()
            ),
            logs: mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, self.logs.iter()),
            sns: mock_client!(aws_sdk_sns, [&sns_rule]),
            backend: Box::new(RecordingBackend {
                notes: notes.clone(),
                fail_with: self.backend_error,
            }),
            state: self.state.as_ref().map(|rules| {
                let client = mock_client!(aws_sdk_dynamodb, rules.iter());
                Box::new(DynamoStateStore::new(client, TABLE)) as Box<dyn StateStore>
            }),
            clock: Box::new(FixedClock::at(diagnosed_at())),
            config: Config {
                topic_arn: TOPIC.into(),
                backend: BackendKind::OpsCenter,
                remediation: self.remediation,
                lookback_minutes: 60,
                state_table: self.state.as_ref().map(|_| TABLE.to_string()),
                org: self.org.clone(),
                member_roles: None,
            },
            poll: PollSchedule::fixed(Duration::from_millis(20)),
            members: self.members.take(),
        };
        let inv = Invocation {
            now: now(),
            deadline: Instant::now() + self.time_left,
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            owner: Owner::new("req-diagnosis", None),
        };
        let started = Instant::now();
        let result = handle(&deps, event, inv).await;
        let elapsed = started.elapsed();
        let notes = notes.lock().unwrap().clone();
        let published = published.lock().unwrap().clone();
        Outcome {
            result,
            notes,
            published,
            elapsed,
        }
    }
}

fn event() -> Value {
    json!({"VpnConnectionId": VPN, "OpsItemId": OPS_ITEM, "IncidentRecordArn": "", "LookbackMinutes": "60"})
}

fn codes(out: &RunbookOutput) -> Vec<String> {
    out.report
        .findings
        .iter()
        .map(|f| {
            serde_json::to_value(f.code)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

static BOTH_DOWN: [Tunnel; 2] = [
    Tunnel {
        ip: T1,
        up: false,
        logging: true,
    },
    Tunnel {
        ip: T2,
        up: false,
        logging: true,
    },
];
static TUNNEL2_DOWN_NO_LOGS: [Tunnel; 2] = [
    Tunnel {
        ip: T1,
        up: true,
        logging: false,
    },
    Tunnel {
        ip: T2,
        up: false,
        logging: false,
    },
];

fn full_ec2(tunnels: &'static [Tunnel]) -> Vec<Rule> {
    let [cgw, vgw] = describe_gateways();
    vec![describe_connection(tunnels), cgw, vgw, maintenance_status()]
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn both_down_with_auth_failures_is_reported_on_incident_topic_and_output() {
    let mut world = World::new(full_ec2(&BOTH_DOWN));
    world.cloudwatch = vec![metric_data(None)];
    let stop = stop_query();
    world.logs = vec![start_query(), query_results_complete(), stop.clone()];
    let out = world.run(event()).await;
    let output = out.result.expect("diagnosis runs");

    assert_eq!(codes(&output), ["both_tunnels_down", "phase1_auth_failure"]);
    assert_eq!(
        output.report.headline,
        "Both tunnels of vpn-0a1b2c3d4e5f67890 are DOWN: IKE phase 1 authentication failures (pre-shared key mismatch)"
    );
    assert_eq!(output.report.impact, Impact::CRITICAL);
    assert!(output.report.complete);
    assert_eq!(output.report.tunnels[0].log_records, 2);
    assert_eq!(stop.num_calls(), 0, "a finished query is not stopped");

    // On the incident: one note on the OpsItem.
    assert_eq!(out.notes.len(), 1);
    let (incident, note) = &out.notes[0];
    assert_eq!(incident, &IncidentRef::OpsCenter(OPS_ITEM.into()));
    assert!(note
        .title
        .starts_with("VPN diagnosis: Both tunnels of vpn-0a1b2c3d4e5f67890 are DOWN"));
    assert!(
        note.text
            .contains("Remediation not attempted: remediation is off"),
        "{}",
        note.text
    );
    assert_eq!(
        note.data["findings"],
        "both_tunnels_down,phase1_auth_failure"
    );
    assert_eq!(note.data["remediation"], "notAttempted");

    // On the topic: one Chatbot message in the incident's thread.
    assert_eq!(out.published.len(), 1);
    let (topic, message, attrs) = &out.published[0];
    assert_eq!(topic, TOPIC);
    assert_eq!(message["version"], "1.0");
    assert_eq!(message["source"], "custom");
    assert_eq!(
        message["metadata"]["threadId"],
        "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
    );
    assert_eq!(message["metadata"]["eventType"], "diagnosed");
    assert_eq!(
        message["metadata"]["additionalContext"]["incident"],
        OPS_ITEM
    );
    let n = shared::notification::Notification::from_chatbot(message)
        .unwrap()
        .unwrap();
    assert_eq!(n.findings.len(), 2);
    assert_eq!(n.vpn_id.as_deref(), Some(VPN));
    assert_eq!(
        attrs,
        &vec![
            ("event_type".to_string(), "diagnosed".to_string()),
            ("impact".to_string(), "1".to_string())
        ]
    );

    // The output says where the findings went.
    assert_eq!(
        output.delivery.incident,
        "recorded on OpsCenter oi-0123456789ab"
    );
    assert_eq!(
        output.delivery.notification,
        "published to the notification topic (message msg-0001)"
    );
    let json = serde_json::to_value(&output).unwrap();
    assert_eq!(json["report"]["findings"][1]["code"], "phase1_auth_failure");
    assert_eq!(json["report"]["logQuery"]["status"], "complete");
    assert_eq!(json["remediation"]["outcome"], "notAttempted");
    if std::env::var_os("PRINT_REPORT").is_some() {
        println!("{}", serde_json::to_string_pretty(&json).unwrap());
    }
}

#[tokio::test]
async fn logs_query_running_past_budget_is_stopped_and_report_is_partial() {
    let mut world = World::new(full_ec2(&BOTH_DOWN));
    world.cloudwatch = vec![metric_data(None)];
    let stop = stop_query();
    let running = mock!(aws_sdk_cloudwatchlogs::Client::get_query_results)
        .match_requests(|r| r.query_id() == Some("q-0123"))
        .sequence()
        .output(|| {
            GetQueryResultsOutput::builder()
                .status(QueryStatus::Scheduled)
                .build()
        })
        .output(|| {
            GetQueryResultsOutput::builder()
                .status(QueryStatus::Running)
                .set_results(Some(vec![row(T1, 2, PSK)]))
                .build()
        })
        .repeatedly()
        .build();
    world.logs = vec![start_query(), running.clone(), stop.clone()];
    // 300 ms for the query after the reporting reserve.
    world.time_left = REPORT_RESERVE + Duration::from_millis(300);
    let out = world.run(event()).await;
    let output = out.result.expect("a partial report, not an error");

    assert_eq!(
        stop.num_calls(),
        1,
        "the query is stopped when the budget runs out"
    );
    assert!(
        running.num_calls() >= 3,
        "polled until the budget ran out: {}",
        running.num_calls()
    );
    assert!(
        out.elapsed < Duration::from_secs(3),
        "no hang: {:?}",
        out.elapsed
    );
    assert!(!output.report.complete);
    let json = serde_json::to_value(&output.report).unwrap();
    assert_eq!(json["logQuery"]["status"], "partial");
    assert!(json["logQuery"]["reason"]
        .as_str()
        .unwrap()
        .contains("stopped"));
    // The rows read so far still count.
    assert_eq!(
        codes(&output),
        [
            "both_tunnels_down",
            "phase1_auth_failure",
            "diagnosis_incomplete"
        ]
    );
    let incomplete = output.report.findings.last().unwrap();
    assert!(
        incomplete.evidence[0].contains("the findings use the 1 records read so far"),
        "{:?}",
        incomplete.evidence
    );
    assert!(out.notes[0].1.text.contains("Partial diagnosis"));
    assert_eq!(out.published.len(), 1);
    assert!(out.published[0].1["content"]["description"]
        .as_str()
        .unwrap()
        .contains("partial: some facts could not be gathered"));
}

#[tokio::test]
async fn unknown_vpn_id_is_a_clear_finding_on_the_incident_not_a_crash() {
    let not_found = mock!(aws_sdk_ec2::Client::describe_vpn_connections)
        .match_requests(|r| r.vpn_connection_ids() == [VPN])
        .then_error(|| {
            DescribeVpnConnectionsError::generic(
                ErrorMetadata::builder()
                    .code("InvalidVpnConnectionID.NotFound")
                    .message("The vpnConnection ID 'vpn-0a1b2c3d4e5f67890' does not exist")
                    .build(),
            )
        });
    // No other EC2, CloudWatch or Logs rule: any further call would panic the test.
    let out = World::new(vec![not_found]).run(event()).await;
    let output = out.result.expect("reported, not an error");
    assert_eq!(codes(&output), ["connection_not_found"]);
    assert_eq!(output.report.impact, Impact::MEDIUM);
    let (_, note) = &out.notes[0];
    assert_eq!(
        note.title,
        "VPN diagnosis: VPN connection vpn-0a1b2c3d4e5f67890 does not exist in this account and region"
    );
    assert!(
        note.text.contains("InvalidVpnConnectionID.NotFound"),
        "{}",
        note.text
    );
    assert!(note
        .text
        .contains("Check the VpnConnectionId given to the runbook"));
    assert_eq!(out.published.len(), 1);
    assert_eq!(
        output.remediation,
        vpn_troubleshoot::remediate::RemediationOutcome::NotAttempted {
            reason: "remediation is off (REMEDIATION_ENABLED is false)".into()
        }
    );
}

#[tokio::test]
async fn describe_throttled_is_reported_as_retryable() {
    let throttled = mock!(aws_sdk_ec2::Client::describe_vpn_connections).then_error(|| {
        DescribeVpnConnectionsError::generic(
            ErrorMetadata::builder()
                .code("RequestLimitExceeded")
                .message("Request limit exceeded.")
                .build(),
        )
    });
    let out = World::new(vec![throttled]).run(event()).await;
    let output = out.result.unwrap();
    assert_eq!(codes(&output), ["describe_failed"]);
    assert!(output.report.findings[0]
        .next_step
        .contains("run the diagnosis runbook again"));
}

#[tokio::test]
async fn invalid_input_is_refused_and_recorded_on_the_named_incident() {
    // No EC2 rule: the handler must not call AWS for a refused input.
    let out = World::new(vec![])
        .run(json!({"VpnConnectionId": "vpn-xyz", "OpsItemId": OPS_ITEM}))
        .await;
    let err = out.result.expect_err("refused");
    assert_eq!(err.lambda_error_type(), "NonRetryable.BadInput");
    let diag = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diag.error_type, "NonRetryable.BadInput");
    assert!(diag
        .error_message
        .contains("invalid VPN connection id \"vpn-xyz\""));
    assert_eq!(out.notes.len(), 1);
    assert_eq!(out.notes[0].1.title, "VPN diagnosis could not start");
    assert!(out.published.is_empty());
}

#[tokio::test]
async fn manual_run_without_incident_still_publishes_and_returns_the_report() {
    let mut world = World::new(full_ec2(&TUNNEL2_DOWN_NO_LOGS));
    world.cloudwatch = vec![metric_data(Some(T2))];
    // Logging off: no Logs Insights call at all (no rule in the Logs client).
    let out = world.run(json!({"VpnConnectionId": VPN})).await;
    let output = out.result.unwrap();
    assert_eq!(
        codes(&output),
        ["one_tunnel_down", "tunnel_logging_disabled"]
    );
    assert!(out.notes.is_empty());
    assert_eq!(
        output.delivery.incident,
        "skipped: the input names no IncidentRecordArn or OpsItemId"
    );
    assert_eq!(
        out.published[0].1["metadata"]["additionalContext"]["impact"],
        "3"
    );
    assert!(out.published[0].1["metadata"]["additionalContext"]
        .get("incident")
        .is_none());
}

#[tokio::test]
async fn backend_failure_is_stated_in_the_output_and_notification_still_goes_out() {
    let mut world = World::new(full_ec2(&TUNNEL2_DOWN_NO_LOGS));
    world.cloudwatch = vec![metric_data(Some(T2))];
    world.backend_error = Some(BackendError::Aws(AwsError {
        service: "ssm",
        operation: "UpdateOpsItem",
        failure: AwsFailure::Throttled,
        code: Some("ThrottlingException".into()),
        message: "Rate exceeded".into(),
    }));
    let out = world.run(event()).await;
    let output = out.result.unwrap();
    assert_eq!(
        output.delivery.incident,
        "failed (Retryable.Throttled): ssm UpdateOpsItem failed (ThrottlingException): Rate exceeded"
    );
    assert_eq!(out.published.len(), 1);
}

#[tokio::test]
async fn remediation_off_never_calls_an_ec2_write() {
    let replaced: Replacements = Arc::default();
    let replace = replace_tunnel(replaced.clone(), "DryRunOperation");
    let mut ec2 = full_ec2(&TUNNEL2_DOWN_NO_LOGS);
    ec2.push(replace.clone());
    let mut world = World::new(ec2);
    world.cloudwatch = vec![metric_data(Some(T2))];
    let out = world.run(event()).await.result.unwrap();
    assert_eq!(replace.num_calls(), 0);
    assert!(replaced.lock().unwrap().is_empty());
    assert!(matches!(
        out.remediation,
        vpn_troubleshoot::remediate::RemediationOutcome::NotAttempted { .. }
    ));
}

#[tokio::test]
async fn remediation_on_with_both_tunnels_down_never_calls_an_ec2_write() {
    let replaced: Replacements = Arc::default();
    let replace = replace_tunnel(replaced.clone(), "DryRunOperation");
    let mut ec2 = full_ec2(&BOTH_DOWN);
    ec2.push(replace.clone());
    let mut world = World::new(ec2);
    world.cloudwatch = vec![metric_data(None)];
    world.logs = vec![start_query(), query_results_complete()];
    world.remediation.enabled = true;
    let out = world.run(event()).await.result.unwrap();
    assert_eq!(replace.num_calls(), 0);
    let json = serde_json::to_value(&out.remediation).unwrap();
    assert_eq!(json["outcome"], "notAttempted");
    assert!(json["reason"]
        .as_str()
        .unwrap()
        .contains("found 2 DOWN, 0 UP"));
}

#[tokio::test]
async fn remediation_on_dry_runs_then_replaces_only_the_down_tunnel() {
    let replaced: Replacements = Arc::default();
    let replace = replace_tunnel(replaced.clone(), "DryRunOperation");
    let mut ec2 = full_ec2(&TUNNEL2_DOWN_NO_LOGS);
    ec2.push(replace.clone());
    let mut world = World::new(ec2);
    world.cloudwatch = vec![metric_data(Some(T2))];
    world.remediation.enabled = true;
    let out = world.run(event()).await;
    let output = out.result.unwrap();
    assert_eq!(
        *replaced.lock().unwrap(),
        vec![(Some(true), T2.to_string()), (Some(false), T2.to_string())],
        "dry run first, then the real call, tunnel 2 only"
    );
    assert_eq!(
        output.remediation,
        vpn_troubleshoot::remediate::RemediationOutcome::Replaced {
            tunnel_ip: T2.into(),
            // Telemetry says 43 min, the metric's zeros start 40 min ago: the later wins.
            down_minutes: 40
        }
    );
    let (_, note) = &out.notes[0];
    assert!(
        note.text
            .contains("Remediation: replaced the AWS endpoint of tunnel 203.0.113.20"),
        "{}",
        note.text
    );
    assert_eq!(note.data["remediation"], "replaced");
    let summary = out.published[0].1["metadata"]["additionalContext"]["pipeline"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.contains("replaced the AWS endpoint of tunnel 203.0.113.20"));
}

#[tokio::test]
async fn remediation_dry_run_refused_makes_no_real_call() {
    let replaced: Replacements = Arc::default();
    let replace = replace_tunnel(replaced.clone(), "UnauthorizedOperation");
    let mut ec2 = full_ec2(&TUNNEL2_DOWN_NO_LOGS);
    ec2.push(replace.clone());
    let mut world = World::new(ec2);
    world.cloudwatch = vec![metric_data(Some(T2))];
    world.remediation.enabled = true;
    let out = world.run(event()).await;
    let output = out.result.unwrap();
    assert_eq!(
        *replaced.lock().unwrap(),
        vec![(Some(true), T2.to_string())]
    );
    let json = serde_json::to_value(&output.remediation).unwrap();
    assert_eq!(json["outcome"], "dryRunRefused");
    assert!(json["error"]
        .as_str()
        .unwrap()
        .contains("UnauthorizedOperation"));
    assert!(out.notes[0]
        .1
        .text
        .contains("dry run for tunnel 203.0.113.20"));
}

#[tokio::test]
async fn remediation_waits_for_the_configured_minutes() {
    let replaced: Replacements = Arc::default();
    let replace = replace_tunnel(replaced.clone(), "DryRunOperation");
    let mut ec2 = full_ec2(&TUNNEL2_DOWN_NO_LOGS);
    ec2.push(replace.clone());
    let mut world = World::new(ec2);
    world.cloudwatch = vec![metric_data(Some(T2))];
    world.remediation = RemediationPolicy {
        enabled: true,
        min_down_minutes: 60,
    };
    let out = world.run(event()).await.result.unwrap();
    assert_eq!(replace.num_calls(), 0);
    let json = serde_json::to_value(&out.remediation).unwrap();
    assert!(json["reason"]
        .as_str()
        .unwrap()
        .contains("has been down 40 min, less than REMEDIATION_MIN_DOWN_MINUTES (60)"));
}

// ---------------------------------------------------------------- state table

/// The open incident alarm-to-incident keeps under `key`, 5 minutes old, nothing pending.
fn incident_record(key: &str) -> IncidentRecord {
    let opened = now() - chrono::Duration::minutes(5);
    IncidentRecord {
        key: key.into(),
        status: IncidentStatus::Open,
        incident: Some(IncidentRef::OpsCenter(OPS_ITEM.into())),
        title: key.into(),
        summary: "Tunnel 2 is down.".into(),
        impact: Impact::MEDIUM,
        opened_at: opened,
        resolved_at: None,
        alarms: Default::default(),
        runbook_execution: Some("exec-1".into()),
        timeline: vec![TimelineEntry {
            at: opened,
            text: "Incident opened".into(),
            actor: None,
        }],
        account: "123456789012".into(),
        region: "eu-west-1".into(),
        roles: Roles {
            reporter: Some(Actor::Alarm {
                name: "vpn-tunnel-down".into(),
            }),
            owner: None,
            team: None,
        },
        milestones: Milestones {
            notified_at: Some(opened + chrono::Duration::seconds(2)),
            acknowledged_at: None,
            diagnosed_at: None,
        },
        findings: vec![],
        runbook: None,
        escalation: None,
        peak_impact: None,
        account_info: None,
    }
}

type Item = std::collections::HashMap<String, AttributeValue>;

/// The item as alarm-to-incident stores it (`shared::state`): version and record JSON.
fn stored(record: &IncidentRecord, version: u64) -> Item {
    Item::from([
        (
            "pk".into(),
            AttributeValue::S(format!("incident#{}", record.key)),
        ),
        ("version".into(), AttributeValue::N(version.to_string())),
        ("status".into(), AttributeValue::S("open".into())),
        (
            "record".into(),
            AttributeValue::S(serde_json::to_string(record).unwrap()),
        ),
    ])
}

/// A consistent GetItem of `key`'s item answered with `item`.
fn get_item(key: &'static str, item: Option<Item>) -> Rule {
    mock!(aws_sdk_dynamodb::Client::get_item)
        .match_requests(move |r| {
            assert_eq!(r.table_name(), Some(TABLE));
            assert_eq!(
                r.key().unwrap()["pk"].as_s().unwrap(),
                &format!("incident#{key}")
            );
            assert_eq!(r.consistent_read(), Some(true));
            true
        })
        .then_output(move || GetItemOutput::builder().set_item(item.clone()).build())
}

/// Condition expression, `:v`, the item written.
type Puts = Arc<Mutex<Vec<(Option<String>, Option<String>, Item)>>>;

fn put_item(log: Puts, conflict: bool) -> Rule {
    let rule = mock!(aws_sdk_dynamodb::Client::put_item).match_requests(move |r| {
        assert_eq!(r.table_name(), Some(TABLE));
        log.lock().unwrap().push((
            r.condition_expression().map(str::to_string),
            r.expression_attribute_values()
                .and_then(|v| v.get(":v"))
                .and_then(|v| v.as_n().ok().cloned()),
            r.item().cloned().unwrap_or_default(),
        ));
        true
    });
    if conflict {
        rule.then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("The conditional request failed")
                    .build(),
            )
        })
    } else {
        rule.then_output(|| PutItemOutput::builder().build())
    }
}

/// A conditional put refused by `current` (returned, as DynamoDB does with ALL_OLD).
fn put_refused_by(log: Puts, current: Item) -> Rule {
    mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(move |r| {
            log.lock().unwrap().push((
                r.condition_expression().map(str::to_string),
                r.expression_attribute_values()
                    .and_then(|v| v.get(":v"))
                    .and_then(|v| v.as_n().ok().cloned()),
                r.item().cloned().unwrap_or_default(),
            ));
            true
        })
        .then_error(move || {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("The conditional request failed")
                    .set_item(Some(current.clone()))
                    .build(),
            )
        })
}

fn written_record(item: &Item) -> IncidentRecord {
    serde_json::from_str(item["record"].as_s().unwrap()).unwrap()
}

fn tunnel2_down_world() -> World {
    let mut world = World::new(full_ec2(&TUNNEL2_DOWN_NO_LOGS));
    world.cloudwatch = vec![metric_data(Some(T2))];
    world
}

#[tokio::test]
async fn diagnosis_is_recorded_on_the_incident_state_item_with_a_conditional_write() {
    let puts: Puts = Arc::default();
    let mut world = tunnel2_down_world();
    world.state = Some(vec![
        get_item(KEY, Some(stored(&incident_record(KEY), 3))),
        put_item(puts.clone(), false),
    ]);
    let out = world.run(event()).await;
    let output = out.result.unwrap();

    let puts = puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1, "one write: the record with the diagnosis");
    let (condition, expected, item) = &puts[0];
    assert_eq!(condition.as_deref(), Some("version = :v"));
    assert_eq!(expected.as_deref(), Some("3"));
    assert_eq!(item["pk"].as_s().unwrap(), &format!("incident#{KEY}"));
    assert_eq!(item["version"].as_n().unwrap(), "4");
    assert!(!item.contains_key("pending"), "no effects to run");
    let record = written_record(item);
    assert_eq!(record.milestones.diagnosed_at, Some(diagnosed_at()));
    assert_eq!(
        record.milestones.notified_at,
        incident_record(KEY).milestones.notified_at,
        "the rest of the record is kept"
    );
    assert_eq!(record.findings.len(), 2);
    let published = shared::notification::Notification::from_chatbot(&out.published[0].1)
        .unwrap()
        .unwrap();
    assert_eq!(
        record.findings, published.findings,
        "the findings of the notification"
    );
    assert_eq!(record.findings[0].severity, "warning");
    let last = record.timeline.last().unwrap();
    assert_eq!(last.at, diagnosed_at());
    assert!(
        last.text.starts_with("Diagnosis reported 2 finding(s): "),
        "{}",
        last.text
    );
    assert_eq!(record.timeline.len(), 2);

    // The note and the notification still went out, and the output says it all.
    assert_eq!(out.notes.len(), 1);
    assert_eq!(out.published.len(), 1);
    let json = serde_json::to_value(&output).unwrap();
    assert_eq!(
        json["delivery"]["stateTable"],
        json!({"recorded": true, "detail": "recorded on the incident's state item (diagnosed at 2026-11-25T10:02:00Z)"})
    );
}

#[tokio::test]
async fn a_concurrent_change_is_read_again_and_the_diagnosis_still_recorded() {
    let puts: Puts = Arc::default();
    let mut world = tunnel2_down_world();
    let mut acked = incident_record(KEY);
    acked.milestones.acknowledged_at = Some(now());
    world.state = Some(vec![
        get_item(KEY, Some(stored(&incident_record(KEY), 3))),
        // Refused, with the item that refused it (not this invocation's write) ...
        put_refused_by(puts.clone(), stored(&acked, 4)),
        // ... so it reads again and decides again.
        get_item(KEY, Some(stored(&acked, 4))),
        put_item(puts.clone(), false),
    ]);
    let output = world.run(event()).await.result.unwrap();
    let puts = puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[0].1.as_deref(), Some("3"));
    assert_eq!(puts[1].1.as_deref(), Some("4"));
    let record = written_record(&puts[1].2);
    assert_eq!(
        record.milestones.acknowledged_at,
        Some(now()),
        "decided again on the record read after the conflict"
    );
    assert_eq!(record.milestones.diagnosed_at, Some(diagnosed_at()));
    assert_eq!(output.delivery.state_table.map(|d| d.recorded), Some(true));
}

#[tokio::test]
async fn manual_run_without_an_incident_item_records_nothing_and_succeeds() {
    let puts: Puts = Arc::default();
    let mut world = tunnel2_down_world();
    // The caller's key is used, not the built-in one; no item under it; no write.
    world.state = Some(vec![
        get_item("Tunnels of site B", None),
        put_item(puts.clone(), false),
    ]);
    let out = world
        .run(json!({"VpnConnectionId": VPN, "IncidentKey": "Tunnels of site B"}))
        .await;
    let output = out.result.expect("not an error");
    assert!(puts.lock().unwrap().is_empty(), "no item is created");
    assert_eq!(output.incident_key, "Tunnels of site B");
    assert_eq!(
        output.delivery.state_table,
        Some(vpn_troubleshoot::handler::StateDelivery {
            recorded: false,
            detail: "skipped: no incident under this key in the state table".into()
        })
    );
    assert_eq!(out.published.len(), 1, "the report still goes out");
}

#[tokio::test]
async fn state_table_failure_is_stated_in_the_output_and_never_fails_the_run() {
    let mut world = tunnel2_down_world();
    let throttled = mock!(aws_sdk_dynamodb::Client::get_item).then_error(|| {
        GetItemError::generic(
            aws_sdk_dynamodb::error::ErrorMetadata::builder()
                .code("ProvisionedThroughputExceededException")
                .message("Throughput exceeds the current capacity")
                .build(),
        )
    });
    world.state = Some(vec![throttled]);
    let out = world.run(event()).await;
    let output = out.result.expect("the report is the product: not an error");
    let state = output.delivery.state_table.expect("stated");
    assert!(!state.recorded);
    assert_eq!(
        state.detail,
        "failed (Retryable.Throttled): dynamodb GetItem failed (ProvisionedThroughputExceededException): Throughput exceeds the current capacity"
    );
    assert_eq!(out.notes.len(), 1);
    assert_eq!(out.published.len(), 1);
    assert_eq!(
        output.delivery.incident,
        "recorded on OpsCenter oi-0123456789ab"
    );
}

#[tokio::test]
async fn without_state_table_the_output_has_no_state_delivery() {
    let output = tunnel2_down_world().run(event()).await.result.unwrap();
    assert_eq!(output.delivery.state_table, None);
    let json = serde_json::to_value(&output).unwrap();
    assert!(json["delivery"].get("stateTable").is_none(), "{json}");
}

/// Steps alarm-to-incident left pending on the item (its lease expired a minute ago).
fn pending_steps() -> Vec<Effect> {
    vec![
        Effect::ScheduleEscalation {
            attempt: 1,
            at: now() + chrono::Duration::minutes(10),
        },
        Effect::AddNote {
            note: Note {
                title: "Impact raised".into(),
                text: "Tunnel 1 is down too.".into(),
                at: now(),
                data: Default::default(),
            },
        },
    ]
}

fn with_pending(mut item: Item, lease_until: DateTime<Utc>) -> Item {
    item.insert(
        "pending".into(),
        AttributeValue::S(serde_json::to_string(&pending_steps()).unwrap()),
    );
    item.insert(
        "lease_until_ms".into(),
        AttributeValue::N(lease_until.timestamp_millis().to_string()),
    );
    item
}

#[tokio::test]
async fn pending_steps_are_left_untouched_and_the_diagnosis_recorded() {
    let puts: Puts = Arc::default();
    let mut world = tunnel2_down_world();
    let expired = diagnosed_at() - chrono::Duration::minutes(1);
    world.state = Some(vec![
        get_item(
            KEY,
            Some(with_pending(stored(&incident_record(KEY), 3), expired)),
        ),
        put_item(puts.clone(), false),
    ]);
    let out = world.run(event()).await;
    let output = out.result.expect("not an error");

    let puts = puts.lock().unwrap().clone();
    assert_eq!(
        puts.len(),
        1,
        "one write: the record, nothing claimed or run"
    );
    let (condition, expected, item) = &puts[0];
    assert_eq!(condition.as_deref(), Some("version = :v"));
    assert_eq!(expected.as_deref(), Some("3"));
    assert_eq!(item["version"].as_n().unwrap(), "4");
    let pending: Vec<Effect> = serde_json::from_str(item["pending"].as_s().unwrap()).unwrap();
    assert_eq!(pending, pending_steps(), "the steps stay for their owner");
    assert_eq!(
        item["lease_until_ms"].as_n().unwrap(),
        &expired.timestamp_millis().to_string(),
        "the lease as read"
    );
    let record = written_record(item);
    assert_eq!(record.milestones.diagnosed_at, Some(diagnosed_at()));
    assert_eq!(record.escalation, None, "no escalation scheduled here");
    assert_eq!(record.findings.len(), 2);
    // Only the diagnosis note and notification: the pending note is not added here.
    assert_eq!(out.notes.len(), 1);
    assert_eq!(out.notes[0].1.title, output.report.to_note().title);
    assert_eq!(out.published.len(), 1);
    assert_eq!(
        output.delivery.state_table,
        Some(vpn_troubleshoot::handler::StateDelivery {
            recorded: true,
            detail: "recorded on the incident's state item (diagnosed at 2026-11-25T10:02:00Z)"
                .into()
        })
    );
}

#[tokio::test]
async fn a_held_lease_is_waited_for_and_never_written_under() {
    let puts: Puts = Arc::default();
    let mut world = tunnel2_down_world();
    let held = diagnosed_at() + chrono::Duration::seconds(60);
    let mut finished = incident_record(KEY);
    finished.runbook_execution = Some("exec-2".into());
    world.state = Some(vec![
        get_item(
            KEY,
            Some(with_pending(stored(&incident_record(KEY), 3), held)),
        ),
        // The lease holder finished its steps meanwhile (two saves).
        get_item(KEY, Some(stored(&finished, 5))),
        put_item(puts.clone(), false),
    ]);
    let output = world.run(event()).await.result.expect("not an error");
    let puts = puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1, "no write while the lease was held");
    assert_eq!(puts[0].1.as_deref(), Some("5"));
    let item = &puts[0].2;
    assert_eq!(item["version"].as_n().unwrap(), "6");
    assert!(!item.contains_key("pending") && !item.contains_key("lease_until_ms"));
    let record = written_record(item);
    assert_eq!(record.runbook_execution.as_deref(), Some("exec-2"));
    assert_eq!(record.milestones.diagnosed_at, Some(diagnosed_at()));
    assert_eq!(output.delivery.state_table.map(|d| d.recorded), Some(true));
}

// ---------------------------------------------------------------- member accounts (organization mode)

const MEMBER: &str = "111122223333";

/// Member access that hands out mocked clients, or a failure; records who asked.
struct FakeMembers {
    ec2: Vec<Rule>,
    cloudwatch: Vec<Rule>,
    logs: Vec<Rule>,
    failure: Option<shared::vpn::MemberAccessFailure>,
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

#[async_trait]
impl vpn_troubleshoot::member::MemberAccess for FakeMembers {
    async fn readers(
        &self,
        account: &str,
        region: &str,
    ) -> Result<vpn_troubleshoot::member::MemberClients, shared::vpn::MemberAccessFailure> {
        self.calls
            .lock()
            .unwrap()
            .push((account.to_string(), region.to_string()));
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        Ok(vpn_troubleshoot::member::MemberClients {
            ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, self.ec2.iter()),
            cloudwatch: mock_client!(
                aws_sdk_cloudwatch,
                RuleMode::MatchAny,
                self.cloudwatch.iter()
            ),
            logs: mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, self.logs.iter()),
        })
    }

    async fn remediator(
        &self,
        account: &str,
        region: &str,
    ) -> Result<aws_sdk_ec2::Client, shared::vpn::MemberAccessFailure> {
        Err(shared::vpn::MemberAccessFailure {
            account: account.into(),
            region: region.into(),
            role_arn: String::new(),
            code: "NotConfigured".into(),
            message: "no remediation role".into(),
            retryable: false,
        })
    }
}

fn org_policy() -> shared::org::OrgPolicy {
    shared::org::OrgPolicy::from_env(&shared::config::Env::from_pairs([
        ("ORGANIZATION_ID", "o-a1b2c3d4e5"),
        ("HOME_ACCOUNT_ID", "123456789012"),
        (
            "ACCOUNT_DIRECTORY",
            r#"{"accounts": {"111122223333": {"name": "payments-prod", "ou": "payments"}}, "ous": {"payments": {"tags": {"team": "payments"}}}}"#,
        ),
    ]))
    .unwrap()
    .unwrap()
}

fn member_event() -> Value {
    json!({"VpnConnectionId": VPN, "OpsItemId": OPS_ITEM, "AccountId": MEMBER, "Region": "eu-central-1", "LookbackMinutes": "60"})
}

#[tokio::test]
async fn member_vpn_is_diagnosed_through_the_member_clients_and_reported_as_the_members() {
    // The function's own clients answer nothing: every call must go to the member's.
    let mut world = World::new(vec![]);
    world.org = Some(org_policy());
    let calls = Arc::new(Mutex::new(vec![]));
    world.members = Some(Box::new(FakeMembers {
        ec2: full_ec2(&TUNNEL2_DOWN_NO_LOGS),
        cloudwatch: vec![metric_data(Some(T2))],
        logs: vec![],
        failure: None,
        calls: calls.clone(),
    }));
    let out = world.run(member_event()).await;
    let output = out.result.expect("diagnosis runs");
    assert_eq!(
        *calls.lock().unwrap(),
        [(MEMBER.to_string(), "eu-central-1".to_string())]
    );
    assert!(
        codes(&output).contains(&"one_tunnel_down".to_string()),
        "{:?}",
        codes(&output)
    );
    // The member's incident key, account and name travel with the diagnosis.
    assert_eq!(output.incident_key, format!("{MEMBER}/{KEY}"));
    let (_, message, _) = &out.published[0];
    assert_eq!(message["metadata"]["threadId"], format!("{MEMBER}/{KEY}"));
    let n = shared::notification::Notification::from_chatbot(message)
        .unwrap()
        .unwrap();
    assert_eq!(
        (n.account.as_str(), n.region.as_str()),
        (MEMBER, "eu-central-1")
    );
    let info = n.account_info.unwrap();
    assert_eq!(info.label(), "111122223333 (payments-prod)");
    assert_eq!(info.tags["team"], "payments");
    assert_eq!(out.notes.len(), 1);
}

#[tokio::test]
async fn a_refusing_member_role_is_a_finding_on_the_incident_never_a_crash() {
    let mut world = World::new(vec![]);
    world.org = Some(org_policy());
    world.members = Some(Box::new(FakeMembers {
        ec2: vec![],
        cloudwatch: vec![],
        logs: vec![],
        failure: Some(shared::vpn::MemberAccessFailure {
            account: MEMBER.into(),
            region: "eu-central-1".into(),
            role_arn: format!("arn:aws:iam::{MEMBER}:role/incident-pipeline-diagnosis"),
            code: "AccessDenied".into(),
            message: "not authorized to perform: sts:AssumeRole".into(),
            retryable: false,
        }),
        calls: Arc::default(),
    }));
    let out = world.run(member_event()).await;
    let output = out
        .result
        .expect("a refused role is a report, not an error");
    assert_eq!(codes(&output), ["member_access_failed"]);
    let headline = "cannot assume arn:aws:iam::111122223333:role/incident-pipeline-diagnosis in 111122223333: AccessDenied";
    assert!(
        output.report.headline.ends_with(headline),
        "{}",
        output.report.headline
    );
    let (incident, note) = &out.notes[0];
    assert_eq!(incident, &IncidentRef::OpsCenter(OPS_ITEM.into()));
    assert!(
        note.text.contains(headline) || note.title.contains("cannot assume"),
        "{note:?}"
    );
    assert_eq!(out.published.len(), 1, "the thread hears it too");
    let json = serde_json::to_value(&output).unwrap();
    assert_eq!(json["remediation"]["outcome"], "notAttempted");
}

#[tokio::test]
async fn member_vpn_without_organization_mode_says_so_and_never_reads_the_home_account() {
    let world = World::new(vec![]);
    let out = world.run(member_event()).await;
    let output = out.result.unwrap();
    assert_eq!(codes(&output), ["member_access_failed"]);
    assert!(output.report.findings[0]
        .title
        .starts_with("Cannot diagnose in 111122223333: NotConfigured"));
}

#[tokio::test]
async fn an_account_outside_the_allow_list_is_refused_and_recorded_on_the_incident() {
    let mut world = World::new(vec![]);
    let mut org = org_policy();
    org.allowed = Some(["444455556666".to_string()].into());
    world.org = Some(org);
    let out = world.run(member_event()).await;
    let e = out.result.unwrap_err();
    assert_eq!(
        e.to_string(),
        "AccountId 111122223333 is not a member account this stack may diagnose (ALLOWED_ACCOUNTS)"
    );
    assert_eq!(out.notes.len(), 1, "the refusal is on the incident");
}

#[tokio::test]
async fn input_naming_another_accounts_incident_is_refused() {
    let mut world = World::new(vec![]);
    world.org = Some(org_policy());
    let mut event = member_event();
    event["IncidentKey"] = json!(format!("444455556666/{KEY}"));
    let out = world.run(event).await;
    let e = out.result.unwrap_err();
    assert!(
        e.to_string()
            .contains("belongs to account 444455556666, but AccountId is 111122223333"),
        "{e}"
    );
    assert!(out.published.is_empty());
}
