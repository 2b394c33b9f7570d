//! `raftkv status`: one row per endpoint, like `etcdctl endpoint status`.

use std::process::ExitCode;

use raftkv_proto as pb;

use super::{print_table, Cli, Output};

pub fn role_name(role: i32) -> String {
    pb::Role::try_from(role).unwrap_or(pb::Role::Unknown).as_str_name().to_ascii_lowercase()
}

pub fn status_json(s: &pb::StatusResponse, endpoint: &str) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "endpoint": endpoint,
        "role": role_name(s.role),
        "term": s.term,
        "leader": s.leader_id,
        "last_log_index": s.last_log_index,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "snapshot_index": s.snapshot_index,
        "revision": s.header.as_ref().map_or(0, |h| h.revision),
        "keys": s.key_count,
        "members": s.members.len(),
        "alarms": s.alarms,
        "db_size": s.db_size,
    })
}

pub async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let all = cli.client()?.status_all().await;
    let reached = all.iter().filter(|(_, r)| r.is_ok()).count();
    match cli.output {
        Output::Json => {
            let arr: Vec<serde_json::Value> =
                all.iter().filter_map(|(ep, r)| r.as_ref().ok().map(|s| status_json(s, ep))).collect();
            for (ep, r) in &all {
                if let Err(e) = r {
                    eprintln!("{ep}: unreachable: {}", e.message());
                }
            }
            println!("{}", serde_json::Value::Array(arr));
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|(ep, r)| match r {
                    Ok(s) => vec![
                        ep.clone(),
                        s.id.to_string(),
                        role_name(s.role),
                        s.term.to_string(),
                        if s.leader_id == 0 { "-".into() } else { s.leader_id.to_string() },
                        s.last_log_index.to_string(),
                        s.commit_index.to_string(),
                        s.applied_index.to_string(),
                        s.snapshot_index.to_string(),
                        s.header.as_ref().map_or(0, |h| h.revision).to_string(),
                        s.key_count.to_string(),
                        if s.alarms.is_empty() { "-".into() } else { s.alarms.join(",") },
                    ],
                    Err(e) => {
                        let mut row = vec![ep.clone(), "-".into(), format!("unreachable ({:?})", e.code())];
                        row.resize(12, "-".into());
                        row
                    }
                })
                .collect();
            print_table(
                &[
                    "ENDPOINT",
                    "ID",
                    "ROLE",
                    "TERM",
                    "LEADER",
                    "LAST LOG",
                    "COMMITTED",
                    "APPLIED",
                    "SNAPSHOT",
                    "REVISION",
                    "KEYS",
                    "ALARMS",
                ],
                &rows,
            );
        }
    }
    Ok(if reached > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
