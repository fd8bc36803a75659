//! The consumer group coordinator: membership, heartbeats, server-side assignment.
//!
//! Sans-IO: every call takes `now_ms`, nothing here reads a clock or touches the
//! network, so tests drive it step by step.
//!
//! The protocol follows Kafka's KIP-848 in spirit. Members heartbeat with what they
//! own; the coordinator computes a target assignment that keeps every partition where
//! it is unless balance requires a move, and hands a moving partition to its new
//! owner only once the old owner's heartbeat shows it let go (so two members never
//! consume one partition at once). Each member has an epoch that grows whenever its
//! assignment changes; commits from an older epoch, or from a member that is gone,
//! are refused, so a zombie cannot commit over its successor.
//!
//! Membership is soft state: after a broker restart members rejoin.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use quiver_wire::group::{
    GROUP_MEMBERS_MAX, GroupMember, LEAVE_GROUP_EPOCH, NO_MEMBER_EPOCH, TopicPartitions,
};

/// Bounds on the session timeout a member may ask for.
pub const SESSION_TIMEOUT_MS_MIN: u32 = 500;
pub const SESSION_TIMEOUT_MS_MAX: u32 = 300_000;
/// The longest interval members are told to heartbeat at: a partition changes hands
/// only after its old owner's and its new owner's next heartbeats, so this bounds how
/// long a rebalance leaves partitions unread.
pub const HEARTBEAT_INTERVAL_MS_MAX: u32 = 1_000;
/// Groups one broker coordinates.
pub const GROUPS_MAX: usize = 100_000;
/// The longest group id.
pub const GROUP_ID_BYTES_MAX: usize = 249;

/// Why a group operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error(
        "member `{member}` is not in group `{group}` (its session expired or it left): join again"
    )]
    UnknownMember { group: String, member: String },
    #[error("member `{member}` has epoch {current}, not {received}: heartbeat to catch up")]
    StaleEpoch {
        member: String,
        current: i32,
        received: i32,
    },
    #[error("group `{0}` has active members; stop them first")]
    NotEmpty(String),
    #[error("invalid group id: {0}")]
    InvalidGroup(String),
    #[error("group `{group}` is full ({GROUP_MEMBERS_MAX} members)")]
    Full { group: String },
    #[error("this broker coordinates the maximum of {GROUPS_MAX} groups")]
    TooManyGroups,
}

/// Checks a group id: 1 to 249 bytes, no control characters.
pub fn validate_group_id(group: &str) -> Result<(), GroupError> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX || group.chars().any(char::is_control) {
        return Err(GroupError::InvalidGroup(format!(
            "`{group}` must be 1 to {GROUP_ID_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

type Assignment = BTreeMap<String, BTreeSet<u32>>;

fn to_wire(assignment: &Assignment) -> Vec<TopicPartitions> {
    assignment
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.clone(),
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

fn from_wire(list: &[TopicPartitions]) -> Assignment {
    let mut out = Assignment::new();
    for tp in list {
        out.entry(tp.topic.clone())
            .or_default()
            .extend(tp.partitions.iter().copied());
    }
    out
}

#[derive(Debug, Clone)]
struct Member {
    epoch: i32,
    session_timeout_ms: u32,
    last_heartbeat_ms: i64,
    subscription: Vec<String>,
    /// Where the coordinator wants this member to end up.
    target: Assignment,
    /// What the member reported owning in its last heartbeat.
    owned: Assignment,
    /// What it was last told it may own.
    granted: Assignment,
}

#[derive(Debug, Default)]
struct Group {
    epoch: u32,
    members: BTreeMap<String, Member>,
    next_member: u64,
}

/// What a heartbeat gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    pub assignment: Vec<TopicPartitions>,
}

/// One heartbeat's content.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub group: &'a str,
    pub member_id: &'a str,
    pub member_epoch: i32,
    pub session_timeout_ms: u32,
    pub subscription: Option<&'a [String]>,
    pub owned: &'a [TopicPartitions],
}

/// Every group this broker coordinates.
#[derive(Debug, Default)]
pub struct GroupCoordinator {
    groups: HashMap<String, Group>,
}

impl GroupCoordinator {
    /// Handles a heartbeat: join, stay, or leave. `partitions_of` gives a topic's
    /// partition count (`None` for a topic that does not exist).
    pub fn handle_heartbeat(
        &mut self,
        hb: Heartbeat<'_>,
        partitions_of: &dyn Fn(&str) -> Option<u32>,
        now_ms: i64,
    ) -> Result<HeartbeatOutcome, GroupError> {
        validate_group_id(hb.group)?;
        if !self.groups.contains_key(hb.group) && self.groups.len() >= GROUPS_MAX {
            return Err(GroupError::TooManyGroups);
        }
        let group = self.groups.entry(hb.group.to_owned()).or_default();
        let session_timeout_ms = hb
            .session_timeout_ms
            .clamp(SESSION_TIMEOUT_MS_MIN, SESSION_TIMEOUT_MS_MAX);
        let mut membership_changed = false;
        let member_id = if hb.member_id.is_empty() {
            if group.members.len() >= GROUP_MEMBERS_MAX {
                return Err(GroupError::Full {
                    group: hb.group.to_owned(),
                });
            }
            group.next_member += 1;
            let id = format!("{}-{}-{}", hb.group, group.next_member, now_ms);
            group.members.insert(
                id.clone(),
                Member {
                    epoch: 0,
                    session_timeout_ms,
                    last_heartbeat_ms: now_ms,
                    subscription: hb.subscription.map(<[String]>::to_vec).unwrap_or_default(),
                    target: Assignment::new(),
                    owned: Assignment::new(),
                    granted: Assignment::new(),
                },
            );
            membership_changed = true;
            id
        } else {
            let Some(member) = group.members.get_mut(hb.member_id) else {
                return Err(GroupError::UnknownMember {
                    group: hb.group.to_owned(),
                    member: hb.member_id.to_owned(),
                });
            };
            if hb.member_epoch == LEAVE_GROUP_EPOCH {
                group.members.remove(hb.member_id);
                group.epoch += 1;
                rebalance(group, partitions_of);
                return Ok(HeartbeatOutcome {
                    member_id: hb.member_id.to_owned(),
                    member_epoch: LEAVE_GROUP_EPOCH,
                    heartbeat_interval_ms: 0,
                    assignment: Vec::new(),
                });
            }
            member.last_heartbeat_ms = now_ms;
            member.session_timeout_ms = session_timeout_ms;
            member.owned = from_wire(hb.owned);
            if let Some(subscription) = hb.subscription
                && subscription != member.subscription.as_slice()
            {
                member.subscription = subscription.to_vec();
                membership_changed = true;
            }
            hb.member_id.to_owned()
        };
        if membership_changed {
            group.epoch += 1;
        }
        // Recomputed on every heartbeat: partition counts can change under a group.
        rebalance(group, partitions_of);
        let grant = grant_for(group, &member_id);
        let member = group
            .members
            .get_mut(&member_id)
            .expect("the member was just found or inserted");
        if grant != member.granted || member.epoch == 0 {
            member.granted = grant;
            member.epoch += 1;
        }
        Ok(HeartbeatOutcome {
            member_id,
            member_epoch: member.epoch,
            heartbeat_interval_ms: (member.session_timeout_ms / 3)
                .clamp(100, HEARTBEAT_INTERVAL_MS_MAX),
            assignment: to_wire(&member.granted),
        })
    }

    /// Removes members whose session expired; returns `(group, member)` for each.
    pub fn poll_expired(
        &mut self,
        now_ms: i64,
        partitions_of: &dyn Fn(&str) -> Option<u32>,
    ) -> Vec<(String, String)> {
        let mut expired = Vec::new();
        for (name, group) in &mut self.groups {
            let gone: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| now_ms - m.last_heartbeat_ms > i64::from(m.session_timeout_ms))
                .map(|(id, _)| id.clone())
                .collect();
            if gone.is_empty() {
                continue;
            }
            for id in gone {
                group.members.remove(&id);
                expired.push((name.clone(), id));
            }
            group.epoch += 1;
            rebalance(group, partitions_of);
        }
        self.groups.retain(|_, g| !g.members.is_empty());
        expired
    }

    /// Whether a commit from this member (or from outside the membership, with an
    /// empty id) may proceed.
    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), GroupError> {
        validate_group_id(group)?;
        let members = self.groups.get(group).map(|g| &g.members);
        if member_id.is_empty() && member_epoch == NO_MEMBER_EPOCH {
            return match members {
                Some(m) if !m.is_empty() => Err(GroupError::NotEmpty(group.to_owned())),
                _ => Ok(()),
            };
        }
        let member =
            members
                .and_then(|m| m.get(member_id))
                .ok_or_else(|| GroupError::UnknownMember {
                    group: group.to_owned(),
                    member: member_id.to_owned(),
                })?;
        if member.epoch != member_epoch {
            return Err(GroupError::StaleEpoch {
                member: member_id.to_owned(),
                current: member.epoch,
                received: member_epoch,
            });
        }
        Ok(())
    }

    /// Forgets `group` if it has no members (a deleted group leaves no trace in
    /// listings); a group with members stays.
    pub fn forget_if_empty(&mut self, group: &str) {
        if self.groups.get(group).is_some_and(|g| g.members.is_empty()) {
            self.groups.remove(group);
        }
    }

    /// Groups with members, and their member counts.
    pub fn list(&self) -> Vec<(String, u32)> {
        self.groups
            .iter()
            .map(|(g, group)| (g.clone(), group.members.len() as u32))
            .collect()
    }

    /// Members of a group with their assignments; empty for an unknown group.
    pub fn describe(&self, group: &str) -> (u32, Vec<GroupMember>) {
        let Some(g) = self.groups.get(group) else {
            return (0, Vec::new());
        };
        let members = g
            .members
            .iter()
            .map(|(id, m)| GroupMember {
                member_id: id.clone(),
                member_epoch: m.epoch,
                subscription: m.subscription.clone(),
                assignment: to_wire(&m.granted),
            })
            .collect();
        (g.epoch, members)
    }
}

/// What `member_id` may own now: its target, less partitions another member still
/// reports owning or was last told it may own (they move once that member heard it
/// lost them and reported letting go).
fn grant_for(group: &Group, member_id: &str) -> Assignment {
    let Some(member) = group.members.get(member_id) else {
        return Assignment::new();
    };
    let mut grant = Assignment::new();
    for (topic, partitions) in &member.target {
        for p in partitions {
            let held_elsewhere = group.members.iter().any(|(id, m)| {
                id != member_id
                    && (m.owned.get(topic).is_some_and(|o| o.contains(p))
                        || m.granted.get(topic).is_some_and(|g| g.contains(p)))
            });
            if !held_elsewhere {
                grant.entry(topic.clone()).or_default().insert(*p);
            }
        }
    }
    grant
}

/// Recomputes every member's target: keep what each holds if still subscribed, give
/// unheld partitions to the least loaded eligible member, then move partitions from
/// the most to the least loaded member while that narrows the spread.
fn rebalance(group: &mut Group, partitions_of: &dyn Fn(&str) -> Option<u32>) {
    let mut topics: BTreeSet<String> = BTreeSet::new();
    for m in group.members.values() {
        topics.extend(m.subscription.iter().cloned());
    }
    let mut all: Vec<(String, u32)> = Vec::new();
    for topic in &topics {
        for p in 0..partitions_of(topic).unwrap_or(0) {
            all.push((topic.clone(), p));
        }
    }
    let ids: Vec<String> = group.members.keys().cloned().collect();
    let subscribed = |id: &str, topic: &str| {
        group
            .members
            .get(id)
            .is_some_and(|m| m.subscription.iter().any(|t| t == topic))
    };
    let mut owner: HashMap<(String, u32), String> = HashMap::new();
    let mut load: HashMap<String, usize> = ids.iter().map(|id| (id.clone(), 0)).collect();
    // Keep: current targets first, so assignments are sticky.
    for (id, m) in &group.members {
        for (topic, partitions) in &m.target {
            for p in partitions {
                let key = (topic.clone(), *p);
                if *p < partitions_of(topic).unwrap_or(0)
                    && subscribed(id, topic)
                    && !owner.contains_key(&key)
                {
                    owner.insert(key, id.clone());
                    *load.entry(id.clone()).or_default() += 1;
                }
            }
        }
    }
    // Place what nobody holds.
    for key in &all {
        if owner.contains_key(key) {
            continue;
        }
        let best = ids
            .iter()
            .filter(|id| subscribed(id, &key.0))
            .min_by_key(|id| (load[*id], (*id).clone()));
        if let Some(id) = best {
            owner.insert(key.clone(), id.clone());
            *load.entry(id.clone()).or_default() += 1;
        }
    }
    // Balance: each move narrows the gap by at least one, so this ends within |all| moves.
    for _ in 0..all.len() {
        let Some(most) = ids
            .iter()
            .max_by_key(|id| (load[*id], (*id).clone()))
            .cloned()
        else {
            break;
        };
        let movable = all
            .iter()
            .filter(|k| owner.get(*k) == Some(&most))
            .find_map(|k| {
                ids.iter()
                    .filter(|id| subscribed(id, &k.0) && load[*id] + 1 < load[&most])
                    .min_by_key(|id| (load[*id], (*id).clone()))
                    .map(|to| (k.clone(), to.clone()))
            });
        let Some((key, to)) = movable else { break };
        owner.insert(key, to.clone());
        *load.entry(most).or_default() -= 1;
        *load.entry(to).or_default() += 1;
    }
    for m in group.members.values_mut() {
        m.target.clear();
    }
    for ((topic, p), id) in owner {
        if let Some(m) = group.members.get_mut(&id) {
            m.target.entry(topic).or_default().insert(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn six(topic: &str) -> Option<u32> {
        (topic == "t").then_some(6)
    }

    fn beat(
        c: &mut GroupCoordinator,
        id: &str,
        epoch: i32,
        owned: &[TopicPartitions],
        now: i64,
    ) -> HeartbeatOutcome {
        let topics = vec!["t".to_owned()];
        c.handle_heartbeat(
            Heartbeat {
                group: "g",
                member_id: id,
                member_epoch: epoch,
                session_timeout_ms: 1_000,
                subscription: Some(&topics),
                owned,
            },
            &six,
            now,
        )
        .expect("heartbeat")
    }

    fn count(a: &[TopicPartitions]) -> usize {
        a.iter().map(|t| t.partitions.len()).sum()
    }

    /// Heartbeats every member until assignments settle, each reporting what it was
    /// granted; returns the final grants.
    fn settle(
        c: &mut GroupCoordinator,
        members: &mut [(String, i32, Vec<TopicPartitions>)],
        now: i64,
    ) {
        for _ in 0..5 {
            for m in members.iter_mut() {
                let out = beat(c, &m.0, m.1, &m.2, now);
                m.1 = out.member_epoch;
                m.2 = out.assignment;
            }
        }
    }

    #[test]
    fn three_members_share_six_partitions_and_a_moving_partition_waits_for_its_owner() {
        let mut c = GroupCoordinator::default();
        let first = beat(&mut c, "", 0, &[], 0);
        assert_eq!(count(&first.assignment), 6, "a lone member gets everything");
        let mut members = vec![(
            first.member_id.clone(),
            first.member_epoch,
            first.assignment.clone(),
        )];
        // A second member joins: it gets nothing the first still owns.
        let second = beat(&mut c, "", 0, &[], 1);
        assert_eq!(
            count(&second.assignment),
            0,
            "partitions move only after their owner lets go"
        );
        members.push((
            second.member_id.clone(),
            second.member_epoch,
            second.assignment,
        ));
        let third = beat(&mut c, "", 0, &[], 2);
        members.push((
            third.member_id.clone(),
            third.member_epoch,
            third.assignment,
        ));
        settle(&mut c, &mut members, 3);
        let mut seen = BTreeSet::new();
        for m in &members {
            assert_eq!(count(&m.2), 2, "balanced: {members:?}");
            for tp in &m.2 {
                for p in &tp.partitions {
                    assert!(seen.insert(*p), "partition {p} owned twice");
                }
            }
        }
        assert_eq!(seen.len(), 6);
        // The first member keeps 2 of its original 6: sticky.
        let kept = members[0]
            .2
            .iter()
            .map(|t| t.partitions.len())
            .sum::<usize>();
        assert_eq!(kept, 2);
    }

    #[test]
    fn an_expired_member_loses_its_partitions_and_cannot_commit() {
        let mut c = GroupCoordinator::default();
        let a = beat(&mut c, "", 0, &[], 0);
        let mut members = vec![(a.member_id.clone(), a.member_epoch, a.assignment)];
        let b = beat(&mut c, "", 0, &[], 0);
        members.push((b.member_id.clone(), b.member_epoch, b.assignment));
        settle(&mut c, &mut members, 0);
        assert_eq!(count(&members[1].2), 3);
        let (b_id, b_epoch) = (members[1].0.clone(), members[1].1);
        assert_eq!(c.check_commit("g", &b_id, b_epoch), Ok(()));
        // Only `a` keeps heartbeating.
        let expired = c.poll_expired(500, &six);
        assert!(expired.is_empty());
        let a_now = beat(&mut c, &members[0].0, members[0].1, &members[0].2, 900);
        let expired = c.poll_expired(1_500, &six);
        assert_eq!(expired, vec![("g".to_owned(), b_id.clone())]);
        let a_after = beat(
            &mut c,
            &members[0].0,
            a_now.member_epoch,
            &a_now.assignment,
            1_600,
        );
        assert_eq!(count(&a_after.assignment), 6, "the survivor takes over");
        assert!(
            a_after.member_epoch > a_now.member_epoch,
            "a new assignment bumps the epoch"
        );
        assert!(matches!(
            c.check_commit("g", &b_id, b_epoch),
            Err(GroupError::UnknownMember { .. })
        ));
        assert!(matches!(
            c.check_commit("g", &members[0].0, a_now.member_epoch),
            Err(GroupError::StaleEpoch { .. })
        ));
        assert!(matches!(
            c.check_commit("g", "", NO_MEMBER_EPOCH),
            Err(GroupError::NotEmpty(_))
        ));
    }

    #[test]
    fn leaving_frees_partitions_at_once_and_empty_groups_accept_admin_commits() {
        let mut c = GroupCoordinator::default();
        let a = beat(&mut c, "", 0, &[], 0);
        let left = beat(&mut c, &a.member_id, LEAVE_GROUP_EPOCH, &[], 1);
        assert_eq!(left.member_epoch, LEAVE_GROUP_EPOCH);
        c.poll_expired(2, &six);
        assert_eq!(c.check_commit("g", "", NO_MEMBER_EPOCH), Ok(()));
        assert!(c.list().is_empty());
        assert!(validate_group_id("").is_err());
    }
}
