//! Who a caller is and what it may do: principals from certificates, and Kafka's ACL
//! decision (deny wins, no rule means deny, super users bypass). Pure: the rules come
//! in from the controller's metadata, so every broker decides alike and unit tests
//! drive it with tables of cases.

use std::fmt;

use quiver_wire::ErrorCode;
use quiver_wire::acl::{
    ANY_USER, AclBinding, CLUSTER_RESOURCE, Operation, Permission, ResourceType,
};

use crate::reply::RequestError;

/// The URI a broker certificate carries among its subject alternative names. Client
/// certificates made by `quiver cert issue` never do, so a client certificate from the
/// cluster's CA cannot pass for a broker.
pub const BROKER_IDENTITY_URI: &str = "urn:quiver:broker";

/// The principal of a client that presented no credentials (Kafka's `User:ANONYMOUS`).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// No credentials: allowed only while `authentication = "none"`.
    Anonymous,
    /// An authenticated client, `User:NAME`.
    User(String),
    /// Another broker of the cluster (a certificate with the broker identity).
    Broker,
}

impl Principal {
    /// The principal as ACL rules name it.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => ANONYMOUS,
            Principal::User(name) => name,
            Principal::Broker => "Broker",
        }
    }

    /// Whether the principal was authenticated (and so can own producer ids).
    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Principal::Anonymous)
    }

    /// The principal a verified certificate chain names: a broker when the leaf
    /// carries [`BROKER_IDENTITY_URI`], else `User:<common name>`. `None` when the
    /// certificate names nobody (no common name) or cannot be read.
    pub fn from_certificate(leaf: &[u8]) -> Option<Principal> {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        if carries_broker_identity(&cert) {
            return Some(Principal::Broker);
        }
        let common_name = cert.subject().iter_common_name().next()?.as_str().ok()?;
        let common_name = common_name.trim();
        if common_name.is_empty() || common_name.chars().any(char::is_control) {
            return None;
        }
        Some(Principal::User(format!("User:{common_name}")))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn carries_broker_identity(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return false;
    };
    names.value.general_names.iter().any(|name| {
        matches!(name, x509_parser::extensions::GeneralName::URI(uri) if *uri == BROKER_IDENTITY_URI)
    })
}

/// Whether a PEM certificate carries the broker identity.
pub fn pem_carries_broker_identity(pem: &[u8]) -> bool {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .and_then(Result::ok)
        .and_then(|der| Principal::from_certificate(&der))
        == Some(Principal::Broker)
}

/// Failed SCRAM exchanges one connection may make before every further attempt on it
/// is refused unread: each guess costs a round trip and a new connection after this.
pub const SCRAM_FAILURES_PER_CONNECTION_MAX: u32 = 3;

/// What one connection has proven: its principal (from its certificate, or set once
/// by a SCRAM exchange) and the exchange in progress.
pub struct ConnectionIdentity {
    principal: std::sync::RwLock<std::sync::Arc<Principal>>,
    scram: std::sync::Mutex<ScramProgress>,
    /// Keying material exported from the connection's TLS session, which a join
    /// proof is bound to (`crate::join`).
    channel_binding: Option<[u8; quiver_wire::join::JOIN_BINDING_BYTES]>,
}

/// Where a connection's SCRAM exchange stands.
pub enum ScramProgress {
    /// No exchange started, or the last one failed (`failures` so far).
    Idle { failures: u32 },
    /// The server-first message went out; the client's proof is awaited.
    Challenged(Box<quiver_wire::scram::ScramServerFirst>, u32),
}

impl ConnectionIdentity {
    pub fn new(principal: Principal) -> Self {
        Self {
            principal: std::sync::RwLock::new(std::sync::Arc::new(principal)),
            scram: std::sync::Mutex::new(ScramProgress::Idle { failures: 0 }),
            channel_binding: None,
        }
    }

    /// The identity with the connection's channel binding.
    pub fn with_channel_binding(
        mut self,
        binding: Option<[u8; quiver_wire::join::JOIN_BINDING_BYTES]>,
    ) -> Self {
        self.channel_binding = binding;
        self
    }

    /// The connection's channel binding, when its TLS session could export one.
    pub fn channel_binding(&self) -> Option<[u8; quiver_wire::join::JOIN_BINDING_BYTES]> {
        self.channel_binding
    }

    /// The principal as of now.
    pub fn principal(&self) -> std::sync::Arc<Principal> {
        std::sync::Arc::clone(
            &self
                .principal
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Names the connection's principal after a SCRAM exchange succeeded.
    pub fn authenticated(&self, principal: Principal) {
        *self
            .principal
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(principal);
    }

    /// The exchange state, for the SCRAM handler (held only between awaits).
    pub fn scram(&self) -> std::sync::MutexGuard<'_, ScramProgress> {
        self.scram
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One thing a request needs permission for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub operation: Operation,
    pub resource_type: ResourceType,
    pub name: String,
}

impl Need {
    pub fn topic(operation: Operation, name: &str) -> Need {
        Need {
            operation,
            resource_type: ResourceType::Topic,
            name: name.to_owned(),
        }
    }

    pub fn group(operation: Operation, name: &str) -> Need {
        Need {
            operation,
            resource_type: ResourceType::Group,
            name: name.to_owned(),
        }
    }

    pub fn cluster(operation: Operation) -> Need {
        Need {
            operation,
            resource_type: ResourceType::Cluster,
            name: CLUSTER_RESOURCE.to_owned(),
        }
    }

    pub fn plugin(operation: Operation, name: &str) -> Need {
        Need {
            operation,
            resource_type: ResourceType::Plugin,
            name: name.to_owned(),
        }
    }

    /// The refusal a principal gets for this need: the code of the resource type, and
    /// a message naming only what the request itself named.
    pub fn denied(&self, principal: &Principal) -> RequestError {
        let code = match self.resource_type {
            ResourceType::Topic => ErrorCode::TopicAuthorizationFailed,
            ResourceType::Group => ErrorCode::GroupAuthorizationFailed,
            ResourceType::Cluster => ErrorCode::ClusterAuthorizationFailed,
            ResourceType::Plugin => ErrorCode::PluginAuthorizationFailed,
        };
        let what = match self.resource_type {
            ResourceType::Cluster => "the cluster".to_owned(),
            other => format!("{other} `{}`", self.name),
        };
        RequestError::new(
            code,
            format!(
                "{principal} is not authorised to {} {what}",
                self.operation.name()
            ),
        )
    }
}

/// How requests are authorised: off (every caller may do everything), or by ACLs.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    /// `authorization = "acl"`.
    pub acl: bool,
    /// `super_users`: principals no rule applies to.
    pub super_users: Vec<String>,
}

impl Authorizer {
    /// Whether `principal` may do what `need` says, under `rules`.
    pub fn allows<'a>(
        &self,
        rules: impl Iterator<Item = &'a AclBinding> + Clone,
        principal: &Principal,
        need: &Need,
    ) -> bool {
        if !self.acl || *principal == Principal::Broker {
            return true;
        }
        if self.super_users.iter().any(|s| s == principal.name()) {
            return true;
        }
        let own =
            rules.filter(|rule| rule.principal == principal.name() || rule.principal == ANY_USER);
        match verdict(own.clone(), need.operation, need.resource_type, &need.name) {
            Verdict::Denied => false,
            Verdict::Allowed => true,
            // As in Kafka: create on the cluster lets a principal create any topic no
            // rule denies it, and an idempotent producer needs idempotent-write on the
            // cluster or write on some topic.
            Verdict::NoRule => match (need.resource_type, need.operation) {
                (ResourceType::Topic, Operation::Create) => {
                    verdict(
                        own,
                        Operation::Create,
                        ResourceType::Cluster,
                        CLUSTER_RESOURCE,
                    ) == Verdict::Allowed
                }
                (ResourceType::Cluster, Operation::IdempotentWrite) => {
                    own.into_iter().any(|rule| {
                        rule.resource_type == ResourceType::Topic
                            && rule.permission == Permission::Allow
                            && rule.operation.grants(Operation::Write)
                    })
                }
                _ => false,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Denied,
    Allowed,
    NoRule,
}

/// What `rules` (already those of the principal) say about one operation on one
/// resource: a matching deny wins over any allow.
fn verdict<'a>(
    rules: impl Iterator<Item = &'a AclBinding>,
    wanted: Operation,
    resource_type: ResourceType,
    name: &str,
) -> Verdict {
    let mut allowed = false;
    for rule in rules.filter(|r| r.matches_resource(resource_type, name)) {
        match rule.permission {
            Permission::Deny if rule.operation.refuses(wanted) => return Verdict::Denied,
            Permission::Allow if rule.operation.grants(wanted) => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Verdict::Allowed
    } else {
        Verdict::NoRule
    }
}

#[cfg(test)]
mod tests {
    use quiver_wire::acl::PatternType;

    use super::*;

    fn rule(
        principal: &str,
        resource_type: ResourceType,
        pattern: PatternType,
        name: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            resource_type,
            pattern,
            resource_name: name.into(),
            operation,
            permission,
        }
    }

    fn acl_on() -> Authorizer {
        Authorizer {
            acl: true,
            super_users: vec!["User:admin".into()],
        }
    }

    fn user(name: &str) -> Principal {
        Principal::User(format!("User:{name}"))
    }

    #[test]
    fn decisions_follow_kafkas_rules() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let rules = [
            rule("User:alice", Topic, Prefixed, "orders-", Write, Allow),
            rule("User:alice", Topic, Literal, "orders-secret", All, Deny),
            rule("User:*", Topic, Literal, "public", Read, Allow),
            rule("User:bob", Group, Literal, "*", Read, Allow),
            rule("User:carol", Cluster, Literal, "cluster", Create, Allow),
            rule("User:carol", Topic, Literal, "reserved", Create, Deny),
        ];
        let authorizer = acl_on();
        let cases: &[(Principal, Need, bool)] = &[
            // A prefixed allow.
            (user("alice"), Need::topic(Write, "orders-eu"), true),
            // Write implies describe.
            (user("alice"), Need::topic(Describe, "orders-eu"), true),
            // Deny wins over the prefixed allow.
            (user("alice"), Need::topic(Write, "orders-secret"), false),
            // No rule means deny.
            (user("alice"), Need::topic(Read, "orders-eu"), false),
            (user("alice"), Need::topic(Write, "payments"), false),
            // `User:*` applies to everyone, the anonymous principal included.
            (user("dave"), Need::topic(Read, "public"), true),
            (Principal::Anonymous, Need::topic(Read, "public"), true),
            (Principal::Anonymous, Need::topic(Write, "public"), false),
            // A literal `*` matches every name.
            (user("bob"), Need::group(Read, "anything"), true),
            (user("bob"), Need::group(Delete, "anything"), false),
            // Create on the cluster creates any topic, unless a deny names the topic.
            (user("carol"), Need::topic(Create, "new-topic"), true),
            (user("carol"), Need::topic(Create, "reserved"), false),
            (user("alice"), Need::topic(Create, "orders-new"), false),
            // Idempotent writes: write on some topic is enough.
            (user("alice"), Need::cluster(IdempotentWrite), true),
            (user("bob"), Need::cluster(IdempotentWrite), false),
            // Super users and brokers bypass every rule.
            (user("admin"), Need::topic(Write, "orders-secret"), true),
            (Principal::Broker, Need::cluster(Alter), true),
        ];
        for (principal, need, expected) in cases {
            assert_eq!(
                authorizer.allows(rules.iter(), principal, need),
                *expected,
                "{principal} {need:?}"
            );
        }
    }

    #[test]
    fn authorisation_off_allows_everything() {
        let off = Authorizer::default();
        assert!(off.allows(
            std::iter::empty(),
            &Principal::Anonymous,
            &Need::cluster(Operation::Alter)
        ));
        assert!(!acl_on().allows(
            std::iter::empty(),
            &Principal::Anonymous,
            &Need::cluster(Operation::Alter)
        ));
    }

    #[test]
    fn a_denial_carries_the_resource_types_code_and_names_only_the_request() {
        let denied = Need::topic(Operation::Write, "orders").denied(&user("mallory"));
        assert_eq!(denied.code, ErrorCode::TopicAuthorizationFailed);
        assert_eq!(
            denied.message,
            "User:mallory is not authorised to write topic `orders`"
        );
        let denied = Need::cluster(Operation::Alter).denied(&user("mallory"));
        assert_eq!(denied.code, ErrorCode::ClusterAuthorizationFailed);
        assert_eq!(
            Need::group(Operation::Read, "g").denied(&user("x")).code,
            ErrorCode::GroupAuthorizationFailed
        );
        assert_eq!(
            Need::plugin(Operation::Read, "p").denied(&user("x")).code,
            ErrorCode::PluginAuthorizationFailed
        );
    }

    fn certificate(common_name: &str, broker: bool) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        if broker {
            params.subject_alt_names.push(rcgen::SanType::URI(
                BROKER_IDENTITY_URI.try_into().expect("ia5 string"),
            ));
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn a_certificate_names_a_user_unless_it_carries_the_broker_identity() {
        assert_eq!(
            Principal::from_certificate(&certificate("alice", false)),
            Some(user("alice"))
        );
        assert_eq!(
            Principal::from_certificate(&certificate("quiver broker", true)),
            Some(Principal::Broker)
        );
        // A client naming itself like a broker is still a client.
        assert_eq!(
            Principal::from_certificate(&certificate("Broker", false)),
            Some(Principal::User("User:Broker".into()))
        );
        assert_eq!(Principal::from_certificate(b"not a certificate"), None);
    }
}
