//! Order and rate (issue 10): an incident keeps one top-level message whatever order
//! its notifications arrive in; every Slack call waits for its channel's send slot;
//! a channel with no slot before the deadline fails retryable without posting; quick
//! updates are coalesced into the top-level message instead of being dropped.

mod support;

use std::time::Duration;

use notify_fanout::config::Config;
use notify_fanout::handler::{handle, Deps, HandlerError, Summary};
use notify_fanout::slack_api::{Budget, SlackClient};
use notify_fanout::store::{delivery_key, incident_thread_key, thread_key};
use serde_json::{json, Value};
use shared::error::Retryable;
use shared::incident::Impact;
use shared::notification::EventType;
use shared::state::Owner;
use support::*;

const POST: &str = "/api/chat.postMessage";
const UPDATE: &str = "/api/chat.update";
const REF_A: &str = "oi-0123456789ab";
const REF_B: &str = "oi-0123456789cd";

struct World {
    fake: FakeSlack,
    store: MemoryStore,
    settings: FixedSettings,
    config: Config,
    slack: SlackClient,
}

impl World {
    /// The bot destination `oncall` only, its channel paced at `interval` (zero: not
    /// paced).
    async fn new(interval: Duration) -> World {
        let fake = FakeSlack::start().await;
        let settings =
            FixedSettings::new(&secret_json(&fake, Some(json!({"default": ["oncall"]}))));
        let config = config(&fake);
        let slack = SlackClient::new(&config.slack_api_url).unwrap();
        World {
            fake,
            store: MemoryStore::paced(interval),
            settings,
            config,
            slack,
        }
    }

    async fn run_with(&self, event: &Value, budget: Duration) -> Result<Summary, HandlerError> {
        let deps = Deps {
            slack: &self.slack,
            store: &self.store,
            settings: &self.settings,
            config: &self.config,
        };
        handle(&deps, event, Budget::after(budget), &Owner::new("", None)).await
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

fn of(
    event: EventType,
    impact: Impact,
    at: &str,
    incident_ref: &str,
) -> shared::notification::Notification {
    let mut n = incident(event, impact, at);
    n.incident_ref = Some(incident_ref.into());
    n
}

#[tokio::test]
async fn resolved_before_opened_keeps_one_top_level_message() {
    let w = World::new(Duration::ZERO).await;
    let resolved = of(
        EventType::Resolved,
        Impact::MEDIUM,
        "2026-11-25T10:30:00Z",
        REF_A,
    );
    let opened = of(
        EventType::Opened,
        Impact::MEDIUM,
        "2026-11-25T10:01:00Z",
        REF_A,
    );
    let first = w.run(&incident_event("m-2", &resolved)).await.unwrap();
    let late = w.run(&incident_event("m-1", &opened)).await.unwrap();
    assert_eq!(
        (first.threads_started, late.threads_started, late.replied),
        (1, 0, 1)
    );

    let posts = w.fake.requests_to(POST);
    assert_eq!(posts.len(), 2);
    assert!(posts[0].body.get("thread_ts").is_none());
    assert!(
        header(&posts[0].body).contains("RESOLVED"),
        "{}",
        header(&posts[0].body)
    );
    // The late opening is a reply in the incident's thread, not a second top-level.
    assert_eq!(posts[1].body["thread_ts"], "1795600001.000100");
    // And the top-level message keeps showing the resolution.
    assert!(w.fake.requests_to(UPDATE).is_empty());

    let thread = w
        .store
        .thread(&incident_thread_key(INCIDENT_KEY, "oncall", REF_A))
        .unwrap()
        .posted
        .unwrap();
    assert!(thread.resolved);
    assert_eq!(thread.incident_ref.as_deref(), Some(REF_A));
    // The late opening still gives the closing figures their detection time.
    assert_eq!(
        thread.milestones.detected_at,
        Some(t("2026-11-25T10:01:00Z"))
    );
    assert_eq!(thread.opened_at, t("2026-11-25T10:01:00Z"));
    // The key's thread item points at the incident's thread.
    let key = w.store.thread(&thread_key(INCIDENT_KEY, "oncall")).unwrap();
    assert_eq!(key.posted.unwrap().ts, thread.ts);
}

#[tokio::test]
async fn next_incident_opened_before_the_previous_resolved_gets_its_own_thread() {
    let w = World::new(Duration::ZERO).await;
    let a_open = of(
        EventType::Opened,
        Impact::MEDIUM,
        "2026-11-25T10:01:00Z",
        REF_A,
    );
    let b_open = of(
        EventType::Opened,
        Impact::MEDIUM,
        "2026-11-25T10:40:00Z",
        REF_B,
    );
    let a_resolved = of(
        EventType::Resolved,
        Impact::MEDIUM,
        "2026-11-25T10:30:00Z",
        REF_A,
    );
    let b_resolved = of(
        EventType::Resolved,
        Impact::MEDIUM,
        "2026-11-25T11:00:00Z",
        REF_B,
    );
    w.run(&incident_event("a-1", &a_open)).await.unwrap();
    w.run(&incident_event("b-1", &b_open)).await.unwrap();
    w.run(&incident_event("a-2", &a_resolved)).await.unwrap();
    w.run(&incident_event("b-2", &b_resolved)).await.unwrap();

    let posts = w.fake.requests_to(POST);
    let top: Vec<_> = posts
        .iter()
        .filter(|p| p.body.get("thread_ts").is_none())
        .collect();
    assert_eq!(top.len(), 2, "one top-level message per incident");
    let (a_ts, b_ts) = ("1795600001.000100", "1795600002.000100");
    assert_eq!(
        posts[2].body["thread_ts"], a_ts,
        "A's resolution replies in A's thread"
    );
    assert_eq!(
        posts[3].body["thread_ts"], b_ts,
        "B's resolution replies in B's thread"
    );
    let updates = w.fake.requests_to(UPDATE);
    assert_eq!(updates.len(), 2);
    assert_eq!(
        (
            updates[0].body["ts"].as_str(),
            updates[1].body["ts"].as_str()
        ),
        (Some(a_ts), Some(b_ts))
    );
    assert!(updates.iter().all(|u| header(&u.body).contains("RESOLVED")));
    // The key's item points at the newer incident (B), whatever order they arrived in.
    let key = w.store.thread(&thread_key(INCIDENT_KEY, "oncall")).unwrap();
    let key = key.posted.unwrap();
    assert_eq!((key.ts.as_str(), key.resolved), (b_ts, true));
}

#[tokio::test]
async fn paced_channel_gets_its_calls_one_interval_apart() {
    let interval = Duration::from_millis(300);
    let w = World::new(interval).await;
    let opened = of(
        EventType::Opened,
        Impact::MEDIUM,
        "2026-11-25T10:01:00Z",
        REF_A,
    );
    let diagnosed = of(
        EventType::Diagnosed,
        Impact::MEDIUM,
        "2026-11-25T10:02:00Z",
        REF_A,
    );
    let resolved = of(
        EventType::Resolved,
        Impact::MEDIUM,
        "2026-11-25T10:30:00Z",
        REF_A,
    );
    w.run(&incident_event("m-1", &opened)).await.unwrap();
    w.run(&incident_event("m-2", &diagnosed)).await.unwrap();
    w.run(&incident_event("m-3", &resolved)).await.unwrap();

    // Top-level post, then reply + card edit twice: five calls to one channel.
    let calls = w.fake.requests();
    assert_eq!(calls.len(), 5);
    // Slots are exact; when a request reaches the fake varies by some milliseconds
    // (the first one also opens the connection).
    for pair in calls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= interval * 9 / 10, "calls {gap:?} apart");
    }
    let span = calls[4].at.duration_since(calls[0].at);
    assert!(span >= interval * 4 - Duration::from_millis(60), "{span:?}");
}

#[tokio::test]
async fn no_slot_before_the_deadline_fails_retryable_and_posts_nothing() {
    let w = World::new(Duration::from_secs(30)).await;
    let opened = of(
        EventType::Opened,
        Impact::MEDIUM,
        "2026-11-25T10:01:00Z",
        REF_A,
    );
    let diagnosed = of(
        EventType::Diagnosed,
        Impact::MEDIUM,
        "2026-11-25T10:02:00Z",
        REF_A,
    );
    w.run(&incident_event("m-1", &opened)).await.unwrap();
    let started = std::time::Instant::now();
    let err = w
        .run_with(&incident_event("m-2", &diagnosed), Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "must not wait for a slot it cannot use"
    );
    assert!(err.retryable());
    assert_eq!(err.lambda_error_type(), "Retryable.SlackChannelBusy");
    assert!(err.to_string().contains("no free send slot"), "{err}");
    assert_eq!(
        w.fake.requests().len(),
        1,
        "only the first message was sent"
    );
    // The claim is released: the retry can deliver at once.
    assert!(w.store.delivery(&delivery_key("m-2", "oncall")).is_none());
}

#[tokio::test]
async fn quick_updates_are_coalesced_into_the_top_level_message() {
    let w = World::new(Duration::ZERO).await;
    let opened = of(
        EventType::Opened,
        Impact::MEDIUM,
        "2026-11-25T10:01:00Z",
        REF_A,
    );
    let first = of(
        EventType::Updated,
        Impact::MEDIUM,
        "2026-11-25T10:01:20Z",
        REF_A,
    );
    let mut second = of(
        EventType::Updated,
        Impact::LOW,
        "2026-11-25T10:01:25Z",
        REF_A,
    );
    second.summary = "Impact lowered: one tunnel is up again".into();
    w.run(&incident_event("m-1", &opened)).await.unwrap();
    let replied = w.run(&incident_event("m-2", &first)).await.unwrap();
    let coalesced = w.run(&incident_event("m-3", &second)).await.unwrap();
    assert_eq!((replied.replied, replied.coalesced), (1, 0));
    assert_eq!((coalesced.replied, coalesced.coalesced), (0, 1));

    // Opened + one reply; the second update is not a reply of its own ...
    assert_eq!(w.fake.requests_to(POST).len(), 2);
    // ... but is shown on the top-level message: nothing is dropped.
    let updates = w.fake.requests_to(UPDATE);
    assert_eq!(updates.len(), 2);
    let card = updates[1].body.to_string();
    assert!(
        card.contains("Impact lowered: one tunnel is up again"),
        "{card}"
    );
    assert!(
        header(&updates[1].body).contains("Impact 4"),
        "{}",
        header(&updates[1].body)
    );
    assert_eq!(
        w.store
            .delivery(&delivery_key("m-3", "oncall"))
            .unwrap()
            .status,
        notify_fanout::store::DeliveryStatus::Done
    );
}
