//! `raftkv get KEY [--serializable]`: the value alone on stdout; exit 1 if the key is absent.

use std::{io::Write, process::ExitCode};

use super::{kv_json, status_error, Cli, Output};

#[derive(clap::Args)]
pub struct GetArgs {
    pub key: String,
    /// Read from whichever node answers, without confirming with the leader (faster, possibly stale).
    #[arg(long)]
    pub serializable: bool,
}

pub async fn run(cli: &Cli, a: &GetArgs) -> anyhow::Result<ExitCode> {
    let resp = cli.client()?.get(a.key.as_bytes(), a.serializable).await.map_err(status_error)?;
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
