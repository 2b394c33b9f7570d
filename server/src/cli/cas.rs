//! `raftkv cas KEY NEW --expect OLD` (or `--expect-version N`, `--expect-mod-revision N`, `--absent`)

use std::process::ExitCode;

use raftkv_proto as pb;

use super::{kv_json, show, status_error, Cli, Output};

#[derive(clap::Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("expectation").required(true).multiple(false).args(["expect", "expect_version", "expect_mod_revision", "absent"])))]
pub struct CasArgs {
    pub key: String,
    pub value: String,
    /// Swap only if the current value equals this.
    #[arg(long)]
    pub expect: Option<String>,
    /// Swap only if the key's version equals this (0 = absent).
    #[arg(long)]
    pub expect_version: Option<i64>,
    /// Swap only if the key's last write was at this revision.
    #[arg(long)]
    pub expect_mod_revision: Option<i64>,
    /// Create only if the key does not exist.
    #[arg(long)]
    pub absent: bool,
}

pub async fn run(cli: &Cli, a: &CasArgs) -> anyhow::Result<ExitCode> {
    use pb::compare::{Result as Cmp, Target};
    let key = a.key.as_bytes().to_vec();
    let (target, value, number) = match (&a.expect, a.expect_version, a.expect_mod_revision, a.absent) {
        (Some(v), ..) => (Target::Value, v.as_bytes().to_vec(), 0),
        (_, Some(n), ..) => (Target::Version, vec![], n),
        (_, _, Some(n), _) => (Target::ModRevision, vec![], n),
        _ => (Target::Version, vec![], 0),
    };
    let req = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: key.clone(),
            target: target as i32,
            result: Cmp::Equal as i32,
            value,
            number,
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::Put(pb::PutRequest {
                key: key.clone(),
                value: a.value.as_bytes().to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::Range(pb::RangeRequest { key, ..Default::default() })),
        }],
    };
    let resp = cli.client()?.txn(req).await.map_err(status_error)?;
    let current = resp.responses.first().and_then(|r| match &r.response {
        Some(pb::response_op::Response::Range(r)) => r.kvs.first().cloned(),
        _ => None,
    });
    let rev = resp.header.map_or(0, |h| h.revision);
    match cli.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"succeeded": resp.succeeded, "revision": rev, "current": current.as_ref().map(kv_json)})
        ),
        Output::Table if resp.succeeded => println!("OK (revision {rev})"),
        Output::Table => match &current {
            Some(kv) => eprintln!(
                "compare failed: current value {:?} (version {}, mod revision {})",
                show(&kv.value),
                kv.version,
                kv.mod_revision
            ),
            None => eprintln!("compare failed: key is absent"),
        },
    }
    Ok(if resp.succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
