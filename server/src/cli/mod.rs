//! Command-line definitions (clap) and dispatch. One file per command.

mod cas;
mod delete;
mod elect;
mod get;
mod lease;
mod lock;
mod members;
mod probe;
mod put;
mod scan;
mod serve;
mod snapshot;
mod status;
mod watch;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use raftkv::client::Client;
pub use raftkv::config::parse_duration;

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A strongly consistent, replicated key-value store",
    propagate_version = true
)]
pub struct Cli {
    /// Nodes to talk to (any subset; the client finds a live one).
    #[arg(
        long,
        global = true,
        env = "RAFTKV_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub endpoints: Vec<String>,
    /// How long a client command may take, retries included (e.g. 5s, 500ms).
    #[arg(long, global = true, env = "RAFTKV_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Trust servers whose certificate this CA (PEM) signed; endpoints default to https:// (etcdctl's --cacert).
    #[arg(long, global = true, env = "RAFTKV_CACERT")]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for servers that require one (--client-cert-auth); with --key.
    #[arg(long = "cert", id = "client_cert", global = true, env = "RAFTKV_CERT", requires = "client_key")]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long = "key", id = "client_key", global = true, env = "RAFTKV_KEY", requires = "client_cert")]
    pub key: Option<std::path::PathBuf>,
    /// Output format of client commands.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run one raftkv node.
    Serve(Box<serve::ServeArgs>),
    /// Start a local cluster of child processes on 127.0.0.1 (the quickest way to try raftkv).
    Cluster(crate::cluster::ClusterArgs),
    /// Write a key.
    Put(put::PutArgs),
    /// Read a key: prints the value alone (exit 1 if absent).
    Get(get::GetArgs),
    /// Delete a key, a prefix, or a range.
    #[command(alias = "del")]
    Delete(delete::DeleteArgs),
    /// List keys by prefix or range.
    #[command(alias = "range")]
    Scan(scan::ScanArgs),
    /// Stream changes to a key or prefix.
    Watch(watch::WatchArgs),
    /// Compare-and-swap: write a key only if its value / version / mod revision is as expected.
    #[command(alias = "txn")]
    Cas(cas::CasArgs),
    /// The status of every endpoint: role, term, leader, log indexes.
    Status,
    /// List or change cluster membership.
    Members(members::MembersArgs),
    /// Backups: save one, check one, or restore one as a new cluster's data directories.
    Snapshot(snapshot::SnapshotArgs),
    /// Leases: keys with a time to live (grant, keep-alive, revoke, ttl, list).
    Lease(lease::LeaseArgs),
    /// Hold a distributed lock while a command runs; prints the fencing revision.
    Lock(lock::LockArgs),
    /// Campaign in a leader election, or watch who leads (--listen).
    Elect(elect::ElectArgs),
    /// Measure throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Container health check: is the node on this machine live or ready? Exit 0 = yes (reads RAFTKV_HTTP).
    Probe(probe::ProbeArgs),
}

impl Cli {
    /// The client TLS files given (`--cacert`, `--cert`, `--key`).
    pub fn tls(&self) -> raftkv::tls::ClientTls {
        raftkv::tls::ClientTls { cacert: self.cacert.clone(), cert: self.cert.clone(), key: self.key.clone() }
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.endpoints.clone(), self.timeout).with_tls(self.tls())?)
    }
}

/// Prints a gRPC failure the way a person wants to read it.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Cluster(a) => crate::cluster::run(a).await,
            Command::Put(a) => put::run(&cli, a).await,
            Command::Get(a) => get::run(&cli, a).await,
            Command::Delete(a) => delete::run(&cli, a).await,
            Command::Scan(a) => scan::run(&cli, a).await,
            Command::Watch(a) => watch::run(&cli, a).await,
            Command::Cas(a) => cas::run(&cli, a).await,
            Command::Status => status::run(&cli).await,
            Command::Members(a) => members::run(&cli, a).await,
            Command::Snapshot(a) => snapshot::run(&cli, a).await,
            Command::Lease(a) => lease::run(&cli, a).await,
            Command::Lock(a) => lock::run(&cli, a).await,
            Command::Elect(a) => elect::run(&cli, a).await,
            Command::Bench(a) => crate::bench::run(&cli, a).await,
            Command::Probe(a) => probe::run(&cli, a).await,
        }
    });
    // Don't wait for lingering background tasks (open connections) on exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Renders bytes for a terminal: UTF-8 as is, anything else hex-escaped.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|b| format!("\\x{b:02x}")).collect(),
    }
}

pub fn kv_json(kv: &raftkv_proto::KeyValue) -> serde_json::Value {
    serde_json::json!({
        "key": show(&kv.key),
        "value": show(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": format!("{:x}", kv.lease),
    })
}

/// Prints rows as an aligned table.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
