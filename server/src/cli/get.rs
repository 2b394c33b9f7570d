//! `raftkv get KEY [--serializable] [--rev N]`: the value alone on stdout; exit 1 if the key is absent.

use std::{io::Write, process::ExitCode};

use super::{kv_json, status_error, Cli, Output};

#[derive(clap::Args)]
pub struct GetArgs {
    pub key: String,
    /// Read from whichever node answers, without confirming with the leader (faster, possibly stale).
    #[arg(long)]
    pub serializable: bool,
    /// Read the key as it was at this revision (0 = now; etcdctl's --rev).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
}

pub async fn run(cli: &Cli, a: &GetArgs) -> anyhow::Result<ExitCode> {
    let resp = cli.client()?.get_at(a.key.as_bytes(), a.serializable, a.rev).await.map_err(status_error)?;
    let Some(kv) = resp.kv else {
        eprintln!("key {:?} not found", a.key);
        return Ok(ExitCode::FAILURE);
    };
    match cli.output {
        Output::Table => {
            let mut out = std::io::stdout().lock();
            out.write_all(&kv.value)?;
            out.write_all(b"\n")?;
        }
        Output::Json => println!("{}", kv_json(&kv)),
    }
    Ok(ExitCode::SUCCESS)
}
