//! Feeds alarm events through the normalizer and prints what the pipeline sees.
//!
//! Usage: `cargo run -p incident-shared --example normalize -- events/*.json`
//! (a directory argument reads every `.json` file in it). Exits non-zero if any
//! event fails, after printing the error for it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use shared::alarm::{normalize_str, Alarm, AlarmCondition};

fn main() -> ExitCode {
    let mut files: Vec<PathBuf> = vec![];
    for arg in std::env::args().skip(1) {
        let path = PathBuf::from(arg);
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
        eprintln!("usage: normalize <event.json | directory>...");
        return ExitCode::from(2);
    }
    let mut failed = 0;
    for file in &files {
        match read_and_normalize(file) {
            Ok(alarms) => {
                for alarm in alarms {
                    println!("{}", describe(file, &alarm));
                }
            }
            Err(e) => {
                failed += 1;
                println!("{}\n  ERROR {e}\n", file.display());
            }
        }
    }
    println!("{} files, {} failed", files.len(), failed);
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

fn describe(file: &Path, a: &Alarm) -> String {
    let condition = match &a.condition {
        AlarmCondition::Metric(m) => format!(
            "metric {}/{} {:?} {} over {}s, threshold {}",
            m.metric.namespace,
            m.metric.name,
            m.metric.dimensions,
            m.statistic.as_deref().unwrap_or("?"),
            m.period_seconds.map_or("?".into(), |p| p.to_string()),
            m.threshold.map_or("?".into(), |t| t.to_string()),
        ),
        AlarmCondition::Math(m) => format!("expression {}", m.expression.as_deref().unwrap_or("?")),
        AlarmCondition::Composite(c) => {
            format!("composite rule {}", c.rule.as_deref().unwrap_or("?"))
        }
        AlarmCondition::Unknown => "no metric described".into(),
    };
    format!(
        "{file}\n  {shape:?}: {name}\n  {prev} -> {state} at {at} in {account}/{region}\n  {condition}\n  reason: {reason}\n",
        file = file.display(),
        shape = a.shape,
        name = a.name,
        prev = a.previous_state.map_or("?".into(), |s| s.to_string()),
        state = a.state,
        at = a.changed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        account = a.account,
        region = a.region,
        reason = shared::text::truncate(&a.reason, 160),
    )
}
