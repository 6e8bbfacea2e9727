//! The notification parser and renderer (`shared::slack`): any SNS message (our own
//! Chatbot notifications, foreign ones, raw alarms, EventBridge events, text) is
//! recognized without panicking, and its Block Kit rendering for every mode and
//! destination kind is within Slack's limits. The limits are checked twice: by
//! `Message::limit_violations`, and independently here on the JSON that would be
//! sent, so a bug in the checker does not hide a bug in the builder.
//!
//! Input layout: byte 0 chooses the render options (mention, mode, milestones,
//! webhook, thread start); byte 1 the input form: bit 0 set means the body is a
//! pipeline `Notification` as JSON, sent the way alarm-to-incident sends it (wrapped
//! by `to_chatbot`), so the fuzzer mutates its fields directly rather than through a
//! JSON string inside JSON; bit 1 set means the subject comes first, up to the first
//! NUL byte. The rest is the SNS message body.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::notification::Notification;
use shared::slack::{render, Inbound, Mention, Milestones, Mode, RenderOptions, SnsMessage};

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:incident-notifications";

fuzz_target!(|data: &[u8]| {
    let [options, form, rest @ ..] = data else {
        return;
    };
    let (options, form) = (*options, *form);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (subject, body) = match text.split_once('\0') {
        Some((s, m)) if form & 0b10 != 0 => (Some(s), m),
        _ => (None, text),
    };
    let wrapped;
    let message = if form & 0b1 != 0 {
        let Ok(n) = serde_json::from_str::<Notification>(body) else {
            return;
        };
        wrapped = n.to_chatbot().to_string();
        // Our own notification must be read back as exactly what was sent.
        match Notification::from_chatbot(&n.to_chatbot()) {
            Some(Ok(back)) => assert_eq!(back, n, "Chatbot round trip changed the notification"),
            other => panic!("our notification not read back: {other:?}"),
        }
        wrapped.as_str()
    } else {
        body
    };
    let inbound = Inbound::parse(SnsMessage {
        topic_arn: TOPIC,
        subject,
        message,
    });
    if form & 0b1 != 0 {
        assert!(
            matches!(inbound, Inbound::Incident(_)),
            "our notification not recognized"
        );
    }
    let facts = inbound.facts(TOPIC);
    assert!(!facts.kind.is_empty());
    if let Some(thread) = inbound.thread() {
        assert!(!thread.key.trim().is_empty(), "a thread with a blank key");
    }

    let mention = match options & 0b111 {
        0 => Some(Mention::Here),
        1 => Some(Mention::Channel),
        2 => Some(Mention::Subteam("S0123ABCD".into())),
        3 => Some(Mention::User("U0123ABCD".into())),
        _ => None,
    };
    let mode = match (options >> 3) & 0b11 {
        0 => Mode::Post,
        1 => Mode::Reply,
        _ => Mode::Card,
    };
    let t0 = Utc.timestamp_opt(1_795_599_000, 0).single();
    let milestones = (options & 0b10_0000 != 0).then_some(Milestones {
        detected_at: t0,
        notified_at: t0,
        diagnosed_at: None,
    });
    let opts = RenderOptions {
        mode,
        mention: mention.as_ref(),
        webhook: options & 0b100_0000 != 0,
        thread_started_at: if options & 0b1000_0000 != 0 { t0 } else { None },
        milestones,
    };
    let msg = render(&inbound, &opts);
    let violations = msg.limit_violations();
    assert!(violations.is_empty(), "limits broken: {violations:?}");
    // `render` falls back to text only when the builder broke a limit: never expected.
    assert!(
        !msg.blocks.is_empty(),
        "render fell back to a text-only message for {:?}",
        facts.kind
    );
    let json = serde_json::to_value(&msg).expect("a Message always serializes");
    check_json(&json);
});

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Slack's limits, read off the JSON payload (DESIGN.md section 6).
fn check_json(msg: &Value) {
    let text = msg["text"].as_str().expect("top-level text");
    assert!(
        !text.trim().is_empty() && units(text) < 4000,
        "fallback text"
    );
    let blocks = msg["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= 50, "{} blocks", blocks.len());
    for b in blocks {
        match b["type"].as_str() {
            Some("header") => text_within(&b["text"], 150),
            Some("section") => {
                let fields = b["fields"].as_array().map_or(&[][..], Vec::as_slice);
                assert!(fields.len() <= 10, "{} fields", fields.len());
                assert!(!b["text"].is_null() || !fields.is_empty(), "empty section");
                if !b["text"].is_null() {
                    text_within(&b["text"], 3000);
                }
                fields.iter().for_each(|f| text_within(f, 2000));
            }
            Some("context") => {
                let els = b["elements"].as_array().expect("context elements");
                assert!(
                    (1..=10).contains(&els.len()),
                    "{} context elements",
                    els.len()
                );
                els.iter().for_each(|e| text_within(e, 3000));
            }
            Some("actions") => {
                let els = b["elements"].as_array().expect("action elements");
                assert!((1..=25).contains(&els.len()), "{} actions", els.len());
                let mut ids = std::collections::HashSet::new();
                for e in els {
                    text_within(&e["text"], 75);
                    let id = e["action_id"].as_str().expect("action_id");
                    assert!(
                        !id.is_empty() && id.len() <= 255 && ids.insert(id),
                        "action_id"
                    );
                    let url = e["url"].as_str().expect("url");
                    assert!(!url.is_empty() && units(url) <= 3000, "url");
                }
            }
            Some("divider") => {}
            other => panic!("unexpected block type {other:?}"),
        }
    }
}

fn text_within(t: &Value, max: usize) {
    let s = t["text"].as_str().expect("text object");
    assert!(!s.trim().is_empty(), "empty text");
    assert!(units(s) <= max, "{} units over {max}", units(s));
}
