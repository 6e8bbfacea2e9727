//! Handler tests of muted and silenced transitions and of the reconciliation sweep:
//! the recording backend and publisher, the in-memory state and silence stores, a fake
//! `DescribeAlarms` and a recording hold timer.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use shared::alarm::{normalize, Alarm};
use shared::classify::Rules;
use shared::effects::fakes::{FixedClock, RecordingBackend, RecordingPublisher};
use shared::effects::{EffectDeps, RunnerSettings};
use shared::error::{AwsError, AwsFailure, Retryable};
use shared::hold_store::memory::MemorySilenceStore;
use shared::hold_timer::fakes::RecordingHoldTimer;
use shared::incident::Actor;
use shared::notification::EventType;
use shared::silence::{Silence, SilenceTarget};
use shared::state::memory::MemoryStateStore;
use shared::state::Owner;

use crate::cloudwatch::fakes::FakeAlarms;
use crate::handler::{handle_invocation, Deps};

const ACCOUNT: &str = "123456789012";
const VPN: &str = "vpn-0f1e2d3c4b5a69788";
const KEY: &str = "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN";
const ANY: &str = "vpn-tunnel-down-vpn-0f1e2d3c4b5a69788";
const BOTH: &str = "vpn-both-tunnels-down-vpn-0f1e2d3c4b5a69788";
const SELF: &str = "arn:aws:lambda:eu-west-1:123456789012:function:alarm-to-incident";
const RULE: &str = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm-mute-rule:vpn-maintenance";

fn at(m: i64) -> DateTime<Utc> {
    "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(m)
}

fn ts(m: i64) -> String {
    at(m).format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

fn arn(name: &str) -> String {
    format!("arn:aws:cloudwatch:eu-west-1:{ACCOUNT}:alarm:{name}")
}

fn eventbridge(name: &str, state: &str, m: i64) -> Value {
    let stat = if name == BOTH { "Maximum" } else { "Minimum" };
    json!({
        "version": "0", "id": "9a8b7c6d", "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch", "account": ACCOUNT, "time": ts(m), "region": "eu-west-1",
        "resources": [arn(name)],
        "detail": {
            "alarmName": name,
            "state": {"value": state, "reason": format!("Threshold Crossed ({state})"), "timestamp": ts(m)},
            "previousState": {"value": "OK", "timestamp": ts(-60)},
            "configuration": {"metrics": [{"id": "m1", "returnData": true, "metricStat": {
                "metric": {"namespace": "AWS/VPN", "name": "TunnelState", "dimensions": {"VpnId": VPN}},
                "period": 60, "stat": stat}}]}
        }
    })
}

/// The same transition muted by the maintenance window `from`..`to` (minutes).
fn muted(name: &str, state: &str, m: i64, from: i64, to: i64) -> Value {
    let mut e = eventbridge(name, state, m);
    e["detail"]["muteDetail"] =
        json!({"mutedByArn": RULE, "muteWindowStart": ts(from), "muteWindowEnd": ts(to)});
    e
}

fn direct(name: &str, state: &str, m: i64) -> Value {
    let mut e = eventbridge(name, state, m);
    let detail = e["detail"].take();
    json!({"source": "aws.cloudwatch", "alarmArn": arn(name), "accountId": ACCOUNT, "time": ts(m),
           "region": "eu-west-1", "alarmData": detail})
}

/// What `DescribeAlarms` would answer for the alarm: `state` since minute `m`.
fn described(name: &str, state: &str, m: i64) -> Alarm {
    let mut a = normalize(&eventbridge(name, state, m)).unwrap().remove(0);
    a.shape = shared::alarm::EventShape::DescribeAlarms;
    a.previous_state = None;
    a
}

fn throttled() -> AwsError {
    AwsError {
        service: "cloudwatch",
        operation: "DescribeAlarms",
        failure: AwsFailure::Throttled,
        code: Some("Throttling".into()),
        message: "Rate exceeded".into(),
    }
}

/// The handler with recording fakes (also used by `scenarios::real_world`).
pub(crate) struct H {
    pub(crate) backend: RecordingBackend,
    pub(crate) store: MemoryStateStore,
    pub(crate) publisher: RecordingPublisher,
    pub(crate) clock: FixedClock,
    settings: RunnerSettings,
    pub(crate) rules: Rules,
    silences: MemorySilenceStore,
    pub(crate) alarms: FakeAlarms,
    timer: RecordingHoldTimer,
    refused: crate::scenarios::RecordingCounter,
    org: Option<shared::org::OrgPolicy>,
}

impl H {
    pub(crate) fn new() -> H {
        let mut settings = RunnerSettings::new(None);
        settings.busy_wait = std::time::Duration::ZERO;
        H {
            backend: RecordingBackend::default(),
            store: MemoryStateStore::default(),
            publisher: RecordingPublisher::default(),
            clock: FixedClock::at(at(0)),
            settings,
            rules: Rules::builtin(None),
            silences: MemorySilenceStore::default(),
            alarms: FakeAlarms::default(),
            timer: RecordingHoldTimer::default(),
            refused: Default::default(),
            org: None,
        }
    }

    /// Organization mode: this account is the home of two members.
    pub(crate) fn in_org() -> H {
        let env = shared::config::Env::from_pairs([
            ("ORGANIZATION_ID", "o-a1b2c3d4e5"),
            ("HOME_ACCOUNT_ID", ACCOUNT),
        ]);
        H {
            org: shared::org::OrgPolicy::from_env(&env).unwrap(),
            ..H::new()
        }
    }

    fn deps(&self) -> Deps<'_> {
        Deps {
            effects: EffectDeps {
                backend: &self.backend,
                store: &self.store,
                publisher: &self.publisher,
                clock: &self.clock,
                settings: &self.settings,
                timer: None,
                pager: None,
            },
            rules: &self.rules,
            escalation: None,
            holds: &self.store,
            silences: &self.silences,
            alarms: &self.alarms,
            hold_timer: Some(&self.timer),
            org: self.org.as_ref(),
            diagnosis_document: None,
            metrics: &self.refused,
        }
    }

    /// One invocation, at the clock as it is.
    pub(crate) async fn invoke(&self, event: &Value) -> Result<Value, crate::error::HandlerError> {
        handle_invocation(&self.deps(), &Owner::new("", None), event, SELF).await
    }

    async fn deliver(&self, event: Value, m: i64) -> String {
        self.clock.set(at(m));
        let out = handle_invocation(&self.deps(), &Owner::new("", None), &event, SELF)
            .await
            .unwrap();
        out["results"][0]["action"].as_str().unwrap().to_string()
    }

    pub(crate) async fn sweep(&self, m: i64) -> Result<Value, crate::error::HandlerError> {
        self.clock.set(at(m));
        handle_invocation(
            &self.deps(),
            &Owner::new("", None),
            &json!({"sweep": {"reason": "test"}}),
            SELF,
        )
        .await
    }

    fn events(&self) -> Vec<EventType> {
        self.publisher.sent().iter().map(|n| n.event).collect()
    }

    fn timeline(&self) -> Vec<String> {
        self.store
            .incident_now(KEY)
            .map(|i| i.record.timeline.iter().map(|e| e.text.clone()).collect())
            .unwrap_or_default()
    }

    fn silence(&self, id: &str, target: SilenceTarget, to: i64) {
        let mut book = self.silences.now();
        book.add(
            Silence {
                id: id.into(),
                target,
                created_by: Actor::Person {
                    id: "U0ALICE".into(),
                    name: "alice".into(),
                },
                created_at: at(-1),
                ends_at: at(to),
                reason: Some("router firmware upgrade".into()),
                lifted: None,
                held: vec![],
                held_count: 0,
                accounts: None,
            },
            at(0),
        )
        .unwrap();
        *self.silences.book.lock().unwrap() = book;
    }
}

#[tokio::test]
async fn muted_alarm_is_recorded_opens_nothing_pages_nobody_and_sets_the_window_timer() {
    let h = H::new();
    assert_eq!(
        h.deliver(muted(ANY, "ALARM", 1, 0, 60), 1).await,
        "held_muted"
    );
    assert!(h.backend.calls().is_empty(), "{:?}", h.backend.calls());
    assert!(h.publisher.sent().is_empty());
    let item = h.store.alarm_now(&arn(ANY)).unwrap();
    assert_eq!(item.changed_at, at(1));
    assert_eq!(item.held.unwrap().until, at(60));
    let calls = h.timer.calls();
    assert_eq!(calls.len(), 1);
    let (op, target, name, when, reason) = &calls[0];
    assert_eq!((op.as_str(), target.as_str()), ("sweep_at", SELF));
    assert!(name.starts_with("mute-end-"), "{name}");
    assert_eq!(*when, Some(at(61)));
    assert_eq!(reason, &format!("mute window of {RULE} ended"));
    // The same muted event again (EventBridge at least once) is a duplicate.
    assert_eq!(
        h.deliver(muted(ANY, "ALARM", 1, 0, 60), 2).await,
        "ignore_duplicate"
    );
    assert!(h.backend.calls().is_empty());
}

#[tokio::test]
async fn direct_action_and_eventbridge_deliver_one_transition_once() {
    let h = H::new();
    assert_eq!(h.deliver(direct(ANY, "ALARM", 1), 1).await, "open");
    assert_eq!(
        h.deliver(eventbridge(ANY, "ALARM", 1), 1).await,
        "ignore_duplicate"
    );
    assert_eq!(h.deliver(eventbridge(ANY, "OK", 5), 5).await, "resolve");
    assert_eq!(h.deliver(direct(ANY, "OK", 5), 5).await, "ignore_duplicate");
    assert_eq!(h.events(), [EventType::Opened, EventType::Resolved]);
    assert_eq!(
        h.backend
            .calls()
            .iter()
            .filter(|c| c.starts_with("open"))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_muted_ok_resolves_and_notifies() {
    let h = H::new();
    h.deliver(direct(ANY, "ALARM", 1), 1).await;
    assert_eq!(h.deliver(muted(ANY, "OK", 10, 5, 60), 10).await, "resolve");
    assert_eq!(h.events(), [EventType::Opened, EventType::Resolved]);
    assert!(h.store.alarm_now(&arn(ANY)).unwrap().held.is_none());
}

#[tokio::test]
async fn a_muted_alarm_on_an_open_incident_leaves_a_note_and_changes_nothing_else() {
    let h = H::new();
    h.deliver(direct(ANY, "ALARM", 1), 1).await;
    assert_eq!(
        h.deliver(muted(BOTH, "ALARM", 6, 5, 60), 6).await,
        "held_muted"
    );
    assert_eq!(
        h.events(),
        [EventType::Opened],
        "no escalation notification"
    );
    let record = h.store.incident_now(KEY).unwrap().record;
    assert_eq!(record.impact.value(), 3);
    assert!(!record.alarms.contains_key(&arn(BOTH)));
    let note = h.timeline().pop().unwrap();
    assert_eq!(
        note,
        format!("{BOTH} is ALARM during the maintenance window of mute rule {RULE} (2026-11-25T10:05:00Z to 2026-11-25T11:00:00Z): recorded, nobody paged; applied if it still holds when the hold ends (2026-11-25T11:00:00Z)")
    );
    assert_eq!(
        h.backend.calls().last().unwrap(),
        &format!("note {BOTH} is ALARM (held back)")
    );
}

#[tokio::test]
async fn at_the_window_end_a_muted_alarm_that_still_fires_opens_the_incident() {
    let h = H::new();
    h.deliver(muted(ANY, "ALARM", 1, 0, 60), 1).await;
    h.alarms.set(vec![described(ANY, "ALARM", 1)]);
    // Before the window's end the sweep leaves it held (and does not even read it).
    let early = h.sweep(30).await.unwrap();
    assert_eq!(early["changed"], json!({}));
    assert!(h.alarms.requests.lock().unwrap().is_empty());
    let report = h.sweep(61).await.unwrap();
    assert_eq!(report["changed"][ANY], "released:open");
    assert_eq!(h.events(), [EventType::Opened]);
    let record = h.store.incident_now(KEY).unwrap().record;
    assert_eq!(record.opened_at, at(60), "opened when the hold ended");
    let timeline = h.timeline();
    assert!(timeline[0].starts_with(&format!("{ANY} has been ALARM since 2026-11-25T10:01:00Z (held back by the maintenance window of mute rule {RULE}")), "{timeline:?}");
    assert!(timeline[1].contains("incident opened"), "{timeline:?}");
    assert!(h.store.alarm_now(&arn(ANY)).unwrap().held.is_none());
    // Released once: the timer and the scheduled sweep may both come.
    assert_eq!(h.sweep(62).await.unwrap()["changed"], json!({}));
    assert_eq!(
        h.backend
            .calls()
            .iter()
            .filter(|c| c.starts_with("open"))
            .count(),
        1
    );
}

#[tokio::test]
async fn the_sweep_resolves_an_incident_whose_ok_was_never_delivered_and_says_so() {
    let h = H::new();
    h.deliver(direct(ANY, "ALARM", 1), 1).await;
    // Muted from minute 5: the OK at minute 20 ran no action; its event was lost too.
    h.alarms.set(vec![described(ANY, "OK", 20)]);
    let report = h.sweep(25).await.unwrap();
    assert_eq!(report["changed"][ANY], "applied:resolve");
    assert_eq!(h.events(), [EventType::Opened, EventType::Resolved]);
    let resolved = h.publisher.sent().pop().unwrap();
    assert!(
        resolved
            .summary
            .contains("Found by the reconciliation sweep"),
        "{}",
        resolved.summary
    );
    let last = h.timeline().pop().unwrap();
    assert!(
        last.contains("incident resolved") && last.contains("Found by the reconciliation sweep"),
        "{last}"
    );
    let note = h.backend.notes().pop().unwrap();
    assert!(
        note.text
            .contains("the pipeline never received that transition"),
        "{}",
        note.text
    );
    assert_eq!(h.store.alarm_now(&arn(ANY)).unwrap().changed_at, at(20));
}

#[tokio::test]
async fn the_sweep_never_undoes_a_newer_delivery_and_only_moves_a_same_state_watermark() {
    let h = H::new();
    h.deliver(direct(ANY, "ALARM", 10), 10).await;
    // DescribeAlarms answers from before the delivery (an OK at minute 5).
    h.alarms.set(vec![described(ANY, "OK", 5)]);
    assert_eq!(h.sweep(11).await.unwrap()["changed"], json!({}));
    assert_eq!(h.events(), [EventType::Opened]);
    // Same state, later time (a reason update): the watermark moves, nobody is told.
    h.alarms.set(vec![described(ANY, "ALARM", 12)]);
    assert_eq!(h.sweep(13).await.unwrap()["changed"][ANY], "watermark");
    assert_eq!(h.events(), [EventType::Opened]);
    assert_eq!(h.store.alarm_now(&arn(ANY)).unwrap().changed_at, at(12));
}

#[tokio::test]
async fn a_throttled_describe_alarms_applies_nothing_and_the_next_sweep_finishes() {
    let h = H::new();
    h.deliver(direct(ANY, "ALARM", 1), 1).await;
    h.alarms.set(vec![described(ANY, "OK", 20)]);
    *h.alarms.fail_next.lock().unwrap() = Some(throttled());
    let writes = *h.store.writes.lock().unwrap();
    let e = h.sweep(25).await.unwrap_err();
    assert!(e.retryable());
    assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
    assert!(e.to_string().contains("nothing was applied"), "{e}");
    assert_eq!(*h.store.writes.lock().unwrap(), writes);
    assert!(h.store.incident_now(KEY).unwrap().record.is_open());
    assert_eq!(
        h.sweep(30).await.unwrap()["changed"][ANY],
        "applied:resolve"
    );
}

#[tokio::test]
async fn a_silenced_alarm_is_held_counted_once_and_opens_when_the_silence_is_lifted() {
    let h = H::new();
    h.silence("s-00000001", SilenceTarget::Vpn(VPN.into()), 120);
    assert_eq!(h.deliver(direct(ANY, "ALARM", 1), 1).await, "held_silenced");
    assert_eq!(
        h.deliver(eventbridge(ANY, "ALARM", 1), 1).await,
        "ignore_duplicate"
    );
    assert!(h.publisher.sent().is_empty() && h.backend.calls().is_empty());
    let s = h.silences.now().get("s-00000001").unwrap().clone();
    assert_eq!(s.held_count, 1);
    assert_eq!(s.held[0].alarm_name, ANY);
    assert!(
        h.timer.calls().is_empty(),
        "a silence's timer is set with the silence"
    );
    // Alice lifts the silence while the alarm still fires.
    h.alarms.set(vec![described(ANY, "ALARM", 1)]);
    let mut book = h.silences.now();
    let alice = Actor::Person {
        id: "U0ALICE".into(),
        name: "alice".into(),
    };
    book.lift("s-00000001", &alice, at(10)).unwrap();
    *h.silences.book.lock().unwrap() = book;
    let report = h.sweep(11).await.unwrap();
    assert_eq!(report["changed"][ANY], "released:open");
    assert_eq!(h.events(), [EventType::Opened]);
    assert!(h.timeline()[0].contains(
        "held back by silence s-00000001 set by alice (U0ALICE): router firmware upgrade"
    ));
}

#[tokio::test]
async fn a_hold_that_ends_under_another_silence_is_held_again() {
    let h = H::new();
    h.deliver(muted(ANY, "ALARM", 1, 0, 30), 1).await;
    h.silence(
        "s-00000002",
        SilenceTarget::AlarmPrefix("vpn-tunnel-".into()),
        120,
    );
    h.alarms.set(vec![described(ANY, "ALARM", 1)]);
    let report = h.sweep(31).await.unwrap();
    assert_eq!(report["changed"][ANY], "held_again");
    assert!(h.publisher.sent().is_empty());
    let held = h.store.alarm_now(&arn(ANY)).unwrap().held.unwrap();
    assert_eq!(held.silence_id(), Some("s-00000002"));
}

#[tokio::test]
async fn an_ok_is_never_silenced_and_a_silence_elsewhere_holds_nothing() {
    let h = H::new();
    h.silence("s-00000004", SilenceTarget::AlarmPrefix("api-".into()), 120);
    assert_eq!(h.deliver(direct(ANY, "ALARM", 1), 1).await, "open");
    h.silence("s-00000003", SilenceTarget::IncidentKey(KEY.into()), 120);
    assert_eq!(h.deliver(direct(ANY, "OK", 5), 5).await, "resolve");
    assert_eq!(
        h.deliver(direct(BOTH, "ALARM", 6), 6).await,
        "held_silenced"
    );
    assert_eq!(h.events(), [EventType::Opened, EventType::Resolved]);
}

#[tokio::test]
async fn an_alarm_cloudwatch_no_longer_returns_is_reported_and_left_alone() {
    let h = H::new();
    h.deliver(direct(ANY, "ALARM", 1), 1).await;
    let report = h.sweep(5).await.unwrap();
    assert_eq!(report["missing"], json!([arn(ANY)]));
    assert!(h.store.incident_now(KEY).unwrap().record.is_open());
    assert_eq!(
        h.alarms.requests.lock().unwrap().as_slice(),
        [vec![ANY.to_string()]]
    );
    let bad = handle_invocation(&h.deps(), &Owner::new("", None), &json!({"sweep": 7}), SELF)
        .await
        .unwrap_err();
    assert!(!bad.retryable());
}

#[tokio::test]
async fn a_described_time_one_millisecond_short_is_the_same_transition() {
    // DescribeAlarms' CBOR double is truncated to the millisecond by the SDK.
    let h = H::new();
    h.deliver(muted(ANY, "ALARM", 1, 0, 60), 1).await;
    let mut d = described(ANY, "ALARM", 1);
    d.changed_at -= Duration::milliseconds(1);
    h.alarms.set(vec![d]);
    assert_eq!(h.sweep(61).await.unwrap()["changed"][ANY], "released:open");
    assert_eq!(
        h.store.alarm_now(&arn(ANY)).unwrap().changed_at,
        at(1),
        "the watermark keeps the event's time"
    );
}

const PAYMENTS: &str = "111122223333";
const RETAIL: &str = "444455556666";

/// `value` (an event or a described alarm) of `account` in `region`.
fn moved<T: serde::Serialize + serde::de::DeserializeOwned>(
    value: T,
    account: &str,
    region: &str,
) -> T {
    let text = serde_json::to_string(&value)
        .unwrap()
        .replace(ACCOUNT, account)
        .replace("eu-west-1", region);
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_sweep_reads_member_alarms_where_they_live_and_skips_an_unreachable_member() {
    let h = H::in_org();
    h.deliver(moved(direct(ANY, "ALARM", 1), PAYMENTS, "eu-west-1"), 1)
        .await;
    h.deliver(moved(direct(ANY, "ALARM", 2), RETAIL, "eu-central-1"), 2)
        .await;
    h.deliver(direct(BOTH, "ALARM", 3), 3).await;
    let payments_key = format!("{PAYMENTS}/{KEY}");
    let retail_key = format!("{RETAIL}/{KEY}");
    // Every OK was lost; retail's alarm-reader role refuses this stack.
    h.alarms.set(vec![
        moved(described(ANY, "OK", 20), PAYMENTS, "eu-west-1"),
        moved(described(ANY, "OK", 20), RETAIL, "eu-central-1"),
        described(BOTH, "OK", 20),
    ]);
    h.alarms.unreachable.lock().unwrap().insert(
        RETAIL.into(),
        shared::member_access::MemberAccessFailure {
            account: RETAIL.into(),
            region: "eu-central-1".into(),
            role_arn: format!("arn:aws:iam::{RETAIL}:role/incident-pipeline-alarm-reader"),
            code: "AccessDenied".into(),
            message: "not authorized to perform: sts:AssumeRole".into(),
            retryable: false,
        },
    );
    let report = h.sweep(25).await.unwrap();
    // One read per account and region, each in its own place.
    let mut places = h.alarms.places.lock().unwrap().clone();
    places.sort();
    assert_eq!(
        places,
        [
            (PAYMENTS.to_string(), "eu-west-1".to_string()),
            (ACCOUNT.to_string(), "eu-west-1".to_string()),
            (RETAIL.to_string(), "eu-central-1".to_string()),
        ]
    );
    assert!(!h
        .store
        .incident_now(&payments_key)
        .unwrap()
        .record
        .is_open());
    assert!(!h.store.incident_now(KEY).unwrap().record.is_open());
    assert!(
        h.store.incident_now(&retail_key).unwrap().record.is_open(),
        "left for the next sweep"
    );
    assert_eq!(
        report["unreachable"],
        json!([{"account": RETAIL, "region": "eu-central-1", "alarms": 1,
                "reason": format!("cannot assume arn:aws:iam::{RETAIL}:role/incident-pipeline-alarm-reader in {RETAIL}: AccessDenied")}])
    );
    assert_eq!(report["missing"], json!([]));
    assert_eq!(
        *h.refused.0.lock().unwrap(),
        [(
            "SweepUnreachable",
            RETAIL.to_string(),
            "AccessDenied".to_string()
        )]
    );
    // Once retail's role trusts the stack, the next sweep resolves it.
    h.alarms.unreachable.lock().unwrap().clear();
    h.sweep(30).await.unwrap();
    assert!(!h.store.incident_now(&retail_key).unwrap().record.is_open());
}

#[tokio::test]
async fn a_failed_read_of_the_home_account_still_applies_nothing_in_organization_mode() {
    let h = H::in_org();
    h.deliver(moved(direct(ANY, "ALARM", 1), PAYMENTS, "eu-west-1"), 1)
        .await;
    h.deliver(direct(BOTH, "ALARM", 3), 3).await;
    h.alarms.set(vec![
        moved(described(ANY, "OK", 20), PAYMENTS, "eu-west-1"),
        described(BOTH, "OK", 20),
    ]);
    *h.alarms.fail_next.lock().unwrap() = Some(throttled());
    // The member is read first (account order), then the home read fails: nothing applied.
    let e = h.sweep(25).await.unwrap_err();
    assert!(e.retryable());
    assert!(h
        .store
        .incident_now(&format!("{PAYMENTS}/{KEY}"))
        .unwrap()
        .record
        .is_open());
    assert!(h.store.incident_now(KEY).unwrap().record.is_open());
}
