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

use super::inbound::{Inbound, SnsMessage};
use super::render::{render, Milestones, Mode, RenderOptions};
use super::settings::Mention;
use crate::incident::Impact;
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
        roles: Default::default(),
        post_incident: None,
    }
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
fn nasty() -> impl Strategy<Value = String> {
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

fn short_nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[<>&|!@*_~` a-z]{0,20}",
        nasty().prop_map(|s| s.chars().take(300).collect())
    ]
}

fn arb_notification() -> impl Strategy<Value = Notification> {
    let findings = proptest::collection::vec(
        (short_nasty(), nasty(), nasty(), nasty()).prop_map(
            |(severity, title, evidence, next_step)| FindingSummary {
                severity,
                title,
                evidence,
                next_step,
            },
        ),
        0..60,
    );
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
    let timeline = proptest::collection::vec(
        (-100_000_000_000i64..100_000_000_000i64, nasty()).prop_map(|(s, text)| TimelineEntry {
            at: DateTime::from_timestamp(s, 0).unwrap_or_default(),
            text,
            actor: None,
        }),
        0..50,
    );
    (
        (0usize..8, nasty(), nasty(), nasty(), 1u8..=5, any::<bool>()),
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
    )
        .prop_map(
            |(
                (event, key, title, summary, impact, resolved),
                (account, region, alarm),
                (vpn_id, tunnel_ip, incident_ref),
                (next_steps, links, findings, timeline),
                (duration_seconds, incident_url),
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
                    roles: Default::default(),
                    post_incident: None,
                }
            },
        )
}

fn all_modes(inbound: &Inbound) -> Result<(), TestCaseError> {
    let mention = Mention::Subteam("S0123".into());
    for mode in [Mode::Post, Mode::Reply, Mode::Card] {
        for webhook in [false, true] {
            let opts = RenderOptions {
                mode,
                mention: Some(&mention),
                webhook,
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
    fn prop_escape_is_idempotent_and_cut_respects_max(s in nasty(), max in 0usize..4000) {
        let once = super::escape::escape(&s);
        prop_assert_eq!(super::escape::escape(&once), once.clone());
        let cut = super::escape::escape_cut(&s, max);
        prop_assert!(super::escape::slack_len(&cut) <= max);
        let plain = super::escape::plain_cut(&s, max);
        prop_assert!(super::escape::slack_len(&plain) <= max);
    }
}
