//! Fixture loading shared by the test files: the base facts with a case's patch
//! merged in, and the case's log lines run through the real parser.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use shared::vpn::{parse_line, parse_record, VpnFacts};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Merges `patch` into `base`: objects key by key (`null` removes), arrays element
/// by element, `{"$replace": v}` replaces.
pub fn merge(base: &mut Value, patch: &Value) {
    if let Some(v) = patch.as_object().and_then(|o| o.get("$replace")) {
        *base = v.clone();
        return;
    }
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Object(Map::new())), v);
                }
            }
        }
        (Value::Array(b), Value::Array(p)) => {
            for (i, v) in p.iter().enumerate() {
                match b.get_mut(i) {
                    Some(slot) => merge(slot, v),
                    None => b.push(v.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The facts of a case file, and how many of its log lines were unreadable.
pub fn case_facts(case: &Value) -> (VpnFacts, usize) {
    let mut facts = read_json(&fixtures().join("base-facts.json"));
    merge(&mut facts, &case["patch"]);
    let mut records = vec![];
    let mut unreadable = 0;
    for line in case["log_lines"].as_array().into_iter().flatten() {
        let parsed = match line {
            Value::String(s) => parse_line(s),
            other => parse_record(other),
        };
        match parsed {
            Ok(r) => records.push(serde_json::to_value(r).expect("record serializes")),
            Err(_) => unreadable += 1,
        }
    }
    facts["logs"]["records"] = Value::Array(records);
    facts["logs"]["unreadable"] = unreadable.into();
    let facts: VpnFacts =
        serde_json::from_value(facts).unwrap_or_else(|e| panic!("{}: {e}", case["description"]));
    (facts, unreadable)
}

pub fn load_case(name: &str) -> Value {
    read_json(&fixtures().join("cases").join(format!("{name}.json")))
}
