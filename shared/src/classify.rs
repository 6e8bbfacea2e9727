//! Classification: which incident an alarm belongs to and how bad it is.
//!
//! Rules come from configuration (a JSON document in `CLASSIFICATION_RULES` or in
//! the SSM parameter named by `CLASSIFICATION_RULES_PARAMETER`), validated once at
//! start-up, followed by the built-in rules that reproduce the article (VPN
//! `TunnelState`). The first rule whose `match` holds gives the impact and the
//! templates of title, summary and dedupe key; an alarm no rule matches gets the
//! `default` outcome, so every alarm becomes an incident and none is dropped.
//!
//! Classification reads only the alarm's identity and configuration, never its
//! state: the `OK` of an alarm lands on the same dedupe key as its `ALARM`.
//!
//! Rules document (every key but `rules[].impact` and `rules[].title` optional):
//!
//! ```json
//! {
//!   "rules": [{
//!     "name": "payments-api-5xx",
//!     "match": {
//!       "alarmName": "^(?P<Env>prod|staging)-payments-",
//!       "namespace": "AWS/ApiGateway",
//!       "metric": "5XXError",
//!       "statistic": "Sum",
//!       "dimensions": { "ApiName": "payments", "Stage": "*" }
//!     },
//!     "impact": 2,
//!     "title": "Payments API errors in {Env} ({Stage})",
//!     "summary": "{AlarmDescription}",
//!     "dedupeKey": "payments-api-{Env}",
//!     "category": "Availability",
//!     "nextSteps": ["Check the last deployment of {ApiName}"],
//!     "runbook": { "document": "PaymentsDiagnosis", "parameters": { "Stage": "{Stage}", "OpsItemId": "{OpsItemId}" } }
//!   }],
//!   "default": { "impact": 4, "title": "CloudWatch alarm {AlarmName}" },
//!   "builtins": true
//! }
//! ```
//!
//! A bare JSON list is read as `rules` with the defaults for the rest.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use regex_lite::Regex;
use serde::{Deserialize, Serialize};

use crate::alarm::{Alarm, AlarmCondition, MetricIdentity, MetricQuery};
use crate::error::Retryable;
use crate::hash::stable_hash;
use crate::incident::{Impact, IncidentRef, RunbookRequest};
use crate::text::truncate;

/// Placeholders every template may use, filled from the alarm. `AlarmLabel` is the
/// name, followed for one time series of a multi-time-series alarm by its attributes
/// (`vpn-tunnels (VpnId=vpn-1)`); `Contributor` is those attributes and
/// `ContributorId` CloudWatch's id of the time series (both empty otherwise).
pub const ALARM_PLACEHOLDERS: &[&str] = &[
    "AlarmName",
    "AlarmLabel",
    "Contributor",
    "ContributorId",
    "AlarmArn",
    "AlarmDescription",
    "AlarmReason",
    "Account",
    "Region",
    "Namespace",
    "MetricName",
    "Statistic",
];

/// Placeholders only runbook parameters may use, filled once the incident exists.
pub const RUNBOOK_PLACEHOLDERS: &[&str] = &[
    "IncidentId",
    "OpsItemId",
    "IncidentRecordArn",
    "AutomationAssumeRole",
];

/// OpsCenter's categories.
pub const CATEGORIES: &[&str] = &[
    "Availability",
    "Cost",
    "Performance",
    "Recovery",
    "Security",
];

/// Dedupe keys longer than this are cut and end with a hash of the whole key (the
/// key is part of a DynamoDB partition key and of a Slack thread key).
pub const KEY_MAX: usize = 400;

/// The title and key of the article's VPN incident.
const VPN_TITLE: &str = "VPN connection {VpnId} is DOWN";
const VPN_NEXT_STEPS: &[&str] = &[
    "Read the diagnosis the runbook posts (tunnel telemetry, gateway state, tunnel logs)",
    "Check the customer gateway device and its internet link at the remote site",
    "Compare IKE and IPsec settings of both ends if the tunnel logs show negotiation failures",
];

/// A rules document that cannot be used. Never retryable: the configuration must change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("classification rules: {0}")]
pub struct RulesError(pub String);

impl Retryable for RulesError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "BadConfig"
    }
}

/// A text with `{Placeholder}`s; `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var(String),
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = vec![];
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!("unclosed placeholder in {source:?} (write {{{{ for a literal brace)"))
                            }
                            Some(ch) => name.push(ch),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(format!("empty placeholder {{}} in {source:?}"));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => {
                    return Err(format!(
                        "unmatched }} in {source:?} (write }}}} for a literal brace)"
                    ))
                }
                _ => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// The placeholder names used, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills placeholders from `lookup`; an unknown one becomes empty text.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&lookup(v).unwrap_or_default()),
            }
        }
        out
    }
}

fn escape_braces(s: &str) -> String {
    s.replace('{', "{{").replace('}', "}}")
}

// ---------------------------------------------------------------------------
// The JSON document.

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DocumentJson {
    List(Vec<RuleJson>),
    Full(FullJson),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FullJson {
    #[serde(default)]
    rules: Vec<RuleJson>,
    default: Option<OutcomeJson>,
    builtins: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MatchJson {
    alarm_name: Option<String>,
    namespace: Option<String>,
    metric: Option<String>,
    statistic: Option<String>,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
}

/// A rule: a name, a `match` and the outcome fields (serde's `flatten` cannot be
/// combined with `deny_unknown_fields`, so the outcome fields are repeated here).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleJson {
    name: Option<String>,
    #[serde(rename = "match", default)]
    matcher: MatchJson,
    impact: Option<u8>,
    title: Option<String>,
    summary: Option<String>,
    dedupe_key: Option<String>,
    category: Option<String>,
    #[serde(default)]
    next_steps: Vec<String>,
    runbook: Option<RunbookJson>,
}

impl RuleJson {
    fn outcome(&self) -> OutcomeJson {
        OutcomeJson {
            impact: self.impact,
            title: self.title.clone(),
            summary: self.summary.clone(),
            dedupe_key: self.dedupe_key.clone(),
            category: self.category.clone(),
            next_steps: self.next_steps.clone(),
            runbook: self.runbook.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OutcomeJson {
    impact: Option<u8>,
    title: Option<String>,
    summary: Option<String>,
    dedupe_key: Option<String>,
    category: Option<String>,
    #[serde(default)]
    next_steps: Vec<String>,
    runbook: Option<RunbookJson>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunbookJson {
    document: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, ParamJson>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ParamJson {
    One(String),
    Many(Vec<String>),
}

// ---------------------------------------------------------------------------
// Validated rules.

#[derive(Debug, Clone)]
enum DimensionMatch {
    /// `"*"`: the dimension must be present, any value.
    Present,
    Exact(String),
}

#[derive(Debug, Clone, Default)]
struct Matcher {
    alarm_name: Option<Regex>,
    namespace: Option<String>,
    metric: Option<String>,
    statistic: Option<String>,
    dimensions: BTreeMap<String, DimensionMatch>,
}

#[derive(Debug, Clone)]
struct Outcome {
    impact: Impact,
    title: Template,
    summary: Template,
    dedupe_key: Template,
    category: Option<String>,
    next_steps: Vec<Template>,
    runbook: Option<RunbookTemplate>,
}

#[derive(Debug, Clone)]
struct RunbookTemplate {
    document: String,
    parameters: BTreeMap<String, Vec<Template>>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    matcher: Matcher,
    outcome: Outcome,
}

/// The validated rules: configured ones first, then (unless `"builtins": false`) the
/// built-in VPN rules, then the default outcome.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    default: Outcome,
}

/// What the rules say about one alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The rule that matched, or `default`.
    pub rule: String,
    pub impact: Impact,
    pub title: String,
    pub summary: String,
    /// The dedupe key: one open incident per key.
    pub key: String,
    pub category: Option<String>,
    pub next_steps: Vec<String>,
    pub runbook: Option<RunbookPlan>,
}

/// A runbook with alarm placeholders filled; incident placeholders (`{OpsItemId}`,
/// `{IncidentRecordArn}`, `{IncidentId}`, `{AutomationAssumeRole}`) are filled by
/// [`RunbookPlan::request`] once the incident exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookPlan {
    pub document: String,
    pub parameters: BTreeMap<String, Vec<String>>,
}

impl RunbookPlan {
    /// The request to start the runbook for `incident`. A parameter whose values all
    /// come out empty (e.g. `{AutomationAssumeRole}` when no role is configured, or
    /// `{IncidentRecordArn}` on OpsCenter) is left out, so the document's default applies.
    pub fn request(
        &self,
        incident: &IncidentRef,
        role_arn: Option<&str>,
        client_token: &str,
    ) -> RunbookRequest {
        let lookup = |name: &str| -> Option<String> {
            match (name, incident) {
                ("IncidentId", _) => Some(incident.id().to_string()),
                ("OpsItemId", IncidentRef::OpsCenter(id)) => Some(id.clone()),
                ("IncidentRecordArn", IncidentRef::IncidentManager(arn)) => Some(arn.clone()),
                ("AutomationAssumeRole", _) => role_arn.map(str::to_string),
                _ => None,
            }
        };
        let parameters = self
            .parameters
            .iter()
            .filter_map(|(k, values)| {
                let rendered: Vec<String> = values
                    .iter()
                    .map(|v| match Template::parse(v) {
                        Ok(t) => t.render(lookup),
                        Err(_) => v.clone(),
                    })
                    .filter(|v| !v.is_empty())
                    .collect();
                (!rendered.is_empty()).then(|| (k.clone(), rendered))
            })
            .collect();
        RunbookRequest {
            document: self.document.clone(),
            parameters,
            client_token: client_token.to_string(),
        }
    }
}

impl Rules {
    /// Only the built-in rules and default. `runbook_document` is the diagnosis
    /// Automation document (`RUNBOOK_DOCUMENT_NAME`); without it no runbook starts.
    pub fn builtin(runbook_document: Option<&str>) -> Rules {
        Rules {
            rules: builtin_rules(runbook_document),
            default: builtin_default(),
        }
    }

    /// Parses and validates a rules document (see the module documentation).
    /// `runbook_document` is used by rules whose runbook names no document.
    pub fn from_json(text: &str, runbook_document: Option<&str>) -> Result<Rules, RulesError> {
        let doc: DocumentJson = serde_json::from_str(text).map_err(|e| {
            RulesError(format!(
                "not a valid rules document ({e}); expected {{\"rules\": [...], \"default\": {{...}}, \"builtins\": true}} or a list of rules"
            ))
        })?;
        let (rules_json, default_json, builtins) = match doc {
            DocumentJson::List(rules) => (rules, None, true),
            DocumentJson::Full(f) => (f.rules, f.default, f.builtins.unwrap_or(true)),
        };
        let mut rules = Vec::with_capacity(rules_json.len() + 4);
        let mut names = BTreeSet::new();
        for (i, r) in rules_json.into_iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| format!("rule-{}", i + 1));
            let at = format!("rules[{i}] ({name})");
            if !names.insert(name.clone()) {
                return Err(RulesError(format!(
                    "{at}: the name is used by an earlier rule"
                )));
            }
            rules.push(validate_rule(&at, name, r, runbook_document)?);
        }
        if builtins {
            rules.extend(builtin_rules(runbook_document));
        }
        let default = match default_json {
            None => builtin_default(),
            Some(o) => {
                let base = builtin_default();
                validate_outcome(
                    "default",
                    &BTreeSet::new(),
                    o,
                    runbook_document,
                    Some(&base),
                )?
            }
        };
        Ok(Rules { rules, default })
    }

    /// The classification of an alarm: the first matching rule, else the default.
    pub fn classify(&self, alarm: &Alarm) -> Classification {
        for rule in &self.rules {
            if let Some(ctx) = rule.matcher.matches(alarm) {
                return rule.outcome.render(&rule.name, alarm, &ctx);
            }
        }
        self.default
            .render("default", alarm, &MatchContext::default())
    }

    /// Names of the rules in evaluation order (for logs at start-up).
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }
}

/// What matching found: the metric that matched and named captures of `alarmName`.
#[derive(Debug, Default)]
struct MatchContext<'a> {
    metric: Option<Cow<'a, MetricIdentity>>,
    statistic: Option<&'a str>,
    captures: BTreeMap<String, String>,
}

impl Matcher {
    fn needs_metric(&self) -> bool {
        self.namespace.is_some()
            || self.metric.is_some()
            || self.statistic.is_some()
            || !self.dimensions.is_empty()
    }

    fn matches<'a>(&self, alarm: &'a Alarm) -> Option<MatchContext<'a>> {
        let mut ctx = MatchContext::default();
        if let Some(re) = &self.alarm_name {
            let caps = re.captures(&alarm.name)?;
            for name in re.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    ctx.captures
                        .insert(name.to_string(), m.as_str().to_string());
                }
            }
        }
        let candidates = metric_candidates(alarm);
        if self.needs_metric() {
            let (metric, statistic) = candidates
                .into_iter()
                .find(|(m, s)| self.metric_matches(m, *s))?;
            ctx.metric = Some(metric);
            ctx.statistic = statistic;
        } else if let Some((metric, statistic)) = candidates.into_iter().next() {
            ctx.metric = Some(metric);
            ctx.statistic = statistic;
        }
        Some(ctx)
    }

    fn metric_matches(&self, m: &MetricIdentity, statistic: Option<&str>) -> bool {
        if self.namespace.as_ref().is_some_and(|n| *n != m.namespace) {
            return false;
        }
        if self.metric.as_ref().is_some_and(|n| *n != m.name) {
            return false;
        }
        if let Some(want) = &self.statistic {
            if !statistic.is_some_and(|s| s.eq_ignore_ascii_case(want)) {
                return false;
            }
        }
        self.dimensions
            .iter()
            .all(|(k, want)| match (want, m.dimensions.get(k)) {
                (_, None) => false,
                (DimensionMatch::Present, Some(_)) => true,
                (DimensionMatch::Exact(v), Some(have)) => v == have,
            })
    }
}

/// Every (metric, statistic) the alarm reads: the metric of a single-metric alarm,
/// each metric query of an expression or anomaly-band alarm, or what a Metrics
/// Insights query reads. For one time series (contributor) of a multi-time-series
/// alarm, that series' attributes are its dimensions: rules match them, and
/// templates read them, like the dimensions of any metric.
fn metric_candidates(alarm: &Alarm) -> Vec<(Cow<'_, MetricIdentity>, Option<&str>)> {
    fn queries(qs: &[MetricQuery]) -> Vec<(Cow<'_, MetricIdentity>, Option<&str>)> {
        qs.iter()
            .filter_map(|q| {
                q.metric
                    .as_ref()
                    .map(|metric| (Cow::Borrowed(metric), q.statistic.as_deref()))
            })
            .collect()
    }
    let mut candidates = match &alarm.condition {
        AlarmCondition::Metric(m) => vec![(Cow::Borrowed(&m.metric), m.statistic.as_deref())],
        AlarmCondition::Math(m) => queries(&m.queries),
        AlarmCondition::Anomaly(a) => match &a.metric {
            // The watched metric first: it carries the alarm's dimensions.
            Some(metric) => vec![(Cow::Borrowed(metric), a.statistic.as_deref())],
            None => queries(&a.queries),
        },
        AlarmCondition::Insights(q) => q
            .metric
            .iter()
            .map(|m| (Cow::Borrowed(m), q.statistic.as_deref()))
            .collect(),
        AlarmCondition::Composite(_) | AlarmCondition::Unknown => vec![],
    };
    if let Some(c) = &alarm.contributor {
        for (metric, _) in &mut candidates {
            let m = metric.to_mut();
            for (k, v) in &c.attributes {
                m.dimensions.insert(k.clone(), v.clone());
            }
        }
    }
    candidates
}

impl Outcome {
    fn render(&self, rule: &str, alarm: &Alarm, ctx: &MatchContext) -> Classification {
        let lookup = |name: &str| alarm_value(name, alarm, ctx);
        let title = clean_line(&self.title.render(lookup));
        let title = if title.is_empty() {
            alarm.name.clone()
        } else {
            title
        };
        let summary = self.summary.render(lookup).trim().to_string();
        let summary = if summary.is_empty() {
            if alarm.reason.is_empty() {
                format!("CloudWatch alarm {} changed state.", alarm.label())
            } else {
                format!("CloudWatch alarm {}: {}", alarm.label(), alarm.reason)
            }
        } else {
            summary
        };
        let key = clean_line(&self.dedupe_key.render(lookup));
        let key = bounded_key(if key.is_empty() { &title } else { &key });
        let runbook = self.runbook.as_ref().map(|r| RunbookPlan {
            document: r.document.clone(),
            parameters: r
                .parameters
                .iter()
                .map(|(k, values)| {
                    let rendered = values
                        .iter()
                        .map(|t| {
                            // Alarm values are escaped so the second pass (incident
                            // placeholders) leaves them as they are.
                            t.render(|name| {
                                if RUNBOOK_PLACEHOLDERS.contains(&name) {
                                    Some(format!("{{{name}}}"))
                                } else {
                                    alarm_value(name, alarm, ctx).map(|v| escape_braces(&v))
                                }
                            })
                        })
                        .collect();
                    (k.clone(), rendered)
                })
                .collect(),
        });
        Classification {
            rule: rule.to_string(),
            impact: self.impact,
            title,
            summary,
            key,
            category: self.category.clone(),
            next_steps: self
                .next_steps
                .iter()
                .map(|t| t.render(lookup))
                .filter(|s| !s.trim().is_empty())
                .collect(),
            runbook,
        }
    }
}

fn alarm_value(name: &str, alarm: &Alarm, ctx: &MatchContext) -> Option<String> {
    if let Some(v) = ctx.captures.get(name) {
        return Some(v.clone());
    }
    let v = match name {
        "AlarmName" => alarm.name.clone(),
        "AlarmLabel" => alarm.label(),
        "Contributor" => alarm
            .contributor
            .as_ref()
            .map(|c| c.describe())
            .unwrap_or_default(),
        "ContributorId" => alarm
            .contributor
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        "AlarmArn" => alarm.arn.clone(),
        "AlarmDescription" => alarm.description.clone().unwrap_or_default(),
        "AlarmReason" => alarm.reason.clone(),
        "Account" => alarm.account.clone(),
        "Region" => alarm.region.clone(),
        "Namespace" => ctx
            .metric
            .as_ref()
            .map(|m| m.namespace.clone())
            .unwrap_or_default(),
        "MetricName" => ctx
            .metric
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        "Statistic" => ctx.statistic.unwrap_or_default().to_string(),
        dim => {
            return ctx
                .metric
                .as_ref()
                .and_then(|m| m.dimensions.get(dim).cloned())
                .or_else(|| alarm.dimension(dim).map(str::to_string))
        }
    };
    Some(v)
}

/// One line, trimmed: titles and keys never carry newlines from descriptions.
fn clean_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Cuts a key to [`KEY_MAX`] characters, ending with a hash of the whole key when cut.
pub fn bounded_key(key: &str) -> String {
    if key.chars().count() <= KEY_MAX {
        key.to_string()
    } else {
        let prefix: String = key.chars().take(KEY_MAX - 33).collect();
        format!("{prefix}#{:032x}", stable_hash(&[key]))
    }
}

// ---------------------------------------------------------------------------
// Validation.

fn validate_rule(
    at: &str,
    name: String,
    r: RuleJson,
    runbook_document: Option<&str>,
) -> Result<Rule, RulesError> {
    let outcome_json = r.outcome();
    let m = r.matcher;
    let alarm_name = match &m.alarm_name {
        None => None,
        Some(p) => Some(Regex::new(p).map_err(|e| {
            RulesError(format!(
                "{at}: match.alarmName {p:?} is not a valid regex: {e}"
            ))
        })?),
    };
    let mut dimensions = BTreeMap::new();
    for (k, v) in &m.dimensions {
        if k.trim().is_empty() {
            return Err(RulesError(format!(
                "{at}: match.dimensions has an empty dimension name"
            )));
        }
        let d = if v == "*" {
            DimensionMatch::Present
        } else {
            DimensionMatch::Exact(v.clone())
        };
        dimensions.insert(k.clone(), d);
    }
    for (field, value) in [
        ("namespace", &m.namespace),
        ("metric", &m.metric),
        ("statistic", &m.statistic),
    ] {
        if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
            return Err(RulesError(format!(
                "{at}: match.{field} is empty; leave it out to match any"
            )));
        }
    }
    let matcher = Matcher {
        alarm_name,
        namespace: m.namespace,
        metric: m.metric,
        statistic: m.statistic,
        dimensions,
    };
    // Placeholders a template may use beyond the built-in ones: the dimensions the
    // match requires (so they are always present) and named groups of alarmName.
    let mut extra: BTreeSet<String> = matcher.dimensions.keys().cloned().collect();
    if let Some(re) = &matcher.alarm_name {
        extra.extend(re.capture_names().flatten().map(str::to_string));
    }
    if outcome_json.impact.is_none() {
        return Err(RulesError(format!(
            "{at}: impact is missing (1 critical to 5 no impact)"
        )));
    }
    if outcome_json.title.is_none() {
        return Err(RulesError(format!("{at}: title is missing")));
    }
    let outcome = validate_outcome(at, &extra, outcome_json, runbook_document, None)?;
    Ok(Rule {
        name,
        matcher,
        outcome,
    })
}

fn validate_outcome(
    at: &str,
    extra: &BTreeSet<String>,
    o: OutcomeJson,
    runbook_document: Option<&str>,
    base: Option<&Outcome>,
) -> Result<Outcome, RulesError> {
    let template = |field: &str, text: &str, runbook: bool| -> Result<Template, RulesError> {
        let t = Template::parse(text).map_err(|e| RulesError(format!("{at}: {field}: {e}")))?;
        for p in t.placeholders() {
            let known = ALARM_PLACEHOLDERS.contains(&p)
                || extra.contains(p)
                || (runbook && RUNBOOK_PLACEHOLDERS.contains(&p));
            if !known {
                let mut allowed: Vec<&str> = ALARM_PLACEHOLDERS.to_vec();
                allowed.extend(extra.iter().map(String::as_str));
                if runbook {
                    allowed.extend(RUNBOOK_PLACEHOLDERS);
                }
                return Err(RulesError(format!(
                    "{at}: {field} uses {{{p}}}, which is neither a built-in placeholder nor a dimension \
                     required by match.dimensions nor a named group of match.alarmName (add \"{p}\": \"*\" \
                     to match.dimensions if it is a dimension); allowed here: {}",
                    allowed.join(", ")
                )));
            }
        }
        Ok(t)
    };
    let impact = match (o.impact, base) {
        (Some(v), _) => Impact::new(v).ok_or_else(|| {
            RulesError(format!(
                "{at}: impact must be 1 (critical) to 5 (no impact), got {v}"
            ))
        })?,
        (None, Some(b)) => b.impact,
        (None, None) => Impact::MEDIUM,
    };
    let title = match (&o.title, base) {
        (Some(t), _) => template("title", t, false)?,
        (None, Some(b)) => b.title.clone(),
        (None, None) => template("title", "{AlarmName}", false)?,
    };
    let summary = match (&o.summary, base) {
        (Some(t), _) => template("summary", t, false)?,
        (None, Some(b)) => b.summary.clone(),
        (None, None) => template("summary", "{AlarmDescription}", false)?,
    };
    let dedupe_key = match (&o.dedupe_key, o.title.is_some(), base) {
        (Some(t), _, _) => template("dedupeKey", t, false)?,
        // The key follows the title unless given: an incident per distinct title.
        (None, true, _) | (None, false, None) => title.clone(),
        (None, false, Some(b)) => b.dedupe_key.clone(),
    };
    if let Some(c) = &o.category {
        if !CATEGORIES.contains(&c.as_str()) {
            return Err(RulesError(format!(
                "{at}: category {c:?} is not an OpsCenter category ({})",
                CATEGORIES.join(", ")
            )));
        }
    }
    let next_steps = o
        .next_steps
        .iter()
        .enumerate()
        .map(|(i, s)| template(&format!("nextSteps[{i}]"), s, false))
        .collect::<Result<Vec<_>, _>>()?;
    let runbook = match o.runbook {
        None => None,
        Some(r) => {
            let document = match (r.document, runbook_document) {
                (Some(d), _) if !d.trim().is_empty() => d,
                (_, Some(d)) => d.to_string(),
                _ => {
                    return Err(RulesError(format!(
                        "{at}: runbook.document is missing and RUNBOOK_DOCUMENT_NAME is not set"
                    )))
                }
            };
            let mut parameters = BTreeMap::new();
            for (k, v) in r.parameters {
                let values = match v {
                    ParamJson::One(s) => vec![s],
                    ParamJson::Many(l) => l,
                };
                let templates = values
                    .iter()
                    .map(|s| template(&format!("runbook.parameters.{k}"), s, true))
                    .collect::<Result<Vec<_>, _>>()?;
                parameters.insert(k, templates);
            }
            Some(RunbookTemplate {
                document,
                parameters,
            })
        }
    };
    Ok(Outcome {
        impact,
        title,
        summary,
        dedupe_key,
        category: o.category,
        next_steps,
        runbook,
    })
}

// ---------------------------------------------------------------------------
// Built-in rules (the article's VPN incident, corrected for both-tunnel outages).

fn builtin_rules(runbook_document: Option<&str>) -> Vec<Rule> {
    let vpn_runbook = runbook_document.map(|d| {
        serde_json::json!({
            "document": d,
            "parameters": {
                "VpnConnectionId": "{VpnId}",
                "OpsItemId": "{OpsItemId}",
                "IncidentRecordArn": "{IncidentRecordArn}",
                "AutomationAssumeRole": "{AutomationAssumeRole}"
            }
        })
    });
    let both_summary =
        "Both tunnels of VPN connection {VpnId} are down: the remote site is unreachable.";
    let one_summary = "The VPN connection to the remote site is not working.";
    let vpn =
        |name: &str, matcher: serde_json::Value, impact: u8, summary: &str, with_runbook: bool| {
            let mut rule = serde_json::json!({
                "name": name,
                "match": matcher,
                "impact": impact,
                "title": VPN_TITLE,
                "summary": summary,
                "dedupeKey": VPN_TITLE,
                "category": "Availability",
                "nextSteps": VPN_NEXT_STEPS,
            });
            if with_runbook {
                if let (Some(rb), Some(obj)) = (&vpn_runbook, rule.as_object_mut()) {
                    obj.insert("runbook".into(), rb.clone());
                }
            }
            rule
        };
    let doc = serde_json::json!([
        // The template's "both tunnels down" alarm, recognized by name...
        vpn(
            "vpn-both-tunnels-down",
            serde_json::json!({"alarmName": "(?i)both[-_ ]?tunnels?[-_ ]?down", "namespace": "AWS/VPN",
                               "metric": "TunnelState", "dimensions": {"VpnId": "*"}}),
            1, both_summary, true
        ),
        // ... or by what it measures: Maximum of TunnelState over VpnId is 0 only
        // when every tunnel is down.
        vpn(
            "vpn-all-tunnels-down",
            serde_json::json!({"namespace": "AWS/VPN", "metric": "TunnelState", "statistic": "Maximum",
                               "dimensions": {"VpnId": "*"}}),
            1, both_summary, true
        ),
        // The article's alarm: any tunnel of the connection down.
        vpn(
            "vpn-tunnel-down",
            serde_json::json!({"namespace": "AWS/VPN", "metric": "TunnelState", "dimensions": {"VpnId": "*"}}),
            3, one_summary, true
        ),
        // One tunnel watched by its outside IP: the event does not name the connection.
        {
            "name": "vpn-tunnel-ip-down",
            "match": {"namespace": "AWS/VPN", "metric": "TunnelState", "dimensions": {"TunnelIpAddress": "*"}},
            "impact": 3,
            "title": "VPN tunnel {TunnelIpAddress} is DOWN",
            "summary": "The VPN tunnel with outside IP {TunnelIpAddress} is down.",
            "category": "Availability",
            "nextSteps": VPN_NEXT_STEPS,
        }
    ]);
    // The built-in document is ours and valid; a failure here is a bug caught by tests.
    match Rules::from_json(
        &serde_json::json!({"rules": doc, "builtins": false}).to_string(),
        runbook_document,
    ) {
        Ok(r) => r.rules,
        Err(e) => {
            tracing::error!(error = %e, "built-in classification rules are invalid");
            vec![]
        }
    }
}

fn builtin_default() -> Outcome {
    Outcome {
        impact: Impact::MEDIUM,
        // The label: one incident per time series of a multi-time-series alarm.
        title: Template {
            parts: vec![
                Part::Text("CloudWatch alarm ".into()),
                Part::Var("AlarmLabel".into()),
            ],
        },
        summary: Template {
            parts: vec![Part::Var("AlarmDescription".into())],
        },
        dedupe_key: Template {
            parts: vec![
                Part::Text("CloudWatch alarm ".into()),
                Part::Var("AlarmLabel".into()),
            ],
        },
        category: None,
        next_steps: vec![Template {
            parts: vec![Part::Text(
                "Open the alarm in the CloudWatch console and check the metric it watches".into(),
            )],
        }],
        runbook: None,
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (impact {}, rule {})",
            truncate(&self.key, 120),
            self.impact.value(),
            self.rule
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::normalize_str;

    fn alarm_from(event: serde_json::Value) -> Alarm {
        normalize_str(&event.to_string()).unwrap().remove(0)
    }

    fn vpn_alarm(name: &str, statistic: &str, dims: serde_json::Value) -> Alarm {
        alarm_from(serde_json::json!({
            "AlarmName": name,
            "AlarmDescription": null,
            "AlarmArn": format!("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{name}"),
            "NewStateValue": "ALARM",
            "NewStateReason": "Threshold Crossed",
            "StateChangeTime": "2026-11-25T10:01:00.490+0000",
            "Trigger": {"MetricName": "TunnelState", "Namespace": "AWS/VPN", "Statistic": statistic,
                        "Dimensions": dims, "Period": 60, "Threshold": 1.0}
        }))
    }

    fn composite() -> Alarm {
        alarm_from(serde_json::json!({
            "AlarmName": "network-edge-degraded",
            "AlarmDescription": "",
            "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:network-edge-degraded",
            "NewStateValue": "ALARM",
            "NewStateReason": "child went to ALARM",
            "StateChangeTime": "2026-11-25T10:03:46.138+0000",
            "AlarmRule": "ALARM(a) OR ALARM(b)"
        }))
    }

    const VPN: &str = "vpn-0f1e2d3c4b5a69788";

    #[test]
    fn builtin_any_tunnel_alarm_reproduces_article() {
        let rules = Rules::builtin(Some("VpnDiagnosis"));
        let a = vpn_alarm(
            "vpn-tunnel-down-x",
            "MINIMUM",
            serde_json::json!([{"name": "VpnId", "value": VPN}]),
        );
        let c = rules.classify(&a);
        assert_eq!(c.rule, "vpn-tunnel-down");
        assert_eq!(c.impact, Impact::MEDIUM);
        assert_eq!(c.title, format!("VPN connection {VPN} is DOWN"));
        assert_eq!(c.key, c.title);
        assert_eq!(
            c.summary,
            "The VPN connection to the remote site is not working."
        );
        assert_eq!(c.category.as_deref(), Some("Availability"));
        let rb = c.runbook.unwrap();
        assert_eq!(rb.document, "VpnDiagnosis");
        assert_eq!(rb.parameters["VpnConnectionId"], vec![VPN.to_string()]);
        assert_eq!(rb.parameters["OpsItemId"], vec!["{OpsItemId}".to_string()]);
    }

    #[test]
    fn builtin_both_tunnels_alarm_is_critical_on_same_key() {
        let rules = Rules::builtin(None);
        let by_stat = vpn_alarm(
            "edge-alarm",
            "Maximum",
            serde_json::json!([{"name": "VpnId", "value": VPN}]),
        );
        let by_name = vpn_alarm(
            "stack-vpn-1-both-tunnels-down",
            "Average",
            serde_json::json!([{"name": "VpnId", "value": VPN}]),
        );
        let any = vpn_alarm(
            "stack-vpn-1-tunnel-down",
            "Minimum",
            serde_json::json!([{"name": "VpnId", "value": VPN}]),
        );
        let (s, n, a) = (
            rules.classify(&by_stat),
            rules.classify(&by_name),
            rules.classify(&any),
        );
        assert_eq!(
            (s.impact, n.impact, a.impact),
            (Impact::CRITICAL, Impact::CRITICAL, Impact::MEDIUM)
        );
        assert_eq!(s.rule, "vpn-all-tunnels-down");
        assert_eq!(n.rule, "vpn-both-tunnels-down");
        assert_eq!(s.key, a.key);
        assert_eq!(n.key, a.key);
        assert!(s
            .summary
            .starts_with("Both tunnels of VPN connection vpn-0f1e2d3c4b5a69788 are down"));
        // No runbook document configured: no runbook.
        assert_eq!(s.runbook, None);
    }

    #[test]
    fn builtin_tunnel_ip_alarm_has_its_own_key() {
        let rules = Rules::builtin(Some("VpnDiagnosis"));
        let a = vpn_alarm(
            "vpn tunnel 203.0.113.10 (site A) down",
            "MINIMUM",
            serde_json::json!([{"name": "TunnelIpAddress", "value": "203.0.113.10"}]),
        );
        let c = rules.classify(&a);
        assert_eq!(c.rule, "vpn-tunnel-ip-down");
        assert_eq!(c.key, "VPN tunnel 203.0.113.10 is DOWN");
        assert_eq!(c.runbook, None);
    }

    #[test]
    fn unmatched_alarm_gets_default_incident() {
        let rules = Rules::builtin(Some("VpnDiagnosis"));
        let c = rules.classify(&composite());
        assert_eq!(c.rule, "default");
        assert_eq!(c.impact, Impact::MEDIUM);
        assert_eq!(c.title, "CloudWatch alarm network-edge-degraded");
        assert_eq!(c.key, "CloudWatch alarm network-edge-degraded");
        // Empty description: the summary falls back to the reason.
        assert_eq!(
            c.summary,
            "CloudWatch alarm network-edge-degraded: child went to ALARM"
        );
        assert_eq!(c.runbook, None);
    }

    #[test]
    fn configured_rule_matches_before_builtins_with_dimension_and_capture_placeholders() {
        let doc = r#"{"rules": [{
            "name": "site-vpn",
            "match": {"alarmName": "^(?P<Site>[a-z]+)-", "namespace": "AWS/VPN", "dimensions": {"VpnId": "*"}},
            "impact": 2,
            "title": "Site {Site}: VPN {VpnId} down",
            "summary": "{AlarmName} / {Statistic} / {{literal}}",
            "dedupeKey": "site-{Site}",
            "nextSteps": ["Call the {Site} office"],
            "runbook": {"document": "SiteRunbook", "parameters": {"Vpn": "{VpnId}", "Role": "{AutomationAssumeRole}", "Item": "{OpsItemId}"}}
        }]}"#;
        let rules = Rules::from_json(doc, Some("VpnDiagnosis")).unwrap();
        let a = vpn_alarm(
            "paris-vpn",
            "Minimum",
            serde_json::json!([{"name": "VpnId", "value": VPN}]),
        );
        let c = rules.classify(&a);
        assert_eq!(c.rule, "site-vpn");
        assert_eq!(c.impact, Impact::HIGH);
        assert_eq!(c.title, format!("Site paris: VPN {VPN} down"));
        assert_eq!(c.summary, "paris-vpn / Minimum / {literal}");
        assert_eq!(c.key, "site-paris");
        assert_eq!(c.next_steps, vec!["Call the paris office".to_string()]);
        let plan = c.runbook.unwrap();
        let req = plan.request(
            &IncidentRef::OpsCenter("oi-0123456789ab".into()),
            None,
            "seed",
        );
        assert_eq!(req.document, "SiteRunbook");
        assert_eq!(req.parameters["Vpn"], vec![VPN.to_string()]);
        assert_eq!(req.parameters["Item"], vec!["oi-0123456789ab".to_string()]);
        // No role configured: the parameter is left out.
        assert!(!req.parameters.contains_key("Role"));
        assert_eq!(req.client_token, "seed");
        // Builtins still follow.
        let other = vpn_alarm(
            "TUNNEL1",
            "Minimum",
            serde_json::json!([{"name": "VpnId", "value": VPN}]),
        );
        assert_eq!(rules.classify(&other).rule, "vpn-tunnel-down");
        assert_eq!(rules.names()[0], "site-vpn");
    }

    #[test]
    fn runbook_request_fills_incident_placeholders_per_backend() {
        let rules = Rules::builtin(Some("VpnDiagnosis"));
        let a = vpn_alarm(
            "vpn-tunnel-down-x",
            "Minimum",
            serde_json::json!([{"name": "VpnId", "value": VPN}]),
        );
        let plan = rules.classify(&a).runbook.unwrap();
        let role = "arn:aws:iam::123456789012:role/automation";
        let ops = plan.request(
            &IncidentRef::OpsCenter("oi-0123456789ab".into()),
            Some(role),
            "t",
        );
        assert_eq!(
            ops.parameters,
            [
                ("AutomationAssumeRole".to_string(), vec![role.to_string()]),
                ("OpsItemId".to_string(), vec!["oi-0123456789ab".to_string()]),
                ("VpnConnectionId".to_string(), vec![VPN.to_string()]),
            ]
            .into()
        );
        let arn = "arn:aws:ssm-incidents::123456789012:incident-record/p/1";
        let im = plan.request(&IncidentRef::IncidentManager(arn.into()), None, "t");
        assert_eq!(im.parameters["IncidentRecordArn"], vec![arn.to_string()]);
        assert!(!im.parameters.contains_key("OpsItemId"));
    }

    #[test]
    fn alarm_values_with_braces_survive_runbook_rendering() {
        let doc = r#"[{"match": {"alarmName": "."}, "impact": 4, "title": "x",
                      "runbook": {"document": "D", "parameters": {"Name": "{AlarmName}"}}}]"#;
        let rules = Rules::from_json(doc, None).unwrap();
        let a = vpn_alarm("odd {OpsItemId} name", "Minimum", serde_json::json!([]));
        let plan = rules.classify(&a).runbook.unwrap();
        let req = plan.request(&IncidentRef::OpsCenter("oi-0123456789ab".into()), None, "t");
        assert_eq!(
            req.parameters["Name"],
            vec!["odd {OpsItemId} name".to_string()]
        );
    }

    #[test]
    fn default_can_be_configured_and_builtins_disabled() {
        let doc = r#"{"default": {"impact": 4, "title": "Alarm {AlarmName} in {Region}"}, "builtins": false}"#;
        let rules = Rules::from_json(doc, None).unwrap();
        let a = vpn_alarm(
            "vpn-tunnel-down-x",
            "Minimum",
            serde_json::json!([{"name": "VpnId", "value": VPN}]),
        );
        let c = rules.classify(&a);
        assert_eq!(c.rule, "default");
        assert_eq!(c.impact, Impact::LOW);
        assert_eq!(c.title, "Alarm vpn-tunnel-down-x in eu-west-1");
        assert_eq!(c.key, c.title);
        assert!(rules.names().is_empty());
    }

    #[test]
    fn metric_math_alarm_matches_on_any_query_metric() {
        let doc = r#"[{"name": "egress", "match": {"namespace": "AWS/VPN", "metric": "TunnelDataOut",
                       "statistic": "sum", "dimensions": {"TunnelIpAddress": "203.0.113.74"}},
                       "impact": 4, "title": "Egress via {TunnelIpAddress}"}]"#;
        let rules = Rules::from_json(doc, None).unwrap();
        let a = alarm_from(serde_json::json!({
            "version": "0", "id": "1", "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
            "account": "123456789012", "time": "2026-11-25T09:51:19Z", "region": "eu-west-1",
            "resources": ["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-egress-bytes-drop"],
            "detail": {"alarmName": "vpn-egress-bytes-drop",
                "state": {"value": "ALARM", "reason": "r", "timestamp": "2026-11-25T09:51:19.441+0000"},
                "configuration": {"metrics": [
                    {"id": "e1", "expression": "m1+m2", "returnData": true},
                    {"id": "m1", "metricStat": {"metric": {"namespace": "AWS/VPN", "name": "TunnelDataOut",
                        "dimensions": {"TunnelIpAddress": "203.0.113.10"}}, "period": 300, "stat": "Sum"}, "returnData": false},
                    {"id": "m2", "metricStat": {"metric": {"namespace": "AWS/VPN", "name": "TunnelDataOut",
                        "dimensions": {"TunnelIpAddress": "203.0.113.74"}}, "period": 300, "stat": "Sum"}, "returnData": false}
                ]}}
        }));
        let c = rules.classify(&a);
        assert_eq!(c.rule, "egress");
        assert_eq!(c.title, "Egress via 203.0.113.74");
    }

    #[test]
    fn composite_alarm_never_matches_metric_rules() {
        let doc = r#"[{"match": {"namespace": "AWS/VPN"}, "impact": 1, "title": "vpn"}]"#;
        let rules = Rules::from_json(doc, None).unwrap();
        assert_eq!(rules.classify(&composite()).rule, "default");
    }

    #[test]
    fn long_keys_are_bounded_with_hash() {
        let k = "k".repeat(1000);
        let b = bounded_key(&k);
        assert_eq!(b.chars().count(), KEY_MAX);
        assert_ne!(b, bounded_key(&format!("{k}!")));
        assert_eq!(bounded_key("short"), "short");
    }

    fn err(doc: &str) -> String {
        Rules::from_json(doc, None).unwrap_err().to_string()
    }

    #[test]
    fn validation_errors_name_rule_and_field() {
        assert!(err("{").starts_with("classification rules: not a valid rules document"));
        assert!(err(r#"[{"impact": 3}]"#).contains("rules[0] (rule-1): title is missing"));
        assert!(err(r#"[{"title": "x"}]"#).contains("rules[0] (rule-1): impact is missing"));
        assert!(err(r#"[{"name": "a", "impact": 9, "title": "x"}]"#)
            .contains("rules[0] (a): impact must be 1 (critical) to 5"));
        let e = err(r#"[{"name": "a", "impact": 3, "title": "VPN {VpnId}"}]"#);
        assert!(e.contains("rules[0] (a): title uses {VpnId}"), "{e}");
        assert!(
            e.contains("add \"VpnId\": \"*\" to match.dimensions"),
            "{e}"
        );
        let e = err(r#"[{"name": "a", "match": {"alarmName": "("}, "impact": 3, "title": "x"}]"#);
        assert!(
            e.contains("match.alarmName \"(\" is not a valid regex"),
            "{e}"
        );
        let e = err(r#"[{"name": "a", "impact": 3, "title": "x {"}]"#);
        assert!(e.contains("unclosed placeholder"), "{e}");
        let e = err(r#"[{"name": "a", "impact": 3, "title": "x", "category": "Outage"}]"#);
        assert!(
            e.contains("category \"Outage\" is not an OpsCenter category"),
            "{e}"
        );
        let e = err(r#"[{"name": "a", "impact": 3, "title": "x", "runbook": {"parameters": {}}}]"#);
        assert!(
            e.contains("runbook.document is missing and RUNBOOK_DOCUMENT_NAME is not set"),
            "{e}"
        );
        let e = err(
            r#"[{"name": "a", "impact": 3, "title": "x"}, {"name": "a", "impact": 3, "title": "y"}]"#,
        );
        assert!(
            e.contains("rules[1] (a): the name is used by an earlier rule"),
            "{e}"
        );
        let e = err(r#"[{"name": "a", "match": {"alarmname": "x"}, "impact": 3, "title": "x"}]"#);
        assert!(
            e.contains("unknown field `alarmname`") || e.contains("not a valid rules document"),
            "{e}"
        );
        let e = err(r#"[{"name": "a", "impact": 3, "title": "{OpsItemId}"}]"#);
        assert!(e.contains("title uses {OpsItemId}"), "{e}");
    }

    #[test]
    fn template_parse_and_render() {
        let t = Template::parse("a {X} {{b}} {Y}").unwrap();
        assert_eq!(t.placeholders().collect::<Vec<_>>(), vec!["X", "Y"]);
        assert_eq!(
            t.render(|n| (n == "X").then(|| "1".to_string())),
            "a 1 {b} "
        );
        assert!(Template::parse("a }").is_err());
        assert!(Template::parse("{}").is_err());
    }

    #[test]
    fn every_sample_event_shape_classifies() {
        let rules = Rules::builtin(Some("VpnDiagnosis"));
        for a in [
            composite(),
            vpn_alarm("a", "MINIMUM", serde_json::json!([])),
            vpn_alarm(
                "b",
                "MAXIMUM",
                serde_json::json!([{"name": "VpnId", "value": VPN}]),
            ),
        ] {
            let c = rules.classify(&a);
            assert!(
                !c.key.is_empty() && !c.title.is_empty() && !c.summary.is_empty(),
                "{c:?}"
            );
        }
    }
}
