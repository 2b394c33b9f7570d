//! The history model: what the chaos clients record, and what the checker reads.
//!
//! A history is a flat list of [`Op`]s, one per client request, each with the interval in which it
//! was in flight (`invoke_ns` to `complete_ns`, from one monotonic clock shared by all clients) and
//! what the client learned about it ([`Outcome`]):
//!
//! - [`Outcome::Ok`]: the request took effect exactly once, at some instant inside its interval,
//!   with the recorded result (a read's value, a compare-and-swap's success).
//! - [`Outcome::Fail`]: the request definitely had no effect (e.g. rejected before it was proposed).
//!   The checker drops it.
//! - [`Outcome::Unknown`]: the client gave up (timeout, broken connection). The request may have
//!   taken effect at any instant after `invoke_ns` — even after `complete_ns`, which only says when
//!   the client stopped waiting — or never. An unknown read carries no information; an unknown
//!   compare-and-swap may or may not have succeeded.
//!
//! Invariants of a well-formed history ([`validate`] checks them): op ids are unique, and no op
//! completes before it is invoked. Histories are stored as JSON ([`to_json`], [`from_json`]): an
//! array with one op per line, so that a failing run's history diffs and greps well.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A register value. Keys map to values; an absent key is `None` wherever a value is optional.
pub type Value = String;

/// What an operation did to (or saw in) its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// Set the key to `value`.
    Put { value: Value },
    /// Linearizable read; `result` is what it returned (None = key absent). Meaningful only when
    /// the outcome is [`Outcome::Ok`].
    Get { result: Option<Value> },
    /// Remove the key.
    Delete,
    /// Compare-and-swap: if the current value == `expect` (None = absent) then set it to `new`.
    /// `succeeded` is what the server said (meaningful only when the outcome is [`Outcome::Ok`]).
    Cas { expect: Option<Value>, new: Value, succeeded: bool },
}

impl OpKind {
    /// Whether the operation can change the key (put, delete, compare-and-swap).
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get { .. })
    }
}

/// What the client learned about an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Took effect exactly once inside its interval, with the recorded result.
    Ok,
    /// Definitely had no effect.
    Fail,
    /// May or may not have taken effect, at any instant after its invocation.
    Unknown,
}

/// One client request against one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the history.
    pub id: u64,
    /// The client that issued it. Each client has at most one request in flight.
    pub process: u64,
    pub key: String,
    pub kind: OpKind,
    /// When the request was sent (monotonic nanoseconds).
    pub invoke_ns: u64,
    /// When the reply arrived; for [`Outcome::Unknown`] ops, when the client gave up (the effect may
    /// happen any time after `invoke_ns`, even after this).
    pub complete_ns: u64,
    pub outcome: Outcome,
}

/// Renders an op for reports, e.g. `#12 p3 get -> "a" [1000, 2000]` or
/// `#7 p1 put "b" [1000, ?) unknown, gave up at 2000`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} p{} ", self.id, self.process)?;
        let ok = self.outcome == Outcome::Ok;
        match &self.kind {
            OpKind::Put { value } => write!(f, "put {value:?}")?,
            // A get's result is only meaningful when it completed; don't print noise.
            OpKind::Get { result } if ok => write!(f, "get -> {}", ShowValue(result.as_ref()))?,
            OpKind::Get { .. } => write!(f, "get")?,
            OpKind::Delete => write!(f, "delete")?,
            OpKind::Cas { expect, new, succeeded } => {
                write!(f, "cas {} -> {new:?}", ShowValue(expect.as_ref()))?;
                if ok {
                    write!(f, " {}", if *succeeded { "(succeeded)" } else { "(failed)" })?;
                }
            }
        }
        match self.outcome {
            Outcome::Ok => write!(f, " [{}, {}]", self.invoke_ns, self.complete_ns),
            Outcome::Fail => write!(f, " [{}, {}] failed", self.invoke_ns, self.complete_ns),
            Outcome::Unknown => {
                write!(f, " [{}, ?) unknown, gave up at {}", self.invoke_ns, self.complete_ns)
            }
        }
    }
}

/// Displays an optional register value: `"v"` (quoted and escaped) or `absent`.
pub(crate) struct ShowValue<'a>(pub(crate) Option<&'a Value>);

impl fmt::Display for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value:?}"),
            None => f.write_str("absent"),
        }
    }
}

/// Why a history cannot be read or checked.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("malformed history JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("op id {0} appears more than once in the history")]
    DuplicateId(u64),
    #[error("op #{id} completes at {complete_ns} ns, before it is invoked at {invoke_ns} ns")]
    CompletesBeforeInvoke { id: u64, invoke_ns: u64, complete_ns: u64 },
}

/// Checks the invariants the checker relies on: unique ids, and `invoke_ns <= complete_ns`.
///
/// The checker does not re-check them: an `Ok` op that completes before it is invoked can never be
/// placed and shows up as a violation, and duplicate ids make reports ambiguous.
pub fn validate(ops: &[Op]) -> Result<(), HistoryError> {
    let mut ids = HashSet::with_capacity(ops.len());
    for op in ops {
        if !ids.insert(op.id) {
            return Err(HistoryError::DuplicateId(op.id));
        }
        if op.complete_ns < op.invoke_ns {
            return Err(HistoryError::CompletesBeforeInvoke {
                id: op.id,
                invoke_ns: op.invoke_ns,
                complete_ns: op.complete_ns,
            });
        }
    }
    Ok(())
}

/// Serializes a history as a JSON array with one op per line.
pub fn to_json(ops: &[Op]) -> Result<String, HistoryError> {
    let mut out = String::from("[");
    for (i, op) in ops.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        out.push_str(&serde_json::to_string(op)?);
    }
    out.push_str("\n]\n");
    Ok(out)
}

/// Parses a history written by [`to_json`] (or any JSON array of ops) and [`validate`]s it.
pub fn from_json(json: &str) -> Result<Vec<Op>, HistoryError> {
    let ops: Vec<Op> = serde_json::from_str(json)?;
    validate(&ops)?;
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, kind: OpKind, outcome: Outcome) -> Op {
        Op { id, process: id % 3, key: "k".into(), kind, invoke_ns: id * 10, complete_ns: id * 10 + 5, outcome }
    }

    fn sample() -> Vec<Op> {
        vec![
            op(1, OpKind::Put { value: "a\"b".into() }, Outcome::Ok),
            op(2, OpKind::Get { result: None }, Outcome::Ok),
            op(3, OpKind::Delete, Outcome::Fail),
            op(4, OpKind::Cas { expect: Some("a".into()), new: "b".into(), succeeded: true }, Outcome::Unknown),
        ]
    }

    #[test]
    fn json_round_trip() {
        let ops = sample();
        let json = to_json(&ops).unwrap();
        assert_eq!(json.lines().count(), ops.len() + 2, "one op per line:\n{json}");
        assert_eq!(from_json(&json).unwrap(), ops);
        assert_eq!(from_json(&to_json(&[]).unwrap()).unwrap(), vec![]);
    }

    #[test]
    fn validate_rejects_bad_histories() {
        let mut ops = sample();
        ops[2].id = 1;
        assert!(matches!(validate(&ops), Err(HistoryError::DuplicateId(1))));
        let mut ops = sample();
        ops[1].complete_ns = ops[1].invoke_ns - 1;
        assert!(matches!(validate(&ops), Err(HistoryError::CompletesBeforeInvoke { id: 2, .. })));
        let json = to_json(&ops).unwrap();
        assert!(from_json(&json).is_err());
        assert!(matches!(from_json("[{\"id\": 1}]"), Err(HistoryError::Json(_))));
    }

    #[test]
    fn display() {
        let ops = sample();
        assert_eq!(ops[0].to_string(), r#"#1 p1 put "a\"b" [10, 15]"#);
        assert_eq!(ops[1].to_string(), "#2 p2 get -> absent [20, 25]");
        assert_eq!(ops[2].to_string(), "#3 p0 delete [30, 35] failed");
        assert_eq!(ops[3].to_string(), r#"#4 p1 cas "a" -> "b" [40, ?) unknown, gave up at 45"#);
        let cas = op(5, OpKind::Cas { expect: None, new: "c".into(), succeeded: false }, Outcome::Ok);
        assert_eq!(cas.to_string(), r#"#5 p2 cas absent -> "c" (failed) [50, 55]"#);
    }
}
