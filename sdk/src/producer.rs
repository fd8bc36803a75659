//! The producer: batches records per partition, sends them with the chosen `acks`,
//! retries what can be retried until `delivery_timeout`, and reports every record's
//! fate exactly once, through an awaitable [`DeliveryFuture`] or a callback.
//!
//! Guarantees (also in docs/producer.md):
//! - `acks = none`: the broker's QUIC stack received the batch; nothing more.
//! - `acks = leader`: the leader appended it (page cache).
//! - `acks = all`: it is durable per the broker's flush policy (and, with replication,
//!   in the in-sync replicas).
//! - `idempotence = true` (default): every batch carries producer id, epoch and
//!   sequence; a retry of a stored batch is answered with its first offsets, so retries
//!   never duplicate and a partition's records keep their send order, even with up to
//!   5 batches in flight. Without idempotence, a retry after a lost answer may store a
//!   batch twice (at-least-once), and ordering needs `max_in_flight = 1`.
//!
//! Memory is bounded by `buffer_bytes`: [`Producer::send`] waits for space and
//! [`Producer::try_send`] refuses with [`ProduceError::BufferFull`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quiver_wire::batch::{
    BATCH_HEADER_BYTES, BatchBuilder, Compression, ProducerStamp, Record, RecordHeader,
};
use quiver_wire::message::{Acks, InitProducerIdRequest};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::RequestError;
use crate::partitioner::partition_for_key;

/// Batches in flight per partition, at most: the broker remembers the last 5 batches
/// of each producer, so more could not all be deduplicated.
pub const MAX_IN_FLIGHT_LIMIT: usize = 5;

/// Producer settings, named as in Kafka where Kafka has the same idea:
/// `ProducerConfig::default()` and the setters named as the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// Which replicas must have a batch before it counts as delivered: `All` (the default), `Leader` or `None`.
    pub acks: Acks,
    /// Retries per batch; `None` retries until `delivery_timeout`.
    pub retries: Option<u32>,
    /// First pause before a retry; doubles per attempt up to `retry_backoff_max`, with
    /// up to 20% random jitter so producers do not retry in lockstep.
    pub retry_backoff: Duration,
    /// The longest pause between retries.
    pub retry_backoff_max: Duration,
    /// Time from `send` to success or final failure of a record.
    pub delivery_timeout: Duration,
    /// How long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// Target size of one batch.
    pub batch_bytes: usize,
    /// Batches in flight per partition (1 to 5).
    pub max_in_flight: usize,
    /// How batches are compressed (none, lz4 or zstd).
    pub compression: Compression,
    /// Retries never store a record twice and order is kept per partition (the broker deduplicates by producer id and sequence).
    pub idempotence: bool,
    /// Bytes of records waiting or in flight, at most.
    pub buffer_bytes: usize,
    /// How long a topic's partition count and batch limit are used before they are
    /// asked for again (Kafka's `metadata.max.age.ms`), so partitions added to a
    /// topic get records. A record for a partition beyond the known count asks at
    /// once.
    pub metadata_max_age: Duration,
}

config_setters!(ProducerConfig {
    acks: Acks => set,
    retries: u32 => some,
    retry_backoff: Duration => set,
    retry_backoff_max: Duration => set,
    delivery_timeout: Duration => set,
    linger: Duration => set,
    batch_bytes: usize => set,
    max_in_flight: usize => set,
    compression: Compression => set,
    idempotence: bool => set,
    buffer_bytes: usize => set,
    metadata_max_age: Duration => set,
});

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            retries: None,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(120),
            linger: Duration::from_millis(5),
            // Capped per topic by its max.message.bytes (1 MiB by default). Larger
            // batches keep more bytes in flight under the same five-request window and
            // spread each fsync over more records: 1 MiB produced 10% (acks=leader) to
            // 22% (acks=all, flush always) more than 256 KiB (docs/benchmarks.md).
            batch_bytes: 1024 * 1024,
            max_in_flight: MAX_IN_FLIGHT_LIMIT,
            compression: Compression::None,
            idempotence: true,
            buffer_bytes: 32 * 1024 * 1024,
            metadata_max_age: Duration::from_secs(300),
        }
    }
}

/// A record to send.
#[derive(Debug, Clone)]
pub struct ProducerRecord {
    /// The topic to send to.
    pub topic: Arc<str>,
    /// Send to this partition; otherwise by key hash, or sticky for records without key.
    pub partition: Option<u32>,
    /// The key; records with a key go to the partition its hash picks.
    pub key: Option<Bytes>,
    /// The value (`None`: a null value, as a tombstone).
    pub value: Option<Bytes>,
    /// Headers, sent in this order.
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the epoch; `None` for the time of `send`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic` with `value`, no key and no headers.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            partition: None,
            key: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key, which also picks the partition (unless one is set).
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(RecordHeader {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordReceipt {
    /// The record's topic.
    pub topic: Arc<str>,
    /// The partition it was stored in.
    pub partition: u32,
    /// `None` with `acks = none`: the broker does not say.
    pub offset: Option<u64>,
    /// Its timestamp, in milliseconds since the epoch.
    pub timestamp: i64,
}

/// Why a record was not produced: refused by [`Producer::send`] before it was
/// accepted, or failed after it, as its receipt or callback says. One type for both,
/// so an application handles a record's failure in one place wherever it surfaced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// [`Producer::try_send`] found the buffer full (`buffer_bytes`).
    #[error("the producer's buffer is full ({0} bytes)")]
    BufferFull(usize),
    /// The record is larger than the topic's `max.message.bytes` or the producer's
    /// buffer.
    #[error("record of {size} bytes exceeds the topic's limit of {limit} bytes")]
    RecordTooLarge {
        /// The record's encoded size.
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The record names a partition the topic does not have.
    #[error("partition {partition} does not exist: topic `{topic}` has {partitions}")]
    UnknownPartition {
        /// The record's topic.
        topic: String,
        /// The partition the record asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// The topic's metadata could not be looked up.
    #[error("cannot look up topic `{topic}`: {source}")]
    Metadata {
        /// The record's topic.
        topic: String,
        /// Why the lookup failed.
        source: RequestError,
    },
    /// The producer was closed before the record was sent.
    #[error("the producer is closed")]
    Closed,
    /// Not delivered within `delivery_timeout`.
    #[error("not delivered within the delivery timeout of {after:?}; last error: {last}")]
    Timeout {
        /// The delivery timeout.
        after: Duration,
        /// The last attempt's error.
        last: String,
    },
    /// The broker refused the batch with an error that retrying cannot fix.
    #[error("failed and not retried: {0}")]
    Fatal(RequestError),
    /// Retries ran out (`retries`).
    #[error("still failing after {attempts} attempts (the `retries` limit): {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// An earlier batch of the same partition failed for good; sending this one
    /// would break the partition's order.
    #[error("an earlier batch of partition {partition} failed, so this one cannot keep its order")]
    OrderingLost {
        /// The partition.
        partition: u32,
    },
    /// The producer was dropped with the record still in it.
    #[error("the producer was dropped before the record was delivered")]
    Dropped,
}

impl ProduceError {
    /// Whether the record may be delivered if sent again later: a full buffer, a
    /// timeout, exhausted retries or a metadata lookup that could not reach a broker.
    pub fn is_retriable(&self) -> bool {
        match self {
            ProduceError::BufferFull(_)
            | ProduceError::Timeout { .. }
            | ProduceError::RetriesExhausted { .. }
            | ProduceError::OrderingLost { .. } => true,
            ProduceError::Metadata { source, .. } => source.is_retriable(),
            ProduceError::Fatal(e) => e.is_retriable(),
            ProduceError::RecordTooLarge { .. }
            | ProduceError::UnknownPartition { .. }
            | ProduceError::Closed
            | ProduceError::Dropped => false,
        }
    }
}

/// Resolves once a record is delivered or has finally failed.
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordReceipt, ProduceError>>,
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<RecordReceipt, ProduceError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ProduceError::Dropped)))
    }
}

type Callback = Box<dyn FnOnce(Result<RecordReceipt, ProduceError>) + Send + 'static>;

/// One record's way back to its sender.
struct Delivery {
    callback: Callback,
    timestamp: i64,
}

struct OpenBatch {
    builder: BatchBuilder,
    deliveries: Vec<Delivery>,
    permits: Vec<OwnedSemaphorePermit>,
    created: Instant,
}

struct SealedBatch {
    open: OpenBatch,
}

/// A batch on its way: encoded once, resent as the same bytes on every retry.
struct Flight {
    bytes: Bytes,
    deliveries: Vec<Delivery>,
    _permits: Vec<OwnedSemaphorePermit>,
    created: Instant,
    producer_id: Option<u64>,
}

#[derive(Default)]
struct QueueState {
    open: Option<OpenBatch>,
    sealed: VecDeque<SealedBatch>,
    /// The producer id whose sequence space `next_sequence` counts in.
    sequence_owner: Option<u64>,
    next_sequence: u32,
    in_flight: usize,
    /// A batch of this producer id failed for good here: its later batches cannot
    /// keep their order.
    broken_owner: Option<u64>,
    flush_requested: bool,
}

struct PartitionQueue {
    topic: Arc<str>,
    partition: u32,
    /// The topic's partition count, for moving the sticky partition on.
    partitions: u32,
    state: Mutex<QueueState>,
    wake: Notify,
}

impl PartitionQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone, Copy)]
struct TopicMeta {
    partitions: u32,
    max_message_bytes: usize,
    /// When the metadata was learned.
    learned: tokio::time::Instant,
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    buffer: Arc<Semaphore>,
    topics: tokio::sync::Mutex<HashMap<String, TopicMeta>>,
    /// Per topic, per partition: looked up by `&str` on every send, without allocating.
    queues: Mutex<HashMap<String, HashMap<u32, Arc<PartitionQueue>>>>,
    sticky: Mutex<HashMap<String, Arc<AtomicU32>>>,
    identity: tokio::sync::Mutex<Option<u64>>,
    /// Records accepted and not yet delivered or failed.
    pending: AtomicU64,
    /// Records whose callbacks have not returned yet: `flush` waits for these, so
    /// every callback has run when it returns, while `pending` drops before a
    /// receipt is resolved and never counts a record its caller saw delivered.
    unsettled: AtomicU64,
    settled: Notify,
    closed: std::sync::atomic::AtomicBool,
}

/// An asynchronous producer. Cheap to clone; clones share batches and buffer.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Producer {
    /// A producer sending through `client`.
    pub fn new(client: Client, mut config: ProducerConfig) -> Self {
        config.max_in_flight = config.max_in_flight.clamp(1, MAX_IN_FLIGHT_LIMIT);
        config.batch_bytes = config.batch_bytes.max(BATCH_HEADER_BYTES + 1);
        let buffer = Arc::new(Semaphore::new(
            config.buffer_bytes.min(Semaphore::MAX_PERMITS),
        ));
        Self {
            shared: Arc::new(Shared {
                client,
                config,
                buffer,
                topics: tokio::sync::Mutex::new(HashMap::new()),
                queues: Mutex::new(HashMap::new()),
                sticky: Mutex::new(HashMap::new()),
                identity: tokio::sync::Mutex::new(None),
                pending: AtomicU64::new(0),
                unsettled: AtomicU64::new(0),
                settled: Notify::new(),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Queues a record, waiting for buffer space, and returns a future of its receipt.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProduceError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(record, Box::new(move |r| drop(tx.send(r))), true)
            .await?;
        Ok(DeliveryFuture { rx })
    }

    /// As [`Producer::send`], but refuses with [`ProduceError::BufferFull`] instead of
    /// waiting for buffer space.
    pub async fn try_send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProduceError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(record, Box::new(move |r| drop(tx.send(r))), false)
            .await?;
        Ok(DeliveryFuture { rx })
    }

    /// Queues a record and calls `callback` exactly once with its fate: the receipt,
    /// or the error it finally failed with (including refusal at enqueue time). The
    /// callback runs on the producer's task: keep it short.
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordReceipt, ProduceError>) + Send + 'static,
    ) {
        let slot = Arc::new(Mutex::new(Some(Box::new(callback) as Callback)));
        let inner = Arc::clone(&slot);
        let result = self
            .enqueue(
                record,
                Box::new(move |r| {
                    if let Some(cb) = inner
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take()
                    {
                        cb(r);
                    }
                }),
                true,
            )
            .await;
        if let Err(err) = result
            && let Some(cb) = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        {
            cb(Err(err));
        }
    }

    /// Sends every queued record now and waits until each is delivered or failed.
    pub async fn flush(&self) {
        loop {
            let settled = self.shared.settled.notified();
            if self.shared.unsettled.load(Ordering::Acquire) == 0 {
                return;
            }
            for queue in self.queues() {
                queue.lock().flush_requested = true;
                queue.wake.notify_one();
            }
            settled.await;
        }
    }

    /// Flushes, then refuses further records.
    pub async fn close(&self) {
        self.flush().await;
        self.shared.closed.store(true, Ordering::Release);
        for queue in self.queues() {
            queue.wake.notify_one();
        }
    }

    /// Records accepted and not yet delivered or failed.
    pub fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::Acquire)
    }

    fn queues(&self) -> Vec<Arc<PartitionQueue>> {
        self.shared
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .flat_map(|partitions| partitions.values().cloned())
            .collect()
    }

    /// The topic's metadata, asked for again once older than `metadata_max_age` or
    /// when it lacks `partition`.
    async fn topic_meta(
        &self,
        topic: &str,
        partition: Option<u32>,
    ) -> Result<TopicMeta, ProduceError> {
        let mut topics = self.shared.topics.lock().await;
        if let Some(meta) = topics.get(topic)
            && meta.learned.elapsed() < self.shared.config.metadata_max_age
            && partition.is_none_or(|p| p < meta.partitions)
        {
            return Ok(*meta);
        }
        let info = self
            .shared
            .client
            .describe_topic(topic)
            .await
            .map_err(|source| ProduceError::Metadata {
                topic: topic.to_owned(),
                source,
            })?;
        let max_message_bytes = info
            .configs
            .iter()
            .find(|(k, _)| k == "max.message.bytes")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(quiver_wire::batch::BATCH_BYTES_MAX);
        let meta = TopicMeta {
            partitions: info.partitions.len() as u32,
            max_message_bytes,
            learned: tokio::time::Instant::now(),
        };
        topics.insert(topic.to_owned(), meta);
        Ok(meta)
    }

    fn sticky_partition(&self, topic: &str, partitions: u32) -> (u32, Arc<AtomicU32>) {
        let mut sticky = self
            .shared
            .sticky
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = sticky
            .entry(topic.to_owned())
            .or_insert_with(|| Arc::new(AtomicU32::new(0)));
        (
            slot.load(Ordering::Relaxed) % partitions.max(1),
            Arc::clone(slot),
        )
    }

    fn queue(&self, topic: &str, partition: u32, partitions: u32) -> Arc<PartitionQueue> {
        let mut queues = self
            .shared
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = queues.get(topic).and_then(|t| t.get(&partition)) {
            return Arc::clone(queue);
        }
        let queue = Arc::new(PartitionQueue {
            topic: Arc::from(topic),
            partition,
            partitions,
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
        });
        queues
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, Arc::clone(&queue));
        tokio::spawn(run_partition(Arc::clone(&self.shared), Arc::clone(&queue)));
        queue
    }

    async fn enqueue(
        &self,
        record: ProducerRecord,
        callback: Callback,
        wait: bool,
    ) -> Result<(), ProduceError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(ProduceError::Closed);
        }
        let meta = self.topic_meta(&record.topic, record.partition).await?;
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let wire = Record {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp,
        };
        // Alone in a batch, with the largest varints a position could need.
        let size = BATCH_HEADER_BYTES + wire.encoded_len(i64::MAX, i64::from(u32::MAX));
        if size > meta.max_message_bytes {
            return Err(ProduceError::RecordTooLarge {
                size,
                limit: meta.max_message_bytes,
            });
        }
        // A record the buffer could never hold would wait forever, and every send
        // queued behind it with it.
        if size > self.shared.config.buffer_bytes {
            return Err(ProduceError::RecordTooLarge {
                size,
                limit: self.shared.config.buffer_bytes,
            });
        }
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let buffer = Arc::clone(&self.shared.buffer);
        let permit = if wait {
            buffer
                .acquire_many_owned(permits)
                .await
                .map_err(|_| ProduceError::Closed)?
        } else {
            buffer
                .try_acquire_many_owned(permits)
                .map_err(|_| ProduceError::BufferFull(self.shared.config.buffer_bytes))?
        };
        let (partition, sticky) = match (record.partition, &wire.key) {
            (Some(p), _) if p >= meta.partitions => {
                return Err(ProduceError::UnknownPartition {
                    topic: record.topic.to_string(),
                    partition: p,
                    partitions: meta.partitions,
                });
            }
            (Some(p), _) => (p, None),
            (None, Some(key)) => (partition_for_key(key, meta.partitions), None),
            (None, None) => {
                let (p, slot) = self.sticky_partition(&record.topic, meta.partitions);
                (p, Some(slot))
            }
        };
        let queue = self.queue(&record.topic, partition, meta.partitions);
        self.shared.unsettled.fetch_add(1, Ordering::AcqRel);
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        let mut state = queue.lock();
        let full = state.open.as_ref().is_some_and(|open| {
            // Never build a batch the broker would refuse as too large.
            open.builder.encoded_len_with(&wire)
                > self.shared.config.batch_bytes.min(meta.max_message_bytes)
        });
        if full {
            if let Some(open) = state.open.take() {
                state.sealed.push_back(SealedBatch { open });
            }
            if sticky.is_some() {
                self.shared.advance_sticky(&queue);
            }
        }
        let open = state.open.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(ProducerStamp::NONE),
            deliveries: Vec::new(),
            permits: Vec::new(),
            created: Instant::now(),
        });
        open.builder.push(&wire);
        open.deliveries.push(Delivery {
            callback,
            timestamp,
        });
        open.permits.push(permit);
        drop(state);
        queue.wake.notify_one();
        Ok(())
    }
}

impl Shared {
    /// Records without a key stick to one partition until its batch is sealed, then
    /// move on to the next (Kafka's sticky partitioner): full batches, spread load.
    fn advance_sticky(&self, queue: &PartitionQueue) {
        let sticky = self
            .sticky
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = sticky.get(queue.topic.as_ref()) {
            let current = slot.load(Ordering::Relaxed);
            if current % queue.partitions.max(1) == queue.partition {
                let _ = slot.compare_exchange(
                    current,
                    current.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    fn settle(
        &self,
        deliveries: Vec<Delivery>,
        outcome: impl Fn(usize, i64) -> Result<RecordReceipt, ProduceError>,
    ) {
        let count = deliveries.len() as u64;
        self.pending.fetch_sub(count, Ordering::AcqRel);
        for (i, delivery) in deliveries.into_iter().enumerate() {
            (delivery.callback)(outcome(i, delivery.timestamp));
        }
        if self.unsettled.fetch_sub(count, Ordering::AcqRel) == count {
            self.settled.notify_waiters();
        }
    }

    /// The current producer id, asking the broker for one when there is none.
    async fn producer_id(&self) -> Result<u64, RequestError> {
        let mut identity = self.identity.lock().await;
        if let Some(id) = *identity {
            return Ok(id);
        }
        let response = self.client.rpc(&InitProducerIdRequest).await?;
        *identity = Some(response.producer_id);
        Ok(response.producer_id)
    }

    /// Forgets `id` after one of its batches failed for good, so later batches start a
    /// fresh sequence space under a new id.
    async fn retire_producer_id(&self, id: u64) {
        let mut identity = self.identity.lock().await;
        if *identity == Some(id) {
            *identity = None;
        }
    }
}

/// The batches of one partition that may be on their way at once. A slot frees only
/// when its batch *and every earlier one* are done, so the newest batch in flight is
/// never more than `max_in_flight` batches ahead of the oldest unfinished one: the
/// broker remembers the last 5 batches per producer, and a retry further back than that
/// could no longer be recognised as a duplicate.
struct FlightWindow {
    slots: Semaphore,
    tickets: Mutex<WindowTickets>,
}

#[derive(Default)]
struct WindowTickets {
    next: u64,
    release_from: u64,
    done: std::collections::BTreeSet<u64>,
}

impl FlightWindow {
    fn new(size: usize) -> Self {
        Self {
            slots: Semaphore::new(size),
            tickets: Mutex::new(WindowTickets::default()),
        }
    }

    /// Waits for a slot and returns the batch's ticket; `None` if the window closed.
    async fn enter(&self) -> Option<u64> {
        self.slots.acquire().await.ok()?.forget();
        let mut tickets = self
            .tickets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ticket = tickets.next;
        tickets.next += 1;
        Some(ticket)
    }

    /// Marks a batch done and frees the slots of the finished prefix.
    fn leave(&self, ticket: u64) {
        let mut tickets = self
            .tickets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tickets.done.insert(ticket);
        let mut freed = 0;
        loop {
            let head = tickets.release_from;
            if !tickets.done.remove(&head) {
                break;
            }
            tickets.release_from += 1;
            freed += 1;
        }
        drop(tickets);
        self.slots.add_permits(freed);
    }
}

/// Sends one partition's batches in order, up to `max_in_flight` at a time.
async fn run_partition(shared: Arc<Shared>, queue: Arc<PartitionQueue>) {
    let window = Arc::new(FlightWindow::new(shared.config.max_in_flight));
    loop {
        let wake = queue.wake.notified();
        let next = {
            let mut state = queue.lock();
            let linger_over = state
                .open
                .as_ref()
                .is_some_and(|o| o.created.elapsed() >= shared.config.linger);
            if state.flush_requested || linger_over || shared.closed.load(Ordering::Acquire) {
                if let Some(open) = state.open.take() {
                    state.sealed.push_back(SealedBatch { open });
                    shared.advance_sticky(&queue);
                }
                state.flush_requested = false;
            }
            let deadline = state
                .open
                .as_ref()
                .map(|o| o.created + shared.config.linger);
            (state.sealed.pop_front(), deadline)
        };
        match next {
            (Some(sealed), _) => {
                let Some(ticket) = window.enter().await else {
                    return;
                };
                let flight = match seal(&shared, &queue, sealed).await {
                    Ok(flight) => flight,
                    Err((deliveries, err)) => {
                        shared.settle(deliveries, |_, _| Err(ProduceError::Fatal(err.clone())));
                        window.leave(ticket);
                        continue;
                    }
                };
                queue.lock().in_flight += 1;
                let (shared, queue, window) =
                    (Arc::clone(&shared), Arc::clone(&queue), Arc::clone(&window));
                tokio::spawn(async move {
                    deliver(&shared, &queue, flight).await;
                    queue.lock().in_flight -= 1;
                    window.leave(ticket);
                    queue.wake.notify_one();
                });
            }
            (None, Some(deadline)) => {
                tokio::select! {
                    _ = wake => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            (None, None) => {
                if shared.closed.load(Ordering::Acquire) && queue.lock().in_flight == 0 {
                    return;
                }
                wake.await;
            }
        }
    }
}

/// Stamps a sealed batch with the producer identity and the next sequence, and
/// encodes it once.
async fn seal(
    shared: &Shared,
    queue: &PartitionQueue,
    sealed: SealedBatch,
) -> Result<Flight, (Vec<Delivery>, RequestError)> {
    let mut open = sealed.open;
    let mut producer_id = None;
    if shared.config.idempotence {
        let deadline = open.created + shared.config.delivery_timeout;
        let mut backoff = shared.config.retry_backoff;
        let id = loop {
            match shared.producer_id().await {
                Ok(id) => break id,
                // A broker restarting or a lost connection: ask again until the
                // batch's delivery timeout, as for a produce.
                Err(err) if err.is_retriable() && Instant::now() + backoff < deadline => {
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(shared.config.retry_backoff_max);
                }
                Err(err) => return Err((open.deliveries, err)),
            }
        };
        // A new producer id starts a new sequence space; switch only once this
        // partition's batches under the old id have landed, so order holds.
        loop {
            let wait = queue.wake.notified();
            let assigned = {
                let mut state = queue.lock();
                if state.sequence_owner == Some(id) || state.in_flight == 0 {
                    if state.sequence_owner != Some(id) {
                        state.sequence_owner = Some(id);
                        state.next_sequence = 0;
                    }
                    let base_sequence = state.next_sequence;
                    state.next_sequence = state
                        .next_sequence
                        .wrapping_add(open.builder.record_count());
                    Some(base_sequence)
                } else {
                    None
                }
            };
            if let Some(base_sequence) = assigned {
                open.builder.set_producer(ProducerStamp {
                    producer_id: id,
                    producer_epoch: 0,
                    base_sequence,
                });
                producer_id = Some(id);
                break;
            }
            wait.await;
        }
    }
    let bytes = open
        .builder
        .finish_compressed(shared.config.compression)
        .unwrap_or_default();
    Ok(Flight {
        bytes,
        deliveries: open.deliveries,
        _permits: open.permits,
        created: open.created,
        producer_id,
    })
}

/// Whether `err` is a partition leader not knowing a topic that the metadata named it
/// leader of: a broker that has not applied the topic's creation yet, which a retry
/// outlasts (Kafka's producer retries it too). Once the broker the metadata came from
/// does not know the topic either, it is gone and the error stands.
/// The metadata question is bounded by `deadline`, the batch's own.
async fn leader_behind_metadata(
    shared: &Shared,
    topic: &str,
    err: &RequestError,
    deadline: Instant,
) -> bool {
    err.code() == Some(quiver_wire::ErrorCode::UnknownTopic)
        && tokio::time::timeout_at(deadline, shared.client.describe_topic(topic))
            .await
            .is_ok_and(|described| described.is_ok())
}

fn jittered(backoff: Duration) -> Duration {
    // Up to 20% jitter from the clock's sub-second noise: enough to spread retries,
    // with no random number generator to seed.
    let noise = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 1000;
    backoff.mul_f64(1.0 + f64::from(noise) / 5000.0)
}

/// Sends one batch until it succeeds, fails fatally, or runs out of time.
async fn deliver(shared: &Shared, queue: &PartitionQueue, flight: Flight) {
    let config = &shared.config;
    let deadline = flight.created + config.delivery_timeout;
    let mut backoff = config.retry_backoff;
    let mut attempts = 0u32;
    let topic = Arc::clone(&queue.topic);
    let partition = queue.partition;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout(
            remaining,
            shared
                .client
                .produce_batch(&topic, partition, config.acks, flight.bytes.clone()),
        )
        .await;
        let err = match result {
            Ok(Ok(answer)) => {
                let base = answer.map(|a| a.base_offset);
                shared.settle(flight.deliveries, |i, timestamp| {
                    Ok(RecordReceipt {
                        topic: Arc::clone(&topic),
                        partition,
                        offset: base.map(|b| b + i as u64),
                        timestamp,
                    })
                });
                return;
            }
            Ok(Err(err)) => err,
            Err(_) => RequestError::Timeout(config.delivery_timeout),
        };
        let broken =
            flight.producer_id.is_some() && queue.lock().broken_owner == flight.producer_id;
        let retries_left = config.retries.is_none_or(|r| attempts <= r);
        let retriable = err.is_retriable()
            || (!broken && leader_behind_metadata(shared, &topic, &err, deadline).await);
        let time_left = Instant::now() + backoff < deadline;
        if retriable && retries_left && time_left && !broken {
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(config.retry_backoff_max);
            continue;
        }
        if let Some(id) = flight.producer_id {
            queue.lock().broken_owner = Some(id);
            shared.retire_producer_id(id).await;
        }
        let failure = if broken {
            ProduceError::OrderingLost { partition }
        } else if !retriable {
            ProduceError::Fatal(err)
        } else if !retries_left {
            ProduceError::RetriesExhausted {
                attempts,
                last: err.to_string(),
            }
        } else {
            ProduceError::Timeout {
                after: config.delivery_timeout,
                last: err.to_string(),
            }
        };
        shared.settle(flight.deliveries, |_, _| Err(failure.clone()));
        return;
    }
}
