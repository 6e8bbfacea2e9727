//! Golden tests: each kind of input, rendered in the modes it is delivered in, is
//! compared with the Block Kit JSON in `shared/tests/slack/golden/`. Inputs that come
//! from AWS are real-shaped files in `shared/tests/slack/input/`; the pipeline's own
//! notifications are built here and go through `to_chatbot()` and back, as on SNS.
//!
//! After an intended change, regenerate with `UPDATE_GOLDEN=1 cargo test -p
//! incident-shared golden` and review the diff.
//!
//! Property tests: no input, however large or odd, yields a message over a Slack
//! limit, or a panic.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::blocks::Message;
use super::inbound::{Inbound, SnsMessage};
use super::interaction::NoteModalMetadata;
use super::render::{render, Milestones, Mode, RenderOptions};
use super::settings::Mention;
use super::views::{incident_list, incident_show, note_modal};
use crate::closure::{PostIncidentSummary, RetrospectiveItem};
use crate::incident::{Actor, Impact, Roles};
use crate::lifecycle::{
    AlarmFeed, EscalationState, IncidentRecord, Milestones as RecordMilestones,
};
use crate::notification::{
    AlarmSummary, EventType, FindingSummary, IncidentStatus, Link, Notification, TimelineEntry,
};

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:incident-notifications";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slack")
}

fn input(name: &str) -> String {
    std::fs::read_to_string(dir().join("input").join(name)).unwrap()
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn check_golden(name: &str, inbound: &Inbound, opts: &RenderOptions<'_>) {
    let msg = render(inbound, opts);
    assert!(
        msg.limit_violations().is_empty(),
        "{name}: {:?}",
        msg.limit_violations()
    );
    assert!(!msg.blocks.is_empty(), "{name}: fell back to text only");
    let actual = serde_json::to_string_pretty(&msg).unwrap() + "\n";
    let path = dir().join("golden").join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing golden file {path:?}"));
    assert_eq!(actual, expected, "{name}: rendering differs from {path:?}");
}

/// Golden check of a message that is not rendered from an SNS message (replies,
/// lists, the modal).
fn check_golden_json(name: &str, actual: &serde_json::Value) {
    let actual = serde_json::to_string_pretty(actual).unwrap() + "\n";
    let path = dir().join("golden").join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing golden file {path:?}"));
    assert_eq!(actual, expected, "{name}: rendering differs from {path:?}");
}

fn checked(name: &str, msg: &Message) -> serde_json::Value {
    assert!(
        msg.limit_violations().is_empty(),
        "{name}: {:?}",
        msg.limit_violations()
    );
    serde_json::to_value(msg).unwrap()
}

fn via_sns(message: &str, subject: Option<&str>) -> Inbound {
    Inbound::parse(SnsMessage {
        topic_arn: TOPIC,
        subject,
        message,
    })
}

/// The VPN incident of the article, as alarm-to-incident publishes it.
pub(crate) fn vpn_incident(event: EventType) -> Notification {
    let alarm_name = "VPN tunnel down (vpn-0a1b2c3d4e5f67890)";
    Notification {
        event,
        incident_key: "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN".into(),
        title: "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN".into(),
        summary: "Both tunnels of the site-to-site VPN to the Paris office are DOWN; traffic to 10.20.0.0/16 is failing.".into(),
        impact: Impact::HIGH,
        status: IncidentStatus::Open,
        backend: Some("OpsCenter".into()),
        incident_ref: Some("oi-0123456789ab".into()),
        incident_url: None,
        account: "123456789012".into(),
        region: "eu-west-1".into(),
        alarm: Some(AlarmSummary {
            name: alarm_name.into(),
            arn: format!("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{alarm_name}"),
            state: "ALARM".into(),
            reason: "Threshold Crossed: 3 out of the last 3 datapoints were less than the threshold (1.0).".into(),
            url: "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#alarmsV2:alarm/VPN%20tunnel%20down%20%28vpn-0a1b2c3d4e5f67890%29".into(),
            condition: None,
        }),
        vpn_id: Some("vpn-0a1b2c3d4e5f67890".into()),
        tunnel_ip: Some("203.0.113.10".into()),
        occurred_at: t("2026-11-25T10:01:00Z"),
        opened_at: Some(t("2026-11-25T10:01:00Z")),
        duration_seconds: None,
        next_steps: vec![
            "Check the customer gateway at the Paris office (IKE/IPsec status).".into(),
            "Wait for the diagnosis in this thread before replacing a tunnel.".into(),
        ],
        links: vec![],
        findings: vec![],
        timeline: vec![],
        roles: Roles {
            reporter: Some(Actor::Alarm {
                name: alarm_name.into(),
            }),
            owner: None,
            team: Some("C0123ONCALL".into()),
        },
        post_incident: None,
        notification_id: None,
        account_info: None,
    }
}

fn jane() -> Actor {
    Actor::Person {
        id: "U0123JANE".into(),
        name: "Jane Doe".into(),
    }
}

fn acknowledged() -> Notification {
    let mut n = vpn_incident(EventType::Acknowledged);
    n.occurred_at = t("2026-11-25T10:05:10Z");
    n.roles.owner = Some(jane());
    n.summary = "Jane Doe (U0123JANE) acknowledged the incident.".into();
    n
}

fn unanswered() -> Notification {
    let mut n = vpn_incident(EventType::Unanswered);
    n.impact = Impact::CRITICAL;
    n.occurred_at = t("2026-11-25T10:16:00Z");
    n.summary = "Escalation 1 of 3: paged the on-call escalation topic.".into();
    n
}

/// The resolution by a person from Slack, with the post-incident summary.
fn resolved_with_summary() -> Notification {
    let mut n = resolved();
    n.roles.owner = Some(jane());
    n.summary = "Resolved by Jane Doe (U0123JANE) from Slack.".into();
    n.timeline.insert(
        2,
        TimelineEntry {
            at: t("2026-11-25T10:05:10Z"),
            text: "Acknowledged".into(),
            actor: Some("Jane Doe (U0123JANE)".into()),
        },
    );
    n.post_incident = Some(PostIncidentSummary {
        title: n.title.clone(),
        peak_impact: Impact::CRITICAL,
        detected_at: t("2026-11-25T10:01:00Z"),
        notified_at: Some(t("2026-11-25T10:01:02Z")),
        acknowledged_at: Some(t("2026-11-25T10:05:10Z")),
        diagnosed_at: Some(t("2026-11-25T10:04:30Z")),
        resolved_at: t("2026-11-25T10:33:10Z"),
        time_to_notify_seconds: Some(2),
        time_to_acknowledge_seconds: Some(250),
        time_to_diagnose_seconds: Some(210),
        time_to_resolve_seconds: 1930,
        resolved_by: jane(),
        roles: n.roles.clone(),
        findings: diagnosed().findings,
        participants: vec![
            "alarm VPN tunnel down (vpn-0a1b2c3d4e5f67890)".into(),
            "Jane Doe (U0123JANE)".into(),
        ],
        timeline: n.timeline.clone(),
        retrospective: vec![
            RetrospectiveItem {
                heading: "What happened".into(),
                facts: vec!["Both tunnels of vpn-0a1b2c3d4e5f67890 went DOWN at 10:01 UTC.".into()],
            },
            RetrospectiveItem {
                heading: "Impact".into(),
                facts: vec!["Peak impact 1 (Critical) for 32m 10s.".into()],
            },
            RetrospectiveItem {
                heading: "What went well".into(),
                facts: vec!["Diagnosis took 3m 30s.".into()],
            },
            RetrospectiveItem {
                heading: "What to improve".into(),
                facts: vec![],
            },
            RetrospectiveItem {
                heading: "Follow-up actions".into(),
                facts: vec!["Align the phase 1 proposals with the customer gateway.".into()],
            },
        ],
        account: None,
    });
    n
}

fn diagnosed() -> Notification {
    let mut n = vpn_incident(EventType::Diagnosed);
    n.occurred_at = t("2026-11-25T10:04:30Z");
    n.summary = "Diagnosis finished: 2 findings.".into();
    n.findings = vec![
        FindingSummary {
            severity: "critical".into(),
            title: "IKE negotiation fails: no proposal chosen".into(),
            evidence: "Tunnel 203.0.113.10: 14 log lines `AWS_TUNNEL_PHASE1_FAILED <no proposal chosen>` since 09:58 UTC.".into(),
            next_step: "Align the phase 1 encryption & DH group on the customer gateway with the tunnel options.".into(),
        },
        FindingSummary {
            severity: "info".into(),
            title: "VPN connection is available".into(),
            evidence: "State `available`, static routes present.".into(),
            next_step: String::new(),
        },
    ];
    n.next_steps = vec![];
    n.links = vec![Link {
        label: "Logs Insights query".into(),
        url: "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:logs-insights$3FqueryDetail$3D~(end~0~start~-3600)".into(),
    }];
    n
}

fn resolved() -> Notification {
    let mut n = vpn_incident(EventType::Resolved);
    n.status = IncidentStatus::Resolved;
    n.occurred_at = t("2026-11-25T10:33:10Z");
    n.duration_seconds = Some(1930);
    n.summary = "Both tunnels are UP again; the incident is resolved.".into();
    if let Some(a) = n.alarm.as_mut() {
        a.state = "OK".into();
        a.reason = "Threshold Crossed: 1 out of the last 3 datapoints was not less than the threshold (1.0).".into();
    }
    n.next_steps = vec![];
    n.timeline = vec![
        TimelineEntry {
            at: t("2026-11-25T10:01:00Z"),
            text: "Alarm fired, incident opened (detect 0m 30s)".into(),
            actor: None,
        },
        TimelineEntry {
            at: t("2026-11-25T10:04:30Z"),
            text: "Diagnosis: IKE phase 1 proposal mismatch".into(),
            actor: None,
        },
        TimelineEntry {
            at: t("2026-11-25T10:33:10Z"),
            text: "Alarm OK, incident resolved".into(),
            actor: None,
        },
    ];
    n
}

fn ours(n: &Notification) -> Inbound {
    let inbound = via_sns(&n.to_chatbot().to_string(), None);
    assert!(
        matches!(&inbound, Inbound::Incident(back) if **back == *n),
        "round trip through SNS"
    );
    inbound
}

#[test]
fn golden_incident_opened_bot_top_level_with_mention() {
    let opts = RenderOptions {
        mode: Mode::Post,
        mention: Some(&Mention::Here),
        actions: true,
        ..Default::default()
    };
    check_golden(
        "incident-opened-post",
        &ours(&vpn_incident(EventType::Opened)),
        &opts,
    );
}

#[test]
fn golden_incident_diagnosed_thread_reply() {
    let opts = RenderOptions {
        mode: Mode::Reply,
        ..Default::default()
    };
    check_golden("incident-diagnosed-reply", &ours(&diagnosed()), &opts);
}

#[test]
fn golden_incident_resolved_reply_and_top_level_update() {
    let started = Some(t("2026-11-25T10:01:02Z"));
    let milestones = Some(Milestones {
        detected_at: Some(t("2026-11-25T10:01:00Z")),
        notified_at: Some(t("2026-11-25T10:01:02Z")),
        diagnosed_at: Some(t("2026-11-25T10:04:31Z")),
    });
    let reply = RenderOptions {
        mode: Mode::Reply,
        thread_started_at: started,
        milestones,
        ..Default::default()
    };
    check_golden("incident-resolved-reply", &ours(&resolved()), &reply);
    let card = RenderOptions {
        mode: Mode::Card,
        thread_started_at: started,
        milestones,
        ..Default::default()
    };
    check_golden("incident-resolved-card", &ours(&resolved()), &card);
}

#[test]
fn golden_incident_acknowledged_reply_and_card_with_take_ownership() {
    let started = Some(t("2026-11-25T10:01:02Z"));
    let reply = RenderOptions {
        mode: Mode::Reply,
        thread_started_at: started,
        ..Default::default()
    };
    check_golden(
        "incident-acknowledged-reply",
        &ours(&acknowledged()),
        &reply,
    );
    let card = RenderOptions {
        mode: Mode::Card,
        thread_started_at: started,
        actions: true,
        ..Default::default()
    };
    check_golden("incident-acknowledged-card", &ours(&acknowledged()), &card);
}

#[test]
fn golden_incident_unanswered_reply_calls_the_escalation_mention() {
    let reply = RenderOptions {
        mode: Mode::Reply,
        mention: Some(&Mention::Subteam("S0999LEADS".into())),
        thread_started_at: Some(t("2026-11-25T10:01:02Z")),
        ..Default::default()
    };
    check_golden("incident-unanswered-reply", &ours(&unanswered()), &reply);
}

#[test]
fn golden_incident_resolved_from_slack_posts_the_post_incident_summary() {
    let started = Some(t("2026-11-25T10:01:02Z"));
    let reply = RenderOptions {
        mode: Mode::Reply,
        thread_started_at: started,
        ..Default::default()
    };
    check_golden(
        "incident-resolved-summary-reply",
        &ours(&resolved_with_summary()),
        &reply,
    );
    let card = RenderOptions {
        mode: Mode::Card,
        thread_started_at: started,
        actions: true,
        ..Default::default()
    };
    check_golden(
        "incident-resolved-summary-card",
        &ours(&resolved_with_summary()),
        &card,
    );
    let webhook = RenderOptions {
        mode: Mode::Post,
        webhook: true,
        actions: true,
        ..Default::default()
    };
    check_golden(
        "incident-resolved-summary-webhook",
        &ours(&resolved_with_summary()),
        &webhook,
    );
}

/// The VPN incident as the state table holds it, acknowledged by Jane, escalation
/// pending for nobody (cancelled), diagnosed.
fn vpn_record() -> IncidentRecord {
    let n = diagnosed();
    let alarm = n.alarm.clone().unwrap();
    let mut alarms = std::collections::BTreeMap::new();
    alarms.insert(
        alarm.arn.clone(),
        AlarmFeed {
            name: alarm.name.clone(),
            state: crate::alarm::AlarmState::Alarm,
            impact: Impact::HIGH,
            changed_at: t("2026-11-25T10:01:00Z"),
            contributor: None,
            attributes: Default::default(),
        },
    );
    IncidentRecord {
        key: n.incident_key.clone(),
        status: IncidentStatus::Open,
        incident: Some(crate::incident::IncidentRef::OpsCenter(
            "oi-0123456789ab".into(),
        )),
        title: n.title.clone(),
        summary: vpn_incident(EventType::Opened).summary,
        impact: Impact::HIGH,
        opened_at: t("2026-11-25T10:01:00Z"),
        resolved_at: None,
        alarms,
        runbook_execution: Some("0c7e3f4a-5b6c-4d8e-9f00-112233445566".into()),
        timeline: vec![
            TimelineEntry {
                at: t("2026-11-25T10:01:00Z"),
                text: "Incident opened: both tunnels DOWN".into(),
                actor: Some(format!("alarm {}", alarm.name)),
            },
            TimelineEntry {
                at: t("2026-11-25T10:04:30Z"),
                text: "Diagnosis: IKE phase 1 proposal mismatch".into(),
                actor: None,
            },
            TimelineEntry {
                at: t("2026-11-25T10:05:10Z"),
                text: "Acknowledged".into(),
                actor: Some("Jane Doe (U0123JANE)".into()),
            },
        ],
        account: n.account.clone(),
        region: n.region.clone(),
        roles: Roles {
            owner: Some(jane()),
            ..n.roles.clone()
        },
        milestones: RecordMilestones {
            notified_at: Some(t("2026-11-25T10:01:02Z")),
            acknowledged_at: Some(t("2026-11-25T10:05:10Z")),
            diagnosed_at: Some(t("2026-11-25T10:04:30Z")),
        },
        findings: n.findings.clone(),
        runbook: None,
        escalation: None,
        peak_impact: Some(Impact::HIGH),
        account_info: None,
    }
}

#[test]
fn golden_slash_command_list_and_show() {
    let now = t("2026-11-25T10:20:00Z");
    let mut other = vpn_record();
    other.key = "Declared: Payment API returns 500s (2026-11-25 10:12)".into();
    other.title = "Payment API returns 500s".into();
    other.summary = "Declared from Slack by Sam.".into();
    other.impact = Impact::MEDIUM;
    other.opened_at = t("2026-11-25T10:12:00Z");
    other.peak_impact = Some(Impact::MEDIUM);
    other.alarms.clear();
    other.findings.clear();
    other.milestones = RecordMilestones {
        notified_at: Some(t("2026-11-25T10:12:01Z")),
        ..Default::default()
    };
    other.runbook_execution = None;
    other.timeline = vec![TimelineEntry {
        at: t("2026-11-25T10:12:00Z"),
        text: "Declared from Slack".into(),
        actor: Some("sam (U0456SAM)".into()),
    }];
    other.roles = Roles {
        reporter: Some(Actor::Person {
            id: "U0456SAM".into(),
            name: "sam".into(),
        }),
        owner: None,
        team: Some("S0123NETOPS".into()),
    };
    other.escalation = Some(EscalationState {
        attempt: 1,
        due_at: t("2026-11-25T10:27:00Z"),
        schedule_name: "incident-escalation-3f2a1b-1".into(),
    });
    let list = incident_list(&[other.clone(), vpn_record()], now);
    check_golden_json("slash-list", &checked("slash-list", &list));
    let show = incident_show(&vpn_record(), now, true);
    check_golden_json("slash-show", &checked("slash-show", &show));
    let show = incident_show(&other, now, true);
    check_golden_json(
        "slash-show-declared",
        &checked("slash-show-declared", &show),
    );
}

/// What CORE's `respond` publishes renders within limits, with the owner on the
/// card, and the resolution's reply carries the whole post-incident summary.
#[test]
fn respond_notifications_render_with_roles_and_the_post_incident_summary() {
    use crate::lifecycle::Effect;
    let published = |effects: &[Effect]| -> Notification {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Publish { notification } => Some((**notification).clone()),
                _ => None,
            })
            .expect("a publish effect")
    };
    let mut record = vpn_record();
    record.roles.owner = None;
    record.milestones.acknowledged_at = None;
    let sam = Actor::Person {
        id: "U0456SAM".into(),
        name: "sam".into(),
    };
    let ack =
        crate::respond::acknowledge(&record, &jane(), None, t("2026-11-25T10:05:10Z")).unwrap();
    let n = published(&ack.effects);
    assert_eq!(n.event, EventType::Acknowledged);
    let opts = |mode| RenderOptions {
        mode,
        actions: true,
        thread_started_at: Some(t("2026-11-25T10:01:02Z")),
        ..Default::default()
    };
    let reply = render(&ours(&n), &opts(Mode::Reply));
    assert!(reply.limit_violations().is_empty());
    let reply = serde_json::to_string(&reply).unwrap();
    assert!(
        reply.contains("🙋 *ACKNOWLEDGED* · Impact 2 (High) · *Owner:* <@U0123JANE>"),
        "{reply}"
    );
    let card = serde_json::to_string(&render(&ours(&n), &opts(Mode::Card))).unwrap();
    assert!(
        card.contains("Take ownership") && card.contains("*Owner*\\n<@U0123JANE>"),
        "{card}"
    );

    let handover =
        crate::respond::acknowledge(&ack.record, &sam, None, t("2026-11-25T10:09:00Z")).unwrap();
    let reply = serde_json::to_string(&render(
        &ours(&published(&handover.effects)),
        &opts(Mode::Reply),
    ))
    .unwrap();
    assert!(
        reply.contains("*Owner:* <@U0456SAM>") && reply.contains("took ownership from"),
        "{reply}"
    );

    let resolved =
        crate::respond::resolve(&handover.record, &jane(), t("2026-11-25T10:33:10Z")).unwrap();
    let n = published(&resolved.effects);
    assert!(n.post_incident.is_some());
    for mode in [Mode::Reply, Mode::Card, Mode::Post] {
        let msg = render(&ours(&n), &opts(mode));
        assert!(
            msg.limit_violations().is_empty(),
            "{mode:?}: {:?}",
            msg.limit_violations()
        );
        let json = serde_json::to_string(&msg).unwrap();
        assert!(!json.contains(super::render::ACTIONS_BLOCK_ID), "{mode:?}");
        if mode != Mode::Card {
            assert!(
                json.contains("📋 Post-incident summary"),
                "{mode:?}: {json}"
            );
            assert!(json.contains("Retrospective checklist"), "{mode:?}");
            assert!(
                json.contains("*Time to acknowledge:* 4m 10s · *Time to resolve:* 32m 10s"),
                "{mode:?}: {json}"
            );
        }
    }
}

#[test]
fn golden_note_modal() {
    let meta = NoteModalMetadata {
        key: vpn_incident(EventType::Opened).incident_key,
        channel_id: Some("C0123ONCALL".into()),
        message_ts: Some("1795600862.000100".into()),
        response_url: Some("https://hooks.slack.com/actions/T0001/1234/abcd".into()),
    };
    check_golden_json(
        "note-modal",
        &note_modal(&meta, &vpn_incident(EventType::Opened).title),
    );
}

#[test]
fn golden_incident_escalated_webhook_names_the_incident() {
    let mut n = vpn_incident(EventType::Escalated);
    n.impact = Impact::CRITICAL;
    n.occurred_at = t("2026-11-25T10:03:00Z");
    n.summary = "The second tunnel is DOWN too: impact raised to critical.".into();
    let opts = RenderOptions {
        mode: Mode::Post,
        webhook: true,
        mention: Some(&Mention::Subteam("S0123NETOPS".into())),
        ..Default::default()
    };
    check_golden("incident-escalated-webhook", &ours(&n), &opts);
}

#[test]
fn golden_raw_cloudwatch_alarm_via_sns() {
    let inbound = via_sns(
        &input("sns-alarm-classic.json"),
        Some("ALARM: \"VPN tunnel down (vpn-0a1b2c3d4e5…\""),
    );
    assert!(matches!(inbound, Inbound::Alarm(_)));
    check_golden("alarm-sns-post", &inbound, &RenderOptions::default());
}

#[test]
fn golden_alarm_eventbridge_ok_updates_top_level() {
    let inbound = via_sns(&input("eventbridge-alarm-ok.json"), None);
    assert!(matches!(inbound, Inbound::Alarm(_)));
    let card = RenderOptions {
        mode: Mode::Card,
        thread_started_at: Some(t("2026-11-25T10:01:00.490Z")),
        ..Default::default()
    };
    check_golden("alarm-eventbridge-ok-card", &inbound, &card);
    let reply = RenderOptions {
        mode: Mode::Reply,
        thread_started_at: Some(t("2026-11-25T10:01:00.490Z")),
        ..Default::default()
    };
    check_golden("alarm-eventbridge-ok-reply", &inbound, &reply);
}

/// A sample event of `events/` (the ones the pipeline's own tests use).
fn sample_event(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// The SNS `Message` inside a sample SNS event.
fn sns_message_of(name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&sample_event(name)).unwrap();
    v["Records"][0]["Sns"]["Message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn golden_raw_alarms_of_every_kind_show_what_they_watch() {
    // One time series of a Metrics Insights alarm, published to the topic by an
    // EventBridge rule: named with its VPN, the query shown, threaded per series.
    let contributor = via_sns(
        &sample_event("eventbridge-insights-contributor-vpn2-alarm.json"),
        None,
    );
    assert!(matches!(contributor, Inbound::Alarm(_)));
    check_golden(
        "alarm-insights-contributor-post",
        &contributor,
        &RenderOptions::default(),
    );
    // Anomaly detection: the band instead of a threshold.
    let anomaly = via_sns(&sns_message_of("sns-anomaly-detection-alarm.json"), None);
    check_golden(
        "alarm-anomaly-sns-post",
        &anomaly,
        &RenderOptions::default(),
    );
    // A message older than AlarmArn.
    let old = via_sns(
        &sns_message_of("sns-no-alarm-arn-old-region-alarm.json"),
        None,
    );
    check_golden("alarm-sns-no-arn-post", &old, &RenderOptions::default());
}

#[test]
fn incident_notification_shows_what_the_alarm_watches() {
    let mut n = vpn_incident(EventType::Opened);
    if let Some(a) = n.alarm.as_mut() {
        a.condition = Some(
            r#"Metrics Insights SELECT MIN(TunnelState) FROM "AWS/VPN" GROUP BY VpnId over 60 s, one time series per VpnId"#
                .into(),
        );
    }
    let json = serde_json::to_string(&render(&ours(&n), &RenderOptions::default())).unwrap();
    assert!(
        json.contains(
            r#"*Watches:* Metrics Insights SELECT MIN(TunnelState) FROM \"AWS/VPN\" GROUP BY VpnId"#
        ),
        "{json}"
    );
}

#[test]
fn golden_eventbridge_event_via_sns() {
    let inbound = via_sns(&input("eventbridge-guardduty.json"), None);
    assert!(matches!(inbound, Inbound::Event(_)));
    check_golden("event-guardduty-post", &inbound, &RenderOptions::default());
}

#[test]
fn golden_foreign_chatbot_notification() {
    let inbound = via_sns(&input("chatbot-foreign.json"), None);
    assert!(matches!(inbound, Inbound::Chatbot(_)));
    check_golden("chatbot-foreign-post", &inbound, &RenderOptions::default());
}

#[test]
fn golden_plain_text() {
    let inbound = via_sns(&input("plain-text.txt"), Some("Maintenance tonight"));
    assert!(matches!(inbound, Inbound::Text(_)));
    check_golden("text-post", &inbound, &RenderOptions::default());
}

// ---- property tests ----

/// Text that stresses escaping and limits: Slack syntax, entities, control
/// characters, emoji and other non-BMP characters, repeated to large sizes.
fn nasty() -> BoxedStrategy<String> {
    nasty_unboxed().boxed()
}

fn nasty_unboxed() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        any::<String>(),
        Just("<!here>".to_string()),
        Just("<https://example.com/a?b=1&c=2|link & label>".to_string()),
        Just("<@U012AB3CD>".to_string()),
        Just("&amp;&lt;&gt;&".to_string()),
        Just("*_~`>```".to_string()),
        Just("🔴👩‍👩‍👧‍👦𝕏".to_string()),
        Just("\u{0}\u{7}\r\n\t\u{202e}".to_string()),
        "[<>&|!@#^*_~` a-zé]{0,40}",
    ];
    (
        proptest::collection::vec(atom, 0..6),
        prop_oneof![8 => Just(1usize), 2 => 1usize..40, 1 => Just(300usize)],
    )
        .prop_map(|(atoms, times)| atoms.concat().repeat(times))
}

fn short_nasty() -> BoxedStrategy<String> {
    short_nasty_unboxed().boxed()
}

fn short_nasty_unboxed() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[<>&|!@*_~` a-z]{0,20}",
        nasty().prop_map(|s| s.chars().take(300).collect())
    ]
}

fn arb_findings() -> BoxedStrategy<Vec<FindingSummary>> {
    arb_findings_unboxed().boxed()
}

fn arb_findings_unboxed() -> impl Strategy<Value = Vec<FindingSummary>> {
    proptest::collection::vec(
        (short_nasty(), nasty(), nasty(), nasty()).prop_map(
            |(severity, title, evidence, next_step)| FindingSummary {
                severity,
                title,
                evidence,
                next_step,
            },
        ),
        0..60,
    )
}

fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (-100_000_000_000i64..100_000_000_000i64)
        .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
}

fn arb_timeline() -> BoxedStrategy<Vec<TimelineEntry>> {
    arb_timeline_unboxed().boxed()
}

fn arb_timeline_unboxed() -> impl Strategy<Value = Vec<TimelineEntry>> {
    proptest::collection::vec(
        (arb_time(), nasty(), proptest::option::of(short_nasty()))
            .prop_map(|(at, text, actor)| TimelineEntry { at, text, actor }),
        0..50,
    )
}

fn arb_actor() -> BoxedStrategy<Actor> {
    arb_actor_unboxed().boxed()
}

fn arb_actor_unboxed() -> impl Strategy<Value = Actor> {
    prop_oneof![
        short_nasty().prop_map(|name| Actor::Alarm { name }),
        (
            prop_oneof![short_nasty(), "[UW][A-Z0-9]{2,12}"],
            short_nasty()
        )
            .prop_map(|(id, name)| Actor::Person { id, name }),
    ]
}

fn arb_roles() -> BoxedStrategy<Roles> {
    arb_roles_unboxed().boxed()
}

fn arb_roles_unboxed() -> impl Strategy<Value = Roles> {
    (
        proptest::option::of(arb_actor()),
        proptest::option::of(arb_actor()),
        proptest::option::of(prop_oneof![short_nasty(), "[CSG][A-Z0-9]{2,12}"]),
    )
        .prop_map(|(reporter, owner, team)| Roles {
            reporter,
            owner,
            team,
        })
}

fn arb_post_incident() -> BoxedStrategy<PostIncidentSummary> {
    arb_post_incident_unboxed().boxed()
}

fn arb_post_incident_unboxed() -> impl Strategy<Value = PostIncidentSummary> {
    let opt_time = || proptest::option::of(arb_time());
    let opt_secs = || proptest::option::of(any::<u64>());
    (
        (
            nasty(),
            1u8..=5,
            arb_time(),
            opt_time(),
            opt_time(),
            opt_time(),
            arb_time(),
        ),
        (
            opt_secs(),
            opt_secs(),
            opt_secs(),
            any::<u64>(),
            arb_actor(),
            arb_roles(),
        ),
        (
            arb_findings(),
            proptest::collection::vec(nasty(), 0..30),
            arb_timeline(),
            proptest::collection::vec(
                (short_nasty(), proptest::collection::vec(nasty(), 0..10))
                    .prop_map(|(heading, facts)| RetrospectiveItem { heading, facts }),
                0..12,
            ),
        ),
    )
        .prop_map(
            |(
                (title, peak, detected_at, notified_at, acknowledged_at, diagnosed_at, resolved_at),
                (ttn, tta, ttd, ttr, resolved_by, roles),
                (findings, participants, timeline, retrospective),
            )| PostIncidentSummary {
                title,
                peak_impact: Impact::new(peak).unwrap_or(Impact::NONE),
                detected_at,
                notified_at,
                acknowledged_at,
                diagnosed_at,
                resolved_at,
                time_to_notify_seconds: ttn,
                time_to_acknowledge_seconds: tta,
                time_to_diagnose_seconds: ttd,
                time_to_resolve_seconds: ttr,
                resolved_by,
                roles,
                findings,
                participants,
                timeline,
                retrospective,
                account: None,
            },
        )
}

fn arb_notification() -> BoxedStrategy<Notification> {
    arb_notification_unboxed().boxed()
}

fn arb_notification_unboxed() -> impl Strategy<Value = Notification> {
    let findings = arb_findings();
    let links = proptest::collection::vec(
        (
            short_nasty(),
            prop_oneof![
                short_nasty(),
                "https://[a-z]{1,10}\\.example/[a-z|<> ]{0,20}"
            ],
        )
            .prop_map(|(label, url)| Link { label, url }),
        0..40,
    );
    let timeline = arb_timeline();
    (
        (
            0usize..10,
            nasty(),
            nasty(),
            nasty(),
            1u8..=5,
            any::<bool>(),
        ),
        (
            short_nasty(),
            short_nasty(),
            proptest::option::of((short_nasty(), nasty(), short_nasty(), nasty())),
        ),
        (
            proptest::option::of(short_nasty()),
            proptest::option::of(short_nasty()),
            proptest::option::of(short_nasty()),
        ),
        (
            proptest::collection::vec(nasty(), 0..30),
            links,
            findings,
            timeline,
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(short_nasty()),
        ),
        (
            arb_roles(),
            prop_oneof![2 => Just(None), 1 => arb_post_incident().prop_map(Some)],
        ),
    )
        .prop_map(
            |(
                (event, key, title, summary, impact, resolved),
                (account, region, alarm),
                (vpn_id, tunnel_ip, incident_ref),
                (next_steps, links, findings, timeline),
                (duration_seconds, incident_url),
                (roles, post_incident),
            )| {
                let event = [
                    EventType::Opened,
                    EventType::Updated,
                    EventType::Escalated,
                    EventType::Deescalated,
                    EventType::Diagnosed,
                    EventType::InsufficientData,
                    EventType::Note,
                    EventType::Resolved,
                    EventType::Acknowledged,
                    EventType::Unanswered,
                ][event];
                Notification {
                    event,
                    incident_key: key,
                    title,
                    summary,
                    impact: Impact::new(impact).unwrap_or(Impact::NONE),
                    status: if resolved {
                        IncidentStatus::Resolved
                    } else {
                        IncidentStatus::Open
                    },
                    backend: Some("OpsCenter".into()),
                    incident_ref,
                    incident_url,
                    account,
                    region,
                    alarm: alarm.map(|(name, reason, state, url)| AlarmSummary {
                        arn: name.clone(),
                        name,
                        state,
                        reason,
                        url,
                        condition: None,
                    }),
                    vpn_id,
                    tunnel_ip,
                    occurred_at: t("2026-11-25T10:01:00Z"),
                    opened_at: Some(t("2020-01-01T00:00:00Z")),
                    duration_seconds,
                    next_steps,
                    links,
                    findings,
                    timeline,
                    roles,
                    post_incident,
                    notification_id: None,
                    account_info: None,
                }
            },
        )
}

fn all_modes(inbound: &Inbound) -> Result<(), TestCaseError> {
    let mention = Mention::Subteam("S0123".into());
    for mode in [Mode::Post, Mode::Reply, Mode::Card] {
        for (webhook, actions) in [(false, true), (true, false), (false, false)] {
            let opts = RenderOptions {
                mode,
                mention: Some(&mention),
                webhook,
                actions,
                thread_started_at: Some(t("2000-01-01T00:00:00Z")),
                // Far apart and out of order: figures saturate, never overflow.
                milestones: Some(Milestones {
                    detected_at: Some(t("2100-01-01T00:00:00Z")),
                    notified_at: Some(t("1970-01-01T00:00:00Z")),
                    diagnosed_at: None,
                }),
            };
            let msg = render(inbound, &opts);
            prop_assert!(
                msg.limit_violations().is_empty(),
                "{:?}",
                msg.limit_violations()
            );
            // The text-only fallback of `render` never had to step in.
            prop_assert!(!msg.blocks.is_empty());
            // Serializes, and stays far below Slack's 40k-character message size.
            let json =
                serde_json::to_string(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(json.chars().count() < 200_000);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn prop_any_notification_renders_within_limits(n in arb_notification()) {
        // Directly and after the trip through SNS.
        all_modes(&Inbound::Incident(Box::new(n.clone())))?;
        all_modes(&via_sns(&n.to_chatbot().to_string(), None))?;
    }

    #[test]
    fn prop_any_sns_text_renders_within_limits(subject in proptest::option::of(short_nasty()), body in nasty()) {
        all_modes(&via_sns(&body, subject.as_deref()))?;
    }

    #[test]
    fn prop_any_event_or_chatbot_fields_render_within_limits(
        a in nasty(), b in nasty(), c in short_nasty(), steps in proptest::collection::vec(nasty(), 0..20),
        resources in proptest::collection::vec(short_nasty(), 0..30),
    ) {
        let event = serde_json::json!({
            "detail-type": if c.trim().is_empty() { "X" } else { c.as_str() }, "source": "aws.test", "id": c,
            "account": c, "region": c, "time": c, "resources": resources,
            "detail": {"title": a, "description": b, "severity": c, "nested": {"x": a}},
        });
        all_modes(&via_sns(&event.to_string(), None))?;
        let chatbot = serde_json::json!({
            "version": "1.0", "source": "custom",
            "content": {"title": a, "description": b, "nextSteps": steps},
            "metadata": {"eventType": c, "relatedResources": resources},
        });
        all_modes(&via_sns(&chatbot.to_string(), None))?;
    }

    #[test]
    fn prop_any_sns_alarm_renders_within_limits(name in short_nasty(), reason in nasty(), description in nasty(), state in 0usize..3) {
        let state = ["ALARM", "OK", "INSUFFICIENT_DATA"][state];
        let arn_name: String = name.chars().filter(|c| !c.is_control()).collect();
        let alarm = serde_json::json!({
            "AlarmName": name, "AlarmDescription": description, "NewStateValue": state, "NewStateReason": reason,
            "StateChangeTime": "2026-11-25T10:01:00.490+0000",
            "AlarmArn": format!("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{arn_name}"),
            "Trigger": {"MetricName": name, "Namespace": "AWS/VPN", "Dimensions": [{"name": "VpnId", "value": name}]},
        });
        all_modes(&via_sns(&alarm.to_string(), None))?;
    }

    #[test]
    fn prop_any_record_lists_and_shows_within_limits(
        n in arb_notification(),
        extra in proptest::collection::vec((nasty(), 1u8..=5, arb_time()), 0..60),
        now in arb_time(),
        escalation in proptest::option::of((any::<u32>(), arb_time(), short_nasty())),
    ) {
        let mut record = vpn_record();
        record.key = n.incident_key.clone();
        record.title = n.title.clone();
        record.summary = n.summary.clone();
        record.roles = n.roles.clone();
        record.findings = n.findings.clone();
        record.timeline = n.timeline.clone();
        record.account = n.account.clone();
        record.region = n.region.clone();
        record.status = n.status;
        record.opened_at = n.opened_at.unwrap_or(now);
        record.resolved_at = (n.status == IncidentStatus::Resolved).then_some(n.occurred_at);
        record.escalation = escalation.map(|(attempt, due_at, schedule_name)| EscalationState { attempt, due_at, schedule_name });
        record.runbook_execution = n.vpn_id.clone();
        for actions in [true, false] {
            let msg = incident_show(&record, now, actions);
            prop_assert!(msg.limit_violations().is_empty(), "{:?}", msg.limit_violations());
            prop_assert!(!msg.blocks.is_empty());
        }
        let mut records = vec![record.clone()];
        for (title, impact, opened) in extra {
            let mut r = record.clone();
            r.key = title.clone();
            r.title = title;
            r.impact = Impact::new(impact).unwrap_or(Impact::NONE);
            r.opened_at = opened;
            r.status = IncidentStatus::Open;
            records.push(r);
        }
        let msg = incident_list(&records, now);
        prop_assert!(msg.limit_violations().is_empty(), "{:?}", msg.limit_violations());
    }

    #[test]
    fn prop_replies_and_modal_stay_within_limits(text in nasty(), key in "[^\\x00-\\x1f]{1,1024}", title in nasty(), url in nasty()) {
        let reply = super::views::ephemeral(&text);
        let msg = Message { text: reply.text, blocks: reply.blocks };
        prop_assert!(msg.limit_violations().is_empty(), "{:?}", msg.limit_violations());
        let meta = NoteModalMetadata {
            key: key.clone(),
            channel_id: Some("C0123ONCALL".into()),
            message_ts: Some(text.chars().take(40).collect()),
            response_url: Some(url),
        };
        let view = note_modal(&meta, &title);
        let raw = view["private_metadata"].as_str().unwrap_or_default();
        prop_assert!(raw.chars().count() <= super::views::MAX_PRIVATE_METADATA);
        let back: NoteModalMetadata = serde_json::from_str(raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.key, key);
        let about = view["blocks"][0]["text"]["text"].as_str().unwrap_or_default();
        prop_assert!(super::escape::slack_len(about) <= 3000);
    }

    #[test]
    fn prop_escape_is_idempotent_and_cut_respects_max(s in nasty(), max in 0usize..4000) {
        let once = super::escape::escape(&s);
        prop_assert_eq!(super::escape::escape(&once), once.clone());
        let cut = super::escape::escape_cut(&s, max);
        prop_assert!(super::escape::slack_len(&cut) <= max);
        let plain = super::escape::plain_cut(&s, max);
        prop_assert!(super::escape::slack_len(&plain) <= max);
    }
}
