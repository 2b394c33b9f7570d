//! `raftkv lease grant TTL | keep-alive ID [--once] | revoke ID | ttl ID [--keys] | list`
//!
//! Lease ids are printed and read in hexadecimal, as etcdctl does, so the two tools can be mixed.

use std::process::ExitCode;

use raftkv::client::{concurrency::renew_every, Client};

use super::{show, status_error, Cli, Output};

#[derive(clap::Args)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub command: LeaseCommand,
}

#[derive(clap::Subcommand)]
pub enum LeaseCommand {
    /// Grants a lease of TTL seconds (raised to the cluster's minimum) and prints its id.
    Grant {
        ttl: i64,
        /// Ask for this id (hexadecimal) instead of letting the server pick one.
        #[arg(long, value_parser = parse_lease_id)]
        id: Option<i64>,
    },
    /// Keeps a lease alive until Ctrl-C (renewing every third of its TTL), or renews it once.
    KeepAlive {
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        #[arg(long)]
        once: bool,
    },
    /// Revokes a lease: every key attached to it is deleted, at one revision.
    Revoke {
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Shows a lease's remaining and granted TTL (and with --keys its keys).
    #[command(alias = "timetolive")]
    Ttl {
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        #[arg(long)]
        keys: bool,
    },
    /// Lists every lease's id.
    List,
}

/// Parses a lease id as etcdctl prints it: hexadecimal, with or without `0x`.
pub fn parse_lease_id(s: &str) -> Result<i64, String> {
    let hex = s.trim().trim_start_matches("0x");
    match i64::from_str_radix(hex, 16) {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!("{s:?} is not a lease id (a positive hexadecimal number, as `lease grant` prints)")),
    }
}

pub async fn run(cli: &Cli, a: &LeaseArgs) -> anyhow::Result<ExitCode> {
    let client = cli.client()?;
    match &a.command {
        LeaseCommand::Grant { ttl, id } => {
            let r = client.lease_grant(*ttl, id.unwrap_or(0)).await.map_err(status_error)?;
            let revision = r.header.map_or(0, |h| h.revision);
            match cli.output {
                Output::Table => println!("lease {:x} granted with TTL({}s)", r.id, r.ttl),
                Output::Json => {
                    println!("{}", serde_json::json!({"id": format!("{:x}", r.id), "ttl": r.ttl, "revision": revision}))
                }
            }
        }
        LeaseCommand::KeepAlive { id, once } => return keep_alive(cli, &client, *id, *once).await,
        LeaseCommand::Revoke { id } => {
            let r = client.lease_revoke(*id).await.map_err(status_error)?;
            let revision = r.header.map_or(0, |h| h.revision);
            match cli.output {
                Output::Table => println!("lease {id:x} revoked (revision {revision})"),
                Output::Json => {
                    println!("{}", serde_json::json!({"id": format!("{id:x}"), "revision": revision}))
                }
            }
        }
        LeaseCommand::Ttl { id, keys } => {
            let r = client.lease_time_to_live(*id, *keys).await.map_err(status_error)?;
            let names: Vec<String> = r.keys.iter().map(|k| show(k)).collect();
            match cli.output {
                Output::Table if r.ttl == -1 => println!("lease {id:x} already expired"),
                Output::Table if *keys => println!(
                    "lease {id:x} granted with TTL({}s), remaining({}s), attached keys({})",
                    r.granted_ttl,
                    r.ttl,
                    names.join(", ")
                ),
                Output::Table => println!("lease {id:x} granted with TTL({}s), remaining({}s)", r.granted_ttl, r.ttl),
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"id": format!("{id:x}"), "ttl": r.ttl, "granted_ttl": r.granted_ttl, "keys": names})
                ),
            }
        }
        LeaseCommand::List => {
            let r = client.lease_list().await.map_err(status_error)?;
            let ids: Vec<String> = r.ids.iter().map(|id| format!("{id:x}")).collect();
            match cli.output {
                Output::Table => {
                    println!("found {} leases", ids.len());
                    ids.iter().for_each(|id| println!("{id}"));
                }
                Output::Json => println!("{}", serde_json::json!({"ids": ids})),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Renews `id` every third of its TTL until Ctrl-C (or once). Fails once the lease is gone, or when a renewal
/// could not be made before the lease would have run out.
async fn keep_alive(cli: &Cli, client: &Client, id: i64, once: bool) -> anyhow::Result<ExitCode> {
    loop {
        let r = client.lease_keep_alive_once(id).await.map_err(status_error)?;
        if r.ttl <= 0 {
            eprintln!("lease {id:x} expired or revoked");
            return Ok(ExitCode::FAILURE);
        }
        match cli.output {
            Output::Table => println!("lease {id:x} keepalived with TTL({})", r.ttl),
            Output::Json => println!("{}", serde_json::json!({"id": format!("{id:x}"), "ttl": r.ttl})),
        }
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(renew_every(r.ttl)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}
