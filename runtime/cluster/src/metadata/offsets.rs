//! Committed consumer offsets.

use std::collections::BTreeSet;

use super::limits::{
    GROUP_ID_BYTES_MAX, OFFSET_METADATA_BYTES_MAX, OFFSETS_MAX, OFFSETS_PER_COMMIT_MAX,
};
use super::{
    CommandError, CommittedOffset, MetadataResponse, MetadataState, OffsetCommit, OffsetKey,
};

impl MetadataState {
    /// Stores every offset or none: each must name an existing partition.
    pub(super) fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &[OffsetCommit],
        now_ms: u64,
    ) -> Result<MetadataResponse, CommandError> {
        if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
            return Err(CommandError::InvalidOffsetCommit(format!(
                "a group id is 1 to {GROUP_ID_BYTES_MAX} bytes"
            )));
        }
        if offsets.len() > OFFSETS_PER_COMMIT_MAX {
            return Err(CommandError::InvalidOffsetCommit(format!(
                "{} offsets in one commit, more than {OFFSETS_PER_COMMIT_MAX}",
                offsets.len()
            )));
        }
        let mut new_keys = BTreeSet::new();
        for commit in offsets {
            if self.partition(&commit.topic, commit.partition).is_none() {
                return Err(CommandError::UnknownPartition {
                    topic: commit.topic.clone(),
                    partition: commit.partition,
                });
            }
            if commit.metadata.len() > OFFSET_METADATA_BYTES_MAX {
                return Err(CommandError::InvalidOffsetCommit(format!(
                    "offset metadata is at most {OFFSET_METADATA_BYTES_MAX} bytes"
                )));
            }
            let key = key(group, commit);
            if !self.offsets.contains_key(&key) {
                new_keys.insert(key);
            }
        }
        if self.offsets.len() + new_keys.len() > OFFSETS_MAX {
            return Err(CommandError::TooManyOffsets { max: OFFSETS_MAX });
        }
        for commit in offsets {
            self.offsets.insert(
                key(group, commit),
                CommittedOffset {
                    offset: commit.offset,
                    metadata: commit.metadata.clone(),
                    committed_ms: now_ms,
                },
            );
        }
        Ok(MetadataResponse::OffsetsCommitted {
            count: u32::try_from(offsets.len()).expect("bounded by OFFSETS_PER_COMMIT_MAX"),
        })
    }
}

impl MetadataState {
    /// Forgets every offset `group` committed; refused for a group without any.
    pub(super) fn delete_group(&mut self, group: &str) -> Result<MetadataResponse, CommandError> {
        let before = self.offsets.len();
        self.offsets.retain(|key, _| key.group != group);
        let removed = before - self.offsets.len();
        if removed == 0 {
            return Err(CommandError::UnknownGroup(
                group.chars().take(GROUP_ID_BYTES_MAX).collect(),
            ));
        }
        Ok(MetadataResponse::GroupDeleted {
            offsets: u32::try_from(removed).unwrap_or(u32::MAX),
        })
    }

    /// Forgets offsets committed before `before_ms` by groups not in `keep_groups`.
    pub(super) fn expire_offsets(
        &mut self,
        before_ms: u64,
        keep_groups: &[String],
    ) -> MetadataResponse {
        let keep: BTreeSet<&str> = keep_groups.iter().map(String::as_str).collect();
        let before = self.offsets.len();
        self.offsets
            .retain(|key, c| c.committed_ms >= before_ms || keep.contains(key.group.as_str()));
        MetadataResponse::OffsetsExpired {
            count: u32::try_from(before - self.offsets.len()).unwrap_or(u32::MAX),
        }
    }

    /// Whether any offset of a group not in `keep_groups` was committed before
    /// `before_ms`: what the coordinator checks before proposing an expiry.
    pub fn offsets_expire_before(&self, before_ms: u64, keep_groups: &[String]) -> bool {
        let keep: BTreeSet<&str> = keep_groups.iter().map(String::as_str).collect();
        self.offsets
            .iter()
            .any(|(key, c)| c.committed_ms < before_ms && !keep.contains(key.group.as_str()))
    }
}

fn key(group: &str, commit: &OffsetCommit) -> OffsetKey {
    OffsetKey {
        group: group.to_owned(),
        topic: commit.topic.clone(),
        partition: commit.partition,
    }
}
