//! The file-backed stores: openraft's conformance suite, restarts, torn tails,
//! segment rolling, purge and truncate, snapshots.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use tempfile::TempDir;

use super::*;
use crate::metadata::{MetadataCommand, MetadataResponse};
use crate::type_config::{LogEntry, LogId, NodeId, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = open(dir.path());
        Ok((dir, log, sm))
    }
}

fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    let lock = Arc::new(DirLock::acquire(dir).expect("directory is free"));
    let (log, _) = LogStore::open(dir, lock.clone()).expect("log opens");
    let sm = StateMachineStore::open(dir, lock).expect("state machine opens");
    (log, sm)
}

type Conformance = Suite<TypeConfig, LogStore, StateMachineStore, Builder, TempDir>;

macro_rules! suite_cases {
    ($($case:ident),* $(,)?) => {
        vec![$((
            stringify!($case),
            (|log, sm| Box::pin(Conformance::$case(log, sm)) as CaseFuture)
                as fn(LogStore, StateMachineStore) -> CaseFuture,
        )),*]
    };
}

type CaseFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StorageError<NodeId>>> + Send>>;
type Case = (&'static str, fn(LogStore, StateMachineStore) -> CaseFuture);

/// openraft's own conformance suite, against the file-backed stores.
#[test]
fn openraft_storage_suite() {
    let cases: Vec<Case> = suite_cases![
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        // Left out: get_initial_state_membership_from_log_and_sm. After its state
        // machine is ahead of the log, openraft purges the log up to index 2, and the
        // case then appends entry 1 below the purge point, which a running Raft never
        // does; this store refuses an append that does not follow the log.
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    ];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut failed = Vec::new();
    for (name, case) in cases {
        let result = runtime.block_on(async {
            let (_dir, log, sm) = Builder.build().await?;
            case(log, sm).await
        });
        if let Err(e) = result {
            failed.push(format!("{name}: {e}"));
        }
    }
    if let Err(e) = runtime.block_on(Conformance::transfer_snapshot(&Builder)) {
        failed.push(format!("transfer_snapshot: {e}"));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> LogEntry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn command(term: u64, index: u64, command: MetadataCommand) -> LogEntry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(command),
    }
}

fn membership(index: u64) -> LogEntry {
    let mut nodes = BTreeMap::new();
    nodes.insert(1, crate::ControllerNode::new("127.0.0.1:7420"));
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Membership(Membership::from(nodes)),
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    found.sort();
    found
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(..)
        .await
        .expect("reads")
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test]
async fn log_vote_and_committed_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path());
        log.blocking_append((0..10).map(|i| blank(1, i)))
            .await
            .expect("appends");
        log.save_vote(&Vote::new_committed(3, 2))
            .await
            .expect("votes");
        log.save_committed(Some(log_id(1, 7))).await.expect("saves");
        log.purge(log_id(1, 2)).await.expect("purges");
        log.truncate(log_id(1, 8)).await.expect("truncates");
    }
    let (mut log, _) = open(dir.path());
    assert_eq!(indexes(&mut log).await, (3..8).collect::<Vec<_>>());
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(3, 2))
    );
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 7))
    );
    // Appending goes on where the log ends; a hole is refused.
    log.blocking_append([blank(2, 8)]).await.expect("appends");
    assert!(log.blocking_append([blank(2, 10)]).await.is_err());
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path());
        log.blocking_append((0..5).map(|i| blank(1, i)))
            .await
            .expect("appends");
    }
    let segment = segments(dir.path()).pop().expect("one segment");
    let intact = fs::metadata(&segment).expect("metadata").len();

    // A crash mid-append: half a frame (a header promising more than is there).
    let mut file = OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("opens");
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{'])
        .expect("writes");
    drop(file);
    let lock = Arc::new(DirLock::acquire(dir.path()).expect("free"));
    let (mut log, recovery) = LogStore::open(dir.path(), lock).expect("opens");
    assert_eq!(recovery.torn_bytes_cut, 9);
    assert_eq!(recovery.entries, 5);
    assert_eq!(fs::metadata(&segment).expect("metadata").len(), intact);
    assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3, 4]);
    drop(log);

    // A whole frame whose bytes were damaged: cut too, with what follows it.
    let mut bytes = fs::read(&segment).expect("reads");
    let cut_at = bytes.len() - 3;
    bytes[cut_at] ^= 0xFF;
    fs::write(&segment, &bytes).expect("writes");
    let lock = Arc::new(DirLock::acquire(dir.path()).expect("free"));
    let (mut log, recovery) = LogStore::open(dir.path(), lock).expect("opens");
    assert!(recovery.torn_bytes_cut > 0);
    assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3]);
    log.blocking_append([blank(1, 4)])
        .await
        .expect("appends after the cut");
    drop(log);
    let (mut log, _) = open(dir.path());
    assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn segments_roll_and_purge_and_truncate_work_across_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total = SEGMENT_ENTRIES_MAX as u64 * 2 + 100;
    {
        let (mut log, _) = open(dir.path());
        let mut next = 0;
        while next < total {
            let end = (next + 1_000).min(total);
            log.blocking_append((next..end).map(|i| blank(1, i)))
                .await
                .expect("appends");
            next = end;
        }
        assert_eq!(segments(dir.path()).len(), 3);
        // Truncating into the second segment deletes the third.
        let since = SEGMENT_ENTRIES_MAX as u64 + 10;
        log.truncate(log_id(1, since)).await.expect("truncates");
        assert_eq!(segments(dir.path()).len(), 2);
        // Purging past the first segment deletes it.
        log.purge(log_id(1, SEGMENT_ENTRIES_MAX as u64 + 1))
            .await
            .expect("purges");
        assert_eq!(segments(dir.path()).len(), 1);
    }
    let (mut log, _) = open(dir.path());
    let first = SEGMENT_ENTRIES_MAX as u64 + 2;
    let last = SEGMENT_ENTRIES_MAX as u64 + 9;
    assert_eq!(indexes(&mut log).await, (first..=last).collect::<Vec<_>>());

    // Purging beyond the end (a snapshot installed from a leader) empties the log;
    // the next entry follows the purge point.
    log.purge(log_id(2, 100_000)).await.expect("purges");
    assert!(segments(dir.path()).is_empty());
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(log_id(2, 100_000)));
    log.blocking_append([blank(2, 100_001)])
        .await
        .expect("appends");
    drop(log);
    let (mut log, _) = open(dir.path());
    assert_eq!(indexes(&mut log).await, vec![100_001]);
}

#[tokio::test]
async fn damage_before_the_last_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path());
        let n = SEGMENT_ENTRIES_MAX as u64 + 5;
        log.blocking_append((0..n).map(|i| blank(1, i)))
            .await
            .expect("appends");
    }
    let first = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&first).expect("reads");
    bytes[20] ^= 0xFF;
    fs::write(&first, &bytes).expect("writes");
    let lock = Arc::new(DirLock::acquire(dir.path()).expect("free"));
    let error = LogStore::open(dir.path(), lock).err().expect("refuses");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
}

#[tokio::test]
async fn snapshots_persist_the_state_machine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let register = MetadataCommand::RegisterBroker {
        broker_id: 1,
        incarnation: 1,
        address: "127.0.0.1:7420".to_owned(),
        now_ms: 0,
    };
    let create = MetadataCommand::CreateTopic {
        name: "orders".to_owned(),
        partitions: 2,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    let built = {
        let (_, mut sm) = open(dir.path());
        let view = sm.view();
        let mut version = view.subscribe();
        let answers = sm
            .apply([
                membership(0),
                command(1, 1, register),
                command(1, 2, create.clone()),
                command(1, 3, create),
            ])
            .await
            .expect("applies");
        assert_eq!(answers[0], MetadataResponse::Noop);
        assert!(matches!(answers[2], MetadataResponse::TopicCreated { .. }));
        assert!(
            matches!(answers[3], MetadataResponse::Rejected(ref e) if e.name() == "TOPIC_ALREADY_EXISTS")
        );
        assert!(version.has_changed().expect("sender alive"));
        assert_eq!(*version.borrow_and_update(), 4);
        assert_eq!(
            view.state().topic("orders").map(|t| t.partitions.len()),
            Some(2)
        );
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("builds")
    };
    let (_, mut sm) = open(dir.path());
    let (applied, membership) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 3)));
    assert_eq!(membership, built.meta.last_membership);
    assert_eq!(sm.view().version(), 4);
    assert!(sm.view().state().topic("orders").is_some());
    let current = sm
        .get_current_snapshot()
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.as_bytes(), built.snapshot.as_bytes());

    // A snapshot whose state breaks the invariants is refused and changes nothing.
    let mut bad = sm.begin_receiving_snapshot().await.expect("begins");
    *bad = SnapshotBytes::new(br#"{"brokers":{},"topics":{"t":{"partitions":[],"replication_factor":1,"configs":{}}},"plugins":{},"attachments":[],"offsets":[],"next_broker_epoch":0,"assignment_cursor":0}"#.to_vec());
    let mut meta = built.meta.clone();
    meta.last_log_id = Some(log_id(1, 9));
    assert!(sm.install_snapshot(&meta, bad).await.is_err());
    assert_eq!(
        sm.applied_state().await.expect("applied").0,
        Some(log_id(1, 3))
    );
    assert!(sm.view().state().topic("t").is_none());
}

#[test]
fn a_directory_serves_one_controller_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = DirLock::acquire(dir.path()).expect("free");
    let error = DirLock::acquire(dir.path()).expect_err("locked");
    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
    drop(held);
    DirLock::acquire(dir.path()).expect("free again");
}

/// A log of five entries (indexes 0 to 4) with `committed` saved, whose last entry's
/// last bytes were then cut away.
async fn log_with_its_last_entry_cut(committed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path());
        log.blocking_append((0..5).map(|i| blank(1, i)))
            .await
            .expect("appends");
        log.save_committed(Some(log_id(1, committed)))
            .await
            .expect("saves committed");
    }
    let segment = segments(dir.path()).pop().expect("one segment");
    let bytes = fs::read(&segment).expect("reads");
    fs::write(&segment, &bytes[..bytes.len() - 3]).expect("writes");
    dir
}

#[tokio::test]
async fn a_log_that_lost_committed_entries_is_refused_by_name() {
    let dir = log_with_its_last_entry_cut(4).await;
    let segment = segments(dir.path()).pop().expect("one segment");
    let before = fs::read(&segment).expect("reads");
    let lock = Arc::new(DirLock::acquire(dir.path()).expect("free"));
    let error = LogStore::open(dir.path(), lock).err().expect("refuses");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    let message = error.to_string();
    assert!(message.contains("ends at index 3"), "{message}");
    assert!(message.contains("index 4 was committed"), "{message}");
    assert!(message.contains("Controller log damage"), "{message}");
    assert_eq!(
        fs::read(&segment).expect("reads"),
        before,
        "a refusal changes no file"
    );

    // Uncommitted entries cut the same way are recovered.
    let dir = log_with_its_last_entry_cut(3).await;
    let lock = Arc::new(DirLock::acquire(dir.path()).expect("free"));
    let (mut log, recovery) = LogStore::open(dir.path(), lock).expect("opens");
    assert!(recovery.torn_bytes_cut > 0);
    assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3]);
}
