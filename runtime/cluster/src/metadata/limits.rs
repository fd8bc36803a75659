//! Upper bounds on everything the metadata state machine holds, so that a snapshot,
//! a log entry and a replication message all have a known worst case.
//!
//! Values shared with the wire protocol mirror `quiver-wire` (this crate does not
//! depend on it): topic and plugin name lengths, plugin parameters, attachments.

/// Brokers registered at once.
pub const BROKERS_MAX: usize = 1_000;
/// `host:port`: a 253-byte DNS name (or bracketed IPv6), a colon, five digits.
pub const BROKER_ADDRESS_BYTES_MAX: usize = 261;

/// Topics, internal ones included.
pub const TOPICS_MAX: usize = 10_000;
/// As in Kafka: the name becomes part of directory names (mirrors `quiver-wire`).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Partitions of one topic.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// Partitions over all topics.
pub const PARTITIONS_MAX: u64 = 100_000;
/// Replicas of one partition.
pub const REPLICATION_FACTOR_MAX: u16 = 16;
/// Config entries of one topic.
pub const TOPIC_CONFIGS_MAX: usize = 64;
/// Longest topic config key.
pub const CONFIG_KEY_BYTES_MAX: usize = 255;
/// Longest topic config value.
pub const CONFIG_VALUE_BYTES_MAX: usize = 4_096;

/// Plugins registered (mirrors `quiver-wire`).
pub const PLUGINS_MAX: usize = 1_000;
/// Longest plugin name (mirrors `quiver-wire`).
pub const PLUGIN_NAME_BYTES_MAX: usize = 128;
/// Longest plugin version: a content hash in hex (SHA-256 is 64).
pub const PLUGIN_VERSION_BYTES_MAX: usize = 128;
/// Longest plugin kind (`filter`, `map`, `filter_map`, ...).
pub const PLUGIN_KIND_BYTES_MAX: usize = 64;
/// Largest module the metadata may describe (mirrors `quiver-wire`'s upload limit).
pub const PLUGIN_MODULE_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Parameters of one attachment (mirrors `quiver-wire`).
pub const PLUGIN_PARAMS_MAX: usize = 64;
/// Longest parameter key or value (mirrors `quiver-wire`).
pub const PLUGIN_PARAM_BYTES_MAX: usize = 4_096;
/// Plugins attached to one topic, over both stages (mirrors `quiver-wire`).
pub const ATTACHMENTS_PER_TOPIC_MAX: usize = 16;
/// Attachments over all topics.
pub const ATTACHMENTS_MAX: usize = 10_000;
/// Longest `on_error` policy: `dead-letter:` and a topic name.
pub const ON_ERROR_BYTES_MAX: usize = "dead-letter:".len() + TOPIC_NAME_BYTES_MAX;

/// Longest consumer group id.
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// Longest metadata string stored with a committed offset (Kafka's
/// `offset.metadata.max.bytes` default).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4_096;
/// Offsets one `CommitOffsets` command may carry.
pub const OFFSETS_PER_COMMIT_MAX: usize = 1_000;
/// Committed offsets kept over all groups.
pub const OFFSETS_MAX: usize = 100_000;

/// Largest command, serialised, that the controller accepts for the log. Checked on
/// the encoded bytes, so it holds whatever the strings contain.
pub const COMMAND_BYTES_MAX: usize = 8 * 1024 * 1024;

const _: () = assert!(PARTITIONS_PER_TOPIC_MAX as u64 <= PARTITIONS_MAX);
const _: () = assert!(ATTACHMENTS_PER_TOPIC_MAX <= ATTACHMENTS_MAX);
const _: () = assert!(OFFSETS_PER_COMMIT_MAX <= OFFSETS_MAX);
const _: () = assert!(REPLICATION_FACTOR_MAX as usize <= BROKERS_MAX);
// The largest commit and the largest attachment fit a command, with room for the
// JSON around their strings (field names, numbers, quotes: under 100 bytes each).
const _: () = assert!(
    GROUP_ID_BYTES_MAX
        + OFFSETS_PER_COMMIT_MAX * (TOPIC_NAME_BYTES_MAX + OFFSET_METADATA_BYTES_MAX + 100)
        < COMMAND_BYTES_MAX
);
const _: () =
    assert!(PLUGIN_PARAMS_MAX * (2 * PLUGIN_PARAM_BYTES_MAX + 100) + 4 * 1024 < COMMAND_BYTES_MAX);

/// Producer ids whose owner the cluster remembers, over all principals. Claims are
/// made only when clients authenticate.
pub const PRODUCER_CLAIMS_MAX: usize = 1_000_000;
/// Producer ids one principal owns at once; past it, its oldest claim is forgotten
/// (Kafka likewise expires idle producer ids), so one principal cannot use up the
/// cluster's room for others.
pub const PRODUCER_CLAIMS_PER_PRINCIPAL_MAX: usize = 10_000;
