//! `raftkv members [list | add ID PEER_ADDR [--client-addr ADDR] | promote ID | remove ID]`

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
    /// Add a node as a learner (it receives the log but does not vote yet). PEER_ADDR is its peer port
    /// (--advertise-peer); it must prove to be a peer before the leader sends it anything.
    Add {
        id: u64,
        peer_addr: String,
        /// Its client address (--advertise); optional, the node announces it once it runs.
        #[arg(long, default_value = "")]
        client_addr: String,
    },
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
                members
                    .iter()
                    .map(
                        |m| serde_json::json!({"id": m.id, "addr": m.addr, "peer_addr": m.peer_addr, "voter": m.voter})
                    )
                    .collect()
            )
        ),
        Output::Table => print_table(
            &["ID", "CLIENT ADDRESS", "PEER ADDRESS", "ROLE"],
            &members
                .iter()
                .map(|m| {
                    let role = if m.voter { "voter" } else { "learner" };
                    vec![m.id.to_string(), m.addr.clone(), m.peer_addr.clone(), role.to_string()]
                })
                .collect::<Vec<_>>(),
        ),
    }
}

pub async fn run(cli: &Cli, a: &MembersArgs) -> anyhow::Result<ExitCode> {
    let c = cli.client()?;
    let members = match a.action.as_ref().unwrap_or(&Action::List) {
        Action::List => c.member_list().await.map_err(status_error)?.members,
        Action::Add { id, peer_addr, client_addr } => {
            c.member_add(*id, peer_addr, client_addr).await.map_err(status_error)?.members
        }
        Action::Promote { id } => c.member_promote(*id).await.map_err(status_error)?.members,
        Action::Remove { id } => c.member_remove(*id).await.map_err(status_error)?.members,
    };
    print_members(cli, &members);
    Ok(ExitCode::SUCCESS)
}
