//! `raftkv scan PREFIX` / `raftkv range START --end END`

use std::process::ExitCode;

use raftkv::keyspace::prefix_end;
use raftkv_proto as pb;

use super::{kv_json, show, status_error, Cli, Output};

#[derive(clap::Args)]
pub struct ScanArgs {
    /// Key prefix ("" = every key), or the first key with --end.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Scan [PREFIX, END) instead of a prefix.
    #[arg(long)]
    pub end: Option<String>,
    /// At most this many keys (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    #[arg(long)]
    pub keys_only: bool,
    #[arg(long)]
    pub count_only: bool,
    #[arg(long)]
    pub serializable: bool,
    /// Read the keys as they were at this revision (0 = now; etcdctl's --rev).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
}

pub async fn run(cli: &Cli, a: &ScanArgs) -> anyhow::Result<ExitCode> {
    let range_end = match &a.end {
        Some(e) => e.as_bytes().to_vec(),
        None => prefix_end(a.prefix.as_bytes()),
    };
    let req = pb::RangeRequest {
        key: a.prefix.as_bytes().to_vec(),
        range_end,
        limit: a.limit,
        keys_only: a.keys_only,
        count_only: a.count_only,
        serializable: a.serializable,
        revision: a.rev,
    };
    let resp = cli.client()?.range(req).await.map_err(status_error)?;
    match cli.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "count": resp.count,
                "more": resp.more,
                "revision": resp.header.map_or(0, |h| h.revision),
                "kvs": resp.kvs.iter().map(kv_json).collect::<Vec<_>>(),
            })
        ),
        Output::Table if a.count_only => println!("{}", resp.count),
        Output::Table => {
            for kv in &resp.kvs {
                if a.keys_only {
                    println!("{}", show(&kv.key));
                } else {
                    println!("{}\t{}", show(&kv.key), show(&kv.value));
                }
            }
            if resp.more {
                eprintln!("({} keys in range; showing {})", resp.count, resp.kvs.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
