//! End-to-end tests of the handler: real backend adapters over mocked SDK clients
//! (`aws-smithy-mocks`, sequential rules: every request is asserted, an unexpected
//! one panics), the in-memory state store, and a recording publisher.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_ssm::operation::create_ops_item::{CreateOpsItemError, CreateOpsItemOutput};
use aws_sdk_ssm::operation::describe_ops_items::DescribeOpsItemsOutput;
use aws_sdk_ssm::operation::start_automation_execution::{
    StartAutomationExecutionError, StartAutomationExecutionOutput,
};
use aws_sdk_ssm::operation::update_ops_item::UpdateOpsItemOutput;
use aws_sdk_ssm::types::{OpsItemDataValue, OpsItemStatus};
use aws_sdk_ssmincidents::operation::create_timeline_event::CreateTimelineEventOutput;
use aws_sdk_ssmincidents::operation::start_incident::StartIncidentOutput;
use aws_sdk_ssmincidents::operation::update_incident_record::UpdateIncidentRecordOutput;
use aws_sdk_ssmincidents::types::{IncidentRecordStatus, ItemType, ItemValue};
use aws_smithy_mocks::{mock, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shared::backend::{IncidentManagerBackend, OpsCenterBackend};
use shared::classify::Rules;
use shared::error::{AwsError, AwsFailure, Retryable};
use shared::hash::token_uuid;
use shared::incident::{Impact, IncidentBackend, IncidentRef};
use shared::lifecycle::Effect;
use shared::mock_client;
use shared::notification::{EventType, IncidentStatus, Notification};
use shared::state::memory::MemoryStateStore;
use shared::state::Owner;

use shared::effects::fakes::{RecordingTimer, TimerCall};
use shared::effects::{Clock, EffectDeps, Publisher, RunnerSettings as Settings};
use shared::escalation::EscalationPolicy;

use crate::error::HandlerError;
use crate::handler::{handle, Deps, RefusalCounter, Response};
use shared::alarm::Alarm;
use shared::org::{OrgPolicy, Refusal};

pub(crate) const ACCOUNT: &str = "123456789012";
pub(crate) const VPN: &str = "vpn-0f1e2d3c4b5a69788";
pub(crate) const KEY: &str = "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN";
pub(crate) const ANY: &str = "vpn-tunnel-down-vpn-0f1e2d3c4b5a69788";
pub(crate) const BOTH: &str = "vpn-both-tunnels-down-vpn-0f1e2d3c4b5a69788";
pub(crate) const OI: &str = "oi-0123456789ab";
pub(crate) const PLAN: &str = "arn:aws:ssm-incidents::123456789012:response-plan/vpn-incidents";
pub(crate) const IR: &str = "arn:aws:ssm-incidents::123456789012:incident-record/vpn-incidents/6ec4ba3e-0f5b-4e0a-9d3c-6a3f4c1c9d10";
pub(crate) const ROLE: &str = "arn:aws:iam::123456789012:role/vpn-diagnosis-automation";
pub(crate) const DOC: &str = "VpnDiagnosis";

pub(crate) fn alarm_arn(name: &str) -> String {
    format!("arn:aws:cloudwatch:eu-west-1:{ACCOUNT}:alarm:{name}")
}

fn statistic(name: &str) -> &'static str {
    if name == BOTH {
        "Maximum"
    } else {
        "Minimum"
    }
}

/// `10:01:00.490` on the day of the sample events, as CloudWatch writes it.
fn ts(hh_mm_ss_ms: &str) -> String {
    format!("2026-11-25T{hh_mm_ss_ms}+0000")
}

fn transition_id(name: &str, hh_mm_ss_ms: &str) -> String {
    format!("{}@2026-11-25T{hh_mm_ss_ms}Z", alarm_arn(name))
}

pub(crate) fn eventbridge(name: &str, state: &str, at: &str) -> Value {
    json!({
        "version": "0", "id": "9a8b7c6d", "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch", "account": ACCOUNT, "time": "2026-11-25T10:00:00Z",
        "region": "eu-west-1", "resources": [alarm_arn(name)],
        "detail": {
            "alarmName": name,
            "state": {"value": state, "reason": format!("Threshold Crossed ({state})"), "timestamp": ts(at)},
            "previousState": {"value": "OK", "timestamp": ts("08:00:12.114")},
            "configuration": {
                "description": format!("{name} watches {VPN}"),
                "metrics": [{"id": "m1", "returnData": true, "metricStat": {
                    "metric": {"namespace": "AWS/VPN", "name": "TunnelState", "dimensions": {"VpnId": VPN}},
                    "period": 60, "stat": statistic(name)}}]
            }
        }
    })
}

pub(crate) fn direct(name: &str, state: &str, at: &str) -> Value {
    let mut e = eventbridge(name, state, at);
    let detail = e["detail"].take();
    json!({"source": "aws.cloudwatch", "alarmArn": alarm_arn(name), "accountId": ACCOUNT,
           "time": ts(at), "region": "eu-west-1", "alarmData": detail})
}

pub(crate) fn sns(name: &str, state: &str, at: &str) -> Value {
    let message = json!({
        "AlarmName": name, "AlarmDescription": null, "AWSAccountId": ACCOUNT,
        "NewStateValue": state, "NewStateReason": format!("Threshold Crossed ({state})"),
        "StateChangeTime": ts(at), "Region": "EU (Ireland)", "AlarmArn": alarm_arn(name),
        "OldStateValue": "OK",
        "Trigger": {"MetricName": "TunnelState", "Namespace": "AWS/VPN", "Statistic": statistic(name).to_uppercase(),
                    "Dimensions": [{"value": VPN, "name": "VpnId"}], "Period": 60, "EvaluationPeriods": 1,
                    "ComparisonOperator": "LessThanThreshold", "Threshold": 1.0}
    });
    json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Type": "Notification", "MessageId": "m-1",
            "Subject": "ALARM", "Message": message.to_string()}}]})
}

// ---------------------------------------------------------------------------
// Fakes.

#[derive(Default)]
pub(crate) struct RecordingPublisher {
    sent: Mutex<Vec<Notification>>,
    failures: Mutex<Vec<AwsError>>,
}

impl RecordingPublisher {
    fn fail_next(&self, e: AwsError) {
        self.failures.lock().unwrap().push(e);
    }
    pub(crate) fn sent(&self) -> Vec<Notification> {
        self.sent.lock().unwrap().clone()
    }
    /// (event, impact, status, incident ref) of each message, for compact assertions.
    fn summary(&self) -> Vec<(EventType, u8, IncidentStatus, Option<String>)> {
        self.sent()
            .iter()
            .map(|n| (n.event, n.impact.value(), n.status, n.incident_ref.clone()))
            .collect()
    }
}

#[async_trait]
impl Publisher for RecordingPublisher {
    async fn publish(&self, n: &Notification) -> Result<String, AwsError> {
        if let Some(e) = self.failures.lock().unwrap().pop() {
            return Err(e);
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(n.clone());
        Ok(format!("msg-{}", sent.len()))
    }
}

struct FixedClock(Mutex<DateTime<Utc>>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

fn throttled(service: &'static str, operation: &'static str) -> AwsError {
    AwsError {
        service,
        operation,
        failure: AwsFailure::Throttled,
        code: Some("Throttling".into()),
        message: "Rate exceeded".into(),
    }
}

/// Records each refused alarm as (reason, account, alarm name).
#[derive(Default)]
pub(crate) struct RecordingCounter(pub(crate) Mutex<Vec<(&'static str, String, String)>>);

impl RefusalCounter for RecordingCounter {
    fn count(&self, refusal: &Refusal, alarm: &Alarm) {
        self.0
            .lock()
            .unwrap()
            .push((refusal.reason(), alarm.account.clone(), alarm.name.clone()));
    }
    fn count_unreachable(&self, account: &str, _region: &str, code: &str) {
        self.0
            .lock()
            .unwrap()
            .push(("SweepUnreachable", account.to_string(), code.to_string()));
    }
}

pub(crate) struct Harness {
    pub(crate) backend: Box<dyn IncidentBackend>,
    pub(crate) store: MemoryStateStore,
    pub(crate) publisher: RecordingPublisher,
    rules: Rules,
    settings: Settings,
    clock: FixedClock,
    timer: RecordingTimer,
    escalation: Option<EscalationPolicy>,
    silences: shared::hold_store::memory::MemorySilenceStore,
    alarms: crate::cloudwatch::fakes::FakeAlarms,
    /// Organization mode (shared::org); `None` in the single-account scenarios.
    pub(crate) org: Option<OrgPolicy>,
    pub(crate) refused: RecordingCounter,
}

impl Harness {
    pub(crate) fn new(backend: Box<dyn IncidentBackend>) -> Harness {
        let mut settings = Settings::new(Some(ROLE.into()));
        settings.busy_wait = std::time::Duration::ZERO;
        Harness {
            backend,
            store: MemoryStateStore::default(),
            publisher: RecordingPublisher::default(),
            rules: Rules::builtin(Some(DOC)),
            settings,
            clock: FixedClock(Mutex::new("2026-11-25T10:01:05Z".parse().unwrap())),
            timer: RecordingTimer::default(),
            escalation: None,
            silences: Default::default(),
            alarms: Default::default(),
            org: None,
            refused: RecordingCounter::default(),
        }
    }

    fn opscenter(rules: &[&Rule]) -> Harness {
        Harness::new(Box::new(OpsCenterBackend::new(mock_client!(
            aws_sdk_ssm,
            rules.iter().copied()
        ))))
    }

    fn incident_manager(rules: &[&Rule]) -> Harness {
        Harness::new(Box::new(IncidentManagerBackend::new(
            mock_client!(aws_sdk_ssmincidents, rules.iter().copied()),
            Some(PLAN.into()),
        )))
    }

    /// One invocation of its own (a new request id).
    pub(crate) async fn run(&self, event: Value) -> Result<Response, HandlerError> {
        self.run_as(&Owner::new("", None), event).await
    }

    /// One invocation of request `owner` (the same owner again: Lambda's retry).
    pub(crate) async fn run_as(
        &self,
        owner: &Owner,
        event: Value,
    ) -> Result<Response, HandlerError> {
        handle(&self.deps_on(&self.store), owner, &event).await
    }

    /// The handler's dependencies, with `store` as the state table.
    fn deps_on<'a>(&'a self, store: &'a dyn shared::state::StateStore) -> Deps<'a> {
        Deps {
            effects: EffectDeps {
                backend: self.backend.as_ref(),
                store,
                publisher: &self.publisher,
                clock: &self.clock,
                settings: &self.settings,
                timer: Some(&self.timer),
                pager: None,
            },
            rules: &self.rules,
            escalation: self.escalation.as_ref(),
            holds: &self.store,
            silences: &self.silences,
            alarms: &self.alarms,
            hold_timer: None,
            org: self.org.as_ref(),
            diagnosis_document: Some(DOC),
            metrics: &self.refused,
        }
    }

    async fn action(&self, event: Value) -> &'static str {
        let r = self.run(event).await.unwrap();
        assert_eq!(r.results.len(), 1);
        r.results[0].action
    }
}

fn all_used(rules: &[&Rule]) {
    for (i, r) in rules.iter().enumerate() {
        // Sequential simple rules answer once: each expected request was sent exactly once.
        assert_eq!(
            r.num_calls(),
            1,
            "expected request {i} sent {} times",
            r.num_calls()
        );
    }
}

// ---------------------------------------------------------------------------
// OpsCenter request expectations.

pub(crate) fn data<'a>(
    d: Option<&'a std::collections::HashMap<String, OpsItemDataValue>>,
    k: &str,
) -> &'a str {
    d.and_then(|d| d.get(k))
        .and_then(|v| v.value())
        .unwrap_or_else(|| panic!("operational data {k} missing"))
}

fn note_entry(d: Option<&std::collections::HashMap<String, OpsItemDataValue>>) -> Value {
    let d = d.expect("operational data");
    let notes: Vec<&String> = d.keys().filter(|k| k.starts_with("note ")).collect();
    assert_eq!(notes.len(), 1, "one note per update: {notes:?}");
    serde_json::from_str(d[notes[0]].value().unwrap()).unwrap()
}

fn oc_create(impact: i32) -> Rule {
    mock!(aws_sdk_ssm::Client::create_ops_item)
        .match_requests(move |r| {
            assert_eq!(r.title(), Some(KEY));
            assert_eq!(r.priority(), Some(impact));
            assert_eq!(r.severity(), Some(impact.min(4).to_string().as_str()));
            assert_eq!(r.category(), Some("Availability"));
            assert_eq!(r.source(), Some("IncidentPipeline"));
            let d = r.operational_data();
            assert_eq!(data(d, "/aws/dedup"), format!("{{\"dedupString\":\"{KEY}\"}}"));
            assert_eq!(data(d, "incidentKey"), KEY);
            assert_eq!(
                data(d, "/aws/resources"),
                format!(
                    "[{{\"arn\":\"{}\"}},{{\"arn\":\"arn:aws:ec2:eu-west-1:{ACCOUNT}:vpn-connection/{VPN}\"}}]",
                    alarm_arn(ANY)
                )
            );
            assert_eq!(data(d, "vpnId"), VPN);
            assert_eq!(data(d, "classificationRule"), "vpn-tunnel-down");
            assert!(r
                .description()
                .unwrap()
                .starts_with("The VPN connection to the remote site is not working."));
            true
        })
        .then_output(|| CreateOpsItemOutput::builder().ops_item_id(OI).build())
}

fn oc_start_runbook(opened_by: &'static str) -> Rule {
    mock!(aws_sdk_ssm::Client::start_automation_execution)
        .match_requests(move |r| {
            assert_eq!(r.document_name(), Some(DOC));
            let p = r.parameters().unwrap();
            assert_eq!(p.len(), 3, "{p:?}");
            assert_eq!(p["VpnConnectionId"], [VPN]);
            assert_eq!(p["OpsItemId"], [OI]);
            assert_eq!(p["AutomationAssumeRole"], [ROLE]);
            assert_eq!(
                r.client_token(),
                Some(token_uuid(&[OI, opened_by]).as_str())
            );
            true
        })
        .then_output(|| {
            StartAutomationExecutionOutput::builder()
                .automation_execution_id("exec-1")
                .build()
        })
}

fn oc_record_execution() -> Rule {
    mock!(aws_sdk_ssm::Client::update_ops_item)
        .match_requests(|r| {
            assert_eq!(r.ops_item_id(), Some(OI));
            assert_eq!(data(r.operational_data(), "diagnosisExecutionId"), "exec-1");
            true
        })
        .then_output(|| UpdateOpsItemOutput::builder().build())
}

fn oc_note(title: &'static str) -> Rule {
    mock!(aws_sdk_ssm::Client::update_ops_item)
        .match_requests(move |r| {
            assert_eq!(r.ops_item_id(), Some(OI));
            assert_eq!((r.priority(), r.severity(), r.status()), (None, None, None));
            assert_eq!(note_entry(r.operational_data())["title"], title);
            true
        })
        .then_output(|| UpdateOpsItemOutput::builder().build())
}

fn oc_priority(priority: i32, title: &'static str) -> Rule {
    mock!(aws_sdk_ssm::Client::update_ops_item)
        .match_requests(move |r| {
            assert_eq!(r.ops_item_id(), Some(OI));
            assert_eq!(r.priority(), Some(priority));
            assert_eq!(r.severity(), Some(priority.to_string().as_str()));
            assert_eq!(r.status(), None);
            assert_eq!(note_entry(r.operational_data())["title"], title);
            true
        })
        .then_output(|| UpdateOpsItemOutput::builder().build())
}

fn oc_resolved() -> Rule {
    mock!(aws_sdk_ssm::Client::update_ops_item)
        .match_requests(|r| {
            assert_eq!(r.ops_item_id(), Some(OI));
            assert_eq!(r.status(), Some(&OpsItemStatus::Resolved));
            let note = note_entry(r.operational_data());
            assert_eq!(note["title"], "Resolved: every alarm is OK");
            assert_eq!(note["data"]["durationSeconds"], "2040");
            true
        })
        .then_output(|| UpdateOpsItemOutput::builder().build())
}

fn opened_by_any() -> String {
    transition_id(ANY, "10:01:00.490")
}

// ---------------------------------------------------------------------------
// The whole lifecycle, per backend.

#[tokio::test]
async fn opscenter_full_lifecycle_sends_exact_requests() {
    let opened_by: &'static str = Box::leak(opened_by_any().into_boxed_str());
    let rules = [
        // 10:01 any tunnel ALARM: open (no search first: the dedup string guards
        // the creation), publish, then start the diagnosis and record it.
        oc_create(3),
        oc_start_runbook(opened_by),
        oc_record_execution(),
        // 10:06 any tunnel ALARM again: a note.
        oc_note("vpn-tunnel-down-vpn-0f1e2d3c4b5a69788 is ALARM"),
        // 10:20 both tunnels ALARM: impact 1.
        oc_priority(1, "Impact raised to 1 (Critical)"),
        // 10:30 both tunnels OK while any tunnel fires: back to 3.
        oc_priority(3, "Impact lowered to 3 (Medium)"),
        // 10:32 any tunnel INSUFFICIENT_DATA: a note.
        oc_note("vpn-tunnel-down-vpn-0f1e2d3c4b5a69788 has insufficient data"),
        // 10:35 any tunnel OK: resolved after 34 minutes.
        oc_resolved(),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::opscenter(&refs);

    assert_eq!(
        h.action(eventbridge(ANY, "ALARM", "10:01:00.490")).await,
        "open"
    );
    // The same transition in another envelope: nothing sent, nothing published.
    assert_eq!(
        h.action(sns(ANY, "ALARM", "10:01:00.490")).await,
        "ignore_duplicate"
    );
    assert_eq!(
        h.action(direct(ANY, "ALARM", "10:01:00.490")).await,
        "ignore_duplicate"
    );
    assert_eq!(h.action(sns(ANY, "ALARM", "10:06:00.000")).await, "update");
    assert_eq!(
        h.action(direct(BOTH, "ALARM", "10:20:00.733")).await,
        "escalate"
    );
    assert_eq!(
        h.action(eventbridge(BOTH, "OK", "10:30:00.000")).await,
        "deescalate"
    );
    assert_eq!(
        h.action(eventbridge(ANY, "INSUFFICIENT_DATA", "10:32:00.000"))
            .await,
        "insufficient_data"
    );
    assert_eq!(h.action(sns(ANY, "OK", "10:35:00.490")).await, "resolve");
    // A late ALARM from before the OK: ignored, nothing opens.
    assert_eq!(
        h.action(sns(ANY, "ALARM", "10:33:00.000")).await,
        "ignore_stale"
    );
    all_used(&refs);

    let oi = Some(OI.to_string());
    assert_eq!(
        h.publisher.summary(),
        vec![
            (EventType::Opened, 3, IncidentStatus::Open, oi.clone()),
            (EventType::Updated, 3, IncidentStatus::Open, oi.clone()),
            (EventType::Escalated, 1, IncidentStatus::Open, oi.clone()),
            (EventType::Deescalated, 3, IncidentStatus::Open, oi.clone()),
            (
                EventType::InsufficientData,
                3,
                IncidentStatus::Open,
                oi.clone()
            ),
            (EventType::Resolved, 3, IncidentStatus::Resolved, oi.clone()),
        ]
    );
    let sent = h.publisher.sent();
    let opened = &sent[0];
    assert_eq!(opened.incident_key, KEY);
    assert_eq!(opened.vpn_id.as_deref(), Some(VPN));
    assert_eq!(opened.backend.as_deref(), Some("OpsCenter"));
    assert_eq!(
        opened.incident_url.as_deref(),
        Some("https://eu-west-1.console.aws.amazon.com/systems-manager/opsitems/oi-0123456789ab?region=eu-west-1")
    );
    assert!(!opened.next_steps.is_empty());
    let resolved = &sent[5];
    assert_eq!(resolved.duration_seconds, Some(34 * 60));
    assert_eq!(resolved.timeline.len(), 6);
    assert_eq!(
        resolved.timeline[0].text,
        "vpn-tunnel-down-vpn-0f1e2d3c4b5a69788 is ALARM: incident opened with impact 3 (Medium)"
    );
    // What goes on the wire: Chatbot JSON threaded on the key.
    let chatbot = resolved.to_chatbot();
    assert_eq!(chatbot["metadata"]["threadId"], KEY);
    assert_eq!(chatbot["metadata"]["additionalContext"]["incident"], OI);

    let item = h.store.incident_now(KEY).unwrap();
    assert_eq!(item.record.status, IncidentStatus::Resolved);
    assert_eq!(item.record.runbook_execution.as_deref(), Some("exec-1"));
    assert!(item.pending.is_empty() && item.lease_until.is_none());
    assert_eq!(
        h.store
            .alarm_now(&alarm_arn(ANY))
            .unwrap()
            .changed_at
            .to_rfc3339(),
        "2026-11-25T10:35:00.490+00:00"
    );
}

fn im_timeline(title: &'static str) -> Rule {
    mock!(aws_sdk_ssmincidents::Client::create_timeline_event)
        .match_requests(move |r| {
            assert_eq!(r.incident_record_arn(), Some(IR));
            assert_eq!(r.event_type(), Some("Custom Event"));
            let data: Value = serde_json::from_str(r.event_data().unwrap()).unwrap();
            assert_eq!(data["title"], title);
            assert!(r.client_token().is_some_and(|t| t.len() == 36));
            true
        })
        .then_output(|| {
            CreateTimelineEventOutput::builder()
                .incident_record_arn(IR)
                .event_id("e")
                .build()
                .unwrap()
        })
}

fn im_update(impact: Option<i32>, status: Option<IncidentRecordStatus>) -> Rule {
    mock!(aws_sdk_ssmincidents::Client::update_incident_record)
        .match_requests(move |r| {
            assert_eq!(r.arn(), Some(IR));
            assert_eq!(r.impact(), impact);
            assert_eq!(r.status(), status.as_ref());
            true
        })
        .then_output(|| UpdateIncidentRecordOutput::builder().build())
}

fn im_start() -> Rule {
    mock!(aws_sdk_ssmincidents::Client::start_incident)
        .match_requests(|r| {
            assert_eq!(r.response_plan_arn(), Some(PLAN));
            assert_eq!(r.title(), Some(KEY));
            assert_eq!(r.impact(), Some(3));
            assert_eq!(
                r.client_token(),
                Some(token_uuid(&[KEY, &opened_by_any()]).as_str())
            );
            let t = r.trigger_details().unwrap();
            assert_eq!(t.source(), "custom.incident-pipeline");
            assert_eq!(t.trigger_arn(), Some(alarm_arn(ANY).as_str()));
            let raw: Value = serde_json::from_str(t.raw_data().unwrap()).unwrap();
            assert_eq!(raw["name"], ANY);
            assert_eq!(raw["state"], "ALARM");
            let items = r.related_items();
            let kinds: Vec<(ItemType, Option<&ItemValue>)> = items
                .iter()
                .map(|i| {
                    (
                        i.identifier().unwrap().r#type().clone(),
                        i.identifier().unwrap().value(),
                    )
                })
                .collect();
            assert_eq!(
                kinds[0],
                (ItemType::Other, Some(&ItemValue::Arn(alarm_arn(ANY))))
            );
            assert_eq!(
                kinds[1],
                (
                    ItemType::InvolvedResource,
                    Some(&ItemValue::Arn(format!(
                        "arn:aws:ec2:eu-west-1:{ACCOUNT}:vpn-connection/{VPN}"
                    )))
                )
            );
            assert!(matches!(
                kinds[2],
                (ItemType::Other, Some(ItemValue::Url(_)))
            ));
            true
        })
        .then_output(|| {
            StartIncidentOutput::builder()
                .incident_record_arn(IR)
                .build()
                .unwrap()
        })
}

#[tokio::test]
async fn incident_manager_full_lifecycle_sends_exact_requests() {
    let rules = [
        // Open: the response plan starts the runbook, so no automation call.
        im_start(),
        // Re-alarm.
        im_timeline("vpn-tunnel-down-vpn-0f1e2d3c4b5a69788 is ALARM"),
        // Escalation, de-escalation: impact then a timeline event.
        im_update(Some(1), None),
        im_timeline("Impact raised to 1 (Critical)"),
        im_update(Some(3), None),
        im_timeline("Impact lowered to 3 (Medium)"),
        // Insufficient data.
        im_timeline("vpn-tunnel-down-vpn-0f1e2d3c4b5a69788 has insufficient data"),
        // Resolve: closing note, then RESOLVED.
        im_timeline("Resolved: every alarm is OK"),
        im_update(None, Some(IncidentRecordStatus::Resolved)),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::incident_manager(&refs);

    assert_eq!(h.action(direct(ANY, "ALARM", "10:01:00.490")).await, "open");
    assert_eq!(
        h.action(eventbridge(ANY, "ALARM", "10:01:00.490")).await,
        "ignore_duplicate"
    );
    assert_eq!(
        h.action(eventbridge(ANY, "ALARM", "10:06:00.000")).await,
        "update"
    );
    assert_eq!(
        h.action(sns(BOTH, "ALARM", "10:20:00.733")).await,
        "escalate"
    );
    assert_eq!(
        h.action(sns(BOTH, "OK", "10:30:00.000")).await,
        "deescalate"
    );
    assert_eq!(
        h.action(direct(ANY, "INSUFFICIENT_DATA", "10:32:00.000"))
            .await,
        "insufficient_data"
    );
    assert_eq!(h.action(direct(ANY, "OK", "10:35:00.490")).await, "resolve");
    assert_eq!(
        h.action(eventbridge(ANY, "ALARM", "10:34:00.000")).await,
        "ignore_stale"
    );
    all_used(&refs);

    let ir = Some(IR.to_string());
    assert_eq!(
        h.publisher.summary(),
        vec![
            (EventType::Opened, 3, IncidentStatus::Open, ir.clone()),
            (EventType::Updated, 3, IncidentStatus::Open, ir.clone()),
            (EventType::Escalated, 1, IncidentStatus::Open, ir.clone()),
            (EventType::Deescalated, 3, IncidentStatus::Open, ir.clone()),
            (
                EventType::InsufficientData,
                3,
                IncidentStatus::Open,
                ir.clone()
            ),
            (EventType::Resolved, 3, IncidentStatus::Resolved, ir.clone()),
        ]
    );
    assert_eq!(
        h.publisher.sent()[0].backend.as_deref(),
        Some("IncidentManager")
    );
    assert_eq!(
        h.store.incident_now(KEY).unwrap().record.runbook_execution,
        None
    );
}

// ---------------------------------------------------------------------------
// Order, duplicates, nothing open.

#[tokio::test]
async fn late_alarm_after_ok_opens_nothing_on_either_backend() {
    for h in [Harness::opscenter(&[]), Harness::incident_manager(&[])] {
        // The OK of 10:05 arrives first: recorded, nothing open, nothing sent.
        assert_eq!(h.action(sns(ANY, "OK", "10:05:00.000")).await, "record");
        // Then the ALARM of 10:01, late: stale.
        assert_eq!(
            h.action(eventbridge(ANY, "ALARM", "10:01:00.490")).await,
            "ignore_stale"
        );
        assert!(h.publisher.sent().is_empty());
        assert_eq!(h.store.incident_now(KEY), None);
        assert_eq!(
            h.store.alarm_now(&alarm_arn(ANY)).unwrap().state,
            shared::alarm::AlarmState::Ok
        );
    }
}

#[tokio::test]
async fn insufficient_data_with_nothing_open_is_recorded_only() {
    let h = Harness::opscenter(&[]);
    assert_eq!(
        h.action(direct(ANY, "INSUFFICIENT_DATA", "10:01:00.000"))
            .await,
        "record"
    );
    assert!(h.publisher.sent().is_empty());
    assert_eq!(h.store.incident_now(KEY), None);
}

#[tokio::test]
async fn both_tunnels_alarm_opening_first_is_critical_and_any_tunnel_joins() {
    let rules = [
        mock!(aws_sdk_ssmincidents::Client::start_incident)
            .match_requests(|r| r.impact() == Some(1) && r.title() == Some(KEY))
            .then_output(|| {
                StartIncidentOutput::builder()
                    .incident_record_arn(IR)
                    .build()
                    .unwrap()
            }),
        im_timeline("vpn-tunnel-down-vpn-0f1e2d3c4b5a69788 is ALARM"),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::incident_manager(&refs);
    assert_eq!(
        h.action(eventbridge(BOTH, "ALARM", "10:01:00.000")).await,
        "open"
    );
    assert_eq!(
        h.action(eventbridge(ANY, "ALARM", "10:01:30.000")).await,
        "update"
    );
    all_used(&refs);
    let sent = h.publisher.sent();
    assert_eq!(
        sent[0].summary,
        format!("Both tunnels of VPN connection {VPN} are down: the remote site is unreachable.")
    );
    assert_eq!(sent[1].impact, Impact::CRITICAL);
}

// ---------------------------------------------------------------------------
// Failures and retries.

#[tokio::test]
async fn throttled_open_is_retryable_and_the_retry_completes_once() {
    let opened_by: &'static str = Box::leak(opened_by_any().into_boxed_str());
    let rules = [
        mock!(aws_sdk_ssm::Client::create_ops_item).then_error(|| {
            CreateOpsItemError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        }),
        // Lambda's retry: the pending open runs again.
        oc_create(3),
        oc_start_runbook(opened_by),
        oc_record_execution(),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::opscenter(&refs);
    let event = eventbridge(ANY, "ALARM", "10:01:00.490");
    let e = h.run(event.clone()).await.unwrap_err();
    assert!(e.retryable());
    let d: lambda_runtime::Diagnostic = e.into();
    assert_eq!(d.error_type, "Retryable.Throttled");
    assert_eq!(
        d.error_message,
        "incident backend: ssm CreateOpsItem failed (ThrottlingException): Rate exceeded"
    );
    assert!(h.publisher.sent().is_empty());
    // The decision is stored with its steps and the lease released for the retry.
    let item = h.store.incident_now(KEY).unwrap();
    assert_eq!(
        item.pending.iter().map(Effect::as_str).collect::<Vec<_>>(),
        ["open", "publish", "start_runbook"]
    );
    assert_eq!(item.lease_until, None);

    let r = h.run(event).await.unwrap();
    assert_eq!(r.results[0].action, "ignore_duplicate");
    assert!(r.results[0].resumed);
    assert_eq!(r.results[0].incident.as_deref(), Some(OI));
    all_used(&refs);
    assert_eq!(
        h.publisher.summary(),
        vec![(
            EventType::Opened,
            3,
            IncidentStatus::Open,
            Some(OI.to_string())
        )]
    );
}

#[tokio::test]
async fn message_goes_out_before_the_runbook_and_a_failed_start_does_not_publish_again() {
    let opened_by: &'static str = Box::leak(opened_by_any().into_boxed_str());
    let rules = [
        oc_create(3),
        mock!(aws_sdk_ssm::Client::start_automation_execution).then_error(|| {
            StartAutomationExecutionError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        }),
        // Lambda's retry: only the runbook start is left.
        oc_start_runbook(opened_by),
        oc_record_execution(),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::opscenter(&refs);
    let event = eventbridge(ANY, "ALARM", "10:01:00.490");
    let e = h.run(event.clone()).await.unwrap_err();
    assert!(e.retryable());
    assert_eq!(
        e.to_string(),
        "incident backend: ssm StartAutomationExecution failed (ThrottlingException): Rate exceeded"
    );
    // The message went out before the runbook was asked for.
    let opened = vec![(
        EventType::Opened,
        3,
        IncidentStatus::Open,
        Some(OI.to_string()),
    )];
    assert_eq!(h.publisher.summary(), opened);
    let item = h.store.incident_now(KEY).unwrap();
    assert_eq!(
        item.pending.iter().map(Effect::as_str).collect::<Vec<_>>(),
        ["start_runbook"]
    );
    assert_eq!(item.lease_until, None);

    let r = h.run(event).await.unwrap();
    assert_eq!(
        (r.results[0].action, r.results[0].resumed),
        ("ignore_duplicate", true)
    );
    all_used(&refs);
    // One message, one OpsItem, the runbook recorded.
    assert_eq!(h.publisher.summary(), opened);
    let item = h.store.incident_now(KEY).unwrap();
    assert_eq!(item.record.runbook_execution.as_deref(), Some("exec-1"));
    assert!(item.pending.is_empty());
}

#[tokio::test]
async fn access_denied_is_not_retryable_and_says_what_was_denied() {
    let rules = [mock!(aws_sdk_ssmincidents::Client::start_incident).then_error(|| {
        aws_sdk_ssmincidents::operation::start_incident::StartIncidentError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("User: arn:aws:sts::123456789012:assumed-role/a2i is not authorized to perform: ssm-incidents:StartIncident")
                .build(),
        )
    })];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::incident_manager(&refs);
    let e = h
        .run(direct(ANY, "ALARM", "10:01:00.490"))
        .await
        .unwrap_err();
    assert!(!e.retryable());
    let d: lambda_runtime::Diagnostic = e.into();
    assert_eq!(d.error_type, "NonRetryable.AccessDenied");
    assert_eq!(
        d.error_message,
        "incident backend: ssm-incidents StartIncident failed (AccessDeniedException): User: \
         arn:aws:sts::123456789012:assumed-role/a2i is not authorized to perform: ssm-incidents:StartIncident"
    );
    // Kept pending: once the policy is fixed, the next delivery opens the incident.
    let item = h.store.incident_now(KEY).unwrap();
    assert_eq!(item.pending.first().map(Effect::as_str), Some("open"));
    assert!(h.publisher.sent().is_empty());
    all_used(&refs);
}

#[tokio::test]
async fn publish_failure_after_open_is_finished_by_the_retry_without_a_second_incident() {
    let rules = [im_start()];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::incident_manager(&refs);
    h.publisher.fail_next(throttled("sns", "Publish"));
    let event = sns(ANY, "ALARM", "10:01:00.490");
    let e = h.run(event.clone()).await.unwrap_err();
    assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
    assert_eq!(
        e.to_string(),
        "notification: sns Publish failed (Throttling): Rate exceeded"
    );
    let item = h.store.incident_now(KEY).unwrap();
    assert_eq!(
        item.record.incident,
        Some(IncidentRef::IncidentManager(IR.into()))
    );
    assert_eq!(
        item.pending.iter().map(Effect::as_str).collect::<Vec<_>>(),
        ["publish", "start_runbook"]
    );

    // The retry publishes; StartIncident is not called again (the mock would panic).
    let r = h.run(event).await.unwrap();
    assert_eq!(
        (r.results[0].action, r.results[0].resumed),
        ("ignore_duplicate", true)
    );
    all_used(&refs);
    assert_eq!(
        h.publisher.summary(),
        vec![(
            EventType::Opened,
            3,
            IncidentStatus::Open,
            Some(IR.to_string())
        )]
    );
}

#[tokio::test]
async fn another_alarm_finishes_steps_left_pending_before_deciding() {
    let rules = [
        im_start(),
        // The both-tunnels alarm then escalates the incident the first one opened.
        im_update(Some(1), None),
        im_timeline("Impact raised to 1 (Critical)"),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::incident_manager(&refs);
    h.publisher.fail_next(throttled("sns", "Publish"));
    assert!(h
        .run(eventbridge(ANY, "ALARM", "10:01:00.490"))
        .await
        .is_err());
    let r = h
        .run(eventbridge(BOTH, "ALARM", "10:20:00.000"))
        .await
        .unwrap();
    assert_eq!(r.results[0].action, "escalate");
    all_used(&refs);
    assert_eq!(
        h.publisher
            .summary()
            .iter()
            .map(|s| (s.0, s.1))
            .collect::<Vec<_>>(),
        vec![(EventType::Opened, 3), (EventType::Escalated, 1)]
    );
}

#[tokio::test]
async fn held_lease_makes_the_invocation_wait_then_give_up_retryably() {
    // A first invocation opened the incident and failed to publish; pretend it
    // still holds the lease (it crashed instead of releasing it).
    let first_rules = [im_start()];
    let first_refs: Vec<&Rule> = first_rules.iter().collect();
    let first = Harness::incident_manager(&first_refs);
    first.publisher.fail_next(throttled("sns", "Publish"));
    assert!(first
        .run(eventbridge(ANY, "ALARM", "10:01:00.490"))
        .await
        .is_err());
    let mut item = first.store.incident_now(KEY).unwrap();
    item.lease_until = Some("2026-11-25T10:02:30Z".parse().unwrap());

    let rules = [
        im_update(Some(1), None),
        im_timeline("Impact raised to 1 (Critical)"),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::incident_manager(&refs);
    h.store.incidents.lock().unwrap().insert(KEY.into(), item);
    h.store.alarms.lock().unwrap().insert(
        alarm_arn(ANY),
        first.store.alarm_now(&alarm_arn(ANY)).unwrap(),
    );
    let e = h
        .run(eventbridge(BOTH, "ALARM", "10:20:00.000"))
        .await
        .unwrap_err();
    assert_eq!(e.lambda_error_type(), "Retryable.Busy");
    assert!(h.publisher.sent().is_empty());
    // Once the lease has expired, the next invocation takes the steps over.
    *h.clock.0.lock().unwrap() = "2026-11-25T10:03:00Z".parse().unwrap();
    let r = h
        .run(eventbridge(BOTH, "ALARM", "10:20:00.000"))
        .await
        .unwrap();
    assert_eq!(
        (r.results[0].action, r.results[0].resumed),
        ("escalate", true)
    );
    assert_eq!(
        h.publisher
            .summary()
            .iter()
            .map(|s| (s.0, s.1))
            .collect::<Vec<_>>(),
        vec![(EventType::Opened, 3), (EventType::Escalated, 1)]
    );
    all_used(&refs);
}

#[tokio::test]
async fn lambda_retry_of_the_same_request_takes_its_own_lease_over_at_once() {
    // The first attempt opened the incident and died before publishing (its lease,
    // named by its request id, still runs until its deadline).
    let first_rules = [im_start()];
    let first_refs: Vec<&Rule> = first_rules.iter().collect();
    let first = Harness::incident_manager(&first_refs);
    let request = Owner::new("req-first", None);
    first.publisher.fail_next(throttled("sns", "Publish"));
    assert!(first
        .run_as(&request, eventbridge(ANY, "ALARM", "10:01:00.490"))
        .await
        .is_err());
    let item = first
        .store
        .incident_now(KEY)
        .unwrap()
        .leased_to(&request, "2026-11-25T10:02:00Z".parse().unwrap());

    let h = Harness::incident_manager(&[]);
    h.store
        .incidents
        .lock()
        .unwrap()
        .insert(KEY.into(), item.clone());
    h.store.alarms.lock().unwrap().insert(
        alarm_arn(ANY),
        first.store.alarm_now(&alarm_arn(ANY)).unwrap(),
    );
    // Someone else waits for the lease, and gives up retryably ...
    let e = h
        .run(eventbridge(ANY, "ALARM", "10:01:00.490"))
        .await
        .unwrap_err();
    assert_eq!(e.lambda_error_type(), "Retryable.Busy");
    assert!(h.publisher.sent().is_empty());
    // ... Lambda's retry of the same request does not wait: it finishes the step.
    let r = h
        .run_as(&request, eventbridge(ANY, "ALARM", "10:01:00.490"))
        .await
        .unwrap();
    assert_eq!(
        (r.results[0].action, r.results[0].resumed),
        ("ignore_duplicate", true)
    );
    assert_eq!(
        h.publisher.summary(),
        vec![(EventType::Opened, 3, IncidentStatus::Open, Some(IR.into()))]
    );
    let stored = h.store.incident_now(KEY).unwrap();
    assert!(
        stored.pending.is_empty() && stored.lease_until.is_none() && stored.lease_holder.is_none()
    );
    assert!(stored.has_write(stored.version, "req-first"));
}

/// The case against the DynamoDB adapter (every request asserted): the
/// transaction commits, its answer arrives after the SDK's attempt timeout; the
/// incident item read back carries this request's write, so the invocation goes on as
/// if the answer had come: one incident, one notification, the lease released.
#[tokio::test]
async fn transaction_answered_too_late_is_recognized_and_the_incident_opens_once() {
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
    use shared::state::DynamoStateStore;
    use shared::testing::{LoseAnswers, Loss};

    type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;
    let written: std::sync::Arc<Mutex<Option<Item>>> = Default::default();
    let get_none = |pk: String| {
        mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(move |r| {
                r.consistent_read() == Some(true) && r.key().unwrap()["pk"].as_s().unwrap() == &pk
            })
            .then_output(|| GetItemOutput::builder().build())
    };
    let alarm_read = get_none(format!("alarm#{}", alarm_arn(ANY)));
    let incident_read = get_none(format!("incident#{KEY}"));
    let capture = written.clone();
    let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(move |r| {
            let items = r.transact_items();
            assert_eq!(items.len(), 2);
            let alarm = items[0].put().unwrap().item();
            assert_eq!(alarm["writer"].as_s().unwrap(), "req-storm-1");
            let incident = items[1].put().unwrap();
            assert_eq!(
                incident.condition_expression(),
                Some("attribute_not_exists(pk)")
            );
            assert_eq!(
                incident.item()["lease_holder"].as_s().unwrap(),
                "req-storm-1"
            );
            *capture.lock().unwrap() = Some(incident.item().clone());
            true
        })
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let stored = written.clone();
    let read_back = mock!(aws_sdk_dynamodb::Client::get_item)
        .match_requests(|r| r.key().unwrap()["pk"].as_s().unwrap() == &format!("incident#{KEY}"))
        .then_output(move || {
            GetItemOutput::builder()
                .set_item(stored.lock().unwrap().clone())
                .build()
        });
    // One save per step: open, start the runbook (Incident Manager: its plan does), publish.
    let saves = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| r.condition_expression() == Some("version = :v"))
        .sequence()
        .output(|| PutItemOutput::builder().build())
        .times(3)
        .build();
    let lose = LoseAnswers::new(vec![("TransactWriteItems", 1, Loss::Timeout)]);
    let store = DynamoStateStore::new(
        shared::mock_client_losing!(
            aws_sdk_dynamodb,
            [&alarm_read, &incident_read, &tx, &read_back, &saves],
            lose
        ),
        "state",
    );
    let backend_rules = [im_start()];
    let refs: Vec<&Rule> = backend_rules.iter().collect();
    let h = Harness::incident_manager(&refs);
    let deps = h.deps_on(&store);
    let owner = Owner::new("req-storm-1", None);
    let r = handle(&deps, &owner, &eventbridge(ANY, "ALARM", "10:01:00.490"))
        .await
        .unwrap();
    assert_eq!(r.results[0].action, "open");
    assert_eq!(r.results[0].incident.as_deref(), Some(IR));
    all_used(&refs);
    assert_eq!(
        (
            alarm_read.num_calls(),
            incident_read.num_calls(),
            tx.num_calls(),
            read_back.num_calls()
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(saves.num_calls(), 3);
    assert_eq!(
        h.publisher.summary(),
        vec![(EventType::Opened, 3, IncidentStatus::Open, Some(IR.into()))]
    );
}

/// A store where another invocation commits (an opening, prepared beforehand) just
/// before this invocation's first write: the write was decided on a stale read.
struct OpensMeanwhile<'a> {
    inner: &'a MemoryStateStore,
    meanwhile: Mutex<Option<(shared::state::AlarmItem, shared::state::IncidentItem)>>,
}

#[async_trait]
impl shared::state::StateStore for OpensMeanwhile<'_> {
    async fn alarm(
        &self,
        arn: &str,
    ) -> Result<Option<shared::state::AlarmItem>, shared::state::StateError> {
        self.inner.alarm(arn).await
    }
    async fn incident(
        &self,
        key: &str,
    ) -> Result<Option<shared::state::IncidentItem>, shared::state::StateError> {
        self.inner.incident(key).await
    }
    async fn apply(
        &self,
        alarm: &shared::state::AlarmItem,
        incident: shared::state::IncidentWrite<'_>,
    ) -> Result<(), shared::state::StateError> {
        let other = self.meanwhile.lock().unwrap().take();
        if let Some((a, i)) = other {
            self.inner.alarms.lock().unwrap().insert(a.arn.clone(), a);
            self.inner
                .incidents
                .lock()
                .unwrap()
                .insert(i.record.key.clone(), i);
        }
        self.inner.apply(alarm, incident).await
    }
    async fn save_incident(
        &self,
        item: &shared::state::IncidentItem,
    ) -> Result<(), shared::state::StateError> {
        self.inner.save_incident(item).await
    }
}

/// The race the concurrent storm found (seed 1113603263, 8 instances): the OK of an
/// alarm, delivered before its ALARM, is decided on "nothing open" while another
/// instance opens the incident with that ALARM. Recording the OK alone left the
/// incident open for good (its only alarm OK on the alarm item, ALARM on the record).
/// The OK's write is guarded by the incident item as read: refused, read again,
/// decided again: the incident resolves.
#[tokio::test]
async fn ok_decided_on_a_stale_read_is_decided_again_and_resolves() {
    // What the other instance commits: the incident opened by the ALARM.
    let opener_rules = [im_start()];
    let opener_refs: Vec<&Rule> = opener_rules.iter().collect();
    let opener = Harness::incident_manager(&opener_refs);
    opener
        .action(eventbridge(ANY, "ALARM", "10:01:00.490"))
        .await;
    let opened = (
        opener.store.alarm_now(&alarm_arn(ANY)).unwrap(),
        opener.store.incident_now(KEY).unwrap(),
    );

    let rules = [
        im_timeline("Resolved: every alarm is OK"),
        im_update(None, Some(IncidentRecordStatus::Resolved)),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::incident_manager(&refs);
    let store = OpensMeanwhile {
        inner: &h.store,
        meanwhile: Mutex::new(Some(opened)),
    };
    let deps = h.deps_on(&store);
    let r = handle(
        &deps,
        &Owner::new("req-ok", None),
        &eventbridge(ANY, "OK", "10:05:00.000"),
    )
    .await
    .unwrap();
    assert_eq!(r.results[0].action, "resolve");
    all_used(&refs);
    let item = h.store.incident_now(KEY).unwrap();
    assert!(!item.record.is_open());
    assert_eq!(
        h.publisher.summary(),
        vec![(
            EventType::Resolved,
            3,
            IncidentStatus::Resolved,
            Some(IR.into())
        )]
    );
}

#[tokio::test]
async fn rejected_step_is_dropped_so_the_incident_is_not_blocked() {
    let rules = [
        im_start(),
        mock!(aws_sdk_ssmincidents::Client::create_timeline_event).then_error(|| {
            aws_sdk_ssmincidents::operation::create_timeline_event::CreateTimelineEventError::generic(
                ErrorMetadata::builder().code("ValidationException").message("bad event data").build(),
            )
        }),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let h = Harness::incident_manager(&refs);
    h.action(eventbridge(ANY, "ALARM", "10:01:00.490")).await;
    let e = h
        .run(eventbridge(ANY, "ALARM", "10:06:00.000"))
        .await
        .unwrap_err();
    assert_eq!(e.lambda_error_type(), "NonRetryable.AwsRejected");
    // The notification still went out and nothing is left pending.
    assert_eq!(h.publisher.sent().len(), 2);
    assert!(h.store.incident_now(KEY).unwrap().pending.is_empty());
    all_used(&refs);
}

#[tokio::test]
async fn bad_event_is_a_non_retryable_error() {
    let h = Harness::opscenter(&[]);
    let e = h.run(json!({"hello": "world"})).await.unwrap_err();
    assert_eq!(e.lambda_error_type(), "NonRetryable.BadInput");
    assert!(
        e.to_string().starts_with("bad event: unrecognized event"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// Roles, milestones, escalation and the post-incident summary.

fn escalation_policy() -> EscalationPolicy {
    EscalationPolicy::from_env(&shared::config::Env::from_pairs([
        ("ESCALATION_MIN_IMPACT", "2"),
        (
            "ESCALATION_TOPIC_ARN",
            "arn:aws:sns:eu-west-1:123456789012:escalation",
        ),
        (
            "ESCALATION_TARGET_ARN",
            "arn:aws:lambda:eu-west-1:123456789012:function:slack-actions",
        ),
        (
            "ESCALATION_SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/escalation-scheduler",
        ),
    ]))
    .unwrap()
    .unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test]
async fn escalation_is_scheduled_when_critical_and_cancelled_with_a_summary_on_ok() {
    let resolved = mock!(aws_sdk_ssm::Client::update_ops_item)
        .match_requests(|r| r.status() == Some(&OpsItemStatus::Resolved))
        .then_output(|| UpdateOpsItemOutput::builder().build());
    let rules = [
        mock!(aws_sdk_ssm::Client::create_ops_item)
            .then_output(|| CreateOpsItemOutput::builder().ops_item_id(OI).build()),
        mock!(aws_sdk_ssm::Client::start_automation_execution).then_output(|| {
            StartAutomationExecutionOutput::builder()
                .automation_execution_id("exec-1")
                .build()
        }),
        resolved,
        mock!(aws_sdk_ssm::Client::update_ops_item)
            .then_output(|| UpdateOpsItemOutput::builder().build()),
    ];
    let mut h = Harness::new(Box::new(OpsCenterBackend::new(mock_client!(
        aws_sdk_ssm,
        RuleMode::MatchAny,
        rules.iter()
    ))));
    h.escalation = Some(escalation_policy());

    // Impact 3 is below the policy's 2: no timer.
    assert_eq!(
        h.action(eventbridge(ANY, "ALARM", "10:01:00.490")).await,
        "open"
    );
    assert!(h.timer.calls().is_empty());
    let r = h.store.incident_now(KEY).unwrap().record;
    assert_eq!(
        (r.account.as_str(), r.region.as_str()),
        (ACCOUNT, "eu-west-1")
    );
    assert_eq!(
        r.roles.reporter,
        Some(shared::incident::Actor::Alarm { name: ANY.into() })
    );
    assert_eq!(r.runbook.as_ref().map(|p| p.document.as_str()), Some(DOC));
    assert_eq!(r.milestones.notified_at, Some(at("2026-11-25T10:01:05Z")));
    assert_eq!(r.peak_impact, Some(Impact::MEDIUM));
    assert_eq!(r.escalation, None);

    // Both tunnels: critical, nobody owns it: the first escalation is due 15 min
    // after the opening, but never earlier than a minute from now.
    *h.clock.0.lock().unwrap() = at("2026-11-25T10:20:05Z");
    assert_eq!(
        h.action(eventbridge(BOTH, "ALARM", "10:20:00.000")).await,
        "escalate"
    );
    let calls = h.timer.calls();
    let TimerCall::Schedule {
        name,
        key,
        attempt,
        at: due,
    } = &calls[0]
    else {
        panic!("expected a schedule, got {calls:?}");
    };
    assert_eq!(
        (key.as_str(), *attempt, *due),
        (KEY, 1, at("2026-11-25T10:21:05Z"))
    );
    let r = h.store.incident_now(KEY).unwrap().record;
    assert_eq!(r.escalation.as_ref().map(|e| &e.schedule_name), Some(name));
    assert_eq!(r.peak_impact, Some(Impact::CRITICAL));

    // Lowered again: the escalation stays (it stops itself when it fires).
    assert_eq!(
        h.action(eventbridge(BOTH, "OK", "10:30:00.000")).await,
        "deescalate"
    );
    assert_eq!(h.timer.calls().len(), 1);

    // Every alarm OK: the schedule is deleted and the summary goes out.
    *h.clock.0.lock().unwrap() = at("2026-11-25T10:35:05Z");
    assert_eq!(h.action(sns(ANY, "OK", "10:35:00.490")).await, "resolve");
    assert_eq!(h.timer.calls()[1], TimerCall::Cancel { name: name.clone() });
    let item = h.store.incident_now(KEY).unwrap();
    assert_eq!(item.record.escalation, None);
    assert!(item.pending.is_empty());
    let sent = h.publisher.sent();
    let last = sent.last().unwrap();
    assert_eq!(last.event, EventType::Resolved);
    let summary = last.post_incident.as_ref().expect("post-incident summary");
    assert_eq!(summary.peak_impact, Impact::CRITICAL);
    assert_eq!(summary.time_to_resolve_seconds, 34 * 60);
    assert_eq!(summary.time_to_notify_seconds, Some(4));
    assert_eq!(summary.time_to_acknowledge_seconds, None);
    assert_eq!(
        summary.resolved_by,
        shared::incident::Actor::Alarm { name: ANY.into() }
    );
    assert!(summary.retrospective[3]
        .facts
        .contains(&"Nobody acknowledged within 34m 00s (until resolution).".to_string()));
    assert_eq!(rules[2].num_calls(), 1);
}

#[tokio::test]
async fn resolve_note_carries_the_summary_text() {
    let rules = [
        oc_create(3),
        oc_start_runbook(Box::leak(opened_by_any().into_boxed_str())),
        oc_record_execution(),
        mock!(aws_sdk_ssm::Client::update_ops_item)
            .match_requests(|r| {
                let note = note_entry(r.operational_data());
                assert_eq!(note["title"], "Resolved: every alarm is OK");
                let text = note["text"].as_str().unwrap();
                assert!(
                    text.starts_with("Every alarm is OK; the incident lasted 4m 00s"),
                    "{text}"
                );
                assert!(
                    text.contains("\n\nPost-incident summary: VPN connection"),
                    "{text}"
                );
                assert!(text.contains("Retrospective:"), "{text}");
                true
            })
            .then_output(|| UpdateOpsItemOutput::builder().build()),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let mut h = Harness::opscenter(&refs);
    h.escalation = Some(escalation_policy());
    h.action(eventbridge(ANY, "ALARM", "10:01:00.490")).await;
    assert_eq!(
        h.action(eventbridge(ANY, "OK", "10:05:00.490")).await,
        "resolve"
    );
    all_used(&refs);
    // Nothing was scheduled, so nothing is cancelled.
    assert!(h.timer.calls().is_empty());
}

#[tokio::test]
async fn owned_incident_escalating_schedules_no_timer() {
    let mut h = Harness::new(permissive_opscenter());
    h.escalation = Some(escalation_policy());
    h.action(eventbridge(ANY, "ALARM", "10:01:00.490")).await;
    // A person acknowledged it (slack-actions wrote the owner).
    {
        let mut incidents = h.store.incidents.lock().unwrap();
        let item = incidents.get_mut(KEY).unwrap();
        item.record.roles.owner = Some(shared::incident::Actor::Person {
            id: "U0JANE".into(),
            name: "Jane".into(),
        });
    }
    assert_eq!(
        h.action(eventbridge(BOTH, "ALARM", "10:20:00.000")).await,
        "escalate"
    );
    assert!(h.timer.calls().is_empty());
    assert_eq!(h.store.incident_now(KEY).unwrap().record.escalation, None);
}

// ---------------------------------------------------------------------------
// Every sample event.

/// Answers every OpsCenter call with success, for events of any alarm.
pub(crate) fn permissive_opscenter() -> Box<dyn IncidentBackend> {
    let rules = [
        mock!(aws_sdk_ssm::Client::describe_ops_items)
            .then_output(|| DescribeOpsItemsOutput::builder().build()),
        mock!(aws_sdk_ssm::Client::create_ops_item)
            .then_output(|| CreateOpsItemOutput::builder().ops_item_id(OI).build()),
        mock!(aws_sdk_ssm::Client::start_automation_execution).then_output(|| {
            StartAutomationExecutionOutput::builder()
                .automation_execution_id("exec-1")
                .build()
        }),
        mock!(aws_sdk_ssm::Client::update_ops_item)
            .then_output(|| UpdateOpsItemOutput::builder().build()),
    ];
    Box::new(OpsCenterBackend::new(mock_client!(
        aws_sdk_ssm,
        RuleMode::MatchAny,
        rules.iter()
    )))
}

#[tokio::test]
async fn every_file_in_events_goes_through_the_handler() {
    let dir = std::env::var("EVENTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("no events directory at {}; nothing to check", dir.display());
        return;
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no .json files", dir.display());
    let mut handled = BTreeMap::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let event: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => panic!("{name}: not JSON: {e}"),
        };
        let h = Harness::new(permissive_opscenter());
        let result = h.run(event.clone()).await;
        match shared::alarm::normalize(&event) {
            Ok(alarms) => {
                let r = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(r.results.len(), alarms.len(), "{name}");
                // The alarm-level event of a multi-time-series alarm opens nothing (its
                // contributors' events do); a muted ALARM (inside its mute window at the
                // harness's clock) pages no one.
                let firing = alarms
                    .iter()
                    .filter(|a| {
                        a.state == shared::alarm::AlarmState::Alarm
                            && a.muted.is_none()
                            && !a.is_multi_series_summary()
                    })
                    .count();
                assert_eq!(
                    h.publisher.sent().len(),
                    firing,
                    "{name}: one notification per ALARM that is not muted"
                );
                for (o, a) in r.results.iter().zip(&alarms) {
                    if a.is_multi_series_summary() {
                        assert_eq!(o.action, "record_summary", "{name}");
                        assert_eq!(o.note, Some(crate::handler::SUMMARY_NOTE), "{name}");
                        continue;
                    }
                    let expected = match (a.state, &a.muted) {
                        (shared::alarm::AlarmState::Alarm, Some(_)) => ["held_muted"].as_slice(),
                        (shared::alarm::AlarmState::Alarm, None) => ["open", "update"].as_slice(),
                        _ => ["record"].as_slice(),
                    };
                    assert!(
                        expected.contains(&o.action),
                        "{name}: {} for {}",
                        o.action,
                        a.state
                    );
                    assert!(!o.incident_key.is_empty(), "{name}");
                }
                handled.insert(
                    name,
                    r.results
                        .iter()
                        .map(|o| o.action)
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            Err(_) => {
                let e = result.expect_err(&name);
                assert_eq!(e.lambda_error_type(), "NonRetryable.BadInput", "{name}");
            }
        }
    }
    eprintln!("{handled:#?}");
}

// ---------------------------------------------------------------------------
// Real-world alarm shapes (events/): Metrics Insights contributors, SNS messages
// without AlarmArn. A recording backend: what matters here is which incidents open
// and resolve, not the backend's requests (pinned above).

mod real_world {
    use shared::notification::EventType;

    use super::*;
    use crate::handler::SUMMARY_NOTE;

    /// One alarm's result in the function's response.
    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Got {
        action: String,
        incident_key: String,
        contributor: Option<String>,
        note: Option<String>,
    }

    fn event(file: &str) -> Value {
        let path = format!("{}/../../events/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// The handler with recording fakes (`quiet_tests::H`), the built-in rules with the
    /// diagnosis runbook.
    struct World(crate::quiet_tests::H);

    impl std::ops::Deref for World {
        type Target = crate::quiet_tests::H;
        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }

    impl World {
        fn new() -> World {
            let mut h = crate::quiet_tests::H::new();
            h.rules = Rules::builtin(Some(DOC));
            h.clock.set("2026-11-25T10:40:00Z".parse().unwrap());
            World(h)
        }

        async fn deliver(&self, file: &str) -> Got {
            let mut r = self
                .invoke(&event(file))
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let mut results: Vec<Got> = serde_json::from_value(r["results"].take()).unwrap();
            assert_eq!(results.len(), 1, "{file}");
            results.remove(0)
        }

        async fn open_keys(&self) -> Vec<String> {
            let mut open = vec![];
            for key in [KEY_VPN1, KEY_VPN2] {
                if let Some(item) = shared::state::StateStore::incident(&self.store, key)
                    .await
                    .unwrap()
                {
                    if item.record.is_open() {
                        open.push(key.to_string());
                    }
                }
            }
            open
        }
    }

    const KEY_VPN1: &str = "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN";
    const KEY_VPN2: &str = "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN";

    #[tokio::test]
    async fn one_insights_alarm_opens_one_incident_per_vpn_and_each_ok_resolves_its_own() {
        let w = World::new();
        let a = w
            .deliver("eventbridge-insights-contributor-vpn1-alarm.json")
            .await;
        assert_eq!(
            (a.action.as_str(), a.incident_key.as_str()),
            ("open", KEY_VPN1)
        );
        assert_eq!(
            a.contributor.as_deref(),
            Some("VpnId=vpn-0f1e2d3c4b5a69788")
        );
        let b = w
            .deliver("eventbridge-insights-contributor-vpn2-alarm.json")
            .await;
        assert_eq!(
            (b.action.as_str(), b.incident_key.as_str()),
            ("open", KEY_VPN2)
        );
        // The alarm-level event of the same evaluation: recorded, nothing opened.
        let s = w.deliver("eventbridge-metrics-insights-alarm.json").await;
        assert_eq!(
            (s.action.as_str(), s.incident_key.as_str()),
            ("record_summary", "")
        );
        assert_eq!(s.note.as_deref(), Some(SUMMARY_NOTE));
        // Redeliveries of each are duplicates.
        for f in [
            "eventbridge-insights-contributor-vpn1-alarm.json",
            "eventbridge-insights-contributor-vpn2-alarm.json",
            "eventbridge-metrics-insights-alarm.json",
        ] {
            assert_eq!(w.deliver(f).await.action, "ignore_duplicate", "{f}");
        }
        assert_eq!(w.open_keys().await, vec![KEY_VPN1, KEY_VPN2]);
        // The first VPN's series returns to OK: its incident only.
        let ok = w
            .deliver("eventbridge-insights-contributor-vpn1-ok.json")
            .await;
        assert_eq!(
            (ok.action.as_str(), ok.incident_key.as_str()),
            ("resolve", KEY_VPN1)
        );
        assert_eq!(w.open_keys().await, vec![KEY_VPN2]);

        let calls = w.backend.calls();
        let opens: Vec<&String> = calls.iter().filter(|c| c.starts_with("open ")).collect();
        assert_eq!(
            opens,
            vec![&format!("open {KEY_VPN1}"), &format!("open {KEY_VPN2}")]
        );
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("runbook ")).count(),
            2
        );
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("resolve ")).count(),
            1
        );
        let sent = w.publisher.sent();
        let events: Vec<(EventType, &str)> = sent
            .iter()
            .map(|n| (n.event, n.incident_key.as_str()))
            .collect();
        assert_eq!(
            events,
            vec![
                (EventType::Opened, KEY_VPN1),
                (EventType::Opened, KEY_VPN2),
                (EventType::Resolved, KEY_VPN1)
            ]
        );
        let alarm = sent[0].alarm.as_ref().unwrap();
        assert_eq!(
            alarm.name,
            "vpn-tunnel-down-all-connections (VpnId=vpn-0f1e2d3c4b5a69788)"
        );
        assert!(alarm
            .condition
            .as_deref()
            .unwrap()
            .starts_with("Metrics Insights SELECT MIN(TunnelState)"));
        assert_eq!(sent[1].vpn_id.as_deref(), Some("vpn-0a1b2c3d4e5f67890"));
        // Each contributor has its own watermark; the summary the alarm's.
        let arn = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down-all-connections";
        for source in [
            format!("contributor/3f9a1c7e5b2d8046/{arn}"),
            format!("contributor/a41d6e0b97c3f258/{arn}"),
            arn.to_string(),
        ] {
            assert!(
                shared::state::StateStore::alarm(&w.store, &source)
                    .await
                    .unwrap()
                    .is_some(),
                "{source}"
            );
        }
    }

    #[tokio::test]
    async fn a_muted_contributor_alarm_is_held_and_applied_from_its_kept_event_at_the_windows_end()
    {
        let w = World::new();
        // VPN 1's series goes down inside a maintenance window (mute rule).
        let mut muted = event("eventbridge-insights-contributor-vpn1-alarm.json");
        muted["detail"]["muteDetail"] = json!({
            "mutedByArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm-mute-rule:vpn-maintenance",
            "muteWindowStart": "2026-11-25T10:00:00.000+0000",
            "muteWindowEnd": "2026-11-25T10:30:00.000+0000"});
        w.clock.set("2026-11-25T10:05:00Z".parse().unwrap());
        let r = w.invoke(&muted).await.unwrap();
        assert_eq!(r["results"][0]["action"], "held_muted");
        assert!(w.open_keys().await.is_empty());
        // VPN 2's series, not muted, opens its incident meanwhile.
        w.deliver("eventbridge-insights-contributor-vpn2-alarm.json")
            .await;
        // CloudWatch: the alarm in ALARM, both series listed (VPN 1's since 10:02).
        w.alarms
            .set(vec![parent("ALARM", "2026-11-25T10:02:04.919Z")]);
        w.alarms.list(
            ACCOUNT_ID,
            ALL_VPNS,
            vec![listed(VPN1_SERIES, VPN1), listed(VPN2_SERIES, VPN2)],
        );
        // Before the window's end the sweep leaves it held; VPN 2's series is in step.
        let early = w
            .invoke(&json!({"sweep": {"reason": "scheduled"}}))
            .await
            .unwrap();
        assert_eq!(early["changed"], json!({}), "{early}");
        assert_eq!(early["contributorsChecked"], 2, "{early}");
        assert_eq!(
            w.alarms.contributor_requests.lock().unwrap().clone(),
            vec![(String::new(), vec![ALL_VPNS.to_string()])],
            "one DescribeAlarmContributors for the alarm"
        );
        // After it, the held transition applies as it was kept: VPN 1's incident opens.
        w.clock.set("2026-11-25T10:31:00Z".parse().unwrap());
        let report = w
            .invoke(&json!({"sweep": {"reason": "hold ended"}}))
            .await
            .unwrap();
        assert_eq!(
            report["changed"],
            json!({"vpn-tunnel-down-all-connections (VpnId=vpn-0f1e2d3c4b5a69788)": "released:open"}),
            "{report}"
        );
        assert_eq!(w.open_keys().await, vec![KEY_VPN1, KEY_VPN2]);
        // Released once: the next sweep finds it in step.
        let again = w
            .invoke(&json!({"sweep": {"reason": "scheduled"}}))
            .await
            .unwrap();
        assert_eq!(again["changed"], json!({}), "{again}");
        let opens = w
            .backend
            .calls()
            .iter()
            .filter(|c| c.starts_with("open "))
            .count();
        assert_eq!(opens, 2);
    }

    const ACCOUNT_ID: &str = "";
    const ALL_VPNS: &str = "vpn-tunnel-down-all-connections";
    const VPN1: &str = "vpn-0f1e2d3c4b5a69788";
    const VPN2: &str = "vpn-0a1b2c3d4e5f67890";
    const VPN1_SERIES: &str = "3f9a1c7e5b2d8046";
    const VPN2_SERIES: &str = "a41d6e0b97c3f258";

    fn series_source(id: &str) -> String {
        format!("contributor/{id}/arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{ALL_VPNS}")
    }

    /// What `DescribeAlarms` answers for the Metrics Insights alarm: `state` since `at`.
    fn parent(state: &str, at: &str) -> Alarm {
        let mut a = shared::alarm::normalize(&event("eventbridge-metrics-insights-alarm.json"))
            .unwrap()
            .remove(0);
        a.shape = shared::alarm::EventShape::DescribeAlarms;
        a.previous_state = None;
        a.state = shared::alarm::AlarmState::parse(state).unwrap();
        a.changed_at = at.parse().unwrap();
        a
    }

    /// A series `DescribeAlarmContributors` lists (in ALARM since 10:02:04).
    fn listed(id: &str, vpn: &str) -> crate::cloudwatch::ListedContributor {
        crate::cloudwatch::ListedContributor {
            contributor: shared::alarm::Contributor {
                id: id.into(),
                attributes: BTreeMap::from([("VpnId".to_string(), vpn.to_string())]),
            },
            reason: "Threshold Crossed: 1 datapoint was less than the threshold (1.0).".into(),
            since: Some("2026-11-25T10:02:04.919Z".parse().unwrap()),
        }
    }

    async fn sweep_at(w: &World, at: &str) -> Result<Value, HandlerError> {
        w.clock.set(at.parse().unwrap());
        w.invoke(&json!({"sweep": {"reason": "scheduled"}})).await
    }

    /// Both VPNs' series in ALARM, their incidents open, at 10:02:04.
    async fn two_open_series() -> World {
        let w = World::new();
        w.clock.set("2026-11-25T10:02:05Z".parse().unwrap());
        w.deliver("eventbridge-insights-contributor-vpn1-alarm.json")
            .await;
        w.deliver("eventbridge-insights-contributor-vpn2-alarm.json")
            .await;
        assert_eq!(w.open_keys().await, vec![KEY_VPN1, KEY_VPN2]);
        w
    }

    #[tokio::test]
    async fn the_sweep_resolves_a_series_cloudwatch_no_longer_lists_in_alarm_and_says_so() {
        let w = two_open_series().await;
        // VPN 1's OK event was lost; CloudWatch lists VPN 2's series only.
        w.alarms
            .set(vec![parent("ALARM", "2026-11-25T10:02:04.919Z")]);
        w.alarms
            .list(ACCOUNT_ID, ALL_VPNS, vec![listed(VPN2_SERIES, VPN2)]);
        let report = sweep_at(&w, "2026-11-25T10:20:00Z").await.unwrap();
        assert_eq!(
            report["changed"],
            json!({"vpn-tunnel-down-all-connections (VpnId=vpn-0f1e2d3c4b5a69788)": "applied:resolve"}),
            "{report}"
        );
        assert_eq!(report["contributorsChecked"], 2);
        assert_eq!(w.open_keys().await, vec![KEY_VPN2]);
        // Its OK is dated at the read, through the series' own watermark.
        let mark = w.store.alarm_now(&series_source(VPN1_SERIES)).unwrap();
        assert_eq!(mark.state, shared::alarm::AlarmState::Ok);
        assert_eq!(
            mark.changed_at,
            "2026-11-25T10:20:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let resolved = w.publisher.sent().pop().unwrap();
        assert_eq!(
            (resolved.event, resolved.incident_key.as_str()),
            (EventType::Resolved, KEY_VPN1)
        );
        assert!(
            resolved.summary.contains("no longer lists"),
            "{}",
            resolved.summary
        );
        let note = w.backend.notes().pop().unwrap();
        assert!(
            note.text.contains("Found by the reconciliation sweep")
                && note.text.contains("VpnId=vpn-0f1e2d3c4b5a69788")
                && note
                    .text
                    .contains("DescribeAlarmContributors at 2026-11-25T10:20:00Z"),
            "{}",
            note.text
        );
        // The next sweep finds it in step; the real OK (10:36) delivered late is only
        // recorded: the incident is resolved once.
        assert_eq!(
            sweep_at(&w, "2026-11-25T10:25:00Z").await.unwrap()["changed"],
            json!({})
        );
        assert_eq!(
            w.deliver("eventbridge-insights-contributor-vpn1-ok.json")
                .await
                .action,
            "record"
        );
        assert_eq!(w.publisher.sent().len(), 3);
    }

    #[tokio::test]
    async fn a_young_or_insufficient_data_series_waits_and_an_ok_alarm_dates_it() {
        let w = two_open_series().await;
        w.alarms
            .set(vec![parent("ALARM", "2026-11-25T10:02:04.919Z")]);
        // Three minutes after its ALARM it may simply not be listed yet.
        let early = sweep_at(&w, "2026-11-25T10:05:00Z").await.unwrap();
        assert_eq!(early["changed"], json!({}), "{early}");
        let waiting: Vec<&str> = early["contributorsWaiting"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["contributor"].as_str().unwrap())
            .collect();
        assert_eq!(waiting.len(), 2, "{early}");
        assert!(waiting.contains(&series_source(VPN1_SERIES).as_str()));
        // No data is no evidence of recovery, however old the ALARM.
        w.alarms
            .set(vec![parent("INSUFFICIENT_DATA", "2026-11-25T10:10:00Z")]);
        let nodata = sweep_at(&w, "2026-11-25T10:30:00Z").await.unwrap();
        assert_eq!(nodata["changed"], json!({}), "{nodata}");
        assert!(nodata["contributorsWaiting"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient data"));
        assert_eq!(w.open_keys().await, vec![KEY_VPN1, KEY_VPN2]);
        // The alarm as a whole turned OK at 10:12: every series was OK by then.
        w.alarms.set(vec![parent("OK", "2026-11-25T10:12:00Z")]);
        let ok = sweep_at(&w, "2026-11-25T10:13:00Z").await.unwrap();
        assert_eq!(ok["changed"].as_object().unwrap().len(), 2, "{ok}");
        assert!(w.open_keys().await.is_empty());
        assert_eq!(
            w.store
                .alarm_now(&series_source(VPN2_SERIES))
                .unwrap()
                .changed_at,
            "2026-11-25T10:12:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[tokio::test]
    async fn a_series_listed_in_alarm_that_was_never_delivered_opens_its_incident() {
        let w = two_open_series().await;
        // A third VPN's series went down; its event was lost.
        let vpn3 = "vpn-0123456789abcdef0";
        w.alarms
            .set(vec![parent("ALARM", "2026-11-25T10:02:04.919Z")]);
        w.alarms.list(
            ACCOUNT_ID,
            ALL_VPNS,
            vec![
                listed(VPN1_SERIES, VPN1),
                listed(VPN2_SERIES, VPN2),
                listed("9b8a7c6d5e4f3021", vpn3),
            ],
        );
        let report = sweep_at(&w, "2026-11-25T10:10:00Z").await.unwrap();
        assert_eq!(
            report["changed"],
            json!({"vpn-tunnel-down-all-connections (VpnId=vpn-0123456789abcdef0)": "applied:open"}),
            "{report}"
        );
        let opened = w.publisher.sent().pop().unwrap();
        assert_eq!(
            (opened.event, opened.incident_key.as_str()),
            (
                EventType::Opened,
                "VPN connection vpn-0123456789abcdef0 is DOWN"
            )
        );
        assert_eq!(opened.vpn_id.as_deref(), Some(vpn3));
        // Once: the next sweep and the late event change nothing.
        assert_eq!(
            sweep_at(&w, "2026-11-25T10:15:00Z").await.unwrap()["changed"],
            json!({})
        );
        assert_eq!(
            w.backend
                .calls()
                .iter()
                .filter(|c| c.starts_with("open "))
                .count(),
            3
        );
    }

    #[tokio::test]
    async fn a_failed_contributor_read_applies_nothing_and_a_declined_alarm_is_reported() {
        let w = two_open_series().await;
        w.alarms.set(vec![parent("OK", "2026-11-25T10:12:00Z")]);
        *w.alarms.fail_contributors_next.lock().unwrap() = Some(AwsError {
            service: "cloudwatch",
            operation: "DescribeAlarmContributors",
            failure: AwsFailure::Throttled,
            code: Some("Throttling".into()),
            message: "Rate exceeded".into(),
        });
        let writes = *w.store.writes.lock().unwrap();
        let e = sweep_at(&w, "2026-11-25T10:20:00Z").await.unwrap_err();
        assert!(e.retryable());
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
        assert_eq!(*w.store.writes.lock().unwrap(), writes, "nothing applied");
        assert_eq!(w.open_keys().await, vec![KEY_VPN1, KEY_VPN2]);
        // CloudWatch declines the alarm for good: reported, nothing resolved.
        w.alarms
            .declined
            .lock()
            .unwrap()
            .insert(ALL_VPNS.to_string(), "ResourceNotFoundException".into());
        let report = sweep_at(&w, "2026-11-25T10:25:00Z").await.unwrap();
        assert_eq!(report["changed"], json!({}), "{report}");
        let not_read = report["contributorsNotRead"].as_array().unwrap();
        assert_eq!(not_read.len(), 2, "{report}");
        assert!(not_read[0]["reason"]
            .as_str()
            .unwrap()
            .contains("ResourceNotFoundException"));
        assert_eq!(w.open_keys().await, vec![KEY_VPN1, KEY_VPN2]);
        // Once it reads again, the lost OKs are applied.
        w.alarms.declined.lock().unwrap().clear();
        let ok = sweep_at(&w, "2026-11-25T10:30:00Z").await.unwrap();
        assert_eq!(ok["changed"].as_object().unwrap().len(), 2, "{ok}");
        assert!(w.open_keys().await.is_empty());
    }

    #[tokio::test]
    async fn a_muted_series_that_recovered_in_the_window_opens_nothing_at_its_end() {
        let w = World::new();
        let mut muted = event("eventbridge-insights-contributor-vpn1-alarm.json");
        muted["detail"]["muteDetail"] = json!({
            "mutedByArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm-mute-rule:vpn-maintenance",
            "muteWindowStart": "2026-11-25T10:00:00.000+0000",
            "muteWindowEnd": "2026-11-25T10:30:00.000+0000"});
        w.clock.set("2026-11-25T10:05:00Z".parse().unwrap());
        assert_eq!(
            w.invoke(&muted).await.unwrap()["results"][0]["action"],
            "held_muted"
        );
        // Its OK inside the window was never delivered; at the window's end CloudWatch lists
        // no series of the alarm in ALARM.
        w.alarms.set(vec![parent("OK", "2026-11-25T10:20:00Z")]);
        let report = sweep_at(&w, "2026-11-25T10:31:00Z").await.unwrap();
        let label = "vpn-tunnel-down-all-connections (VpnId=vpn-0f1e2d3c4b5a69788)";
        // The OK is recorded (the held ALARM never opened anything).
        assert_eq!(report["changed"][label], "applied:record", "{report}");
        assert!(w.open_keys().await.is_empty());
        assert!(w.publisher.sent().is_empty(), "nobody paged");
        let mark = w.store.alarm_now(&series_source(VPN1_SERIES)).unwrap();
        assert_eq!(mark.state, shared::alarm::AlarmState::Ok);
        assert!(mark.held.is_none());
        // In step: the next sweep leaves it.
        assert_eq!(
            sweep_at(&w, "2026-11-25T10:36:00Z").await.unwrap()["changed"],
            json!({})
        );
    }

    #[tokio::test]
    async fn a_member_accounts_series_is_read_in_that_account_and_resolved() {
        let mut h = crate::quiet_tests::H::in_org();
        h.rules = Rules::builtin(Some(DOC));
        let w = World(h);
        const PAYMENTS: &str = "111122223333";
        let moved = |text: String| text.replace("123456789012", PAYMENTS);
        let alarm_event: Value = serde_json::from_str(&moved(
            event("eventbridge-insights-contributor-vpn1-alarm.json").to_string(),
        ))
        .unwrap();
        w.clock.set("2026-11-25T10:02:05Z".parse().unwrap());
        let r = w.invoke(&alarm_event).await.unwrap();
        assert_eq!(r["results"][0]["action"], "open", "{r}");
        let key = format!("{PAYMENTS}/{KEY_VPN1}");
        let parent: Alarm = serde_json::from_str(&moved(
            serde_json::to_string(&parent("ALARM", "2026-11-25T10:02:04.919Z")).unwrap(),
        ))
        .unwrap();
        w.alarms.set(vec![parent]);
        // Its OK was lost: payments' CloudWatch lists no series of the alarm in ALARM.
        w.alarms.list(PAYMENTS, ALL_VPNS, vec![]);
        let report = sweep_at(&w, "2026-11-25T10:20:00Z").await.unwrap();
        assert_eq!(
            report["changed"],
            json!({"vpn-tunnel-down-all-connections (VpnId=vpn-0f1e2d3c4b5a69788)": "applied:resolve"}),
            "{report}"
        );
        assert_eq!(
            w.alarms.contributor_requests.lock().unwrap().clone(),
            vec![(PAYMENTS.to_string(), vec![ALL_VPNS.to_string()])],
            "read where the alarm lives"
        );
        let item = shared::state::StateStore::incident(&w.store, &key)
            .await
            .unwrap()
            .unwrap();
        assert!(!item.record.is_open());
    }

    #[tokio::test]
    async fn contributor_and_single_vpn_alarm_feed_the_same_incident() {
        let w = World::new();
        assert_eq!(
            w.deliver("eventbridge-vpn-tunnel-down-alarm.json")
                .await
                .action,
            "open"
        );
        // The Metrics Insights series of the same VPN joins that incident.
        let c = w
            .deliver("eventbridge-insights-contributor-vpn1-alarm.json")
            .await;
        assert_eq!(
            (c.action.as_str(), c.incident_key.as_str()),
            ("update", KEY_VPN1)
        );
        // Its OK leaves the incident open while the other alarm fires.
        let ok = w
            .deliver("eventbridge-insights-contributor-vpn1-ok.json")
            .await;
        assert_eq!(ok.action, "update");
        assert_eq!(w.open_keys().await, vec![KEY_VPN1]);
    }

    #[tokio::test]
    async fn sns_message_without_alarm_arn_opens_its_incident() {
        let w = World::new();
        let o = w.deliver("sns-no-alarm-arn-old-region-alarm.json").await;
        assert_eq!(o.action, "open");
        assert_eq!(
            o.incident_key,
            "VPN connection vpn-0c3d4e5f6a7b8c9d0 is DOWN"
        );
        assert_eq!(
            w.backend.calls()[0],
            "open VPN connection vpn-0c3d4e5f6a7b8c9d0 is DOWN"
        );
        let n = &w.publisher.sent()[0];
        assert_eq!(n.region, "us-east-1");
        assert_eq!(
            n.alarm.as_ref().unwrap().arn,
            "arn:aws:cloudwatch:us-east-1:123456789012:alarm:vpn-tunnel-down-vpn-0c3d4e5f6a7b8c9d0"
        );
        // Delivered again: a duplicate.
        assert_eq!(
            w.deliver("sns-no-alarm-arn-old-region-alarm.json")
                .await
                .action,
            "ignore_duplicate"
        );
    }
}
