//! `quiver-sdk`: the Rust client for Quiver.
//!
//! What it does today: connects to a broker over QUIC (TLS 1.3, ALPN `quiver/1`),
//! produces record batches with a chosen `acks` and returns the
//! assigned offsets, fetches and decodes records from an offset, and looks up offsets
//! by earliest, latest or timestamp. One shared connection, one stream per request,
//! transparent reconnection on the next request after a connection is lost.
//!
//! [`Producer`] adds batching per partition, retries with backoff until a delivery
//! timeout, idempotence (no duplicates from retries, order kept per partition),
//! lz4/zstd compression, bounded memory, and a receipt or callback per record.
//!
//! [`Consumer`] reads assigned partitions or joins a consumer group, with seek
//! (offset, beginning, end, timestamp), pause/resume, committed offsets kept by the
//! broker (sync, async, explicit, auto-commit), and rebalance callbacks.
//!
//! [`Admin`] manages the cluster: topics, partitions and configs, consumer groups and
//! their offsets, plugins, ACLs, users and quotas.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use quiver_sdk::{Acks, Admin, Client, ClientConfig, FetchOptions, NewTopic, Record};
//! let client = Client::connect(ClientConfig::new("127.0.0.1:7420", "quiver-data/tls/ca.pem")).await?;
//! Admin::from_client(client.clone()).create_topic(NewTopic::new("events", 3, 1)).await?;
//! let receipt = client.produce("events", 0, Acks::All, &[Record::from_value("hello", 0)]).await?;
//! let fetched = client.fetch("events", 0, 0, &FetchOptions::default()).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

/// Fluent setters for a config struct, one per field, named as the field: a config
/// built as `ProducerConfig::default().acks(Acks::All).linger(d)` keeps compiling when
/// a field is added, which a struct literal would not (the configs are
/// `#[non_exhaustive]`). `set` takes the field's type, `into` anything convertible
/// to it, `some` and `some_into` the value of an `Option` field, `opt` a value or an
/// `Option`.
macro_rules! config_setters {
    ($config:ident { $($field:ident : $t:ty => $how:ident),* $(,)? }) => {
        impl $config {
            $(config_setters!(@one $how $field $t);)*
        }
    };
    (@one set $field:ident $t:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "` (see the field).")]
        #[must_use]
        pub fn $field(mut self, $field: $t) -> Self {
            self.$field = $field;
            self
        }
    };
    (@one into $field:ident $t:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "` (see the field).")]
        #[must_use]
        pub fn $field(mut self, $field: impl Into<$t>) -> Self {
            self.$field = $field.into();
            self
        }
    };
    (@one some $field:ident $t:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "` (see the field).")]
        #[must_use]
        pub fn $field(mut self, $field: $t) -> Self {
            self.$field = Some($field);
            self
        }
    };
    (@one opt $field:ident $t:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "` (see the field): a value or an `Option`.")]
        #[must_use]
        pub fn $field(mut self, $field: impl Into<Option<$t>>) -> Self {
            self.$field = $field.into();
            self
        }
    };
    (@one some_into $field:ident $t:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "` (see the field).")]
        #[must_use]
        pub fn $field(mut self, $field: impl Into<$t>) -> Self {
            self.$field = Some($field.into());
            self
        }
    };
}

pub mod admin;
pub mod blocking;
pub mod client;
pub mod consumer;
pub mod error;
pub mod partitioner;
pub mod producer;
/// TLS and transport settings of the client's QUIC connections. Public only with the
/// `internal` feature, for the broker and tools that open raw connections (the
/// transport-ceiling benchmark); not a stable API.
#[cfg(feature = "internal")]
#[doc(hidden)]
pub mod tls;
#[cfg(not(feature = "internal"))]
mod tls;
/// The UDP sockets under QUIC endpoints, with kernel buffers sized for bursts. Public
/// only with the `internal` feature, as [`tls`].
#[cfg(feature = "internal")]
#[doc(hidden)]
pub mod transport;
#[cfg(not(feature = "internal"))]
mod transport;

pub use admin::{
    Admin, AlterConfigOp, GroupDescription, GroupListing, GroupOffset, NewTopic, OffsetResetTarget,
};
pub use blocking::BlockingProducer;
pub use client::{
    Client, ClientConfig, FetchOptions, Fetched, FetchedBatches, ProduceReceipt, ScramLogin,
};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerError, ConsumerRecord, OffsetReset, Rebalance,
    RebalanceListener, SeekTo, TopicPartition,
};
pub use error::{ConnectError, RequestError};
pub use partitioner::partition_for_key;
pub use producer::{
    DeliveryFuture, ProduceError, Producer, ProducerConfig, ProducerRecord, RecordReceipt,
};
pub use quiver_wire::ErrorCode;
pub use quiver_wire::batch::Compression;
pub use quiver_wire::batch::{DecodedRecord, Record, RecordHeader};
pub use quiver_wire::message::{Acks, OffsetSpec, PartitionInfo, TopicInfo};
pub use quiver_wire::plugin::{
    Attachment, OnError, PluginCall, PluginInfo, PluginStage, dead_letter_header,
};
