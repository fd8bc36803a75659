//! When appended data reaches the disk: the flush policy the broker applies and the
//! [`SyncTarget`] it syncs outside its lock.

use std::fmt;
use std::fs::File;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// When the broker fdatasyncs a partition. The log itself never syncs on append; it
/// exposes [`crate::PartitionLog::sync_target`] and the broker applies the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Group commit: one fdatasync covers every batch that arrived while the previous
    /// one ran; a write is acknowledged once synced.
    #[default]
    Always,
    /// Sync at most this often; a power loss may lose the last interval.
    Interval(Duration),
    /// Leave write-back to the operating system.
    Os,
}

/// Why a flush policy string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushPolicyParseError {
    #[error("unknown flush policy {0:?}: expected \"always\", \"interval:<ms>\" or \"os\"")]
    Unknown(String),
    #[error("flush interval {0:?} is not a whole number of milliseconds above 0")]
    BadInterval(String),
}

impl FromStr for FlushPolicy {
    type Err = FlushPolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "os" => Ok(Self::Os),
            _ => match s.strip_prefix("interval:") {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Self::Interval(Duration::from_millis(ms))),
                    _ => Err(FlushPolicyParseError::BadInterval(ms.to_owned())),
                },
                None => Err(FlushPolicyParseError::Unknown(s.to_owned())),
            },
        }
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            Self::Os => f.write_str("os"),
        }
    }
}

/// What one fdatasync round must cover: the files written since the last sync and the
/// log end offset they reach. Taken under the partition's lock, synced outside it, then
/// reported back with [`crate::PartitionLog::mark_synced`].
#[derive(Debug, Clone, Default)]
pub struct SyncTarget {
    /// Files to fdatasync; empty when everything is already durable.
    pub files: Vec<Arc<File>>,
    /// Every offset below this is durable once `files` are synced.
    pub up_to_offset: u64,
}

impl SyncTarget {
    /// fdatasyncs every file. A file whose segment was deleted meanwhile still syncs
    /// (the handle outlives the name), which is harmless.
    pub fn sync(&self) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Whether there is nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_policy_and_rejects_the_rest() {
        assert_eq!("always".parse(), Ok(FlushPolicy::Always));
        assert_eq!("os".parse(), Ok(FlushPolicy::Os));
        assert_eq!(
            "interval:250".parse(),
            Ok(FlushPolicy::Interval(Duration::from_millis(250)))
        );
        assert_eq!(FlushPolicy::default(), FlushPolicy::Always);
        assert!(matches!(
            "interval:".parse::<FlushPolicy>(),
            Err(FlushPolicyParseError::BadInterval(_))
        ));
        assert!(matches!(
            "interval:0".parse::<FlushPolicy>(),
            Err(FlushPolicyParseError::BadInterval(_))
        ));
        assert!(matches!(
            "interval:-5".parse::<FlushPolicy>(),
            Err(FlushPolicyParseError::BadInterval(_))
        ));
        assert!(matches!(
            "sometimes".parse::<FlushPolicy>(),
            Err(FlushPolicyParseError::Unknown(_))
        ));
        for policy in [
            FlushPolicy::Always,
            FlushPolicy::Os,
            FlushPolicy::Interval(Duration::from_millis(7)),
        ] {
            assert_eq!(policy.to_string().parse(), Ok(policy));
        }
    }
}
