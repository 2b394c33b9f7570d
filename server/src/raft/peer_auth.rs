//! Peer authentication without TLS: the peer secret, used so that it never travels.
//!
//! Every peer message (request and reply) carries a random nonce, the time it was made, and an HMAC-SHA256 under
//! the shared secret over everything else in the envelope — the direction and RPC, sender, receiver, cluster,
//! version, client address, time, nonce and body. A reply carries the *request's* nonce, so its MAC answers the
//! request's challenge: only a holder of the secret can produce it.
//!
//! Invariants:
//! - The secret is never sent, in any form an eavesdropper can reuse for another message: a MAC binds the receiver
//!   id and the body, so a captured message cannot be redirected to another node or given another body.
//! - A sender proves the other end before it sends anything that matters: [`PeerClient`] opens every connection
//!   with `Hello` (an empty body) and sends Raft data only once the reply's MAC checks out. An address named by a
//!   client (`MemberAdd`) that cannot answer the challenge receives neither the secret nor any data.
//! - Messages older or newer than [`MAX_SKEW`] are refused (a bound on replays; TLS removes them entirely).
//!
//! With peer TLS the certificates do this job (both ends must hold a certificate of the peer CA); the secret, if
//! also set, is checked as well.
//!
//! [`PeerClient`]: super::network::PeerClient

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use raftkv_proto::PeerMessage;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::NodeId;

/// Clock difference tolerated between peers.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// A shared secret of at least 8 printable characters (checked by the config).
#[derive(Clone)]
pub struct PeerSecret(Vec<u8>);

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(…)")
    }
}

/// Which message a MAC is for: request or reply, and of which RPC (a reply cannot pass as a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Reply,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl PeerSecret {
    pub fn new(secret: &str) -> Self {
        Self(secret.as_bytes().to_vec())
    }

    fn mac(&self, dir: Direction, rpc: &str, m: &PeerMessage) -> Vec<u8> {
        let mut h = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        h.update(match dir {
            Direction::Request => b"raftkv-peer-request\0",
            Direction::Reply => b"raftkv-peer-reply\0\0\0",
        });
        h.update(rpc.as_bytes());
        h.update(&[0]);
        for n in [m.from, m.to, m.cluster_id, u64::from(m.version), m.sent_at_ms] {
            h.update(&n.to_be_bytes());
        }
        for field in [m.client_addr.as_bytes(), &m.nonce, &m.body] {
            h.update(&(field.len() as u64).to_be_bytes());
            h.update(field);
        }
        h.finalize().into_bytes().to_vec()
    }

    /// Stamps `m` (time, and `nonce` — fresh for a request, the request's for a reply) and signs it.
    pub fn sign(&self, dir: Direction, rpc: &str, m: &mut PeerMessage, nonce: Vec<u8>) {
        m.sent_at_ms = now_ms();
        m.nonce = nonce;
        m.mac = self.mac(dir, rpc, m);
    }

    /// Checks a message's MAC, freshness and (for a reply) that it answers `expected_nonce`.
    pub fn verify(
        &self,
        dir: Direction,
        rpc: &str,
        m: &PeerMessage,
        expected_nonce: Option<&[u8]>,
    ) -> Result<(), String> {
        if m.mac.is_empty() {
            return Err("the message is not authenticated (set the same peer secret on every node)".into());
        }
        let want = self.mac(dir, rpc, m);
        // Constant-time comparison: no timing hint about how much of a forgery was right.
        let ok = want.len() == m.mac.len() && want.iter().zip(&m.mac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !ok {
            return Err("the message's MAC is wrong (a different peer secret, or a forged message)".into());
        }
        let skew = now_ms().abs_diff(m.sent_at_ms);
        if skew > MAX_SKEW.as_millis() as u64 {
            return Err(format!("the message is {} s away from this node's clock (limit {MAX_SKEW:?})", skew / 1000));
        }
        if let Some(n) = expected_nonce {
            if m.nonce != n {
                return Err("the reply does not answer this request's challenge".into());
            }
        }
        Ok(())
    }
}

/// A fresh random nonce.
pub fn nonce() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

/// What a node says of itself in answer to `Hello`: enough for a new node to tell whether the cluster it is
/// about to bootstrap already exists and counts it as a member (see `node::refuse_amnesia`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloInfo {
    pub node_id: NodeId,
    pub cluster_id: u64,
    /// Whether this node holds a membership (it bootstrapped or joined a cluster).
    pub initialized: bool,
    /// The members it knows: id, peer address, client address ("" until the member announced it, in the
    /// membership or in a message to this node).
    pub members: Vec<(NodeId, String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> PeerMessage {
        PeerMessage { from: 1, to: 2, cluster_id: 7, version: 1, body: b"entries".to_vec(), ..Default::default() }
    }

    #[test]
    fn a_signed_message_verifies_and_any_change_breaks_it() {
        let s = PeerSecret::new("correct horse");
        let mut m = msg();
        s.sign(Direction::Request, "append", &mut m, nonce());
        assert!(s.verify(Direction::Request, "append", &m, None).is_ok());
        assert!(m.body == b"entries" && !m.mac.is_empty(), "signing keeps the body and adds a MAC");
        assert!(!m.mac.windows(13).any(|w| w == b"correct horse"), "the secret itself is not in the message");

        let other = PeerSecret::new("battery staple");
        assert!(other.verify(Direction::Request, "append", &m, None).unwrap_err().contains("MAC is wrong"));
        assert!(s.verify(Direction::Reply, "append", &m, None).is_err(), "a request cannot pass as a reply");
        assert!(s.verify(Direction::Request, "vote", &m, None).is_err(), "bound to the RPC");
        for tamper in [
            |m: &mut PeerMessage| m.to = 3,
            |m: &mut PeerMessage| m.body.push(0),
            |m: &mut PeerMessage| m.cluster_id = 0,
            |m: &mut PeerMessage| m.client_addr = "evil:1".into(),
        ] {
            let mut t = m.clone();
            tamper(&mut t);
            assert!(s.verify(Direction::Request, "append", &t, None).is_err());
        }
        let mut unsigned = msg();
        unsigned.mac.clear();
        assert!(s.verify(Direction::Request, "append", &unsigned, None).unwrap_err().contains("not authenticated"));
    }

    #[test]
    fn a_reply_must_answer_the_challenge_and_be_fresh() {
        let s = PeerSecret::new("correct horse");
        let challenge = nonce();
        let mut reply = msg();
        s.sign(Direction::Reply, "hello", &mut reply, challenge.clone());
        assert!(s.verify(Direction::Reply, "hello", &reply, Some(&challenge)).is_ok());
        assert!(s.verify(Direction::Reply, "hello", &reply, Some(&nonce())).unwrap_err().contains("challenge"));
        let mut stale = msg();
        s.sign(Direction::Request, "hello", &mut stale, nonce());
        stale.sent_at_ms -= MAX_SKEW.as_millis() as u64 + 1000;
        stale.mac = s.mac(Direction::Request, "hello", &stale);
        assert!(s.verify(Direction::Request, "hello", &stale, None).unwrap_err().contains("clock"));
    }
}
