//! `raftkv watch KEY [--prefix] [--rev N]`: streams changes; reconnects to another node (resuming at the next
//! revision) if the one it watches goes away.

use std::process::ExitCode;

use raftkv::keyspace::prefix_end;
use raftkv_proto as pb;

use super::{kv_json, show, status_error, Cli, Output};

#[derive(clap::Args)]
pub struct WatchArgs {
    pub key: String,
    #[arg(long)]
    pub prefix: bool,
    /// Start at this revision (default: changes from now on).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Stop after this many events (0 = never).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

pub async fn run(cli: &Cli, a: &WatchArgs) -> anyhow::Result<ExitCode> {
    let client = cli.client()?;
    let range_end = if a.prefix { prefix_end(a.key.as_bytes()) } else { vec![] };
    let mut next_rev = a.rev;
    let mut seen = 0u64;
    loop {
        let req = pb::WatchRequest {
            key: a.key.as_bytes().to_vec(),
            range_end: range_end.clone(),
            start_revision: next_rev,
            prev_kv: false,
        };
        let (addr, mut stream) = client.watch(req).await.map_err(status_error)?;
        eprintln!("watching on {addr}");
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    let rev = msg.header.as_ref().map_or(0, |h| h.revision);
                    if next_rev <= 0 {
                        next_rev = rev + 1;
                    }
                    for ev in msg.events {
                        let kv = ev.kv.unwrap_or_default();
                        next_rev = kv.mod_revision + 1;
                        let kind = if ev.r#type == pb::event::EventType::Delete as i32 { "DELETE" } else { "PUT" };
                        match cli.output {
                            Output::Table => {
                                println!("{kind}\t{}\t{}\t(rev {})", show(&kv.key), show(&kv.value), kv.mod_revision)
                            }
                            Output::Json => println!("{}", serde_json::json!({"type": kind, "kv": kv_json(&kv)})),
                        }
                        seen += 1;
                        if a.count > 0 && seen >= a.count {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                }
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::OutOfRange => return Err(status_error(s)),
                Err(s) => {
                    eprintln!("watch on {addr} broke ({}); resuming at revision {next_rev}", s.message());
                    break;
                }
            }
        }
    }
}
