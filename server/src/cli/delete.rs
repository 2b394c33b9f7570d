//! `raftkv delete KEY [--prefix]`

use std::process::ExitCode;

use raftkv::keyspace::prefix_end;
use raftkv_proto as pb;

use super::{status_error, Cli, Output};

#[derive(clap::Args)]
pub struct DeleteArgs {
    pub key: String,
    /// Delete every key starting with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Delete every key in [KEY, END).
    #[arg(long, conflicts_with = "prefix")]
    pub range_end: Option<String>,
}

pub async fn run(cli: &Cli, a: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let range_end = match (&a.range_end, a.prefix) {
        (Some(end), _) => end.as_bytes().to_vec(),
        (None, true) => prefix_end(a.key.as_bytes()),
        (None, false) => vec![],
    };
    let resp = cli
        .client()?
        .delete(pb::DeleteRequest { key: a.key.as_bytes().to_vec(), range_end, prev_kv: false })
        .await
        .map_err(status_error)?;
    let h = resp.header.unwrap_or_default();
    match cli.output {
        Output::Table => println!("deleted {} (revision {})", resp.deleted, h.revision),
        Output::Json => println!("{}", serde_json::json!({"deleted": resp.deleted, "revision": h.revision})),
    }
    Ok(ExitCode::SUCCESS)
}
