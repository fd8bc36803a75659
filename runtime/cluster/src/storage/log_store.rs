//! The Raft log and vote on disk (openraft's `RaftLogStorage`).
//!
//! The log is a directory of append-only segment files named by the index of their
//! first entry (20 digits, `.log`), each a sequence of frames holding one JSON entry.
//! An append writes its entries and `fdatasync`s once before openraft is told they
//! are durable; a segment rolls after [`SEGMENT_ENTRIES_MAX`] entries or
//! [`SEGMENT_BYTES_MAX`] bytes. On open, the last segment is scanned and cut at the
//! first torn or corrupt frame (only an unfinished append can leave one); damage in
//! an earlier segment, or a gap between segments, refuses to start.
//!
//! Purging writes the purge point (`log/purged`) first and then deletes whole
//! segments, so a crash in between only leaves segments that the next open deletes.
//! Truncating deletes segments from the end and then cuts the one that holds the
//! first removed entry.
//!
//! The live log is also kept in memory: it is bounded by the snapshot policy (the
//! controller snapshots every few thousand entries and purges what the snapshot
//! covers), and it lets replication read entries without touching the disk. File I/O
//! runs on tokio's blocking pool, never on a runtime worker.
//!
//! The vote and the committed log id live in `vote` and `committed`, each replaced
//! atomically (write, fsync, rename, fsync the directory).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageError, StorageIOError, Vote};

use super::DirLock;
use super::frame::{self, FRAME_HEADER_BYTES};
use crate::metadata::limits::COMMAND_BYTES_MAX;
use crate::type_config::{LogEntry, LogId, NodeId, TypeConfig};

/// Largest log entry, serialised: the largest command and room for its envelope.
pub const ENTRY_BYTES_MAX: usize = COMMAND_BYTES_MAX + 64 * 1024;
/// Entries per segment before it rolls.
pub const SEGMENT_ENTRIES_MAX: usize = 4_096;
/// Bytes per segment before it rolls.
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The largest segment file an open accepts: a full segment plus the entry that
/// filled it.
const SEGMENT_FILE_BYTES_MAX: u64 =
    SEGMENT_BYTES_MAX + (ENTRY_BYTES_MAX + FRAME_HEADER_BYTES) as u64;
/// Vote, committed and purged records are a few hundred bytes.
const META_BYTES_MAX: usize = 4 * 1024;

const _: () = assert!(ENTRY_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX);
const _: () = assert!(ENTRY_BYTES_MAX <= u32::MAX as usize);

const LOG_DIR: &str = "log";
const PURGED_FILE: &str = "purged";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";
const SEGMENT_EXTENSION: &str = "log";

type Entries = Arc<Mutex<BTreeMap<u64, LogEntry>>>;

/// The controller's Raft log and vote, on disk.
pub struct LogStore {
    files: Arc<Mutex<LogFiles>>,
    entries: Entries,
    dir: PathBuf,
    purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    _lock: Arc<DirLock>,
}

/// Reads log entries for replication; a cheap handle onto the store's memory.
#[derive(Clone)]
pub struct LogReader {
    entries: Entries,
}

/// What an open found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRecovery {
    /// Entries loaded (after the purge point).
    pub entries: u64,
    /// Bytes cut from the tail of the last segment.
    pub torn_bytes_cut: u64,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting a torn tail. Blocking.
    pub fn open(dir: &Path, lock: Arc<DirLock>) -> io::Result<(Self, LogRecovery)> {
        let committed: Option<Option<LogId>> = read_meta(&dir.join(COMMITTED_FILE))?;
        let committed = committed.flatten();
        let (files, entries, recovery) =
            LogFiles::open(&dir.join(LOG_DIR), committed.map(|c| c.index)).map_err(|e| {
                match e {
                    OpenError::Io(e) => e,
                    OpenError::CommittedMissing { end } => {
                        let end = end.map_or("no entry".to_owned(), |end| format!("index {end}"));
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "controller log {} ends at {end}, but index {} was committed (recorded in {}): committed cluster metadata is missing; see \"Controller log damage\" in docs/operations.md",
                                dir.join(LOG_DIR).display(),
                                committed.map_or(0, |c| c.index),
                                dir.join(COMMITTED_FILE).display(),
                            ),
                        )
                    }
                }
            })?;
        let vote = read_meta(&dir.join(VOTE_FILE))?;
        let purged = files.purged;
        Ok((
            Self {
                files: Arc::new(Mutex::new(files)),
                entries: Arc::new(Mutex::new(entries)),
                dir: dir.to_owned(),
                purged,
                vote,
                committed,
                _lock: lock,
            },
            recovery,
        ))
    }

    fn reader(&self) -> LogReader {
        LogReader {
            entries: self.entries.clone(),
        }
    }

    /// Runs `f` on the files on tokio's blocking pool.
    async fn with_files<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LogFiles) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let files = self.files.clone();
        blocking(move || f(&mut *lock(&files)?)).await
    }
}

impl LogReader {
    fn read<RB: RangeBounds<u64>>(&self, range: RB) -> io::Result<Vec<LogEntry>> {
        let entries = lock(&self.entries)?;
        Ok(entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError<NodeId>> {
        Ok(self
            .read(range)
            .map_err(|e| StorageIOError::read_logs(&e))?)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError<NodeId>> {
        Ok(self
            .reader()
            .read(range)
            .map_err(|e| StorageIOError::read_logs(&e))?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let entries = lock(&self.entries).map_err(|e| StorageIOError::read_logs(&e))?;
        let last = entries.last_key_value().map(|(_, e)| e.log_id);
        Ok(LogState {
            last_purged_log_id: self.purged,
            last_log_id: last.or(self.purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let path = self.dir.join(VOTE_FILE);
        let payload = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        until_space("vote", move || {
            frame::write_file_atomically(&path, &[&payload])
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        // Optional in openraft: it lets a restart apply what was committed before the
        // first election. An older value read back is safe, only less useful.
        if committed == self.committed {
            return Ok(());
        }
        let path = self.dir.join(COMMITTED_FILE);
        let payload = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(&e))?;
        until_space("committed index", move || {
            frame::write_file_atomically(&path, &[&payload])
        })
        .await
        .map_err(|e| StorageIOError::write(&e))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<LogEntry> = entries.into_iter().collect();
        let written = Arc::new(entries.clone());
        let files = self.files.clone();
        let appended = until_space("log", move || {
            lock(&files).and_then(|mut files| files.append(&written))
        })
        .await;
        match appended {
            Ok(()) => {
                let mut memory = lock(&self.entries).map_err(|e| StorageIOError::write_logs(&e))?;
                for entry in entries {
                    memory.insert(entry.log_id.index, entry);
                }
                drop(memory);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let since = log_id.index;
        self.with_files(move |files| files.truncate(since))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut memory = lock(&self.entries).map_err(|e| StorageIOError::write_logs(&e))?;
        memory.split_off(&since);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.with_files(move |files| files.purge(log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut memory = lock(&self.entries).map_err(|e| StorageIOError::write_logs(&e))?;
        *memory = memory.split_off(&(log_id.index + 1));
        drop(memory);
        if self.purged < Some(log_id) {
            self.purged = Some(log_id);
        }
        Ok(())
    }
}

/// One segment file: entries `first_index..first_index + positions.len()`.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    /// File offset of each entry's frame.
    positions: Vec<u64>,
    /// File length: where the next frame goes.
    end: u64,
}

impl Segment {
    fn next_index(&self) -> u64 {
        self.first_index + self.positions.len() as u64
    }

    fn is_full(&self) -> bool {
        self.positions.len() >= SEGMENT_ENTRIES_MAX || self.end >= SEGMENT_BYTES_MAX
    }
}

/// The segment files. Only the blocking pool touches them, one operation at a time.
#[derive(Debug)]
struct LogFiles {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// Append handle on the last segment.
    active: Option<File>,
    purged: Option<LogId>,
}

impl LogFiles {
    /// Opens the segments in `dir`. A torn tail of the last segment is cut, unless
    /// entries up to `committed` would then be missing: that is refused before any
    /// file is changed.
    fn open(
        dir: &Path,
        committed: Option<u64>,
    ) -> Result<(Self, BTreeMap<u64, LogEntry>, LogRecovery), OpenError> {
        fs::create_dir_all(dir)?;
        let purged: Option<LogId> = read_meta(&dir.join(PURGED_FILE))?;
        let live_from = purged.map_or(0, |p| p.index + 1);

        let mut names = Vec::new();
        for item in fs::read_dir(dir)? {
            let path = item?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // A replacement of `purged` that never got renamed.
                fs::remove_file(&path)?;
                continue;
            }
            if path.extension().is_none_or(|e| e != SEGMENT_EXTENSION) {
                continue;
            }
            let first = path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| corrupt(&path, "not a segment name"))?;
            names.push((first, path));
        }
        names.sort();

        let mut segments: Vec<Segment> = Vec::new();
        let mut entries = BTreeMap::new();
        let mut recovery = LogRecovery::default();
        let mut torn = None;
        let count = names.len();
        for (i, (first_index, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let mut segment = Segment {
                first_index,
                path,
                positions: Vec::new(),
                end: 0,
            };
            if let Some(cut) = scan(&mut segment, is_last, live_from, &mut entries)? {
                torn = Some(cut);
            }
            if let Some(previous) = segments.last()
                && (previous.next_index() != segment.first_index || previous.positions.is_empty())
            {
                return Err(corrupt(&segment.path, "does not follow the previous segment").into());
            }
            segments.push(segment);
        }

        // A torn tail may only hold entries that were never committed: an entry is
        // committed after its append was synced. If the log ends before the committed
        // index, committed metadata is gone (damaged storage, or a file truncated by
        // hand): refuse, changing nothing.
        let end = entries
            .keys()
            .next_back()
            .copied()
            .or(purged.map(|p| p.index));
        if let Some(committed) = committed
            && end.is_none_or(|end| end < committed)
        {
            return Err(OpenError::CommittedMissing { end });
        }
        if let Some(cut) = torn {
            recovery.torn_bytes_cut += cut.apply()?;
        }

        // Finish a purge that a crash interrupted: drop segments holding only purged
        // entries (the last one too, when everything is purged).
        let mut removed = false;
        while segments
            .first()
            .is_some_and(|s| s.next_index() <= live_from)
        {
            let segment = segments.remove(0);
            fs::remove_file(&segment.path)?;
            removed = true;
        }
        if removed {
            frame::sync_dir(dir)?;
        }
        // With nothing purged the log may start anywhere (openraft's suite starts at
        // 1); after a purge it must go on right after the purge point.
        if let (Some(first), Some(_)) = (segments.first(), purged)
            && first.first_index > live_from
        {
            return Err(corrupt(
                &first.path,
                &format!("the log has a gap: entries from {live_from} are missing"),
            )
            .into());
        }

        let active = match segments.last() {
            Some(s) => Some(OpenOptions::new().append(true).open(&s.path)?),
            None => None,
        };
        recovery.entries = entries.len() as u64;
        Ok((
            Self {
                dir: dir.to_owned(),
                segments,
                active,
                purged,
            },
            entries,
            recovery,
        ))
    }

    /// The index the next entry must have; `None` for an empty log with nothing
    /// purged, which may start anywhere.
    fn next_index(&self) -> Option<u64> {
        match self.segments.last() {
            Some(s) => Some(s.next_index()),
            None => self.purged.map(|p| p.index + 1),
        }
    }

    fn append(&mut self, entries: &[LogEntry]) -> io::Result<()> {
        let mut pending = Vec::new();
        let mut pending_positions = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let expected = self
                .next_index()
                .map_or(index, |next| next + pending_positions.len() as u64);
            if index != expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("appending entry {index} where {expected} belongs would leave a hole"),
                ));
            }
            let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
            if payload.len() > ENTRY_BYTES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "entry {index} is {} bytes, more than {ENTRY_BYTES_MAX}",
                        payload.len()
                    ),
                ));
            }
            let full = match self.segments.last() {
                None => true,
                Some(s) => {
                    s.positions.len() + pending_positions.len() >= SEGMENT_ENTRIES_MAX
                        || s.end + pending.len() as u64 >= SEGMENT_BYTES_MAX
                }
            };
            if full {
                self.flush(&mut pending, &mut pending_positions)?;
                self.roll(index)?;
            }
            let end = self.segments.last().map_or(0, |s| s.end);
            pending_positions.push(end + pending.len() as u64);
            frame::encode(&payload, &mut pending);
        }
        self.flush(&mut pending, &mut pending_positions)
    }

    /// Writes and syncs the frames buffered for the active segment.
    fn flush(&mut self, pending: &mut Vec<u8>, positions: &mut Vec<u64>) -> io::Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let (Some(segment), Some(file)) = (self.segments.last_mut(), self.active.as_mut()) else {
            unreachable!("frames are only buffered once a segment is active");
        };
        if let Err(e) = file.write_all(pending).and_then(|()| file.sync_data()) {
            // Nothing of a failed write may stay: the next one would land after a
            // partial frame. (Opened for appending, the file's end is where writes go.)
            file.set_len(segment.end)?;
            return Err(e);
        }
        segment.end += pending.len() as u64;
        segment.positions.append(positions);
        pending.clear();
        Ok(())
    }

    /// Starts a new segment whose first entry is `first_index`.
    fn roll(&mut self, first_index: u64) -> io::Result<()> {
        debug_assert!(self.segments.last().is_none_or(|s| s.is_full()));
        let path = self
            .dir
            .join(format!("{first_index:020}.{SEGMENT_EXTENSION}"));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = frame::sync_dir(&self.dir) {
            // Gone again, so that a later attempt can create it.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.segments.push(Segment {
            first_index,
            path,
            positions: Vec::new(),
            end: 0,
        });
        self.active = Some(file);
        Ok(())
    }

    /// Removes entries from `since` on.
    fn truncate(&mut self, since: u64) -> io::Result<()> {
        self.active = None;
        let mut removed = false;
        while let Some(segment) = self.segments.last_mut() {
            if segment.first_index >= since {
                fs::remove_file(&segment.path)?;
                self.segments.pop();
                removed = true;
                continue;
            }
            if segment.next_index() > since {
                let keep = (since - segment.first_index) as usize;
                let cut = segment.positions[keep];
                let file = OpenOptions::new().write(true).open(&segment.path)?;
                file.set_len(cut)?;
                file.sync_all()?;
                segment.positions.truncate(keep);
                segment.end = cut;
            }
            break;
        }
        if removed {
            frame::sync_dir(&self.dir)?;
        }
        if let Some(segment) = self.segments.last() {
            self.active = Some(OpenOptions::new().append(true).open(&segment.path)?);
        }
        Ok(())
    }

    /// Forgets entries up to `upto` inclusive.
    fn purge(&mut self, upto: LogId) -> io::Result<()> {
        if self.purged >= Some(upto) {
            return Ok(());
        }
        let payload = serde_json::to_vec(&upto).map_err(io::Error::other)?;
        frame::write_file_atomically(&self.dir.join(PURGED_FILE), &[&payload])?;
        self.purged = Some(upto);
        let mut removed = false;
        while self
            .segments
            .first()
            .is_some_and(|s| s.next_index() <= upto.index + 1)
        {
            let segment = self.segments.remove(0);
            fs::remove_file(&segment.path)?;
            removed = true;
        }
        if self.segments.is_empty() {
            self.active = None;
        }
        if removed {
            frame::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Why the segments could not be opened.
enum OpenError {
    Io(io::Error),
    /// The log ends at `end` (or holds nothing), before the committed index.
    CommittedMissing {
        end: Option<u64>,
    },
}

impl From<io::Error> for OpenError {
    fn from(err: io::Error) -> Self {
        OpenError::Io(err)
    }
}

/// A torn tail found in the last segment, cut only once the open is otherwise sound.
struct TornTail {
    path: PathBuf,
    at: u64,
    cut: u64,
    why: String,
}

impl TornTail {
    /// Cuts the file at the last whole frame; returns the bytes cut.
    fn apply(self) -> io::Result<u64> {
        tracing::warn!(
            segment = %self.path.display(),
            offset = self.at,
            bytes = self.cut,
            "controller log: cutting a torn tail ({})", self.why
        );
        let file = OpenOptions::new().write(true).open(&self.path)?;
        file.set_len(self.at)?;
        file.sync_all()?;
        Ok(self.cut)
    }
}

/// Reads a segment's frames into `entries` (those from `live_from` on). A bad frame
/// in the last segment is a torn append: returned for the caller to cut. Anywhere
/// else it is corruption.
fn scan(
    segment: &mut Segment,
    is_last: bool,
    live_from: u64,
    entries: &mut BTreeMap<u64, LogEntry>,
) -> io::Result<Option<TornTail>> {
    let len = fs::metadata(&segment.path)?.len();
    if len > SEGMENT_FILE_BYTES_MAX {
        return Err(corrupt(&segment.path, &format!("{len} bytes is too large")));
    }
    let bytes = fs::read(&segment.path)?;
    let mut at = 0usize;
    while at < bytes.len() {
        let index = segment.next_index();
        let decoded = frame::decode(&bytes[at..], ENTRY_BYTES_MAX)
            .map_err(|e| e.to_string())
            .and_then(|(payload, used)| {
                let entry: LogEntry = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                if entry.log_id.index == index {
                    Ok((entry, used))
                } else {
                    Err(format!(
                        "entry {} where {index} belongs",
                        entry.log_id.index
                    ))
                }
            });
        match decoded {
            Ok((entry, used)) => {
                segment.positions.push(at as u64);
                if index >= live_from {
                    entries.insert(index, entry);
                }
                at += used;
            }
            Err(why) if is_last => {
                segment.end = at as u64;
                return Ok(Some(TornTail {
                    path: segment.path.clone(),
                    at: at as u64,
                    cut: (bytes.len() - at) as u64,
                    why,
                }));
            }
            Err(why) => {
                return Err(corrupt(&segment.path, &format!("offset {at}: {why}")));
            }
        }
    }
    segment.end = at as u64;
    Ok(None)
}

fn read_meta<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let Some(frames) = frame::read_file(path, 1, META_BYTES_MAX)? else {
        return Ok(None);
    };
    let payload = frames
        .first()
        .expect("read_file returns the frames it was asked for");
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| corrupt(path, &e.to_string()))
}

fn corrupt(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("controller log {}: {why}", path.display()),
    )
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    // A panic while holding the lock may have left the files half-changed: report an
    // error (openraft then stops the node) rather than carry on.
    mutex
        .lock()
        .map_err(|_| io::Error::other("controller storage lock poisoned by a panic"))
}

/// How long the controller's storage waits between attempts while its file system is
/// full.
const STORAGE_FULL_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether an I/O error says the file system has no space (or quota) left.
pub(super) fn is_storage_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Runs a write of the controller's storage on the blocking pool, trying again while
/// the file system is full. Openraft treats a storage error as fatal (the node would
/// serve no metadata until restarted), but a full disk is often temporary, and every
/// write here leaves the files as they were when it fails. Meanwhile the Raft core
/// waits: metadata requests time out with a retriable error, and in a cluster the
/// other controllers elect a leader whose disk has room.
pub(super) async fn until_space<T: Send + 'static>(
    what: &'static str,
    write: impl Fn() -> io::Result<T> + Send + Sync + 'static,
) -> io::Result<T> {
    let write = Arc::new(write);
    let mut waited = false;
    loop {
        let attempt = Arc::clone(&write);
        match blocking(move || attempt()).await {
            Err(e) if is_storage_full(&e) => {
                if !waited {
                    tracing::warn!(what, error = %e,
                        "controller storage is full; metadata changes wait until space returns");
                    waited = true;
                }
                tokio::time::sleep(STORAGE_FULL_RETRY).await;
            }
            result => {
                if waited && result.is_ok() {
                    tracing::info!(what, "controller storage has space again");
                }
                return result;
            }
        }
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("controller storage task failed: {e}")))?
}
