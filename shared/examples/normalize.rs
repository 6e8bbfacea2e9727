//! Feeds alarm events through the normalizer and shows what the pipeline sees.
//!
//! ```text
//! normalize [--json] [--rules RULES.json] [--runbook-document NAME] FILE|DIR...
//! ```
//!
//! - Without `--json`: a readable summary per alarm (what `make normalize` prints for
//!   every file in `events/`; a directory argument reads every `.json` file in it).
//! - `--json`: for each file that normalizes, one JSON array of its alarms (the
//!   `shared::alarm::Alarm` the functions work on, plus `transitionId`), in argument
//!   order; a file that is rejected prints its error on stderr instead.
//! - `--rules RULES.json`: adds each alarm's classification by those rules (the
//!   document of `CLASSIFICATION_RULES`, built-ins included unless it says
//!   `"builtins": false`): impact, title, summary, dedupe key, rule; with `--rules -`
//!   the built-in rules alone. `--runbook-document` is `RUNBOOK_DOCUMENT_NAME`.
//!
//! Exit status: 0 when every file normalizes, 1 when any is rejected (after the
//! others are shown), 2 for bad usage or rules that do not validate.
//!
//! `cargo run -p incident-shared --example normalize -- --json --rules rules.json my-event.json`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};
use shared::alarm::{normalize_str, Alarm};
use shared::classify::Rules;

const USAGE: &str = "usage: normalize [--json] [--rules RULES.json | --rules -] [--runbook-document NAME] FILE|DIR...";

/// What the alarm-level event of a multi-time-series alarm does in alarm-to-incident.
const SUMMARY: &str = "no incident: alarm-level state of a multi-time-series alarm; \
     its contributor events open and resolve one incident per time series";

struct Args {
    json: bool,
    rules: Option<Rules>,
    files: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut json = false;
    let mut rules_path: Option<String> = None;
    let mut runbook: Option<String> = None;
    let mut paths = vec![];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--rules" => {
                rules_path = Some(
                    args.next()
                        .ok_or("--rules needs a file (or - for the built-ins)")?,
                )
            }
            "--runbook-document" => {
                runbook = Some(args.next().ok_or("--runbook-document needs a name")?)
            }
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let rules = match rules_path.as_deref() {
        None => None,
        Some("-") => Some(Rules::builtin(runbook.as_deref())),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: cannot read: {e}"))?;
            Some(Rules::from_json(&text, runbook.as_deref()).map_err(|e| format!("{p}: {e}"))?)
        }
    };
    let mut files = vec![];
    for path in paths {
        match std::fs::read_dir(&path) {
            Ok(dir) => {
                let mut found: Vec<PathBuf> = dir
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(_) => files.push(path),
        }
    }
    if files.is_empty() {
        return Err("no event file given".into());
    }
    Ok(Args { json, rules, files })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("normalize: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut failed = 0;
    for file in &args.files {
        match read_and_normalize(file) {
            Ok(alarms) if args.json => {
                let list: Vec<Value> = alarms
                    .iter()
                    .map(|a| as_json(a, args.rules.as_ref()))
                    .collect();
                match serde_json::to_string_pretty(&list) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}: cannot write JSON: {e}", file.display());
                    }
                }
            }
            Ok(alarms) => {
                for alarm in alarms {
                    println!("{}", describe(file, &alarm, args.rules.as_ref()));
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    eprintln!("{}: {e}", file.display());
                } else {
                    println!("{}\n  ERROR {e}\n", file.display());
                }
            }
        }
    }
    if !args.json {
        println!("{} files, {} failed", args.files.len(), failed);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn read_and_normalize(file: &Path) -> Result<Vec<Alarm>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    normalize_str(&text).map_err(|e| e.to_string())
}

/// The alarm as the functions hold it, its transition id and, with rules, its
/// classification.
fn as_json(a: &Alarm, rules: Option<&Rules>) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or_else(|e| json!({"error": e.to_string()}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("transitionId".into(), json!(a.transition_id()));
        if let Some(rules) = rules {
            let c = rules.classify(a);
            obj.insert(
                "classification".into(),
                json!({
                    "rule": c.rule,
                    "impact": c.impact.value(),
                    "title": c.title,
                    "summary": c.summary,
                    "dedupeKey": c.key,
                    "category": c.category,
                    "nextSteps": c.next_steps,
                    "runbook": c.runbook,
                }),
            );
            if a.is_multi_series_summary() {
                obj.insert("incident".into(), json!(SUMMARY));
            }
        }
    }
    v
}

fn describe(file: &Path, a: &Alarm, rules: Option<&Rules>) -> String {
    let condition = a
        .condition
        .summary()
        .unwrap_or_else(|| "no metric described".into());
    let mut out = format!(
        "{file}\n  {shape:?}: {name}\n  {prev} -> {state} at {at} in {account}/{region}\n  {condition}\n  reason: {reason}\n",
        file = file.display(),
        shape = a.shape,
        name = a.label(),
        prev = a.previous_state.map_or("?".into(), |s| s.to_string()),
        state = a.state,
        at = a.changed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        account = a.account,
        region = a.region,
        reason = shared::text::truncate(&a.reason, 160),
    );
    if let Some(rules) = rules {
        if a.is_multi_series_summary() {
            out.push_str(&format!("  {SUMMARY}\n"));
        } else {
            let c = rules.classify(a);
            out.push_str(&format!(
                "  impact {} (rule {}): {}\n  dedupe key: {}\n",
                c.impact.value(),
                c.rule,
                c.title,
                c.key
            ));
        }
    }
    out
}
