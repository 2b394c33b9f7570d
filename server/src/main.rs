//! The `raftkv` binary: a node (`serve`), a local cluster (`cluster`), client commands and `bench`.

mod bench;
mod cli;
mod cluster;

// musl's malloc takes one lock for every allocation; the static build of the image uses mimalloc instead.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
