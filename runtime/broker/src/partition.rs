//! One partition on this broker: its log, what consumers may see of it, and the flusher
//! that applies the flush policy with group commit.
//!
//! Group commit: appends only write to the page cache and wake the flusher. The flusher
//! takes every batch appended so far, runs one fdatasync for all of them outside the
//! log's lock, and publishes the new durable offset; batches that arrive while it syncs
//! are covered by the next round. With `flush = always` consumers see only durable
//! records, so nothing a consumer read can vanish in a power loss.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quiver_log::{AppendError, AppendInfo, FlushPolicy, PartitionLog};
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;

/// Why waiting for durability failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurabilityError {
    #[error("the partition's storage failed; it accepts no more writes")]
    StorageFailed,
    #[error("the partition was deleted")]
    Deleted,
    #[error("the broker is stopping")]
    Stopping,
}

/// Why a partition was closed: the answer a request that meets it gets differs (a
/// deleted topic is gone; a stopping broker is worth retrying elsewhere or later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    Deleted = 1,
    Stopping = 2,
}

/// `Partition::closed` while the partition is open.
const OPEN: u8 = 0;

/// A partition's log and the signals around it.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: u32,
    log: RwLock<PartitionLog>,
    flush: FlushPolicy,
    /// The high watermark: consumers read below it.
    visible: watch::Sender<u64>,
    /// Offsets below this are on disk.
    durable: watch::Sender<u64>,
    /// The log end offset, published on every append (idempotent producers waiting for
    /// an earlier batch watch it).
    log_end: watch::Sender<u64>,
    /// Set when appends are waiting for the flusher.
    dirty: Notify,
    /// [`OPEN`] or a [`CloseReason`].
    closed: AtomicU8,
    /// Set after an fsync failure: the page cache may hold data the disk lost, so the
    /// partition refuses further writes (as Kafka takes a log directory offline).
    failed: AtomicBool,
    /// Replicated in a cluster: the high watermark comes from the replication state
    /// machine ([`Partition::set_high_watermark`]), and with `flush = always` no
    /// further than this replica's durable offset.
    replicated: AtomicBool,
    /// The high watermark replication last computed.
    replication_hw: std::sync::atomic::AtomicU64,
    /// Orders the two writers of a replicated partition's visible offset (a new
    /// high watermark, a finished sync), so neither overwrites the other's newer view.
    visibility: std::sync::Mutex<()>,
    /// The leader epoch this replica stamps on the batches it appends as leader.
    leader_epoch: std::sync::atomic::AtomicU32,
}

impl Partition {
    /// Wraps an opened log. Call [`Partition::spawn_flusher`] once it sits in an `Arc`.
    pub fn new(topic: Arc<str>, index: u32, log: PartitionLog, flush: FlushPolicy) -> Self {
        let end = log.log_end_offset();
        // Whatever survived recovery is on disk (recovery fsyncs what it truncates).
        let (visible, _) = watch::channel(end);
        let (durable, _) = watch::channel(end);
        let (log_end, _) = watch::channel(end);
        Self {
            topic,
            index,
            log: RwLock::new(log),
            flush,
            visible,
            durable,
            log_end,
            dirty: Notify::new(),
            closed: AtomicU8::new(OPEN),
            failed: AtomicBool::new(false),
            replicated: AtomicBool::new(false),
            replication_hw: std::sync::atomic::AtomicU64::new(0),
            visibility: std::sync::Mutex::new(()),
            leader_epoch: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Hands the high watermark to replication (see [`Partition::set_high_watermark`]).
    /// Called once, before the partition serves as a replica.
    pub fn set_replicated(&self, high_watermark: u64) {
        self.replicated.store(true, Ordering::Release);
        self.replication_hw.store(high_watermark, Ordering::Release);
        self.visible
            .send_replace(self.visible_below(high_watermark));
    }

    /// What consumers may see of a replicated partition whose replication high
    /// watermark is `high_watermark`: all of it, or with `flush = always` only what is
    /// also durable here, so nothing a consumer read can vanish in a power loss.
    fn visible_below(&self, high_watermark: u64) -> u64 {
        if self.flush == FlushPolicy::Always {
            high_watermark.min(*self.durable.borrow())
        } else {
            high_watermark
        }
    }

    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Acquire)
    }

    /// Publishes the high watermark replication computed: consumers read below it.
    pub fn set_high_watermark(&self, high_watermark: u64) {
        let _order = self
            .visibility
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.replication_hw.store(high_watermark, Ordering::Release);
        let visible = self.visible_below(high_watermark);
        self.visible.send_if_modified(|v| {
            let moved = *v != visible;
            *v = visible;
            moved
        });
    }

    /// The epoch stamped on the batches this replica appends as leader.
    pub fn set_leader_epoch(&self, leader_epoch: u32) {
        self.leader_epoch.store(leader_epoch, Ordering::Release);
    }

    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Appends a batch fetched from the leader as it is: its offsets (it must start at
    /// this log's end) and its leader epoch.
    pub fn append_replica(
        &self,
        batch: BytesMut,
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionAppendError> {
        let header = quiver_wire::batch::BatchHeader::parse(&batch)
            .map_err(|e| PartitionAppendError::Log(AppendError::InvalidBatch(e)))?;
        let end = self.log().log_end_offset();
        if header.base_offset != end {
            return Err(PartitionAppendError::Diverged {
                expected: end,
                received: header.base_offset,
            });
        }
        self.append_stamped(batch, None, header.leader_epoch, now_ms)
    }

    /// Removes every record at or after `offset` (a follower whose log diverged).
    pub fn truncate(&self, offset: u64, now_ms: i64) -> Result<(), PartitionAppendError> {
        let mut log = self.log_mut();
        log.truncate_to(offset, now_ms)
            .map_err(|e| PartitionAppendError::Truncate(e.to_string()))?;
        let end = log.log_end_offset();
        self.log_end.send_replace(end);
        self.durable.send_modify(|d| *d = (*d).min(end));
        Ok(())
    }

    /// After a failed fsync the page cache may hold data the disk lost: refuse every
    /// further write, and wake durability waiters so they answer STORAGE_ERROR.
    pub(crate) fn take_out_of_service(&self) {
        self.failed.store(true, Ordering::Release);
        self.durable.send_modify(|_| {});
    }

    /// Whether an fsync failed: the partition refuses writes until the broker restarts.
    pub fn storage_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Read access to the log. A poisoned lock means a panic mid-append, which leaves
    /// the in-memory state suspect; the data on disk is still checked on restart.
    pub fn log(&self) -> RwLockReadGuard<'_, PartitionLog> {
        self.log
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the log's settings (a topic config change); they apply from the next
    /// append or retention pass.
    pub fn set_log_config(&self, config: quiver_log::LogConfig) {
        self.log_mut().set_config(config);
    }

    fn log_mut(&self) -> RwLockWriteGuard<'_, PartitionLog> {
        self.log
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> u64 {
        *self.visible.borrow()
    }

    /// A receiver that wakes when the high watermark moves, for long-poll fetches.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }

    /// Appends one batch, stamping its offsets. Returns once it is in the page cache.
    pub fn append(&self, batch: BytesMut, now_ms: i64) -> Result<AppendInfo, PartitionAppendError> {
        self.append_checked(batch, None, now_ms)
    }

    /// Appends a batch a produce-stage plugin rewrote from `original`, checking the
    /// producer's sequence against `original` (see `PartitionLog::append_transformed`).
    pub fn append_transformed(
        &self,
        batch: BytesMut,
        original: &quiver_wire::batch::BatchHeader,
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionAppendError> {
        self.append_checked(batch, Some(original), now_ms)
    }

    fn append_checked(
        &self,
        batch: BytesMut,
        original: Option<&quiver_wire::batch::BatchHeader>,
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionAppendError> {
        self.append_stamped(batch, original, self.leader_epoch(), now_ms)
    }

    fn append_stamped(
        &self,
        batch: BytesMut,
        original: Option<&quiver_wire::batch::BatchHeader>,
        leader_epoch: u32,
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionAppendError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(PartitionAppendError::StorageFailed);
        }
        match self.closed.load(Ordering::Acquire) {
            OPEN => {}
            reason if reason == CloseReason::Deleted as u8 => {
                return Err(PartitionAppendError::Deleted);
            }
            _ => return Err(PartitionAppendError::Stopping),
        }
        let info = {
            let mut log = self.log_mut();
            let info = match original {
                Some(original) => log.append_transformed(batch, original, leader_epoch, now_ms)?,
                None => log.append(batch, leader_epoch, now_ms)?,
            };
            if info.duplicate {
                return Ok(info);
            }
            self.log_end.send_replace(info.log_end_offset);
            if self.flush != FlushPolicy::Always && !self.is_replicated() {
                // Published under the lock so concurrent appends publish in order.
                self.visible.send_replace(log.log_end_offset());
            }
            info
        };
        if self.flush != FlushPolicy::Os {
            self.dirty.notify_one();
        }
        Ok(info)
    }

    /// Checks an idempotent batch's sequence against the partition without appending.
    pub fn check_sequence(
        &self,
        header: &quiver_wire::batch::BatchHeader,
    ) -> quiver_log::SequenceCheck {
        self.log().check_sequence(header)
    }

    /// A receiver that wakes on every append.
    pub fn watch_log_end(&self) -> watch::Receiver<u64> {
        self.log_end.subscribe()
    }

    /// Waits until every offset below `end_offset` is durable per the flush policy.
    /// With `os` nothing is waited for: the page cache is the promise.
    pub async fn wait_durable(&self, end_offset: u64) -> Result<(), DurabilityError> {
        if self.flush == FlushPolicy::Os {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        loop {
            if *rx.borrow_and_update() >= end_offset {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(DurabilityError::StorageFailed);
            }
            let gone = rx.changed().await.is_err();
            match self.closed.load(Ordering::Acquire) {
                OPEN if !gone => {}
                reason if reason == CloseReason::Deleted as u8 => {
                    return Err(DurabilityError::Deleted);
                }
                _ => return Err(DurabilityError::Stopping),
            }
        }
    }

    /// Deletes sealed segments past the retention limits.
    pub fn enforce_retention(
        &self,
        now_ms: i64,
    ) -> Result<quiver_log::RetentionReport, quiver_log::LogError> {
        self.log_mut().enforce_retention(now_ms)
    }

    /// Stops the flusher and refuses further appends.
    pub fn close(&self, reason: CloseReason) {
        self.closed.store(reason as u8, Ordering::Release);
        self.dirty.notify_one();
        // Wake durability waiters so they see `closed`.
        self.durable.send_modify(|_| {});
    }

    /// Syncs everything appended so far, outside the log's lock. Returns the new durable
    /// offset.
    pub fn sync_now(&self, metrics: &Metrics) -> Result<u64, std::io::Error> {
        let target = self.log().sync_target();
        let up_to = target.up_to_offset;
        if up_to <= *self.durable.borrow() && target.files.is_empty() {
            return Ok(up_to);
        }
        let started = Instant::now();
        let result = target.sync();
        metrics.flushed(started.elapsed().as_secs_f64());
        if let Err(err) = result {
            self.take_out_of_service();
            return Err(err);
        }
        self.log_mut().mark_synced(up_to);
        let _order = self
            .visibility
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Readers first: a producer woken by the durable offset may read right away,
        // and must find its records visible.
        if self.flush == FlushPolicy::Always {
            // A replicated partition shows what is both replicated and synced here.
            let visible = if self.is_replicated() {
                up_to.min(self.replication_hw.load(Ordering::Acquire))
            } else {
                up_to
            };
            self.visible.send_if_modified(|v| {
                let moved = visible > *v;
                *v = (*v).max(visible);
                moved
            });
        }
        self.durable.send_if_modified(|d| {
            let moved = up_to > *d;
            *d = (*d).max(up_to);
            moved
        });
        Ok(up_to)
    }

    /// Starts the task that applies the flush policy; it ends when the partition closes.
    pub fn spawn_flusher(self: &Arc<Self>, metrics: Arc<Metrics>) {
        let interval = match self.flush {
            FlushPolicy::Os => return,
            FlushPolicy::Always => None,
            FlushPolicy::Interval(every) => Some(every.max(Duration::from_millis(1))),
        };
        let partition = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match interval {
                    None => partition.dirty.notified().await,
                    Some(every) => tokio::time::sleep(every).await,
                }
                if partition.closed.load(Ordering::Acquire) != OPEN
                    || partition.failed.load(Ordering::Acquire)
                {
                    return;
                }
                let worker = Arc::clone(&partition);
                let metrics = Arc::clone(&metrics);
                let synced = tokio::task::spawn_blocking(move || worker.sync_now(&metrics)).await;
                match synced {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::error!(topic = %partition.topic, partition = partition.index, %err,
                            "fdatasync failed; the partition accepts no more writes");
                        return;
                    }
                    Err(join) => {
                        tracing::error!(%join, "flusher task failed");
                        return;
                    }
                }
            }
        });
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionAppendError {
    #[error(transparent)]
    Log(#[from] AppendError),
    #[error("the partition's storage failed; it accepts no more writes")]
    StorageFailed,
    #[error("the partition was deleted")]
    Deleted,
    #[error("the broker is stopping")]
    Stopping,
    #[error("a replicated batch starts at offset {received}, but the log ends at {expected}")]
    Diverged { expected: u64, received: u64 },
    #[error("cannot truncate the log: {0}")]
    Truncate(String),
}

/// A produced batch ready to append: as the producer sent it, or as the topic's
/// produce-stage plugins rewrote it.
pub enum PreparedBatch {
    /// Append as sent (no chain, a chain that changed nothing, or a duplicate, gap or
    /// fenced producer, which the log answers as it would without plugins).
    Original(BytesMut),
    /// Append the chain's output under the original batch's producer and sequence.
    Transformed {
        batch: BytesMut,
        original: quiver_wire::batch::BatchHeader,
    },
}

impl PreparedBatch {
    /// Appends to `partition` (on a blocking thread).
    pub fn append(
        self,
        partition: &Partition,
        now: i64,
    ) -> Result<AppendInfo, PartitionAppendError> {
        crate::worker::blocking(|| match self {
            PreparedBatch::Original(batch) => partition.append(batch, now),
            PreparedBatch::Transformed { batch, original } => {
                partition.append_transformed(batch, &original, now)
            }
        })
    }
}
