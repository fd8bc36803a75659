//! The topics this broker holds: their partitions, their configs, and the metadata file
//! that makes them survive a restart.
//!
//! Layout under the data directory:
//! ```text
//! metadata/topics.json          the topic list, replaced atomically (write, fsync, rename)
//! logs/<topic>-<partition>/     one partition log each
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use quiver_log::{FlushPolicy, LogConfig, OpenError, PartitionLog};
use quiver_wire::message::PARTITIONS_MAX;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::partition::{CloseReason, Partition};

/// Topic config keys a user may set, named as in Kafka.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "min.insync.replicas",
    "unclean.leader.election.enable",
];

/// A topic and its partitions.
pub struct Topic {
    pub name: Arc<str>,
    pub partitions: Vec<Arc<Partition>>,
    pub replication_factor: u16,
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    /// The topic's log gauges now, summed over its partitions, for a metrics scrape.
    pub fn sample(&self) -> crate::metrics::TopicSample {
        let mut sample = crate::metrics::TopicSample {
            name: Arc::clone(&self.name),
            partitions: self.partitions.len() as u64,
            ..Default::default()
        };
        for partition in &self.partitions {
            sample.storage_failed += u64::from(partition.storage_failed());
            let log = partition.log();
            sample.log_end_offset += log.log_end_offset();
            sample.log_start_offset += log.log_start_offset();
            sample.size_bytes += log.size_bytes();
            sample.segments += log.segment_count() as u64;
            drop(log);
            sample.high_watermark += partition.high_watermark();
        }
        sample
    }
}

/// Why a topic operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic `{0}` already exists")]
    AlreadyExists(String),
    #[error("topic `{0}` does not exist")]
    Unknown(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("cannot open partition {partition} of `{topic}`: {source}")]
    Open {
        topic: String,
        partition: u32,
        source: OpenError,
    },
    #[error("metadata storage failed at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    partitions: u32,
    replication_factor: u16,
    configs: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MetadataFile {
    version: u32,
    topics: Vec<TopicRecord>,
}

const METADATA_VERSION: u32 = 1;

/// Applies a topic's configs on top of the broker's log defaults.
pub fn log_config_for(
    base: &LogConfig,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig, TopicError> {
    let mut config = base.clone();
    for (key, value) in configs {
        let invalid =
            || TopicError::InvalidConfig(format!("config `{key}` has invalid value `{value}`"));
        let limit = || match value.parse::<i64>() {
            Ok(-1) => Ok(None),
            Ok(n) if n >= 0 => Ok(Some(n as u64)),
            _ => Err(invalid()),
        };
        match key.as_str() {
            "retention.ms" => config.retention_ms = limit()?,
            "retention.bytes" => config.retention_bytes = limit()?,
            "segment.ms" => config.segment_age_max_ms = limit()?,
            "segment.bytes" => {
                let v: u64 = value.parse().map_err(|_| invalid())?;
                if v < 1024 {
                    return Err(TopicError::InvalidConfig(format!(
                        "segment.bytes {v} is below the minimum of 1024"
                    )));
                }
                config.segment_bytes_max = v;
            }
            // Read by replication (cluster mode): acks=all needs this many in-sync
            // replicas.
            "min.insync.replicas" => {
                let v: u16 = value.parse().map_err(|_| invalid())?;
                if v == 0 {
                    return Err(invalid());
                }
            }
            "unclean.leader.election.enable" => {
                value.parse::<bool>().map_err(|_| invalid())?;
            }
            "max.message.bytes" => {
                let v: usize = value.parse().map_err(|_| invalid())?;
                if !(quiver_wire::batch::BATCH_HEADER_BYTES..=quiver_wire::batch::BATCH_BYTES_MAX)
                    .contains(&v)
                {
                    return Err(TopicError::InvalidConfig(format!(
                        "max.message.bytes {v} is outside {}..={}",
                        quiver_wire::batch::BATCH_HEADER_BYTES,
                        quiver_wire::batch::BATCH_BYTES_MAX
                    )));
                }
                config.batch_bytes_max = v;
            }
            other => {
                return Err(TopicError::InvalidConfig(format!(
                    "unknown topic config `{other}`; known: {}",
                    TOPIC_CONFIG_KEYS.join(", ")
                )));
            }
        }
    }
    Ok(config)
}

/// The topic table.
pub struct TopicRegistry {
    data_dir: PathBuf,
    defaults: LogConfig,
    flush: FlushPolicy,
    metrics: Arc<Metrics>,
    topics: RwLock<BTreeMap<Arc<str>, Arc<Topic>>>,
    /// Serialises create and delete so the metadata file and the table agree.
    writer: std::sync::Mutex<()>,
}

impl TopicRegistry {
    /// Loads the metadata file and opens (recovers) every partition log.
    pub fn open(
        data_dir: &Path,
        defaults: LogConfig,
        flush: FlushPolicy,
        metrics: Arc<Metrics>,
        now_ms: i64,
    ) -> Result<Self, TopicError> {
        let registry = Self {
            data_dir: data_dir.to_owned(),
            defaults,
            flush,
            metrics,
            topics: RwLock::new(BTreeMap::new()),
            writer: std::sync::Mutex::new(()),
        };
        let file = registry.read_metadata()?;
        let mut table = BTreeMap::new();
        for record in file.topics {
            let topic = registry.open_topic(&record, now_ms)?;
            table.insert(Arc::clone(&topic.name), Arc::new(topic));
        }
        *registry
            .topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = table;
        Ok(registry)
    }

    fn metadata_path(&self) -> PathBuf {
        self.data_dir.join("metadata").join("topics.json")
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.data_dir
            .join("logs")
            .join(format!("{topic}-{partition}"))
    }

    fn read_metadata(&self) -> Result<MetadataFile, TopicError> {
        let path = self.metadata_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: MetadataFile =
                    serde_json::from_slice(&bytes).map_err(|e| TopicError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if file.version != METADATA_VERSION {
                    return Err(TopicError::Corrupt {
                        path,
                        message: format!("unknown version {}", file.version),
                    });
                }
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetadataFile {
                version: METADATA_VERSION,
                topics: Vec::new(),
            }),
            Err(source) => Err(TopicError::Io { path, source }),
        }
    }

    /// Replaces the metadata file atomically: a crash leaves the old or the new file.
    fn write_metadata(&self, table: &BTreeMap<Arc<str>, Arc<Topic>>) -> Result<(), TopicError> {
        let path = self.metadata_path();
        let io = |source| TopicError::Io {
            path: path.clone(),
            source,
        };
        let file = MetadataFile {
            version: METADATA_VERSION,
            topics: table
                .values()
                .map(|t| TopicRecord {
                    name: t.name.to_string(),
                    partitions: t.partitions.len() as u32,
                    replication_factor: t.replication_factor,
                    configs: t.configs.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        let dir = path.parent().expect("metadata path has a parent");
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }

    fn open_topic(&self, record: &TopicRecord, now_ms: i64) -> Result<Topic, TopicError> {
        let log_config = log_config_for(&self.defaults, &record.configs)?;
        let name: Arc<str> = Arc::from(record.name.as_str());
        let mut partitions = Vec::with_capacity(record.partitions as usize);
        for index in 0..record.partitions {
            let dir = self.partition_dir(&record.name, index);
            let (log, report) =
                PartitionLog::open(&dir, log_config.clone(), now_ms).map_err(|source| {
                    TopicError::Open {
                        topic: record.name.clone(),
                        partition: index,
                        source,
                    }
                })?;
            if report.truncated_bytes > 0 || report.indexes_rebuilt > 0 {
                tracing::warn!(topic = %record.name, partition = index, truncated_bytes = report.truncated_bytes,
                    indexes_rebuilt = report.indexes_rebuilt, "recovered partition log");
            }
            let partition = Arc::new(Partition::new(Arc::clone(&name), index, log, self.flush));
            partition.spawn_flusher(Arc::clone(&self.metrics));
            partitions.push(partition);
        }
        Ok(Topic {
            name,
            partitions,
            replication_factor: record.replication_factor,
            configs: record.configs.clone(),
        })
    }

    /// Looks a topic up.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every topic, in name order.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Creates a topic: checks, opens its partitions, then records it in the metadata
    /// file. Blocking: call from a blocking context.
    pub fn create(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
        brokers: u16,
        now_ms: i64,
    ) -> Result<Arc<Topic>, TopicError> {
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(TopicError::InvalidRequest(format!(
                "partition count {partitions} is outside 1..={PARTITIONS_MAX}"
            )));
        }
        if replication_factor == 0 || replication_factor > brokers {
            return Err(TopicError::InvalidRequest(format!(
                "replication factor {replication_factor} is outside 1..={brokers} (the brokers available)"
            )));
        }
        log_config_for(&self.defaults, &configs)?;
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_owned()));
        }
        // Leftovers of a topic of the same name whose deletion was cut short.
        for index in 0..partitions {
            let dir = self.partition_dir(name, index);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|source| TopicError::Io { path: dir, source })?;
            }
        }
        let record = TopicRecord {
            name: name.to_owned(),
            partitions,
            replication_factor,
            configs,
        };
        let topic = Arc::new(self.open_topic(&record, now_ms)?);
        let mut next = self
            .topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        next.insert(Arc::clone(&topic.name), Arc::clone(&topic));
        if let Err(err) = self.write_metadata(&next) {
            for p in &topic.partitions {
                p.close(CloseReason::Deleted);
            }
            return Err(err);
        }
        *self
            .topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(topic)
    }

    /// Applies new configs to a topic: every partition's log takes them from its next
    /// append or retention pass, and the metadata file records them. Configs the
    /// broker cannot apply change nothing. Blocking: call from a blocking context.
    pub fn alter_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        let log_config = log_config_for(&self.defaults, &configs)?;
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_owned()))?;
        let topic = Arc::new(Topic {
            name: Arc::clone(&current.name),
            partitions: current.partitions.clone(),
            replication_factor: current.replication_factor,
            configs,
        });
        self.replace(Arc::clone(&topic))?;
        for partition in &current.partitions {
            partition.set_log_config(log_config.clone());
        }
        Ok(())
    }

    /// Grows a topic to `partitions` in total: opens the new partitions' logs, then
    /// records them in the metadata file. Existing partitions are untouched.
    /// Blocking: call from a blocking context.
    pub fn add_partitions(
        &self,
        name: &str,
        partitions: u32,
        now_ms: i64,
    ) -> Result<Arc<Topic>, TopicError> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_owned()))?;
        let existing = u32::try_from(current.partitions.len()).unwrap_or(u32::MAX);
        if partitions <= existing || partitions > PARTITIONS_MAX {
            return Err(TopicError::InvalidRequest(format!(
                "topic `{name}` has {existing} partitions: a new count must be larger and at most {PARTITIONS_MAX}, not {partitions}"
            )));
        }
        let log_config = log_config_for(&self.defaults, &current.configs)?;
        let mut opened = Vec::with_capacity((partitions - existing) as usize);
        let close_opened = |opened: &[Arc<Partition>]| {
            for p in opened {
                p.close(CloseReason::Deleted);
            }
        };
        for index in existing..partitions {
            let dir = self.partition_dir(name, index);
            // Leftovers of a topic of the same name whose deletion was cut short.
            if dir.exists()
                && let Err(source) = std::fs::remove_dir_all(&dir)
            {
                close_opened(&opened);
                return Err(TopicError::Io { path: dir, source });
            }
            let log = match PartitionLog::open(&dir, log_config.clone(), now_ms) {
                Ok((log, _)) => log,
                Err(source) => {
                    close_opened(&opened);
                    return Err(TopicError::Open {
                        topic: name.to_owned(),
                        partition: index,
                        source,
                    });
                }
            };
            let partition = Arc::new(Partition::new(
                Arc::clone(&current.name),
                index,
                log,
                self.flush,
            ));
            partition.spawn_flusher(Arc::clone(&self.metrics));
            opened.push(partition);
        }
        let mut all = current.partitions.clone();
        all.extend(opened.iter().cloned());
        let topic = Arc::new(Topic {
            name: Arc::clone(&current.name),
            partitions: all,
            replication_factor: current.replication_factor,
            configs: current.configs.clone(),
        });
        if let Err(err) = self.replace(Arc::clone(&topic)) {
            close_opened(&opened);
            return Err(err);
        }
        Ok(topic)
    }

    /// Puts `topic` in place of the one of its name: in the metadata file first, then
    /// in the table. The caller holds `writer`.
    fn replace(&self, topic: Arc<Topic>) -> Result<(), TopicError> {
        let mut next = self
            .topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        next.insert(Arc::clone(&topic.name), topic);
        self.write_metadata(&next)?;
        *self
            .topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }

    /// Deletes a topic: forgets it in the metadata file first, then removes its data.
    /// Requests still holding a partition finish against the unlinked files.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = self
            .topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let topic = next
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.to_owned()))?;
        self.write_metadata(&next)?;
        *self
            .topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        for partition in &topic.partitions {
            partition.close(CloseReason::Deleted);
            let dir = self.partition_dir(name, partition.index);
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), %err, "could not remove a deleted partition's directory");
            }
        }
        self.metrics.forget_topic(name);
        Ok(())
    }

    /// Closes every partition: flushers stop, waiters wake.
    pub fn close_all(&self) {
        for topic in self.all() {
            for partition in &topic.partitions {
                partition.close(CloseReason::Stopping);
            }
        }
    }
}
