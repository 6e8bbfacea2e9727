//! The part of Slack Block Kit we send, as small serde types, with every limit of
//! DESIGN.md section 6 enforced while a message is built ([`MessageBuilder`]) and
//! checked again by [`Message::limit_violations`] (tests, and a last guard before
//! sending).
//!
//! Limits (Slack reference pages): 50 blocks; header plain_text 150; section text
//! 3000, up to 10 fields of 2000; context up to 10 elements; actions up to 25
//! elements; button text 75, `action_id` 255 and unique in its block, url 3000,
//! value 2000; `block_id` 255 and unique in the message; confirm dialog title 100,
//! text 300, buttons 30; top-level `text` under 4000. Empty texts are rejected by
//! Slack too.

use std::collections::HashSet;

use serde::Serialize;

use super::escape::{plain_cut, slack_len, Mrkdwn, SHORT_CUT_MARKER};

pub const MAX_BLOCKS: usize = 50;
pub const MAX_HEADER: usize = 150;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD_TEXT: usize = 2000;
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Context element text: Slack's limit for a text object (3000).
pub const MAX_CONTEXT_TEXT: usize = 3000;
pub const MAX_ACTIONS: usize = 25;
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_ACTION_ID: usize = 255;
pub const MAX_URL: usize = 3000;
pub const MAX_BUTTON_VALUE: usize = 2000;
pub const MAX_BLOCK_ID: usize = 255;
pub const MAX_CONFIRM_TITLE: usize = 100;
pub const MAX_CONFIRM_TEXT: usize = 300;
pub const MAX_CONFIRM_BUTTON: usize = 30;
/// The top-level `text` fallback: Slack's limit is 4000 (`msg_too_long` from
/// `chat.update` above it); a notification preview needs far less.
pub const MAX_FALLBACK_TEXT: usize = 1000;

/// A text object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Text {
    PlainText { text: String, emoji: bool },
    Mrkdwn { text: String },
}

impl Text {
    /// Plain text cut to `max` units; `None` when blank.
    pub fn plain(raw: &str, max: usize) -> Option<Text> {
        let text = plain_cut(raw.trim(), max);
        (!text.trim().is_empty()).then_some(Text::PlainText { text, emoji: true })
    }

    /// Finished mrkdwn; `None` when blank.
    pub fn mrkdwn(m: Mrkdwn) -> Option<Text> {
        (!m.is_blank()).then(|| Text::Mrkdwn { text: m.finish() })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Text::PlainText { text, .. } | Text::Mrkdwn { text } => text,
        }
    }
}

/// An interactive element: a button, either a link (`url`) or an action sent to
/// our interactivity endpoint (`value`, with an optional style and confirm dialog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Element {
    Button {
        text: Text,
        action_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        style: Option<ButtonStyle>,
        #[serde(skip_serializing_if = "Option::is_none")]
        confirm: Option<Confirm>,
    },
}

/// A button's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonStyle {
    Primary,
    Danger,
}

/// The "are you sure?" dialog of a button (Slack's confirmation dialog object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confirm {
    /// plain_text, up to 100.
    pub title: Text,
    /// Up to 300.
    pub text: Text,
    /// plain_text, up to 30.
    pub confirm: Text,
    /// plain_text, up to 30.
    pub deny: Text,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style: Option<ButtonStyle>,
}

/// An action button as callers describe it; [`MessageBuilder::actions`] makes it fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionButton {
    pub label: String,
    pub action_id: String,
    pub value: String,
    pub style: Option<ButtonStyle>,
    /// (title, text, confirm label, deny label) of a confirmation dialog.
    pub confirm: Option<(String, String, String, String)>,
}

/// A layout block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Header {
        text: Text,
    },
    Section {
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<Text>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        fields: Vec<Text>,
    },
    Context {
        elements: Vec<Text>,
    },
    Actions {
        #[serde(skip_serializing_if = "Option::is_none")]
        block_id: Option<String>,
        elements: Vec<Element>,
    },
    Divider,
}

/// A message: fallback text plus blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Shown in notifications and read by screen readers.
    pub text: String,
    /// Empty only for the text-only message `render` falls back to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Block>,
}

/// A labelled link for an actions block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkButton {
    pub label: String,
    pub url: String,
}

/// Builds a [`Message`] that Slack accepts whatever the input: texts are cut as
/// they are added, and blocks beyond the limit are counted and replaced by one
/// context block saying how many were left out.
#[derive(Debug, Default)]
pub struct MessageBuilder {
    blocks: Vec<Block>,
    omitted: usize,
}

impl MessageBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, block: Block) {
        // The last slot is kept for the "blocks left out" note.
        if self.blocks.len() < MAX_BLOCKS - 1 {
            self.blocks.push(block);
        } else {
            self.omitted += 1;
        }
    }

    /// A header (plain text, cut to 150). Blank text adds nothing.
    pub fn header(&mut self, raw: &str) -> &mut Self {
        if let Some(text) = Text::plain(raw, MAX_HEADER) {
            self.push(Block::Header { text });
        }
        self
    }

    /// A section of mrkdwn built by the caller with [`Mrkdwn::new`]`(`[`MAX_SECTION_TEXT`]`)`.
    /// Blank text adds nothing.
    pub fn section(&mut self, text: Mrkdwn) -> &mut Self {
        if let Some(text) = Text::mrkdwn(text) {
            self.push(Block::Section {
                text: Some(text),
                fields: vec![],
            });
        }
        self
    }

    /// A section of escaped text, split over several sections (at most `max_sections`)
    /// rather than cut at 3000, for long free text such as a plain SNS message.
    pub fn long_text(&mut self, raw: &str, max_sections: usize) -> &mut Self {
        let mut rest = raw;
        for i in 0..max_sections.max(1) {
            if rest.trim().is_empty() {
                break;
            }
            let last = i + 1 == max_sections.max(1);
            let (chunk, remainder) = split_for_section(rest);
            let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
            if last && !remainder.is_empty() {
                // The last section shows what fits of the rest and the cut marker.
                m.text(rest);
            } else {
                m.text(chunk);
            }
            self.section(m);
            rest = remainder;
        }
        self
    }

    /// A section of `*label*\nvalue` fields, blank values skipped; more than 10
    /// fields continue in further sections.
    pub fn fields<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, String)>) -> &mut Self {
        let mut fields = vec![];
        for (label, value) in pairs {
            if value.trim().is_empty() {
                continue;
            }
            let mut m = Mrkdwn::new(MAX_FIELD_TEXT);
            m.syntax("*").line(label).syntax("*\n").text(&value);
            if let Some(t) = Text::mrkdwn(m) {
                fields.push(t);
            }
        }
        for chunk in fields.chunks(MAX_FIELDS) {
            self.push(Block::Section {
                text: None,
                fields: chunk.to_vec(),
            });
        }
        self
    }

    /// A context block of mrkdwn elements (at most 10 kept).
    pub fn context(&mut self, elements: Vec<Mrkdwn>) -> &mut Self {
        let elements: Vec<Text> = elements
            .into_iter()
            .filter_map(Text::mrkdwn)
            .take(MAX_CONTEXT_ELEMENTS)
            .collect();
        if !elements.is_empty() {
            self.push(Block::Context { elements });
        }
        self
    }

    /// Link buttons: duplicates (same URL) and unusable URLs (not http(s), longer
    /// than 3000) dropped, at most 25 per actions block, unique `action_id`s.
    pub fn links(&mut self, links: &[LinkButton]) -> &mut Self {
        let mut seen = HashSet::new();
        let mut elements = vec![];
        for link in links {
            let url = link.url.trim();
            let usable = (url.starts_with("https://") || url.starts_with("http://"))
                && slack_len(url) <= MAX_URL
                && !url.contains(char::is_whitespace);
            if !usable || !seen.insert(url.to_string()) {
                continue;
            }
            let Some(text) = Text::plain(&link.label, MAX_BUTTON_TEXT)
                .or_else(|| Text::plain("Open", MAX_BUTTON_TEXT))
            else {
                continue;
            };
            elements.push(Element::Button {
                text,
                action_id: format!("link_{}", seen.len()),
                url: Some(url.to_string()),
                value: None,
                style: None,
                confirm: None,
            });
        }
        for chunk in elements.chunks(MAX_ACTIONS) {
            self.push(Block::Actions {
                block_id: None,
                elements: chunk.to_vec(),
            });
        }
        self
    }

    /// One actions block of buttons for our interactivity endpoint, with `block_id`.
    /// Buttons whose value is empty or over 2000 are dropped (an action without its
    /// incident key would be useless), as are repeated `action_id`s; at most 25 kept.
    /// Nothing is added when no button is left.
    pub fn actions(&mut self, block_id: &str, buttons: &[ActionButton]) -> &mut Self {
        let mut ids = HashSet::new();
        let mut elements = vec![];
        for b in buttons {
            let usable = !b.value.is_empty()
                && slack_len(&b.value) <= MAX_BUTTON_VALUE
                && !b.action_id.is_empty()
                && b.action_id.len() <= MAX_ACTION_ID;
            if !usable || !ids.insert(b.action_id.as_str()) {
                continue;
            }
            let Some(text) = Text::plain(&b.label, MAX_BUTTON_TEXT) else {
                continue;
            };
            let confirm = b.confirm.as_ref().and_then(|(title, text, yes, no)| {
                Some(Confirm {
                    title: Text::plain(title, MAX_CONFIRM_TITLE)?,
                    text: Text::plain(text, MAX_CONFIRM_TEXT)?,
                    confirm: Text::plain(yes, MAX_CONFIRM_BUTTON)?,
                    deny: Text::plain(no, MAX_CONFIRM_BUTTON)?,
                    style: b.style.filter(|s| *s == ButtonStyle::Danger),
                })
            });
            elements.push(Element::Button {
                text,
                action_id: b.action_id.clone(),
                url: None,
                value: Some(b.value.clone()),
                style: b.style,
                confirm,
            });
            if elements.len() == MAX_ACTIONS {
                break;
            }
        }
        if !elements.is_empty() {
            let block_id = plain_cut(block_id, MAX_BLOCK_ID);
            self.push(Block::Actions {
                block_id: (!block_id.is_empty()).then_some(block_id),
                elements,
            });
        }
        self
    }

    /// The message, with `fallback` (plain mrkdwn, escaped by the caller) cut to
    /// [`MAX_FALLBACK_TEXT`].
    pub fn build(mut self, fallback: Mrkdwn) -> Message {
        if self.omitted > 0 {
            let mut m = Mrkdwn::new(MAX_CONTEXT_TEXT);
            m.syntax(&format!(
                "_{SHORT_CUT_MARKER} {} more block(s) left out: Slack allows {MAX_BLOCKS} per message._",
                self.omitted
            ));
            if let Some(t) = Text::mrkdwn(m) {
                self.blocks.push(Block::Context { elements: vec![t] });
            }
        }
        let text = fallback.finish();
        let text = if text.trim().is_empty() {
            "Notification".to_string()
        } else {
            text
        };
        Message {
            text,
            blocks: self.blocks,
        }
    }
}

/// Splits off what one section can show after escaping: at most 3000 units of
/// escaped text, cut at a line break or space when one is near the end.
fn split_for_section(raw: &str) -> (&str, &str) {
    let mut units = 0;
    let mut end = raw.len();
    for (i, c) in raw.char_indices() {
        let escaped = match c {
            '&' => 5,
            '<' | '>' => 4,
            c => c.len_utf16(),
        };
        if units + escaped > MAX_SECTION_TEXT {
            end = i;
            break;
        }
        units += escaped;
    }
    if end == raw.len() {
        return (raw, "");
    }
    let head = &raw[..end];
    let split = head
        .rfind('\n')
        .or_else(|| head.rfind(' '))
        .filter(|&i| i > end / 2)
        .map_or(end, |i| i + 1);
    (&raw[..split], &raw[split..])
}

impl Message {
    /// Every Slack limit this message breaks (empty when Slack will accept it).
    pub fn limit_violations(&self) -> Vec<String> {
        let mut v = vec![];
        if self.text.trim().is_empty() {
            v.push("fallback text is empty".into());
        }
        if slack_len(&self.text) >= 4000 {
            v.push(format!(
                "fallback text has {} units (limit 4000)",
                slack_len(&self.text)
            ));
        }
        if self.blocks.len() > MAX_BLOCKS {
            v.push(format!("{} blocks (limit {MAX_BLOCKS})", self.blocks.len()));
        }
        let mut block_ids = HashSet::new();
        for (i, block) in self.blocks.iter().enumerate() {
            check_block(i, block, &mut v);
            if let Block::Actions {
                block_id: Some(id), ..
            } = block
            {
                if id.is_empty() || id.len() > MAX_BLOCK_ID || !block_ids.insert(id) {
                    v.push(format!("block {i}: block_id empty, too long or not unique"));
                }
            }
        }
        v
    }
}

fn check_text(at: &str, text: &Text, max: usize, v: &mut Vec<String>) {
    let s = text.as_str();
    if s.trim().is_empty() {
        v.push(format!("{at}: empty text"));
    }
    if slack_len(s) > max {
        v.push(format!("{at}: {} units (limit {max})", slack_len(s)));
    }
}

fn check_block(i: usize, block: &Block, v: &mut Vec<String>) {
    match block {
        Block::Header { text } => {
            if !matches!(text, Text::PlainText { .. }) {
                v.push(format!("block {i}: header text must be plain_text"));
            }
            check_text(&format!("block {i} header"), text, MAX_HEADER, v);
        }
        Block::Section { text, fields } => {
            if text.is_none() && fields.is_empty() {
                v.push(format!("block {i}: section without text or fields"));
            }
            if let Some(t) = text {
                check_text(&format!("block {i} section"), t, MAX_SECTION_TEXT, v);
            }
            if fields.len() > MAX_FIELDS {
                v.push(format!(
                    "block {i}: {} fields (limit {MAX_FIELDS})",
                    fields.len()
                ));
            }
            for (j, f) in fields.iter().enumerate() {
                check_text(&format!("block {i} field {j}"), f, MAX_FIELD_TEXT, v);
            }
        }
        Block::Context { elements } => {
            if elements.is_empty() || elements.len() > MAX_CONTEXT_ELEMENTS {
                v.push(format!(
                    "block {i}: {} context elements (1 to {MAX_CONTEXT_ELEMENTS})",
                    elements.len()
                ));
            }
            for (j, e) in elements.iter().enumerate() {
                check_text(&format!("block {i} context {j}"), e, MAX_CONTEXT_TEXT, v);
            }
        }
        Block::Actions { elements, .. } => {
            if elements.is_empty() || elements.len() > MAX_ACTIONS {
                v.push(format!(
                    "block {i}: {} actions (1 to {MAX_ACTIONS})",
                    elements.len()
                ));
            }
            let mut ids = HashSet::new();
            for (
                j,
                Element::Button {
                    text,
                    action_id,
                    url,
                    value,
                    confirm,
                    ..
                },
            ) in elements.iter().enumerate()
            {
                if !matches!(text, Text::PlainText { .. }) {
                    v.push(format!("block {i} button {j}: text must be plain_text"));
                }
                check_text(&format!("block {i} button {j}"), text, MAX_BUTTON_TEXT, v);
                if action_id.is_empty() || action_id.len() > MAX_ACTION_ID || !ids.insert(action_id)
                {
                    v.push(format!(
                        "block {i} button {j}: action_id empty, too long or not unique"
                    ));
                }
                match (url, value) {
                    (Some(url), _) if url.is_empty() || slack_len(url) > MAX_URL => {
                        v.push(format!("block {i} button {j}: url empty or over {MAX_URL}"));
                    }
                    (_, Some(value)) if value.is_empty() || slack_len(value) > MAX_BUTTON_VALUE => {
                        v.push(format!(
                            "block {i} button {j}: value empty or over {MAX_BUTTON_VALUE}"
                        ));
                    }
                    (None, None) => {
                        v.push(format!("block {i} button {j}: neither url nor value"));
                    }
                    _ => {}
                }
                if let Some(c) = confirm {
                    let at = format!("block {i} button {j} confirm");
                    for (part, t, max) in [
                        ("title", &c.title, MAX_CONFIRM_TITLE),
                        ("text", &c.text, MAX_CONFIRM_TEXT),
                        ("confirm", &c.confirm, MAX_CONFIRM_BUTTON),
                        ("deny", &c.deny, MAX_CONFIRM_BUTTON),
                    ] {
                        if part != "text" && !matches!(t, Text::PlainText { .. }) {
                            v.push(format!("{at} {part}: must be plain_text"));
                        }
                        check_text(&format!("{at} {part}"), t, max, v);
                    }
                }
            }
        }
        Block::Divider => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builder_serializes_block_kit_shapes() {
        let mut b = MessageBuilder::new();
        let mut s = Mrkdwn::new(MAX_SECTION_TEXT);
        s.syntax("*Hi* ").text("a<b");
        b.header("Title")
            .section(s)
            .fields([("Account", "123".to_string()), ("Empty", " ".into())]);
        b.links(&[LinkButton {
            label: "Alarm".into(),
            url: "https://example.com/a".into(),
        }]);
        let mut f = Mrkdwn::new(100);
        f.text("fallback");
        let msg = b.build(f);
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({
                "text": "fallback",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Title", "emoji": true}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "*Hi* a&lt;b"}},
                    {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Account*\n123"}]},
                    {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Alarm", "emoji": true}, "action_id": "link_1", "url": "https://example.com/a"}]}
                ]
            })
        );
        assert!(msg.limit_violations().is_empty());
    }

    #[test]
    fn builder_caps_blocks_at_fifty_with_a_note() {
        let mut b = MessageBuilder::new();
        for i in 0..80 {
            b.header(&format!("h{i}"));
        }
        let msg = b.build(Mrkdwn::new(10));
        assert_eq!(msg.blocks.len(), MAX_BLOCKS);
        let Block::Context { elements } = &msg.blocks[49] else {
            panic!("last block is not the note: {:?}", msg.blocks[49]);
        };
        assert!(
            elements[0].as_str().contains("31 more block(s) left out"),
            "{}",
            elements[0].as_str()
        );
        assert_eq!(msg.text, "Notification");
        assert!(msg.limit_violations().is_empty());
    }

    #[test]
    fn links_drop_duplicates_bad_urls_and_split_over_25() {
        let mut links: Vec<LinkButton> = (0..30)
            .map(|i| LinkButton {
                label: format!("L{i}"),
                url: format!("https://x.y/{i}"),
            })
            .collect();
        links.push(links[0].clone());
        links.push(LinkButton {
            label: "js".into(),
            url: "javascript:alert(1)".into(),
        });
        links.push(LinkButton {
            label: "long".into(),
            url: format!("https://x.y/{}", "a".repeat(3000)),
        });
        let mut b = MessageBuilder::new();
        b.links(&links);
        let msg = b.build(Mrkdwn::new(10));
        let counts: Vec<usize> = msg
            .blocks
            .iter()
            .map(|b| match b {
                Block::Actions { elements, .. } => elements.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(counts, vec![25, 5]);
        assert!(msg.limit_violations().is_empty());
    }

    fn button(id: &str, value: &str) -> ActionButton {
        ActionButton {
            label: format!("Do {id}"),
            action_id: id.into(),
            value: value.into(),
            style: None,
            confirm: None,
        }
    }

    #[test]
    fn actions_serialize_value_style_and_confirm() {
        let mut b = MessageBuilder::new();
        let mut resolve = button("incident.resolve", "key 1");
        resolve.style = Some(ButtonStyle::Danger);
        resolve.confirm = Some((
            "Resolve?".into(),
            "x".repeat(400),
            "Resolve".into(),
            "Cancel".into(),
        ));
        b.actions(
            "incident.actions",
            &[button("incident.acknowledge", "key 1"), resolve],
        );
        let msg = b.build(Mrkdwn::new(10));
        assert!(
            msg.limit_violations().is_empty(),
            "{:?}",
            msg.limit_violations()
        );
        let v = serde_json::to_value(&msg.blocks).unwrap();
        assert_eq!(
            v[0]["elements"][0],
            json!({"type": "button", "text": {"type": "plain_text", "text": "Do incident.acknowledge", "emoji": true},
                   "action_id": "incident.acknowledge", "value": "key 1"})
        );
        assert_eq!(v[0]["block_id"], "incident.actions");
        let r = &v[0]["elements"][1];
        assert_eq!(r["style"], "danger");
        assert_eq!(r["confirm"]["style"], "danger");
        assert_eq!(r["confirm"]["title"]["text"], "Resolve?");
        // Cut to the dialog's 300.
        assert_eq!(
            r["confirm"]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            300
        );
    }

    #[test]
    fn actions_drop_unusable_and_repeated_buttons() {
        let mut b = MessageBuilder::new();
        b.actions(
            "a",
            &[
                button("x", ""),
                button("y", &"k".repeat(2001)),
                button("z", "ok"),
                button("z", "again"),
            ],
        );
        b.actions("b", &[button("x", "")]);
        let msg = b.build(Mrkdwn::new(10));
        assert_eq!(msg.blocks.len(), 1);
        let Block::Actions { elements, .. } = &msg.blocks[0] else {
            panic!("not actions")
        };
        assert_eq!(elements.len(), 1);
    }

    #[test]
    fn violations_name_repeated_block_ids_and_bad_values() {
        let el = |value: Option<&str>| Element::Button {
            text: Text::PlainText {
                text: "B".into(),
                emoji: true,
            },
            action_id: "a".into(),
            url: None,
            value: value.map(str::to_string),
            style: None,
            confirm: None,
        };
        let msg = Message {
            text: "t".into(),
            blocks: vec![
                Block::Actions {
                    block_id: Some("same".into()),
                    elements: vec![el(Some(&"v".repeat(2001)))],
                },
                Block::Actions {
                    block_id: Some("same".into()),
                    elements: vec![el(None)],
                },
            ],
        };
        assert_eq!(
            msg.limit_violations(),
            vec![
                "block 0 button 0: value empty or over 2000".to_string(),
                "block 1 button 0: neither url nor value".into(),
                "block 1: block_id empty, too long or not unique".into(),
            ]
        );
    }

    #[test]
    fn fields_over_ten_continue_in_another_section() {
        let mut b = MessageBuilder::new();
        b.fields((0..12).map(|i| ("F", format!("v{i}"))));
        let msg = b.build(Mrkdwn::new(10));
        assert_eq!(msg.blocks.len(), 2);
        assert!(msg.limit_violations().is_empty());
    }

    #[test]
    fn long_text_splits_into_sections_and_marks_the_cut() {
        let raw = "word & ".repeat(2000); // 14000 chars, escapes to 18000 units
        let mut b = MessageBuilder::new();
        b.long_text(&raw, 3);
        let msg = b.build(Mrkdwn::new(10));
        assert_eq!(msg.blocks.len(), 3);
        let Block::Section {
            text: Some(last), ..
        } = &msg.blocks[2]
        else {
            panic!("not a section")
        };
        assert!(last.as_str().ends_with(super::super::escape::CUT_MARKER));
        assert!(
            msg.limit_violations().is_empty(),
            "{:?}",
            msg.limit_violations()
        );
    }

    #[test]
    fn violations_name_each_broken_limit() {
        let msg = Message {
            text: String::new(),
            blocks: vec![
                Block::Header {
                    text: Text::Mrkdwn {
                        text: "x".repeat(151),
                    },
                },
                Block::Section {
                    text: None,
                    fields: vec![],
                },
            ],
        };
        let v = msg.limit_violations();
        assert_eq!(
            v,
            vec![
                "fallback text is empty".to_string(),
                "block 0: header text must be plain_text".into(),
                "block 0 header: 151 units (limit 150)".into(),
                "block 1: section without text or fields".into(),
            ]
        );
    }
}
