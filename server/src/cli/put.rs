//! `raftkv put KEY VALUE [--lease ID]`

use std::process::ExitCode;

use super::{status_error, Cli, Output};

#[derive(clap::Args)]
pub struct PutArgs {
    pub key: String,
    pub value: String,
    /// Attach the key to this lease (hexadecimal id): it is deleted when the lease expires or is revoked.
    #[arg(long, value_parser = super::lease::parse_lease_id)]
    pub lease: Option<i64>,
}

pub async fn run(cli: &Cli, a: &PutArgs) -> anyhow::Result<ExitCode> {
    let resp = cli
        .client()?
        .put_with_lease(a.key.as_bytes(), a.value.as_bytes(), a.lease.unwrap_or(0))
        .await
        .map_err(status_error)?;
    let h = resp.header.unwrap_or_default();
    match cli.output {
        Output::Table => println!("OK (revision {}, served by node {})", h.revision, h.member_id),
        Output::Json => {
            println!("{}", serde_json::json!({"revision": h.revision, "member_id": h.member_id, "term": h.raft_term}))
        }
    }
    Ok(ExitCode::SUCCESS)
}
