//! Security metadata: the cluster's access control lists and which principal each
//! producer id was issued to. Both are replicated like every other piece of metadata,
//! so every broker decides alike and a change applies to the next request on each.

use quiver_wire::acl::{ACLS_MAX, AclBinding};
use serde::{Deserialize, Serialize};

use super::limits::{PRODUCER_CLAIMS_MAX, PRODUCER_CLAIMS_PER_PRINCIPAL_MAX};
use super::{CommandError, MetadataResponse, MetadataState};

/// To whom a producer id was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerClaim {
    /// `User:NAME`.
    pub principal: String,
    /// Order of issue, so a principal past its limit loses its oldest claim first.
    pub sequence: u64,
}

impl MetadataState {
    /// Every ACL rule, in a stable order.
    pub fn acls(&self) -> impl Iterator<Item = &AclBinding> + Clone {
        self.acls.iter()
    }

    /// The principal producer id `producer_id` was issued to, if it was claimed.
    pub fn producer_owner(&self, producer_id: u64) -> Option<&str> {
        self.producer_claims
            .get(&producer_id)
            .map(|c| c.principal.as_str())
    }

    pub(super) fn create_acls(
        &mut self,
        bindings: &[AclBinding],
    ) -> Result<MetadataResponse, CommandError> {
        for binding in bindings {
            binding
                .validate()
                .map_err(|e| CommandError::InvalidAcl(e.to_string()))?;
        }
        let new = bindings
            .iter()
            .filter(|b| !self.acls.contains(*b))
            .collect::<std::collections::BTreeSet<_>>();
        if self.acls.len() + new.len() > ACLS_MAX {
            return Err(CommandError::TooManyAcls { max: ACLS_MAX });
        }
        let added = new.len() as u32;
        self.acls.extend(new.into_iter().cloned());
        Ok(MetadataResponse::AclsCreated { added })
    }

    pub(super) fn delete_acls(
        &mut self,
        bindings: &[AclBinding],
    ) -> Result<MetadataResponse, CommandError> {
        let removed = bindings.iter().filter(|b| self.acls.remove(*b)).count() as u32;
        Ok(MetadataResponse::AclsDeleted { removed })
    }

    /// Records that `producer_id` belongs to `principal`. A principal past its limit
    /// loses its oldest claim (that producer must ask for a new id); a cluster past its
    /// limit refuses new claims rather than take one principal's from another.
    pub(super) fn claim_producer_id(
        &mut self,
        producer_id: u64,
        principal: &str,
    ) -> Result<MetadataResponse, CommandError> {
        if principal.is_empty() || principal.len() > quiver_wire::acl::ACL_NAME_BYTES_MAX {
            return Err(CommandError::InvalidAcl(format!(
                "principal `{principal}` cannot own a producer id"
            )));
        }
        if let Some(existing) = self.producer_claims.get(&producer_id) {
            return if existing.principal == principal {
                Ok(MetadataResponse::ProducerIdClaimed { evicted: None })
            } else {
                Err(CommandError::ProducerIdClaimed(producer_id))
            };
        }
        let own: Vec<(u64, u64)> = self
            .producer_claims
            .iter()
            .filter(|(_, c)| c.principal == principal)
            .map(|(id, c)| (c.sequence, *id))
            .collect();
        let evicted = if own.len() >= PRODUCER_CLAIMS_PER_PRINCIPAL_MAX {
            own.iter().min().map(|(_, id)| *id)
        } else if self.producer_claims.len() >= PRODUCER_CLAIMS_MAX {
            return Err(CommandError::TooManyProducerClaims {
                max: PRODUCER_CLAIMS_MAX,
            });
        } else {
            None
        };
        if let Some(id) = evicted {
            self.producer_claims.remove(&id);
        }
        let sequence = self.next_claim_sequence;
        self.next_claim_sequence += 1;
        self.producer_claims.insert(
            producer_id,
            ProducerClaim {
                principal: principal.to_owned(),
                sequence,
            },
        );
        Ok(MetadataResponse::ProducerIdClaimed { evicted })
    }
}

/// A SCRAM-SHA-256 user: the salted, iterated keys derived from the password (RFC 5802),
/// never the password itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Fewest PBKDF2 iterations a stored credential may use (RFC 7677's minimum).
pub const USER_ITERATIONS_MIN: u32 = quiver_wire::scram::SCRAM_ITERATIONS_MIN;
/// Most PBKDF2 iterations: each authentication costs the broker this many HMACs.
pub const USER_ITERATIONS_MAX: u32 = quiver_wire::scram::SCRAM_ITERATIONS_MAX;

impl MetadataState {
    /// Every SCRAM user, by name.
    pub fn users(&self) -> &std::collections::BTreeMap<String, UserRecord> {
        &self.users
    }

    pub(super) fn upsert_user(
        &mut self,
        name: &str,
        record: &UserRecord,
    ) -> Result<MetadataResponse, CommandError> {
        let invalid = |why: String| Err(CommandError::InvalidUser(why));
        if name.is_empty()
            || name.len() > quiver_wire::sasl::USER_NAME_BYTES_MAX
            || name.chars().any(char::is_control)
        {
            return invalid(format!(
                "`{name}`: a user name is 1 to {} printable bytes",
                quiver_wire::sasl::USER_NAME_BYTES_MAX
            ));
        }
        if !(USER_ITERATIONS_MIN..=USER_ITERATIONS_MAX).contains(&record.iterations) {
            return invalid(format!(
                "{} iterations: {USER_ITERATIONS_MIN} to {USER_ITERATIONS_MAX}",
                record.iterations
            ));
        }
        if record.salt.is_empty() || record.salt.len() > quiver_wire::sasl::SALT_BYTES_MAX {
            return invalid(format!("a salt of {} bytes", record.salt.len()));
        }
        if record.stored_key.len() != 32 || record.server_key.len() != 32 {
            return invalid("keys must be 32 bytes (SHA-256)".into());
        }
        if !self.users.contains_key(name) && self.users.len() >= quiver_wire::sasl::USERS_MAX {
            return Err(CommandError::TooManyUsers {
                max: quiver_wire::sasl::USERS_MAX,
            });
        }
        let created = self.users.insert(name.to_owned(), record.clone()).is_none();
        Ok(MetadataResponse::UserUpserted { created })
    }

    pub(super) fn delete_user(&mut self, name: &str) -> Result<MetadataResponse, CommandError> {
        match self.users.remove(name) {
            Some(_) => Ok(MetadataResponse::UserDeleted),
            None => Err(CommandError::UnknownUser(name.to_owned())),
        }
    }
}

/// A principal's client quota; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub produce_bytes_per_sec: Option<u64>,
    pub fetch_bytes_per_sec: Option<u64>,
    /// Percent of one core's time handling the principal's requests.
    pub request_percent: Option<u64>,
}

/// The largest request-time share a quota may give: 100 percent per core of a large
/// machine.
pub const QUOTA_REQUEST_PERCENT_MAX: u64 = 100 * 1_024;

impl MetadataState {
    /// Every client quota, by principal (`User:*` is the default).
    pub fn quotas(&self) -> &std::collections::BTreeMap<String, QuotaRecord> {
        &self.quotas
    }

    /// The quota that applies to `principal`: its own, else the default.
    pub fn quota_of(&self, principal: &str) -> Option<&QuotaRecord> {
        self.quotas
            .get(principal)
            .or_else(|| self.quotas.get(quiver_wire::quota::DEFAULT_QUOTA_PRINCIPAL))
    }

    pub(super) fn set_quota(
        &mut self,
        principal: &str,
        record: &QuotaRecord,
    ) -> Result<MetadataResponse, CommandError> {
        let valid_principal = principal
            .strip_prefix("User:")
            .is_some_and(|name| !name.is_empty() && !name.chars().any(char::is_control))
            && principal.len() <= quiver_wire::acl::ACL_NAME_BYTES_MAX;
        if !valid_principal {
            return Err(CommandError::InvalidQuota(format!(
                "principal `{principal}` is not User:NAME or User:*"
            )));
        }
        if record.produce_bytes_per_sec == Some(0) || record.fetch_bytes_per_sec == Some(0) {
            return Err(CommandError::InvalidQuota(
                "a byte rate of 0 would stop the principal for good: give at least 1".into(),
            ));
        }
        if record
            .request_percent
            .is_some_and(|p| p == 0 || p > QUOTA_REQUEST_PERCENT_MAX)
        {
            return Err(CommandError::InvalidQuota(format!(
                "request percent must be 1 to {QUOTA_REQUEST_PERCENT_MAX}"
            )));
        }
        let unlimited = record.produce_bytes_per_sec.is_none()
            && record.fetch_bytes_per_sec.is_none()
            && record.request_percent.is_none();
        if unlimited {
            let removed = self.quotas.remove(principal).is_some();
            return Ok(MetadataResponse::QuotaSet { removed });
        }
        if !self.quotas.contains_key(principal)
            && self.quotas.len() >= quiver_wire::quota::QUOTAS_MAX
        {
            return Err(CommandError::InvalidQuota(format!(
                "the cluster keeps at most {} quotas",
                quiver_wire::quota::QUOTAS_MAX
            )));
        }
        self.quotas.insert(principal.to_owned(), *record);
        Ok(MetadataResponse::QuotaSet { removed: false })
    }
}
