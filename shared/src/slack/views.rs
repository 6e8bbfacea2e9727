//! What slack-actions shows people, without I/O: ephemeral replies (to a command,
//! a button, a modal, or posted later to a `response_url`), the `/incident list`
//! and `/incident show` messages rendered from the state table's
//! [`IncidentRecord`]s, and the Add-note modal.
//!
//! Every message goes through [`MessageBuilder`], so the limits of DESIGN.md
//! section 6 hold whatever the records contain; the modal's own limits (title 24,
//! buttons 24, `private_metadata` 3000, input `max_length` 3000) are kept here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::authz::Action;
use super::blocks::{Block, Message, MessageBuilder, MAX_FALLBACK_TEXT, MAX_SECTION_TEXT};
use super::escape::{plain_cut, Mrkdwn};
use super::interaction::{
    NoteModalMetadata, MAX_NOTE_CHARS, NOTE_INPUT_ACTION, NOTE_INPUT_BLOCK, NOTE_MODAL_CALLBACK,
};
use super::render::{action_buttons, role_fields, ACTIONS_BLOCK_ID};
use crate::incident::Impact;
use crate::lifecycle::IncidentRecord;
use crate::notification::{format_duration, IncidentStatus};

/// Open incidents listed by `/incident list` before "… and N more".
pub const LIST_MAX: usize = 40;
/// Timeline entries `/incident show` shows (the latest).
pub const SHOW_TIMELINE_MAX: usize = 20;
/// Slack's limit for a view's `private_metadata`.
pub const MAX_PRIVATE_METADATA: usize = 3000;

/// A reply to a person: the body of the answer to a slash command or of a
/// `response_url` post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// `ephemeral` (only the person sees it) or `in_channel`.
    pub response_type: &'static str,
    pub text: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Block>,
    /// For `response_url` posts: add a message rather than replace the one whose
    /// button was pressed (the incident's top-level message must stay).
    pub replace_original: bool,
}

impl Reply {
    /// An ephemeral reply showing `message`.
    pub fn ephemeral(message: Message) -> Reply {
        Reply {
            response_type: "ephemeral",
            text: message.text,
            blocks: message.blocks,
            replace_original: false,
        }
    }
}

/// An ephemeral reply of one text (`*bold*` works; `&`, `<`, `>` are escaped;
/// user and channel references are kept), cut to the section limit.
pub fn ephemeral(text: &str) -> Reply {
    let mut b = MessageBuilder::new();
    let mut s = Mrkdwn::new(MAX_SECTION_TEXT);
    s.text(text);
    b.section(s);
    let mut fb = Mrkdwn::new(MAX_FALLBACK_TEXT);
    fb.line(text);
    Reply::ephemeral(b.build(fb))
}

/// The answer to an unauthorised request: says what is not allowed, nothing about
/// the policy.
pub fn not_allowed(action: Action) -> Reply {
    ephemeral(&format!(
        "🚫 You are not allowed to {}. Nothing was changed.",
        action.describe()
    ))
}

/// The immediate answer to a change that was queued.
pub fn on_it(what: &str) -> Reply {
    ephemeral(&format!(
        "⏳ On it: {what}. I will answer here when it is done."
    ))
}

fn impact_icon(impact: Impact) -> &'static str {
    match impact.value() {
        1 | 2 => "🔴",
        3 => "🟠",
        _ => "🟡",
    }
}

fn state_label(r: &IncidentRecord) -> (&'static str, &'static str) {
    match r.status {
        IncidentStatus::Open => (impact_icon(r.impact), "OPEN"),
        IncidentStatus::Resolved => ("✅", "RESOLVED"),
    }
}

fn impact_text(i: Impact) -> String {
    format!("Impact {} ({})", i.value(), i.label())
}

/// A time Slack shows in the reader's time zone, with a UTC fallback.
fn when(t: DateTime<Utc>) -> String {
    let utc = t.format("%Y-%m-%d %H:%M UTC");
    if t.timestamp() >= 0 {
        format!(
            "<!date^{}^{{date_short_pretty}} {{time}}|{utc}>",
            t.timestamp()
        )
    } else {
        utc.to_string()
    }
}

/// The `/incident list` message: the open incidents, most severe first, then
/// oldest first; resolved records are left out.
pub fn incident_list(records: &[IncidentRecord], now: DateTime<Utc>) -> Message {
    let mut open: Vec<&IncidentRecord> = records.iter().filter(|r| r.is_open()).collect();
    open.sort_by(|a, b| {
        a.impact
            .cmp(&b.impact)
            .then(a.opened_at.cmp(&b.opened_at))
            .then(a.key.cmp(&b.key))
    });
    let mut b = MessageBuilder::new();
    let mut fb = Mrkdwn::new(MAX_FALLBACK_TEXT);
    if open.is_empty() {
        b.header("No open incidents");
        let mut s = Mrkdwn::new(MAX_SECTION_TEXT);
        s.syntax("✅ Nothing is open right now.");
        b.section(s);
        fb.syntax("No open incidents");
        return b.build(fb);
    }
    let headline = format!("Open incidents ({})", open.len());
    b.header(&headline);
    fb.syntax(&headline);
    for r in open.iter().take(LIST_MAX) {
        let mut s = Mrkdwn::new(MAX_SECTION_TEXT);
        s.syntax(impact_icon(r.impact))
            .syntax(" *")
            .line(&r.title)
            .syntax("*\n")
            .syntax(&impact_text(r.impact))
            .syntax(" · open for ")
            .syntax(&format_duration(r.duration_seconds(now)))
            .syntax(" · owner: ");
        match &r.roles.owner {
            Some(o) => s.text(&super::render::actor_text(o)),
            None => s.syntax("_nobody yet_"),
        };
        s.syntax("\n`/incident show ").line(&r.key).syntax("`");
        b.section(s);
    }
    if open.len() > LIST_MAX {
        let mut c = Mrkdwn::new(MAX_SECTION_TEXT);
        c.syntax(&format!(
            "… and {} more open incident(s).",
            open.len() - LIST_MAX
        ));
        b.context(vec![c]);
    }
    b.build(fb)
}

/// The `/incident show` message: the incident's state, roles, milestones,
/// escalation, findings and latest timeline; with `actions`, the action buttons
/// while it is open.
pub fn incident_show(record: &IncidentRecord, now: DateTime<Utc>, actions: bool) -> Message {
    let r = record;
    let (icon, word) = state_label(r);
    let headline = format!("{icon} {word} · {} · {}", impact_text(r.impact), r.title);
    let mut b = MessageBuilder::new();
    let mut fb = Mrkdwn::new(MAX_FALLBACK_TEXT);
    fb.line(&headline);
    b.header(&headline);
    let mut s = Mrkdwn::new(MAX_SECTION_TEXT);
    s.text(&r.summary);
    b.section(s);

    let mut f: Vec<(&str, String)> = vec![
        (
            "Status",
            match r.status {
                IncidentStatus::Open => "Open".to_string(),
                IncidentStatus::Resolved => "Resolved".to_string(),
            },
        ),
        ("Impact", r.impact.to_string()),
    ];
    if let Some(peak) = r.peak_impact.filter(|p| *p != r.impact) {
        f.push(("Peak impact", peak.to_string()));
    }
    f.push(("Opened", when(r.opened_at)));
    match r.resolved_at {
        Some(at) => {
            f.push(("Resolved", when(at)));
            f.push(("Duration", format_duration(r.duration_seconds(now))));
        }
        None => f.push(("Open for", format_duration(r.duration_seconds(now)))),
    }
    f.extend(role_fields(&r.roles, r.is_open()));
    f.push(("Account", r.account.clone()));
    f.push(("Region", r.region.clone()));
    if let Some(i) = &r.incident {
        f.push(("Incident", i.id().to_string()));
    }
    f.push(("Alarms firing", r.firing().join(", ")));
    if let Some(t) = r.milestones.acknowledged_at {
        f.push(("Acknowledged", when(t)));
    }
    if let Some(t) = r.milestones.diagnosed_at {
        f.push(("Diagnosed", when(t)));
    }
    if let Some(e) = r.escalation.as_ref().filter(|_| r.is_open()) {
        f.push((
            "Escalation",
            format!("attempt {} due {}", e.attempt, when(e.due_at)),
        ));
    }
    if let Some(x) = &r.runbook_execution {
        f.push(("Runbook execution", x.clone()));
    }
    b.fields(f);
    if actions && r.is_open() {
        b.actions(
            ACTIONS_BLOCK_ID,
            &action_buttons(&r.key, r.roles.owner.is_some()),
        );
    }
    let region_ok = !r.region.is_empty()
        && r.region.len() <= 32
        && r.region
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if let (Some(i), true) = (&r.incident, region_ok) {
        let label = match i {
            crate::incident::IncidentRef::OpsCenter(id) => format!("OpsItem {id}"),
            crate::incident::IncidentRef::IncidentManager(_) => "Incident".to_string(),
        };
        b.links(&[super::blocks::LinkButton {
            label,
            url: i.console_url(&r.region),
        }]);
    }
    for finding in &r.findings {
        let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
        m.syntax("*").line(&finding.title).syntax("*");
        if !finding.severity.trim().is_empty() {
            m.syntax(" (").line(&finding.severity).syntax(")");
        }
        if !finding.evidence.trim().is_empty() {
            m.syntax("\n").text(&finding.evidence);
        }
        if !finding.next_step.trim().is_empty() {
            m.syntax("\n*Next:* ").text(&finding.next_step);
        }
        b.section(m);
    }
    if !r.timeline.is_empty() {
        let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
        let skip = r.timeline.len().saturating_sub(SHOW_TIMELINE_MAX);
        m.syntax("*Timeline*");
        if skip > 0 {
            m.syntax(&format!(
                " (latest {SHOW_TIMELINE_MAX} of {})",
                r.timeline.len()
            ));
        }
        for e in r.timeline.iter().skip(skip) {
            m.syntax("\n• ")
                .syntax(&when(e.at))
                .syntax(" ")
                .text(&e.text);
            if let Some(actor) = e.actor.as_deref().filter(|a| !a.trim().is_empty()) {
                m.syntax(" — ").line(actor);
            }
        }
        b.section(m);
    }
    let mut c = Mrkdwn::new(MAX_SECTION_TEXT);
    c.syntax("key `").line(&r.key).syntax("`");
    b.context(vec![c]);
    b.build(fb)
}

/// The Add-note modal (`views.open`'s `view`). `title` is the incident's title,
/// shown above the input. `private_metadata` carries `meta`; if it would exceed
/// Slack's 3000 characters, the response_url and then the message ts are left out
/// (the key alone always fits: keys are at most 1024 characters).
pub fn note_modal(meta: &NoteModalMetadata, title: &str) -> Value {
    let mut meta = meta.clone();
    let mut encoded = serde_json::to_string(&meta).unwrap_or_default();
    if encoded.chars().count() > MAX_PRIVATE_METADATA {
        meta.response_url = None;
        encoded = serde_json::to_string(&meta).unwrap_or_default();
    }
    if encoded.chars().count() > MAX_PRIVATE_METADATA {
        meta.message_ts = None;
        meta.channel_id = None;
        encoded = serde_json::to_string(&meta).unwrap_or_default();
    }
    let mut about = Mrkdwn::new(MAX_SECTION_TEXT);
    about
        .syntax("📝 Note for *")
        .line(if title.trim().is_empty() {
            &meta.key
        } else {
            title
        })
        .syntax("*\nIt is added to the incident's timeline and posted in its thread.");
    json!({
        "type": "modal",
        "callback_id": NOTE_MODAL_CALLBACK,
        "private_metadata": encoded,
        // Slack: title, submit and close up to 24 characters.
        "title": {"type": "plain_text", "text": plain_cut("Add a note", 24)},
        "submit": {"type": "plain_text", "text": plain_cut("Add note", 24)},
        "close": {"type": "plain_text", "text": plain_cut("Cancel", 24)},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": about.finish()}},
            {
                "type": "input",
                "block_id": NOTE_INPUT_BLOCK,
                "label": {"type": "plain_text", "text": "Note"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": NOTE_INPUT_ACTION,
                    "multiline": true,
                    "min_length": 1,
                    "max_length": MAX_NOTE_CHARS,
                    "placeholder": {"type": "plain_text", "text": "What did you find or do?"}
                }
            }
        ]
    })
}

/// Silences listed by `/incident silences` before "… and N more".
pub const SILENCES_MAX: usize = 20;
/// Held-back transitions shown per silence (the latest).
pub const SILENCE_HELD_SHOWN: usize = 5;

/// The `/incident silences` message: active silences (ending soonest first), then
/// those that ended recently; for each, what it matches, who set it, until when,
/// why, and what it held back.
pub fn silence_list(book: &crate::silence::SilenceBook, now: DateTime<Utc>) -> Message {
    let mut b = MessageBuilder::new();
    let mut fb = Mrkdwn::new(MAX_FALLBACK_TEXT);
    let mut all: Vec<&crate::silence::Silence> = book.silences.iter().collect();
    all.sort_by(|a, b| {
        b.is_active(now)
            .cmp(&a.is_active(now))
            .then(a.ended_at().cmp(&b.ended_at()))
            .then(a.id.cmp(&b.id))
    });
    let active = all.iter().filter(|s| s.is_active(now)).count();
    let headline = format!("Silences: {active} active");
    b.header(&headline);
    fb.syntax(&headline);
    if all.is_empty() {
        let mut s = Mrkdwn::new(MAX_SECTION_TEXT);
        s.syntax("Nothing is silenced. `/incident silence <target> <duration> [reason]` sets one.");
        b.section(s);
        return b.build(fb);
    }
    for x in all.iter().take(SILENCES_MAX) {
        let mut s = Mrkdwn::new(MAX_SECTION_TEXT);
        let icon = if x.is_active(now) { "🔕" } else { "🔔" };
        s.syntax(icon)
            .syntax(" `")
            .line(&x.id)
            .syntax("` *")
            .line(&x.target.describe())
            .syntax("*\n");
        if x.is_active(now) {
            s.syntax("until ")
                .syntax(&when(x.ends_at))
                .syntax(" (")
                .syntax(&format_duration(
                    u64::try_from((x.ends_at - now).num_seconds()).unwrap_or(0),
                ))
                .syntax(" left)");
        } else {
            s.syntax("ended ").syntax(&when(x.ended_at()));
            if let Some(l) = &x.lifted {
                s.syntax(", lifted by ")
                    .text(&super::render::actor_text(&l.by));
            }
        }
        s.syntax(" · set by ")
            .text(&super::render::actor_text(&x.created_by))
            .syntax(" ")
            .syntax(&when(x.created_at));
        if let Some(r) = &x.reason {
            s.syntax("\n_").line(r).syntax("_");
        }
        s.syntax(&format!("\nHeld back: {}", x.held_count));
        for h in x.held.iter().rev().take(SILENCE_HELD_SHOWN) {
            s.syntax("\n• ")
                .line(&h.alarm_name)
                .syntax(&format!(" {} ", h.state))
                .syntax(&when(h.changed_at))
                .syntax(" → ")
                .line(&h.incident_key);
        }
        b.section(s);
    }
    if all.len() > SILENCES_MAX {
        let mut c = Mrkdwn::new(MAX_SECTION_TEXT);
        c.syntax(&format!("… and {} more.", all.len() - SILENCES_MAX));
        b.context(vec![c]);
    }
    b.build(fb)
}

#[cfg(test)]
mod silence_tests {
    use super::*;
    use crate::alarm::AlarmState;
    use crate::incident::Actor;
    use crate::silence::{HeldTransition, Silence, SilenceBook, SilenceTarget};

    #[test]
    fn silence_list_shows_who_until_when_why_and_what_was_held() {
        let now: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let alice = Actor::Person {
            id: "U0ALICE".into(),
            name: "alice".into(),
        };
        let mut book = SilenceBook::default();
        let mut s = Silence {
            id: "s-1a2b3c4d".into(),
            target: SilenceTarget::Vpn("vpn-0f1e2d3c4b5a69788".into()),
            created_by: alice.clone(),
            created_at: now - chrono::Duration::minutes(10),
            ends_at: now + chrono::Duration::minutes(110),
            reason: Some("router <firmware> upgrade".into()),
            lifted: None,
            held: vec![],
            held_count: 0,
            accounts: None,
        };
        book.add(s.clone(), now).unwrap();
        book.record_held(
            "s-1a2b3c4d",
            HeldTransition {
                alarm_name: "vpn-tunnel-down".into(),
                alarm_arn: "arn:aws:cloudwatch:eu-west-1:1:alarm:vpn-tunnel-down".into(),
                state: AlarmState::Alarm,
                changed_at: now - chrono::Duration::minutes(5),
                incident_key: "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN".into(),
            },
        );
        s.id = "s-00000009".into();
        s.lifted = Some(crate::silence::Lifted {
            by: alice,
            at: now - chrono::Duration::minutes(1),
        });
        book.add(s, now).unwrap();
        let m = silence_list(&book, now);
        let text = serde_json::to_string(&m.blocks).unwrap();
        assert!(m.text.contains("Silences: 1 active"), "{}", m.text);
        assert!(
            text.contains("s-1a2b3c4d") && text.contains("VPN vpn-0f1e2d3c4b5a69788"),
            "{text}"
        );
        assert!(text.contains("1h 50m 00s left"), "{text}");
        assert!(text.contains("set by <@U0ALICE>"), "{text}");
        assert!(text.contains("router &lt;firmware&gt; upgrade"), "{text}");
        assert!(
            text.contains("Held back: 1") && text.contains("vpn-tunnel-down ALARM"),
            "{text}"
        );
        assert!(text.contains("lifted by <@U0ALICE>"), "{text}");
        assert!(
            text.find("s-1a2b3c4d") < text.find("s-00000009"),
            "active first"
        );
        let empty = silence_list(&SilenceBook::default(), now);
        assert!(serde_json::to_string(&empty.blocks)
            .unwrap()
            .contains("Nothing is silenced"));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::{Actor, IncidentRef, Roles};
    use crate::lifecycle::{AlarmFeed, EscalationState, Milestones};
    use crate::notification::{FindingSummary, TimelineEntry};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    pub(crate) fn record(key: &str, impact: Impact, opened: &str) -> IncidentRecord {
        let mut alarms = BTreeMap::new();
        alarms.insert(
            "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down".to_string(),
            AlarmFeed {
                name: "vpn-tunnel-down".into(),
                state: crate::alarm::AlarmState::Alarm,
                impact,
                changed_at: t(opened),
                contributor: None,
                attributes: Default::default(),
            },
        );
        IncidentRecord {
            key: key.into(),
            status: IncidentStatus::Open,
            incident: Some(IncidentRef::OpsCenter("oi-0123456789ab".into())),
            title: key.into(),
            summary: "Both tunnels are DOWN.".into(),
            impact,
            opened_at: t(opened),
            resolved_at: None,
            alarms,
            runbook_execution: Some("exec-123".into()),
            timeline: vec![TimelineEntry {
                at: t(opened),
                text: "Incident opened".into(),
                actor: Some("alarm vpn-tunnel-down".into()),
            }],
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            roles: Roles {
                reporter: Some(Actor::Alarm {
                    name: "vpn-tunnel-down".into(),
                }),
                owner: None,
                team: Some("C0123ONCALL".into()),
            },
            milestones: Milestones::default(),
            findings: vec![],
            runbook: None,
            escalation: None,
            peak_impact: Some(impact),
            account_info: None,
        }
    }

    fn texts(msg: &Message) -> Vec<String> {
        serde_json::to_value(&msg.blocks)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| {
                let mut out = vec![];
                if let Some(t) = b["text"]["text"].as_str() {
                    out.push(t.to_string());
                }
                for f in b["fields"].as_array().into_iter().flatten() {
                    out.push(f["text"].as_str().unwrap_or_default().to_string());
                }
                for e in b["elements"].as_array().into_iter().flatten() {
                    if let Some(t) = e["text"].as_str() {
                        out.push(t.to_string());
                    }
                    if let Some(t) = e["text"]["text"].as_str() {
                        out.push(t.to_string());
                    }
                }
                out
            })
            .collect()
    }

    #[test]
    fn ephemeral_replies_escape_and_never_replace_the_original() {
        let r = ephemeral("Resolved <script> & done by <@U0123ABCD>");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({
                "response_type": "ephemeral",
                "text": "Resolved &lt;script&gt; &amp; done by <@U0123ABCD>",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Resolved &lt;script&gt; &amp; done by <@U0123ABCD>"}}],
                "replace_original": false
            })
        );
        assert_eq!(
            not_allowed(Action::Resolve).text,
            "🚫 You are not allowed to resolve incidents. Nothing was changed."
        );
        assert_eq!(
            on_it("acknowledging").text,
            "⏳ On it: acknowledging. I will answer here when it is done."
        );
        let long = ephemeral(&"x".repeat(10_000));
        let msg = Message {
            text: long.text.clone(),
            blocks: long.blocks.clone(),
        };
        assert!(msg.limit_violations().is_empty());
    }

    #[test]
    fn list_shows_open_incidents_most_severe_first_with_owner_and_command() {
        let now = t("2026-11-25T11:00:00Z");
        let mut owned = record("B incident", Impact::CRITICAL, "2026-11-25T10:30:00Z");
        owned.roles.owner = Some(Actor::Person {
            id: "U0123ABCD".into(),
            name: "jane".into(),
        });
        let mut resolved = record("Z resolved", Impact::CRITICAL, "2026-11-25T09:00:00Z");
        resolved.status = IncidentStatus::Resolved;
        let records = vec![
            record("A medium", Impact::MEDIUM, "2026-11-25T10:00:00Z"),
            owned,
            resolved,
            record("C critical older", Impact::CRITICAL, "2026-11-25T10:00:00Z"),
        ];
        let msg = incident_list(&records, now);
        assert!(msg.limit_violations().is_empty());
        assert_eq!(msg.text, "Open incidents (3)");
        let texts = texts(&msg);
        assert_eq!(texts[0], "Open incidents (3)");
        assert_eq!(
            texts[1],
            "🔴 *C critical older*\nImpact 1 (Critical) · open for 1h 00m 00s · owner: _nobody yet_\n`/incident show C critical older`"
        );
        assert_eq!(
            texts[2],
            "🔴 *B incident*\nImpact 1 (Critical) · open for 30m 00s · owner: <@U0123ABCD>\n`/incident show B incident`"
        );
        assert!(texts[3].starts_with("🟠 *A medium*"));
        assert_eq!(texts.len(), 4);
    }

    #[test]
    fn list_says_when_nothing_is_open_and_cuts_long_lists() {
        let now = t("2026-11-25T11:00:00Z");
        let msg = incident_list(&[], now);
        assert_eq!(msg.text, "No open incidents");
        let many: Vec<IncidentRecord> = (0..60)
            .map(|i| record(&format!("k{i:02}"), Impact::HIGH, "2026-11-25T10:00:00Z"))
            .collect();
        let msg = incident_list(&many, now);
        assert!(msg.limit_violations().is_empty());
        assert_eq!(msg.blocks.len(), 1 + LIST_MAX + 1);
        assert_eq!(
            texts(&msg).last().unwrap(),
            "… and 20 more open incident(s)."
        );
    }

    #[test]
    fn show_renders_state_roles_milestones_escalation_and_actions() {
        let now = t("2026-11-25T10:16:00Z");
        let mut r = record(
            "VPN connection vpn-1 is DOWN",
            Impact::HIGH,
            "2026-11-25T10:01:00Z",
        );
        r.peak_impact = Some(Impact::CRITICAL);
        r.milestones.diagnosed_at = Some(t("2026-11-25T10:04:30Z"));
        r.escalation = Some(EscalationState {
            attempt: 1,
            due_at: t("2026-11-25T10:16:00Z"),
            schedule_name: "incident-escalation-ab12-1".into(),
        });
        r.findings = vec![FindingSummary {
            severity: "critical".into(),
            title: "IKE phase 1 fails".into(),
            evidence: "no proposal chosen".into(),
            next_step: "Align proposals".into(),
        }];
        let msg = incident_show(&r, now, true);
        assert!(
            msg.limit_violations().is_empty(),
            "{:?}",
            msg.limit_violations()
        );
        let texts = texts(&msg);
        assert_eq!(
            texts[0],
            "🔴 OPEN · Impact 2 (High) · VPN connection vpn-1 is DOWN"
        );
        for expected in [
            "*Peak impact*\n1 (Critical)",
            "*Open for*\n15m 00s",
            "*Reporter*\nalarm vpn-tunnel-down",
            "*Owner*\nnobody yet",
            "*Team*\n<#C0123ONCALL>",
            "*Incident*\noi-0123456789ab",
            "*Alarms firing*\nvpn-tunnel-down",
            "*Escalation*\nattempt 1 due <!date^1795601760^{date_short_pretty} {time}|2026-11-25 10:16 UTC>",
            "*Runbook execution*\nexec-123",
            "Acknowledge",
            "Resolve",
            "OpsItem oi-0123456789ab",
            "*IKE phase 1 fails* (critical)\nno proposal chosen\n*Next:* Align proposals",
            "key `VPN connection vpn-1 is DOWN`",
        ] {
            assert!(texts.iter().any(|t| t == expected), "{expected}: {texts:#?}");
        }
        let v = serde_json::to_value(&msg.blocks).unwrap();
        let actions = v
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["block_id"] == ACTIONS_BLOCK_ID)
            .unwrap();
        assert!(actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["value"] == "VPN connection vpn-1 is DOWN"));

        // Resolved, or without actions: no buttons.
        let no_actions = incident_show(&r, now, false);
        assert!(!serde_json::to_string(&no_actions)
            .unwrap()
            .contains(ACTIONS_BLOCK_ID));
        r.status = IncidentStatus::Resolved;
        r.resolved_at = Some(t("2026-11-25T10:33:10Z"));
        let resolved = incident_show(&r, now, true);
        let json = serde_json::to_string(&resolved).unwrap();
        assert!(!json.contains(ACTIONS_BLOCK_ID));
        assert!(!json.contains("Escalation"));
        assert!(json.contains("32m 10s"), "{json}");
    }

    #[test]
    fn show_owned_incident_offers_take_ownership() {
        let mut r = record("k", Impact::HIGH, "2026-11-25T10:01:00Z");
        r.roles.owner = Some(Actor::Person {
            id: "U0123ABCD".into(),
            name: "jane".into(),
        });
        let texts = texts(&incident_show(&r, t("2026-11-25T10:02:00Z"), true));
        assert!(texts.iter().any(|t| t == "Take ownership"));
        assert!(texts.iter().any(|t| t == "*Owner*\n<@U0123ABCD>"));
        assert!(!texts.iter().any(|t| t == "Acknowledge"));
    }

    #[test]
    fn note_modal_carries_the_key_and_context_in_private_metadata() {
        let meta = NoteModalMetadata {
            key: "VPN connection vpn-1 is DOWN".into(),
            channel_id: Some("C0123ONCALL".into()),
            message_ts: Some("1795600872.000100".into()),
            response_url: Some("https://hooks.slack.com/actions/T1/2/abc".into()),
        };
        let v = note_modal(&meta, "VPN connection vpn-1 is DOWN");
        assert_eq!(v["type"], "modal");
        assert_eq!(v["callback_id"], NOTE_MODAL_CALLBACK);
        let back: NoteModalMetadata =
            serde_json::from_str(v["private_metadata"].as_str().unwrap()).unwrap();
        assert_eq!(back, meta);
        assert_eq!(v["blocks"][1]["block_id"], NOTE_INPUT_BLOCK);
        assert_eq!(v["blocks"][1]["element"]["action_id"], NOTE_INPUT_ACTION);
        assert_eq!(v["blocks"][1]["element"]["max_length"], 3000);
        assert_eq!(
            v["blocks"][0]["text"]["text"],
            "📝 Note for *VPN connection vpn-1 is DOWN*\nIt is added to the incident's timeline and posted in its thread."
        );
        for part in ["title", "submit", "close"] {
            assert!(v[part]["text"].as_str().unwrap().chars().count() <= 24);
        }
    }

    #[test]
    fn note_modal_metadata_stays_within_3000() {
        let meta = NoteModalMetadata {
            key: "\"".repeat(1024),
            channel_id: Some("C0123ONCALL".into()),
            message_ts: Some("1795600872.000100".into()),
            response_url: Some(format!("https://hooks.slack.com/{}", "a".repeat(1500))),
        };
        let v = note_modal(&meta, "");
        let raw = v["private_metadata"].as_str().unwrap();
        assert!(raw.chars().count() <= MAX_PRIVATE_METADATA);
        let back: NoteModalMetadata = serde_json::from_str(raw).unwrap();
        assert_eq!(back.key, meta.key);
        assert_eq!(back.response_url, None);
    }
}
