//! Broker registration, liveness and fencing.

use super::limits::{BROKER_ADDRESS_BYTES_MAX, BROKERS_MAX};
use super::{BrokerId, BrokerRecord, CommandError, MetadataResponse, MetadataState};

impl MetadataState {
    pub(super) fn register_broker(
        &mut self,
        broker_id: BrokerId,
        incarnation: u64,
        address: &str,
        now_ms: u64,
    ) -> Result<MetadataResponse, CommandError> {
        validate_address(address)?;
        match self.brokers.get(&broker_id) {
            // A retry of the registration that already went through: the same
            // incarnation and address, and no heartbeat since (after one, the same
            // number comes from another process, a restart).
            Some(b) if b.incarnation == incarnation && b.address == address && !b.heartbeated => {
                return Ok(MetadataResponse::BrokerRegistered {
                    broker_epoch: b.epoch,
                    leaders_elected: 0,
                });
            }
            // A restart: the old incarnation is gone, and with it whatever its page
            // cache held. Fence it first (Kafka does the same when a broker registers
            // again): it leaves the ISRs it shares, and the partitions it led elect
            // again, so no replica resumes leading in an epoch it began before the
            // crash. The new incarnation is unfenced below.
            Some(_) => {
                self.fence_broker(broker_id)?;
            }
            None if self.brokers.len() >= BROKERS_MAX => {
                return Err(CommandError::TooManyBrokers { max: BROKERS_MAX });
            }
            None => {}
        }
        let broker_epoch = self.next_broker_epoch;
        self.next_broker_epoch += 1;
        self.brokers.insert(
            broker_id,
            BrokerRecord {
                address: address.to_owned(),
                incarnation,
                epoch: broker_epoch,
                fenced: false,
                last_heartbeat_ms: now_ms,
                heartbeated: false,
            },
        );
        let leaders_elected = self.elect_leaderless();
        Ok(MetadataResponse::BrokerRegistered {
            broker_epoch,
            leaders_elected,
        })
    }

    pub(super) fn broker_heartbeat(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: u64,
        now_ms: u64,
    ) -> Result<MetadataResponse, CommandError> {
        let broker = self.broker_mut(broker_id)?;
        if broker.epoch != broker_epoch {
            return Err(CommandError::StaleBrokerEpoch {
                broker: broker_id,
                current: broker.epoch,
                given: broker_epoch,
            });
        }
        // Proposers' clocks differ a little; the recorded time never goes back.
        broker.last_heartbeat_ms = broker.last_heartbeat_ms.max(now_ms);
        broker.heartbeated = true;
        let unfenced = broker.fenced;
        broker.fenced = false;
        let leaders_elected = if unfenced { self.elect_leaderless() } else { 0 };
        Ok(MetadataResponse::HeartbeatAccepted {
            unfenced,
            leaders_elected,
        })
    }

    fn broker_mut(&mut self, broker_id: BrokerId) -> Result<&mut BrokerRecord, CommandError> {
        self.brokers
            .get_mut(&broker_id)
            .ok_or(CommandError::UnknownBroker(broker_id))
    }

    pub(super) fn fence_broker(
        &mut self,
        broker_id: BrokerId,
    ) -> Result<MetadataResponse, CommandError> {
        let broker = self.broker_mut(broker_id)?;
        if broker.fenced {
            return Ok(MetadataResponse::BrokerFenced {
                leaders_changed: 0,
                isrs_shrunk: 0,
            });
        }
        broker.fenced = true;
        let (mut leaders_changed, mut isrs_shrunk) = (0, 0);
        let brokers = &self.brokers;
        for topic in self.topics.values_mut() {
            let unclean = super::topic::unclean_election_enabled(&topic.configs);
            for p in &mut topic.partitions {
                if !p.replicas.contains(&broker_id) {
                    continue;
                }
                // Kafka's rule: the last ISR member stays, so that the partition can
                // elect it again when it returns with every acknowledged record.
                if p.isr.len() > 1 && p.isr.contains(&broker_id) {
                    p.isr.retain(|r| *r != broker_id);
                    p.isr_version = p.isr_version.saturating_add(1);
                    isrs_shrunk += 1;
                }
                if p.leader == Some(broker_id) && super::topic::elect(p, brokers, unclean) {
                    leaders_changed += 1;
                }
            }
        }
        Ok(MetadataResponse::BrokerFenced {
            leaders_changed,
            isrs_shrunk,
        })
    }

    pub(super) fn unfence_broker(
        &mut self,
        broker_id: BrokerId,
    ) -> Result<MetadataResponse, CommandError> {
        let broker = self.broker_mut(broker_id)?;
        if !broker.fenced {
            return Ok(MetadataResponse::BrokerUnfenced { leaders_elected: 0 });
        }
        broker.fenced = false;
        let leaders_elected = self.elect_leaderless();
        Ok(MetadataResponse::BrokerUnfenced { leaders_elected })
    }

    /// Gives every leaderless partition a leader if one is eligible now.
    fn elect_leaderless(&mut self) -> u32 {
        let mut elected = 0;
        let brokers = &self.brokers;
        for topic in self.topics.values_mut() {
            let unclean = super::topic::unclean_election_enabled(&topic.configs);
            for p in &mut topic.partitions {
                if p.leader.is_none() && super::topic::elect(p, brokers, unclean) {
                    elected += 1;
                }
            }
        }
        elected
    }
}

/// `host:port` with a non-empty host and a numeric port.
fn validate_address(address: &str) -> Result<(), CommandError> {
    let invalid = || CommandError::InvalidBrokerAddress(address.to_owned());
    if address.len() > BROKER_ADDRESS_BYTES_MAX {
        return Err(invalid());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    port.parse::<u16>().map_err(|_| invalid())?;
    Ok(())
}
