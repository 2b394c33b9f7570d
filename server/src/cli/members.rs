//! `raftkv members [list | add ID ADDR | promote ID | remove ID]`

use std::process::ExitCode;

use clap::Subcommand;
use raftkv_proto as pb;

use super::{print_table, status_error, Cli, Output};

#[derive(clap::Args)]
pub struct MembersArgs {
    #[command(subcommand)]
    pub action: Option<Action>,
}

#[derive(Subcommand)]
pub enum Action {
    /// List members (the default).
    List,
    /// Add a node as a learner (it receives the log but does not vote yet).
    Add { id: u64, addr: String },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a member.
    Remove { id: u64 },
}

fn print_members(cli: &Cli, members: &[pb::Member]) {
    match cli.output {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(
                members.iter().map(|m| serde_json::json!({"id": m.id, "addr": m.addr, "voter": m.voter})).collect()
            )
        ),
        Output::Table => print_table(
            &["ID", "ADDRESS", "ROLE"],
            &members
                .iter()
                .map(|m| vec![m.id.to_string(), m.addr.clone(), if m.voter { "voter" } else { "learner" }.to_string()])
                .collect::<Vec<_>>(),
        ),
    }
}

pub async fn run(cli: &Cli, a: &MembersArgs) -> anyhow::Result<ExitCode> {
    let c = cli.client();
    let members = match a.action.as_ref().unwrap_or(&Action::List) {
        Action::List => c.member_list().await.map_err(status_error)?.members,
        Action::Add { id, addr } => c.member_add(*id, addr).await.map_err(status_error)?.members,
        Action::Promote { id } => c.member_promote(*id).await.map_err(status_error)?.members,
        Action::Remove { id } => c.member_remove(*id).await.map_err(status_error)?.members,
    };
    print_members(cli, &members);
    Ok(ExitCode::SUCCESS)
}
