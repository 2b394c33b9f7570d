//! `raftkv lock NAME [--ttl N] [-- CMD ARGS...]`: acquires a distributed lock (etcdctl's recipe, see
//! `raftkv::client::concurrency`), prints the lock key and its fencing revision, then runs CMD while holding it
//! (with `RAFTKV_LOCK_KEY` and `RAFTKV_LOCK_REVISION` set) and releases it when CMD exits — or, without CMD,
//! holds it until Ctrl-C. If the lease is lost while CMD runs, CMD is killed and the command fails.
//!
//! A lease-based lock gives liveness, not mutual exclusion under pauses: pass the fencing revision to whatever
//! the lock protects and have it refuse a lower one than it has seen.

use std::{process::ExitCode, sync::Arc};

use raftkv::client::{
    concurrency::{campaign, Session},
    Client,
};

use super::{show, status_error, Cli, Output};

#[derive(clap::Args)]
pub struct LockArgs {
    pub name: String,
    /// The TTL of the session's lease, in seconds: how long a crashed holder keeps the lock.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
    /// The command to run while holding the lock.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Opens a session of `ttl` seconds and waits until it is first under `name` (see `campaign`): the session, its
/// key and create revision — or `None` if interrupted (Ctrl-C) first. Either way no lease is left behind on failure.
pub(super) async fn queue_up(
    client: &Arc<Client>,
    ttl: i64,
    name: &str,
    value: &[u8],
) -> anyhow::Result<Option<(Session, Vec<u8>, i64)>> {
    let session = Session::new(client.clone(), ttl).await.map_err(status_error)?;
    let queued = tokio::select! {
        r = campaign(client, &session, name, value) => r,
        _ = tokio::signal::ctrl_c() => {
            session.close().await.map_err(status_error)?;
            return Ok(None);
        }
    };
    match queued {
        Ok((key, revision)) => Ok(Some((session, key, revision))),
        Err(e) => {
            let _ = session.close().await;
            Err(status_error(e))
        }
    }
}

pub async fn run(cli: &Cli, a: &LockArgs) -> anyhow::Result<ExitCode> {
    let client = Arc::new(cli.client()?);
    let Some((session, key, revision)) = queue_up(&client, a.ttl, &a.name, b"").await? else {
        return Ok(ExitCode::FAILURE);
    };
    match cli.output {
        Output::Table => println!("{}", show(&key)),
        Output::Json => println!("{}", serde_json::json!({"key": show(&key), "fencing_revision": revision})),
    }
    eprintln!("lock {} acquired: key {}, fencing revision {revision}", a.name, show(&key));
    let code = match a.command.split_first() {
        None => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
                _ = session.lost() => {
                    eprintln!("lost the lock: the session's lease expired");
                    ExitCode::FAILURE
                }
            }
        }
        Some((program, args)) => {
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .env("RAFTKV_LOCK_KEY", show(&key))
                .env("RAFTKV_LOCK_REVISION", revision.to_string())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
            tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
                }
                _ = session.lost() => {
                    eprintln!("lost the lock: the session's lease expired; killing {program}");
                    let _ = child.kill().await;
                    ExitCode::FAILURE
                }
            }
        }
    };
    session.close().await.map_err(status_error)?;
    Ok(code)
}
