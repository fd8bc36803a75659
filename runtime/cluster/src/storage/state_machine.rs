//! The applied metadata and its snapshots (openraft's `RaftStateMachine`).
//!
//! The state machine lives in memory; what makes it durable is the snapshot file
//! (`snapshot`: a frame with the snapshot's metadata, then a frame with the state as
//! JSON), replaced atomically whenever openraft builds or installs a snapshot. On
//! open, the state is the snapshot's, and openraft re-applies the log after it up to
//! the saved committed index.
//!
//! Every applied batch is published to an [`AppliedView`]: the controller's readers
//! take an `Arc` of the state without waiting for the state machine.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::DirLock;
use super::frame;
use super::log_store::{blocking, lock, until_space};
use crate::metadata::{MetadataResponse, MetadataState};
use crate::type_config::{ControllerNode, LogEntry, LogId, NodeId, TypeConfig};

/// The largest snapshot read from disk or received from a leader. The metadata
/// limits keep real states far below it.
pub const SNAPSHOT_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// A snapshot's metadata: ids and the membership, a few KiB at most.
const SNAPSHOT_META_BYTES_MAX: usize = 1024 * 1024;
const SNAPSHOT_FILE: &str = "snapshot";

type Membership = StoredMembership<NodeId, ControllerNode>;
type Meta = SnapshotMeta<NodeId, ControllerNode>;

/// What the state machine has applied, for readers outside Raft.
#[derive(Debug)]
pub struct AppliedView {
    state: RwLock<Arc<MetadataState>>,
    version: watch::Sender<u64>,
}

impl AppliedView {
    fn new(state: Arc<MetadataState>, version: u64) -> Self {
        Self {
            state: RwLock::new(state),
            version: watch::Sender::new(version),
        }
    }

    /// The applied state.
    pub fn state(&self) -> Arc<MetadataState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The applied version: the index of the last applied log entry plus one (0 when
    /// nothing is applied). It only grows.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Tells when the version moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn publish(&self, state: Arc<MetadataState>, applied: Option<LogId>) {
        // Only a reader's panic could poison this lock, and the value is replaced
        // whole, so it is safe to go on.
        *self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
        self.version.send_replace(version_of(applied));
    }
}

fn version_of(applied: Option<LogId>) -> u64 {
    applied.map_or(0, |l| l.index + 1)
}

/// The snapshot file; its lock orders a snapshot being built against one being
/// installed.
#[derive(Debug)]
struct SnapshotFile {
    path: PathBuf,
    meta: Option<Meta>,
}

/// The metadata state machine and its snapshots.
pub struct StateMachineStore {
    applied: Option<LogId>,
    membership: Membership,
    state: Arc<MetadataState>,
    view: Arc<AppliedView>,
    snapshot: Arc<Mutex<SnapshotFile>>,
    lock: Arc<DirLock>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir` from its last snapshot, if any. Blocking.
    pub fn open(dir: &Path, lock: Arc<DirLock>) -> io::Result<Self> {
        let path = dir.join(SNAPSHOT_FILE);
        let (meta, state) = match read_snapshot(&path)? {
            Some((meta, data)) => (Some(meta), decode_state(&data, &path)?),
            None => (None, MetadataState::new()),
        };
        let applied = meta.as_ref().and_then(|m| m.last_log_id);
        let membership = meta
            .as_ref()
            .map(|m| m.last_membership.clone())
            .unwrap_or_default();
        let state = Arc::new(state);
        Ok(Self {
            applied,
            membership,
            view: Arc::new(AppliedView::new(state.clone(), version_of(applied))),
            state,
            snapshot: Arc::new(Mutex::new(SnapshotFile { path, meta })),
            lock,
        })
    }

    /// Where the applied state is published.
    pub fn view(&self) -> Arc<AppliedView> {
        self.view.clone()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError<NodeId>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetadataResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let mut answers = Vec::new();
        // Readers hold the previous `Arc`, so this copies the state once per batch.
        let state = Arc::make_mut(&mut self.state);
        for entry in entries {
            self.applied = Some(entry.log_id);
            let answer = match entry.payload {
                EntryPayload::Blank => MetadataResponse::Noop,
                EntryPayload::Normal(command) => match state.apply(&command) {
                    Ok(answer) => answer,
                    Err(refusal) => {
                        tracing::debug!(command = command.kind(), %refusal, "metadata command refused");
                        MetadataResponse::Rejected(refusal)
                    }
                },
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    MetadataResponse::Noop
                }
            };
            answers.push(answer);
        }
        self.view.publish(self.state.clone(), self.applied);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            snapshot: self.snapshot.clone(),
            _lock: self.lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotBytes>, StorageError<NodeId>> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotBytes>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        let meta_owned = meta.clone();
        let file = self.snapshot.clone();
        let data = Arc::new(data);
        let state = until_space("snapshot", move || {
            let mut file = lock(&file)?;
            let state = decode_state(&data, &file.path)?;
            write_snapshot(&file.path, &meta_owned, &data)?;
            file.meta = Some(meta_owned.clone());
            Ok(state)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        self.state = Arc::new(state);
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.view.publish(self.state.clone(), self.applied);
        tracing::info!(snapshot = %meta.snapshot_id, "controller installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let file = self.snapshot.clone();
        let found = blocking(move || {
            let file = lock(&file)?;
            read_snapshot(&file.path)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(found.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(SnapshotBytes::new(data)),
        }))
    }
}

/// Serialises a copy of the state taken when openraft asked for a snapshot.
pub struct SnapshotBuilder {
    state: Arc<MetadataState>,
    applied: Option<LogId>,
    membership: Membership,
    snapshot: Arc<Mutex<SnapshotFile>>,
    _lock: Arc<DirLock>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let meta = Meta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: self
                .applied
                .map_or_else(|| "empty".to_owned(), |l| l.to_string()),
        };
        let signature = Some(meta.signature());
        let state = self.state.clone();
        let file = self.snapshot.clone();
        let meta_owned = meta.clone();
        let data = until_space("snapshot", move || {
            let data = serde_json::to_vec(&*state).map_err(io::Error::other)?;
            if data.len() > SNAPSHOT_BYTES_MAX {
                return Err(io::Error::other(format!(
                    "snapshot is {} bytes, more than {SNAPSHOT_BYTES_MAX}",
                    data.len()
                )));
            }
            let mut file = lock(&file)?;
            // A snapshot installed from the leader meanwhile may be newer: keep it.
            let newer_on_disk = file
                .meta
                .as_ref()
                .is_some_and(|m| m.last_log_id > meta_owned.last_log_id);
            if !newer_on_disk {
                write_snapshot(&file.path, &meta_owned, &data)?;
                file.meta = Some(meta_owned.clone());
            }
            Ok(data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "controller built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotBytes::new(data)),
        })
    }
}

fn write_snapshot(path: &Path, meta: &Meta, data: &[u8]) -> io::Result<()> {
    let meta = serde_json::to_vec(meta).map_err(io::Error::other)?;
    frame::write_file_atomically(path, &[&meta, data])
}

fn read_snapshot(path: &Path) -> io::Result<Option<(Meta, Vec<u8>)>> {
    let Some(mut frames) =
        frame::read_file(path, 2, SNAPSHOT_BYTES_MAX.max(SNAPSHOT_META_BYTES_MAX))?
    else {
        return Ok(None);
    };
    let data = frames.pop().expect("two frames were read");
    let meta_bytes = frames.pop().expect("two frames were read");
    if meta_bytes.len() > SNAPSHOT_META_BYTES_MAX {
        return Err(invalid(path, "snapshot metadata is too large"));
    }
    let meta = serde_json::from_slice(&meta_bytes).map_err(|e| invalid(path, &e.to_string()))?;
    Ok(Some((meta, data)))
}

/// Decodes a snapshot's state and checks it before it can replace anything.
fn decode_state(data: &[u8], source: &Path) -> io::Result<MetadataState> {
    if data.len() > SNAPSHOT_BYTES_MAX {
        return Err(invalid(source, "snapshot is too large"));
    }
    let state: MetadataState =
        serde_json::from_slice(data).map_err(|e| invalid(source, &e.to_string()))?;
    state
        .check_invariants()
        .map_err(|broken| invalid(source, &format!("snapshot state is inconsistent: {broken}")))?;
    Ok(state)
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("controller snapshot {}: {why}", path.display()),
    )
}

/// A snapshot's bytes in memory, readable and seekable for openraft's chunked
/// transfer, and refusing to grow past [`SNAPSHOT_BYTES_MAX`] while a snapshot is
/// received.
#[derive(Debug, Default)]
pub struct SnapshotBytes {
    cursor: Cursor<Vec<u8>>,
}

impl SnapshotBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            cursor: Cursor::new(bytes),
        }
    }

    /// All the bytes, wherever the cursor is.
    pub fn into_inner(self) -> Vec<u8> {
        self.cursor.into_inner()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.cursor.get_ref()
    }
}

impl AsyncRead for SnapshotBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.cursor).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotBytes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let end = self.cursor.position().saturating_add(buf.len() as u64);
        if end > SNAPSHOT_BYTES_MAX as u64 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot grows past {SNAPSHOT_BYTES_MAX} bytes"),
            )));
        }
        Pin::new(&mut self.cursor).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.cursor).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.cursor).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotBytes {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.cursor).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.cursor).poll_complete(cx)
    }
}
