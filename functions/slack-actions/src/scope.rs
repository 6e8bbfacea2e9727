//! Account scopes (one stack for an organization): which accounts' incidents a person
//! reaches from Slack (`scopes` of the action policy, `shared::slack::authz`), and the
//! checks every action on an existing incident goes through, on the request path (a
//! quick, specific answer) and again in the queue worker (defence in depth: the worker
//! works out the person's scope itself and checks the incident it changes).
//!
//! An incident's account is the one on its record (the alarm's account, or the
//! stack's own for a declared incident; the home account for records older than the
//! account field); its tags are the account directory's as it is now
//! (`ACCOUNT_DIRECTORY`), so moving an account to another team moves its incidents
//! with it. A refusal names the incident the person asked about and says it belongs
//! to an account outside their scope: never which account, nor anything else of it.

use std::collections::BTreeSet;

use shared::lifecycle::IncidentRecord;
use shared::org::{key_account, AccountInfo, OrgPolicy};
use shared::silence::{Silence, SilenceBook, SilenceTarget};
use shared::slack::authz::{Action, Scope};
use shared::text::truncate;
use tracing::{error, warn};

use crate::config::Config;
use crate::groups::GroupCache;
use crate::incidents::IncidentReader;
use crate::secrets::Credentials;
use crate::slack_web::SlackWeb;

/// The answer when group memberships (or the bot token) cannot be read.
pub const CANNOT_CHECK: &str = "Could not check your permissions right now; try again in a moment.";

/// What the policy says of one person and one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access<'a> {
    /// The action's rule allows the person.
    pub allowed: bool,
    /// The accounts whose incidents the action reaches.
    pub scope: Scope<'a>,
}

/// Reads the person's user groups (only those the policy names for this action, only
/// when membership decides) and evaluates the rule and the scope. `Err`: memberships
/// could not be read (the person is told [`CANNOT_CHECK`]).
pub async fn access<'a>(
    config: &'a Config,
    credentials: &dyn Credentials,
    slack: &dyn SlackWeb,
    groups: &GroupCache,
    user: &str,
    action: Action,
) -> Result<Access<'a>, ()> {
    let policy = &config.policy;
    let to_check = policy.groups_to_check(action, user);
    let mine = if to_check.is_empty() {
        vec![]
    } else {
        let token = credentials.bot_token().await.map_err(|e| {
            error!(error = %e, "bot token unavailable for the user-group check");
        })?;
        groups
            .groups_of(slack, &token, user, &to_check)
            .await
            .map_err(|e| warn!(error = %e, "user-group check failed"))?
    };
    Ok(Access {
        allowed: policy.allows(action, user, &mine),
        scope: policy.scope(action, user, &mine),
    })
}

/// The account `id` (empty: the home account) as the directory describes it now;
/// without organization mode, what the record kept.
fn account(org: Option<&OrgPolicy>, id: &str, kept: Option<&AccountInfo>) -> AccountInfo {
    match org {
        Some(o) if id.is_empty() => o.account(&o.home_account),
        Some(o) => o.account(id),
        None => kept.cloned().unwrap_or_else(|| AccountInfo {
            id: id.to_string(),
            ..AccountInfo::default()
        }),
    }
}

/// The account an incident belongs to.
pub fn incident_account(org: Option<&OrgPolicy>, record: &IncidentRecord) -> AccountInfo {
    account(org, &record.account, record.account_info.as_ref())
}

/// The account of an incident key with no record: a member key's prefix, else home.
pub fn key_owner(org: Option<&OrgPolicy>, key: &str) -> AccountInfo {
    account(org, key_account(key).unwrap_or_default(), None)
}

/// The refusal for an incident outside the person's scope.
pub fn out_of_scope(key: &str) -> String {
    format!(
        "🚫 Incident `{}` belongs to an account outside your Slack scope. Nothing was changed; `/incident list` shows the incidents you can act on.",
        truncate(&key.replace('`', "'"), 200)
    )
}

/// The answer to `show` of an incident outside the person's scope.
pub fn not_shown(key: &str) -> String {
    format!(
        "🚫 Incident `{}` belongs to an account outside your Slack scope, so it is not shown. `/incident list` shows the incidents you can see.",
        truncate(&key.replace('`', "'"), 200)
    )
}

/// `Err(refusal)` when `record` is outside `scope`.
pub fn check_incident(
    org: Option<&OrgPolicy>,
    scope: &Scope<'_>,
    record: &IncidentRecord,
) -> Result<(), String> {
    if scope.covers(&incident_account(org, record)) {
        Ok(())
    } else {
        warn!(incident = %record.key, "incident outside the person's account scope; refused");
        Err(out_of_scope(&record.key))
    }
}

/// Before an action on the incident `key` is queued or done: `Err(answer)` when the
/// incident is outside the scope (or cannot be read to tell). An incident that does
/// not exist passes: the change itself says so.
pub async fn check_key(
    org: Option<&OrgPolicy>,
    scope: &Scope<'_>,
    incidents: &dyn IncidentReader,
    key: &str,
) -> Result<(), String> {
    if *scope == Scope::All {
        return Ok(());
    }
    match incidents.incident(key).await {
        Ok(Some(r)) => check_incident(org, scope, &r),
        Ok(None) => Ok(()),
        Err(e) => {
            error!(error = %e, "reading the incident for the scope check failed");
            Err(
                "Could not check that incident right now; nothing changed. Try again in a moment."
                    .into(),
            )
        }
    }
}

/// The accounts a scoped person's silence is limited to (`None`: every account).
pub fn silence_accounts(org: Option<&OrgPolicy>, scope: &Scope<'_>) -> Option<BTreeSet<String>> {
    let home = org.map(|o| o.account(&o.home_account));
    scope.known_accounts(org.map(|o| &o.directory), home.as_ref())
}

/// `Err(answer)` when a scoped person may not silence `target`: an incident of
/// another account, a VPN whose open incidents belong to another account, or a scope
/// that names no account at all.
pub async fn check_silence_target(
    org: Option<&OrgPolicy>,
    scope: &Scope<'_>,
    incidents: &dyn IncidentReader,
    target: &SilenceTarget,
) -> Result<(), String> {
    if *scope == Scope::All {
        return Ok(());
    }
    if silence_accounts(org, scope).is_some_and(|a| a.is_empty()) {
        return Err(
            "🚫 Your Slack scope names no account whose alarms you could silence. Nothing was changed."
                .into(),
        );
    }
    let unreadable = |e: shared::state::StateError| {
        error!(error = %e, "reading incidents for the scope check failed");
        "Could not check what to silence right now; nothing changed. Try again in a moment."
            .to_string()
    };
    match target {
        SilenceTarget::IncidentKey(k) => {
            let owner = match incidents.incident(k).await.map_err(unreadable)? {
                Some(r) => incident_account(org, &r),
                None => key_owner(org, k),
            };
            if scope.covers(&owner) {
                Ok(())
            } else {
                Err(out_of_scope(k))
            }
        }
        SilenceTarget::Vpn(v) => {
            let open = incidents.open_incidents().await.map_err(unreadable)?;
            let foreign = open
                .iter()
                .filter(|r| concerns_vpn(r, v))
                .any(|r| !scope.covers(&incident_account(org, r)));
            if foreign {
                Err(format!(
                    "🚫 VPN `{v}` belongs to an account outside your Slack scope. Nothing was silenced."
                ))
            } else {
                Ok(())
            }
        }
        // Limited to the person's accounts when set: it cannot reach another's alarms.
        SilenceTarget::AlarmPrefix(_) => Ok(()),
    }
}

/// True when the incident is about VPN `vpn`: its key or title names it, or its
/// runbook diagnoses it.
fn concerns_vpn(r: &IncidentRecord, vpn: &str) -> bool {
    r.key.contains(vpn)
        || r.title.contains(vpn)
        || r.runbook.as_ref().is_some_and(|p| {
            p.parameters
                .get("VpnConnectionId")
                .is_some_and(|v| v.iter().any(|x| x == vpn))
        })
}

/// The accounts a silence reaches, as far as it says: its `accounts`, or the account
/// of its incident key; `None` when it holds alarms of any account.
fn silence_reach(org: Option<&OrgPolicy>, s: &Silence) -> Option<Vec<AccountInfo>> {
    match (&s.accounts, &s.target) {
        (Some(ids), _) => Some(ids.iter().map(|id| account(org, id, None)).collect()),
        (None, SilenceTarget::IncidentKey(k)) => Some(vec![key_owner(org, k)]),
        (None, _) => None,
    }
}

/// `Err(answer)` when a scoped person may not lift silence `s`: it reaches an account
/// outside their scope, or any account (set by someone who reaches every account).
pub fn check_lift(org: Option<&OrgPolicy>, scope: &Scope<'_>, s: &Silence) -> Result<(), String> {
    if *scope == Scope::All {
        return Ok(());
    }
    match silence_reach(org, s) {
        Some(accounts) if accounts.iter().all(|a| scope.covers(a)) => Ok(()),
        _ => Err(format!(
            "🚫 Silence `{}` holds alarms of accounts outside your Slack scope; only someone who reaches them can end it. Nothing was changed.",
            s.id
        )),
    }
}

/// The silences a scoped person sees: those that reach one of their accounts, or
/// any account; what they held back only for their accounts.
pub fn visible_silences(
    org: Option<&OrgPolicy>,
    scope: &Scope<'_>,
    book: &SilenceBook,
) -> SilenceBook {
    if *scope == Scope::All {
        return book.clone();
    }
    let mut out = book.clone();
    out.silences.retain(|s| match silence_reach(org, s) {
        Some(accounts) => accounts.iter().any(|a| scope.covers(a)),
        None => true,
    });
    for s in &mut out.silences {
        s.held.retain(|h| {
            let id = h.alarm_arn.split(':').nth(4).unwrap_or_default();
            scope.covers(&account(org, id, None))
        });
    }
    out
}
