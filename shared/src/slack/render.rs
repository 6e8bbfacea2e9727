//! Renders an [`Inbound`] message to Block Kit for one destination.
//!
//! Three modes: [`Mode::Post`] is a message of its own (a top-level bot message or a
//! webhook post); [`Mode::Reply`] is a compact reply in the incident's thread;
//! [`Mode::Card`] is the top-level message rewritten with `chat.update` to show the
//! incident's current state. Webhooks cannot thread, so their posts name the
//! incident they update.
//!
//! The top-level message of one of our incidents shows its roles (reporter, owner,
//! team) and, while open and when [`RenderOptions::actions`] says so, the action
//! buttons slack-actions answers (`value` = the incident key). Acknowledgements and
//! "nobody answered" escalations are compact replies; the resolution's reply carries
//! the whole post-incident summary.
//!
//! Order of blocks: what a responder needs first comes first (state and impact,
//! what fired and why, the key fields, the links), so when the 50-block limit cuts a
//! message it cuts findings and timeline, not the header or the links.

use chrono::{DateTime, Utc};

use super::blocks::{
    ActionButton, ButtonStyle, LinkButton, Message, MessageBuilder, MAX_FALLBACK_TEXT,
    MAX_SECTION_TEXT,
};
use super::escape::Mrkdwn;
use super::inbound::{AwsEvent, ChatbotMessage, Inbound, PlainMessage};
use super::interaction::{ACTION_ACKNOWLEDGE, ACTION_NOTE, ACTION_RERUN, ACTION_RESOLVE};
use super::settings::Mention;
use crate::alarm::{Alarm, AlarmCondition, AlarmState};
use crate::closure::PostIncidentSummary;
use crate::incident::{Actor, Impact, IncidentRef, Roles};
use crate::notification::{
    format_duration, EventType, FindingSummary, IncidentStatus, Notification, TimelineEntry,
};

/// Which message is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A message of its own: top-level bot message or webhook post.
    #[default]
    Post,
    /// A reply in the incident's thread.
    Reply,
    /// The top-level message edited to show the current state.
    Card,
}

/// How to render for one destination.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions<'a> {
    pub mode: Mode,
    /// Added when the destination's mention policy says so.
    pub mention: Option<&'a Mention>,
    /// The destination is a webhook: say which incident the message updates.
    pub webhook: bool,
    /// When the thread's first message was posted (raw alarms: their duration).
    pub thread_started_at: Option<DateTime<Utc>>,
    /// What the thread recorded of the incident's milestones: given, a resolved
    /// incident's reply and card close with a summary of them (the notification's
    /// post-incident summary, when it has one, is preferred).
    pub milestones: Option<Milestones>,
    /// Offer the incident's action buttons (Acknowledge or Take ownership, Add note,
    /// Re-run diagnosis, Resolve) on the top-level message while it is open: bot
    /// destinations whose Slack app sends interactivity to slack-actions.
    pub actions: bool,
}

/// When the incident was detected, first told to people, and diagnosed, as the
/// destination's thread recorded them (notify-fanout's thread record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Milestones {
    /// The opening notification's `occurred_at`.
    pub detected_at: Option<DateTime<Utc>>,
    /// When the thread's first message was posted.
    pub notified_at: Option<DateTime<Utc>>,
    /// When the first diagnosis was delivered to the thread.
    pub diagnosed_at: Option<DateTime<Utc>>,
}

/// The closing figures of a resolved incident, in seconds from its detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosingFigures {
    pub detected_at: DateTime<Utc>,
    pub time_to_notify: Option<u64>,
    pub time_to_diagnose: Option<u64>,
    pub time_to_resolve: u64,
}

impl Milestones {
    /// The figures of an incident resolved at `resolved_at`. Detection falls back to
    /// `opened_at` for threads recorded before milestones were kept; without either
    /// there is nothing to measure from. Clock skew never yields a negative figure.
    pub fn figures(
        &self,
        opened_at: Option<DateTime<Utc>>,
        resolved_at: DateTime<Utc>,
    ) -> Option<ClosingFigures> {
        let detected_at = self.detected_at.or(opened_at)?;
        let since = |t: DateTime<Utc>| u64::try_from((t - detected_at).num_seconds()).unwrap_or(0);
        Some(ClosingFigures {
            detected_at,
            time_to_notify: self.notified_at.map(since),
            time_to_diagnose: self.diagnosed_at.map(since),
            time_to_resolve: since(resolved_at),
        })
    }
}

/// Renders `inbound`. The result is within every Slack limit; should a bug break
/// one, a text-only message is returned instead of one Slack would reject.
pub fn render(inbound: &Inbound, opts: &RenderOptions<'_>) -> Message {
    let message = match inbound {
        Inbound::Incident(n) => incident(n, opts),
        Inbound::Alarm(a) => alarm(a, opts),
        Inbound::Chatbot(c) => chatbot(c, opts),
        Inbound::Event(e) => event(e, opts),
        Inbound::Text(t) => text(t, opts),
    };
    if message.limit_violations().is_empty() {
        message
    } else {
        Message {
            text: message.text,
            blocks: vec![],
        }
    }
}

fn section() -> Mrkdwn {
    Mrkdwn::new(MAX_SECTION_TEXT)
}

fn fallback(mention: Option<&Mention>) -> Mrkdwn {
    let mut m = Mrkdwn::new(MAX_FALLBACK_TEXT);
    if let Some(mention) = mention {
        m.syntax(&mention.syntax()).syntax(" ");
    }
    m
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

fn region_ok(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn vpn_console(region: &str, vpn: &str) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/vpcconsole/home?region={region}#VpnConnectionDetails:VpnConnectionId={}",
        crate::text::url_encode(vpn)
    )
}

fn logs_insights(region: &str) -> String {
    format!("https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:logs-insights")
}

fn mention_section(b: &mut MessageBuilder, mention: Option<&Mention>, line: &str) {
    if let Some(mention) = mention {
        let mut m = section();
        m.syntax(&mention.syntax()).syntax(" ").line(line);
        b.section(m);
    }
}

fn impact_icon(impact: Impact) -> &'static str {
    match impact.value() {
        1 | 2 => "🔴",
        3 => "🟠",
        _ => "🟡",
    }
}

/// Icon and word for what happened.
fn event_label(n: &Notification) -> (&'static str, &'static str) {
    match (n.status, n.event) {
        (IncidentStatus::Resolved, _) | (_, EventType::Resolved) => ("✅", "RESOLVED"),
        (_, EventType::Opened) => (impact_icon(n.impact), "OPENED"),
        (_, EventType::Updated) => (impact_icon(n.impact), "UPDATED"),
        (_, EventType::Escalated) => ("🔺", "ESCALATED"),
        (_, EventType::Deescalated) => ("🔻", "DE-ESCALATED"),
        (_, EventType::Diagnosed) => ("🔎", "DIAGNOSED"),
        (_, EventType::InsufficientData) => ("⚪", "INSUFFICIENT DATA"),
        (_, EventType::Note) => ("📝", "NOTE"),
        (_, EventType::Acknowledged) => ("🙋", "ACKNOWLEDGED"),
        (_, EventType::Unanswered) => ("📣", "NOT ACKNOWLEDGED"),
    }
}

/// Icon and word for the incident's current state (the card).
fn state_label(n: &Notification) -> (&'static str, &'static str) {
    match n.status {
        IncidentStatus::Resolved => ("✅", "RESOLVED"),
        IncidentStatus::Open => (impact_icon(n.impact), "OPEN"),
    }
}

fn impact_text(i: Impact) -> String {
    format!("Impact {} ({})", i.value(), i.label())
}

fn incident_duration(n: &Notification, started: Option<DateTime<Utc>>) -> Option<u64> {
    if n.status != IncidentStatus::Resolved {
        return None;
    }
    n.duration_seconds.or_else(|| {
        let start = n.opened_at.or(started)?;
        u64::try_from((n.occurred_at - start).num_seconds()).ok()
    })
}

fn incident_links(n: &Notification) -> Vec<LinkButton> {
    let mut links = vec![];
    if let Some(a) = &n.alarm {
        links.push(LinkButton {
            label: "CloudWatch alarm".into(),
            url: a.url.clone(),
        });
    }
    let incident_url = n.incident_url.clone().or_else(|| {
        let r = IncidentRef::parse(n.incident_ref.as_deref()?)?;
        region_ok(&n.region).then(|| r.console_url(&n.region))
    });
    if let Some(url) = incident_url {
        let label = match n.incident_ref.as_deref().and_then(IncidentRef::parse) {
            Some(IncidentRef::OpsCenter(id)) => format!("OpsItem {id}"),
            _ => "Incident".to_string(),
        };
        links.push(LinkButton { label, url });
    }
    links.extend(n.links.iter().map(|l| LinkButton {
        label: l.label.clone(),
        url: l.url.clone(),
    }));
    if region_ok(&n.region) {
        if let Some(vpn) = &n.vpn_id {
            links.push(LinkButton {
                label: "VPN connection".into(),
                url: vpn_console(&n.region, vpn),
            });
        }
        if !n.links.iter().any(|l| l.label.contains("Logs")) {
            links.push(LinkButton {
                label: "Logs Insights".into(),
                url: logs_insights(&n.region),
            });
        }
    }
    links
}

fn incident_fields(n: &Notification, opts: &RenderOptions<'_>) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Impact", n.impact.to_string()),
        (
            "Status",
            match n.status {
                IncidentStatus::Open => "Open".to_string(),
                IncidentStatus::Resolved => "Resolved".to_string(),
            },
        ),
        // Organization mode: the member account's name beside its id.
        (
            "Account",
            n.account_info
                .as_ref()
                .map_or_else(|| n.account.clone(), |a| a.label()),
        ),
        ("Region", n.region.clone()),
    ];
    f.extend(role_fields(&n.roles, n.status == IncidentStatus::Open));
    if let Some(a) = &n.alarm {
        f.push(("Alarm", format!("{} ({})", a.name, a.state)));
    }
    f.push(("VPN connection", n.vpn_id.clone().unwrap_or_default()));
    f.push(("Tunnel", n.tunnel_ip.clone().unwrap_or_default()));
    if let Some(r) = &n.incident_ref {
        let backend = n.backend.as_deref().unwrap_or("Incident");
        f.push(("Incident", format!("{backend} {r}")));
    }
    if let Some(at) = n.opened_at.or(opts.thread_started_at) {
        f.push(("Opened", when(at)));
    }
    if let Some(d) = incident_duration(n, opts.thread_started_at) {
        f.push(("Duration", format_duration(d)));
    }
    f
}

fn what_fired(m: &mut Mrkdwn, n: &Notification) {
    if let Some(a) = &n.alarm {
        m.syntax("\n*What fired:* alarm ")
            .link(&a.url, &a.name)
            .syntax(" is ")
            .line(&a.state);
        if !a.reason.trim().is_empty() {
            m.syntax("\n*Why:* ").text(&a.reason);
        }
        if let Some(c) = a.condition.as_deref().filter(|c| !c.trim().is_empty()) {
            m.syntax("\n*Watches:* ").text(c);
        }
    }
}

fn findings(b: &mut MessageBuilder, list: &[FindingSummary]) {
    for f in list {
        let icon = match f.severity.to_ascii_lowercase().as_str() {
            "critical" => "🟥",
            "warning" => "🟧",
            "info" => "🟦",
            _ => "▫️",
        };
        let mut m = section();
        m.syntax(icon).syntax(" *").line(&f.title).syntax("*");
        if !f.severity.trim().is_empty() {
            m.syntax(" (").line(&f.severity).syntax(")");
        }
        if !f.evidence.trim().is_empty() {
            m.syntax("\n").text(&f.evidence);
        }
        if !f.next_step.trim().is_empty() {
            m.syntax("\n*Next:* ").text(&f.next_step);
        }
        b.section(m);
    }
}

fn bullet_section(b: &mut MessageBuilder, title: &str, items: &[String]) {
    let items: Vec<&String> = items.iter().filter(|s| !s.trim().is_empty()).collect();
    if items.is_empty() {
        return;
    }
    let mut m = section();
    m.syntax("*").syntax(title).syntax("*");
    for item in items {
        m.syntax("\n• ").text(item);
    }
    b.section(m);
}

fn timeline(b: &mut MessageBuilder, entries: &[TimelineEntry]) {
    if entries.is_empty() {
        return;
    }
    let mut m = section();
    m.syntax("*Timeline*");
    for e in entries {
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

/// The "Closing summary" section of a resolved incident: the figures of its
/// post-incident summary, else those of the milestones the thread kept.
fn closing_summary(b: &mut MessageBuilder, n: &Notification, opts: &RenderOptions<'_>) {
    if n.status != IncidentStatus::Resolved {
        return;
    }
    let figure = |d: Option<u64>| d.map_or_else(|| "not recorded".to_string(), format_duration);
    let mut m = section();
    if let Some(p) = &n.post_incident {
        m.syntax("*Closing summary*\n• Detected at ")
            .syntax(&when(p.detected_at))
            .syntax("\n• Time to notify: ")
            .syntax(&figure(p.time_to_notify_seconds))
            .syntax("\n• Time to acknowledge: ")
            .syntax(
                &p.time_to_acknowledge_seconds
                    .map_or_else(|| "not acknowledged".to_string(), format_duration),
            )
            .syntax("\n• Time to diagnose: ")
            .syntax(&figure(p.time_to_diagnose_seconds))
            .syntax("\n• Time to resolve: ")
            .syntax(&format_duration(p.time_to_resolve_seconds));
        b.section(m);
        return;
    }
    let Some(f) = opts
        .milestones
        .and_then(|m| m.figures(n.opened_at.or(opts.thread_started_at), n.occurred_at))
    else {
        return;
    };
    m.syntax("*Closing summary*\n• Detected at ")
        .syntax(&when(f.detected_at))
        .syntax("\n• Time to notify: ")
        .syntax(&figure(f.time_to_notify))
        .syntax("\n• Time to diagnose: ")
        .syntax(&figure(f.time_to_diagnose))
        .syntax("\n• Time to resolve: ")
        .syntax(&format_duration(f.time_to_resolve));
    b.section(m);
}

/// A person as Slack shows them (`<@U…>`, which a chat.update never notifies), an
/// alarm by name.
pub(crate) fn actor_text(a: &Actor) -> String {
    match a {
        Actor::Person { id, name } if is_user_id(id) => format!("<@{id}>"),
        Actor::Person { .. } => a.label(),
        Actor::Alarm { name } => format!("alarm {name}"),
    }
}

fn is_user_id(id: &str) -> bool {
    id.starts_with(['U', 'W'])
        && id.len() >= 3
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// The team engaged: a channel as `<#C…>`; a user group by id only, never as a
/// `<!subteam^…>` that would notify it (only the mention policy calls people).
pub(crate) fn team_text(team: &str) -> String {
    let t = team.trim();
    let id_ok = |s: &str| {
        s.len() >= 3
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    if t.starts_with(['C', 'G']) && id_ok(t) {
        format!("<#{t}>")
    } else if t.starts_with('S') && id_ok(t) {
        format!("user group {t}")
    } else {
        t.to_string()
    }
}

/// Reporter, Owner, Team as fields; an open incident without owner says so.
pub(crate) fn role_fields(roles: &Roles, open: bool) -> Vec<(&'static str, String)> {
    let mut f = vec![];
    if let Some(r) = &roles.reporter {
        f.push(("Reporter", actor_text(r)));
    }
    match &roles.owner {
        Some(o) => f.push(("Owner", actor_text(o))),
        None if open => f.push(("Owner", "nobody yet".to_string())),
        None => {}
    }
    if let Some(t) = &roles.team {
        f.push(("Team", team_text(t)));
    }
    f
}

/// The `block_id` of the incident's action buttons.
pub const ACTIONS_BLOCK_ID: &str = "incident.actions";

/// The action buttons of an open incident (`value` = its key).
pub(crate) fn action_buttons(key: &str, owned: bool) -> Vec<ActionButton> {
    let button = |label: &str, action_id: &str, style| ActionButton {
        label: label.to_string(),
        action_id: action_id.to_string(),
        value: key.to_string(),
        style,
        confirm: None,
    };
    let acknowledge = if owned {
        button("Take ownership", ACTION_ACKNOWLEDGE, None)
    } else {
        button(
            "Acknowledge",
            ACTION_ACKNOWLEDGE,
            Some(ButtonStyle::Primary),
        )
    };
    let mut resolve = button("Resolve", ACTION_RESOLVE, Some(ButtonStyle::Danger));
    resolve.confirm = Some((
        "Resolve this incident?".to_string(),
        "It is resolved in the incident backend with your name, and the post-incident summary is posted in the thread. An alarm still firing opens a new incident.".to_string(),
        "Resolve".to_string(),
        "Cancel".to_string(),
    ));
    vec![
        acknowledge,
        button("Add note", ACTION_NOTE, None),
        button("Re-run diagnosis", ACTION_RERUN, None),
        resolve,
    ]
}

fn incident_actions(b: &mut MessageBuilder, n: &Notification, opts: &RenderOptions<'_>) {
    if opts.actions && !opts.webhook && n.status == IncidentStatus::Open {
        b.actions(
            ACTIONS_BLOCK_ID,
            &action_buttons(&n.incident_key, n.roles.owner.is_some()),
        );
    }
}

fn since_opened(n: &Notification, opts: &RenderOptions<'_>) -> Option<u64> {
    let start = n.opened_at.or(opts.thread_started_at)?;
    u64::try_from((n.occurred_at - start).num_seconds()).ok()
}

/// The reply of an acknowledgement: who owns the incident now, and what happened
/// (the summary: first acknowledgement or hand-over), else after how long.
fn acknowledged_reply(b: &mut MessageBuilder, n: &Notification, opts: &RenderOptions<'_>) {
    let mut s = section();
    if let Some(m) = opts.mention {
        s.syntax(&m.syntax()).syntax(" ");
    }
    s.syntax("🙋 *ACKNOWLEDGED* · ")
        .line(&impact_text(n.impact));
    if let Some(owner) = &n.roles.owner {
        s.syntax(" · *Owner:* ").text(&actor_text(owner));
    }
    if !n.summary.trim().is_empty() {
        s.syntax("\n").text(&n.summary);
    } else {
        s.syntax("\nThe incident was acknowledged");
        if let Some(d) = since_opened(n, opts) {
            s.syntax(" ")
                .syntax(&format_duration(d))
                .syntax(" after it opened");
        }
        s.syntax(".");
    }
    b.section(s);
}

/// The reply of an escalation nobody answered: calls the escalation mention (in
/// the channel too: notify-fanout broadcasts it) and says how to answer.
fn unanswered_reply(b: &mut MessageBuilder, n: &Notification, opts: &RenderOptions<'_>) {
    let mut s = section();
    if let Some(m) = opts.mention {
        s.syntax(&m.syntax()).syntax(" ");
    }
    s.syntax("📣 *NOT ACKNOWLEDGED* · ")
        .line(&impact_text(n.impact));
    if let Some(d) = since_opened(n, opts) {
        s.syntax(" · open for ").syntax(&format_duration(d));
    }
    s.syntax("\nNobody has taken this incident yet. Press *Acknowledge* on its message to own it.");
    if !n.summary.trim().is_empty() {
        s.syntax("\n").text(&n.summary);
    }
    b.section(s);
}

/// The post-incident summary of a resolved incident.
fn resolved_summary(n: &Notification) -> Option<&PostIncidentSummary> {
    n.post_incident
        .as_ref()
        .filter(|_| n.status == IncidentStatus::Resolved)
}

/// The summary, then what the notification adds: its findings when the summary has
/// none, and its next steps. (The summary carries the timeline itself.)
fn summary_and_rest(b: &mut MessageBuilder, n: &Notification, p: &PostIncidentSummary) {
    post_incident(b, p);
    if p.findings.is_empty() {
        findings(b, &n.findings);
    }
    bullet_section(b, "Next steps", &n.next_steps);
}

fn stage(m: &mut Mrkdwn, label: &str, at: Option<DateTime<Utc>>, after: Option<u64>) {
    m.syntax("\n• *").syntax(label).syntax(":* ");
    match at {
        Some(t) => {
            m.syntax(&when(t));
            if let Some(d) = after {
                m.syntax(" (+").syntax(&format_duration(d)).syntax(")");
            }
        }
        None => {
            m.syntax("not recorded");
        }
    }
}

/// The post-incident summary in full: stages with times, time to acknowledge and
/// to resolve, roles and who acted, the retrospective checklist, the findings and
/// the timeline (in that order: the 50-block cut takes the timeline first).
fn post_incident(b: &mut MessageBuilder, p: &PostIncidentSummary) {
    let mut m = section();
    m.syntax("*📋 Post-incident summary*");
    stage(&mut m, "Detected", Some(p.detected_at), None);
    stage(&mut m, "Notified", p.notified_at, p.time_to_notify_seconds);
    stage(
        &mut m,
        "Acknowledged",
        p.acknowledged_at,
        p.time_to_acknowledge_seconds,
    );
    stage(
        &mut m,
        "Diagnosed",
        p.diagnosed_at,
        p.time_to_diagnose_seconds,
    );
    stage(
        &mut m,
        "Resolved",
        Some(p.resolved_at),
        Some(p.time_to_resolve_seconds),
    );
    m.syntax(" by ").text(&actor_text(&p.resolved_by));
    m.syntax("\n*Time to acknowledge:* ")
        .syntax(
            &p.time_to_acknowledge_seconds
                .map_or_else(|| "not acknowledged".to_string(), format_duration),
        )
        .syntax(" · *Time to resolve:* ")
        .syntax(&format_duration(p.time_to_resolve_seconds))
        .syntax(" · *Peak impact:* ")
        .line(&p.peak_impact.to_string());
    b.section(m);

    let mut who = section();
    let roles = role_fields(&p.roles, false);
    for (i, (label, value)) in roles.iter().enumerate() {
        if i > 0 {
            who.syntax(" · ");
        }
        who.syntax("*").syntax(label).syntax(":* ").text(value);
    }
    let participants: Vec<&str> = p
        .participants
        .iter()
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
        .collect();
    if !participants.is_empty() {
        if !roles.is_empty() {
            who.syntax("\n");
        }
        who.syntax("*Who acted:* ").line(&participants.join(", "));
    }
    b.section(who);

    let mut head = section();
    head.syntax("*Retrospective checklist*");
    b.section(head);
    for item in &p.retrospective {
        let mut r = section();
        r.syntax("☐ *").line(&item.heading).syntax("*");
        let facts: Vec<&String> = item.facts.iter().filter(|f| !f.trim().is_empty()).collect();
        if facts.is_empty() {
            r.syntax("\n_For the team to fill in._");
        }
        for f in facts {
            r.syntax("\n• ").text(f);
        }
        b.section(r);
    }
    findings(b, &p.findings);
    timeline(b, &p.timeline);
}

fn incident(n: &Notification, opts: &RenderOptions<'_>) -> Message {
    let mut b = MessageBuilder::new();
    let (icon, word) = match opts.mode {
        Mode::Card => state_label(n),
        _ => event_label(n),
    };
    let headline = format!("{icon} {word} · {} · {}", impact_text(n.impact), n.title);
    let mut fb = fallback(opts.mention);
    fb.line(&headline);
    if !n.summary.trim().is_empty() {
        fb.syntax(" — ").line(&n.summary);
    }

    match opts.mode {
        Mode::Post => {
            b.header(&headline);
            mention_section(
                &mut b,
                opts.mention,
                &format!("{} incident: {}", impact_text(n.impact), n.title),
            );
            if opts.webhook {
                let mut c = Mrkdwn::new(MAX_SECTION_TEXT);
                if n.event == EventType::Opened {
                    c.syntax("Incident ");
                } else {
                    c.syntax("↪️ Update to incident ");
                }
                c.syntax("`").line(&n.incident_key).syntax("`");
                if let Some(at) = n.opened_at.filter(|_| n.event != EventType::Opened) {
                    c.syntax(" (opened ").syntax(&when(at)).syntax(")");
                }
                b.context(vec![c]);
            }
            let mut s = section();
            s.text(&n.summary);
            what_fired(&mut s, n);
            b.section(s);
            b.fields(incident_fields(n, opts));
            incident_actions(&mut b, n, opts);
            b.links(&incident_links(n));
            match resolved_summary(n) {
                // Webhooks: the resolution's post is where the summary goes.
                Some(p) => summary_and_rest(&mut b, n, p),
                None => {
                    findings(&mut b, &n.findings);
                    bullet_section(&mut b, "Next steps", &n.next_steps);
                    timeline(&mut b, &n.timeline);
                }
            }
        }
        Mode::Reply if n.event == EventType::Acknowledged => acknowledged_reply(&mut b, n, opts),
        Mode::Reply if n.event == EventType::Unanswered => unanswered_reply(&mut b, n, opts),
        Mode::Reply => {
            let mut s = section();
            if let Some(m) = opts.mention {
                s.syntax(&m.syntax()).syntax(" ");
            }
            s.syntax(&format!("{icon} *{word}* · "))
                .line(&impact_text(n.impact));
            if let Some(d) = incident_duration(n, opts.thread_started_at) {
                s.syntax(" · after ").syntax(&format_duration(d));
            }
            if !n.summary.trim().is_empty() {
                s.syntax("\n").text(&n.summary);
            }
            what_fired(&mut s, n);
            b.section(s);
            match resolved_summary(n) {
                Some(p) => summary_and_rest(&mut b, n, p),
                None => {
                    // Before findings, so the 50-block cut never takes it.
                    closing_summary(&mut b, n, opts);
                    findings(&mut b, &n.findings);
                    bullet_section(&mut b, "Next steps", &n.next_steps);
                    timeline(&mut b, &n.timeline);
                }
            }
            b.links(
                &n.links
                    .iter()
                    .map(|l| LinkButton {
                        label: l.label.clone(),
                        url: l.url.clone(),
                    })
                    .collect::<Vec<_>>(),
            );
        }
        Mode::Card => {
            b.header(&headline);
            let mut s = section();
            match incident_duration(n, opts.thread_started_at) {
                Some(d) => s
                    .syntax("*Resolved after ")
                    .syntax(&format_duration(d))
                    .syntax(".* "),
                None => s.syntax("*Latest:* "),
            };
            s.text(&n.summary);
            b.section(s);
            closing_summary(&mut b, n, opts);
            b.fields(incident_fields(n, opts));
            incident_actions(&mut b, n, opts);
            b.links(&incident_links(n));
        }
    }
    let mut c = Mrkdwn::new(MAX_SECTION_TEXT);
    match opts.mode {
        Mode::Card => {
            let (_, event_word) = event_label(n);
            c.syntax("Last update: ")
                .syntax(&event_word.to_ascii_lowercase())
                .syntax(" ")
                .syntax(&when(n.occurred_at))
                .syntax(" · details in the thread");
        }
        _ => {
            c.syntax(n.event.as_str())
                .syntax(" · ")
                .syntax(&when(n.occurred_at))
                .syntax(" · key `")
                .line(&n.incident_key)
                .syntax("`");
        }
    }
    b.context(vec![c]);
    b.build(fb)
}

fn alarm_icon(state: AlarmState) -> (&'static str, &'static str) {
    match state {
        AlarmState::Alarm => ("🔴", "ALARM"),
        AlarmState::Ok => ("✅", "OK"),
        AlarmState::InsufficientData => ("⚪", "INSUFFICIENT DATA"),
    }
}

fn alarm_fields(a: &Alarm, opts: &RenderOptions<'_>) -> Vec<(&'static str, String)> {
    let state = match a.previous_state {
        Some(p) if p != a.state => format!("{p} → {}", a.state),
        _ => a.state.to_string(),
    };
    let mut f = vec![
        ("State", state),
        ("Account", a.account.clone()),
        ("Region", a.region.clone()),
    ];
    match &a.condition {
        AlarmCondition::Metric(m) => {
            f.push((
                "Metric",
                format!("{} {}", m.metric.namespace, m.metric.name),
            ));
            let dims: Vec<String> = m
                .metric
                .dimensions
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            f.push(("Dimensions", dims.join(", ")));
            let mut cond = vec![];
            if let Some(s) = &m.statistic {
                cond.push(s.clone());
            }
            if let Some(c) = &m.comparison {
                cond.push(c.clone());
            }
            if let Some(t) = m.threshold {
                cond.push(t.to_string());
            }
            if let (Some(e), Some(p)) = (m.evaluation_periods, m.period_seconds) {
                cond.push(format!("for {e} × {p}s"));
            }
            f.push(("Condition", cond.join(" ")));
        }
        AlarmCondition::Math(m) => {
            f.push(("Expression", m.expression.clone().unwrap_or_default()));
            let mut cond = vec![];
            if let Some(c) = &m.comparison {
                cond.push(c.clone());
            }
            if let Some(t) = m.threshold {
                cond.push(t.to_string());
            }
            f.push(("Condition", cond.join(" ")));
        }
        AlarmCondition::Anomaly(an) => {
            if let Some(m) = &an.metric {
                f.push(("Metric", format!("{} {}", m.namespace, m.name)));
                let dims: Vec<String> = m
                    .dimensions
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                f.push(("Dimensions", dims.join(", ")));
            }
            let side = match an.comparison.as_deref() {
                Some("LessThanLowerThreshold") => "below",
                Some("GreaterThanUpperThreshold") => "above",
                _ => "outside",
            };
            let mut cond = vec![];
            if let Some(s) = &an.statistic {
                cond.push(s.clone());
            }
            cond.push(format!("{side} the anomaly band {}", an.band));
            if let (Some(e), Some(p)) = (an.evaluation_periods, an.period_seconds) {
                cond.push(format!("for {e} × {p}s"));
            }
            f.push(("Condition", cond.join(" ")));
            if let (Some(lo), Some(hi)) = (an.lower_bound, an.upper_bound) {
                let value = an.value.map(|v| format!(", value {v}")).unwrap_or_default();
                f.push(("Band", format!("{lo} to {hi}{value}")));
            }
        }
        AlarmCondition::Insights(q) => {
            f.push(("Query", q.query.clone()));
            let mut cond = vec![];
            if let Some(c) = &q.comparison {
                cond.push(c.clone());
            }
            if let Some(t) = q.threshold {
                cond.push(t.to_string());
            }
            match (q.evaluation_periods, q.period_seconds) {
                (Some(e), Some(p)) => cond.push(format!("for {e} × {p}s")),
                (None, Some(p)) => cond.push(format!("every {p}s")),
                _ => {}
            }
            let mut condition = cond.join(" ");
            if !q.group_by.is_empty() {
                if !condition.is_empty() {
                    condition.push_str(", ");
                }
                condition.push_str(&format!("one time series per {}", q.group_by.join(", ")));
            }
            f.push(("Condition", condition));
        }
        AlarmCondition::Composite(c) => {
            f.push(("Rule", c.rule.clone().unwrap_or_default()));
        }
        AlarmCondition::Unknown => {}
    }
    if let Some(c) = &a.contributor {
        f.push(("Time series", c.describe()));
    }
    f.push(("VPN connection", a.vpn_id().unwrap_or_default().to_string()));
    f.push((
        "Tunnel",
        a.dimension("TunnelIpAddress")
            .unwrap_or_default()
            .to_string(),
    ));
    f.push(("Changed", when(a.changed_at)));
    if let (Some(start), AlarmState::Ok) = (opts.thread_started_at, a.state) {
        if let Ok(d) = u64::try_from((a.changed_at - start).num_seconds()) {
            f.push(("Duration", format_duration(d)));
        }
    }
    f
}

fn alarm_links(a: &Alarm) -> Vec<LinkButton> {
    let mut links = vec![];
    if region_ok(&a.region) {
        links.push(LinkButton {
            label: "CloudWatch alarm".into(),
            url: a.console_url(),
        });
        if let Some(vpn) = a.vpn_id() {
            links.push(LinkButton {
                label: "VPN connection".into(),
                url: vpn_console(&a.region, vpn),
            });
        }
        links.push(LinkButton {
            label: "Logs Insights".into(),
            url: logs_insights(&a.region),
        });
    }
    links
}

fn alarm(a: &Alarm, opts: &RenderOptions<'_>) -> Message {
    let mut b = MessageBuilder::new();
    let (icon, word) = alarm_icon(a.state);
    let resolved_after = match (opts.thread_started_at, a.state) {
        (Some(start), AlarmState::Ok) => u64::try_from((a.changed_at - start).num_seconds()).ok(),
        _ => None,
    };
    // The name, with the time series for one contributor of a multi-time-series alarm.
    let name = a.label();
    let headline = match (opts.mode, a.state) {
        (Mode::Card, AlarmState::Ok) => format!("✅ RESOLVED · {name}"),
        _ => format!("{icon} {word} · {name}"),
    };
    let mut fb = fallback(opts.mention);
    fb.line(&headline);
    if !a.reason.trim().is_empty() {
        fb.syntax(" — ").line(&a.reason);
    }
    let mut why = section();
    if let Some(d) = resolved_after {
        why.syntax("*Resolved after ")
            .syntax(&format_duration(d))
            .syntax(".*\n");
    }
    why.syntax("*Why:* ").text(&a.reason);
    if let Some(d) = a.description.as_deref().filter(|d| !d.trim().is_empty()) {
        why.syntax("\n*Description:* ").text(d);
    }
    match opts.mode {
        Mode::Post | Mode::Card => {
            b.header(&headline);
            if opts.mode == Mode::Post {
                mention_section(&mut b, opts.mention, &headline);
                if opts.webhook {
                    let mut c = Mrkdwn::new(MAX_SECTION_TEXT);
                    c.syntax("Alarm `")
                        .line(&a.name)
                        .syntax("` · this message updates its earlier state");
                    b.context(vec![c]);
                }
            }
            b.section(why);
            b.fields(alarm_fields(a, opts));
            b.links(&alarm_links(a));
        }
        Mode::Reply => {
            let mut s = section();
            if let Some(m) = opts.mention {
                s.syntax(&m.syntax()).syntax(" ");
            }
            s.syntax(&format!("{icon} *{word}* · "))
                .line(&name)
                .syntax(" · ")
                .syntax(&when(a.changed_at));
            b.section(s);
            b.section(why);
        }
    }
    let mut c = Mrkdwn::new(MAX_SECTION_TEXT);
    if opts.mode == Mode::Card {
        c.syntax("Last change ")
            .syntax(&when(a.changed_at))
            .syntax(" · details in the thread");
    } else {
        c.syntax("`").line(&a.arn).syntax("`");
    }
    b.context(vec![c]);
    b.build(fb)
}

fn chatbot(c: &ChatbotMessage, opts: &RenderOptions<'_>) -> Message {
    let mut b = MessageBuilder::new();
    let title = c.title.clone().unwrap_or_else(|| "Notification".into());
    let mut fb = fallback(opts.mention);
    fb.line(&title).syntax(" — ").line(&c.description);
    b.header(&title);
    b.long_text(&c.description, 3);
    bullet_section(&mut b, "Next steps", &c.next_steps);
    let mut ctx = vec![];
    let mut m = Mrkdwn::new(MAX_SECTION_TEXT);
    m.syntax("Chatbot custom notification");
    if let Some(t) = &c.event_type {
        m.syntax(" · ").line(t);
    }
    ctx.push(m);
    if !c.related.is_empty() {
        let mut r = Mrkdwn::new(MAX_SECTION_TEXT);
        r.syntax("Related: ").line(&c.related.join(", "));
        ctx.push(r);
    }
    b.context(ctx);
    b.build(fb)
}

fn event(e: &AwsEvent, opts: &RenderOptions<'_>) -> Message {
    let mut b = MessageBuilder::new();
    let headline = format!("📣 {}", e.detail_type);
    let mut fb = fallback(opts.mention);
    fb.line(&headline);
    if let Some(t) = &e.title {
        fb.syntax(" — ").line(t);
    }
    b.header(&headline);
    let mut s = section();
    if let Some(t) = &e.title {
        s.syntax("*").line(t).syntax("*\n");
    }
    if let Some(d) = &e.description {
        s.text(d);
    }
    b.section(s);
    let resources = match e.resources.len() {
        0..=5 => e.resources.join(", "),
        n => format!("{} (+{} more)", e.resources[..5].join(", "), n - 5),
    };
    let time = e
        .time
        .as_deref()
        .and_then(crate::alarm::parse_timestamp)
        .map(when)
        .or_else(|| e.time.clone())
        .unwrap_or_default();
    b.fields([
        ("Source", e.source.clone()),
        ("Account", e.account.clone().unwrap_or_default()),
        ("Region", e.region.clone().unwrap_or_default()),
        ("Time", time),
        ("Severity", e.severity.clone().unwrap_or_default()),
        ("Resources", resources),
    ]);
    if !e.detail.is_null() {
        let json = serde_json::to_string_pretty(&e.detail).unwrap_or_default();
        // The fences are added around the cut text, so a cut never loses the closing one.
        let mut inner = Mrkdwn::new(MAX_SECTION_TEXT - 8);
        inner.text(&json.replace("```", "ʼʼʼ"));
        let mut code = section();
        code.syntax("```\n").syntax(&inner.finish()).syntax("\n```");
        b.section(code);
    }
    let mut c = Mrkdwn::new(MAX_SECTION_TEXT);
    c.syntax("EventBridge event");
    if let Some(id) = &e.id {
        c.syntax(" `").line(id).syntax("`");
    }
    c.syntax(" via SNS");
    b.context(vec![c]);
    b.build(fb)
}

fn text(t: &PlainMessage, opts: &RenderOptions<'_>) -> Message {
    let mut b = MessageBuilder::new();
    let mut fb = fallback(opts.mention);
    if let Some(s) = &t.subject {
        fb.line(s).syntax(" — ");
        b.header(s);
    }
    fb.line(&t.body);
    // Control characters are dropped by the escaping: a body of only those is empty
    // too (found by fuzzing, fuzz/regressions/slack_render).
    if t.body.chars().all(|c| c.is_whitespace() || c.is_control()) {
        let mut s = section();
        s.syntax("_(empty message)_");
        b.section(s);
    } else {
        b.long_text(&t.body, 5);
    }
    b.build(fb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::inbound::SnsMessage;

    fn parse(message: &str) -> Inbound {
        Inbound::parse(SnsMessage {
            topic_arn: "arn:aws:sns:eu-west-1:123456789012:t",
            subject: None,
            message,
        })
    }

    #[test]
    fn text_message_keeps_body_escaped() {
        let msg = render(&parse("a <b> & c"), &RenderOptions::default());
        assert_eq!(msg.text, "a &lt;b&gt; &amp; c");
        assert_eq!(
            serde_json::to_value(&msg.blocks).unwrap(),
            serde_json::json!([{"type": "section", "text": {"type": "mrkdwn", "text": "a &lt;b&gt; &amp; c"}}])
        );
    }

    #[test]
    fn empty_text_message_is_still_a_valid_message() {
        let msg = render(&parse("   "), &RenderOptions::default());
        assert!(msg.limit_violations().is_empty());
        assert_eq!(msg.blocks.len(), 1);
    }

    /// Fuzzing (fuzz/regressions/slack_render/control-characters-only-text): a body
    /// of control characters only lost every block (the escaping drops them).
    #[test]
    fn control_characters_only_text_is_an_empty_message_not_a_blockless_one() {
        let msg = render(&parse("\0\0\u{7}\u{1b}\0\0"), &RenderOptions::default());
        assert!(msg.limit_violations().is_empty());
        assert_eq!(
            serde_json::to_value(&msg.blocks).unwrap(),
            serde_json::json!([{"type": "section", "text": {"type": "mrkdwn", "text": "_(empty message)_"}}])
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn resolved_vpn_incident() -> Inbound {
        let mut n = crate::slack::golden_tests::vpn_incident(EventType::Resolved);
        n.status = IncidentStatus::Resolved;
        n.occurred_at = at("2026-11-25T10:33:10Z");
        n.findings = vec![];
        Inbound::Incident(Box::new(n))
    }

    fn milestones() -> Milestones {
        Milestones {
            detected_at: Some(at("2026-11-25T10:01:00Z")),
            notified_at: Some(at("2026-11-25T10:01:12Z")),
            diagnosed_at: Some(at("2026-11-25T10:04:30Z")),
        }
    }

    fn section_texts(msg: &Message) -> Vec<String> {
        serde_json::to_value(&msg.blocks)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["text"]["text"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn milestones_figures_measure_from_detection() {
        let f = milestones()
            .figures(None, at("2026-11-25T10:33:10Z"))
            .unwrap();
        assert_eq!(
            f,
            ClosingFigures {
                detected_at: at("2026-11-25T10:01:00Z"),
                time_to_notify: Some(12),
                time_to_diagnose: Some(210),
                time_to_resolve: 1930,
            }
        );
    }

    #[test]
    fn milestones_of_an_old_thread_fall_back_to_opened_at_and_saturate() {
        let old = Milestones::default();
        assert_eq!(old.figures(None, at("2026-11-25T10:33:10Z")), None);
        let f = old
            .figures(Some(at("2026-11-25T10:00:00Z")), at("2026-11-25T10:01:05Z"))
            .unwrap();
        assert_eq!(
            (f.time_to_notify, f.time_to_diagnose, f.time_to_resolve),
            (None, None, 65)
        );
        let skewed = Milestones {
            detected_at: Some(at("2026-11-25T10:00:10Z")),
            notified_at: Some(at("2026-11-25T10:00:09Z")),
            diagnosed_at: None,
        };
        let f = skewed.figures(None, at("2026-11-25T10:00:00Z")).unwrap();
        assert_eq!((f.time_to_notify, f.time_to_resolve), (Some(0), 0));
    }

    #[test]
    fn resolved_reply_and_card_close_with_the_summary_figures() {
        for mode in [Mode::Reply, Mode::Card] {
            let opts = RenderOptions {
                mode,
                milestones: Some(milestones()),
                ..Default::default()
            };
            let msg = render(&resolved_vpn_incident(), &opts);
            assert!(msg.limit_violations().is_empty());
            let expected = "*Closing summary*\n• Detected at <!date^1795600860^{date_short_pretty} {time}|2026-11-25 10:01 UTC>\n• Time to notify: 12s\n• Time to diagnose: 3m 30s\n• Time to resolve: 32m 10s";
            assert!(
                section_texts(&msg).iter().any(|t| t == expected),
                "{mode:?}: {:?}",
                section_texts(&msg)
            );
        }
    }

    #[test]
    fn member_account_card_names_the_account() {
        let mut n = crate::slack::golden_tests::vpn_incident(EventType::Opened);
        let plain = incident_fields(&n, &RenderOptions::default());
        assert!(plain.contains(&("Account", n.account.clone())));
        n.account = "111122223333".into();
        n.account_info = Some(crate::org::AccountInfo {
            id: "111122223333".into(),
            name: Some("payments-prod".into()),
            ..Default::default()
        });
        let fields = incident_fields(&n, &RenderOptions::default());
        assert!(fields.contains(&("Account", "111122223333 (payments-prod)".into())));
        let msg = render(&Inbound::Incident(Box::new(n)), &RenderOptions::default());
        assert!(msg.limit_violations().is_empty());
    }

    #[test]
    fn closing_summary_says_what_was_not_recorded_and_only_when_resolved() {
        let partial = Milestones {
            diagnosed_at: None,
            ..milestones()
        };
        let opts = RenderOptions {
            mode: Mode::Reply,
            milestones: Some(partial),
            ..Default::default()
        };
        let texts = section_texts(&render(&resolved_vpn_incident(), &opts));
        assert!(texts
            .iter()
            .any(|t| t.contains("• Time to diagnose: not recorded\n")));

        let open = Inbound::Incident(Box::new(crate::slack::golden_tests::vpn_incident(
            EventType::Diagnosed,
        )));
        let texts = section_texts(&render(&open, &opts));
        assert!(texts.iter().all(|t| !t.contains("Closing summary")));
        // Without milestones (webhooks, raw alarms) there is no closing summary.
        let none = RenderOptions {
            mode: Mode::Reply,
            ..Default::default()
        };
        let texts = section_texts(&render(&resolved_vpn_incident(), &none));
        assert!(texts.iter().all(|t| !t.contains("Closing summary")));
    }

    fn action_ids(msg: &Message) -> Vec<String> {
        serde_json::to_value(&msg.blocks)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["block_id"] == ACTIONS_BLOCK_ID)
            .flat_map(|b| b["elements"].as_array().unwrap().clone())
            .map(|e| e["action_id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn action_buttons_only_on_open_bot_posts_and_cards_when_asked() {
        let open = Inbound::Incident(Box::new(crate::slack::golden_tests::vpn_incident(
            EventType::Opened,
        )));
        let all = vec![
            ACTION_ACKNOWLEDGE.to_string(),
            ACTION_NOTE.into(),
            ACTION_RERUN.into(),
            ACTION_RESOLVE.into(),
        ];
        for mode in [Mode::Post, Mode::Card] {
            let opts = RenderOptions {
                mode,
                actions: true,
                ..Default::default()
            };
            assert_eq!(action_ids(&render(&open, &opts)), all, "{mode:?}");
            let off = RenderOptions {
                mode,
                ..Default::default()
            };
            assert!(action_ids(&render(&open, &off)).is_empty());
            let webhook = RenderOptions {
                mode,
                actions: true,
                webhook: true,
                ..Default::default()
            };
            assert!(action_ids(&render(&open, &webhook)).is_empty());
        }
        let reply = RenderOptions {
            mode: Mode::Reply,
            actions: true,
            ..Default::default()
        };
        assert!(action_ids(&render(&open, &reply)).is_empty());
        let card = RenderOptions {
            mode: Mode::Card,
            actions: true,
            ..Default::default()
        };
        assert!(action_ids(&render(&resolved_vpn_incident(), &card)).is_empty());
    }

    #[test]
    fn roles_render_people_channels_and_groups_without_notifying() {
        let roles = Roles {
            reporter: Some(Actor::Person {
                id: "bad id".into(),
                name: "Sam".into(),
            }),
            owner: None,
            team: Some("S0123NET".into()),
        };
        assert_eq!(
            role_fields(&roles, true),
            vec![
                ("Reporter", "Sam (bad id)".to_string()),
                ("Owner", "nobody yet".into()),
                ("Team", "user group S0123NET".into()),
            ]
        );
        assert_eq!(role_fields(&roles, false).len(), 2);
        assert_eq!(team_text("C0123ONCALL"), "<#C0123ONCALL>");
        assert_eq!(team_text("net ops"), "net ops");
        assert_eq!(
            actor_text(&Actor::Person {
                id: "U0123".into(),
                name: "x".into()
            }),
            "<@U0123>"
        );
    }

    #[test]
    fn when_uses_slack_date_with_utc_fallback() {
        let t: DateTime<Utc> = "2026-11-25T10:01:00Z".parse().unwrap();
        assert_eq!(
            when(t),
            "<!date^1795600860^{date_short_pretty} {time}|2026-11-25 10:01 UTC>"
        );
    }
}
