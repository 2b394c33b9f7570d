//! `raftkv snapshot save FILE` / `restore FILE --data-dir DIR --id N` / `status FILE`: backup and disaster
//! recovery (etcd's `etcdctl snapshot save` and `etcdutl snapshot restore`).

use std::{io::Write, path::PathBuf, process::ExitCode};

use raftkv_proto::etcd::{maintenance_client::MaintenanceClient, SnapshotRequest};

use super::{status_error, Cli, Output};

#[derive(clap::Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(clap::Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent backup of the whole state (every key, its versions and the revision) from one endpoint.
    Save { file: PathBuf },
    /// Make DIR the data directory of member ID of a new cluster that starts from the backup; start every member
    /// so restored with `raftkv serve --id ID --data-dir DIR --initial-cluster ...` (the new cluster's members).
    Restore {
        file: PathBuf,
        /// The new member's data directory (new or empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// The new member's id.
        #[arg(long)]
        id: u64,
    },
    /// Check a backup and print its revision and key count.
    Status { file: PathBuf },
}

pub async fn run(cli: &Cli, a: &SnapshotArgs) -> anyhow::Result<ExitCode> {
    match &a.command {
        SnapshotCommand::Save { file } => save(cli, file).await,
        SnapshotCommand::Restore { file, data_dir, id } => {
            let r = raftkv::backup::restore(file, data_dir, *id)?;
            report(cli, "restored", file, r.revision, r.keys);
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Status { file } => {
            let bytes = std::fs::read(file)?;
            let state = raftkv::backup::open(&bytes)?;
            let (revision, keys) = raftkv::raft::state_machine::check_restorable(state).map_err(anyhow::Error::msg)?;
            report(cli, "backup", file, revision, keys);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report(cli: &Cli, what: &str, file: &std::path::Path, revision: i64, keys: usize) {
    match cli.output {
        Output::Json => println!("{}", serde_json::json!({ "file": file, "revision": revision, "keys": keys })),
        Output::Table => println!("{what} {}: revision {revision}, {keys} keys", file.display()),
    }
}

async fn save(cli: &Cli, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let client = cli.client()?;
    let mut last = None;
    for addr in client.endpoints() {
        let mut m =
            MaintenanceClient::new(client.channel(addr).map_err(status_error)?).max_decoding_message_size(64 << 20);
        let mut stream = match m.snapshot(SnapshotRequest {}).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                last = Some(status_error(e));
                continue;
            }
        };
        let mut bytes = Vec::new();
        while let Some(piece) = stream.message().await.map_err(status_error)? {
            bytes.extend_from_slice(&piece.blob);
        }
        let state = raftkv::backup::open(&bytes)?;
        let (revision, keys) = raftkv::raft::state_machine::check_restorable(state).map_err(anyhow::Error::msg)?;
        // Written beside the target, fsynced, then renamed: a crash leaves no half backup under its name.
        let tmp = file.with_extension("part");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        report(cli, &format!("saved (from {addr})"), file, revision, keys);
        return Ok(ExitCode::SUCCESS);
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no endpoint answered")))
}
