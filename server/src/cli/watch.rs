//! `raftkv watch KEY [--prefix] [--rev N]`: streams changes; reconnects to another node (resuming at the next
//! revision) if the one it watches goes away.
//!
//! Resuming: the server splits large batches over several responses, and may split one revision's events over
//! two; each response's header names the last revision it completes. The watch resumes after that revision and
//! skips the events of a partly received revision it already printed, so nothing is skipped or printed twice.

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
    // Events already printed of the revision at `next_rev` (when a response ended inside it).
    let mut printed_of_next = 0usize;
    loop {
        let req = pb::WatchRequest {
            key: a.key.as_bytes().to_vec(),
            range_end: range_end.clone(),
            start_revision: next_rev,
            prev_kv: false,
        };
        let (addr, mut stream) = client.watch(req).await.map_err(status_error)?;
        eprintln!("watching on {addr}");
        let mut skip = printed_of_next;
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    let complete = msg.header.as_ref().map_or(0, |h| h.revision);
                    for ev in msg.events {
                        let kv = ev.kv.unwrap_or_default();
                        if kv.mod_revision == next_rev && skip > 0 {
                            skip -= 1;
                            continue;
                        }
                        if kv.mod_revision == next_rev {
                            printed_of_next += 1;
                        } else if kv.mod_revision > next_rev {
                            next_rev = kv.mod_revision;
                            printed_of_next = 1;
                        }
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
                    if complete >= next_rev {
                        next_rev = complete + 1;
                        printed_of_next = 0;
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
