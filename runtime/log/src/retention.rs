//! Which sealed segments retention deletes: whole segments, oldest first, never the
//! active one, by age (newest record older than `retention_ms`) and by size (the log
//! stays at least `retention_bytes` without the segment). Deciding is pure; the
//! partition deletes the files.

use crate::config::LogConfig;

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    /// The log start offset after the pass.
    pub log_start_offset: u64,
}

/// What retention looks at in one sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub size: u64,
    /// Newest record timestamp; `i64::MIN` for an empty segment.
    pub max_timestamp: i64,
}

/// How many of the oldest `sealed` segments (oldest first) to delete from a log of
/// `log_bytes` in total. Stops at the first segment that may stay, so the log remains
/// one contiguous run of offsets.
pub fn segments_to_delete(
    sealed: &[SegmentSummary],
    log_bytes: u64,
    config: &LogConfig,
    now_ms: i64,
) -> usize {
    let cutoff_ms = config
        .retention_ms
        .map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
    let mut remaining = log_bytes;
    let mut count = 0;
    for segment in sealed {
        let expired = cutoff_ms.is_some_and(|cutoff| segment.max_timestamp < cutoff);
        let oversized = config
            .retention_bytes
            .is_some_and(|limit| remaining.saturating_sub(segment.size) >= limit);
        if !(expired || oversized) {
            break;
        }
        remaining -= segment.size;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(size: u64, max_timestamp: i64) -> SegmentSummary {
        SegmentSummary {
            size,
            max_timestamp,
        }
    }

    fn config(retention_bytes: Option<u64>, retention_ms: Option<u64>) -> LogConfig {
        LogConfig {
            retention_bytes,
            retention_ms,
            ..LogConfig::default()
        }
    }

    #[test]
    fn deletes_by_age_oldest_first_and_stops_at_the_first_young_segment() {
        let sealed = [summary(10, 100), summary(10, 500), summary(10, 200)];
        let cfg = config(None, Some(1000));
        assert_eq!(segments_to_delete(&sealed, 40, &cfg, 1050), 0);
        assert_eq!(segments_to_delete(&sealed, 40, &cfg, 1101), 1);
        // The third is old enough but the second is not: order is kept.
        assert_eq!(segments_to_delete(&sealed, 40, &cfg, 1300), 1);
        assert_eq!(segments_to_delete(&sealed, 40, &cfg, 1501), 3);
    }

    #[test]
    fn deletes_by_size_while_the_rest_still_meets_the_limit() {
        let sealed = [summary(10, 0), summary(10, 0), summary(10, 0)];
        let cfg = config(Some(15), None);
        // 40 bytes in all (10 in the active segment): 30 >= 15, 20 >= 15, 10 < 15.
        assert_eq!(segments_to_delete(&sealed, 40, &cfg, 0), 2);
        assert_eq!(
            segments_to_delete(&sealed, 40, &config(Some(40), None), 0),
            0
        );
        assert_eq!(
            segments_to_delete(&sealed, 40, &config(None, None), i64::MAX),
            0
        );
    }
}
