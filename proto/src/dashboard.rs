//! The JSON the dashboard reads over plain HTTP, shared by the server (which writes it) and the browser app (which
//! reads it), so the two cannot drift apart.
//!
//! - `GET /api/cluster` → [`ClusterInfo`]: which nodes to talk to (their gRPC-Web base URLs) and whether this
//!   server controls their processes (`raftkv cluster`) or only serves the files (`raftkv serve --web-dir`).
//! - `POST /api/nodes/{id}/{action}` (control only; [`NodeAction`]) → [`NodeInfo`] after the action.
//! - `POST /api/nodes` (control only) starts one more node that joins as a learner → its [`NodeInfo`].
//! - `DELETE /api/nodes/{id}` (control only) stops a node's process and forgets it (after it left the
//!   membership).
//!
//! Errors are a status code with a plain-text, human-readable body.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// True when the server owns the node processes and accepts [`NodeAction`]s.
    pub control: bool,
    pub nodes: Vec<NodeInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Known when the server started the node; otherwise the browser learns it from the node's `Status`.
    pub id: Option<u64>,
    /// Base URL for gRPC-Web calls, e.g. `http://127.0.0.1:7001`.
    pub url: String,
    /// The node's HTTP address (metrics, health), when known.
    pub http: Option<String>,
    /// The process as its owner sees it (control mode only).
    pub process: Option<ProcessState>,
    /// Cut off from its peers through the fault-injection hook.
    #[serde(default)]
    pub partitioned: bool,
    /// A note for people: how it exited, where its log is.
    #[serde(default)]
    pub note: String,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    Running,
    /// SIGSTOP: alive but frozen (no heartbeats, no replies) until resumed.
    Paused,
    /// Not running: stopped, killed or exited on its own (see `note`).
    Down,
}

/// What the control API can do to one node's process.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeAction {
    /// SIGKILL: a crash; nothing is flushed.
    Kill,
    /// SIGTERM: a clean shutdown.
    Stop,
    /// Start it again (after a stop or kill), or stop and start a running one.
    Restart,
    /// SIGSTOP.
    Pause,
    /// SIGCONT.
    Resume,
    /// Drop all Raft traffic between it and every other node.
    Partition,
    /// Undo `Partition`.
    Heal,
}

impl NodeAction {
    pub const ALL: [NodeAction; 7] = [
        NodeAction::Kill,
        NodeAction::Stop,
        NodeAction::Restart,
        NodeAction::Pause,
        NodeAction::Resume,
        NodeAction::Partition,
        NodeAction::Heal,
    ];

    /// The path segment: `kill`, `stop`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAction::Kill => "kill",
            NodeAction::Stop => "stop",
            NodeAction::Restart => "restart",
            NodeAction::Pause => "pause",
            NodeAction::Resume => "resume",
            NodeAction::Partition => "partition",
            NodeAction::Heal => "heal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_path_segment() {
        for a in NodeAction::ALL {
            assert_eq!(NodeAction::parse(a.as_str()), Some(a));
        }
        assert_eq!(NodeAction::parse("explode"), None);
    }

    #[test]
    fn json_shape_is_stable() {
        let info = ClusterInfo {
            control: true,
            nodes: vec![NodeInfo {
                id: Some(1),
                url: "http://127.0.0.1:7001".into(),
                http: None,
                process: Some(ProcessState::Paused),
                partitioned: false,
                note: String::new(),
            }],
        };
        let json = serde_json::to_string(&info).unwrap();
        assert!(json.contains(r#""process":"paused""#), "{json}");
        assert_eq!(serde_json::from_str::<ClusterInfo>(&json).unwrap(), info);
    }
}
