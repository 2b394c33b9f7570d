//! `raftkv probe`: a container health check that needs nothing but the raftkv binary.
//!
//! It asks the node on this machine over its HTTP port whether it is live (`/healthz`) or ready (`/readyz`) and
//! exits 0 only on `200 OK`. It reads the node's own settings from the same environment `raftkv serve` does
//! (`RAFTKV_HTTP`, `RAFTKV_CERT_FILE`), so one command works in an image with or without TLS: an unspecified
//! listen address (0.0.0.0, [::]) is probed on loopback, and a node with `--cert-file` is probed over TLS without
//! checking its certificate (see [`raftkv::tls::probe_connector`]). The HTTP port never asks for a client
//! certificate.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::Cli;

#[derive(Args)]
pub struct ProbeArgs {
    /// `live`: the node runs and has not hit a fatal error (/healthz); `ready`: it can serve linearizable requests
    /// (/readyz).
    #[arg(value_enum, default_value_t = Probe::Ready)]
    pub probe: Probe,
    /// The node's HTTP address (its --http); an unspecified address is probed on loopback.
    #[arg(long, env = "RAFTKV_HTTP")]
    pub http: SocketAddr,
    /// The node's --cert-file: when set, its HTTP port speaks TLS.
    #[arg(long, env = "RAFTKV_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Probe {
    Live,
    Ready,
}

pub async fn run(cli: &Cli, a: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let path = match a.probe {
        Probe::Live => "/healthz",
        Probe::Ready => "/readyz",
    };
    let addr = loopback_if_unspecified(a.http);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let connector = a.cert_file.as_ref().map(|_| raftkv::tls::probe_connector()).transpose()?;
    let target = addr.to_string();
    let exchange = raftkv::tls::http_exchange(&target, request, connector);
    let response = tokio::time::timeout(cli.timeout, exchange)
        .await
        .with_context(|| format!("{addr}{path} did not answer within {:?}", cli.timeout))?
        .with_context(|| format!("{addr}{path}"))?;
    let status = response.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/") {
        let hint = if a.cert_file.is_none() { " (a TLS port? then pass the node's --cert-file here too)" } else { "" };
        anyhow::bail!("{addr}{path}: not an HTTP answer{hint}");
    }
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    println!("{body}");
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{addr}{path}: {status}");
        Ok(ExitCode::FAILURE)
    }
}

/// `0.0.0.0:7101` listens on every address of this machine; the probe dials the loopback one.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let p = |s: &str| loopback_if_unspecified(s.parse().unwrap()).to_string();
        assert_eq!(p("0.0.0.0:7101"), "127.0.0.1:7101");
        assert_eq!(p("[::]:7101"), "[::1]:7101");
        assert_eq!(p("10.0.0.5:7101"), "10.0.0.5:7101");
    }
}
