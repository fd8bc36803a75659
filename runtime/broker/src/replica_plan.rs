//! What reconciling this broker's replicas with the controller's metadata must do, as a
//! pure function: from the metadata's partitions and what this broker holds now (which
//! replicas it runs and in what role) to a list of steps. `replication::reconcile`
//! gathers the inputs and carries the steps out; the decisions are tested here with
//! tables of cases, without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use quiver_cluster::metadata::PartitionRecord;
use quiver_repl::Role;

/// A partition replica: topic and partition index.
pub(crate) type ReplicaKey = (String, u32);

/// What to do for one replica this broker is assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoleStep {
    /// Lead in `leader_epoch` with this ISR and assignment.
    Lead {
        leader_epoch: u32,
        isr_version: u32,
        isr: Vec<u32>,
        replicas: Vec<u32>,
    },
    /// Already leading in this epoch: take the controller's ISR decision.
    CommitIsr {
        leader_epoch: u32,
        isr_version: u32,
        isr: Vec<u32>,
    },
    /// Follow `leader` in `leader_epoch`.
    Follow { leader: u32, leader_epoch: u32 },
    /// The metadata names this broker leader, but its registration is not applied
    /// yet: that leadership may be its previous incarnation's, in an epoch begun
    /// before a crash. Lead only once the registration moved it to a new epoch.
    AwaitRegistration,
    /// Already in the role the metadata says, or the partition has no leader.
    Keep,
}

/// One replica's part of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaStep {
    pub(crate) key: ReplicaKey,
    /// Start the replica's state machine first (from its log).
    pub(crate) create: bool,
    pub(crate) role: RoleStep,
}

/// The whole plan: replicas to bring in line, and replicas to stop (their topic was
/// deleted, or this broker is no longer assigned them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReplicaPlan {
    pub(crate) steps: Vec<ReplicaStep>,
    pub(crate) remove: Vec<ReplicaKey>,
}

/// The plan for broker `me` (`registered`: its current incarnation's registration is
/// applied) given the metadata's `partitions`, the replicas whose partition exists
/// locally (`stored`: a topic the metadata has but this broker has not created yet is
/// left for a later pass), and the replicas whose state machine runs now, with their
/// role (`running`).
pub(crate) fn plan<'m>(
    me: u32,
    registered: bool,
    partitions: impl IntoIterator<Item = (&'m str, u32, &'m PartitionRecord)>,
    stored: &BTreeSet<ReplicaKey>,
    running: &BTreeMap<ReplicaKey, Role>,
) -> ReplicaPlan {
    let mut plan = ReplicaPlan::default();
    let mut wanted = BTreeSet::new();
    for (topic, index, record) in partitions {
        if !record.replicas.contains(&me) {
            continue;
        }
        let key = (topic.to_owned(), index);
        if !stored.contains(&key) {
            continue;
        }
        wanted.insert(key.clone());
        let current = running.get(&key).copied();
        plan.steps.push(ReplicaStep {
            create: !running.contains_key(&key),
            role: role_step(me, registered, record, current),
            key,
        });
    }
    plan.remove = running
        .keys()
        .filter(|key| !wanted.contains(*key))
        .cloned()
        .collect();
    plan
}

fn role_step(
    me: u32,
    registered: bool,
    record: &PartitionRecord,
    current: Option<Role>,
) -> RoleStep {
    match record.leader {
        Some(leader) if leader == me => {
            if !registered {
                return RoleStep::AwaitRegistration;
            }
            let leading = matches!(current, Some(Role::Leader { leader_epoch }) if leader_epoch == record.leader_epoch);
            if leading {
                RoleStep::CommitIsr {
                    leader_epoch: record.leader_epoch,
                    isr_version: record.isr_version,
                    isr: record.isr.clone(),
                }
            } else {
                RoleStep::Lead {
                    leader_epoch: record.leader_epoch,
                    isr_version: record.isr_version,
                    isr: record.isr.clone(),
                    replicas: record.replicas.clone(),
                }
            }
        }
        Some(leader) => {
            let following = matches!(current, Some(Role::Follower { leader: l, leader_epoch }) if l == leader && leader_epoch == record.leader_epoch);
            if following {
                RoleStep::Keep
            } else {
                RoleStep::Follow {
                    leader,
                    leader_epoch: record.leader_epoch,
                }
            }
        }
        None => RoleStep::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1;

    fn record(replicas: &[u32], leader: Option<u32>, epoch: u32, isr: &[u32]) -> PartitionRecord {
        PartitionRecord {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: epoch,
            isr_version: 4,
            isr: isr.to_vec(),
        }
    }

    fn key(topic: &str, index: u32) -> ReplicaKey {
        (topic.to_owned(), index)
    }

    fn running(entries: &[(&str, u32, Role)]) -> BTreeMap<ReplicaKey, Role> {
        entries
            .iter()
            .map(|(t, i, role)| (key(t, *i), *role))
            .collect()
    }

    /// The plan for one partition `t/0` stored locally, whose state machine runs in
    /// `current` (`None`: none yet).
    fn one(registered: bool, record: &PartitionRecord, current: Option<Role>) -> ReplicaPlan {
        let stored = BTreeSet::from([key("t", 0)]);
        let running = match current {
            Some(role) => running(&[("t", 0, role)]),
            None => BTreeMap::new(),
        };
        plan(ME, registered, [("t", 0, record)], &stored, &running)
    }

    #[test]
    fn role_steps_for_every_combination_of_metadata_and_local_role() {
        let leader_ep5 = Role::Leader { leader_epoch: 5 };
        let leader_ep4 = Role::Leader { leader_epoch: 4 };
        let follows_2_ep5 = Role::Follower {
            leader: 2,
            leader_epoch: 5,
        };
        let follows_3_ep5 = Role::Follower {
            leader: 3,
            leader_epoch: 5,
        };
        let lead = RoleStep::Lead {
            leader_epoch: 5,
            isr_version: 4,
            isr: vec![1, 2],
            replicas: vec![1, 2, 3],
        };
        let commit = RoleStep::CommitIsr {
            leader_epoch: 5,
            isr_version: 4,
            isr: vec![1, 2],
        };
        let follow_2 = RoleStep::Follow {
            leader: 2,
            leader_epoch: 5,
        };
        let me_leads = record(&[1, 2, 3], Some(ME), 5, &[1, 2]);
        let two_leads = record(&[1, 2, 3], Some(2), 5, &[1, 2]);
        let no_leader = record(&[1, 2, 3], None, 5, &[1]);
        /// (case, registered, record, current role (None: no state machine), create, step)
        type Case<'r> = (
            &'r str,
            bool,
            &'r PartitionRecord,
            Option<Role>,
            bool,
            RoleStep,
        );
        let cases: Vec<Case> = vec![
            (
                "new replica, I lead",
                true,
                &me_leads,
                None,
                true,
                lead.clone(),
            ),
            (
                "unassigned, I lead",
                true,
                &me_leads,
                Some(Role::Unassigned),
                false,
                lead.clone(),
            ),
            (
                "I lead in an older epoch",
                true,
                &me_leads,
                Some(leader_ep4),
                false,
                lead.clone(),
            ),
            (
                "I follow, now I lead",
                true,
                &me_leads,
                Some(follows_2_ep5),
                false,
                lead.clone(),
            ),
            (
                "already leading: ISR decision",
                true,
                &me_leads,
                Some(leader_ep5),
                false,
                commit,
            ),
            (
                "I lead but am not registered",
                false,
                &me_leads,
                Some(Role::Unassigned),
                false,
                RoleStep::AwaitRegistration,
            ),
            (
                "new replica, not registered",
                false,
                &me_leads,
                None,
                true,
                RoleStep::AwaitRegistration,
            ),
            (
                "new replica, 2 leads",
                true,
                &two_leads,
                None,
                true,
                follow_2.clone(),
            ),
            (
                "already following 2",
                true,
                &two_leads,
                Some(follows_2_ep5),
                false,
                RoleStep::Keep,
            ),
            (
                "following another leader",
                true,
                &two_leads,
                Some(follows_3_ep5),
                false,
                follow_2.clone(),
            ),
            (
                "I led, 2 leads now",
                true,
                &two_leads,
                Some(leader_ep5),
                false,
                follow_2.clone(),
            ),
            (
                "following is allowed unregistered",
                false,
                &two_leads,
                Some(Role::Unassigned),
                false,
                follow_2,
            ),
            (
                "no leader",
                true,
                &no_leader,
                Some(follows_2_ep5),
                false,
                RoleStep::Keep,
            ),
        ];
        for (case, registered, record, current, create, step) in cases {
            let plan = one(registered, record, current);
            assert_eq!(
                plan.steps,
                vec![ReplicaStep {
                    key: key("t", 0),
                    create,
                    role: step
                }],
                "{case}"
            );
            assert!(plan.remove.is_empty(), "{case}");
        }
    }

    #[test]
    fn replicas_not_assigned_or_not_stored_are_left_out_and_stale_ones_removed() {
        let mine = record(&[1, 2], Some(2), 1, &[1, 2]);
        let others = record(&[2, 3], Some(2), 1, &[2, 3]);
        let stored = BTreeSet::from([key("a", 0), key("a", 1), key("c", 0)]);
        let running = running(&[
            (
                "a",
                0,
                Role::Follower {
                    leader: 2,
                    leader_epoch: 1,
                },
            ),
            // Reassigned away from this broker.
            (
                "a",
                1,
                Role::Follower {
                    leader: 2,
                    leader_epoch: 1,
                },
            ),
            // A deleted topic.
            ("gone", 0, Role::Leader { leader_epoch: 3 }),
        ]);
        let partitions = [
            ("a", 0, &mine),
            ("a", 1, &others),
            // Assigned, but its topic is not created locally yet: a later pass.
            ("b", 0, &mine),
            ("c", 0, &mine),
        ];
        let plan = plan(ME, true, partitions, &stored, &running);
        let keys: Vec<(ReplicaKey, bool)> = plan
            .steps
            .iter()
            .map(|s| (s.key.clone(), s.create))
            .collect();
        assert_eq!(keys, vec![(key("a", 0), false), (key("c", 0), true)]);
        assert_eq!(plan.steps[0].role, RoleStep::Keep);
        assert_eq!(plan.remove, vec![key("a", 1), key("gone", 0)]);
    }

    #[test]
    fn an_empty_metadata_removes_every_running_replica() {
        let running = running(&[("a", 0, Role::Unassigned), ("b", 2, Role::Unassigned)]);
        let plan = plan(ME, true, [], &BTreeSet::new(), &running);
        assert!(plan.steps.is_empty());
        assert_eq!(plan.remove, vec![key("a", 0), key("b", 2)]);
    }
}
