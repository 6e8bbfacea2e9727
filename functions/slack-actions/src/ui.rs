//! What slack-actions shows in Slack: the ephemeral answers to `/incident list` and
//! `/incident show`, and the Add-note modal. Built with `shared::slack`'s Block Kit
//! model and escaping (every limit enforced), from the incident records of the state
//! table.

use serde_json::{json, Value};
use shared::lifecycle::IncidentRecord;
use shared::slack::blocks::{MessageBuilder, MAX_SECTION_TEXT};
use shared::slack::escape::{escape_cut, Mrkdwn};
use shared::slack::interaction::{
    NoteModalMetadata, MAX_NOTE_CHARS, NOTE_INPUT_ACTION, NOTE_INPUT_BLOCK, NOTE_MODAL_CALLBACK,
};

/// Incidents listed in full; more are counted.
pub const LIST_SHOWN: usize = 15;
/// Timeline entries `show` prints (the latest).
pub const SHOW_TIMELINE: usize = 10;

fn ephemeral(message: shared::slack::Message) -> Value {
    let mut v = serde_json::to_value(&message).unwrap_or_else(|_| json!({"text": message.text}));
    if let Value::Object(map) = &mut v {
        map.insert("response_type".into(), json!("ephemeral"));
        map.insert("replace_original".into(), json!(false));
    }
    v
}

fn date(t: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        t.timestamp(),
        t.format("%Y-%m-%d %H:%M UTC")
    )
}

fn owner(r: &IncidentRecord) -> String {
    r.roles
        .owner
        .as_ref()
        .map(|o| match o.slack_user() {
            Some(id) => format!("<@{id}>"),
            None => escape_cut(&o.label(), 200),
        })
        .unwrap_or_else(|| "_nobody yet_".to_string())
}

/// A key inside inline code (no backticks, escaped).
pub fn code_safe(key: &str) -> String {
    escape_cut(&key.replace('`', "'"), 300)
}

/// `/incident list`: the open incidents, newest first.
pub fn list(records: &[IncidentRecord]) -> Value {
    let mut b = MessageBuilder::new();
    let mut fallback = Mrkdwn::new(500);
    if records.is_empty() {
        fallback.text("No open incidents.");
        let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
        m.text("No open incidents.");
        b.section(m);
        return ephemeral(b.build(fallback));
    }
    fallback.text(&format!("{} open incident(s)", records.len()));
    b.header(&format!("Open incidents ({})", records.len()));
    for r in records.iter().take(LIST_SHOWN) {
        let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
        m.syntax("*").text(&r.title).syntax("*\n");
        m.text(&format!("Impact {} · ", r.impact)).syntax("opened ");
        m.syntax(&date(r.opened_at))
            .syntax(" · owner ")
            .syntax(&owner(r));
        m.syntax("\n`").text(&r.key.replace('`', "'")).syntax("`");
        b.section(m);
    }
    if records.len() > LIST_SHOWN {
        let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
        m.text(&format!("…and {} more.", records.len() - LIST_SHOWN));
        b.context(vec![m]);
    }
    ephemeral(b.build(fallback))
}

/// `/incident show <key>`: one incident with its roles, milestones and latest timeline.
pub fn show(r: &IncidentRecord) -> Value {
    let mut b = MessageBuilder::new();
    let mut fallback = Mrkdwn::new(500);
    fallback.text(&r.title);
    b.header(&r.title);
    let status = if r.is_open() { "open" } else { "resolved" };
    let reporter = r
        .roles
        .reporter
        .as_ref()
        .map(|a| escape_cut(&a.label(), 200))
        .unwrap_or_else(|| "_unknown_".into());
    let team = r
        .roles
        .team
        .as_ref()
        .map(|t| {
            if t.starts_with('C') {
                format!("<#{t}>")
            } else if t.starts_with('S') {
                format!("<!subteam^{t}>")
            } else {
                escape_cut(t, 200)
            }
        })
        .unwrap_or_else(|| "_none yet_".into());
    b.fields([
        ("Status", format!("{status}, impact {}", r.impact)),
        ("Opened", date(r.opened_at)),
        ("Reporter", reporter),
        ("Owner", owner(r)),
        ("Team", team),
        (
            "Incident",
            r.incident
                .as_ref()
                .map(|i| escape_cut(i.id(), 300))
                .unwrap_or_else(|| "_not opened yet_".into()),
        ),
    ]);
    let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
    m.syntax("*Summary*\n").text(&r.summary);
    b.section(m);
    if !r.timeline.is_empty() {
        let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
        m.syntax("*Latest timeline*");
        let start = r.timeline.len().saturating_sub(SHOW_TIMELINE);
        for e in &r.timeline[start..] {
            m.syntax("\n• ")
                .syntax(&date(e.at))
                .syntax(" ")
                .text(&e.text);
        }
        b.section(m);
    }
    let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
    m.syntax("`").text(&r.key.replace('`', "'")).syntax("`");
    b.context(vec![m]);
    ephemeral(b.build(fallback))
}

/// The Add-note modal; its submission carries `metadata` back (key, channel, message,
/// response URL) in `private_metadata`.
pub fn note_modal(metadata: &NoteModalMetadata) -> Value {
    let key = shared::text::truncate(&metadata.key, 2900);
    json!({
        "type": "modal",
        "callback_id": NOTE_MODAL_CALLBACK,
        "title": {"type": "plain_text", "text": "Add a note"},
        "submit": {"type": "plain_text", "text": "Add note"},
        "close": {"type": "plain_text", "text": "Cancel"},
        // Slack's limit for private_metadata is 3000 characters.
        "private_metadata": serde_json::to_string(metadata).unwrap_or_default().chars().take(3000).collect::<String>(),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("Note for *{}*", escape_cut(&key, 2900))}},
            {"type": "input", "block_id": NOTE_INPUT_BLOCK,
             "label": {"type": "plain_text", "text": "Note"},
             "element": {"type": "plain_text_input", "action_id": NOTE_INPUT_ACTION, "multiline": true,
                         "max_length": MAX_NOTE_CHARS,
                         "placeholder": {"type": "plain_text", "text": "What you found, did or decided"}}}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(key: &str, owner: Option<&str>) -> IncidentRecord {
        let mut v = json!({
            "key": key, "status": "open", "incident": {"backend": "OpsCenter", "id": "oi-0a1b2c3d4e5f"},
            "title": "VPN <down> & out", "summary": "Tunnel 1", "impact": 1,
            "opened_at": "2026-11-25T10:00:00Z", "resolved_at": null, "alarms": {},
            "runbook_execution": null, "timeline": [{"at": "2026-11-25T10:00:05Z", "text": "opened"}],
            "roles": {"reporter": {"kind": "alarm", "name": "vpn-tunnel-down"}, "team": "C0OPS"}
        });
        if let Some(o) = owner {
            v["roles"]["owner"] = json!({"kind": "person", "id": o, "name": "alice"});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn list_escapes_titles_and_names_owners() {
        let v = list(&[record("k1", Some("U0ALICE")), record("k2", None)]);
        assert_eq!(v["response_type"], "ephemeral");
        let text = v["blocks"].to_string();
        assert!(text.contains("Open incidents (2)"), "{text}");
        assert!(text.contains("VPN &lt;down&gt; &amp; out"), "{text}");
        assert!(text.contains("<@U0ALICE>"), "{text}");
        assert!(text.contains("_nobody yet_"), "{text}");
        assert_eq!(list(&[])["text"], "No open incidents.");
    }

    #[test]
    fn show_has_roles_and_timeline() {
        let v = show(&record("VPN connection vpn-1 is DOWN", Some("U0ALICE")));
        let text = v["blocks"].to_string();
        for want in [
            "Reporter",
            "alarm vpn-tunnel-down",
            "<#C0OPS>",
            "oi-0a1b2c3d4e5f",
            "Latest timeline",
            "opened",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    #[test]
    fn note_modal_round_trips_its_metadata() {
        let meta = NoteModalMetadata {
            key: "k".into(),
            channel_id: Some("C0OPS".into()),
            message_ts: Some("1.2".into()),
            response_url: Some("https://hooks.slack.com/actions/x".into()),
        };
        let v = note_modal(&meta);
        assert_eq!(v["callback_id"], NOTE_MODAL_CALLBACK);
        let back: NoteModalMetadata =
            serde_json::from_str(v["private_metadata"].as_str().unwrap()).unwrap();
        assert_eq!(back, meta);
        assert_eq!(v["blocks"][1]["element"]["action_id"], NOTE_INPUT_ACTION);
    }
}
