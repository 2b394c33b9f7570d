//! The raftkv dashboard: a live view of a real Raft cluster in the browser, and the buttons to break it.
//!
//! - [`model`]: the view model — statuses, logs and RPC outcomes turned into what is drawn (plain Rust, tested
//!   natively).
//! - [`api`]: every call the page makes (gRPC-Web to each node, HTTP to the controller).
//! - [`state`]: the reactive state and the loops that keep it live.
//! - [`components`]: the panels.
//! - [`lab`]: the learning lab's load generator and guided experiments.
//!
//! The page talks to every node directly and polls each on its own, so it keeps working — and shows the failure —
//! when any node, including the one that answered last, dies.

pub mod api;
pub mod app;
pub mod components;
pub mod lab;
pub mod model;
pub mod state;
