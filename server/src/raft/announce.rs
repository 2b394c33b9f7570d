//! Members announce their client addresses; the leader records them in the membership.
//!
//! `--initial-cluster` lists peer addresses only (as etcd's does), so a bootstrapped member is known by its peer
//! address until it has spoken: every peer message carries the sender's client address, and the leader, once it
//! has heard a member's (or for itself), writes it into the membership with openraft's `SetNodes` (only the
//! client address changes; peer addresses never do, so this cannot split the cluster).
//!
//! A recorded client address also means "this member has run and taken part": a member whose data directory is
//! later found empty is refusing to forget (see `node::refuse_amnesia`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use openraft::ChangeMembers;

use super::{network::NetworkShared, Node, NodeId, Raft};

/// How often the leader compares the membership with what members announced.
const PERIOD: Duration = Duration::from_millis(500);

/// Runs until `stop` resolves.
pub fn spawn(raft: Raft, network: Arc<NetworkShared>, stop: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(PERIOD);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let changes = {
                let m = raft.metrics().borrow().clone();
                if m.current_leader != Some(network.id) {
                    continue;
                }
                let announced = network.client_addrs.lock().clone();
                stale_nodes(network.id, &network.client_addr, m.membership_config.membership().nodes(), &announced)
            };
            if changes.is_empty() {
                continue;
            }
            // Fails harmlessly while another membership change is in progress: tried again next tick.
            match raft.change_membership(ChangeMembers::SetNodes(changes.clone()), false).await {
                Ok(_) => tracing::info!(nodes = ?changes, "recorded members' client addresses"),
                Err(e) => tracing::debug!("recording client addresses: {e}"),
            }
        }
    });
}

/// The members whose recorded client address differs from the one they announced, with the new one.
fn stale_nodes<'a>(
    me: NodeId,
    my_addr: &str,
    nodes: impl Iterator<Item = (&'a NodeId, &'a Node)>,
    announced: &BTreeMap<NodeId, String>,
) -> BTreeMap<NodeId, Node> {
    nodes
        .filter_map(|(id, n)| {
            let addr = if *id == me { Some(my_addr) } else { announced.get(id).map(String::as_str) };
            match addr {
                Some(a) if !a.is_empty() && a != n.addr => {
                    Some((*id, Node { addr: a.to_string(), peer_addr: n.peer_addr.clone() }))
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_client_addresses_are_rewritten_and_peer_addresses_kept() {
        let nodes = BTreeMap::from([
            (1, Node { addr: String::new(), peer_addr: "p1:1".into() }),
            (2, Node { addr: "c2:1".into(), peer_addr: "p2:1".into() }),
            (3, Node { addr: String::new(), peer_addr: "p3:1".into() }),
        ]);
        let announced = BTreeMap::from([(2, "c2:1".to_string()), (3, "c3:1".to_string())]);
        let out = stale_nodes(1, "c1:1", nodes.iter(), &announced);
        assert_eq!(
            out,
            BTreeMap::from([
                (1, Node { addr: "c1:1".into(), peer_addr: "p1:1".into() }),
                (3, Node { addr: "c3:1".into(), peer_addr: "p3:1".into() }),
            ])
        );
        assert!(stale_nodes(1, "", BTreeMap::new().iter(), &announced).is_empty());
    }
}
