//! What a handler answers: a frame, stored batches as chunks, or nothing; or a
//! [`RequestError`] carrying the wire error code the client sees.
//!
//! The one table from internal errors to wire codes lives here, keyed by error variant:
//! every `From` below matches variants, never message text.

use bytes::Bytes;
use quiver_log::{AppendError, ReadError};
use quiver_wire::ErrorCode;
use quiver_wire::batch::BatchError;
use quiver_wire::codec::DecodeError;

use crate::group::GroupError;
use crate::partition::PartitionAppendError;
use crate::topic::TopicError;

/// What goes back on the stream.
pub enum Outgoing {
    /// One encoded frame.
    Frame(Bytes),
    /// A frame head followed by stored batches, written without copying them.
    Chunks(Vec<Bytes>),
    /// Nothing: an `acks = none` produce.
    Nothing,
}

/// A request that failed, with the code the client sees.
#[derive(Debug)]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    /// The client vanished before the request was read; there is nobody to answer.
    pub disconnected: bool,
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            disconnected: false,
        }
    }

    pub fn disconnected(err: quinn::ReadExactError) -> Self {
        Self {
            code: ErrorCode::MalformedFrame,
            message: err.to_string(),
            disconnected: true,
        }
    }
}

impl From<DecodeError> for RequestError {
    fn from(err: DecodeError) -> Self {
        let code = match &err {
            DecodeError::UnknownApi(_) => ErrorCode::UnknownApi,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::TooLong { what: "batch", .. } => ErrorCode::BatchTooLarge,
            _ => ErrorCode::MalformedFrame,
        };
        Self::new(code, err.to_string())
    }
}

impl From<TopicError> for RequestError {
    fn from(err: TopicError) -> Self {
        let code = match &err {
            TopicError::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            TopicError::Unknown(_) => ErrorCode::UnknownTopic,
            TopicError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            TopicError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            TopicError::Open { .. } | TopicError::Io { .. } | TopicError::Corrupt { .. } => {
                ErrorCode::StorageError
            }
        };
        Self::new(code, err.to_string())
    }
}

impl From<PartitionAppendError> for RequestError {
    fn from(err: PartitionAppendError) -> Self {
        let code = match &err {
            PartitionAppendError::Log(AppendError::InvalidBatch(batch)) => match batch {
                BatchError::TooLarge { .. } => ErrorCode::BatchTooLarge,
                BatchError::UnsupportedCompression(_) => ErrorCode::UnsupportedCompression,
                _ => ErrorCode::CorruptBatch,
            },
            PartitionAppendError::Log(AppendError::OutOfOrderSequence { .. }) => {
                ErrorCode::OutOfOrderSequence
            }
            PartitionAppendError::Log(AppendError::ProducerFenced { .. }) => {
                ErrorCode::InvalidProducerEpoch
            }
            PartitionAppendError::Log(AppendError::StorageFull { .. }) => ErrorCode::StorageFull,
            PartitionAppendError::Log(_) | PartitionAppendError::StorageFailed => {
                ErrorCode::StorageError
            }
            PartitionAppendError::Deleted => ErrorCode::UnknownTopic,
            PartitionAppendError::Stopping => ErrorCode::BrokerShuttingDown,
            PartitionAppendError::Diverged { .. } | PartitionAppendError::Truncate(_) => {
                ErrorCode::StorageError
            }
        };
        Self::new(code, err.to_string())
    }
}

impl From<ReadError> for RequestError {
    fn from(err: ReadError) -> Self {
        let code = match &err {
            ReadError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            _ => ErrorCode::StorageError,
        };
        Self::new(code, err.to_string())
    }
}

impl From<&quiver_cluster::CommandError> for RequestError {
    fn from(err: &quiver_cluster::CommandError) -> Self {
        use quiver_cluster::CommandError as E;
        let code = match err {
            E::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            E::UnknownTopic(_) => ErrorCode::UnknownTopic,
            E::InvalidTopicName { .. } => ErrorCode::InvalidTopicName,
            E::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            E::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            E::InvalidPlugin(_) | E::InvalidAttachment(_) => ErrorCode::InvalidPlugin,
            E::UnknownPlugin(_) | E::NotAttached { .. } => ErrorCode::UnknownPlugin,
            E::PluginAttached { .. } => ErrorCode::PluginInUse,
            E::ProducerIdClaimed(_) => ErrorCode::ProducerIdNotOwned,
            E::PartitionCountNotIncreased { .. } => ErrorCode::InvalidPartitions,
            E::UnknownGroup(_) => ErrorCode::GroupIdNotFound,
            E::NotEnoughBrokers { .. }
            | E::UnknownBroker(_)
            | E::InvalidBrokerAddress(_)
            | E::StaleBrokerEpoch { .. }
            | E::TooManyBrokers { .. }
            | E::InternalTopic(_)
            | E::InvalidPartitionCount { .. }
            | E::InvalidReplicationFactor { .. }
            | E::TooManyTopics { .. }
            | E::TooManyPartitions { .. }
            | E::FencedLeaderEpoch { .. }
            | E::UnknownLeaderEpoch { .. }
            | E::StaleIsrVersion { .. }
            | E::NotLeader { .. }
            | E::InvalidIsr(_)
            | E::IneligibleReplica(_)
            | E::TooManyPlugins { .. }
            | E::TooManyAttachments { .. }
            | E::DeadLetterCycle { .. }
            | E::InvalidOffsetCommit(_)
            | E::TooManyOffsets { .. }
            | E::InvalidAcl(_)
            | E::TooManyAcls { .. }
            | E::TooManyProducerClaims { .. }
            | E::InvalidUser(_)
            | E::UnknownUser(_)
            | E::TooManyUsers { .. }
            | E::InvalidQuota(_) => ErrorCode::InvalidRequest,
        };
        Self::new(code, format!("controller refused: {err}"))
    }
}

impl From<GroupError> for RequestError {
    fn from(err: GroupError) -> Self {
        let code = match &err {
            GroupError::UnknownMember { .. } => ErrorCode::UnknownMemberId,
            GroupError::StaleEpoch { .. } => ErrorCode::StaleMemberEpoch,
            GroupError::NotEmpty(_) => ErrorCode::GroupNotEmpty,
            GroupError::InvalidGroup(_) => ErrorCode::InvalidGroupId,
            GroupError::Full { .. } | GroupError::TooManyGroups => ErrorCode::InvalidRequest,
        };
        Self::new(code, err.to_string())
    }
}
