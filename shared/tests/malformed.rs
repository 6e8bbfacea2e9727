//! Malformed and hostile events get a specific, non-retryable error and never panic.

use serde_json::{json, Value};
use shared::alarm::{normalize, normalize_str, AlarmError};
use shared::error::Retryable;

fn event(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn err(v: &Value) -> AlarmError {
    let e = normalize(v).expect_err("expected an error");
    assert!(!e.retryable(), "bad input is never retryable: {e}");
    assert_eq!(e.lambda_error_type(), "NonRetryable.BadInput");
    e
}

#[test]
fn truncated_json_is_not_json() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../events/eventbridge-vpn-tunnel-down-alarm.json"),
    )
    .unwrap();
    let cut = &text[..text.len() / 2];
    let e = normalize_str(cut).unwrap_err();
    assert!(matches!(e, AlarmError::NotJson(_)), "{e}");
    assert!(
        e.to_string()
            .starts_with("event is not JSON: EOF while parsing"),
        "{e}"
    );
}

#[test]
fn unknown_shape_says_what_it_got_and_what_was_expected() {
    let e = err(&json!({"hello": "world", "foo": 1}));
    let msg = e.to_string();
    assert!(
        msg.contains("got an object with keys [foo, hello]"),
        "{msg}"
    );
    assert!(msg.contains("CloudWatch Alarm State Change"), "{msg}");
    assert!(msg.contains("alarmData"), "{msg}");
    assert!(msg.contains("Records[].Sns.Message"), "{msg}");

    assert!(err(&json!([1, 2]))
        .to_string()
        .contains("got a list of 2 items"));
    assert!(err(&json!(null)).to_string().contains("got null"));
    assert!(err(&json!("ALARM"))
        .to_string()
        .contains("got the string \"ALARM\""));
}

#[test]
fn missing_state_names_the_path() {
    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["detail"].as_object_mut().unwrap().remove("state");
    assert_eq!(
        err(&v),
        AlarmError::MissingField {
            shape: "EventBridge event",
            path: "detail.state".into()
        }
    );

    let mut v = event("direct-vpn-tunnel-down-alarm.json");
    v["alarmData"]["state"]
        .as_object_mut()
        .unwrap()
        .remove("value");
    assert_eq!(
        err(&v).to_string(),
        "direct alarm action: field `alarmData.state.value` is missing"
    );
}

#[test]
fn wrong_types_name_the_path_and_the_type() {
    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["detail"]["state"]["value"] = json!(1);
    assert_eq!(
        err(&v).to_string(),
        "EventBridge event: field `detail.state.value` should be a string, got the number 1"
    );

    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["detail"]["configuration"]["metrics"] = json!({"id": "x"});
    assert!(err(&v)
        .to_string()
        .contains("`detail.configuration.metrics` should be a list"));

    let mut v = event("direct-vpn-tunnel-down-alarm.json");
    v["alarmData"]["configuration"]["metrics"][0]["metricStat"]["period"] = json!(-60);
    assert!(err(&v).to_string().contains(
        "`alarmData.configuration.metrics[0].metricStat.period` should be a whole number"
    ));
}

#[test]
fn unknown_state_value_is_rejected() {
    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["detail"]["state"]["value"] = json!("ON_FIRE");
    assert!(matches!(err(&v), AlarmError::InvalidState { ref value, .. } if value == "ON_FIRE"));
}

#[test]
fn bad_timestamp_is_rejected() {
    let mut v = event("direct-vpn-tunnel-down-alarm.json");
    v["alarmData"]["state"]["timestamp"] = json!("last tuesday");
    assert_eq!(
        err(&v).to_string(),
        "direct alarm action: field `alarmData.state.timestamp` is not a timestamp: \"last tuesday\""
    );
}

#[test]
fn bad_alarm_arn_is_rejected() {
    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["resources"] = json!(["arn:aws:sns:eu-west-1:123456789012:topic"]);
    assert!(matches!(err(&v), AlarmError::InvalidArn { .. }));
    v["resources"] = json!([]);
    assert_eq!(
        err(&v).to_string(),
        "EventBridge event: field `resources[0]` is missing"
    );
}

#[test]
fn empty_records_is_its_own_error() {
    assert_eq!(err(&json!({"Records": []})), AlarmError::EmptyRecords);
    assert!(matches!(
        err(&json!({"Records": "x"})),
        AlarmError::WrongType { .. }
    ));
}

#[test]
fn sns_message_that_is_not_json_says_so() {
    let mut v = event("sns-vpn-tunnel-down-alarm.json");
    v["Records"][0]["Sns"]["Message"] = json!("Tunnel down!!! call Bob");
    match err(&v) {
        AlarmError::SnsMessageNotJson { index, start, .. } => {
            assert_eq!(index, 0);
            assert_eq!(start, "Tunnel down!!! call Bob");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn sns_record_errors_name_the_record() {
    let good = event("sns-vpn-tunnel-down-alarm.json");
    let mut bad = good.clone();
    bad["Records"][0]["Sns"]["Message"] =
        json!("{\"AlarmName\":\"x\",\"NewStateValue\":\"ALARM\"}");
    let both = json!({"Records": [good["Records"][0], bad["Records"][0]]});
    assert_eq!(
        err(&both).to_string(),
        "SNS record 1: SNS alarm message has no `AlarmArn` and the ARN cannot be rebuilt from account, \
         Region and name: `AWSAccountId` is missing"
    );
    // With the account, the record's topic gives the Region; the time is still needed.
    let mut no_time = good.clone();
    no_time["Records"][0]["Sns"]["Message"] = json!(
        "{\"AlarmName\":\"x\",\"AWSAccountId\":\"123456789012\",\"NewStateValue\":\"ALARM\"}"
    );
    assert_eq!(
        err(&no_time).to_string(),
        "SNS record 0: SNS alarm message: field `StateChangeTime` is missing"
    );
    let mut no_msg = good.clone();
    no_msg["Records"][0]["Sns"]
        .as_object_mut()
        .unwrap()
        .remove("Message");
    assert_eq!(
        err(&no_msg).to_string(),
        "SNS record 0: SNS event: field `Records[0].Sns.Message` is missing"
    );
}

#[test]
fn other_eventbridge_detail_types_are_rejected_explicitly() {
    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["detail-type"] = json!("CloudWatch Alarm Configuration Change");
    assert_eq!(
        err(&v).to_string(),
        "unsupported EventBridge detail-type \"CloudWatch Alarm Configuration Change\" (source \"aws.cloudwatch\"); \
         expected \"CloudWatch Alarm State Change\" or \"CloudWatch Alarm Contributor State Change\""
    );
}

#[test]
fn megabyte_strings_are_cut_in_errors_and_never_panic() {
    let huge = "x".repeat(1 << 20);
    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["detail"]["state"]["value"] = json!(huge);
    let msg = err(&v).to_string();
    assert!(msg.len() < 400, "error is {} bytes", msg.len());

    let mut v = event("sns-vpn-tunnel-down-alarm.json");
    v["Records"][0]["Sns"]["Message"] = json!(huge);
    assert!(err(&v).to_string().len() < 400);

    let mut keys = serde_json::Map::new();
    keys.insert(huge.clone(), json!(1));
    assert!(err(&Value::Object(keys)).to_string().len() < 600);

    // A huge but valid alarm name is kept: it is the alarm's identity.
    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["detail"]["alarmName"] = json!(huge);
    assert_eq!(normalize(&v).unwrap()[0].name.len(), 1 << 20);
}

#[test]
fn null_fields_where_strings_are_optional_are_accepted() {
    let mut v = event("eventbridge-vpn-tunnel-down-alarm.json");
    v["detail"]["configuration"]["description"] = Value::Null;
    v["detail"]["previousState"] = Value::Null;
    v["detail"]["state"]["reasonData"] = json!("not json at all");
    let a = &normalize(&v).unwrap()[0];
    assert_eq!(a.description, None);
    assert_eq!(a.previous_state, None);
    // Without reasonData there is no threshold, but the metric is still known.
    assert_eq!(a.vpn_id(), Some("vpn-0f1e2d3c4b5a69788"));
}

#[test]
fn deeply_nested_json_does_not_overflow() {
    let deep = "[".repeat(100_000);
    assert!(matches!(normalize_str(&deep), Err(AlarmError::NotJson(_))));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
            prop_oneof![
                Just("ALARM"),
                Just("OK"),
                Just("INSUFFICIENT_DATA"),
                Just("2026-11-25T10:01:00.490+0000")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,12}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn event_files() -> Vec<Value> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Replaces the value found by walking `steps` (each picks a child by index).
    fn mutate(v: &mut Value, steps: &[usize], replacement: Value) {
        let Some((&s, rest)) = steps.split_first() else {
            *v = replacement;
            return;
        };
        match v {
            Value::Object(m) if !m.is_empty() => {
                let key = m.keys().nth(s % m.len()).cloned().unwrap();
                mutate(m.get_mut(&key).unwrap(), rest, replacement);
            }
            Value::Array(a) if !a.is_empty() => {
                let n = a.len();
                mutate(&mut a[s % n], rest, replacement);
            }
            _ => *v = replacement,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let _ = normalize(&v);
        }

        #[test]
        fn mutated_real_events_never_panic(file in 0usize..64, steps in prop::collection::vec(any::<usize>(), 0..6), replacement in arb_json()) {
            let files = event_files();
            let mut v = files[file % files.len()].clone();
            mutate(&mut v, &steps, replacement);
            match normalize(&v) {
                Ok(alarms) => prop_assert!(!alarms.is_empty()),
                Err(e) => prop_assert!(!e.retryable()),
            }
        }
    }
}
