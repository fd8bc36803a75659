//! Seeded simulation of one partition replicated on three brokers.
//!
//! The world: three [`Replica`] state machines, each over a log of
//! `(offset, epoch, payload)` records that survives crashes (disk is durable); a
//! controller that fences crashed brokers, removes them from the ISR, elects leaders
//! only from the ISR, bumps the epoch on every leadership change, moves leadership now
//! and then, and commits or refuses ISR proposals; a network between replicas that
//! drops, delays, reorders and partitions; a metadata channel from the controller that
//! delays but keeps order (like a broker replaying the metadata log); and a producer
//! that writes with acks=all to whichever replica believes it leads (zombies included).
//!
//! After every step the invariants are checked:
//! 1. every record committed below some leader's high watermark (which covers every
//!    acknowledged record) is, at its offset, in the log of the controller's leader
//!    and of every member of the controller's ISR;
//! 2. the logs of any two live replicas are identical up to the smaller of their high
//!    watermarks;
//! 3. at most one replica ever leads a given epoch;
//! 4. no high watermark exceeds its replica's log end offset (and every replica's
//!    log end offset matches its log);
//! 5. no replica truncates below its high watermark.
//!
//! A run that acknowledged nothing fails: it checked nothing. The seed of a failing run
//! is printed; `QUIVER_SIM_SEED=<seed>` replays just that one, `QUIVER_SIM_SEEDS=<n>`
//! runs n seeds (a soak, best with `--release`), `QUIVER_SIM_STEPS` changes the length.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use quiver_repl::{
    AcksAll, BatchRange, EpochEndOffset, FetchReply, FetchRequest, FetchResponse,
    FetchResponseError, IsrCommit, IsrProposal, LeaderEpochCache, Output, RecoveredLog, Replica,
    ReplicaConfig, Role,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const REPLICAS: [u32; 3] = [0, 1, 2];
const SEEDS: u64 = 20;
const FIRST_SEED: u64 = 0x5eed_0000;
const STEPS: usize = 10_000;

const MIN_INSYNC_REPLICAS: usize = 2;
const STEP_MS_MAX: u64 = 4;
const DROP_PERCENT: u32 = 3;
const DELAY_MS_MAX: u64 = 8;
const SLOW_PERCENT: u32 = 5;
const SLOW_DELAY_MS_MAX: u64 = 80;
const METADATA_DELAY_MS_MAX: u64 = 20;
const CRASH_PER_MILLE: u32 = 2;
const RESTART_PER_MILLE: u32 = 15;
const PARTITION_PER_MILLE: u32 = 4;
const LEADER_MOVE_PER_MILLE: u32 = 1;
const PRODUCE_PERCENT: u32 = 40;
const PRODUCE_TIMEOUT_MS: u64 = 500;
/// Records one fetch answer carries: the simulated fetch byte limit.
const FETCH_RECORDS_MAX: u64 = 8;
/// Records per batch in a fetch answer.
const BATCH_RECORDS_MAX: u64 = 3;
const TRACE_EVENTS_MAX: usize = 60;

fn config() -> ReplicaConfig {
    ReplicaConfig {
        replica_lag_max_ms: 100,
        fetch_timeout_ms: 60,
        fetch_backoff_ms: 10,
        isr_proposal_retry_ms: 50,
        min_insync_replicas: MIN_INSYNC_REPLICAS,
    }
}

/// Deliberately broken rules, to show the checks catch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mutations {
    /// Pre-KIP-101 Kafka: a replica told to follow first cuts its log at its high
    /// watermark.
    truncate_to_high_watermark_on_follow: bool,
    /// The controller elects a live replica outside the ISR when no ISR member lives.
    unclean_election: bool,
}

// ------------------------------------------------------------------ logs

#[derive(Debug, Clone, Default)]
struct SimLog {
    records: Vec<(u64, u32, u64)>,
    /// `hashes[i]` covers `records[..=i]`, so comparing prefixes is O(1).
    hashes: Vec<u64>,
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl SimLog {
    fn len(&self) -> u64 {
        self.records.len() as u64
    }

    fn push(&mut self, epoch: u32, payload: u64) {
        let offset = self.len();
        let previous = self.hashes.last().copied().unwrap_or(0);
        let record = mix(offset ^ mix(u64::from(epoch) ^ mix(payload)));
        self.hashes.push(mix(previous ^ record));
        self.records.push((offset, epoch, payload));
    }

    fn truncate(&mut self, to: u64) {
        self.records.truncate(to as usize);
        self.hashes.truncate(to as usize);
    }

    fn prefix_hash(&self, len: u64) -> u64 {
        match len {
            0 => 0,
            n => self.hashes[n as usize - 1],
        }
    }

    /// Whether both logs hold the same first `len` records.
    fn same_prefix(&self, other: &SimLog, len: u64) -> bool {
        self.len() >= len && other.len() >= len && self.prefix_hash(len) == other.prefix_hash(len)
    }

    fn first_difference(&self, other: &SimLog) -> Option<u64> {
        let common = self.records.len().min(other.records.len());
        (0..common)
            .find(|&i| self.records[i] != other.records[i])
            .map(|i| i as u64)
    }

    fn epochs(&self) -> LeaderEpochCache {
        let mut epochs = LeaderEpochCache::new();
        for &(offset, epoch, _) in &self.records {
            epochs
                .record(epoch, offset)
                .expect("simulated logs only grow in epoch");
        }
        epochs
    }
}

// ------------------------------------------------------------------ messages

#[derive(Debug, Clone)]
enum Answer {
    Records {
        high_watermark: u64,
        batches: Vec<(BatchRange, Vec<u64>)>,
    },
    Diverging {
        diverging: EpochEndOffset,
        high_watermark: u64,
    },
    Refused,
}

#[derive(Debug, Clone)]
enum Payload {
    Fetch {
        request: FetchRequest,
        incarnation: u32,
    },
    FetchAnswer {
        request: FetchRequest,
        answer: Answer,
    },
    Proposal(IsrProposal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Replica { id: u32, incarnation: Option<u32> },
    Controller,
}

#[derive(Debug, Clone)]
struct Envelope {
    deliver_at_ms: u64,
    seq: u64,
    from: u32,
    to: Destination,
    payload: Payload,
}

#[derive(Debug, Clone)]
enum Control {
    Lead { epoch: u32, isr: Vec<u32> },
    Follow { leader: u32, epoch: u32 },
    Isr(IsrCommit),
}

// ------------------------------------------------------------------ actors

struct Node {
    log: SimLog,
    /// `None` while crashed.
    replica: Option<Replica>,
    /// Bumped on every restart: answers to an earlier life are lost with its sockets.
    incarnation: u32,
    /// Metadata from the controller, in order, with delivery times.
    metadata: VecDeque<(u64, Control)>,
}

struct Controller {
    epoch: u32,
    leader: Option<u32>,
    isr: Vec<u32>,
    version: u32,
    fenced: [bool; REPLICAS.len()],
}

struct PendingProduce {
    node: usize,
    incarnation: u32,
    epoch: u32,
    base: u64,
    payloads: Vec<u64>,
    deadline_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Stats {
    acked_batches: u64,
    failed_batches: u64,
    refused_batches: u64,
    committed_records: u64,
    leader_changes: u64,
    crashes: u64,
    truncations: u64,
    isr_commits: u64,
    diverging_answers: u64,
    /// Acknowledged by a replica the controller had already replaced.
    zombie_acks: u64,
    dropped_messages: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.acked_batches += other.acked_batches;
        self.failed_batches += other.failed_batches;
        self.refused_batches += other.refused_batches;
        self.committed_records += other.committed_records;
        self.leader_changes += other.leader_changes;
        self.crashes += other.crashes;
        self.truncations += other.truncations;
        self.isr_commits += other.isr_commits;
        self.diverging_answers += other.diverging_answers;
        self.zombie_acks += other.zombie_acks;
        self.dropped_messages += other.dropped_messages;
    }
}

#[derive(Debug)]
enum FailureKind {
    Invariant(String),
    Vacuous,
}

#[derive(Debug)]
struct Failure {
    seed: u64,
    step: usize,
    now_ms: u64,
    kind: FailureKind,
    trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::Invariant(message) => writeln!(
                f,
                "simulation seed {} broke an invariant at step {} ({} ms): {message}",
                self.seed, self.step, self.now_ms
            )?,
            FailureKind::Vacuous => writeln!(
                f,
                "simulation seed {} acknowledged nothing in {} steps: it checked nothing",
                self.seed, self.step
            )?,
        }
        writeln!(f, "recent events:")?;
        for event in &self.trace {
            writeln!(f, "  {event}")?;
        }
        write!(
            f,
            "replay: QUIVER_SIM_SEED={} cargo test -p quiver-repl --test simulation",
            self.seed
        )
    }
}

struct World {
    rng: StdRng,
    mutations: Mutations,
    now_ms: u64,
    nodes: Vec<Node>,
    controller: Controller,
    network: Vec<Envelope>,
    next_seq: u64,
    /// Symmetric: `blocked[a][b]` cuts the link between replicas a and b.
    blocked: [[bool; REPLICAS.len()]; REPLICAS.len()],
    pending: Vec<PendingProduce>,
    next_payload: u64,
    /// Every record that was ever below a leader's high watermark, in offset order.
    committed: SimLog,
    leaders_by_epoch: BTreeMap<u32, usize>,
    stats: Stats,
    trace: VecDeque<String>,
}

type Checked = Result<(), String>;

impl World {
    fn new(seed: u64, mutations: Mutations) -> Self {
        let nodes = REPLICAS
            .iter()
            .map(|&id| Node {
                log: SimLog::default(),
                replica: Some(
                    Replica::new(id, config(), RecoveredLog::empty()).expect("valid config"),
                ),
                incarnation: 0,
                metadata: VecDeque::new(),
            })
            .collect();
        let mut world = Self {
            rng: StdRng::seed_from_u64(seed),
            mutations,
            now_ms: 0,
            nodes,
            controller: Controller {
                epoch: 0,
                leader: None,
                isr: REPLICAS.to_vec(),
                version: 0,
                fenced: [false; REPLICAS.len()],
            },
            network: Vec::new(),
            next_seq: 0,
            blocked: [[false; REPLICAS.len()]; REPLICAS.len()],
            pending: Vec::new(),
            next_payload: 0,
            committed: SimLog::default(),
            leaders_by_epoch: BTreeMap::new(),
            stats: Stats::default(),
            trace: VecDeque::new(),
        };
        world.elect();
        world
    }

    fn note(&mut self, event: String) {
        if self.trace.len() == TRACE_EVENTS_MAX {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>6} ms  {event}", self.now_ms));
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        self.rng.gen_range(0..1000) < per_mille
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    fn step(&mut self) -> Checked {
        self.now_ms += self.rng.gen_range(1..=STEP_MS_MAX);
        self.inject_faults()?;
        self.deliver_metadata()?;
        self.deliver_network()?;
        for i in 0..self.nodes.len() {
            self.tick(i)?;
        }
        if self.rng.gen_range(0..100) < PRODUCE_PERCENT {
            self.produce()?;
        }
        self.settle_produces()?;
        self.check_invariants()
    }

    // -------------------------------------------------------------- faults

    fn inject_faults(&mut self) -> Checked {
        if self.chance(CRASH_PER_MILLE) {
            let i = self.rng.gen_range(0..self.nodes.len());
            if self.alive(i) {
                self.crash(i);
            }
        }
        for i in 0..self.nodes.len() {
            if !self.alive(i) && self.chance(RESTART_PER_MILLE) {
                self.restart(i)?;
            }
        }
        if self.chance(PARTITION_PER_MILLE) {
            let a = self.rng.gen_range(0..REPLICAS.len());
            let b = (a + self.rng.gen_range(1..REPLICAS.len())) % REPLICAS.len();
            let cut = !self.blocked[a][b];
            self.blocked[a][b] = cut;
            self.blocked[b][a] = cut;
            self.note(format!(
                "link {a}-{b} {}",
                if cut { "partitioned" } else { "healed" }
            ));
        }
        if self.chance(LEADER_MOVE_PER_MILLE) {
            self.move_leadership();
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.replica = None;
        node.metadata.clear();
        self.stats.crashes += 1;
        let log_end = node.log.len();
        self.note(format!("replica {i} crashed (log ends at {log_end})"));
        self.fence(i);
    }

    fn restart(&mut self, i: usize) -> Checked {
        let node = &mut self.nodes[i];
        let log = RecoveredLog {
            log_start_offset: 0,
            log_end_offset: node.log.len(),
            epochs: node.log.epochs(),
            // In-memory state is lost; a committed high watermark is not kept.
            high_watermark: 0,
        };
        let replica = Replica::new(REPLICAS[i], config(), log)
            .map_err(|e| format!("replica {i} could not recover its log: {e}"))?;
        node.replica = Some(replica);
        node.incarnation += 1;
        let log_end = node.log.len();
        self.note(format!("replica {i} restarted (log ends at {log_end})"));
        self.unfence(i);
        Ok(())
    }

    // -------------------------------------------------------------- controller

    fn send_metadata(&mut self, i: usize, control: Control) {
        if !self.alive(i) {
            return;
        }
        let delay = self.rng.gen_range(0..=METADATA_DELAY_MS_MAX);
        let queue = &mut self.nodes[i].metadata;
        // In order: never before the message queued ahead of it.
        let at = queue.back().map_or(self.now_ms + delay, |(last, _)| {
            (*last).max(self.now_ms + delay)
        });
        queue.push_back((at, control));
    }

    fn isr_commit(&self) -> IsrCommit {
        IsrCommit {
            leader_epoch: self.controller.epoch,
            version: self.controller.version,
            isr: self.controller.isr.clone(),
        }
    }

    /// Chooses a leader among the live ISR members (or, mutated, any live replica),
    /// starts a new epoch, and tells every live replica.
    fn elect(&mut self) {
        let exclude = self.controller.leader;
        let live_isr: Vec<u32> = self
            .controller
            .isr
            .iter()
            .copied()
            .filter(|&r| !self.controller.fenced[r as usize] && Some(r) != exclude)
            .collect();
        let candidates = if live_isr.is_empty() && self.mutations.unclean_election {
            REPLICAS
                .iter()
                .copied()
                .filter(|&r| !self.controller.fenced[r as usize] && Some(r) != exclude)
                .collect()
        } else {
            live_isr
        };
        if candidates.is_empty() {
            self.controller.leader = None;
            self.note(format!(
                "no leader: ISR {:?} has no live member",
                self.controller.isr
            ));
            return;
        }
        let leader = candidates[self.rng.gen_range(0..candidates.len())];
        if !self.controller.isr.contains(&leader) {
            self.controller.isr = vec![leader];
        }
        self.controller.epoch += 1;
        self.controller.version = 0;
        self.controller.leader = Some(leader);
        self.stats.leader_changes += 1;
        let (epoch, isr) = (self.controller.epoch, self.controller.isr.clone());
        self.note(format!(
            "controller: epoch {epoch} leader {leader} ISR {isr:?}"
        ));
        for &r in &REPLICAS {
            let control = if r == leader {
                Control::Lead {
                    epoch,
                    isr: isr.clone(),
                }
            } else {
                Control::Follow { leader, epoch }
            };
            self.send_metadata(r as usize, control);
        }
    }

    /// A broker missed its heartbeat: out of the ISR (unless it is the last member,
    /// as in Kafka), and a new leader if it led.
    fn fence(&mut self, i: usize) {
        let id = REPLICAS[i];
        self.controller.fenced[i] = true;
        let was_leader = self.controller.leader == Some(id);
        if self.controller.isr.len() > 1 && self.controller.isr.contains(&id) {
            self.controller.isr.retain(|&r| r != id);
            self.controller.version += 1;
            if !was_leader && let Some(leader) = self.controller.leader {
                let commit = self.isr_commit();
                self.send_metadata(leader as usize, Control::Isr(commit));
            }
        }
        if was_leader {
            self.elect();
        }
    }

    fn unfence(&mut self, i: usize) {
        self.controller.fenced[i] = false;
        match self.controller.leader {
            None => self.elect(),
            Some(leader) => {
                let epoch = self.controller.epoch;
                self.send_metadata(i, Control::Follow { leader, epoch });
            }
        }
    }

    /// Preferred-leader election or a controlled shutdown: leadership moves to another
    /// live ISR member.
    fn move_leadership(&mut self) {
        if self.controller.leader.is_none() {
            return;
        }
        let others = self
            .controller
            .isr
            .iter()
            .any(|&r| !self.controller.fenced[r as usize] && Some(r) != self.controller.leader);
        if others {
            self.elect();
        }
    }

    fn handle_proposal(&mut self, from: u32, proposal: IsrProposal) {
        let c = &mut self.controller;
        if c.leader == Some(from)
            && proposal.leader_epoch == c.epoch
            && proposal.base_version == c.version
        {
            let eligible =
                proposal.isr.contains(&from) && proposal.isr.iter().all(|&r| !c.fenced[r as usize]);
            if eligible {
                c.isr = proposal.isr;
            }
            // Refused or not, the version moves: a delayed copy can never apply.
            c.version += 1;
            self.stats.isr_commits += 1;
            let commit = self.isr_commit();
            self.note(format!(
                "controller: ISR {} v{} {:?}",
                if eligible { "committed" } else { "refused" },
                commit.version,
                commit.isr
            ));
        }
        let commit = self.isr_commit();
        self.send_metadata(from as usize, Control::Isr(commit));
    }

    // -------------------------------------------------------------- delivery

    fn deliver_metadata(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            while let Some((at, _)) = self.nodes[i].metadata.front() {
                if *at > self.now_ms {
                    break;
                }
                let (_, control) = self.nodes[i]
                    .metadata
                    .pop_front()
                    .expect("front was just seen");
                self.apply_control(i, control)?;
            }
        }
        Ok(())
    }

    fn apply_control(&mut self, i: usize, control: Control) -> Checked {
        let now = self.now_ms;
        match control {
            Control::Lead { epoch, isr } => {
                let replica = self.nodes[i].replica.as_mut().ok_or("crashed node")?;
                replica
                    .become_leader(epoch, &isr, &REPLICAS, now)
                    .map_err(|e| format!("replica {i} refused to lead epoch {epoch}: {e}"))?;
            }
            Control::Follow { leader, epoch } => {
                if self.mutations.truncate_to_high_watermark_on_follow {
                    self.truncate_to_high_watermark(i)?;
                }
                let replica = self.nodes[i].replica.as_mut().ok_or("crashed node")?;
                replica.become_follower(leader, epoch, now).map_err(|e| {
                    format!("replica {i} refused to follow {leader} in epoch {epoch}: {e}")
                })?;
            }
            Control::Isr(commit) => {
                let replica = self.nodes[i].replica.as_mut().ok_or("crashed node")?;
                // Stale answers are expected: proposals are retried and cross paths.
                let _ = replica.handle_isr_committed(&commit, now);
            }
        }
        self.drain(i, &[], 0)
    }

    /// The mutation: cut the log at the high watermark and start over from it.
    fn truncate_to_high_watermark(&mut self, i: usize) -> Checked {
        let node = &mut self.nodes[i];
        let replica = node.replica.as_ref().ok_or("crashed node")?;
        let high_watermark = replica.high_watermark();
        node.log.truncate(high_watermark);
        let log = RecoveredLog {
            log_start_offset: 0,
            log_end_offset: node.log.len(),
            epochs: node.log.epochs(),
            high_watermark,
        };
        node.replica = Some(Replica::new(REPLICAS[i], config(), log).map_err(|e| e.to_string())?);
        Ok(())
    }

    fn send(&mut self, from: u32, to: Destination, payload: Payload) {
        if let Destination::Replica { id, .. } = to
            && self.blocked[from as usize][id as usize]
        {
            self.stats.dropped_messages += 1;
            return;
        }
        if self.rng.gen_range(0..100) < DROP_PERCENT {
            self.stats.dropped_messages += 1;
            return;
        }
        let delay = if self.rng.gen_range(0..100) < SLOW_PERCENT {
            self.rng.gen_range(DELAY_MS_MAX..=SLOW_DELAY_MS_MAX)
        } else {
            self.rng.gen_range(1..=DELAY_MS_MAX)
        };
        self.network.push(Envelope {
            deliver_at_ms: self.now_ms + delay,
            seq: self.next_seq,
            from,
            to,
            payload,
        });
        self.next_seq += 1;
    }

    fn deliver_network(&mut self) -> Checked {
        let now = self.now_ms;
        let (mut due, rest): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(&mut self.network)
            .into_iter()
            .partition(|e| e.deliver_at_ms <= now);
        self.network = rest;
        due.sort_by_key(|e| (e.deliver_at_ms, e.seq));
        for envelope in due {
            match envelope.to {
                Destination::Controller => {
                    if let Payload::Proposal(proposal) = envelope.payload {
                        self.handle_proposal(envelope.from, proposal);
                    }
                }
                Destination::Replica { id, incarnation } => {
                    let i = id as usize;
                    let reachable = !self.blocked[envelope.from as usize][i]
                        && self.alive(i)
                        && incarnation.is_none_or(|inc| inc == self.nodes[i].incarnation);
                    if !reachable {
                        self.stats.dropped_messages += 1;
                        continue;
                    }
                    self.deliver_to_replica(i, envelope.from, envelope.payload)?;
                }
            }
        }
        Ok(())
    }

    fn deliver_to_replica(&mut self, i: usize, from: u32, payload: Payload) -> Checked {
        let now = self.now_ms;
        match payload {
            Payload::Fetch {
                request,
                incarnation,
            } => {
                let replica = self.nodes[i].replica.as_mut().ok_or("crashed node")?;
                let answer = match replica.handle_follower_fetch(&request, now) {
                    Ok(FetchReply::Records {
                        fetch_offset,
                        log_end_offset,
                        high_watermark,
                    }) => {
                        let end = log_end_offset.min(fetch_offset + FETCH_RECORDS_MAX);
                        Answer::Records {
                            high_watermark,
                            batches: batches(&self.nodes[i].log, fetch_offset, end),
                        }
                    }
                    Ok(FetchReply::Diverging {
                        diverging,
                        high_watermark,
                    }) => {
                        self.stats.diverging_answers += 1;
                        Answer::Diverging {
                            diverging,
                            high_watermark,
                        }
                    }
                    Err(_) => Answer::Refused,
                };
                self.drain(i, &[], 0)?;
                let to = Destination::Replica {
                    id: from,
                    incarnation: Some(incarnation),
                };
                self.send(REPLICAS[i], to, Payload::FetchAnswer { request, answer });
            }
            Payload::FetchAnswer { request, answer } => {
                let replica = self.nodes[i].replica.as_mut().ok_or("crashed node")?;
                let high_watermark_before = replica.high_watermark();
                let ranges: Vec<BatchRange>;
                let (result, fetched) = match &answer {
                    Answer::Records {
                        high_watermark,
                        batches,
                    } => {
                        ranges = batches.iter().map(|(range, _)| *range).collect();
                        let response = FetchResponse::Records {
                            high_watermark: *high_watermark,
                            batches: &ranges,
                        };
                        (
                            replica.handle_fetch_response(&request, response, now),
                            batches.as_slice(),
                        )
                    }
                    Answer::Diverging {
                        diverging,
                        high_watermark,
                    } => {
                        let response = FetchResponse::Diverging {
                            diverging: *diverging,
                            high_watermark: *high_watermark,
                        };
                        (
                            replica.handle_fetch_response(&request, response, now),
                            &[][..],
                        )
                    }
                    Answer::Refused => (replica.handle_fetch_error(&request, now), &[][..]),
                };
                match result {
                    Ok(()) | Err(FetchResponseError::Stale) => {}
                    Err(e) => {
                        return Err(format!(
                            "replica {i} refused a well-formed answer from {from}: {e}"
                        ));
                    }
                }
                self.drain(i, fetched, high_watermark_before)?;
            }
            Payload::Proposal(_) => return Err("proposal sent to a replica".into()),
        }
        Ok(())
    }

    /// Performs node `i`'s outputs: the broker's half of the contract.
    fn drain(
        &mut self,
        i: usize,
        fetched: &[(BatchRange, Vec<u64>)],
        high_watermark_before: u64,
    ) -> Checked {
        while let Some(output) = self.nodes[i]
            .replica
            .as_mut()
            .and_then(Replica::poll_output)
        {
            match output {
                Output::Truncate { to } => {
                    if to < high_watermark_before {
                        return Err(format!(
                            "(5) replica {i} truncated to {to}, below its high watermark {high_watermark_before}"
                        ));
                    }
                    let log = &mut self.nodes[i].log;
                    if to > log.len() {
                        return Err(format!("replica {i} truncated beyond its log end to {to}"));
                    }
                    let removed = log.len() - to;
                    log.truncate(to);
                    self.stats.truncations += 1;
                    self.note(format!("replica {i} truncated {removed} records to {to}"));
                }
                Output::Append(range) => {
                    let (_, payloads) = fetched
                        .iter()
                        .find(|(fetched, _)| *fetched == range)
                        .ok_or_else(|| format!("replica {i} appended {range:?}, never fetched"))?;
                    let log = &mut self.nodes[i].log;
                    if range.base_offset != log.len() {
                        return Err(format!(
                            "replica {i} appended {range:?} at log end {}",
                            log.len()
                        ));
                    }
                    for &payload in payloads {
                        log.push(range.leader_epoch, payload);
                    }
                }
                Output::ProposeIsr(proposal) => {
                    self.send(
                        REPLICAS[i],
                        Destination::Controller,
                        Payload::Proposal(proposal),
                    );
                }
                Output::HighWatermark(_) => {}
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- replicas

    fn tick(&mut self, i: usize) -> Checked {
        let now = self.now_ms;
        let incarnation = self.nodes[i].incarnation;
        let Some(replica) = self.nodes[i].replica.as_mut() else {
            return Ok(());
        };
        replica.handle_timeout(now);
        let request = replica.poll_fetch(now);
        self.drain(i, &[], 0)?;
        if let Some(request) = request {
            let to = Destination::Replica {
                id: request.leader,
                incarnation: None,
            };
            self.send(
                REPLICAS[i],
                to,
                Payload::Fetch {
                    request,
                    incarnation,
                },
            );
        }
        Ok(())
    }

    fn produce(&mut self) -> Checked {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .replica
                    .as_ref()
                    .is_some_and(|r| matches!(r.role(), Role::Leader { .. }))
            })
            .collect();
        if leaders.is_empty() {
            return Ok(());
        }
        let i = leaders[self.rng.gen_range(0..leaders.len())];
        let count = self.rng.gen_range(1..=3u64);
        let payloads: Vec<u64> = (0..count).map(|k| self.next_payload + k).collect();
        let node = &mut self.nodes[i];
        let replica = node.replica.as_mut().ok_or("crashed node")?;
        if replica.can_accept_acks_all(self.now_ms).is_err() {
            self.stats.refused_batches += 1;
            return Ok(());
        }
        let epoch = replica.leader_epoch().ok_or("leader without an epoch")?;
        let base = node.log.len();
        for &payload in &payloads {
            node.log.push(epoch, payload);
        }
        replica
            .handle_local_append(BatchRange {
                base_offset: base,
                last_offset: base + count - 1,
                leader_epoch: epoch,
            })
            .map_err(|e| format!("replica {i} refused its own append: {e}"))?;
        self.next_payload += count;
        self.pending.push(PendingProduce {
            node: i,
            incarnation: node.incarnation,
            epoch,
            base,
            payloads,
            deadline_ms: self.now_ms + PRODUCE_TIMEOUT_MS,
        });
        self.drain(i, &[], 0)
    }

    fn settle_produces(&mut self) -> Checked {
        for produce in std::mem::take(&mut self.pending) {
            let node = &self.nodes[produce.node];
            let replica = node
                .replica
                .as_ref()
                .filter(|_| node.incarnation == produce.incarnation);
            let Some(replica) = replica else {
                self.stats.failed_batches += 1;
                continue;
            };
            let last = produce.base + produce.payloads.len() as u64 - 1;
            match replica.acks_all_outcome(produce.epoch, last, self.now_ms) {
                Ok(AcksAll::Acknowledged) => {
                    for (k, &payload) in produce.payloads.iter().enumerate() {
                        let offset = produce.base + k as u64;
                        let stored = node.log.records.get(offset as usize);
                        if stored != Some(&(offset, produce.epoch, payload)) {
                            return Err(format!(
                                "replica {} acknowledged payload {payload} at {offset}, but holds {stored:?}",
                                produce.node
                            ));
                        }
                    }
                    let high_watermark = replica.high_watermark();
                    if self.controller.leader != Some(REPLICAS[produce.node]) {
                        self.stats.zombie_acks += 1;
                    }
                    self.extend_committed(produce.node, high_watermark)?;
                    self.stats.acked_batches += 1;
                }
                Ok(AcksAll::Waiting) if self.now_ms < produce.deadline_ms => {
                    self.pending.push(produce);
                }
                Ok(AcksAll::Waiting) | Err(_) => self.stats.failed_batches += 1,
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- invariants

    /// Everything below a leader's high watermark is committed: it must agree with
    /// what was committed before, and extends it.
    fn extend_committed(&mut self, i: usize, high_watermark: u64) -> Checked {
        let log = &self.nodes[i].log;
        let overlap = high_watermark.min(self.committed.len());
        if !log.same_prefix(&self.committed, overlap) {
            return Err(format!(
                "(1) leader {i} disagrees with committed records below its high watermark {high_watermark}, first at offset {:?}",
                log.first_difference(&self.committed)
            ));
        }
        let from = self.committed.len() as usize;
        for &(_, epoch, payload) in log
            .records
            .get(from..high_watermark as usize)
            .unwrap_or(&[])
        {
            self.committed.push(epoch, payload);
        }
        Ok(())
    }

    fn check_invariants(&mut self) -> Checked {
        for i in 0..self.nodes.len() {
            let Some(replica) = self.nodes[i].replica.as_ref() else {
                continue;
            };
            let (log_end, high_watermark) = (replica.log_end_offset(), replica.high_watermark());
            if log_end != self.nodes[i].log.len() {
                return Err(format!(
                    "(4) replica {i} counts {log_end} records, its log holds {}",
                    self.nodes[i].log.len()
                ));
            }
            if high_watermark > log_end {
                return Err(format!(
                    "(4) replica {i} high watermark {high_watermark} beyond its log end {log_end}"
                ));
            }
            if let Role::Leader { leader_epoch } = replica.role() {
                let first = *self.leaders_by_epoch.entry(leader_epoch).or_insert(i);
                if first != i {
                    return Err(format!(
                        "(3) replicas {first} and {i} both led epoch {leader_epoch}"
                    ));
                }
                self.extend_committed(i, high_watermark)?;
            }
        }
        let holders = self
            .controller
            .leader
            .into_iter()
            .chain(self.controller.isr.iter().copied());
        for holder in holders {
            let log = &self.nodes[holder as usize].log;
            if !log.same_prefix(&self.committed, self.committed.len()) {
                return Err(format!(
                    "(1) replica {holder} (controller's leader {:?}, ISR {:?}) lacks committed records: its log ends at {}, {} committed, first difference at {:?}",
                    self.controller.leader,
                    self.controller.isr,
                    log.len(),
                    self.committed.len(),
                    log.first_difference(&self.committed)
                ));
            }
        }
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (Some(ra), Some(rb)) = (&self.nodes[a].replica, &self.nodes[b].replica) else {
                    continue;
                };
                let below = ra.high_watermark().min(rb.high_watermark());
                if !self.nodes[a].log.same_prefix(&self.nodes[b].log, below) {
                    return Err(format!(
                        "(2) replicas {a} and {b} disagree below their high watermarks ({below}), first at offset {:?}",
                        self.nodes[a].log.first_difference(&self.nodes[b].log)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The records `[from, to)` of a log as fetch batches of up to `BATCH_RECORDS_MAX`
/// records of one epoch each.
fn batches(log: &SimLog, from: u64, to: u64) -> Vec<(BatchRange, Vec<u64>)> {
    let mut batches: Vec<(BatchRange, Vec<u64>)> = Vec::new();
    for &(offset, epoch, payload) in &log.records[from as usize..to as usize] {
        match batches.last_mut() {
            Some((range, payloads))
                if range.leader_epoch == epoch
                    && range.last_offset - range.base_offset + 1 < BATCH_RECORDS_MAX =>
            {
                range.last_offset = offset;
                payloads.push(payload);
            }
            _ => batches.push((
                BatchRange {
                    base_offset: offset,
                    last_offset: offset,
                    leader_epoch: epoch,
                },
                vec![payload],
            )),
        }
    }
    batches
}

fn run(seed: u64, steps: usize, mutations: Mutations) -> Result<Stats, Failure> {
    let mut world = World::new(seed, mutations);
    for step in 0..steps {
        if let Err(message) = world.step() {
            return Err(Failure {
                seed,
                step,
                now_ms: world.now_ms,
                kind: FailureKind::Invariant(message),
                trace: world.trace.into_iter().collect(),
            });
        }
    }
    if world.stats.acked_batches == 0 {
        return Err(Failure {
            seed,
            step: steps,
            now_ms: world.now_ms,
            kind: FailureKind::Vacuous,
            trace: world.trace.into_iter().collect(),
        });
    }
    world.stats.committed_records = world.committed.len();
    Ok(world.stats)
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number"))
    })
}

#[test]
fn committed_records_survive_crashes_partitions_and_leader_changes() {
    let seeds: Vec<u64> = match env_number("QUIVER_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let count = env_number("QUIVER_SIM_SEEDS").unwrap_or(SEEDS);
            (FIRST_SEED..FIRST_SEED + count).collect()
        }
    };
    let steps = env_number("QUIVER_SIM_STEPS").map_or(STEPS, |s| s as usize);
    let mut total = Stats::default();
    for &seed in &seeds {
        match run(seed, steps, Mutations::default()) {
            Ok(stats) => total.add(&stats),
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!("{} seeds x {steps} steps: {total:?}", seeds.len());
    // The faults must actually have happened, or the run proved little.
    assert!(total.leader_changes > seeds.len() as u64, "{total:?}");
    assert!(total.crashes > 0 && total.truncations > 0, "{total:?}");
    assert!(
        total.isr_commits > 0 && total.failed_batches > 0,
        "{total:?}"
    );
}

#[test]
fn a_seed_replays_identically() {
    let first = run(FIRST_SEED, 500, Mutations::default()).map_err(|f| f.to_string());
    let again = run(FIRST_SEED, 500, Mutations::default()).map_err(|f| f.to_string());
    assert_eq!(first, again);
}

/// The checks can fail: each broken rule is caught on some seed.
#[test]
fn broken_rules_are_caught() {
    let mutations = [
        Mutations {
            truncate_to_high_watermark_on_follow: true,
            ..Mutations::default()
        },
        Mutations {
            unclean_election: true,
            ..Mutations::default()
        },
    ];
    for mutation in mutations {
        let caught =
            (FIRST_SEED..FIRST_SEED + SEEDS).find_map(|seed| match run(seed, STEPS, mutation) {
                Err(failure) if matches!(failure.kind, FailureKind::Invariant(_)) => Some(failure),
                _ => None,
            });
        match caught {
            Some(failure) => eprintln!("{mutation:?} caught:\n{failure}\n"),
            None => panic!("{mutation:?} went unnoticed over {SEEDS} seeds"),
        }
    }
}
