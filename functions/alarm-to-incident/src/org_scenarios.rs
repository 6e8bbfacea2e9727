//! The handler in organization mode (`shared::org`): member accounts' alarms open
//! incidents of their own, carry the account into the OpsItem, the runbook and the
//! notification; foreign and forged events are refused and counted, touching nothing.

use aws_sdk_ssm::operation::create_ops_item::CreateOpsItemOutput;
use aws_sdk_ssm::operation::start_automation_execution::StartAutomationExecutionOutput;
use aws_sdk_ssm::operation::update_ops_item::UpdateOpsItemOutput;
use aws_sdk_ssmincidents::operation::start_incident::StartIncidentOutput;
use aws_sdk_ssmincidents::types::{ItemType, ItemValue};
use aws_smithy_mocks::{mock, RuleMode};
use serde_json::Value;
use shared::backend::{IncidentManagerBackend, OpsCenterBackend};
use shared::config::Env;
use shared::mock_client;
use shared::notification::{EventType, IncidentStatus};
use shared::org::OrgPolicy;
use shared::state::StateStore;

use crate::scenarios::{
    alarm_arn, data, direct, eventbridge, permissive_opscenter, sns, Harness, ANY, DOC, IR, KEY,
    OI, PLAN, VPN,
};

const MEMBER_A: &str = "111122223333";
const MEMBER_B: &str = "444455556666";
const FOREIGN: &str = "999988887777";

fn org(allowed: &str) -> OrgPolicy {
    OrgPolicy::from_env(&Env::from_pairs([
        ("ORGANIZATION_ID", "o-a1b2c3d4e5"),
        ("HOME_ACCOUNT_ID", crate::scenarios::ACCOUNT),
        ("ALLOWED_ACCOUNTS", allowed),
        (
            "ACCOUNT_DIRECTORY",
            r#"{"accounts": {"111122223333": {"name": "payments-prod", "ou": "payments"},
                              "444455556666": {"name": "retail-prod", "ou": "retail"}},
                 "ous": {"payments": {"tags": {"team": "payments"}}, "retail": {"tags": {"team": "retail"}}}}"#,
        ),
    ]))
    .unwrap()
    .unwrap()
}

/// `event` moved to `account`: the envelope's account and the alarm ARN's.
fn in_account(mut event: Value, envelope: &str, arn_account: &str) -> Value {
    let home = crate::scenarios::ACCOUNT;
    let moved = |s: &str| s.replace(&format!(":{home}:"), &format!(":{arn_account}:"));
    if event.get("detail-type").is_some() {
        event["account"] = envelope.into();
        let arn = moved(event["resources"][0].as_str().unwrap());
        event["resources"][0] = arn.into();
    } else if event.get("alarmData").is_some() {
        event["accountId"] = envelope.into();
        let arn = moved(event["alarmArn"].as_str().unwrap());
        event["alarmArn"] = arn.into();
    } else {
        let message = event["Records"][0]["Sns"]["Message"].as_str().unwrap();
        let mut m: Value = serde_json::from_str(message).unwrap();
        m["AWSAccountId"] = envelope.into();
        let arn = moved(m["AlarmArn"].as_str().unwrap());
        m["AlarmArn"] = arn.into();
        event["Records"][0]["Sns"]["Message"] = m.to_string().into();
    }
    event
}

fn member_key(account: &str) -> String {
    format!("{account}/{KEY}")
}

#[tokio::test]
async fn member_alarm_opens_its_own_incident_with_the_account_everywhere() {
    let create = mock!(aws_sdk_ssm::Client::create_ops_item)
        .match_requests(|r| {
            let d = r.operational_data();
            assert_eq!(data(d, "incidentKey"), member_key(MEMBER_A));
            assert_eq!(
                data(d, "/aws/dedup"),
                format!("{{\"dedupString\":\"{}\"}}", member_key(MEMBER_A))
            );
            assert_eq!(data(d, "accountId"), MEMBER_A);
            assert_eq!(data(d, "accountName"), "payments-prod");
            assert_eq!(data(d, "organizationalUnit"), "payments");
            // The VPN is the member's: its ARN names the member account.
            assert!(data(d, "/aws/resources").contains(&format!(
                "arn:aws:ec2:eu-west-1:{MEMBER_A}:vpn-connection/{VPN}"
            )));
            assert!(r
                .description()
                .unwrap()
                .contains("**accountName**: payments-prod"));
            true
        })
        .then_output(|| CreateOpsItemOutput::builder().ops_item_id(OI).build());
    let runbook = mock!(aws_sdk_ssm::Client::start_automation_execution)
        .match_requests(|r| {
            assert_eq!(r.document_name(), Some(DOC));
            let p = r.parameters().unwrap();
            assert_eq!(p["AccountId"], [MEMBER_A]);
            assert_eq!(p["Region"], ["eu-west-1"]);
            assert_eq!(p["VpnConnectionId"], [VPN]);
            assert_eq!(p["OpsItemId"], [OI]);
            true
        })
        .then_output(|| {
            StartAutomationExecutionOutput::builder()
                .automation_execution_id("exec-1")
                .build()
        });
    let rules = [
        create,
        runbook,
        mock!(aws_sdk_ssm::Client::update_ops_item)
            .then_output(|| UpdateOpsItemOutput::builder().build()),
    ];
    let mut h = Harness::new(Box::new(OpsCenterBackend::new(mock_client!(
        aws_sdk_ssm,
        RuleMode::MatchAny,
        rules.iter()
    ))));
    h.org = Some(org("111122223333,444455556666"));
    let r = h
        .run(in_account(
            eventbridge(ANY, "ALARM", "10:01:00.490"),
            MEMBER_A,
            MEMBER_A,
        ))
        .await
        .unwrap();
    assert_eq!(r.results[0].action, "open");
    assert_eq!(r.results[0].incident_key, member_key(MEMBER_A));
    for rule in &rules[1..3] {
        assert_eq!(rule.num_calls(), 1);
    }
    let item = h
        .store
        .incident(&member_key(MEMBER_A))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.record.account, MEMBER_A);
    let info = item.record.account_info.unwrap();
    assert_eq!(info.label(), "111122223333 (payments-prod)");
    assert_eq!(info.tags["team"], "payments");
    let sent = h.publisher.sent();
    assert_eq!(sent[0].event, EventType::Opened);
    assert_eq!(sent[0].account, MEMBER_A);
    assert_eq!(
        sent[0].account_info.as_ref().unwrap().tags["team"],
        "payments"
    );
    assert!(h.refused.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn same_vpn_alarm_in_two_members_and_home_opens_three_incidents_and_ok_resolves_only_its_own()
{
    let mut h = Harness::new(permissive_opscenter());
    h.org = Some(org(""));
    for account in [MEMBER_A, MEMBER_B, crate::scenarios::ACCOUNT] {
        let r = h
            .run(in_account(
                eventbridge(ANY, "ALARM", "10:01:00.490"),
                account,
                account,
            ))
            .await
            .unwrap();
        assert_eq!(r.results[0].action, "open", "{account}");
    }
    // The home account keeps its plain key: a single-account stack turned into a
    // central one finds its open incidents where they were.
    assert!(h.store.incident(KEY).await.unwrap().is_some());
    let r = h
        .run(in_account(
            direct(ANY, "OK", "10:05:00.000"),
            MEMBER_B,
            MEMBER_B,
        ))
        .await
        .unwrap();
    assert_eq!(r.results[0].action, "resolve");
    assert_eq!(r.results[0].incident_key, member_key(MEMBER_B));
    let status = |k: String| {
        let store = &h.store;
        async move { store.incident(&k).await.unwrap().unwrap().record.status }
    };
    assert_eq!(status(member_key(MEMBER_B)).await, IncidentStatus::Resolved);
    assert_eq!(status(member_key(MEMBER_A)).await, IncidentStatus::Open);
    assert_eq!(status(KEY.to_string()).await, IncidentStatus::Open);
    let accounts: Vec<String> = h
        .publisher
        .sent()
        .iter()
        .map(|n| n.account.clone())
        .collect();
    assert_eq!(
        accounts,
        [MEMBER_A, MEMBER_B, crate::scenarios::ACCOUNT, MEMBER_B]
    );
}

#[tokio::test]
async fn foreign_account_is_refused_counted_and_touches_nothing_in_every_envelope() {
    // No mock rule: any backend call would panic the test.
    let mut h = Harness::new(Box::new(OpsCenterBackend::new(mock_client!(
        aws_sdk_ssm,
        RuleMode::Sequential,
        Vec::<&aws_smithy_mocks::Rule>::new()
    ))));
    h.org = Some(org("111122223333,444455556666"));
    for event in [
        eventbridge(ANY, "ALARM", "10:01:00.490"),
        direct(ANY, "ALARM", "10:01:00.490"),
        sns(ANY, "ALARM", "10:01:00.490"),
    ] {
        let r = h.run(in_account(event, FOREIGN, FOREIGN)).await.unwrap();
        assert_eq!(r.results[0].action, "refused");
        assert_eq!(r.results[0].incident, None);
    }
    assert_eq!(
        *h.refused.0.lock().unwrap(),
        vec![("ForeignAccount", FOREIGN.to_string(), ANY.to_string()); 3]
    );
    assert!(h.publisher.sent().is_empty());
    assert!(h
        .store
        .alarm(&alarm_arn(ANY).replace(crate::scenarios::ACCOUNT, FOREIGN))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn forged_account_is_refused_even_from_an_allowed_member() {
    let mut h = Harness::new(permissive_opscenter());
    h.org = Some(org("111122223333,444455556666"));
    // Member A's envelope carrying member B's alarm, and B's alarm under the home
    // account's name: neither may reach B's (or the home account's) incidents.
    for (envelope, arn) in [(MEMBER_A, MEMBER_B), (crate::scenarios::ACCOUNT, MEMBER_B)] {
        let r = h
            .run(in_account(
                eventbridge(ANY, "ALARM", "10:01:00.490"),
                envelope,
                arn,
            ))
            .await
            .unwrap();
        assert_eq!(r.results[0].action, "refused");
    }
    let reasons: Vec<&str> = h.refused.0.lock().unwrap().iter().map(|r| r.0).collect();
    assert_eq!(reasons, ["AccountMismatch", "AccountMismatch"]);
    assert!(h.publisher.sent().is_empty());
}

#[tokio::test]
async fn a_member_alarm_never_changes_another_accounts_incident() {
    let mut h = Harness::new(permissive_opscenter());
    h.org = Some(org(""));
    h.run(in_account(
        eventbridge(ANY, "ALARM", "10:01:00.490"),
        MEMBER_B,
        MEMBER_B,
    ))
    .await
    .unwrap();
    // An incident whose key a member's alarm could reach, recorded as B's: A's alarm
    // with a key already naming the incident (as a custom dedupe key could) is refused.
    let mut item = h
        .store
        .incident(&member_key(MEMBER_B))
        .await
        .unwrap()
        .unwrap();
    item.record.key = member_key(MEMBER_A);
    h.store
        .incidents
        .lock()
        .unwrap()
        .insert(member_key(MEMBER_A), item);
    let r = h
        .run(in_account(
            eventbridge(ANY, "OK", "10:02:00.000"),
            MEMBER_A,
            MEMBER_A,
        ))
        .await
        .unwrap();
    assert_eq!(r.results[0].action, "refused");
    assert_eq!(h.refused.0.lock().unwrap()[0].0, "ForeignIncident");
    let still = h
        .store
        .incident(&member_key(MEMBER_A))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.record.status, IncidentStatus::Open);
}

#[tokio::test]
async fn single_account_mode_keeps_plain_keys_and_no_account_info() {
    let h = Harness::new(permissive_opscenter());
    let r = h
        .run(eventbridge(ANY, "ALARM", "10:01:00.490"))
        .await
        .unwrap();
    assert_eq!(r.results[0].incident_key, KEY);
    let n = &h.publisher.sent()[0];
    assert_eq!(n.account_info, None);
    // Without the organization mode nothing is checked: an alarm of another account
    // (only possible through a hand-made invoke) is handled as before.
    let r = h
        .run(in_account(
            eventbridge(ANY, "ALARM", "10:01:00.490"),
            FOREIGN,
            FOREIGN,
        ))
        .await
        .unwrap();
    assert_eq!(r.results[0].action, "update");
    assert!(h.refused.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn incident_manager_incident_of_a_member_names_its_vpn_and_account_in_related_items() {
    let start = mock!(aws_sdk_ssmincidents::Client::start_incident)
        .match_requests(|r| {
            assert_eq!(r.response_plan_arn(), Some(PLAN));
            let items: Vec<(ItemType, Option<&ItemValue>, Option<&str>)> = r
                .related_items()
                .iter()
                .map(|i| {
                    let id = i.identifier().unwrap();
                    (id.r#type().clone(), id.value(), i.title())
                })
                .collect();
            // The runbook reads the VPN's account and region from this involved resource.
            assert!(items
                .iter()
                .any(|(t, v, _)| *t == ItemType::InvolvedResource
                    && *v
                        == Some(&ItemValue::Arn(format!(
                            "arn:aws:ec2:eu-west-1:{MEMBER_A}:vpn-connection/{VPN}"
                        )))));
            assert!(items.iter().any(|(t, v, title)| *t == ItemType::Other
                && *title == Some("AWS account 111122223333 (payments-prod)")
                && matches!(v, Some(ItemValue::Url(u)) if u.ends_with("/accounts/111122223333"))));
            true
        })
        .then_output(|| {
            StartIncidentOutput::builder()
                .incident_record_arn(IR)
                .build()
                .unwrap()
        });
    let mut h = Harness::new(Box::new(IncidentManagerBackend::new(
        mock_client!(aws_sdk_ssmincidents, RuleMode::MatchAny, [&start]),
        Some(PLAN.into()),
    )));
    h.org = Some(org(""));
    let r = h
        .run(in_account(
            eventbridge(ANY, "ALARM", "10:01:00.490"),
            MEMBER_A,
            MEMBER_A,
        ))
        .await
        .unwrap();
    assert_eq!((r.results[0].action, start.num_calls()), ("open", 1));
}
