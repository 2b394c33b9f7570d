//! openraft's storage conformance suite against the real WAL-backed log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use raftkv::{
    metrics::Metrics,
    raft::{log_store::LogStore, snapshot::SnapshotDir, state_machine::StateMachineStore, StorageError, TypeConfig},
    wal::{Wal, WalOptions},
};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WalOptions::new(dir.path().join("wal"));
        opts.segment_bytes = 16 * 1024;
        let (wal, _) = Wal::open(opts).unwrap();
        let sm = StateMachineStore::open(
            SnapshotDir::open(dir.path().join("snap")).unwrap(),
            1000,
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let log = LogStore::new(wal, sm.durable_snapshot());
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage conformance suite failed: {e}");
    }
}
