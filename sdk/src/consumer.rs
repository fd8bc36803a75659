//! The consumer: reads partitions it was assigned by hand ([`Consumer::assign`]) or by
//! its group's coordinator ([`Consumer::subscribe`]), with full control of positions
//! and commits.
//!
//! Positions are what was handed to the application: a record returned by
//! [`Consumer::poll`] has been consumed, and committing a partition commits the offset
//! after the last record returned. Auto-commit (default) therefore gives at-least-once:
//! records returned but not yet processed when a consumer dies are delivered again to
//! the next owner, and nothing unreturned is ever committed.
//!
//! In a group, a background task heartbeats to the coordinator with what this consumer
//! owns. New assignments are applied inside `poll`: partitions taken away are first
//! committed (auto-commit, plus whatever the rebalance listener asks for), then
//! released; only then does the coordinator give them to their new owner.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quiver_wire::ErrorCode;
use quiver_wire::batch::{DecodedRecord, RecordHeader};
use quiver_wire::group::{
    CommittedOffset, GroupHeartbeatRequest, LEAVE_GROUP_EPOCH, NO_MEMBER_EPOCH,
    OffsetCommitRequest, OffsetFetchRequest, TopicPartitions,
};
use quiver_wire::message::OffsetSpec;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::{Client, FetchOptions};
use crate::error::RequestError;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name: the same type as a record's and a receipt's topic, so they
    /// compare without conversion.
    pub topic: Arc<str>,
    /// The partition's index within the topic.
    pub partition: u32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Where to start when the group has no committed offset for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The partition's first stored record.
    Earliest,
    #[default]
    /// The high watermark: only records produced from now on.
    Latest,
    /// Fail with [`ConsumerError::NoOffset`].
    Error,
}

/// Consumer settings, named as in Kafka: `ConsumerConfig::default()` and the setters
/// named as the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Needed for `subscribe` and for commits.
    pub group: Option<String>,
    /// Commit the positions `poll` handed out every `auto_commit_interval`, and on `close`.
    pub auto_commit: bool,
    /// How often auto-commit commits.
    pub auto_commit_interval: Duration,
    /// Where to start a partition that has no committed offset.
    pub auto_offset_reset: OffsetReset,
    /// A member silent for this long loses its partitions.
    pub session_timeout: Duration,
    /// The options of each fetch the consumer sends.
    pub fetch: FetchOptions,
    /// Records one `poll` returns at most.
    pub max_poll_records: usize,
}

config_setters!(ConsumerConfig {
    group: String => some_into,
    auto_commit: bool => set,
    auto_commit_interval: Duration => set,
    auto_offset_reset: OffsetReset => set,
    session_timeout: Duration => set,
    fetch: FetchOptions => set,
    max_poll_records: usize => set,
});

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group: None,
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            auto_offset_reset: OffsetReset::Latest,
            session_timeout: Duration::from_secs(10),
            fetch: FetchOptions::default(),
            max_poll_records: 500,
        }
    }
}

/// A record handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The record's topic.
    pub topic: Arc<str>,
    /// The partition it was stored in.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Its timestamp, in milliseconds since the epoch.
    pub timestamp: i64,
    /// Its key, if it has one.
    pub key: Option<Bytes>,
    /// Its value (`None`: a null value, as a tombstone).
    pub value: Option<Bytes>,
    /// Its headers, in the order they were sent.
    pub headers: Vec<RecordHeader>,
}

/// The outcome of a [`Consumer::commit_async`]. Dropping it does not cancel the
/// commit.
#[must_use = "the commit is sent anyway; await this for its outcome"]
pub struct CommitFuture {
    task: tokio::task::JoinHandle<Result<(), ConsumerError>>,
}

impl std::future::Future for CommitFuture {
    type Output = Result<(), ConsumerError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        // The task ends early only when its runtime shuts down.
        std::pin::Pin::new(&mut self.task)
            .poll(cx)
            .map(|joined| joined.unwrap_or(Err(ConsumerError::Closed)))
    }
}

/// Why a consumer call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    /// A request to the broker failed.
    Request(#[from] RequestError),
    #[error("no committed offset for {0} and auto_offset_reset is `error`")]
    /// The partition has no committed offset and `auto_offset_reset` is `Error`.
    NoOffset(TopicPartition),
    #[error("{0} is not assigned to this consumer")]
    /// The partition is not assigned to this consumer.
    NotAssigned(TopicPartition),
    #[error("this needs a group: set ConsumerConfig::group")]
    /// The call needs `ConsumerConfig::group`.
    NoGroup,
    #[error("the consumer is closed")]
    /// The consumer was closed.
    Closed,
}

/// Where a [`Rebalance::seek_to`] moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeekTo {
    /// This offset: the next record read is the one stored there.
    Offset(u64),
    /// The first stored record.
    Beginning,
    /// Past the last record: only new records are read.
    End,
    /// The first record whose timestamp is at or after this one (milliseconds since
    /// the epoch), or the end when there is none.
    Timestamp(i64),
}

/// What a [`RebalanceListener`] asks for the partitions it was just given: where
/// reading starts, and offsets to commit. The consumer carries it out when the
/// callback returns, before anything of those partitions is fetched (as Java's
/// `ConsumerRebalanceListener` calling `seek` and `commitSync` from
/// `onPartitionsAssigned`).
#[derive(Debug, Default)]
pub struct Rebalance {
    seeks: Vec<(TopicPartition, SeekTo)>,
    commits: Vec<(TopicPartition, u64)>,
}

impl Rebalance {
    /// Starts reading `tp` at `to` instead of its committed offset (or the reset
    /// policy). The last seek asked for a partition wins.
    pub fn seek_to(&mut self, tp: &TopicPartition, to: SeekTo) {
        self.seeks.retain(|(t, _)| t != tp);
        self.seeks.push((tp.clone(), to));
    }

    /// Commits `offset` (the next record to read) for `tp` for the group.
    pub fn commit(&mut self, tp: &TopicPartition, offset: u64) {
        self.commits.retain(|(t, _)| t != tp);
        self.commits.push((tp.clone(), offset));
    }
}

/// Told about partitions a group gives and takes.
pub trait RebalanceListener: Send {
    /// Called inside `poll` before `revoked` are released. Returns offsets to commit
    /// before they go (in addition to auto-commit's); `positions` are the next offsets
    /// the application would have read.
    fn on_partitions_revoked(
        &mut self,
        revoked: &[TopicPartition],
        positions: &BTreeMap<TopicPartition, u64>,
    ) -> Vec<(TopicPartition, u64)> {
        let _ = (revoked, positions);
        Vec::new()
    }

    /// Called inside `poll` (or [`Consumer::wait_for_assignment`]) once `assigned`
    /// are this consumer's, before any of them is fetched. Seeks and commits asked of
    /// `rebalance` are carried out when this returns; a seek for a partition that is
    /// not among `assigned` makes that call return [`ConsumerError::NotAssigned`].
    fn on_partitions_assigned(&mut self, assigned: &[TopicPartition], rebalance: &mut Rebalance) {
        let _ = (assigned, rebalance);
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    /// The next offset to hand to the application; `None` until resolved from the
    /// committed offset or the reset policy.
    position: Option<u64>,
    paused: bool,
    buffer: VecDeque<DecodedRecord>,
    /// Where the fetch that filled `buffer` ended: past records a fetch-stage plugin
    /// removed after the last buffered one. The position moves there once the buffer
    /// is handed out, so a commit does not send the group back to removed records.
    fetched_end: Option<u64>,
}

impl PartitionState {
    /// With the buffer handed out, moves the position past what the last fetch
    /// covered.
    fn skip_to_fetched_end(&mut self) {
        if let (Some(end), Some(position)) = (self.fetched_end.take(), self.position)
            && end > position
        {
            self.position = Some(end);
        }
    }
}

#[derive(Debug, Default)]
struct Membership {
    member_id: String,
    epoch: i32,
    subscription: Vec<String>,
    subscription_sent: bool,
    /// The coordinator's latest word on what this member may own.
    granted: Option<BTreeSet<TopicPartition>>,
    /// What this consumer holds (reported in every heartbeat).
    owned: BTreeSet<TopicPartition>,
    leaving: bool,
    /// The last heartbeat failure that retrying cannot fix (an unknown topic in the
    /// subscription, an invalid group id); `poll` reports it.
    fatal: Option<RequestError>,
}

struct Group {
    name: String,
    state: Arc<Mutex<Membership>>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Group {
    fn drop(&mut self) {
        // A consumer dropped without `close` stops heartbeating, like a crashed one:
        // its partitions move after the session timeout.
        self.task.abort();
    }
}

/// A consumer. Not shared between tasks: one consumer, one reading loop.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    assigned: BTreeMap<TopicPartition, PartitionState>,
    group: Option<Group>,
    /// In a mutex only so that a `Consumer` is `Sync` (and its futures `Send`) with a
    /// listener that is `Send` but not `Sync`; it is only ever used through `&mut self`.
    listener: Option<std::sync::Mutex<Box<dyn RebalanceListener>>>,
    last_auto_commit: Instant,
    /// Positions as last committed, so auto-commit sends only what moved.
    committed_positions: BTreeMap<TopicPartition, u64>,
    closed: bool,
}

/// How often [`Consumer::wait_for_assignment`] looks for a grant from the heartbeat
/// task.
const ASSIGNMENT_CHECK_INTERVAL: Duration = Duration::from_millis(20);

fn lock(state: &Mutex<Membership>) -> std::sync::MutexGuard<'_, Membership> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_wire(set: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in set {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    by_topic
        .into_iter()
        .map(|(t, partitions)| TopicPartitions {
            topic: t.to_owned(),
            partitions,
        })
        .collect()
}

impl Consumer {
    /// A consumer over `client`'s connection; it reads nothing until `assign` or `subscribe`.
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Self {
            client,
            config,
            assigned: BTreeMap::new(),
            group: None,
            listener: None,
            last_auto_commit: Instant::now(),
            committed_positions: BTreeMap::new(),
            closed: false,
        }
    }

    /// Changes how many records one `poll` returns at most.
    pub fn set_max_poll_records(&mut self, max: usize) {
        self.config.max_poll_records = max.max(1);
    }

    /// Sets the listener told about group rebalances.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(std::sync::Mutex::new(Box::new(listener)));
    }

    /// Reads exactly these partitions, without group membership. Positions start from
    /// the group's committed offsets (when a group is set) or the reset policy.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        self.group = None;
        self.assigned = partitions
            .into_iter()
            .map(|tp| (tp, PartitionState::default()))
            .collect();
    }

    /// Joins the configured group for these topics; partitions arrive through `poll`.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<(), ConsumerError> {
        let name = self.config.group.clone().ok_or(ConsumerError::NoGroup)?;
        self.assigned.clear();
        let state = Arc::new(Mutex::new(Membership {
            subscription: topics.iter().map(|t| (*t).to_owned()).collect(),
            ..Membership::default()
        }));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            name.clone(),
            self.config.session_timeout,
            Arc::clone(&state),
            Arc::clone(&wake),
        ));
        self.group = Some(Group {
            name,
            state,
            wake,
            task,
        });
        Ok(())
    }

    /// The partitions this consumer reads now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.keys().cloned().collect()
    }

    /// The next offset `poll` would hand out for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.assigned.get(tp).and_then(|s| s.position)
    }

    /// The group's member id and epoch, once joined.
    pub fn member(&self) -> Option<(String, i32)> {
        let group = self.group.as_ref()?;
        let state = lock(&group.state);
        (!state.member_id.is_empty()).then(|| (state.member_id.clone(), state.epoch))
    }

    fn state_mut(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState, ConsumerError> {
        self.assigned
            .get_mut(tp)
            .ok_or_else(|| ConsumerError::NotAssigned(tp.clone()))
    }

    /// Moves `tp`'s position; the next `poll` reads from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<(), ConsumerError> {
        let state = self.state_mut(tp)?;
        state.position = Some(offset);
        state.buffer.clear();
        state.fetched_end = None;
        Ok(())
    }

    async fn seek_spec(
        &mut self,
        tp: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<u64, ConsumerError> {
        self.state_mut(tp)?;
        let answer = self
            .client
            .list_offsets(&tp.topic, tp.partition, spec)
            .await?;
        let offset = answer.offset.unwrap_or(answer.log_end_offset);
        self.seek(tp, offset)?;
        Ok(offset)
    }

    /// Moves to the first stored record.
    pub async fn seek_to_beginning(&mut self, tp: &TopicPartition) -> Result<u64, ConsumerError> {
        self.seek_spec(tp, OffsetSpec::Earliest).await
    }

    /// Moves past the last record: only new records will be read.
    pub async fn seek_to_end(&mut self, tp: &TopicPartition) -> Result<u64, ConsumerError> {
        self.seek_spec(tp, OffsetSpec::Latest).await
    }

    /// Moves to the first record whose timestamp is at or after `timestamp_ms` (or to
    /// the end if there is none), through the partition's time index.
    pub async fn seek_to_timestamp(
        &mut self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> Result<u64, ConsumerError> {
        self.seek_spec(tp, OffsetSpec::Timestamp(timestamp_ms))
            .await
    }

    /// Stops fetching these partitions until `resume`; positions are kept.
    pub fn pause(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(s) = self.assigned.get_mut(tp) {
                s.paused = true;
            }
        }
    }

    /// Fetches `partitions` again after [`Consumer::pause`].
    pub fn resume(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(s) = self.assigned.get_mut(tp) {
                s.paused = false;
            }
        }
    }

    /// Offsets the group committed for these partitions.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<u64>)>, ConsumerError> {
        let group = self.config.group.clone().ok_or(ConsumerError::NoGroup)?;
        let wanted = to_wire(&partitions.iter().cloned().collect());
        let answer = self
            .client
            .rpc(&OffsetFetchRequest {
                group,
                partitions: Some(wanted),
            })
            .await?;
        Ok(answer
            .offsets
            .into_iter()
            .map(|(topic, partition, c)| {
                (TopicPartition::new(topic, partition), c.map(|c| c.offset))
            })
            .collect())
    }

    fn commit_request(
        &self,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<OffsetCommitRequest, ConsumerError> {
        let group = self.config.group.clone().ok_or(ConsumerError::NoGroup)?;
        let (member_id, member_epoch) = match &self.group {
            Some(g) => {
                let state = lock(&g.state);
                (state.member_id.clone(), state.epoch)
            }
            None => (String::new(), NO_MEMBER_EPOCH),
        };
        Ok(OffsetCommitRequest {
            group,
            member_id,
            member_epoch,
            offsets: offsets
                .iter()
                .map(|(tp, offset)| CommittedOffset {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        })
    }

    /// Commits explicit offsets (each the offset of the next record to read) and waits
    /// until they are durable. A stale member epoch is retried once after a heartbeat.
    pub async fn commit_offsets(
        &mut self,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), ConsumerError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            let request = self.commit_request(offsets)?;
            match self.client.rpc(&request).await {
                Ok(_) => break,
                Err(err) if err.code() == Some(ErrorCode::StaleMemberEpoch) && attempt == 0 => {
                    attempt += 1;
                    self.wait_for_heartbeat().await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        for (tp, offset) in offsets {
            self.committed_positions.insert(tp.clone(), *offset);
        }
        Ok(())
    }

    async fn wait_for_heartbeat(&self) {
        if let Some(group) = &self.group {
            let before = lock(&group.state).epoch;
            group.wake.notify_one();
            let deadline = Instant::now() + self.config.session_timeout / 2;
            while Instant::now() < deadline && lock(&group.state).epoch == before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    fn positions(&self) -> Vec<(TopicPartition, u64)> {
        self.assigned
            .iter()
            .filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p)))
            .collect()
    }

    /// Commits the position of every assigned partition: what `poll` handed out.
    pub async fn commit_sync(&mut self) -> Result<(), ConsumerError> {
        let positions = self.positions();
        self.commit_offsets(&positions).await
    }

    /// Commits the current positions in the background and returns at once. The
    /// commit is sent whether or not the returned future is awaited; await it for the
    /// outcome. Two `commit_async` calls are not ordered with each other.
    pub fn commit_async(&self) -> CommitFuture {
        let request = self.commit_request(&self.positions());
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            match request {
                Ok(req) if req.offsets.is_empty() => Ok(()),
                Ok(req) => client
                    .rpc(&req)
                    .await
                    .map(|_| ())
                    .map_err(ConsumerError::from),
                Err(err) => Err(err),
            }
        });
        CommitFuture { task }
    }

    /// Applies the coordinator's latest assignment: commits and releases what was
    /// taken away, then takes on what was given.
    async fn apply_assignment(&mut self) -> Result<(), ConsumerError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        if let Some(err) = lock(&group.state).fatal.clone() {
            return Err(ConsumerError::Request(err));
        }
        let (granted, owned) = {
            let state = lock(&group.state);
            match &state.granted {
                Some(granted) if *granted != state.owned => (granted.clone(), state.owned.clone()),
                _ => return Ok(()),
            }
        };
        let revoked: Vec<TopicPartition> = owned.difference(&granted).cloned().collect();
        let added: Vec<TopicPartition> = granted.difference(&owned).cloned().collect();
        if !revoked.is_empty() {
            let positions: BTreeMap<TopicPartition, u64> = revoked
                .iter()
                .filter_map(|tp| {
                    self.assigned
                        .get(tp)
                        .and_then(|s| s.position)
                        .map(|p| (tp.clone(), p))
                })
                .collect();
            let mut commits: BTreeMap<TopicPartition, u64> = BTreeMap::new();
            if self.config.auto_commit {
                commits.extend(positions.clone());
            }
            if let Some(listener) = self.listener.as_mut() {
                let listener = listener.get_mut().unwrap_or_else(|p| p.into_inner());
                commits.extend(listener.on_partitions_revoked(&revoked, &positions));
            }
            let commits: Vec<(TopicPartition, u64)> = commits.into_iter().collect();
            if let Err(err) = self.commit_offsets(&commits).await {
                // The partitions go anyway; their next owner starts from the last commit.
                tracing::warn!(%err, "commit before releasing partitions failed");
            }
            for tp in &revoked {
                self.assigned.remove(tp);
                self.committed_positions.remove(tp);
            }
        }
        for tp in &added {
            self.assigned.insert(tp.clone(), PartitionState::default());
        }
        if let Some(group) = &self.group {
            lock(&group.state).owned = granted;
            group.wake.notify_one();
        }
        if !added.is_empty()
            && let Some(listener) = self.listener.as_mut()
        {
            let mut rebalance = Rebalance::default();
            listener
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .on_partitions_assigned(&added, &mut rebalance);
            self.carry_out(&added, rebalance).await?;
        }
        Ok(())
    }

    /// Performs what a listener asked for the partitions in `added`.
    async fn carry_out(
        &mut self,
        added: &[TopicPartition],
        rebalance: Rebalance,
    ) -> Result<(), ConsumerError> {
        if let Some((tp, _)) = rebalance.seeks.iter().find(|(tp, _)| !added.contains(tp)) {
            return Err(ConsumerError::NotAssigned(tp.clone()));
        }
        self.commit_offsets(&rebalance.commits).await?;
        for (tp, to) in rebalance.seeks {
            let spec = match to {
                SeekTo::Offset(offset) => {
                    self.seek(&tp, offset)?;
                    continue;
                }
                SeekTo::Beginning => OffsetSpec::Earliest,
                SeekTo::End => OffsetSpec::Latest,
                SeekTo::Timestamp(ms) => OffsetSpec::Timestamp(ms),
            };
            self.seek_spec(&tp, spec).await?;
        }
        Ok(())
    }

    /// Waits until the group gives this consumer partitions, applying the assignment
    /// as `poll` does (the rebalance listener is told) and resolving where each
    /// partition starts, without fetching records. Returns the assignment; empty when
    /// none came within `timeout` (a group with more members than partitions, say).
    /// Without a group, returns the partitions given to [`Consumer::assign`].
    pub async fn wait_for_assignment(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<TopicPartition>, ConsumerError> {
        if self.closed {
            return Err(ConsumerError::Closed);
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.apply_assignment().await?;
            if !self.assigned.is_empty() {
                self.resolve_positions().await?;
                return Ok(self.assignment());
            }
            if self.group.is_none() || Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            // The heartbeat task brings the grant; it is looked at this often.
            tokio::time::sleep(ASSIGNMENT_CHECK_INTERVAL.min(deadline - Instant::now())).await;
        }
    }

    /// For each partition, the offset of the first record whose timestamp is at or
    /// after the given one (milliseconds since the epoch), through the partition's time
    /// index; `None` where no record is that recent (Kafka's `offsetsForTimes`). The
    /// partitions need not be this consumer's; they are asked in parallel.
    pub async fn offsets_for_times(
        &self,
        query: &[(TopicPartition, i64)],
    ) -> Result<BTreeMap<TopicPartition, Option<u64>>, ConsumerError> {
        let lookups = query.iter().map(|(tp, timestamp_ms)| async move {
            let answer = self
                .client
                .list_offsets(
                    &tp.topic,
                    tp.partition,
                    OffsetSpec::Timestamp(*timestamp_ms),
                )
                .await?;
            Ok::<_, ConsumerError>((tp.clone(), answer.offset))
        });
        futures_util::future::try_join_all(lookups)
            .await
            .map(|found| found.into_iter().collect())
    }

    /// Gives partitions without a position one: the committed offset, else the reset
    /// policy.
    async fn resolve_positions(&mut self) -> Result<(), ConsumerError> {
        let missing: Vec<TopicPartition> = self
            .assigned
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let committed = if self.config.group.is_some() {
            self.committed(&missing).await?
        } else {
            Vec::new()
        };
        for tp in missing {
            let from_commit = committed
                .iter()
                .find(|(c, _)| *c == tp)
                .and_then(|(_, o)| *o);
            let position = match (from_commit, self.config.auto_offset_reset) {
                (Some(offset), _) => offset,
                (None, OffsetReset::Earliest) => self
                    .client
                    .list_offsets(&tp.topic, tp.partition, OffsetSpec::Earliest)
                    .await?
                    .offset
                    .unwrap_or(0),
                (None, OffsetReset::Latest) => self
                    .client
                    .list_offsets(&tp.topic, tp.partition, OffsetSpec::Latest)
                    .await?
                    .offset
                    .unwrap_or(0),
                (None, OffsetReset::Error) => return Err(ConsumerError::NoOffset(tp)),
            };
            if let Some(s) = self.assigned.get_mut(&tp) {
                s.position = Some(position);
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for records and returns them (at most `max_poll_records`).
    /// Also applies group assignments, resolves positions, and auto-commits.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ConsumerError> {
        if self.closed {
            return Err(ConsumerError::Closed);
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.apply_assignment().await?;
            self.resolve_positions().await?;
            if self.config.auto_commit
                && self.last_auto_commit.elapsed() >= self.config.auto_commit_interval
            {
                self.auto_commit().await;
            }
            let records = self.drain_buffers();
            if !records.is_empty() {
                return Ok(records);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.fetch_round(remaining.min(self.config.fetch.max_wait))
                .await?;
            if !self.has_buffered() && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    async fn auto_commit(&mut self) {
        self.last_auto_commit = Instant::now();
        let moved: Vec<(TopicPartition, u64)> = self
            .positions()
            .into_iter()
            .filter(|(tp, p)| self.committed_positions.get(tp) != Some(p))
            .collect();
        if let Err(err) = self.commit_offsets(&moved).await {
            tracing::warn!(%err, "auto-commit failed; it is retried at the next interval");
        }
    }

    fn has_buffered(&self) -> bool {
        self.assigned
            .values()
            .any(|s| !s.paused && !s.buffer.is_empty())
    }

    /// Takes records from the partition buffers, round-robin, advancing positions.
    fn drain_buffers(&mut self) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        let max = self.config.max_poll_records.max(1);
        let mut progress = true;
        // The partition's shared topic name, not one allocation per record.
        let names: Vec<Arc<str>> = self.assigned.keys().map(|tp| tp.topic.clone()).collect();
        while out.len() < max && progress {
            progress = false;
            for ((tp, state), topic) in self.assigned.iter_mut().zip(&names) {
                if state.paused || out.len() >= max {
                    continue;
                }
                if let Some(record) = state.buffer.pop_front() {
                    state.position = Some(record.offset + 1);
                    if state.buffer.is_empty() {
                        state.skip_to_fetched_end();
                    }
                    out.push(ConsumerRecord {
                        topic: Arc::clone(topic),
                        partition: tp.partition,
                        offset: record.offset,
                        timestamp: record.timestamp,
                        key: record.key,
                        value: record.value,
                        headers: record.headers,
                    });
                    progress = true;
                }
            }
        }
        out
    }

    /// Fetches every unpaused partition with an empty buffer, in parallel.
    async fn fetch_round(&mut self, wait: Duration) -> Result<(), ConsumerError> {
        let wanted: Vec<(TopicPartition, u64)> = self
            .assigned
            .iter()
            .filter(|(_, s)| !s.paused && s.buffer.is_empty())
            .filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p)))
            .collect();
        if wanted.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
            return Ok(());
        }
        let options = FetchOptions {
            max_wait: wait,
            ..self.config.fetch.clone()
        };
        let mut tasks = Vec::with_capacity(wanted.len());
        for (tp, offset) in wanted {
            let client = self.client.clone();
            let options = options.clone();
            tasks.push(tokio::spawn(async move {
                let result = client
                    .fetch(&tp.topic, tp.partition, offset, &options)
                    .await;
                (tp, offset, result)
            }));
        }
        for task in tasks {
            let Ok((tp, offset, result)) = task.await else {
                continue;
            };
            match result {
                Ok(fetched) => {
                    if let Some(state) = self.assigned.get_mut(&tp)
                        && state.position == Some(offset)
                    {
                        state.buffer.extend(fetched.records);
                        state.fetched_end = Some(fetched.next_offset);
                        if state.buffer.is_empty() {
                            // Everything fetched was removed by a plugin: move on.
                            state.skip_to_fetched_end();
                        }
                    }
                }
                Err(err) if err.code() == Some(ErrorCode::OffsetOutOfRange) => {
                    let spec = match self.config.auto_offset_reset {
                        OffsetReset::Earliest => OffsetSpec::Earliest,
                        OffsetReset::Latest => OffsetSpec::Latest,
                        OffsetReset::Error => return Err(err.into()),
                    };
                    tracing::warn!(partition = %tp, offset, "offset out of range; resetting");
                    self.seek_spec(&tp, spec).await?;
                }
                Err(err) if err.is_retriable() => {
                    tracing::debug!(partition = %tp, %err, "fetch failed; retrying")
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Commits (with auto-commit), leaves the group, and stops.
    pub async fn close(&mut self) -> Result<(), ConsumerError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let commit = if self.config.auto_commit {
            self.commit_sync().await
        } else {
            Ok(())
        };
        if let Some(group) = self.group.take() {
            let request = {
                let mut state = lock(&group.state);
                state.leaving = true;
                (!state.member_id.is_empty()).then(|| GroupHeartbeatRequest {
                    group: group.name.clone(),
                    member_id: state.member_id.clone(),
                    member_epoch: LEAVE_GROUP_EPOCH,
                    session_timeout_ms: 0,
                    subscription: None,
                    owned: Vec::new(),
                })
            };
            if let Some(request) = request {
                let _ = self.client.rpc(&request).await;
            }
        }
        commit
    }

    /// Records as a stream: each item is one record or the error that ended a poll.
    pub fn into_stream(
        self,
    ) -> impl futures_core::Stream<Item = Result<ConsumerRecord, ConsumerError>> {
        futures_util::stream::unfold(
            (self, VecDeque::new()),
            |(mut consumer, mut pending)| async move {
                loop {
                    if let Some(record) = pending.pop_front() {
                        return Some((Ok(record), (consumer, pending)));
                    }
                    match consumer.poll(Duration::from_millis(500)).await {
                        Ok(records) => pending.extend(records),
                        Err(ConsumerError::Closed) => return None,
                        Err(err) => return Some((Err(err), (consumer, pending))),
                    }
                }
            },
        )
    }
}

/// Heartbeats until the consumer leaves or is dropped.
async fn heartbeat_loop(
    client: Client,
    group: String,
    session_timeout: Duration,
    state: Arc<Mutex<Membership>>,
    wake: Arc<Notify>,
) {
    let session_timeout_ms = u32::try_from(session_timeout.as_millis()).unwrap_or(u32::MAX);
    let mut interval = Duration::from_millis(u64::from(session_timeout_ms / 3).max(100));
    loop {
        let request = {
            let s = lock(&state);
            if s.leaving {
                return;
            }
            GroupHeartbeatRequest {
                group: group.clone(),
                member_id: s.member_id.clone(),
                member_epoch: s.epoch,
                session_timeout_ms,
                subscription: (!s.subscription_sent).then(|| s.subscription.clone()),
                owned: to_wire(&s.owned),
            }
        };
        match client.rpc(&request).await {
            Ok(answer) => {
                let mut s = lock(&state);
                if s.leaving {
                    return;
                }
                s.member_id = answer.member_id;
                s.epoch = answer.member_epoch;
                s.subscription_sent = true;
                s.fatal = None;
                let granted = answer
                    .assignment
                    .iter()
                    .flat_map(|tp| {
                        tp.partitions
                            .iter()
                            .map(|p| TopicPartition::new(tp.topic.clone(), *p))
                    })
                    .collect();
                s.granted = Some(granted);
                interval = Duration::from_millis(u64::from(answer.heartbeat_interval_ms).max(50));
            }
            Err(err) => {
                let mut s = lock(&state);
                if err.code() == Some(ErrorCode::UnknownMemberId) {
                    // Fenced: everything held is lost; join again as a new member.
                    tracing::warn!(group = %group, "member fenced by the coordinator; rejoining");
                    s.member_id.clear();
                    s.epoch = 0;
                    s.subscription_sent = false;
                    s.granted = Some(BTreeSet::new());
                }
                if !err.is_retriable() && err.code() != Some(ErrorCode::UnknownMemberId) {
                    s.fatal = Some(err);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
    }
}
