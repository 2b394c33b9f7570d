//! A client of raftkv's etcd API (`etcdserverpb.KV`), for the chaos workload: the same operations as the native
//! clients, through the second front door, recorded and checked the same way.
//!
//! Retries follow the native client's rule: a read is retried on any failure until the deadline; a write only
//! when it provably never reached a Raft log (`workload::surely_not_applied`), so an unknown outcome is never
//! turned into two writes.

use std::{
    future::Future,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use raftkv::client::Client;
use raftkv_proto::etcd::{self as pb, kv_client::KvClient};
use tonic::{transport::Channel, Request, Status};

use crate::workload::surely_not_applied;

pub struct EtcdKv {
    /// Channels (with the cluster's TLS) to the endpoints.
    channels: Client,
    next: AtomicUsize,
    timeout: Duration,
}

impl EtcdKv {
    pub fn new(channels: Client, timeout: Duration) -> Self {
        Self { channels, next: AtomicUsize::new(0), timeout }
    }

    async fn call<T, F, Fut>(&self, read: bool, f: F) -> Result<T, Status>
    where
        F: Fn(KvClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let endpoints = self.channels.endpoints();
            let addr = &endpoints[self.next.load(Ordering::Relaxed) % endpoints.len()];
            let left = deadline.saturating_duration_since(Instant::now());
            let kv = KvClient::new(self.channels.channel(addr)?);
            let status = match tokio::time::timeout(left, f(kv, left)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s)) => s,
                Err(_) => return Err(Status::deadline_exceeded(format!("no answer from {addr} within {left:?}"))),
            };
            if !(read || surely_not_applied(&status)) || Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(status);
            }
            self.next.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn request<T>(msg: T, timeout: Duration) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(timeout);
        r
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<pb::PutResponse, Status> {
        let msg = pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        self.call(false, |mut kv, t| {
            let msg = msg.clone();
            async move { kv.put(Self::request(msg, t)).await }
        })
        .await
    }

    /// A linearizable read of one key: its value, if any.
    pub async fn get(&self, key: &str) -> Result<Option<String>, Status> {
        let msg = pb::RangeRequest { key: key.into(), ..Default::default() };
        let r = self
            .call(true, |mut kv, t| {
                let msg = msg.clone();
                async move { kv.range(Self::request(msg, t)).await }
            })
            .await?;
        Ok(r.kvs.into_iter().next().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    pub async fn delete(&self, key: &str) -> Result<pb::DeleteRangeResponse, Status> {
        let msg = pb::DeleteRangeRequest { key: key.into(), ..Default::default() };
        self.call(false, |mut kv, t| {
            let msg = msg.clone();
            async move { kv.delete_range(Self::request(msg, t)).await }
        })
        .await
    }

    /// Puts `new` if the key's value is `expect` (`None`: if the key is absent); returns whether it did.
    pub async fn cas(&self, key: &str, expect: Option<&str>, new: &str) -> Result<bool, Status> {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let compare = match expect {
            Some(v) => pb::Compare {
                key: key.into(),
                target: CompareTarget::Value as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::Value(v.into())),
                range_end: vec![],
            },
            None => pb::Compare {
                key: key.into(),
                target: CompareTarget::Version as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::Version(0)),
                range_end: vec![],
            },
        };
        let put = pb::PutRequest { key: key.into(), value: new.into(), ..Default::default() };
        let msg = pb::TxnRequest {
            compare: vec![compare],
            success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(put)) }],
            failure: vec![],
        };
        let r = self
            .call(false, |mut kv, t| {
                let msg = msg.clone();
                async move { kv.txn(Self::request(msg, t)).await }
            })
            .await?;
        Ok(r.succeeded)
    }
}
