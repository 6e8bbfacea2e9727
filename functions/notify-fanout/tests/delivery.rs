//! Delivery against a fake Slack on loopback, started by each test: payloads,
//! retries (429 + Retry-After, 500 then success), non-retryable errors, threads,
//! top-level edits, and no double posts after a partial failure.

mod support;

use std::time::{Duration, Instant};

use notify_fanout::config::Config;
use notify_fanout::handler::{handle, Deps, HandlerError, Summary};
use notify_fanout::slack_api::{Budget, SlackClient};
use notify_fanout::store::{delivery_key, thread_key, DeliveryRecord, DeliveryStatus};
use serde_json::{json, Value};
use shared::closure::{PostIncidentSummary, RetrospectiveItem};
use shared::error::Retryable;
use shared::incident::{Actor, Impact};
use shared::notification::{EventType, Notification};
use shared::state::Owner;
use support::*;

const POST: &str = "/api/chat.postMessage";
const UPDATE: &str = "/api/chat.update";

struct World {
    fake: FakeSlack,
    store: MemoryStore,
    settings: FixedSettings,
    config: Config,
    slack: SlackClient,
}

impl World {
    async fn new(routing: Option<Value>) -> World {
        let fake = FakeSlack::start().await;
        let settings = FixedSettings::new(&secret_json(&fake, routing));
        let config = config(&fake);
        let slack = SlackClient::new(&config.slack_api_url).unwrap();
        World {
            fake,
            store: MemoryStore::default(),
            settings,
            config,
            slack,
        }
    }

    /// Only the bot destination `oncall`.
    async fn bot_only() -> World {
        World::new(Some(json!({"default": ["oncall"]}))).await
    }

    async fn run_with(&self, event: &Value, budget: Duration) -> Result<Summary, HandlerError> {
        self.run_as(event, budget, &Owner::new("", None)).await
    }

    /// One invocation of request `owner` (the same owner again: Lambda's retry).
    async fn run_as(
        &self,
        event: &Value,
        budget: Duration,
        owner: &Owner,
    ) -> Result<Summary, HandlerError> {
        let deps = Deps {
            slack: &self.slack,
            store: &self.store,
            settings: &self.settings,
            config: &self.config,
        };
        handle(&deps, event, Budget::after(budget), owner).await
    }

    async fn run(&self, event: &Value) -> Result<Summary, HandlerError> {
        self.run_with(event, Duration::from_secs(20)).await
    }
}

fn header(body: &Value) -> String {
    body["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn all_text(body: &Value) -> String {
    body.to_string()
}

#[tokio::test]
async fn opened_incident_is_a_top_level_bot_message_with_blocks_token_and_mention() {
    let w = World::bot_only().await;
    let n = incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z");
    let summary = w.run(&incident_event("m-open", &n)).await.unwrap();
    assert_eq!(summary.threads_started, 1);

    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 1);
    let req = &posts[0];
    assert_eq!(req.headers["authorization"], format!("Bearer {TOKEN}"));
    assert!(req.headers["content-type"].starts_with("application/json"));
    let body = &req.body;
    assert_eq!(body["channel"], "C0ONCALL");
    assert!(body.get("thread_ts").is_none());
    assert_eq!(body["unfurl_links"], false);
    assert_eq!(
        header(body),
        "🔴 OPENED · Impact 2 (High) · VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
    );
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("<!here> 🔴 OPENED"),
        "{}",
        body["text"]
    );
    assert_eq!(
        body["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("<!here>")
    );
    assert!(body["blocks"].as_array().unwrap().len() <= 50);

    // The thread is remembered with the channel ID and ts Slack answered.
    let thread = w
        .store
        .thread(&thread_key(INCIDENT_KEY, "oncall"))
        .unwrap()
        .posted
        .unwrap();
    assert_eq!(
        (thread.channel.as_str(), thread.ts.as_str()),
        ("C0ONCALL", "1795600001.000100")
    );
    assert!(!thread.resolved);
    assert_eq!(
        w.store
            .delivery(&delivery_key("m-open", "oncall"))
            .unwrap()
            .status,
        DeliveryStatus::Done
    );
}

#[tokio::test]
async fn below_the_mention_threshold_there_is_no_mention() {
    let w = World::bot_only().await;
    let n = incident(EventType::Opened, Impact::MEDIUM, "2026-11-25T10:01:00Z");
    w.run(&incident_event("m-1", &n)).await.unwrap();
    let body = &w.fake.requests_to(POST)[0].body;
    assert!(!all_text(body).contains("<!here>"), "{body}");
}

#[tokio::test]
async fn webhook_gets_blocks_and_names_the_incident_it_updates() {
    let w = World::new(Some(json!({"default": ["ops"]}))).await;
    let n = incident(EventType::Updated, Impact::HIGH, "2026-11-25T10:05:00Z");
    let summary = w.run(&incident_event("m-upd", &n)).await.unwrap();
    assert_eq!(summary.posted, 1);
    let hooks = w.fake.requests_to(WEBHOOK_PATH);
    assert_eq!(hooks.len(), 1);
    let body = &hooks[0].body;
    assert!(!hooks[0].headers.contains_key("authorization"));
    assert_eq!(
        header(body),
        "🔴 UPDATED · Impact 2 (High) · VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
    );
    assert_eq!(body["blocks"][1]["type"], "context");
    assert!(
        body["blocks"][1]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("↪️ Update to incident `VPN connection vpn-0a1b2c3d4e5f67890 is DOWN`"),
        "{body}"
    );
    assert!(w.fake.requests_to(POST).is_empty());
}

#[tokio::test]
async fn rate_limited_429_waits_for_retry_after_then_posts() {
    let w = World::bot_only().await;
    w.fake.script(POST, [Reply::rate_limited(1)]);
    let n = incident(EventType::Opened, Impact::LOW, "2026-11-25T10:01:00Z");
    let summary = w.run(&incident_event("m-429", &n)).await.unwrap();
    assert_eq!(summary.threads_started, 1);
    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 2);
    let waited = posts[1].at - posts[0].at;
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(posts[0].body, posts[1].body);
}

#[tokio::test]
async fn retry_after_beyond_the_budget_fails_retryable_without_waiting() {
    let w = World::bot_only().await;
    w.fake.script(POST, [Reply::rate_limited(30)]);
    let n = incident(EventType::Opened, Impact::LOW, "2026-11-25T10:01:00Z");
    let started = Instant::now();
    let err = w
        .run_with(&incident_event("m-429b", &n), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "must not wait 30 s"
    );
    assert!(err.retryable());
    assert_eq!(err.lambda_error_type(), "Retryable.SlackRateLimited");
    assert_eq!(w.fake.requests_to(POST).len(), 1);
    // The claims were released: the retry can post at once.
    assert!(w
        .store
        .delivery(&delivery_key("m-429b", "oncall"))
        .is_none());
    assert!(w
        .store
        .thread(&thread_key(INCIDENT_KEY, "oncall"))
        .is_none());
}

#[tokio::test]
async fn server_error_500_then_success_is_retried_with_backoff() {
    let w = World::new(Some(json!({"default": ["ops"]}))).await;
    w.fake.script(WEBHOOK_PATH, [Reply::status(500, "oops")]);
    let summary = w
        .run(&sns_event("m-500", Some("Note"), "hello"))
        .await
        .unwrap();
    assert_eq!(summary.posted, 1);
    let hooks = w.fake.requests_to(WEBHOOK_PATH);
    assert_eq!(hooks.len(), 2);
    let gap = hooks[1].at - hooks[0].at;
    assert!(
        gap >= Duration::from_millis(150) && gap < Duration::from_secs(5),
        "{gap:?}"
    );
}

#[tokio::test]
async fn invalid_auth_fails_at_once_non_retryable_and_drops_cached_secret() {
    let w = World::bot_only().await;
    w.fake.script(POST, [Reply::api_error("invalid_auth")]);
    let n = incident(EventType::Opened, Impact::LOW, "2026-11-25T10:01:00Z");
    let err = w.run(&incident_event("m-auth", &n)).await.unwrap_err();
    assert_eq!(
        w.fake.requests_to(POST).len(),
        1,
        "must not retry invalid_auth"
    );
    assert!(!err.retryable());
    assert_eq!(err.lambda_error_type(), "NonRetryable.SlackAuth");
    assert_eq!(
        err.to_string(),
        "1 of 1 Slack deliveries failed: oncall: Slack chat.postMessage: error invalid_auth"
    );
    assert_eq!(w.settings.invalidations(), 1);
}

#[tokio::test]
async fn channel_not_found_and_webhook_404_are_clear_non_retryable_errors() {
    let w = World::new(None).await;
    w.fake.script(POST, [Reply::api_error("channel_not_found")]);
    w.fake
        .script(WEBHOOK_PATH, [Reply::status(404, "no_service")]);
    let err = w
        .run(&sns_event("m-404", None, "plain text"))
        .await
        .unwrap_err();
    assert!(!err.retryable());
    let msg = err.to_string();
    assert!(msg.starts_with("2 of 2 Slack deliveries failed: "), "{msg}");
    assert!(
        msg.contains("oncall: Slack chat.postMessage: error channel_not_found"),
        "{msg}"
    );
    assert!(
        msg.contains("ops: Slack webhook: rejected with HTTP 404 (no_service)"),
        "{msg}"
    );
    assert_eq!(w.fake.requests().len(), 2);
}

#[tokio::test]
async fn later_messages_reply_in_the_thread_and_edit_the_top_level_message() {
    let w = World::bot_only().await;
    let opened = incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z");
    w.run(&incident_event("m-1", &opened)).await.unwrap();
    assert_eq!(w.fake.requests_to(POST).len(), 1);
    let thread = w
        .store
        .thread(&thread_key(INCIDENT_KEY, "oncall"))
        .unwrap()
        .posted
        .unwrap();

    let diagnosed = incident(EventType::Diagnosed, Impact::HIGH, "2026-11-25T10:04:30Z");
    let summary = w.run(&incident_event("m-2", &diagnosed)).await.unwrap();
    assert_eq!(summary.replied, 1);

    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 2);
    let reply = &posts[1].body;
    assert_eq!(reply["thread_ts"], thread.ts.as_str());
    assert_eq!(reply["channel"], "C0ONCALL");
    assert!(reply.get("reply_broadcast").is_none());
    assert!(reply["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("🔎 *DIAGNOSED*"));

    let updates = w.fake.requests_to(UPDATE);
    assert_eq!(updates.len(), 1);
    assert_eq!(
        updates[0].headers["authorization"],
        format!("Bearer {TOKEN}")
    );
    assert_eq!(updates[0].body["channel"], "C0ONCALL");
    assert_eq!(updates[0].body["ts"], thread.ts.as_str());
    assert_eq!(
        header(&updates[0].body),
        "🔴 OPEN · Impact 2 (High) · VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
    );
}

#[tokio::test]
async fn escalation_reply_is_broadcast_with_mention() {
    let w = World::bot_only().await;
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::MEDIUM, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    w.run(&incident_event(
        "m-2",
        &incident(
            EventType::Escalated,
            Impact::CRITICAL,
            "2026-11-25T10:03:00Z",
        ),
    ))
    .await
    .unwrap();
    let reply = &w.fake.requests_to(POST)[1].body;
    assert_eq!(reply["reply_broadcast"], true);
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .starts_with("<!here> 🔺 ESCALATED"),
        "{reply}"
    );
}

#[tokio::test]
async fn resolve_replies_and_edits_top_level_to_resolved_with_duration() {
    let w = World::bot_only().await;
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    let mut resolved = incident(EventType::Resolved, Impact::HIGH, "2026-11-25T10:33:10Z");
    resolved.duration_seconds = Some(1930);
    w.run(&incident_event("m-3", &resolved)).await.unwrap();

    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 2);
    assert!(posts[0].body.get("thread_ts").is_none());
    assert_eq!(posts[1].body["thread_ts"], "1795600001.000100");
    let update = &w.fake.requests_to(UPDATE)[0].body;
    assert_eq!(update["ts"], "1795600001.000100");
    assert_eq!(
        header(update),
        "✅ RESOLVED · Impact 2 (High) · VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
    );
    assert!(update["blocks"][1]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("*Resolved after 32m 10s.*"));
    assert!(!all_text(update).contains("<!here>"), "edits never mention");
    let thread = w
        .store
        .thread(&thread_key(INCIDENT_KEY, "oncall"))
        .unwrap()
        .posted
        .unwrap();
    assert!(thread.resolved);

    // A late update after the resolution replies but leaves the top-level resolved.
    w.run(&incident_event(
        "m-late",
        &incident(EventType::Diagnosed, Impact::HIGH, "2026-11-25T10:34:00Z"),
    ))
    .await
    .unwrap();
    assert_eq!(w.fake.requests_to(POST).len(), 3);
    assert_eq!(w.fake.requests_to(UPDATE).len(), 1);
}

#[tokio::test]
async fn thread_records_milestones_and_resolution_closes_with_the_summary() {
    let w = World::bot_only().await;
    let tk = thread_key(INCIDENT_KEY, "oncall");
    let milestones = || w.store.thread(&tk).unwrap().posted.unwrap().milestones;
    let before = chrono::Utc::now().timestamp();
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    let opened = milestones();
    assert_eq!(opened.detected_at, Some(t("2026-11-25T10:01:00Z")));
    let notified = opened.notified_at.unwrap().timestamp();
    assert!((before..=chrono::Utc::now().timestamp()).contains(&notified));
    assert_eq!(opened.diagnosed_at, None);

    // An update is no diagnosis; the first diagnosis is stamped, a second one is not.
    w.run(&incident_event(
        "m-2",
        &incident(EventType::Updated, Impact::HIGH, "2026-11-25T10:02:00Z"),
    ))
    .await
    .unwrap();
    assert_eq!(milestones().diagnosed_at, None);
    let before = chrono::Utc::now().timestamp();
    w.run(&incident_event(
        "m-3",
        &incident(EventType::Diagnosed, Impact::HIGH, "2026-11-25T10:04:30Z"),
    ))
    .await
    .unwrap();
    let diagnosed = milestones().diagnosed_at.unwrap();
    assert!((before..=chrono::Utc::now().timestamp()).contains(&diagnosed.timestamp()));
    w.run(&incident_event(
        "m-4",
        &incident(EventType::Diagnosed, Impact::HIGH, "2026-11-25T10:05:00Z"),
    ))
    .await
    .unwrap();
    assert_eq!(milestones().diagnosed_at, Some(diagnosed));
    assert_eq!(milestones().notified_at, opened.notified_at);

    let mut resolved = incident(EventType::Resolved, Impact::HIGH, "2026-11-25T10:33:10Z");
    resolved.duration_seconds = Some(1930);
    w.run(&incident_event("m-5", &resolved)).await.unwrap();
    let figure = |at: chrono::DateTime<chrono::Utc>| {
        shared::notification::format_duration(
            u64::try_from((at - t("2026-11-25T10:01:00Z")).num_seconds()).unwrap(),
        )
    };
    let expected = format!(
        "*Closing summary*\n• Detected at <!date^1795600860^{{date_short_pretty}} {{time}}|2026-11-25 10:01 UTC>\n• Time to notify: {}\n• Time to diagnose: {}\n• Time to resolve: 32m 10s",
        figure(opened.notified_at.unwrap()),
        figure(diagnosed),
    );
    let posts = w.fake.requests_to(POST);
    let reply = &posts.last().unwrap().body;
    assert_eq!(
        reply["blocks"][1]["text"]["text"],
        expected.as_str(),
        "{reply}"
    );
    let updates = w.fake.requests_to(UPDATE);
    let card = &updates.last().unwrap().body;
    assert_eq!(
        card["blocks"][2]["text"]["text"],
        expected.as_str(),
        "{card}"
    );
    // Earlier replies carry no closing summary.
    assert!(posts[..posts.len() - 1]
        .iter()
        .all(|p| !all_text(&p.body).contains("Closing summary")));
}

#[tokio::test]
async fn new_incident_after_resolution_starts_a_new_thread() {
    let w = World::bot_only().await;
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    w.run(&incident_event(
        "m-2",
        &incident(EventType::Resolved, Impact::HIGH, "2026-11-25T10:30:00Z"),
    ))
    .await
    .unwrap();
    // A new incident is a new OpsItem.
    let mut next = incident(EventType::Opened, Impact::HIGH, "2026-11-26T08:00:00Z");
    next.incident_ref = Some("oi-0123456789cd".into());
    let summary = w.run(&incident_event("m-3", &next)).await.unwrap();
    assert_eq!(summary.threads_started, 1);
    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 3);
    assert!(posts[2].body.get("thread_ts").is_none());
    let thread = w
        .store
        .thread(&thread_key(INCIDENT_KEY, "oncall"))
        .unwrap()
        .posted
        .unwrap();
    assert_eq!(thread.ts, "1795600003.000100");
    assert!(!thread.resolved);
}

#[tokio::test]
async fn retry_after_partial_failure_does_not_post_twice() {
    let w = World::new(None).await; // both destinations
                                    // The bot destination keeps failing with 503 until the budget is spent.
    w.fake.script(POST, (0..20).map(|_| Reply::status(503, "")));
    let event = incident_event(
        "m-partial",
        &incident(EventType::Opened, Impact::LOW, "2026-11-25T10:01:00Z"),
    );
    let err = w
        .run_with(&event, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(err.retryable(), "{err}");
    assert_eq!(err.lambda_error_type(), "Retryable.SlackTimeBudget");
    assert!(
        err.to_string().starts_with(
            "1 of 2 Slack deliveries failed: oncall: Slack chat.postMessage: gave up after"
        ),
        "{err}"
    );
    assert_eq!(w.fake.requests_to(WEBHOOK_PATH).len(), 1);
    let failed_attempts = w.fake.requests_to(POST).len();
    assert!(failed_attempts >= 2, "{failed_attempts}");

    // Lambda retries the same event: Slack is fine again.
    w.fake.clear_scripts();
    w.fake.clear();
    let summary = w.run(&event).await.unwrap();
    assert_eq!(summary.already_delivered, 1);
    assert_eq!(summary.threads_started, 1);
    assert_eq!(
        w.fake.requests_to(WEBHOOK_PATH).len(),
        0,
        "webhook must not get the message twice"
    );
    assert_eq!(w.fake.requests_to(POST).len(), 1);

    // And a third delivery of the same message posts nothing at all.
    w.fake.clear();
    let summary = w.run(&event).await.unwrap();
    assert_eq!(summary.already_delivered, 2);
    assert!(w.fake.requests().is_empty());
}

#[tokio::test]
async fn concurrent_messages_of_a_new_incident_make_one_top_level_message() {
    let w = World::bot_only().await;
    let opened = incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z"),
    );
    let updated = incident_event(
        "m-2",
        &incident(EventType::Updated, Impact::HIGH, "2026-11-25T10:01:05Z"),
    );
    let (a, b) = tokio::join!(w.run(&opened), w.run(&updated));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.threads_started + b.threads_started, 1);
    assert_eq!(a.replied + b.replied, 1);
    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 2);
    let top_level: Vec<_> = posts
        .iter()
        .filter(|p| p.body.get("thread_ts").is_none())
        .collect();
    assert_eq!(
        top_level.len(),
        1,
        "two top-level messages for one incident"
    );
    assert_eq!(w.fake.requests_to(UPDATE).len(), 1);
}

#[tokio::test]
async fn reply_posted_but_edit_failed_resumes_with_the_edit_only() {
    let w = World::bot_only().await;
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    w.fake
        .script(UPDATE, (0..20).map(|_| Reply::status(502, "")));
    let event = incident_event(
        "m-2",
        &incident(EventType::Resolved, Impact::HIGH, "2026-11-25T10:30:00Z"),
    );
    let err = w
        .run_with(&event, Duration::from_millis(1200))
        .await
        .unwrap_err();
    assert!(err.retryable());
    assert_eq!(
        w.store.delivery(&delivery_key("m-2", "oncall")).unwrap(),
        DeliveryRecord {
            status: DeliveryStatus::Posted,
            lease_until: 0,
            channel: Some("C0ONCALL".into()),
            thread_ts: Some("1795600001.000100".into()),
        }
    );
    w.fake.clear_scripts();
    w.fake.clear();
    let summary = w.run(&event).await.unwrap();
    assert_eq!(summary.replied, 1);
    assert!(
        w.fake.requests_to(POST).is_empty(),
        "the reply must not be posted twice"
    );
    let updates = w.fake.requests_to(UPDATE);
    assert_eq!(updates.len(), 1);
    assert!(header(&updates[0].body).starts_with("✅ RESOLVED"));
    assert_eq!(
        w.store
            .delivery(&delivery_key("m-2", "oncall"))
            .unwrap()
            .status,
        DeliveryStatus::Done
    );
}

#[tokio::test]
async fn a_live_claim_by_another_invocation_is_a_retryable_in_progress_error() {
    let w = World::bot_only().await;
    w.store.insert_delivery(
        &delivery_key("m-busy", "oncall"),
        DeliveryRecord {
            status: DeliveryStatus::Sending,
            lease_until: chrono::Utc::now().timestamp() + 60,
            channel: None,
            thread_ts: None,
        },
    );
    let err = w.run(&sns_event("m-busy", None, "x")).await.unwrap_err();
    assert_eq!(err.lambda_error_type(), "Retryable.DeliveryInProgress");
    assert!(w.fake.requests().is_empty());
}

/// The first attempt claimed the delivery and died before posting (its claim's lease
/// still runs): Lambda's retry of the same request claims it again at once and posts
/// once, instead of failing "in progress" on its own claim until the lease ends.
#[tokio::test]
async fn a_retry_of_the_same_request_takes_its_own_claim_again() {
    let w = World::bot_only().await;
    let request = Owner::new("req-first", None);
    let event = sns_event("m-own", None, "x");
    // The claim the first attempt wrote (through the store, so it names its owner).
    use notify_fanout::store::StateStore;
    let lease = chrono::Utc::now().timestamp() + 60;
    let pk = delivery_key("m-own", "oncall");
    w.store
        .claim_delivery(&pk, "req-first", chrono::Utc::now().timestamp(), lease)
        .await
        .unwrap();
    let err = w.run(&event).await.unwrap_err();
    assert_eq!(err.lambda_error_type(), "Retryable.DeliveryInProgress");
    let summary = w
        .run_as(&event, Duration::from_secs(20), &request)
        .await
        .unwrap();
    assert_eq!(summary.posted, 1);
    assert_eq!(w.fake.requests_to(POST).len(), 1);
    assert_eq!(w.store.delivery(&pk).unwrap().status, DeliveryStatus::Done);
}

/// A notification published twice (its first publication's answer was lost, and the
/// step ran again) has one id: delivered once.
#[tokio::test]
async fn the_same_notification_published_twice_is_delivered_once() {
    let w = World::bot_only().await;
    let mut n = incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z");
    n.notification_id = Some("4f0c1c2e-0000-4000-8000-000000000001".into());
    w.run(&incident_event("sns-1", &n)).await.unwrap();
    let again = w.run(&incident_event("sns-2", &n)).await.unwrap();
    assert_eq!(again.already_delivered, 1);
    assert_eq!(w.fake.requests_to(POST).len(), 1);
}

#[tokio::test]
async fn raw_alarm_threads_by_arn_and_ok_resolves_with_duration() {
    let w = World::bot_only().await;
    let alarm = |state: &str, old: &str, at: &str| {
        json!({
            "AlarmName": "vpn-tunnel-down", "AlarmDescription": null, "AWSAccountId": "123456789012",
            "NewStateValue": state, "NewStateReason": format!("went {state}"), "StateChangeTime": at,
            "Region": "EU (Ireland)", "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down",
            "OldStateValue": old,
            "Trigger": {"MetricName": "TunnelState", "Namespace": "AWS/VPN", "Statistic": "MINIMUM",
                        "Dimensions": [{"value": "vpn-0a1b2c3d4e5f67890", "name": "VpnId"}],
                        "Period": 60, "EvaluationPeriods": 3, "ComparisonOperator": "LessThanThreshold", "Threshold": 1.0}
        })
        .to_string()
    };
    w.run(&sns_event(
        "a-1",
        Some("ALARM: vpn"),
        &alarm("ALARM", "OK", "2026-11-25T10:01:00.000+0000"),
    ))
    .await
    .unwrap();
    w.run(&sns_event(
        "a-2",
        Some("OK: vpn"),
        &alarm("OK", "ALARM", "2026-11-25T10:11:30.000+0000"),
    ))
    .await
    .unwrap();
    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 2);
    assert_eq!(header(&posts[0].body), "🔴 ALARM · vpn-tunnel-down");
    assert_eq!(posts[1].body["thread_ts"], "1795600001.000100");
    let update = &w.fake.requests_to(UPDATE)[0].body;
    assert_eq!(header(update), "✅ RESOLVED · vpn-tunnel-down");
    assert!(update["blocks"][1]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("*Resolved after 10m 30s.*"));
    let key = thread_key(
        "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down",
        "oncall",
    );
    assert!(w.store.thread(&key).unwrap().posted.unwrap().resolved);
}

#[tokio::test]
async fn old_alarm_message_without_arn_is_posted_as_an_alarm_not_text() {
    // events/sns-no-alarm-arn-old-region-alarm.json: CloudWatch's SNS message from
    // before `AlarmArn` existed, Region "US - N. Virginia".
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/sns-no-alarm-arn-old-region-alarm.json"
    );
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let w = World::bot_only().await;
    let summary = w.run(&event).await.unwrap();
    assert_eq!(summary.threads_started, 1, "an alarm starts its thread");
    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 1);
    assert_eq!(
        header(&posts[0].body),
        "🔴 ALARM · vpn-tunnel-down-vpn-0c3d4e5f6a7b8c9d0"
    );
    let text = all_text(&posts[0].body);
    assert!(text.contains("us-east-1"), "{text}");
    assert!(
        text.contains(
            "arn:aws:cloudwatch:us-east-1:123456789012:alarm:vpn-tunnel-down-vpn-0c3d4e5f6a7b8c9d0"
        ),
        "{text}"
    );
    // Threaded by the rebuilt ARN.
    let key = thread_key(
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:vpn-tunnel-down-vpn-0c3d4e5f6a7b8c9d0",
        "oncall",
    );
    assert!(w.store.thread(&key).is_some());
}

#[tokio::test]
async fn eventbridge_event_and_plain_text_are_posted_without_threads() {
    let w = World::bot_only().await;
    let event = json!({"version": "0", "id": "e-1", "detail-type": "AWS Health Event", "source": "aws.health",
        "account": "123456789012", "time": "2026-11-25T10:00:00Z", "region": "eu-west-1", "resources": [],
        "detail": {"eventTypeCode": "AWS_VPN_REDUNDANCY_LOSS", "eventDescription": [{"language": "en_US", "latestDescription": "Your VPN connection has lost redundancy."}]}});
    w.run(&sns_event("e-1", None, &event.to_string()))
        .await
        .unwrap();
    w.run(&sns_event(
        "t-1",
        Some("Heads-up"),
        "Maintenance <tonight> & tomorrow",
    ))
    .await
    .unwrap();
    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 2);
    assert_eq!(header(&posts[0].body), "📣 AWS Health Event");
    assert!(all_text(&posts[0].body).contains("Your VPN connection has lost redundancy."));
    assert_eq!(header(&posts[1].body), "Heads-up");
    assert_eq!(
        posts[1].body["blocks"][1]["text"]["text"],
        "Maintenance &lt;tonight&gt; &amp; tomorrow"
    );
    assert!(posts.iter().all(|p| p.body.get("thread_ts").is_none()));
    assert!(w.fake.requests_to(UPDATE).is_empty());
}

#[tokio::test]
async fn routing_sends_critical_to_oncall_and_everything_to_ops() {
    let routing = json!({"rules": [
        {"name": "critical", "min_impact": 2, "destinations": ["oncall"]},
        {"name": "everything", "destinations": ["ops"]}
    ]});
    let w = World::new(Some(routing)).await;
    w.run(&incident_event(
        "m-low",
        &incident(EventType::Opened, Impact::LOW, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    assert_eq!(
        (
            w.fake.requests_to(POST).len(),
            w.fake.requests_to(WEBHOOK_PATH).len()
        ),
        (0, 1)
    );
    w.fake.clear();
    let summary = w
        .run(&incident_event(
            "m-crit",
            &incident(EventType::Opened, Impact::CRITICAL, "2026-11-25T11:01:00Z"),
        ))
        .await
        .unwrap();
    assert_eq!((summary.threads_started, summary.posted), (1, 1));
    assert_eq!(
        (
            w.fake.requests_to(POST).len(),
            w.fake.requests_to(WEBHOOK_PATH).len()
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn not_an_sns_event_is_non_retryable_bad_input_and_nothing_is_sent() {
    let w = World::new(None).await;
    let err = w.run(&json!({"detail-type": "x"})).await.unwrap_err();
    assert_eq!(err.lambda_error_type(), "NonRetryable.BadInput");
    assert!(w.fake.requests().is_empty());
}

/// Regression (issue 10, alarm storm): the resolution may carry an earlier time than
/// the update before it (the both-tunnels alarm's OK changed before the any-tunnel
/// alarm's OK was applied). It still edits the top-level message to resolved.
#[tokio::test]
async fn resolution_older_than_the_last_update_still_edits_top_level_to_resolved() {
    let w = World::bot_only().await;
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    w.run(&incident_event(
        "m-2",
        &incident(EventType::Updated, Impact::HIGH, "2026-11-25T10:20:00Z"),
    ))
    .await
    .unwrap();
    assert_eq!(w.fake.requests_to(UPDATE).len(), 1);
    let mut resolved = incident(EventType::Resolved, Impact::HIGH, "2026-11-25T10:15:00Z");
    resolved.duration_seconds = Some(840);
    w.run(&incident_event("m-3", &resolved)).await.unwrap();

    let updates = w.fake.requests_to(UPDATE);
    assert_eq!(updates.len(), 2);
    assert_eq!(
        header(&updates[1].body),
        "✅ RESOLVED · Impact 2 (High) · VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
    );
    let thread = w
        .store
        .thread(&thread_key(INCIDENT_KEY, "oncall"))
        .unwrap()
        .posted
        .unwrap();
    assert!(thread.resolved);

    // An update older than the resolution, arriving after it, leaves it resolved.
    w.run(&incident_event(
        "m-4",
        &incident(EventType::Updated, Impact::HIGH, "2026-11-25T10:10:00Z"),
    ))
    .await
    .unwrap();
    assert_eq!(w.fake.requests_to(UPDATE).len(), 2);
}

// ---- responding from Slack (#11) ----

fn jane() -> Actor {
    Actor::Person {
        id: "U0JANE".into(),
        name: "Jane Doe".into(),
    }
}

fn owned(event: EventType, impact: Impact, at: &str) -> Notification {
    let mut n = incident(event, impact, at);
    n.roles.owner = Some(jane());
    n
}

/// The `value`s of the buttons in the incident's actions block, by action id.
fn action_buttons(body: &Value) -> Vec<(String, String, String)> {
    body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["block_id"] == "incident.actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .map(|e| {
            (
                e["action_id"].as_str().unwrap().to_string(),
                e["text"]["text"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn top_level_bot_message_offers_the_actions_keyed_by_incident_and_webhooks_do_not() {
    let w = World::new(Some(json!({"default": ["oncall", "ops"]}))).await;
    let n = incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z");
    w.run(&incident_event("m-open", &n)).await.unwrap();
    let post = &w.fake.requests_to(POST)[0].body;
    let key = INCIDENT_KEY.to_string();
    assert_eq!(
        action_buttons(post),
        vec![
            (
                "incident.acknowledge".into(),
                "Acknowledge".into(),
                key.clone()
            ),
            ("incident.note".into(), "Add note".into(), key.clone()),
            (
                "incident.rerun".into(),
                "Re-run diagnosis".into(),
                key.clone()
            ),
            ("incident.resolve".into(), "Resolve".into(), key),
        ]
    );
    assert!(all_text(post).contains("*Owner*\\nnobody yet"), "{post}");
    let hook = &w.fake.requests_to(WEBHOOK_PATH)[0].body;
    assert!(action_buttons(hook).is_empty());
}

#[tokio::test]
async fn actions_false_in_the_secret_leaves_the_buttons_out() {
    let fake = FakeSlack::start().await;
    let secret = json!({"destinations": {"oncall": {"type": "bot", "token": TOKEN, "channel": "C0ONCALL", "actions": false}}});
    let w = World {
        settings: FixedSettings::new(&secret.to_string()),
        config: config(&fake),
        slack: SlackClient::new(&fake.api_url()).unwrap(),
        store: MemoryStore::default(),
        fake,
    };
    let n = incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z");
    w.run(&incident_event("m-open", &n)).await.unwrap();
    assert!(action_buttons(&w.fake.requests_to(POST)[0].body).is_empty());
}

#[tokio::test]
async fn acknowledged_replies_in_the_thread_and_the_card_shows_the_owner_and_take_ownership() {
    let w = World::bot_only().await;
    let opened = incident(EventType::Opened, Impact::CRITICAL, "2026-11-25T10:01:00Z");
    w.run(&incident_event("m-1", &opened)).await.unwrap();
    let ack = owned(
        EventType::Acknowledged,
        Impact::CRITICAL,
        "2026-11-25T10:05:10Z",
    );
    let summary = w.run(&incident_event("m-2", &ack)).await.unwrap();
    assert_eq!(summary.replied, 1);

    let posts = w.fake.requests_to(POST);
    let reply = &posts[1].body;
    let thread = w
        .store
        .thread(&thread_key(INCIDENT_KEY, "oncall"))
        .unwrap()
        .posted
        .unwrap();
    assert_eq!(reply["thread_ts"], thread.ts.as_str());
    assert!(reply.get("reply_broadcast").is_none());
    assert_eq!(
        reply["blocks"][0]["text"]["text"],
        "🙋 *ACKNOWLEDGED* · Impact 1 (Critical) · *Owner:* <@U0JANE>\nVPN incident, step acknowledged"
    );
    // An acknowledgement never calls anyone.
    assert!(!all_text(reply).contains("<!here>"), "{reply}");

    let updates = w.fake.requests_to(UPDATE);
    assert_eq!(updates.len(), 1);
    let card = &updates[0].body;
    assert_eq!(card["ts"], thread.ts.as_str());
    assert!(all_text(card).contains("*Owner*\\n<@U0JANE>"), "{card}");
    let buttons = action_buttons(card);
    assert_eq!(buttons[0].1, "Take ownership");
    assert_eq!(buttons.len(), 4);
}

#[tokio::test]
async fn escalation_of_an_owned_incident_does_not_call_people_again() {
    let w = World::bot_only().await;
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    assert!(w.fake.requests_to(POST)[0].body["text"]
        .as_str()
        .unwrap()
        .starts_with("<!here>"));
    w.run(&incident_event(
        "m-2",
        &owned(
            EventType::Acknowledged,
            Impact::HIGH,
            "2026-11-25T10:02:00Z",
        ),
    ))
    .await
    .unwrap();
    w.run(&incident_event(
        "m-3",
        &owned(
            EventType::Escalated,
            Impact::CRITICAL,
            "2026-11-25T10:03:00Z",
        ),
    ))
    .await
    .unwrap();
    let reply = &w.fake.requests_to(POST)[2].body;
    assert!(
        reply["text"].as_str().unwrap().starts_with("🔺 ESCALATED"),
        "{reply}"
    );
    assert!(!all_text(reply).contains("<!here>"), "{reply}");
    // Still shown in the channel: the impact rose.
    assert_eq!(reply["reply_broadcast"], true);
}

#[tokio::test]
async fn unanswered_calls_the_escalation_mention_in_thread_and_channel() {
    let w = World::new(Some(json!({"default": ["oncall", "ops"]}))).await;
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::CRITICAL, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    // Impact 3: below the destination's mention threshold, but the escalation
    // policy decided it matters.
    let unanswered = incident(
        EventType::Unanswered,
        Impact::MEDIUM,
        "2026-11-25T10:16:00Z",
    );
    w.run(&incident_event("m-2", &unanswered)).await.unwrap();
    let reply = &w.fake.requests_to(POST)[1].body;
    assert_eq!(reply["reply_broadcast"], true);
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .starts_with("<!subteam^S0LEADS> 📣 NOT ACKNOWLEDGED"),
        "{reply}"
    );
    assert!(reply["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with(
            "<!subteam^S0LEADS> 📣 *NOT ACKNOWLEDGED* · Impact 3 (Medium) · open for 15m 00s"
        ));
    // The webhook destination has no mention: the post names the incident only.
    let hooks = w.fake.requests_to(WEBHOOK_PATH);
    assert!(
        !all_text(&hooks[1].body).contains("subteam"),
        "{}",
        hooks[1].body
    );
}

#[tokio::test]
async fn resolution_from_slack_posts_the_post_incident_summary_and_removes_the_buttons() {
    let w = World::bot_only().await;
    w.run(&incident_event(
        "m-1",
        &incident(EventType::Opened, Impact::HIGH, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    let mut resolved = owned(EventType::Resolved, Impact::HIGH, "2026-11-25T10:33:10Z");
    resolved.post_incident = Some(PostIncidentSummary {
        title: INCIDENT_KEY.into(),
        peak_impact: Impact::HIGH,
        detected_at: t("2026-11-25T10:01:00Z"),
        notified_at: Some(t("2026-11-25T10:01:02Z")),
        acknowledged_at: Some(t("2026-11-25T10:05:10Z")),
        diagnosed_at: None,
        resolved_at: t("2026-11-25T10:33:10Z"),
        time_to_notify_seconds: Some(2),
        time_to_acknowledge_seconds: Some(250),
        time_to_diagnose_seconds: None,
        time_to_resolve_seconds: 1930,
        resolved_by: jane(),
        roles: resolved.roles.clone(),
        findings: vec![],
        participants: vec!["Jane Doe (U0JANE)".into()],
        timeline: vec![],
        retrospective: vec![RetrospectiveItem {
            heading: "What to improve".into(),
            facts: vec!["Nobody acknowledged within 4 min".into()],
        }],
        account: None,
    });
    w.run(&incident_event("m-2", &resolved)).await.unwrap();
    let reply = all_text(&w.fake.requests_to(POST)[1].body);
    for expected in [
        "📋 Post-incident summary",
        "*Time to acknowledge:* 4m 10s · *Time to resolve:* 32m 10s",
        "by <@U0JANE>",
        "☐ *What to improve*\\n• Nobody acknowledged within 4 min",
        "*Who acted:* Jane Doe (U0JANE)",
    ] {
        assert!(reply.contains(expected), "{expected}: {reply}");
    }
    let card = &w.fake.requests_to(UPDATE)[0].body;
    assert!(header(card).starts_with("✅ RESOLVED"));
    assert!(action_buttons(card).is_empty(), "{card}");
    assert!(
        all_text(card).contains("Time to acknowledge: 4m 10s"),
        "{card}"
    );
}

/// A store where another delivery runs in full just before this delivery's `at`-th
/// send-slot reservation (its paced Slack calls: the reply, then the top-level edit).
struct RaceStore<'a> {
    inner: MemoryStore,
    at: usize,
    reservations: std::sync::Mutex<usize>,
    meanwhile: tokio::sync::Mutex<
        Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>>,
    >,
}

#[async_trait::async_trait]
impl notify_fanout::store::StateStore for RaceStore<'_> {
    async fn claim_delivery(
        &self,
        pk: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<notify_fanout::store::Claim<DeliveryRecord>, notify_fanout::store::StoreError> {
        self.inner.claim_delivery(pk, owner, now, lease_until).await
    }
    async fn put_delivery(
        &self,
        pk: &str,
        record: &DeliveryRecord,
        owner: &str,
        now: i64,
    ) -> Result<(), notify_fanout::store::StoreError> {
        self.inner.put_delivery(pk, record, owner, now).await
    }
    async fn release_delivery(
        &self,
        pk: &str,
        owner: &str,
    ) -> Result<(), notify_fanout::store::StoreError> {
        self.inner.release_delivery(pk, owner).await
    }
    async fn get_thread(
        &self,
        pk: &str,
    ) -> Result<Option<notify_fanout::store::ThreadRecord>, notify_fanout::store::StoreError> {
        self.inner.get_thread(pk).await
    }
    async fn claim_thread(
        &self,
        pk: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
        replace_resolved: Option<&str>,
    ) -> Result<
        notify_fanout::store::Claim<notify_fanout::store::ThreadRecord>,
        notify_fanout::store::StoreError,
    > {
        self.inner
            .claim_thread(pk, owner, now, lease_until, replace_resolved)
            .await
    }
    async fn put_thread(
        &self,
        pk: &str,
        thread: &notify_fanout::store::PostedThread,
        guard: &notify_fanout::store::ThreadGuard,
        owner: &str,
        now: i64,
    ) -> Result<notify_fanout::store::ThreadWrite, notify_fanout::store::StoreError> {
        self.inner.put_thread(pk, thread, guard, owner, now).await
    }
    async fn release_thread(
        &self,
        pk: &str,
        owner: &str,
    ) -> Result<(), notify_fanout::store::StoreError> {
        self.inner.release_thread(pk, owner).await
    }
    async fn reserve_slot(
        &self,
        pk: &str,
        owner: &str,
        now_ms: i64,
        not_after_ms: i64,
    ) -> Result<notify_fanout::store::Slot, notify_fanout::store::StoreError> {
        let n = {
            let mut r = self.reservations.lock().unwrap();
            *r += 1;
            *r
        };
        if n == self.at {
            if let Some(other) = self.meanwhile.lock().await.take() {
                other.await;
            }
        }
        self.inner
            .reserve_slot(pk, owner, now_ms, not_after_ms)
            .await
    }
    fn channel_interval(&self) -> Duration {
        Duration::from_millis(1)
    }
}

/// Two deliveries of one incident race for its top-level message (SNS to Lambda,
/// several instances): the de-escalation reads the thread, the resolution is
/// delivered in full meanwhile, then the de-escalation edits the top-level message
/// with its older state. Its save finds the record changed, reads the resolution and
/// shows it again: the top-level message ends RESOLVED (a concurrent storm left it
/// OPEN before the record was guarded by its revision).
#[tokio::test]
async fn a_late_edit_racing_a_newer_one_ends_showing_the_newer_state() {
    let w = World::bot_only().await;
    w.run(&incident_event(
        "m-open",
        &incident(EventType::Opened, Impact::MEDIUM, "2026-11-25T10:01:00Z"),
    ))
    .await
    .unwrap();
    let deescalated = incident_event(
        "m-down",
        &incident(
            EventType::Deescalated,
            Impact::MEDIUM,
            "2026-11-25T10:20:00Z",
        ),
    );
    let resolved = incident_event(
        "m-res",
        &incident(EventType::Resolved, Impact::MEDIUM, "2026-11-25T10:30:00Z"),
    );
    let store = RaceStore {
        inner: w.store.clone(),
        at: 2,
        reservations: Default::default(),
        meanwhile: Default::default(),
    };
    // The resolution runs on the plain store (no race hook).
    let plain = w.store.clone();
    let world = &w;
    *store.meanwhile.lock().await = Some(Box::pin(async move {
        let deps = Deps {
            slack: &world.slack,
            store: &plain,
            settings: &world.settings,
            config: &world.config,
        };
        handle(
            &deps,
            &resolved,
            Budget::after(Duration::from_secs(20)),
            &Owner::new("req-res", None),
        )
        .await
        .unwrap();
    }));
    let deps = Deps {
        slack: &w.slack,
        store: &store,
        settings: &w.settings,
        config: &w.config,
    };
    handle(
        &deps,
        &deescalated,
        Budget::after(Duration::from_secs(20)),
        &Owner::new("req-down", None),
    )
    .await
    .unwrap();
    let updates = w.fake.requests_to(UPDATE);
    let last = header(&updates.last().unwrap().body);
    assert!(last.starts_with("✅ RESOLVED"), "{last}");
    // The de-escalation's own edit (the older state) did go out, then the newer one again.
    assert!(updates.iter().any(|u| !header(&u.body).starts_with("✅")));
    let thread = w
        .store
        .thread(&notify_fanout::store::incident_thread_key(
            INCIDENT_KEY,
            "oncall",
            "oi-0123456789ab",
        ))
        .unwrap()
        .posted
        .unwrap();
    assert!(thread.resolved);
}
