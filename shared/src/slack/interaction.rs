//! What a person asks from Slack, parsed from the (already verified) request body:
//! the slash command `/incident ...` and the interactivity payloads (buttons on the
//! incident's top-level message, the Add-note modal's submission).
//!
//! Both arrive as `application/x-www-form-urlencoded`. A slash command's fields are
//! the form itself (`user_id`, `channel_id`, `text`, `response_url`, `trigger_id`...);
//! interactivity sends one field, `payload`, holding JSON (`type` `block_actions` or
//! `view_submission`). The result is one [`Interaction`]: who asked, from where, and
//! the typed [`Request`]; the `response_url` (anyone holding it can post in the
//! channel for 30 minutes) is wrapped in [`Secret`].
//!
//! Command syntax (`/incident help` prints it):
//! `list` · `show <key>` · `declare [--impact N] <title>` · `note <key> <text>` (a
//! key with spaces in double quotes) · `silence <target> <duration> [reason]` ·
//! `silences` · `unsilence <id>` · `help`. Keys are the incident dedupe keys as `list`
//! shows them. A silence's target is an incident key, a VPN id (`vpn-…`) or an
//! alarm-name prefix; `incident:`, `vpn:` or `alarm:` before it says which.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::authz::Action;
use crate::error::{Retryable, Secret};
use crate::incident::Impact;

/// `action_id` of the Acknowledge / Take ownership button; `value` = incident key.
pub const ACTION_ACKNOWLEDGE: &str = "incident.acknowledge";
/// `action_id` of the Re-run diagnosis button.
pub const ACTION_RERUN: &str = "incident.rerun";
/// `action_id` of the Resolve button.
pub const ACTION_RESOLVE: &str = "incident.resolve";
/// `action_id` of the Add note button (opens the modal).
pub const ACTION_NOTE: &str = "incident.note";
/// `callback_id` of the Add-note modal.
pub const NOTE_MODAL_CALLBACK: &str = "incident.note";
/// `block_id` and `action_id` of the modal's text input.
pub const NOTE_INPUT_BLOCK: &str = "note";
pub const NOTE_INPUT_ACTION: &str = "note_text";

/// Longest incident key accepted (the state table's key is `incident#<key>`; keys
/// the pipeline makes are far shorter).
pub const MAX_KEY_CHARS: usize = 1024;
/// Longest title of a declared incident (Incident Manager allows 200 characters).
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest note (the modal's input allows 3000 characters).
pub const MAX_NOTE_CHARS: usize = 3000;

/// The usage text, for `help` and for a command that could not be understood.
pub const USAGE: &str = "Usage:\n\
• `/incident list`: the open incidents\n\
• `/incident show <key>`: one incident\n\
• `/incident declare [--impact 1-5] <title>`: open an incident yourself, as its reporter\n\
• `/incident note <key> <text>`: add a note (put a key with spaces in \"double quotes\")\n\
• `/incident silence <incident key | vpn-id | alarm-name prefix> <duration> [reason]`: alarms that match page nobody for a while (`30m`, `2h`, `1d`; at most `7d`)\n\
• `/incident silences`: the silences, who set them, until when, why, what they held back\n\
• `/incident unsilence <id>`: end a silence now\n\
• `/incident help`: this text";

/// One request from Slack.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub caller: Caller,
    pub source: Source,
    pub request: Request,
}

/// Who asked, from where, and how to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// Slack user id (`U0123ABCD`).
    pub user_id: String,
    /// The user's name as Slack sent it (may be empty).
    pub user_name: String,
    /// Workspace id (`T0123ABCD`).
    pub team_id: String,
    /// The channel the command was typed in or the button's message is in (absent
    /// for a modal submission unless we kept it in the modal's metadata).
    pub channel_id: Option<String>,
    /// Where to post the answer (ephemeral or in channel) for 30 minutes.
    pub response_url: Option<Secret<String>>,
    /// Opens a modal within 3 s (`views.open`).
    pub trigger_id: Option<String>,
    /// The `ts` of the message whose button was pressed (the incident's top-level
    /// message), or of the message the modal was opened from.
    pub message_ts: Option<String>,
}

impl Caller {
    /// The person as an incident actor (timeline, roles).
    pub fn actor(&self) -> crate::incident::Actor {
        crate::incident::Actor::Person {
            id: self.user_id.clone(),
            name: self.user_name.clone(),
        }
    }
}

/// Where the request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The slash command.
    Command,
    /// A button of the incident's top-level message.
    Button,
    /// The Add-note modal's submission.
    Modal,
}

/// What the person asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Help,
    /// The open incidents.
    List,
    Show {
        key: String,
    },
    /// Open an incident by hand; the person is its reporter.
    Declare {
        title: String,
        /// `--impact N`; `None` lets the function choose its default.
        impact: Option<Impact>,
    },
    /// Take ownership (first acknowledgement or hand-over).
    Acknowledge {
        key: String,
    },
    /// Start the diagnosis runbook again.
    Rerun {
        key: String,
    },
    Resolve {
        key: String,
    },
    /// Open the Add-note modal (button): answer with `views.open` at once.
    OpenNoteModal {
        key: String,
    },
    /// Add a note (command or modal).
    AddNote {
        key: String,
        text: String,
    },
    /// Hold back alarms matching `target` for `duration`.
    Silence {
        /// As typed: an incident key, a VPN id or an alarm-name prefix, optionally
        /// with `incident:`, `vpn:` or `alarm:` before it (resolved by the function,
        /// which can look incidents up).
        target: String,
        duration: chrono::Duration,
        reason: Option<String>,
    },
    /// The silences.
    Silences,
    /// End silence `id` now.
    Unsilence {
        id: String,
    },
}

impl Request {
    /// The permission it needs ([`super::authz::ActionPolicy`]).
    pub fn action(&self) -> Action {
        match self {
            Request::Help | Request::List | Request::Show { .. } | Request::Silences => {
                Action::Read
            }
            Request::Silence { .. } | Request::Unsilence { .. } => Action::Silence,
            Request::Declare { .. } => Action::Declare,
            Request::Acknowledge { .. } => Action::Acknowledge,
            Request::Rerun { .. } => Action::Rerun,
            Request::Resolve { .. } => Action::Resolve,
            Request::OpenNoteModal { .. } | Request::AddNote { .. } => Action::Note,
        }
    }

    /// The incident it is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Request::Show { key }
            | Request::Acknowledge { key }
            | Request::Rerun { key }
            | Request::Resolve { key }
            | Request::OpenNoteModal { key }
            | Request::AddNote { key, .. } => Some(key),
            Request::Help
            | Request::List
            | Request::Declare { .. }
            | Request::Silence { .. }
            | Request::Silences
            | Request::Unsilence { .. } => None,
        }
    }

    /// True for requests that change an incident (queued, answered "On it").
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Request::Declare { .. }
                | Request::Acknowledge { .. }
                | Request::Rerun { .. }
                | Request::Resolve { .. }
                | Request::AddNote { .. }
                | Request::Silence { .. }
                | Request::Unsilence { .. }
        )
    }
}

/// What the Add-note modal carries in its `private_metadata` (JSON, at most 3000
/// characters): the incident key and where the button was pressed, so the outcome
/// can be answered there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteModalMetadata {
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub message_ts: Option<String>,
    /// The button press's response_url (valid 30 minutes): Slack gives a modal
    /// submission none of its own.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub response_url: Option<String>,
}

/// Why a request body cannot be understood. `Usage` errors are the person's typing
/// (answer with [`InteractionError::user_message`]); the others are malformed
/// requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    #[error("request body is not UTF-8 form data")]
    NotForm,
    #[error("request has no `{0}` field")]
    MissingField(&'static str),
    #[error("`{field}` is not a Slack id")]
    BadId { field: &'static str },
    #[error("interactivity payload is not JSON at line {line} column {column}")]
    BadPayload { line: usize, column: usize },
    #[error("interactivity payload type {0:?} is not handled")]
    UnsupportedType(String),
    #[error("button action {0:?} is not one of ours")]
    UnknownAction(String),
    #[error("modal {0:?} is not one of ours")]
    UnknownModal(String),
    #[error("{0}")]
    Usage(String),
}

impl InteractionError {
    fn usage(problem: impl Into<String>) -> Self {
        InteractionError::Usage(problem.into())
    }

    /// The text to show the person (ephemeral): what happened (nothing changed) and,
    /// for a usage problem, how to ask.
    pub fn user_message(&self) -> String {
        match self {
            InteractionError::Usage(problem) => format!("{problem}\n{USAGE}"),
            InteractionError::UnknownAction(action) => format!(
                "This button (`{}`) is not one the incident app knows, perhaps from an older message; nothing was changed. `/incident help` lists what you can do.",
                action.replace('`', "'")
            ),
            InteractionError::UnknownModal(_) => {
                "This dialog is not one the incident app knows; nothing was changed.".to_string()
            }
            InteractionError::UnsupportedType(kind) => format!(
                "The incident app does not handle `{}` requests; nothing was changed.",
                kind.replace('`', "'")
            ),
            _ => "Sorry, that request could not be understood; nothing was changed.".to_string(),
        }
    }
}

impl Retryable for InteractionError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        match self {
            InteractionError::Usage(_) => "BadCommand",
            _ => "BadInput",
        }
    }
}

/// Where the answer to a verified request goes when its content could not be parsed
/// into an [`Interaction`] (read leniently, for the route only).
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyRoute {
    /// A slash command (or a body that is not an interactivity payload): Slack shows
    /// the HTTP answer's body to the person.
    Body,
    /// An interactivity payload (button, dialog, shortcut): Slack ignores the answer's
    /// body, so the person is told through the payload's `response_url`, if any.
    ResponseUrl(Option<Secret<String>>),
}

/// Finds where to answer a verified request that [`parse`] refused: the `payload`'s
/// `response_url` (buttons and message shortcuts carry one; an Add-note submission
/// has ours in its private metadata; a modal opened with `response_url_enabled`
/// lists them in `response_urls`), or the body for anything else.
pub fn reply_route(body: &[u8]) -> ReplyRoute {
    let Some(payload) = form_field(body, "payload") else {
        return ReplyRoute::Body;
    };
    let Ok(v) = serde_json::from_str::<Value>(&payload) else {
        return ReplyRoute::ResponseUrl(None);
    };
    let from_metadata = || {
        let meta = str_at(&v, &["view", "private_metadata"])?;
        let meta: NoteModalMetadata = serde_json::from_str(meta).ok()?;
        meta.response_url
    };
    let url = str_at(&v, &["response_url"])
        .map(str::to_string)
        .or_else(|| {
            v.get("response_urls")
                .and_then(Value::as_array)
                .and_then(|urls| urls.first())
                .and_then(|u| str_at(u, &["response_url"]))
                .map(str::to_string)
        })
        .or_else(from_metadata);
    ReplyRoute::ResponseUrl(response_url(url.as_deref()))
}

/// The `response_url` of a verified request, whatever it is: a slash command's form
/// field or an interactivity payload's (see [`reply_route`]).
pub fn response_url_in(body: &[u8]) -> Option<Secret<String>> {
    match reply_route(body) {
        ReplyRoute::ResponseUrl(url) => url,
        ReplyRoute::Body => response_url(form_field(body, "response_url").as_deref()),
    }
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    form_urlencoded::parse(text.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Parses a verified request body (form-encoded) into an [`Interaction`].
pub fn parse(body: &[u8]) -> Result<Interaction, InteractionError> {
    let text = std::str::from_utf8(body).map_err(|_| InteractionError::NotForm)?;
    let form: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(text.as_bytes()).collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    };
    if let Some(payload) = field("payload") {
        return parse_payload(payload);
    }
    if field("command").is_some() {
        return parse_command(&field);
    }
    Err(InteractionError::MissingField("command"))
}

fn is_id(s: &str, kinds: &[char]) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(k) if kinds.contains(&k))
        && (3..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn id(value: Option<&str>, name: &'static str, kinds: &[char]) -> Result<String, InteractionError> {
    let v = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(InteractionError::MissingField(name))?;
    if is_id(v, kinds) {
        Ok(v.to_string())
    } else {
        Err(InteractionError::BadId { field: name })
    }
}

fn optional_id(
    value: Option<&str>,
    name: &'static str,
    kinds: &[char],
) -> Result<Option<String>, InteractionError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => id(Some(v), name, kinds).map(Some),
    }
}

const USER: &[char] = &['U', 'W'];
const TEAM: &[char] = &['T', 'E'];
const CHANNEL: &[char] = &['C', 'G', 'D'];

fn response_url(value: Option<&str>) -> Option<Secret<String>> {
    value
        .map(str::trim)
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(|u| Secret::new(u.to_string()))
}

fn nonblank(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn parse_command<'a>(
    field: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Interaction, InteractionError> {
    let caller = Caller {
        user_id: id(field("user_id"), "user_id", USER)?,
        user_name: field("user_name").unwrap_or_default().trim().to_string(),
        team_id: id(field("team_id"), "team_id", TEAM)?,
        channel_id: optional_id(field("channel_id"), "channel_id", CHANNEL)?,
        response_url: response_url(field("response_url")),
        trigger_id: nonblank(field("trigger_id")),
        message_ts: None,
    };
    let request = parse_command_text(field("text").unwrap_or_default())?;
    Ok(Interaction {
        caller,
        source: Source::Command,
        request,
    })
}

/// Slack sends `&`, `<`, `>` in command text as `&amp;`, `&lt;`, `&gt;`.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Parses the text after `/incident`.
pub fn parse_command_text(raw: &str) -> Result<Request, InteractionError> {
    let text = unescape(raw);
    let text = text.trim();
    let (word, rest) = match text.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (text, ""),
    };
    match word.to_ascii_lowercase().as_str() {
        "" | "help" => Ok(Request::Help),
        "list" | "ls" => Ok(Request::List),
        "show" => Ok(Request::Show {
            key: whole_key(rest, "show")?,
        }),
        "declare" => declare(rest),
        "note" => {
            let (key, note) = split_key(rest)?;
            Ok(Request::AddNote {
                key,
                text: note_text(note)?,
            })
        }
        "silence" | "mute" => silence(rest),
        "silences" => Ok(Request::Silences),
        "unsilence" | "unmute" => {
            let id = rest.trim();
            if id.is_empty() || id.contains(char::is_whitespace) || id.chars().count() > 40 {
                return Err(InteractionError::usage(
                    "`unsilence` needs the id of a silence, such as `s-1a2b3c4d` (`/incident silences` lists them).",
                ));
            }
            Ok(Request::Unsilence { id: id.to_string() })
        }
        other => Err(InteractionError::usage(format!(
            "`{}` is not a subcommand.",
            crate::text::truncate(other, 40)
        ))),
    }
}

fn check_key(key: &str, what: &str) -> Result<String, InteractionError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(InteractionError::usage(format!(
            "`{what}` needs an incident key."
        )));
    }
    if key.chars().count() > MAX_KEY_CHARS || key.contains(char::is_control) {
        return Err(InteractionError::usage(
            "That is not an incident key (too long or with control characters).",
        ));
    }
    Ok(key.to_string())
}

fn strip_quotes(s: &str) -> &str {
    let s = s.trim();
    for (open, close) in [('"', '"'), ('“', '”'), ('\'', '\''), ('‘', '’')] {
        if let Some(inner) = s.strip_prefix(open).and_then(|x| x.strip_suffix(close)) {
            return inner;
        }
    }
    s
}

/// `show <key>`: the whole rest is the key (quotes optional).
fn whole_key(rest: &str, what: &str) -> Result<String, InteractionError> {
    check_key(strip_quotes(rest), what)
}

/// `note <key> <text>`: a quoted key, or the first word.
fn split_key(rest: &str) -> Result<(String, &str), InteractionError> {
    for (open, close) in [('"', '"'), ('“', '”')] {
        if let Some(after) = rest.strip_prefix(open) {
            let Some(end) = after.find(close) else {
                return Err(InteractionError::usage(
                    "The key's closing quote is missing.",
                ));
            };
            let key = check_key(&after[..end], "note")?;
            return Ok((key, after[end + close.len_utf8()..].trim()));
        }
    }
    let (key, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    Ok((check_key(key, "note")?, text.trim()))
}

fn note_text(text: &str) -> Result<String, InteractionError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(InteractionError::usage("The note is empty."));
    }
    if text.chars().count() > MAX_NOTE_CHARS {
        return Err(InteractionError::usage(format!(
            "The note is longer than {MAX_NOTE_CHARS} characters."
        )));
    }
    Ok(text.to_string())
}

/// `silence <target> <duration> [reason]`: a quoted target, or the first word.
fn silence(rest: &str) -> Result<Request, InteractionError> {
    use crate::silence::{parse_duration, MAX_REASON_CHARS, MAX_TARGET_CHARS};
    let example = "e.g. `/incident silence vpn-0123456789abcdef0 2h router firmware upgrade`";
    if rest.trim().is_empty() {
        return Err(InteractionError::usage(format!(
            "`silence` needs what to silence (an incident key, a VPN id or an alarm-name prefix), a duration and an optional reason, {example}."
        )));
    }
    let (target, after) = split_key(rest).map_err(|_| {
        InteractionError::usage(format!(
            "That is not something to silence (too long, control characters or a missing quote), {example}."
        ))
    })?;
    if target.chars().count() > MAX_TARGET_CHARS {
        return Err(InteractionError::usage(format!(
            "What to silence is longer than {MAX_TARGET_CHARS} characters."
        )));
    }
    let (duration, reason) = after
        .split_once(char::is_whitespace)
        .map_or((after, ""), |(d, r)| (d, r.trim()));
    if duration.is_empty() {
        return Err(InteractionError::usage(format!(
            "`silence` needs a duration after what to silence, {example}."
        )));
    }
    let duration = parse_duration(duration).map_err(InteractionError::usage)?;
    if reason.chars().count() > MAX_REASON_CHARS || reason.contains(['\r', '\n']) {
        return Err(InteractionError::usage(format!(
            "The reason must be one line of at most {MAX_REASON_CHARS} characters."
        )));
    }
    Ok(Request::Silence {
        target,
        duration,
        reason: (!reason.is_empty()).then(|| reason.to_string()),
    })
}

fn declare(rest: &str) -> Result<Request, InteractionError> {
    let mut impact = None;
    let mut title = rest.trim();
    let value_of = |s: &str| -> Result<Impact, InteractionError> {
        s.parse::<u8>().ok().and_then(Impact::new).ok_or_else(|| {
            InteractionError::usage("`--impact` must be 1 (critical) to 5 (no impact).")
        })
    };
    if let Some(after) = title
        .strip_prefix("--impact=")
        .or_else(|| title.strip_prefix("impact="))
    {
        let (v, t) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        impact = Some(value_of(v)?);
        title = t.trim();
    } else if let Some(after) = title
        .strip_prefix("--impact ")
        .or_else(|| title.strip_prefix("-i "))
    {
        let after = after.trim_start();
        let (v, t) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        impact = Some(value_of(v)?);
        title = t.trim();
    }
    let title = strip_quotes(title).trim();
    if title.is_empty() {
        return Err(InteractionError::usage("`declare` needs a title."));
    }
    if title.chars().count() > MAX_TITLE_CHARS || title.contains(char::is_control) {
        return Err(InteractionError::usage(format!(
            "The title must be one line of at most {MAX_TITLE_CHARS} characters."
        )));
    }
    Ok(Request::Declare {
        title: title.to_string(),
        impact,
    })
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn parse_payload(raw: &str) -> Result<Interaction, InteractionError> {
    let v: Value = serde_json::from_str(raw).map_err(|e| InteractionError::BadPayload {
        line: e.line(),
        column: e.column(),
    })?;
    let kind = str_at(&v, &["type"]).ok_or(InteractionError::MissingField("type"))?;
    match kind {
        "block_actions" => block_actions(&v),
        "view_submission" => view_submission(&v),
        other => Err(InteractionError::UnsupportedType(crate::text::truncate(
            other, 40,
        ))),
    }
}

fn payload_user(v: &Value) -> Result<(String, String), InteractionError> {
    let user_id = id(str_at(v, &["user", "id"]), "user.id", USER)?;
    // `username` is the handle, `name` the older display field: either will do.
    let name = str_at(v, &["user", "username"])
        .or_else(|| str_at(v, &["user", "name"]))
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok((user_id, name))
}

fn payload_team(v: &Value) -> Result<String, InteractionError> {
    id(
        str_at(v, &["team", "id"]).or_else(|| str_at(v, &["user", "team_id"])),
        "team.id",
        TEAM,
    )
}

fn block_actions(v: &Value) -> Result<Interaction, InteractionError> {
    let (user_id, user_name) = payload_user(v)?;
    let team_id = payload_team(v)?;
    let channel = str_at(v, &["channel", "id"]).or_else(|| str_at(v, &["container", "channel_id"]));
    let caller = Caller {
        user_id,
        user_name,
        team_id,
        channel_id: optional_id(channel, "channel.id", CHANNEL)?,
        response_url: response_url(str_at(v, &["response_url"])),
        trigger_id: nonblank(str_at(v, &["trigger_id"])),
        message_ts: nonblank(
            str_at(v, &["container", "message_ts"]).or_else(|| str_at(v, &["message", "ts"])),
        ),
    };
    // Slack sends one action per press; a list is its envelope.
    let action = v
        .get("actions")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or(InteractionError::MissingField("actions"))?;
    let action_id =
        str_at(action, &["action_id"]).ok_or(InteractionError::MissingField("action_id"))?;
    let key = str_at(action, &["value"]).ok_or(InteractionError::MissingField("value"))?;
    let key = check_key(key, action_id).map_err(|_| InteractionError::MissingField("value"))?;
    let request = match action_id {
        ACTION_ACKNOWLEDGE => Request::Acknowledge { key },
        ACTION_RERUN => Request::Rerun { key },
        ACTION_RESOLVE => Request::Resolve { key },
        ACTION_NOTE => Request::OpenNoteModal { key },
        other => {
            return Err(InteractionError::UnknownAction(crate::text::truncate(
                other, 64,
            )))
        }
    };
    Ok(Interaction {
        caller,
        source: Source::Button,
        request,
    })
}

fn view_submission(v: &Value) -> Result<Interaction, InteractionError> {
    let (user_id, user_name) = payload_user(v)?;
    let team_id = payload_team(v)?;
    let callback = str_at(v, &["view", "callback_id"]).unwrap_or_default();
    if callback != NOTE_MODAL_CALLBACK {
        return Err(InteractionError::UnknownModal(crate::text::truncate(
            callback, 64,
        )));
    }
    let meta_raw = str_at(v, &["view", "private_metadata"])
        .filter(|m| !m.trim().is_empty())
        .ok_or(InteractionError::MissingField("view.private_metadata"))?;
    let meta: NoteModalMetadata = serde_json::from_str(meta_raw)
        .map_err(|_| InteractionError::MissingField("view.private_metadata"))?;
    let key = check_key(&meta.key, "note")
        .map_err(|_| InteractionError::MissingField("view.private_metadata"))?;
    // The input's value, wherever Slack put its block (ours is `note`/`note_text`).
    let values = v
        .get("view")
        .and_then(|w| w.get("state"))
        .and_then(|s| s.get("values"))
        .and_then(Value::as_object)
        .ok_or(InteractionError::MissingField("view.state.values"))?;
    let text = values
        .get(NOTE_INPUT_BLOCK)
        .and_then(|b| b.get(NOTE_INPUT_ACTION))
        .or_else(|| values.values().find_map(|b| b.get(NOTE_INPUT_ACTION)))
        .and_then(|i| i.get("value"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let caller = Caller {
        user_id,
        user_name,
        team_id,
        channel_id: optional_id(meta.channel_id.as_deref(), "private_metadata.c", CHANNEL)?,
        response_url: response_url(meta.response_url.as_deref()),
        trigger_id: nonblank(str_at(v, &["trigger_id"])),
        message_ts: meta.message_ts.clone(),
    };
    Ok(Interaction {
        caller,
        source: Source::Modal,
        request: Request::AddNote {
            key,
            text: note_text(text)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    fn command(text: &str) -> Vec<u8> {
        form(&[
            ("token", "ignored"),
            ("team_id", "T0001"),
            ("team_domain", "example"),
            ("channel_id", "C0123ONCALL"),
            ("channel_name", "oncall"),
            ("user_id", "U0123ABCD"),
            ("user_name", "jane"),
            ("command", "/incident"),
            ("text", text),
            (
                "response_url",
                "https://hooks.slack.com/commands/T0001/1/secretpart",
            ),
            ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
        ])
    }

    fn payload(v: Value) -> Vec<u8> {
        form(&[("payload", &v.to_string())])
    }

    const KEY: &str = "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN";

    #[test]
    fn slack_documented_command_body_parses_as_help() {
        // The body of Slack's signing example: a command with empty text.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let i = parse(body.as_bytes()).unwrap();
        assert_eq!(i.request, Request::Help);
        assert_eq!(i.source, Source::Command);
        assert_eq!(i.caller.user_id, "U2CERLKJA");
        assert_eq!(i.caller.user_name, "roadrunner");
        assert_eq!(i.caller.team_id, "T1DC2JH3J");
        assert_eq!(i.caller.channel_id.as_deref(), Some("G8PSS9T3V"));
        assert_eq!(
            i.caller.response_url.as_ref().map(|u| u.expose().as_str()),
            Some(
                "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
            )
        );
        assert_eq!(
            i.caller.trigger_id.as_deref(),
            Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
        );
        // The response_url never shows in Debug output (logs).
        assert!(!format!("{i:?}").contains("96rGlfmib"));
    }

    #[test]
    fn silence_commands_parse_with_clear_errors() {
        assert_eq!(
            parse_command_text("silence vpn-0a1b2c3d4e5f67890 2h router firmware upgrade").unwrap(),
            Request::Silence {
                target: "vpn-0a1b2c3d4e5f67890".into(),
                duration: chrono::Duration::hours(2),
                reason: Some("router firmware upgrade".into()),
            }
        );
        assert_eq!(
            parse_command_text(&format!("silence \"{KEY}\" 30m")).unwrap(),
            Request::Silence {
                target: KEY.into(),
                duration: chrono::Duration::minutes(30),
                reason: None,
            }
        );
        assert_eq!(parse_command_text("silences").unwrap(), Request::Silences);
        assert_eq!(
            parse_command_text("unsilence s-1a2b3c4d").unwrap(),
            Request::Unsilence {
                id: "s-1a2b3c4d".into()
            }
        );
        for (text, expected) in [
            ("silence", "`silence` needs what to silence"),
            (
                "silence vpn-0a1b2c3d",
                "needs a duration after what to silence",
            ),
            ("silence vpn-0a1b2c3d soon", "`soon` is not a duration"),
            ("silence vpn-0a1b2c3d 9d", "at most 7 days"),
            ("silence \"unclosed 2h", "missing quote"),
            ("unsilence", "`unsilence` needs the id"),
        ] {
            let e = parse_command_text(text).unwrap_err();
            assert!(
                e.user_message().contains(expected),
                "{text}: {}",
                e.user_message()
            );
            assert_eq!(e.kind(), "BadCommand");
        }
        let silence = parse_command_text("silence x 1h").unwrap();
        assert_eq!(silence.action(), Action::Silence);
        assert!(silence.changes_state());
        assert_eq!(Request::Silences.action(), Action::Read);
        assert!(!Request::Silences.changes_state());
    }

    #[test]
    fn subcommands_parse_to_requests() {
        let cases: Vec<(String, Request)> = vec![
            ("list".to_string(), Request::List),
            ("  LIST  ".to_string(), Request::List),
            ("help".to_string(), Request::Help),
            (format!("show {KEY}"), Request::Show { key: KEY.into() }),
            (format!("show \"{KEY}\""), Request::Show { key: KEY.into() }),
            (
                "declare Payment API returns 500s".to_string(),
                Request::Declare {
                    title: "Payment API returns 500s".into(),
                    impact: None,
                },
            ),
            (
                "declare --impact 2 Payment API down".to_string(),
                Request::Declare {
                    title: "Payment API down".into(),
                    impact: Some(Impact::HIGH),
                },
            ),
            (
                "declare --impact=1 \"DB &amp; cache &lt;down&gt;\"".to_string(),
                Request::Declare {
                    title: "DB & cache <down>".into(),
                    impact: Some(Impact::CRITICAL),
                },
            ),
            (
                format!("note \"{KEY}\" Customer gateway rebooted by ISP"),
                Request::AddNote {
                    key: KEY.into(),
                    text: "Customer gateway rebooted by ISP".into(),
                },
            ),
            (
                format!("note “{KEY}” smart quotes work too"),
                Request::AddNote {
                    key: KEY.into(),
                    text: "smart quotes work too".into(),
                },
            ),
            (
                "note oi-0123456789ab looking at it".to_string(),
                Request::AddNote {
                    key: "oi-0123456789ab".into(),
                    text: "looking at it".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_command_text(&text).unwrap(), expected, "{text}");
            // And through the whole form body.
            assert_eq!(parse(&command(&text)).unwrap().request, expected, "{text}");
        }
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let cases = [
            ("frobnicate now", "`frobnicate` is not a subcommand."),
            ("show", "`show` needs an incident key."),
            ("declare", "`declare` needs a title."),
            (
                "declare --impact 9 x",
                "`--impact` must be 1 (critical) to 5 (no impact).",
            ),
            (
                "note \"unterminated key text",
                "The key's closing quote is missing.",
            ),
            ("note some-key", "The note is empty."),
            ("note \"\" text", "`note` needs an incident key."),
        ];
        for (text, problem) in cases {
            let e = parse_command_text(text).unwrap_err();
            assert_eq!(e, InteractionError::Usage(problem.into()), "{text}");
            assert!(e.user_message().starts_with(problem));
            assert!(e.user_message().contains("/incident declare"));
            assert_eq!(e.kind(), "BadCommand");
        }
        let long = format!("declare {}", "x".repeat(201));
        assert!(matches!(
            parse_command_text(&long),
            Err(InteractionError::Usage(_))
        ));
        let long_note = format!("note k {}", "x".repeat(3001));
        assert!(matches!(
            parse_command_text(&long_note),
            Err(InteractionError::Usage(_))
        ));
    }

    #[test]
    fn command_without_user_or_with_bad_ids_is_rejected() {
        let no_user = form(&[
            ("command", "/incident"),
            ("team_id", "T1"),
            ("text", "list"),
        ]);
        assert_eq!(
            parse(&no_user),
            Err(InteractionError::MissingField("user_id"))
        );
        let bad_user = form(&[
            ("command", "/incident"),
            ("team_id", "T0001"),
            ("user_id", "u<script>"),
        ]);
        assert_eq!(
            parse(&bad_user),
            Err(InteractionError::BadId { field: "user_id" })
        );
        assert_eq!(
            parse(b"just=some&form=data"),
            Err(InteractionError::MissingField("command"))
        );
        assert_eq!(parse(&[0xff, 0xfe]), Err(InteractionError::NotForm));
    }

    fn button(action_id: &str, value: &str) -> Value {
        json!({
            "type": "block_actions",
            "user": {"id": "U0456EFGH", "username": "sam", "name": "sam", "team_id": "T0001"},
            "api_app_id": "A0001",
            "token": "ignored",
            "container": {"type": "message", "message_ts": "1795600872.000100", "channel_id": "C0123ONCALL", "is_ephemeral": false},
            "trigger_id": "123.456.abc",
            "team": {"id": "T0001", "domain": "example"},
            "channel": {"id": "C0123ONCALL", "name": "oncall"},
            "message": {"type": "message", "ts": "1795600872.000100", "text": "incident"},
            "response_url": "https://hooks.slack.com/actions/T0001/1/secretpart",
            "actions": [{
                "action_id": action_id, "block_id": "incident.actions", "value": value,
                "type": "button", "action_ts": "1795600900.1"
            }]
        })
    }

    #[test]
    fn buttons_parse_to_requests_with_the_message_and_caller() {
        let cases = [
            (ACTION_ACKNOWLEDGE, Request::Acknowledge { key: KEY.into() }),
            (ACTION_RERUN, Request::Rerun { key: KEY.into() }),
            (ACTION_RESOLVE, Request::Resolve { key: KEY.into() }),
            (ACTION_NOTE, Request::OpenNoteModal { key: KEY.into() }),
        ];
        for (action_id, expected) in cases {
            let i = parse(&payload(button(action_id, KEY))).unwrap();
            assert_eq!(i.request, expected);
            assert_eq!(i.source, Source::Button);
            assert_eq!(
                i.caller,
                Caller {
                    user_id: "U0456EFGH".into(),
                    user_name: "sam".into(),
                    team_id: "T0001".into(),
                    channel_id: Some("C0123ONCALL".into()),
                    response_url: Some(Secret::new(
                        "https://hooks.slack.com/actions/T0001/1/secretpart".into()
                    )),
                    trigger_id: Some("123.456.abc".into()),
                    message_ts: Some("1795600872.000100".into()),
                }
            );
        }
        assert_eq!(
            parse(&payload(button("link_1", "https://x"))),
            Err(InteractionError::UnknownAction("link_1".into()))
        );
        let mut empty = button(ACTION_RESOLVE, " ");
        assert_eq!(
            parse(&payload(empty.clone())),
            Err(InteractionError::MissingField("value"))
        );
        empty["actions"] = json!([]);
        assert_eq!(
            parse(&payload(empty)),
            Err(InteractionError::MissingField("actions"))
        );
    }

    #[test]
    fn a_refused_payload_is_answered_where_the_person_sees_it() {
        let url = "https://hooks.slack.com/actions/T0001/1/secretpart";
        let url_of = |r: ReplyRoute| match r {
            ReplyRoute::ResponseUrl(u) => u.map(|u| u.expose().clone()),
            ReplyRoute::Body => panic!("expected a response_url route"),
        };
        // An unknown button: parse refuses it, its response_url is still found.
        let unknown = payload(button("someone.elses.button", KEY));
        assert!(parse(&unknown).is_err());
        assert_eq!(url_of(reply_route(&unknown)).as_deref(), Some(url));
        // A payload whose shape we do not know, with a response_url (message shortcut).
        let shortcut =
            payload(json!({"type": "message_action", "response_url": url, "user": {"id": "U1"}}));
        assert_eq!(
            parse(&shortcut),
            Err(InteractionError::UnsupportedType("message_action".into()))
        );
        assert_eq!(url_of(reply_route(&shortcut)).as_deref(), Some(url));
        // A modal opened with response_url_enabled lists its URLs.
        let listed = payload(
            json!({"type": "view_submission", "response_urls": [{"response_url": url, "channel_id": "C1"}],
                                    "view": {"callback_id": "x"}}),
        );
        assert_eq!(url_of(reply_route(&listed)).as_deref(), Some(url));
        // Our Add-note modal kept the button's URL in its metadata.
        let meta = NoteModalMetadata {
            key: KEY.into(),
            channel_id: None,
            message_ts: None,
            response_url: Some(url.into()),
        };
        let empty_note = payload(submission(&meta, " "));
        assert_eq!(url_of(reply_route(&empty_note)).as_deref(), Some(url));
        // Nothing to answer through.
        assert_eq!(
            reply_route(&form(&[("payload", "{not json")])),
            ReplyRoute::ResponseUrl(None)
        );
        assert_eq!(
            reply_route(&payload(json!({"type": "view_closed"}))),
            ReplyRoute::ResponseUrl(None)
        );
        assert_eq!(
            reply_route(&payload(
                json!({"type": "block_actions", "response_url": "javascript:alert(1)"})
            )),
            ReplyRoute::ResponseUrl(None)
        );
        // Slash commands (and anything that is not a payload) are answered in the body.
        assert_eq!(reply_route(&command("frobnicate")), ReplyRoute::Body);
        assert_eq!(reply_route(&[0xff, 0xfe]), ReplyRoute::Body);
        // Their response_url still serves when the body cannot carry the answer.
        assert_eq!(
            response_url_in(&command("list"))
                .map(|u| u.expose().clone())
                .as_deref(),
            Some("https://hooks.slack.com/commands/T0001/1/secretpart")
        );
        assert_eq!(
            response_url_in(&unknown)
                .map(|u| u.expose().clone())
                .as_deref(),
            Some(url)
        );
        assert_eq!(response_url_in(b"text=x"), None);
    }

    #[test]
    fn refusals_say_what_happened_and_that_nothing_changed() {
        let m = InteractionError::UnknownAction("old.button".into()).user_message();
        assert!(
            m.contains("`old.button`") && m.contains("nothing was changed"),
            "{m}"
        );
        assert!(InteractionError::UnsupportedType("shortcut".into())
            .user_message()
            .contains("does not handle `shortcut` requests; nothing was changed"));
        assert!(InteractionError::UnknownModal("x".into())
            .user_message()
            .contains("nothing was changed"));
        assert_eq!(
            InteractionError::MissingField("user.id").user_message(),
            "Sorry, that request could not be understood; nothing was changed."
        );
        assert!(InteractionError::Usage("The note is empty.".into())
            .user_message()
            .starts_with("The note is empty.\nUsage:"));
    }

    #[test]
    fn request_actions_and_keys() {
        assert_eq!(Request::List.action(), Action::Read);
        assert_eq!(Request::Show { key: "k".into() }.action(), Action::Read);
        assert_eq!(
            Request::OpenNoteModal { key: "k".into() }.action(),
            Action::Note
        );
        assert_eq!(
            Request::Declare {
                title: "t".into(),
                impact: None
            }
            .action(),
            Action::Declare
        );
        assert_eq!(Request::Resolve { key: "k".into() }.key(), Some("k"));
        assert!(Request::Acknowledge { key: "k".into() }.changes_state());
        assert!(!Request::OpenNoteModal { key: "k".into() }.changes_state());
        assert!(!Request::Show { key: "k".into() }.changes_state());
    }

    fn submission(meta: &NoteModalMetadata, text: &str) -> Value {
        json!({
            "type": "view_submission",
            "team": {"id": "T0001", "domain": "example"},
            "user": {"id": "U0456EFGH", "username": "sam", "name": "sam", "team_id": "T0001"},
            "api_app_id": "A0001",
            "trigger_id": "789.012.def",
            "view": {
                "id": "V0001",
                "type": "modal",
                "callback_id": NOTE_MODAL_CALLBACK,
                "private_metadata": serde_json::to_string(meta).unwrap(),
                "state": {"values": {NOTE_INPUT_BLOCK: {NOTE_INPUT_ACTION: {"type": "plain_text_input", "value": text}}}}
            },
            "response_urls": []
        })
    }

    #[test]
    fn note_modal_submission_parses_with_the_kept_context() {
        let meta = NoteModalMetadata {
            key: KEY.into(),
            channel_id: Some("C0123ONCALL".into()),
            message_ts: Some("1795600872.000100".into()),
            response_url: Some("https://hooks.slack.com/actions/T0001/1/secretpart".into()),
        };
        let i = parse(&payload(submission(&meta, "  ISP confirmed a fibre cut  "))).unwrap();
        assert_eq!(
            i.request,
            Request::AddNote {
                key: KEY.into(),
                text: "ISP confirmed a fibre cut".into()
            }
        );
        assert_eq!(i.source, Source::Modal);
        assert_eq!(i.caller.channel_id.as_deref(), Some("C0123ONCALL"));
        assert_eq!(i.caller.message_ts.as_deref(), Some("1795600872.000100"));
        assert!(i.caller.response_url.is_some());
        assert_eq!(i.caller.trigger_id.as_deref(), Some("789.012.def"));

        assert_eq!(
            parse(&payload(submission(&meta, "   "))),
            Err(InteractionError::Usage("The note is empty.".into()))
        );
        let mut other = submission(&meta, "x");
        other["view"]["callback_id"] = json!("someone.else");
        assert_eq!(
            parse(&payload(other)),
            Err(InteractionError::UnknownModal("someone.else".into()))
        );
        let mut no_meta = submission(&meta, "x");
        no_meta["view"]["private_metadata"] = json!("not json");
        assert_eq!(
            parse(&payload(no_meta)),
            Err(InteractionError::MissingField("view.private_metadata"))
        );
    }

    #[test]
    fn other_payload_types_and_bad_json_are_specific_errors() {
        assert_eq!(
            parse(&payload(
                json!({"type": "view_closed", "user": {"id": "U1234"}})
            )),
            Err(InteractionError::UnsupportedType("view_closed".into()))
        );
        assert_eq!(
            parse(&form(&[("payload", "{not json")])),
            Err(InteractionError::BadPayload { line: 1, column: 2 })
        );
        assert_eq!(
            parse(&payload(json!({"user": {}}))),
            Err(InteractionError::MissingField("type"))
        );
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..300), text in ".{0,200}")| {
            let _ = parse(&bytes);
            let _ = parse(&command(&text));
            let _ = parse_command_text(&text);
        });
    }
}
