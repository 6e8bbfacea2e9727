//! The handler with recording fakes: every request path (verified or not, allowed or
//! not), the queue worker and the escalation timer, asserting what was answered, what
//! was queued, and what changed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use shared::config::Env;
use shared::effects::fakes::{
    FixedClock, RecordingBackend, RecordingPager, RecordingPublisher, RecordingTimer, TimerCall,
};
use shared::effects::{EffectDeps, RunnerSettings};
use shared::error::{AwsError, Secret};
use shared::escalation::{EscalationTimer, Pager};
use shared::hold_store::memory::MemorySilenceStore;
use shared::hold_timer::fakes::RecordingHoldTimer;
use shared::hold_timer::HoldTimer;
use shared::incident::{Actor, Impact};
use shared::lifecycle::{EscalationState, IncidentRecord};
use shared::notification::EventType;
use shared::silence::SilenceTarget;
use shared::slack::signature::{sign, SigningSecret};
use shared::state::memory::MemoryStateStore;
use shared::state::{IncidentItem, Owner, StateError, StateStore};
use slack_actions::config::Config;
use slack_actions::groups::GroupCache;
use slack_actions::handler::{handle, Deps, Place, UNAVAILABLE_TEXT, UNVERIFIED_BODY};
use slack_actions::incidents::IncidentReader;
use slack_actions::queue::{Job, JobAction, JobQueue};
use slack_actions::replay::ReplayGuard;
use slack_actions::secrets::{Credentials, SecretError};
use slack_actions::slack_web::{SlackCallError, SlackWeb};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const KEY: &str = "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN";
const ALICE: &str = "U0ALICE";
const MALLORY: &str = "U0MALLORY";
const GROUP: &str = "S0ONCALL";
const RESPONSE_URL: &str = "https://hooks.slack.com/actions/T0/1/abc";
const ALARM_TO_INCIDENT: &str = "arn:aws:lambda:eu-west-1:123456789012:function:alarm-to-incident";
const VPN: &str = "vpn-0f1e2d3c4b5a69788";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap()
}

// ------------------------------------------------------------------ fakes

struct FakeCredentials;

#[async_trait]
impl Credentials for FakeCredentials {
    async fn signing_secret(&self) -> Result<Secret<String>, SecretError> {
        Ok(Secret::new(SECRET.into()))
    }
    async fn bot_token(&self) -> Result<Secret<String>, SecretError> {
        Ok(Secret::new("xoxb-test".into()))
    }
}

/// Remembers signatures; answers with `down` (DynamoDB unavailable) while set.
#[derive(Default)]
struct FakeReplay(Mutex<HashSet<String>>, Mutex<Option<AwsError>>);

#[async_trait]
impl ReplayGuard for FakeReplay {
    async fn first_use(
        &self,
        signature: &str,
        _owner: &str,
        _now: DateTime<Utc>,
    ) -> Result<bool, AwsError> {
        if let Some(e) = self.1.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(self.0.lock().unwrap().insert(signature.to_string()))
    }
}

#[derive(Default)]
struct FakeSlack {
    views: Mutex<Vec<(String, Value)>>,
    responses: Mutex<Vec<Value>>,
    group_calls: Mutex<Vec<String>>,
}

#[async_trait]
impl SlackWeb for FakeSlack {
    async fn open_view(
        &self,
        _token: &Secret<String>,
        trigger_id: &str,
        view: &Value,
    ) -> Result<(), SlackCallError> {
        self.views
            .lock()
            .unwrap()
            .push((trigger_id.to_string(), view.clone()));
        Ok(())
    }
    async fn usergroup_members(
        &self,
        _token: &Secret<String>,
        group: &str,
    ) -> Result<Vec<String>, SlackCallError> {
        self.group_calls.lock().unwrap().push(group.to_string());
        Ok(match group {
            GROUP => vec![ALICE.to_string()],
            PAYMENTS_GROUP => vec![PAYER.to_string()],
            RETAIL_GROUP => vec![SHOPPER.to_string()],
            _ => vec![],
        })
    }
    async fn respond(
        &self,
        response_url: &Secret<String>,
        body: &Value,
    ) -> Result<(), SlackCallError> {
        assert_eq!(response_url.expose(), RESPONSE_URL);
        self.responses.lock().unwrap().push(body.clone());
        Ok(())
    }
}

impl FakeSlack {
    fn texts(&self) -> Vec<String> {
        self.responses
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

#[derive(Default)]
struct FakeQueue(Mutex<Vec<Job>>);

#[async_trait]
impl JobQueue for FakeQueue {
    async fn send(&self, job: &Job) -> Result<String, AwsError> {
        let mut q = self.0.lock().unwrap();
        q.push(job.clone());
        Ok(format!("m{}", q.len()))
    }
}

/// Reads incidents from the same memory store the effects write.
struct StoreReader<'a>(&'a MemoryStateStore);

#[async_trait]
impl IncidentReader for StoreReader<'_> {
    async fn open_incidents(&self) -> Result<Vec<IncidentRecord>, StateError> {
        let map = self.0.incidents.lock().unwrap();
        Ok(map
            .values()
            .filter(|i| i.record.is_open())
            .map(|i| i.record.clone())
            .collect())
    }
    async fn incident(&self, key: &str) -> Result<Option<IncidentRecord>, StateError> {
        Ok(self.0.incident_now(key).map(|i| i.record))
    }
}

struct Harness {
    config: Config,
    replay: FakeReplay,
    slack: FakeSlack,
    queue: FakeQueue,
    groups: GroupCache,
    backend: RecordingBackend,
    store: MemoryStateStore,
    publisher: RecordingPublisher,
    clock: FixedClock,
    settings: RunnerSettings,
    timer: RecordingTimer,
    pager: RecordingPager,
    silences: MemorySilenceStore,
    hold_timer: RecordingHoldTimer,
}

fn policy_env() -> Vec<(&'static str, String)> {
    vec![
        (
            "SLACK_SIGNING_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:s-AbC".into(),
        ),
        (
            "SLACK_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:t-AbC".into(),
        ),
        ("STATE_TABLE_NAME", "state".into()),
        (
            "ACTIONS_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/actions".into(),
        ),
        (
            "NOTIFICATION_TOPIC_ARN",
            "arn:aws:sns:eu-west-1:123456789012:notifications".into(),
        ),
        (
            "SLACK_ACTION_POLICY",
            json!({"default": {"usergroups": [GROUP]}, "declare": {"users": [ALICE]}}).to_string(),
        ),
        ("ESCALATION_MIN_IMPACT", "1".into()),
        (
            "ESCALATION_TOPIC_ARN",
            "arn:aws:sns:eu-west-1:123456789012:escalation".into(),
        ),
        (
            "ESCALATION_TARGET_ARN",
            "arn:aws:lambda:eu-west-1:123456789012:function:slack-actions".into(),
        ),
        (
            "ESCALATION_SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/scheduler".into(),
        ),
        ("ESCALATION_SCHEDULE_GROUP", "escalations".into()),
        ("HOLD_SCHEDULE_GROUP", "holds".into()),
        (
            "HOLD_SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/holds".into(),
        ),
        ("HOLD_TARGET_ARN", ALARM_TO_INCIDENT.into()),
    ]
}

impl Harness {
    fn new() -> Harness {
        Harness::with_env(policy_env())
    }

    fn with_env(env: Vec<(&'static str, String)>) -> Harness {
        Harness {
            config: Config::from_env(&Env::from_pairs(env)).unwrap(),
            replay: FakeReplay::default(),
            slack: FakeSlack::default(),
            queue: FakeQueue::default(),
            groups: GroupCache::default(),
            backend: RecordingBackend::default(),
            store: MemoryStateStore::default(),
            publisher: RecordingPublisher::default(),
            clock: FixedClock::at(now()),
            settings: RunnerSettings::new(None),
            timer: RecordingTimer::default(),
            pager: RecordingPager::default(),
            silences: MemorySilenceStore::default(),
            hold_timer: RecordingHoldTimer::default(),
        }
    }

    async fn run(&self, event: Value) -> Value {
        let reader = StoreReader(&self.store);
        let deps = Deps {
            config: &self.config,
            credentials: &FakeCredentials,
            replay: &self.replay,
            slack: &self.slack,
            queue: &self.queue,
            incidents: &reader,
            groups: &self.groups,
            silences: &self.silences,
            hold_timer: Some(&self.hold_timer as &dyn HoldTimer),
            effects: EffectDeps {
                backend: &self.backend,
                store: &self.store,
                publisher: &self.publisher,
                clock: &self.clock,
                settings: &self.settings,
                timer: Some(&self.timer as &dyn EscalationTimer),
                pager: Some(&self.pager as &dyn Pager),
            },
        };
        let place = Place::from_function_arn(
            "arn:aws:lambda:eu-west-1:123456789012:function:slack-actions",
        );
        let invocation = Owner::new("", Some(now() + Duration::seconds(60)));
        handle(&deps, event, &place, &invocation).await.unwrap()
    }

    fn jobs(&self) -> Vec<Job> {
        self.queue.0.lock().unwrap().clone()
    }

    async fn seed(&self, record: IncidentRecord) {
        let opener = Owner::new("req-alarm", None);
        self.store
            .save_incident(&IncidentItem::decided(None, record, vec![], &opener, now()))
            .await
            .unwrap();
    }
}

fn open_record(impact: Impact) -> IncidentRecord {
    let opened = now() - Duration::minutes(20);
    serde_json::from_value(json!({
        "key": KEY, "status": "open", "incident": {"backend": "OpsCenter", "id": "oi-000000000001"},
        "title": KEY, "summary": "Tunnel 1 is down", "impact": impact.value(),
        "opened_at": opened, "resolved_at": null, "alarms": {}, "runbook_execution": null,
        "timeline": [], "account": "123456789012", "region": "eu-west-1",
        "roles": {"reporter": {"kind": "alarm", "name": "vpn-tunnel-down"}}
    }))
    .unwrap()
}

// ------------------------------------------------------------------ requests

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn command(user: &str, text: &str) -> String {
    form(&[
        ("team_id", "T0LOCAL"),
        ("channel_id", "C0OPS"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/incident"),
        ("text", text),
        ("response_url", RESPONSE_URL),
        ("trigger_id", "1.2.abc"),
    ])
}

fn button(user: &str, action_id: &str) -> String {
    button_on(user, action_id, KEY)
}

fn button_on(user: &str, action_id: &str, key: &str) -> String {
    let payload = json!({
        "type": "block_actions", "user": {"id": user, "username": "someone", "team_id": "T0LOCAL"},
        "team": {"id": "T0LOCAL"}, "channel": {"id": "C0OPS"},
        "container": {"type": "message", "message_ts": "1764064800.000100", "channel_id": "C0OPS"},
        "trigger_id": "9.9.trigger", "response_url": RESPONSE_URL,
        "actions": [{"action_id": action_id, "value": key, "type": "button"}]
    });
    form(&[("payload", &payload.to_string())])
}

fn url_event(body: &str, ts: i64, signature: Option<String>) -> Value {
    let mut headers = BTreeMap::from([
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("x-slack-request-timestamp".to_string(), ts.to_string()),
    ]);
    if let Some(s) = signature {
        headers.insert("x-slack-signature".into(), s);
    }
    json!({"version": "2.0", "headers": headers, "body": body, "isBase64Encoded": false,
           "requestContext": {"http": {"method": "POST", "path": "/"}}})
}

fn signed(body: &str) -> Value {
    let ts = now().timestamp();
    let secret = SigningSecret::new(SECRET).unwrap();
    url_event(body, ts, Some(sign(&secret, ts, body.as_bytes())))
}

fn status(res: &Value) -> u64 {
    res["statusCode"].as_u64().unwrap()
}

fn body_text(res: &Value) -> String {
    let body = res["body"].as_str().unwrap();
    serde_json::from_str::<Value>(body)
        .map(|v| v["text"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|_| body.to_string())
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn signed_list_command_answers_inline_and_queues_nothing() {
    let h = Harness::new();
    h.seed(open_record(Impact::MEDIUM)).await;
    let res = h.run(signed(&command(ALICE, "list"))).await;
    assert_eq!(status(&res), 200);
    let body = res["body"].as_str().unwrap();
    assert!(body.contains("vpn-0f1e2d3c4b5a69788"), "{body}");
    assert!(body.contains("\"response_type\":\"ephemeral\""), "{body}");
    assert!(h.jobs().is_empty());
    assert_eq!(
        *h.slack.group_calls.lock().unwrap(),
        vec![GROUP.to_string()]
    );
}

#[tokio::test]
async fn bad_signature_stale_timestamp_and_missing_headers_get_401_and_change_nothing() {
    let h = Harness::new();
    let body = command(ALICE, "declare Forged");
    let ts = now().timestamp();
    let secret = SigningSecret::new("not-the-secret").unwrap();
    let cases = [
        url_event(&body, ts, Some(sign(&secret, ts, body.as_bytes()))),
        url_event(&body, ts, Some(format!("v0={}", "0".repeat(64)))),
        {
            let old = ts - 301;
            let right = SigningSecret::new(SECRET).unwrap();
            url_event(&body, old, Some(sign(&right, old, body.as_bytes())))
        },
        url_event(&body, ts, None),
    ];
    for event in cases {
        let res = h.run(event).await;
        assert_eq!(status(&res), 401);
        assert_eq!(res["body"], UNVERIFIED_BODY);
    }
    assert!(h.jobs().is_empty());
    // Nothing is posted to a response URL an unverified request names.
    assert!(h.slack.texts().is_empty());
    assert!(
        h.replay.0.lock().unwrap().is_empty(),
        "unverified requests never reach the replay guard"
    );
    assert!(h.slack.group_calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn replayed_request_is_refused_the_second_time() {
    let h = Harness::new();
    let event = signed(&command(ALICE, "declare Payments API slow"));
    let first = h.run(event.clone()).await;
    assert_eq!(status(&first), 200);
    assert!(
        body_text(&first).contains("On it: declaring the incident"),
        "{first}"
    );
    let second = h.run(event).await;
    assert_eq!(status(&second), 401);
    assert_eq!(h.jobs().len(), 1, "only the first request queued a change");
}

#[tokio::test]
async fn unauthorised_button_press_is_told_and_changes_nothing() {
    let h = Harness::new();
    h.seed(open_record(Impact::CRITICAL)).await;
    let res = h.run(signed(&button(MALLORY, "incident.resolve"))).await;
    assert_eq!(status(&res), 200);
    assert_eq!(res["body"], "");
    assert_eq!(
        h.slack.texts(),
        vec!["🚫 You are not allowed to resolve incidents. Nothing was changed."]
    );
    assert!(h.jobs().is_empty());
    assert_eq!(h.store.incident_now(KEY).unwrap().version, 1);
    assert!(h.publisher.sent().is_empty());
}

fn payload(v: Value) -> String {
    form(&[("payload", &v.to_string())])
}

#[tokio::test]
async fn refused_button_presses_and_payloads_are_told_through_the_response_url() {
    let h = Harness::new();
    h.seed(open_record(Impact::CRITICAL)).await;
    // A button that is not ours (an older message, another app's action id).
    let res = h.run(signed(&button(ALICE, "incident.escalate_v0"))).await;
    assert_eq!((status(&res), res["body"].as_str()), (200, Some("")));
    // Malformed: no user id. A shortcut type we do not handle.
    let no_user = payload(
        json!({"type": "block_actions", "response_url": RESPONSE_URL,
        "team": {"id": "T0LOCAL"}, "actions": [{"action_id": "incident.resolve", "value": KEY}]}),
    );
    let shortcut = payload(
        json!({"type": "message_action", "callback_id": "x", "response_url": RESPONSE_URL,
        "user": {"id": ALICE}, "team": {"id": "T0LOCAL"}}),
    );
    for body in [no_user, shortcut] {
        let res = h.run(signed(&body)).await;
        assert_eq!((status(&res), res["body"].as_str()), (200, Some("")));
    }
    let told = h.slack.texts();
    assert_eq!(told.len(), 3, "{told:?}");
    assert!(
        told[0].contains("This button (`incident.escalate_v0`) is not one the incident app knows"),
        "{}",
        told[0]
    );
    assert_eq!(
        told[1],
        "Sorry, that request could not be understood; nothing was changed."
    );
    assert!(
        told[2].contains("does not handle `message_action` requests"),
        "{}",
        told[2]
    );
    // Ephemeral: only the person sees it.
    for r in h.slack.responses.lock().unwrap().iter() {
        assert_eq!(r["response_type"], "ephemeral");
    }
    // Nothing else happened.
    assert!(h.jobs().is_empty());
    assert_eq!(h.store.incident_now(KEY).unwrap().version, 1);
    assert!(h.publisher.sent().is_empty() && h.backend.calls().is_empty());
}

#[tokio::test]
async fn a_command_that_is_not_understood_is_answered_in_the_body_once() {
    let h = Harness::new();
    let res = h.run(signed(&command(ALICE, "frobnicate now"))).await;
    assert_eq!(status(&res), 200);
    assert!(
        body_text(&res).starts_with("`frobnicate` is not a subcommand."),
        "{res}"
    );
    // Slack shows the body; the response URL is not used as well (no double answer).
    assert!(h.slack.texts().is_empty());
    assert!(h.jobs().is_empty());
}

#[tokio::test]
async fn replay_guard_down_refuses_and_tells_the_verified_person_why() {
    let h = Harness::new();
    *h.replay.1.lock().unwrap() = Some(AwsError {
        service: "dynamodb",
        operation: "PutItem",
        failure: shared::error::AwsFailure::Transient,
        code: None,
        message: "connection refused".into(),
    });
    for body in [
        command(ALICE, "declare Payments down"),
        button(ALICE, "incident.resolve"),
    ] {
        let res = h.run(signed(&body)).await;
        assert_eq!(status(&res), 503);
    }
    assert_eq!(h.slack.texts(), vec![UNAVAILABLE_TEXT, UNAVAILABLE_TEXT]);
    assert!(h.jobs().is_empty());
}

#[tokio::test]
async fn allowed_button_press_is_queued_and_answered_on_it() {
    let h = Harness::new();
    let res = h.run(signed(&button(ALICE, "incident.acknowledge"))).await;
    assert_eq!(status(&res), 200);
    let [told] = h.slack.texts().try_into().unwrap();
    assert!(told.contains("On it: taking ownership"), "{told}");
    let [job] = h.jobs().try_into().unwrap();
    assert_eq!(job.action, JobAction::Acknowledge);
    assert_eq!(job.incident_key.as_deref(), Some(KEY));
    assert_eq!(
        job.actor,
        Actor::Person {
            id: ALICE.into(),
            name: "someone".into()
        }
    );
    assert_eq!(job.team.as_deref(), Some("C0OPS"));
    assert_eq!(
        job.response_url.as_ref().map(|u| u.expose().as_str()),
        Some(RESPONSE_URL)
    );
}

#[tokio::test]
async fn add_note_button_opens_the_modal_at_once() {
    let h = Harness::new();
    let res = h.run(signed(&button(ALICE, "incident.note"))).await;
    assert_eq!(status(&res), 200);
    let views = h.slack.views.lock().unwrap().clone();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].0, "9.9.trigger");
    assert_eq!(views[0].1["type"], "modal");
    let meta: Value =
        serde_json::from_str(views[0].1["private_metadata"].as_str().unwrap()).unwrap();
    assert_eq!(meta["k"], KEY);
    assert!(h.jobs().is_empty());
}

// ------------------------------------------------------------------ worker

fn sqs(jobs: &[Job]) -> Value {
    let records: Vec<Value> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            json!({"messageId": format!("m{i}"), "body": serde_json::to_string(j).unwrap(),
                   "eventSource": "aws:sqs", "attributes": {"ApproximateReceiveCount": "1"}})
        })
        .collect();
    json!({"Records": records})
}

fn job(action: JobAction, text: Option<&str>) -> Job {
    Job {
        id: Some(format!(
            "job-{}-{}",
            action.as_str(),
            text.unwrap_or_default()
        )),
        action,
        incident_key: Some(KEY.into()),
        actor: Actor::Person {
            id: ALICE.into(),
            name: "alice".into(),
        },
        team: Some("C0OPS".into()),
        text: text.map(str::to_string),
        silence: None,
        impact: None,
        response_url: Some(Secret::new(RESPONSE_URL.into())),
        requested_at: now(),
    }
}

#[tokio::test]
async fn worker_acknowledges_cancels_the_escalation_and_tells_the_person() {
    let h = Harness::new();
    let mut record = open_record(Impact::CRITICAL);
    record.escalation = Some(EscalationState {
        attempt: 1,
        due_at: now() + Duration::minutes(5),
        schedule_name: "incident-escalation-abc-1".into(),
    });
    h.seed(record).await;
    let res = h.run(sqs(&[job(JobAction::Acknowledge, None)])).await;
    assert_eq!(res, json!({"batchItemFailures": []}));
    let item = h.store.incident_now(KEY).unwrap();
    assert_eq!(
        item.record.roles.owner,
        Some(Actor::Person {
            id: ALICE.into(),
            name: "alice".into()
        })
    );
    assert_eq!(item.record.milestones.acknowledged_at, Some(now()));
    assert!(item.pending.is_empty());
    assert!(h.timer.calls().contains(&TimerCall::Cancel {
        name: "incident-escalation-abc-1".into()
    }));
    assert_eq!(
        h.publisher
            .sent()
            .iter()
            .map(|n| n.event)
            .collect::<Vec<_>>(),
        vec![EventType::Acknowledged]
    );
    assert_eq!(h.slack.texts().len(), 1);
}

#[tokio::test]
async fn worker_reports_a_malformed_message_and_refusals_are_answers() {
    let h = Harness::new();
    let mut batch = sqs(&[job(JobAction::Resolve, None)]);
    batch["Records"]
        .as_array_mut()
        .unwrap()
        .push(json!({"messageId": "bad", "body": "not json", "eventSource": "aws:sqs"}));
    let res = h.run(batch).await;
    // No incident under the key: a refusal (told), not a failure; the bad message fails.
    assert_eq!(
        res,
        json!({"batchItemFailures": [{"itemIdentifier": "bad"}]})
    );
    assert_eq!(h.slack.texts().len(), 1);
    assert!(h.publisher.sent().is_empty());
}

// ------------------------------------------------------------------ escalation

#[tokio::test]
async fn unacknowledged_critical_incident_escalates_and_an_acknowledged_one_does_not() {
    let h = Harness::new();
    let mut record = open_record(Impact::CRITICAL);
    record.escalation = Some(EscalationState {
        attempt: 1,
        due_at: now(),
        schedule_name: "incident-escalation-abc-1".into(),
    });
    h.seed(record).await;
    let res = h
        .run(json!({"escalation": {"incidentKey": KEY, "attempt": 1}}))
        .await;
    assert_eq!(res["escalated"], true);
    assert_eq!(
        h.publisher
            .sent()
            .iter()
            .map(|n| n.event)
            .collect::<Vec<_>>(),
        vec![EventType::Unanswered]
    );
    assert_eq!(h.pager.pages().len(), 1);
    assert!(h
        .timer
        .calls()
        .iter()
        .any(|c| matches!(c, TimerCall::Schedule { attempt: 2, .. })));

    // Alice acknowledges; the next attempt then finds an owner and does nothing.
    h.run(sqs(&[job(JobAction::Acknowledge, None)])).await;
    let sent_before = h.publisher.sent().len();
    let res = h
        .run(json!({"escalation": {"incidentKey": KEY, "attempt": 2}}))
        .await;
    assert_eq!(res["escalated"], false);
    assert_eq!(h.publisher.sent().len(), sent_before);
    assert_eq!(h.pager.pages().len(), 1);
}

// ------------------------------------------------------------------ the same job twice

/// SQS delivers a job again (at-least-once; or SendMessage's answer was lost and the
/// request path sent a second copy): the note is added once, one notification is
/// published (one Slack message), and the person is told both times.
#[tokio::test]
async fn a_job_delivered_twice_adds_the_note_once_and_posts_once() {
    let h = Harness::new();
    h.seed(open_record(Impact::MEDIUM)).await;
    let note = job(JobAction::Note, Some("ISP maintenance until 11:00"));
    let res = h.run(sqs(std::slice::from_ref(&note))).await;
    assert_eq!(res, json!({"batchItemFailures": []}));
    let res = h.run(sqs(&[note])).await;
    assert_eq!(res, json!({"batchItemFailures": []}));
    let item = h.store.incident_now(KEY).unwrap();
    let notes = item
        .record
        .timeline
        .iter()
        .filter(|e| e.text.contains("ISP maintenance"))
        .count();
    assert_eq!(notes, 1);
    assert_eq!(
        h.publisher
            .sent()
            .iter()
            .map(|n| n.event)
            .collect::<Vec<_>>(),
        vec![EventType::Note]
    );
    assert_eq!(
        h.backend
            .calls()
            .iter()
            .filter(|c| c.starts_with("note "))
            .count(),
        1
    );
    let texts = h.slack.texts();
    assert_eq!(texts.len(), 2);
    assert!(texts[1].contains("carried out once"), "{texts:?}");
}

/// The first delivery decided the change and published, then its invocation died
/// before the run was saved (its lease, named by the job, still runs): the second
/// delivery takes its own lease over at once, finishes, and decides nothing twice.
#[tokio::test]
async fn a_redelivered_job_finishes_its_own_interrupted_run() {
    let h = Harness::new();
    h.seed(open_record(Impact::MEDIUM)).await;
    let ack = job(JobAction::Acknowledge, None);
    let owner = Owner::new(ack.id.clone().unwrap(), None);
    // What the first delivery wrote before it died: the decision, leased to the job.
    let item = h.store.incident_now(KEY).unwrap();
    let change =
        shared::respond::acknowledge(&item.record, &ack.actor, ack.team.as_deref(), now()).unwrap();
    let decided = shared::effects::decided_item(
        &h.settings,
        &owner,
        now(),
        Some(&item),
        change.record,
        change.effects,
    );
    h.store.save_incident(&decided).await.unwrap();
    let res = h.run(sqs(&[ack])).await;
    assert_eq!(res, json!({"batchItemFailures": []}));
    let stored = h.store.incident_now(KEY).unwrap();
    assert!(stored.pending.is_empty() && stored.lease_holder.is_none());
    assert_eq!(
        h.publisher
            .sent()
            .iter()
            .map(|n| n.event)
            .collect::<Vec<_>>(),
        vec![EventType::Acknowledged]
    );
    // The notification id was given at the decision and stays with the publication.
    assert!(h.publisher.sent()[0].notification_id.is_some());
}

// ------------------------------------------------------------------ silences

#[tokio::test]
async fn silence_is_authorized_queued_stored_and_timed_to_its_end() {
    let h = Harness::new();
    let res = h
        .run(signed(&command(
            ALICE,
            &format!("silence {VPN} 2h router firmware upgrade"),
        )))
        .await;
    assert!(
        body_text(&res).contains("On it: setting the silence"),
        "{res}"
    );
    let [job] = h.jobs().try_into().unwrap();
    assert_eq!(job.action, JobAction::Silence);
    let spec = job.silence.clone().unwrap();
    assert_eq!(spec.target, SilenceTarget::Vpn(VPN.into()));
    assert_eq!(
        (spec.minutes, spec.reason.as_deref()),
        (120, Some("router firmware upgrade"))
    );
    // The worker stores it (a retry changes nothing) and sets the timer at its end.
    h.run(sqs(std::slice::from_ref(&job))).await;
    h.run(sqs(&[job])).await;
    let book = h.silences.now();
    let [s] = book.silences.as_slice() else {
        panic!("{book:?}")
    };
    assert_eq!(s.ends_at, now() + Duration::hours(2));
    let calls = h.hold_timer.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (op, target, name, at, reason) = &calls[0];
    assert_eq!(
        (op.as_str(), target.as_str()),
        ("sweep_at", ALARM_TO_INCIDENT)
    );
    assert!(name.starts_with("silence-end-"));
    assert_eq!(
        *at,
        Some(now() + Duration::hours(2) + Duration::seconds(60))
    );
    assert_eq!(reason, &format!("silence {} ended", s.id));
    let told = h.slack.texts();
    assert!(
        told[0].contains(&format!("Silenced VPN {VPN} until 2026-11-25 12:00 UTC")),
        "{told:?}"
    );
    assert!(
        told[0].contains(&format!("/incident unsilence {}", s.id)),
        "{told:?}"
    );
    // Listed inline with who, until when and why.
    let list = h.run(signed(&command(ALICE, "silences"))).await;
    let body = list["body"].as_str().unwrap();
    assert!(
        body.contains(&s.id) && body.contains("router firmware upgrade"),
        "{body}"
    );
    assert!(body.contains("Held back: 0"), "{body}");
}

#[tokio::test]
async fn unsilence_ends_it_and_moves_the_timer_to_now() {
    let h = Harness::new();
    h.run(signed(&command(ALICE, "silence alarm:vpn-tunnel- 1d")))
        .await;
    let [job] = h.jobs().try_into().unwrap();
    assert_eq!(
        job.silence.as_ref().unwrap().target,
        SilenceTarget::AlarmPrefix("vpn-tunnel-".into())
    );
    h.run(sqs(&[job])).await;
    let id = h.silences.now().silences[0].id.clone();
    let res = h
        .run(signed(&command(ALICE, &format!("unsilence {id}"))))
        .await;
    assert!(
        body_text(&res).contains("On it: ending the silence"),
        "{res}"
    );
    let jobs = h.jobs();
    h.clock.set(now() + Duration::minutes(30));
    h.run(sqs(&jobs[1..])).await;
    let s = h.silences.now().silences[0].clone();
    assert_eq!(s.ended_at(), now() + Duration::minutes(30));
    let names: Vec<(String, String)> = h
        .hold_timer
        .calls()
        .into_iter()
        .map(|(op, _, name, _, _)| (op, name))
        .collect();
    assert!(
        names[1].0 == "sweep_at" && names[1].1.starts_with("silence-lifted-"),
        "{names:?}"
    );
    assert!(
        names[2].0 == "cancel" && names[2].1.starts_with("silence-end-"),
        "{names:?}"
    );
    assert!(h
        .slack
        .texts()
        .last()
        .unwrap()
        .contains(&format!("Silence `{id}`")));
    // Lifting an unknown id is an answer, not a failure.
    let mut unknown = jobs[1].clone();
    unknown.text = Some("s-00000000".into());
    assert_eq!(
        h.run(sqs(&[unknown])).await,
        json!({"batchItemFailures": []})
    );
    assert!(h
        .slack
        .texts()
        .last()
        .unwrap()
        .contains("No active silence has the id `s-00000000`"));
}

#[tokio::test]
async fn silence_targets_resolve_to_a_known_incident_a_vpn_or_a_prefix() {
    let h = Harness::new();
    h.seed(open_record(Impact::MEDIUM)).await;
    for (text, expected) in [
        (
            format!("silence \"{KEY}\" 30m"),
            SilenceTarget::IncidentKey(KEY.into()),
        ),
        (
            format!("silence vpn:{VPN} 30m"),
            SilenceTarget::Vpn(VPN.into()),
        ),
        (
            "silence payments- 30m".to_string(),
            SilenceTarget::AlarmPrefix("payments-".into()),
        ),
        (
            "silence \"incident:other key\" 30m".to_string(),
            SilenceTarget::IncidentKey("other key".into()),
        ),
    ] {
        h.queue.0.lock().unwrap().clear();
        let res = h.run(signed(&command(ALICE, &text))).await;
        let [job] = h
            .jobs()
            .try_into()
            .unwrap_or_else(|_| panic!("{text}: {res}"));
        assert_eq!(job.silence.unwrap().target, expected, "{text}");
    }
}

#[tokio::test]
async fn bad_silences_and_unauthorised_people_change_nothing() {
    let h = Harness::new();
    let res = h
        .run(signed(&command(ALICE, "silence vpn:vpn-XYZ 1h")))
        .await;
    assert!(
        body_text(&res).contains("is not a VPN connection id"),
        "{res}"
    );
    let res = h
        .run(signed(&command(ALICE, &format!("silence {VPN} forever"))))
        .await;
    assert!(
        body_text(&res).contains("`forever` is not a duration"),
        "{res}"
    );
    let res = h
        .run(signed(&command(MALLORY, &format!("silence {VPN} 1h"))))
        .await;
    assert_eq!(
        body_text(&res),
        "🚫 You are not allowed to silence alarms. Nothing was changed."
    );
    assert!(h.jobs().is_empty());
    assert!(h.silences.now().silences.is_empty());
}

// ------------------------------------------------------------------ account scopes

const PAYER: &str = "U0PAYER";
const SHOPPER: &str = "U0SHOPPER";
const PAYMENTS_GROUP: &str = "S0PAYMENTS";
const RETAIL_GROUP: &str = "S0RETAIL";
const PAYMENTS: &str = "111122223333";
const RETAIL: &str = "444455556666";
const PAYMENTS_VPN: &str = "vpn-0aaaaaaaaaaaaaaa1";
const RETAIL_VPN: &str = "vpn-0bbbbbbbbbbbbbbb2";

fn payments_key() -> String {
    format!("{PAYMENTS}/VPN connection {PAYMENTS_VPN} is DOWN")
}
fn retail_key() -> String {
    format!("{RETAIL}/VPN connection {RETAIL_VPN} is DOWN")
}

/// Organization mode: the on-call group reaches every account, payments its account
/// by id, retail every account tagged team=retail (its OU's tag).
fn scoped() -> Harness {
    let mut env: Vec<(&'static str, String)> = policy_env()
        .into_iter()
        .filter(|(k, _)| *k != "SLACK_ACTION_POLICY")
        .collect();
    env.extend([
        (
            "SLACK_ACTION_POLICY",
            json!({
                "default": {"usergroups": [GROUP, PAYMENTS_GROUP, RETAIL_GROUP]},
                "scopes": [
                    {"usergroups": [GROUP], "accounts": ["*"]},
                    {"usergroups": [PAYMENTS_GROUP], "accounts": [PAYMENTS]},
                    {"usergroups": [RETAIL_GROUP], "account_tags": {"team": "retail"}}
                ]
            })
            .to_string(),
        ),
        ("ORGANIZATION_ID", "o-a1b2c3d4e5".into()),
        ("HOME_ACCOUNT_ID", "123456789012".into()),
        (
            "ACCOUNT_DIRECTORY",
            json!({"accounts": {PAYMENTS: {"name": "payments-prod", "ou": "payments"},
                                RETAIL: {"name": "retail-prod", "ou": "retail"}},
                   "ous": {"payments": {"tags": {"team": "payments"}}, "retail": {"tags": {"team": "retail"}}}})
            .to_string(),
        ),
    ]);
    Harness::with_env(env)
}

fn member_record(key: &str, account: &str, vpn: &str, opened_minutes_ago: i64) -> IncidentRecord {
    let mut r = open_record(Impact::HIGH);
    r.key = key.to_string();
    r.title = format!("VPN connection {vpn} is DOWN");
    r.account = account.to_string();
    r.opened_at = now() - Duration::minutes(opened_minutes_ago);
    r
}

async fn two_members() -> Harness {
    let h = scoped();
    h.seed(member_record(&payments_key(), PAYMENTS, PAYMENTS_VPN, 20))
        .await;
    h.seed(member_record(&retail_key(), RETAIL, RETAIL_VPN, 10))
        .await;
    h
}

fn refused_as_out_of_scope(text: &str, key: &str) {
    assert!(
        text.contains(&format!(
            "Incident `{key}` belongs to an account outside your Slack scope"
        )),
        "{text}"
    );
    // Nothing of the other account beyond the key the person gave.
    assert!(
        !text.contains("payments-prod") && !text.contains("retail-prod"),
        "{text}"
    );
}

#[tokio::test]
async fn a_person_cannot_act_on_another_accounts_incident_from_any_door() {
    let h = two_members().await;
    let key = payments_key();
    // Buttons: resolve, acknowledge, re-run, add note (the modal is not even opened).
    for action in [
        "incident.resolve",
        "incident.acknowledge",
        "incident.rerun",
        "incident.note",
    ] {
        h.run(signed(&button_on(SHOPPER, action, &key))).await;
    }
    let told = h.slack.texts();
    assert_eq!(told.len(), 4, "{told:?}");
    for t in &told {
        refused_as_out_of_scope(t, &key);
    }
    assert!(h.slack.views.lock().unwrap().is_empty());
    // The note command (resolve, acknowledge and re-run are buttons only).
    let res = h
        .run(signed(&command(
            SHOPPER,
            &format!("note \"{key}\" looks like our side"),
        )))
        .await;
    refused_as_out_of_scope(&body_text(&res), &key);
    assert!(h.jobs().is_empty());
    assert_eq!(h.store.incident_now(&key).unwrap().version, 1);
    assert!(h.publisher.sent().is_empty());
    // Their own account's incident, and the on-call group on either: queued.
    h.run(signed(&button_on(
        SHOPPER,
        "incident.resolve",
        &retail_key(),
    )))
    .await;
    h.run(signed(&button_on(ALICE, "incident.resolve", &key)))
        .await;
    h.run(signed(&button_on(PAYER, "incident.acknowledge", &key)))
        .await;
    let jobs: Vec<String> = h
        .jobs()
        .iter()
        .map(|j| j.incident_key.clone().unwrap())
        .collect();
    assert_eq!(jobs, vec![retail_key(), key.clone(), key]);
}

#[tokio::test]
async fn list_and_show_reveal_only_the_persons_accounts() {
    let h = two_members().await;
    let list = h.run(signed(&command(SHOPPER, "list"))).await;
    let body = list["body"].as_str().unwrap();
    assert!(body.contains(RETAIL_VPN), "{body}");
    assert!(
        !body.contains(PAYMENTS_VPN) && !body.contains(PAYMENTS),
        "{body}"
    );
    let all = h.run(signed(&command(ALICE, "list"))).await;
    let body = all["body"].as_str().unwrap();
    assert!(
        body.contains(RETAIL_VPN) && body.contains(PAYMENTS_VPN),
        "{body}"
    );
    // The exact key of another account's incident: refused, not shown.
    let show = h
        .run(signed(&command(
            SHOPPER,
            &format!("show {}", payments_key()),
        )))
        .await;
    let text = body_text(&show);
    assert!(
        text.contains("outside your Slack scope, so it is not shown"),
        "{text}"
    );
    assert!(!text.contains("Tunnel 1 is down"), "{text}");
    // A partial match looks among their own incidents only.
    let show = h.run(signed(&command(SHOPPER, "show vpn-0aaaa"))).await;
    assert!(
        body_text(&show).starts_with("No incident matches"),
        "{show}"
    );
    let show = h.run(signed(&command(SHOPPER, "show vpn-0"))).await;
    assert!(
        show["body"].as_str().unwrap().contains(RETAIL_VPN),
        "one of theirs matches, the other account's does not make it ambiguous: {show}"
    );
}

#[tokio::test]
async fn worker_refuses_a_queued_change_outside_the_persons_scope() {
    let h = two_members().await;
    // A job that reached the queue without the request path's check.
    let mut resolve = job(JobAction::Resolve, None);
    resolve.incident_key = Some(payments_key());
    resolve.actor = Actor::Person {
        id: SHOPPER.into(),
        name: "shopper".into(),
    };
    let mut own = resolve.clone();
    own.incident_key = Some(retail_key());
    let res = h.run(sqs(&[resolve, own])).await;
    assert_eq!(res, json!({"batchItemFailures": []}));
    let told = h.slack.texts();
    refused_as_out_of_scope(&told[0], &payments_key());
    assert!(h
        .store
        .incident_now(&payments_key())
        .unwrap()
        .record
        .is_open());
    assert!(!h
        .store
        .incident_now(&retail_key())
        .unwrap()
        .record
        .is_open());
    assert_eq!(h.publisher.sent().len(), 1, "only retail's resolve");
}

#[tokio::test]
async fn scoped_silences_stay_within_the_persons_accounts() {
    let h = two_members().await;
    // Another account's incident or VPN: refused at once.
    for target in [format!("\"{}\"", payments_key()), PAYMENTS_VPN.to_string()] {
        let res = h
            .run(signed(&command(SHOPPER, &format!("silence {target} 1h"))))
            .await;
        let text = body_text(&res);
        assert!(
            text.contains("outside your Slack scope"),
            "{target}: {text}"
        );
    }
    assert!(h.jobs().is_empty());
    // A prefix is allowed, and limited to their accounts (the directory's retail ones).
    h.run(signed(&command(
        SHOPPER,
        "silence alarm:vpn- 1h maintenance",
    )))
    .await;
    let [job] = h.jobs().try_into().unwrap();
    h.run(sqs(&[job])).await;
    let book = h.silences.now();
    let [mine] = book.silences.as_slice() else {
        panic!("{book:?}")
    };
    assert_eq!(
        mine.accounts,
        Some(std::collections::BTreeSet::from([RETAIL.to_string()]))
    );
    // The on-call group's silence reaches every account: retail cannot lift it, and
    // payments does not see retail's.
    h.run(signed(&command(ALICE, "silence alarm:vpn-tunnel 2h")))
        .await;
    let job = h.jobs().pop().unwrap();
    h.run(sqs(&[job])).await;
    let global = h
        .silences
        .now()
        .silences
        .iter()
        .find(|s| s.accounts.is_none())
        .unwrap()
        .id
        .clone();
    let res = h
        .run(signed(&command(SHOPPER, &format!("unsilence {global}"))))
        .await;
    assert!(
        body_text(&res).contains("holds alarms of accounts outside your Slack scope"),
        "{res}"
    );
    let list = h.run(signed(&command(PAYER, "silences"))).await;
    let body = list["body"].as_str().unwrap();
    assert!(body.contains(&global) && !body.contains(&mine.id), "{body}");
    // Retail may end its own.
    let res = h
        .run(signed(&command(SHOPPER, &format!("unsilence {}", mine.id))))
        .await;
    assert!(body_text(&res).contains("On it"), "{res}");
}
