//! The describes against a real wire protocol: moto_server (started and stopped by
//! the test on a free port) serves EC2 VPN create/describe (without VgwTelemetry or
//! tunnel options) and SNS. CloudWatch (rpcv2Cbor) and the tunnel replacement status
//! are not served by moto; they are covered by the mock tests. Skipped, with a
//! message, when `moto_server` is not installed.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{GatewayType, VpnConnectionOptionsSpecification};
use chrono::Utc;
use serde_json::json;
use shared::backend::BackendKind;
use shared::incident::{
    BackendError, Impact, IncidentBackend, IncidentRef, NewIncident, Note, RunbookRequest,
};
use shared::mock_client;
use shared::state::Owner;
use shared::testing::aws_smithy_mocks::{Rule, RuleMode};
use shared::vpn::{ConnectionLookup, ConnectionState, GatewayKind, LogStatus, VpnConnectionId};
use tokio::time::Instant;
use vpn_troubleshoot::config::Config;
use vpn_troubleshoot::gather::{gather, Readers};
use vpn_troubleshoot::handler::{handle, Deps, Invocation};
use vpn_troubleshoot::logs_query::{PollSchedule, QueryBudget};

struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    fn start() -> Option<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIPPED: moto_server not available ({e}); install it with `pip install 'moto[server]'`");
                return None;
            }
        };
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not listen on port {port} within 20 s");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ec2_client(url: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .endpoint_url(url)
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

fn sns_client(url: &str) -> aws_sdk_sns::Client {
    let conf = aws_sdk_sns::Config::builder()
        .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
        .region(aws_sdk_sns::config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_sns::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .endpoint_url(url)
        .build();
    aws_sdk_sns::Client::from_conf(conf)
}

struct Recorder(Arc<Mutex<Vec<(IncidentRef, Note)>>>);

#[async_trait]
impl IncidentBackend for Recorder {
    fn name(&self) -> &'static str {
        "OpsCenter"
    }
    async fn find_open(&self, _: &str) -> Result<Option<IncidentRef>, BackendError> {
        unreachable!("not used by vpn-troubleshoot")
    }
    async fn open(&self, _: &NewIncident) -> Result<IncidentRef, BackendError> {
        unreachable!("not used by vpn-troubleshoot")
    }
    async fn set_impact(&self, _: &IncidentRef, _: Impact, _: &Note) -> Result<(), BackendError> {
        unreachable!("not used by vpn-troubleshoot")
    }
    async fn add_note(&self, incident: &IncidentRef, note: &Note) -> Result<(), BackendError> {
        self.0
            .lock()
            .unwrap()
            .push((incident.clone(), note.clone()));
        Ok(())
    }
    async fn resolve(&self, _: &IncidentRef, _: &Note) -> Result<(), BackendError> {
        unreachable!("not used by vpn-troubleshoot")
    }
    async fn start_runbook(
        &self,
        _: &IncidentRef,
        _: &RunbookRequest,
    ) -> Result<Option<String>, BackendError> {
        unreachable!("not used by vpn-troubleshoot")
    }
}

#[tokio::test]
async fn describes_against_moto_server() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = ec2_client(&moto.url);

    // The VPN of the test, created through the same wire protocol.
    let cgw = ec2
        .create_customer_gateway()
        .r#type(GatewayType::Ipsec1)
        .public_ip("198.51.100.7")
        .bgp_asn(65000)
        .send()
        .await
        .unwrap();
    let cgw_id = cgw
        .customer_gateway()
        .unwrap()
        .customer_gateway_id()
        .unwrap()
        .to_string();
    let vgw = ec2
        .create_vpn_gateway()
        .r#type(GatewayType::Ipsec1)
        .send()
        .await
        .unwrap();
    let vgw_id = vgw
        .vpn_gateway()
        .unwrap()
        .vpn_gateway_id()
        .unwrap()
        .to_string();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    ec2.attach_vpn_gateway()
        .vpc_id(&vpc_id)
        .vpn_gateway_id(&vgw_id)
        .send()
        .await
        .unwrap();
    let vpn = ec2
        .create_vpn_connection()
        .r#type("ipsec.1")
        .customer_gateway_id(&cgw_id)
        .vpn_gateway_id(&vgw_id)
        .options(
            VpnConnectionOptionsSpecification::builder()
                .static_routes_only(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let vpn_id =
        VpnConnectionId::parse(vpn.vpn_connection().unwrap().vpn_connection_id().unwrap()).unwrap();

    // Never called for a connection without tunnels: any call would panic.
    let cloudwatch = mock_client!(
        aws_sdk_cloudwatch,
        RuleMode::MatchAny,
        Vec::<Rule>::new().iter()
    );
    let logs = mock_client!(
        aws_sdk_cloudwatchlogs,
        RuleMode::MatchAny,
        Vec::<Rule>::new().iter()
    );
    let readers = Readers {
        ec2: &ec2,
        cloudwatch: &cloudwatch,
        logs: &logs,
    };
    let budget = QueryBudget {
        poll: PollSchedule::fixed(Duration::from_millis(50)),
        deadline: Instant::now() + Duration::from_secs(10),
    };
    let facts = gather(readers, &vpn_id, 60, Utc::now(), budget).await;
    let ConnectionLookup::Found(c) = &facts.connection else {
        panic!("not found: {:?}", facts.connection)
    };
    assert_eq!(c.state, ConnectionState::Available);
    assert_eq!(c.customer_gateway_id.as_deref(), Some(cgw_id.as_str()));
    assert_eq!(c.vpn_gateway_id.as_deref(), Some(vgw_id.as_str()));
    let g = facts.customer_gateway.as_ref().unwrap();
    assert_eq!(
        (g.kind, g.state.as_deref()),
        (GatewayKind::CustomerGateway, Some("available"))
    );
    assert_eq!(g.ip_address.as_deref(), Some("198.51.100.7"));
    assert_eq!(g.bgp_asn.as_deref(), Some("65000"));
    let a = facts.attachment.as_ref().unwrap();
    assert_eq!(a.kind, GatewayKind::VpnGateway);
    assert_eq!(
        a.vpc_attachments,
        vec![(vpc_id.clone(), "attached".to_string())]
    );
    assert_eq!(facts.logs.status, LogStatus::NotEnabled);
    assert!(facts.gaps.is_empty(), "{:?}", facts.gaps);
    // moto's answer carries the customer gateway configuration with pre-shared keys:
    // nothing of it reaches the facts.
    let text = serde_json::to_string(&facts).unwrap();
    assert!(!text.contains("pre_shared_key") && !text.contains("customer_gateway_configuration"));

    // The handler end to end over moto's EC2 and SNS: an unknown id is reported.
    let topic = sns_client(&moto.url)
        .create_topic()
        .name("incident-notifications")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let notes = Arc::new(Mutex::new(vec![]));
    let deps = Deps {
        ec2: ec2.clone(),
        cloudwatch,
        logs,
        sns: sns_client(&moto.url),
        backend: Box::new(Recorder(notes.clone())),
        state: None,
        clock: Box::new(shared::effects::SystemClock),
        config: Config {
            topic_arn: topic,
            backend: BackendKind::OpsCenter,
            remediation: shared::vpn::RemediationPolicy {
                enabled: false,
                min_down_minutes: 15,
            },
            lookback_minutes: 60,
            state_table: None,
            org: None,
            member_roles: None,
        },
        poll: PollSchedule::fixed(Duration::from_millis(50)),
        members: None,
    };
    let inv = || Invocation {
        now: Utc::now(),
        deadline: Instant::now() + Duration::from_secs(30),
        account: "123456789012".into(),
        region: "eu-west-1".into(),
        owner: Owner::new("req-moto", None),
    };
    let unknown = handle(
        &deps,
        json!({"VpnConnectionId": "vpn-0000000000000000f", "OpsItemId": "oi-0123456789ab"}),
        inv(),
    )
    .await
    .unwrap();
    let codes: Vec<_> = unknown.report.findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, [shared::vpn::FindingCode::ConnectionNotFound]);
    assert!(unknown.report.findings[0].evidence[0].contains("InvalidVpnConnectionID.NotFound"));
    assert!(
        unknown.delivery.notification.starts_with("published"),
        "{}",
        unknown.delivery.notification
    );
    assert_eq!(notes.lock().unwrap().len(), 1);

    let known = handle(
        &deps,
        json!({"VpnConnectionId": vpn_id.as_str(), "OpsItemId": "oi-0123456789ab"}),
        inv(),
    )
    .await
    .unwrap();
    let codes: Vec<_> = known.report.findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, [shared::vpn::FindingCode::DiagnosisIncomplete]);
    assert!(known.delivery.notification.starts_with("published"));
    drop(moto);
}
