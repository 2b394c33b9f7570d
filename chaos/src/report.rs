//! Writing a failed run down: the full history as JSON, and a report a person can read — every violation, and
//! the shortest failing key's operations in time order.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use crate::{
    checker::{
        history::Op,
        linearizability::{shortest_violation, KeyVerdict},
    },
    record::History,
};

pub fn linearizability_violations(verdicts: &[KeyVerdict]) -> Vec<String> {
    verdicts
        .iter()
        .filter_map(|v| match v {
            KeyVerdict::Violation { key, explanation, ops } => {
                Some(format!("key {key} ({} ops) is not linearizable: {explanation}", ops.len()))
            }
            _ => None,
        })
        .collect()
}

pub fn unchecked_keys(verdicts: &[KeyVerdict]) -> Vec<String> {
    verdicts
        .iter()
        .filter_map(|v| match v {
            KeyVerdict::Timeout { key } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

fn describe(op: &Op) -> String {
    format!(
        "[{:>10.3} ms .. {:>10.3} ms] p{:<3} {:<7?} {:?}",
        op.invoke_ns as f64 / 1e6,
        op.complete_ns as f64 / 1e6,
        op.process,
        op.outcome,
        op.kind
    )
}

/// Writes the history as `history.json` under `out`.
pub fn write_history(out: &Path, history: &History) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(out)?;
    let path = out.join("history.json");
    fs::write(&path, serde_json::to_vec(history)?)?;
    Ok(path)
}

/// Writes `report.txt` under `out`; returns its path.
pub fn write(
    out: &Path,
    history: &History,
    verdicts: &[KeyVerdict],
    violations: &[(String, Vec<String>)],
) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(out)?;
    let mut r = String::new();
    writeln!(r, "raftkv-chaos report (seed {}, {} nodes)\n", history.seed, history.nodes)?;
    for (name, v) in violations {
        if v.is_empty() {
            continue;
        }
        writeln!(r, "== {name}: {} violation(s)", v.len())?;
        for line in v {
            writeln!(r, "  - {line}")?;
        }
        writeln!(r)?;
    }
    if let Some(KeyVerdict::Violation { key, ops, explanation }) = shortest_violation(verdicts) {
        writeln!(r, "== shortest non-linearizable key: {key} ({} ops)\n{explanation}\n", ops.len())?;
        let mut sorted: Vec<&Op> = ops.iter().collect();
        sorted.sort_by_key(|o| o.invoke_ns);
        for op in sorted {
            writeln!(r, "  {}", describe(op))?;
        }
        writeln!(r)?;
    }
    writeln!(r, "== faults")?;
    for f in &history.faults {
        writeln!(
            r,
            "  [{:>10.3} ms .. {:>10.3} ms] {} on {:?}: {}",
            f.start_ns as f64 / 1e6,
            f.end_ns as f64 / 1e6,
            f.name,
            f.target,
            f.detail
        )?;
    }
    let path = out.join("report.txt");
    fs::write(&path, r)?;
    Ok(path)
}
