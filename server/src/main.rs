//! The `raftkv` binary: a node (`serve`), a local cluster (`cluster`), client commands and `bench`.

mod bench;
mod cli;
mod cluster;

fn main() -> std::process::ExitCode {
    cli::main()
}
