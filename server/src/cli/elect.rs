//! `raftkv elect NAME VALUE [--ttl N]`: campaigns to be the leader of election NAME (etcdctl's recipe, see
//! `raftkv::client::concurrency`) with VALUE as its proposal, prints it once elected with its revision, and leads
//! until Ctrl-C (then resigns). `raftkv elect NAME --listen` prints each leader's value as leadership changes.

use std::{process::ExitCode, sync::Arc};

use raftkv::client::{
    concurrency::{contenders, queue_range},
    Client,
};
use raftkv_proto as pb;

use super::{show, status_error, Cli, Output};

#[derive(clap::Args)]
pub struct ElectArgs {
    pub name: String,
    /// The proposal: what this contender's key holds while it leads.
    #[arg(required_unless_present = "listen")]
    pub value: Option<String>,
    /// Only observe: print the leader's value whenever it changes.
    #[arg(long, conflicts_with = "value")]
    pub listen: bool,
    /// The TTL of the session's lease, in seconds: how long a crashed leader stays leader.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

pub async fn run(cli: &Cli, a: &ElectArgs) -> anyhow::Result<ExitCode> {
    let client = Arc::new(cli.client()?);
    let Some(value) = &a.value else { return listen(cli, &client, &a.name).await };
    let Some((session, key, revision)) = super::lock::queue_up(&client, a.ttl, &a.name, value.as_bytes()).await? else {
        return Ok(ExitCode::FAILURE);
    };
    print_leader(cli, &a.name, &key, value.as_bytes(), revision);
    let code = tokio::select! {
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        _ = session.lost() => {
            eprintln!("lost leadership: the session's lease expired");
            ExitCode::FAILURE
        }
    };
    session.close().await.map_err(status_error)?;
    Ok(code)
}

fn print_leader(cli: &Cli, name: &str, key: &[u8], value: &[u8], revision: i64) {
    match cli.output {
        Output::Table => println!("{}", show(value)),
        Output::Json => println!(
            "{}",
            serde_json::json!({"election": name, "key": show(key), "value": show(value), "revision": revision})
        ),
    }
}

/// Prints the leader of `name` now and after every change, until Ctrl-C.
async fn listen(cli: &Cli, client: &Client, name: &str) -> anyhow::Result<ExitCode> {
    let mut shown: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        let (kvs, revision) = contenders(client, name).await.map_err(status_error)?;
        if let Some(first) = kvs.first() {
            let now = (first.key.clone(), first.value.clone());
            if shown.as_ref() != Some(&now) {
                print_leader(cli, name, &first.key, &first.value, first.create_revision);
                shown = Some(now);
            }
        }
        let (key, range_end) = queue_range(name);
        let req = pb::WatchRequest { key, range_end, start_revision: revision + 1, prev_kv: false };
        let (_, mut stream) = client.watch(req).await.map_err(status_error)?;
        tokio::select! {
            _ = stream.message() => {} // any change: read the queue again
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}
