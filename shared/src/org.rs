//! One stack for a whole AWS Organization: which accounts may report alarms, what
//! each account is called and tagged, and how a member account's incidents are kept
//! apart from every other account's.
//!
//! Off unless `ORGANIZATION_ID` is set: a single-account deployment never builds an
//! [`OrgPolicy`], so its keys, records and notifications stay exactly as they were.
//!
//! | variable | meaning |
//! |---|---|
//! | `ORGANIZATION_ID` | `o-...`: turns the organization mode on |
//! | `HOME_ACCOUNT_ID` | the account the stack runs in; its incidents keep their plain keys |
//! | `ALLOWED_ACCOUNTS` | comma-separated member accounts that may report alarms; empty: every account the organization's bus admits |
//! | `ACCOUNT_DIRECTORY` | JSON: account names, OUs and OU-level tags (see [`AccountDirectory`]) |
//!
//! Why the function checks at all, when the central bus's policy already admits only
//! the organization (`aws:PrincipalOrgID`): the function has other doors (direct
//! alarm actions, SNS, a manual invoke, a bus policy widened by mistake), and the
//! event body is only as trustworthy as the path it took. So every alarm is checked
//! again here: its ARN's account must be the account the envelope names, and that
//! account must be allowed. A refused event is logged, counted (an EMF metric line,
//! [`refusal_metric_line`]) and answered without touching any incident.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::alarm::Alarm;
use crate::classify::bounded_key;
use crate::config::{ConfigError, Env};
use crate::text::truncate;

pub const ORGANIZATION_ID_VAR: &str = "ORGANIZATION_ID";
pub const HOME_ACCOUNT_VAR: &str = "HOME_ACCOUNT_ID";
pub const ALLOWED_ACCOUNTS_VAR: &str = "ALLOWED_ACCOUNTS";
pub const ACCOUNT_DIRECTORY_VAR: &str = "ACCOUNT_DIRECTORY";

/// CloudWatch namespace of the pipeline's own metrics (EMF log lines).
pub const METRICS_NAMESPACE: &str = "IncidentPipeline";
/// The metric counting refused events (one per refused alarm).
pub const REFUSED_METRIC: &str = "RefusedEvents";
/// The metric counting member accounts (per region) whose alarms a reconciliation
/// sweep could not read (their alarm-reader role is missing or refuses).
pub const UNREACHABLE_METRIC: &str = "SweepUnreachableAccounts";

/// What the pipeline knows about the account an incident belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// The 12-digit account id.
    pub id: String,
    /// The account's name, when the directory knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The organizational unit (id or name, as the directory gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ou: Option<String>,
    /// OU-level tags merged with the account's own (the account's win): what routing
    /// rules match (`account_tags`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// True for the account the stack runs in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub home: bool,
}

impl AccountInfo {
    /// `111122223333 (payments-prod)`, or the bare id.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} ({n})", self.id),
            None => self.id.clone(),
        }
    }
}

impl fmt::Display for AccountInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Account names, OUs and OU-level tags, from the `ACCOUNT_DIRECTORY` parameter:
///
/// ```json
/// {"accounts": {"111122223333": {"name": "payments-prod", "ou": "payments", "tags": {"env": "prod"}}},
///  "ous": {"payments": {"tags": {"team": "payments"}}}}
/// ```
///
/// Every key is optional. An account's tags are its OU's tags with its own on top.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountDirectory {
    #[serde(default)]
    accounts: BTreeMap<String, AccountEntry>,
    #[serde(default)]
    ous: BTreeMap<String, OuEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    ou: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct OuEntry {
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

impl AccountDirectory {
    /// Parses and checks the directory: account ids are 12 digits, every OU an
    /// account names is described under `ous` (a typo would silently lose its tags).
    pub fn from_json(text: &str) -> Result<AccountDirectory, String> {
        let dir: AccountDirectory = serde_json::from_str(text).map_err(|e| {
            format!("not a valid account directory ({e}); expected {{\"accounts\": {{\"111122223333\": {{\"name\": ..., \"ou\": ..., \"tags\": {{...}}}}}}, \"ous\": {{\"<ou>\": {{\"tags\": {{...}}}}}}}}")
        })?;
        for (id, entry) in &dir.accounts {
            if !is_account_id(id) {
                return Err(format!(
                    "accounts: {:?} is not a 12-digit account id",
                    truncate(id, 40)
                ));
            }
            if let Some(ou) = &entry.ou {
                if !dir.ous.contains_key(ou) {
                    return Err(format!(
                        "accounts.{id}.ou names {ou:?}, which `ous` does not describe (known: {})",
                        dir.ous.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        Ok(dir)
    }

    /// What the directory says about `id` (at least the id itself).
    pub fn lookup(&self, id: &str) -> AccountInfo {
        let mut info = AccountInfo {
            id: id.to_string(),
            ..AccountInfo::default()
        };
        if let Some(entry) = self.accounts.get(id) {
            info.name = entry.name.clone();
            info.ou = entry.ou.clone();
            if let Some(ou) = entry.ou.as_ref().and_then(|o| self.ous.get(o)) {
                info.tags = ou.tags.clone();
            }
            info.tags
                .extend(entry.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        info
    }
}

/// True when the account's tags have every wanted tag: `"*"` wants the tag with any
/// value. What routing rules and Slack action scopes match (`account_tags`); an empty
/// `want` matches every account.
pub fn tags_match(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter()
        .all(|(k, w)| have.get(k).is_some_and(|h| w == "*" || w == h))
}

impl AccountDirectory {
    /// The accounts the directory describes whose tags match `want` (OU tags merged).
    pub fn accounts_tagged(&self, want: &BTreeMap<String, String>) -> BTreeSet<String> {
        self.accounts
            .keys()
            .filter(|id| tags_match(want, &self.lookup(id).tags))
            .cloned()
            .collect()
    }
}

/// `111122223333`: twelve ASCII digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Why an alarm was refused. Not an error of the pipeline: the event is answered
/// (no retry can change it) and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The envelope names one account and the alarm ARN another: forged or mangled.
    #[error("the event says account {event_account} but its alarm ARN belongs to {arn_account}: refused as forged")]
    AccountMismatch {
        event_account: String,
        arn_account: String,
    },
    /// The account is not one of the organization's members allowed to report.
    #[error("account {account} is not a member account allowed to report alarms (ALLOWED_ACCOUNTS of organization {organization}): refused")]
    NotAllowed {
        account: String,
        organization: String,
    },
    /// The account is not a 12-digit id.
    #[error("account {account:?} is not an AWS account id: refused")]
    Malformed { account: String },
    /// The incident under this key belongs to another account.
    #[error("incident {key:?} belongs to account {owner}; an alarm of account {account} may not change it: refused")]
    ForeignIncident {
        key: String,
        owner: String,
        account: String,
    },
}

impl Refusal {
    /// The `Reason` dimension of the refusal metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::AccountMismatch { .. } => "AccountMismatch",
            Refusal::NotAllowed { .. } => "ForeignAccount",
            Refusal::Malformed { .. } => "MalformedAccount",
            Refusal::ForeignIncident { .. } => "ForeignIncident",
        }
    }
}

/// The organization mode's settings, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPolicy {
    pub organization_id: String,
    pub home_account: String,
    /// `None`: every account the organization's bus admits.
    pub allowed: Option<BTreeSet<String>>,
    pub directory: AccountDirectory,
}

impl OrgPolicy {
    /// `None` unless `ORGANIZATION_ID` is set; then every variable is checked.
    pub fn from_env(env: &Env) -> Result<Option<OrgPolicy>, ConfigError> {
        let Some(organization_id) = env.optional(ORGANIZATION_ID_VAR) else {
            return Ok(None);
        };
        if !is_organization_id(&organization_id) {
            return Err(ConfigError::invalid(
                ORGANIZATION_ID_VAR,
                &organization_id,
                "expected an organization id like o-a1b2c3d4e5 (o- and 10 to 32 lowercase letters or digits)",
            ));
        }
        let home_account = env.required(
            HOME_ACCOUNT_VAR,
            "the 12-digit id of the account the stack runs in",
        )?;
        if !is_account_id(&home_account) {
            return Err(ConfigError::invalid(
                HOME_ACCOUNT_VAR,
                &home_account,
                "expected a 12-digit account id",
            ));
        }
        let allowed = match env.optional(ALLOWED_ACCOUNTS_VAR) {
            None => None,
            Some(list) => {
                let mut set = BTreeSet::new();
                for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !is_account_id(id) {
                        return Err(ConfigError::invalid(
                            ALLOWED_ACCOUNTS_VAR,
                            &list,
                            format!("{id:?} is not a 12-digit account id"),
                        ));
                    }
                    set.insert(id.to_string());
                }
                Some(set)
            }
        };
        let directory = match env.optional(ACCOUNT_DIRECTORY_VAR) {
            None => AccountDirectory::default(),
            Some(json) => AccountDirectory::from_json(&json)
                .map_err(|e| ConfigError::invalid(ACCOUNT_DIRECTORY_VAR, &json, e))?,
        };
        Ok(Some(OrgPolicy {
            organization_id,
            home_account,
            allowed,
            directory,
        }))
    }

    /// Checks the alarm's account and describes it, or says why it is refused.
    pub fn admit(&self, alarm: &Alarm) -> Result<AccountInfo, Refusal> {
        let account = alarm.account.as_str();
        if !is_account_id(account) {
            return Err(Refusal::Malformed {
                account: truncate(account, 40),
            });
        }
        let arn_account = alarm.arn.split(':').nth(4).unwrap_or_default();
        if arn_account != account {
            return Err(Refusal::AccountMismatch {
                event_account: account.to_string(),
                arn_account: truncate(arn_account, 40),
            });
        }
        let home = account == self.home_account;
        if !home && self.allowed.as_ref().is_some_and(|a| !a.contains(account)) {
            return Err(Refusal::NotAllowed {
                account: account.to_string(),
                organization: self.organization_id.clone(),
            });
        }
        Ok(self.account(account))
    }

    /// What the directory says about `id`, marked when it is the home account.
    pub fn account(&self, id: &str) -> AccountInfo {
        let mut info = self.directory.lookup(id);
        info.home = id == self.home_account;
        info
    }

    /// The incident key of an alarm of `account` whose rules gave `key`: a member
    /// account's keys start with its id, so no rule (a dedupe key template without
    /// `{Account}`) can merge two accounts' incidents, and one member's alarms can
    /// never change another's incident. The home account keeps its plain keys.
    pub fn incident_key(&self, account: &str, key: &str) -> String {
        if account == self.home_account || key.starts_with(&format!("{account}/")) {
            key.to_string()
        } else {
            bounded_key(&format!("{account}/{key}"))
        }
    }

    /// Refuses a change to an incident that another account owns (`owner` is the
    /// account recorded on the incident; empty for records older than this check).
    pub fn check_owner(&self, key: &str, owner: &str, account: &str) -> Result<(), Refusal> {
        if owner.is_empty() || owner == account {
            Ok(())
        } else {
            Err(Refusal::ForeignIncident {
                key: truncate(key, 120),
                owner: owner.to_string(),
                account: account.to_string(),
            })
        }
    }
}

/// `o-` and 10 to 32 lowercase letters or digits (the Organizations id pattern).
pub fn is_organization_id(s: &str) -> bool {
    s.strip_prefix("o-").is_some_and(|rest| {
        (10..=32).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// The account of an incident key made by [`OrgPolicy::incident_key`], if it has one.
pub fn key_account(key: &str) -> Option<&str> {
    key.split_once('/')
        .map(|(a, _)| a)
        .filter(|a| is_account_id(a))
}

/// One CloudWatch embedded-metric-format line counting a refused event: the metric
/// `RefusedEvents` in [`METRICS_NAMESPACE`], by function and by function and reason
/// (the template's alarm watches the first). Lambda sends stdout to CloudWatch Logs,
/// which turns the line into the metric; `account` and `alarm` ride along as
/// properties for Logs Insights.
pub fn refusal_metric_line(
    function: &str,
    refusal: &Refusal,
    account: &str,
    alarm: &str,
    at_millis: i64,
) -> String {
    emf_line(
        at_millis,
        REFUSED_METRIC,
        &[&["FunctionName"], &["FunctionName", "Reason"]],
        serde_json::json!({
            "FunctionName": function,
            "Reason": refusal.reason(),
            "account": truncate(account, 40),
            "alarm": truncate(alarm, 255),
            "message": refusal.to_string(),
        }),
    )
}

/// One CloudWatch embedded-metric-format line counting a member account (in one
/// region) whose alarms the sweep could not read: [`UNREACHABLE_METRIC`] by function;
/// the account, region and error code ride along for Logs Insights.
pub fn unreachable_metric_line(
    function: &str,
    account: &str,
    region: &str,
    code: &str,
    at_millis: i64,
) -> String {
    let (account, region, code) = (
        truncate(account, 40),
        truncate(region, 40),
        truncate(code, 80),
    );
    emf_line(
        at_millis,
        UNREACHABLE_METRIC,
        &[&["FunctionName"]],
        serde_json::json!({
            "FunctionName": function,
            "message": format!("the sweep could not read the alarms of account {account} in {region}: {code}"),
            "account": account,
            "region": region,
            "code": code,
        }),
    )
}

/// One EMF line: `metric` = 1 (a count) in [`METRICS_NAMESPACE`] by `dimensions`, with
/// `members` (the dimensions' values and properties) at the top level, as EMF requires.
fn emf_line(
    at_millis: i64,
    metric: &str,
    dimensions: &[&[&str]],
    members: serde_json::Value,
) -> String {
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": at_millis,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": dimensions,
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }],
        },
        metric: 1,
    });
    if let (Some(out), serde_json::Value::Object(members)) = (line.as_object_mut(), members) {
        out.extend(members);
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::normalize;

    const ORG: &str = "o-a1b2c3d4e5";
    const HOME: &str = "123456789012";
    const MEMBER_A: &str = "111122223333";
    const MEMBER_B: &str = "444455556666";

    fn policy(allowed: Option<&str>) -> OrgPolicy {
        let mut env = vec![
            (ORGANIZATION_ID_VAR, ORG),
            (HOME_ACCOUNT_VAR, HOME),
            (
                ACCOUNT_DIRECTORY_VAR,
                r#"{"accounts": {"111122223333": {"name": "payments-prod", "ou": "payments", "tags": {"env": "prod"}},
                                  "444455556666": {"name": "retail-prod", "ou": "retail"}},
                     "ous": {"payments": {"tags": {"team": "payments", "env": "any"}}, "retail": {"tags": {"team": "retail"}}}}"#,
            ),
        ];
        if let Some(a) = allowed {
            env.push((ALLOWED_ACCOUNTS_VAR, a));
        }
        OrgPolicy::from_env(&Env::from_pairs(env)).unwrap().unwrap()
    }

    /// The sample EventBridge alarm, moved to `account` (envelope) and `arn_account`.
    fn alarm(account: &str, arn_account: &str) -> Alarm {
        let mut event: serde_json::Value = serde_json::from_str(include_str!(
            "../../events/eventbridge-vpn-tunnel-down-alarm.json"
        ))
        .unwrap();
        let arn = event["resources"][0].as_str().unwrap().to_string();
        let mut parts: Vec<&str> = arn.split(':').collect();
        parts[4] = arn_account;
        event["resources"][0] = parts.join(":").into();
        event["account"] = account.into();
        normalize(&event).unwrap().remove(0)
    }

    #[test]
    fn from_env_is_off_without_organization_id() {
        assert_eq!(OrgPolicy::from_env(&Env::default()).unwrap(), None);
        assert_eq!(
            OrgPolicy::from_env(&Env::from_pairs([(HOME_ACCOUNT_VAR, HOME)])).unwrap(),
            None
        );
    }

    #[test]
    fn from_env_names_each_bad_variable() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![(ORGANIZATION_ID_VAR, "org-1")],
                "ORGANIZATION_ID=\"org-1\" is invalid",
            ),
            (
                vec![(ORGANIZATION_ID_VAR, ORG)],
                "HOME_ACCOUNT_ID is not set",
            ),
            (
                vec![(ORGANIZATION_ID_VAR, ORG), (HOME_ACCOUNT_VAR, "12345")],
                "HOME_ACCOUNT_ID=\"12345\" is invalid",
            ),
            (
                vec![
                    (ORGANIZATION_ID_VAR, ORG),
                    (HOME_ACCOUNT_VAR, HOME),
                    (ALLOWED_ACCOUNTS_VAR, "111122223333, abc"),
                ],
                "\"abc\" is not a 12-digit account id",
            ),
            (
                vec![
                    (ORGANIZATION_ID_VAR, ORG),
                    (HOME_ACCOUNT_VAR, HOME),
                    (ACCOUNT_DIRECTORY_VAR, r#"{"accounts": {"1": {}}}"#),
                ],
                "\"1\" is not a 12-digit account id",
            ),
            (
                vec![
                    (ORGANIZATION_ID_VAR, ORG),
                    (HOME_ACCOUNT_VAR, HOME),
                    (
                        ACCOUNT_DIRECTORY_VAR,
                        r#"{"accounts": {"111122223333": {"ou": "paymnts"}}, "ous": {"payments": {}}}"#,
                    ),
                ],
                "names \"paymnts\", which `ous` does not describe (known: payments)",
            ),
            (
                vec![
                    (ORGANIZATION_ID_VAR, ORG),
                    (HOME_ACCOUNT_VAR, HOME),
                    (ACCOUNT_DIRECTORY_VAR, r#"{"acounts": {}}"#),
                ],
                "unknown field `acounts`",
            ),
        ];
        for (env, want) in cases {
            let err = OrgPolicy::from_env(&Env::from_pairs(env))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want:?} not in {err}");
        }
    }

    #[test]
    fn directory_merges_ou_tags_under_account_tags() {
        let p = policy(None);
        let a = p.directory.lookup(MEMBER_A);
        assert_eq!(a.name.as_deref(), Some("payments-prod"));
        assert_eq!(a.ou.as_deref(), Some("payments"));
        assert_eq!(
            a.tags,
            BTreeMap::from([
                ("env".into(), "prod".into()),
                ("team".into(), "payments".into())
            ])
        );
        assert_eq!(a.label(), "111122223333 (payments-prod)");
        let unknown = p.directory.lookup("999988887777");
        assert_eq!(unknown.label(), "999988887777");
        assert!(unknown.tags.is_empty());
    }

    #[test]
    fn admit_member_and_home_accounts() {
        let p = policy(Some("111122223333,444455556666"));
        let a = p.admit(&alarm(MEMBER_A, MEMBER_A)).unwrap();
        assert_eq!((a.id.as_str(), a.home), (MEMBER_A, false));
        assert_eq!(a.tags["team"], "payments");
        let home = p.admit(&alarm(HOME, HOME)).unwrap();
        assert!(home.home, "the home account is always admitted");
    }

    #[test]
    fn admit_refuses_a_foreign_account_and_counts_it_as_such() {
        let p = policy(Some("111122223333,444455556666"));
        let r = p.admit(&alarm("999988887777", "999988887777")).unwrap_err();
        assert_eq!(r.reason(), "ForeignAccount");
        assert_eq!(
            r.to_string(),
            "account 999988887777 is not a member account allowed to report alarms (ALLOWED_ACCOUNTS of organization o-a1b2c3d4e5): refused"
        );
        // Without an allow-list, the organization's bus policy is the gate.
        assert!(policy(None)
            .admit(&alarm("999988887777", "999988887777"))
            .is_ok());
    }

    #[test]
    fn admit_refuses_a_forged_account_whatever_the_allow_list() {
        for p in [policy(None), policy(Some(MEMBER_A))] {
            // A member claiming another member's alarm, and a member's alarm under the
            // home account's name.
            for (envelope, arn) in [(MEMBER_A, MEMBER_B), (HOME, MEMBER_A)] {
                let r = p.admit(&alarm(envelope, arn)).unwrap_err();
                assert_eq!(r.reason(), "AccountMismatch");
                assert!(
                    r.to_string().contains(&format!(
                        "says account {envelope} but its alarm ARN belongs to {arn}"
                    )),
                    "{r}"
                );
            }
            let r = p.admit(&alarm("12345", "12345")).unwrap_err();
            assert_eq!(r.reason(), "MalformedAccount");
        }
    }

    #[test]
    fn member_keys_carry_the_account_and_home_keys_stay_plain() {
        let p = policy(None);
        let key = "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN";
        assert_eq!(p.incident_key(HOME, key), key);
        let member = p.incident_key(MEMBER_A, key);
        assert_eq!(member, format!("111122223333/{key}"));
        assert_eq!(p.incident_key(MEMBER_A, &member), member, "idempotent");
        assert_eq!(key_account(&member), Some(MEMBER_A));
        assert_eq!(key_account(key), None);
        assert_ne!(p.incident_key(MEMBER_B, key), member);
        let long = "k".repeat(500);
        assert!(p.incident_key(MEMBER_A, &long).chars().count() <= crate::classify::KEY_MAX);
    }

    #[test]
    fn check_owner_refuses_another_accounts_incident() {
        let p = policy(None);
        assert!(p.check_owner("k", "", MEMBER_A).is_ok());
        assert!(p.check_owner("k", MEMBER_A, MEMBER_A).is_ok());
        let r = p.check_owner("k", MEMBER_A, MEMBER_B).unwrap_err();
        assert_eq!(r.reason(), "ForeignIncident");
    }

    #[test]
    fn refusal_metric_line_is_embedded_metric_format() {
        let r = Refusal::NotAllowed {
            account: "999988887777".into(),
            organization: ORG.into(),
        };
        let line = refusal_metric_line(
            "stack-alarm-to-incident",
            &r,
            "999988887777",
            "vpn-down",
            1_700_000_000_000,
        );
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], METRICS_NAMESPACE);
        assert_eq!(directive["Metrics"][0]["Name"], REFUSED_METRIC);
        // Every dimension named in the directive is a top-level member (EMF's rule).
        for set in directive["Dimensions"].as_array().unwrap() {
            for d in set.as_array().unwrap() {
                assert!(v[d.as_str().unwrap()].is_string(), "{d}");
            }
        }
        assert_eq!(v[REFUSED_METRIC], 1);
        assert_eq!(v["Reason"], "ForeignAccount");
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }

    #[test]
    fn unreachable_metric_line_is_embedded_metric_format() {
        let line = unreachable_metric_line("f", MEMBER_A, "eu-west-1", "AccessDenied", 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            UNREACHABLE_METRIC
        );
        assert_eq!(v[UNREACHABLE_METRIC], 1);
        assert_eq!(
            (v["FunctionName"].as_str(), v["account"].as_str()),
            (Some("f"), Some(MEMBER_A))
        );
        assert_eq!(v["code"], "AccessDenied");
    }

    #[test]
    fn organization_id_pattern() {
        assert!(is_organization_id("o-a1b2c3d4e5"));
        assert!(!is_organization_id("o-short"));
        assert!(!is_organization_id("o-A1B2C3D4E5"));
        assert!(!is_organization_id("a1b2c3d4e5"));
    }
}
