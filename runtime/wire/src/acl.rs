//! Access control lists, Kafka's model: a rule names a principal, a resource (by
//! literal name or name prefix), an operation, and whether it allows or denies. The
//! broker decides with them when `authorization = "acl"`; the messages here create,
//! delete and list rules. The decision itself lives in the broker.
//!
//! Layouts as in [`crate::message`]: strings `[length:2][utf8]`, arrays
//! `[count:4][elements]`, enums one byte.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::api::ApiKey;
use crate::codec::{DecodeError, Reader, WriteExt};
use crate::message::{Empty, ResponseBody, Rpc};

/// Rules one create or delete request may carry.
pub const ACL_BINDINGS_PER_REQUEST_MAX: usize = 1_000;
/// Rules a cluster keeps, so the metadata every broker holds stays bounded.
pub const ACLS_MAX: usize = 100_000;
/// The longest principal or resource name in a rule.
pub const ACL_NAME_BYTES_MAX: usize = 512;
/// The principal every user matches in a rule.
pub const ANY_USER: &str = "User:*";

/// What a rule protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    /// The cluster as a whole (its name is `cluster`): creating topics, uploading
    /// plugins, changing ACLs, reading cluster status.
    Cluster,
    Plugin,
}

/// The name of the one cluster resource.
pub const CLUSTER_RESOURCE: &str = "cluster";

/// How a rule's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The resource's name equals the rule's, or the rule's is `*` (every resource).
    Literal,
    /// The resource's name starts with the rule's.
    Prefixed,
}

/// What a principal does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    IdempotentWrite,
    /// Every operation.
    All,
}

/// Whether a rule allows or denies. A deny wins over any allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Allow,
    Deny,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// `User:NAME` or `User:*`.
    pub principal: String,
    pub resource_type: ResourceType,
    pub pattern: PatternType,
    pub resource_name: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("principal `{0}` is not `User:NAME` or `User:*`")]
    Principal(String),
    #[error("resource name is empty")]
    EmptyName,
    #[error("{what} is {len} bytes, longer than {ACL_NAME_BYTES_MAX}")]
    TooLong { what: &'static str, len: usize },
    #[error("the cluster resource is named `{CLUSTER_RESOURCE}` and matched literally, not `{0}`")]
    ClusterName(String),
    #[error("operation `{operation}` does not apply to a {resource}")]
    Operation {
        operation: Operation,
        resource: ResourceType,
    },
}

impl AclBinding {
    /// Checks the rule's fields: a principal of the form `User:NAME`, a name within
    /// bounds, and an operation that applies to the resource.
    pub fn validate(&self) -> Result<(), AclError> {
        let Some(user) = self.principal.strip_prefix("User:") else {
            return Err(AclError::Principal(self.principal.clone()));
        };
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(AclError::Principal(self.principal.clone()));
        }
        if self.principal.len() > ACL_NAME_BYTES_MAX {
            return Err(AclError::TooLong {
                what: "principal",
                len: self.principal.len(),
            });
        }
        if self.resource_name.is_empty() {
            return Err(AclError::EmptyName);
        }
        if self.resource_name.len() > ACL_NAME_BYTES_MAX {
            return Err(AclError::TooLong {
                what: "resource name",
                len: self.resource_name.len(),
            });
        }
        if self.resource_type == ResourceType::Cluster
            && (self.resource_name != CLUSTER_RESOURCE || self.pattern != PatternType::Literal)
        {
            return Err(AclError::ClusterName(self.resource_name.clone()));
        }
        if !self.operation.applies_to(self.resource_type) {
            return Err(AclError::Operation {
                operation: self.operation,
                resource: self.resource_type,
            });
        }
        Ok(())
    }

    /// Whether this rule speaks of `resource_type`/`name` (its pattern matches).
    pub fn matches_resource(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    fn put(&self, buf: &mut BytesMut) {
        buf.put_string(&self.principal);
        buf.put_u8(self.resource_type.code());
        buf.put_u8(self.pattern.code());
        buf.put_string(&self.resource_name);
        buf.put_u8(self.operation.code());
        buf.put_u8(self.permission.code());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            principal: r.string("principal")?,
            resource_type: ResourceType::from_code(r.u8("resource_type")?)?,
            pattern: PatternType::from_code(r.u8("pattern")?)?,
            resource_name: r.string("resource_name")?,
            operation: Operation::from_code(r.u8("operation")?)?,
            permission: Permission::from_code(r.u8("permission")?)?,
        })
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pattern = match self.pattern {
            PatternType::Literal => "",
            PatternType::Prefixed => " (prefix)",
        };
        write!(
            f,
            "{} {} {} {} `{}`{pattern}",
            self.principal, self.permission, self.operation, self.resource_type, self.resource_name
        )
    }
}

/// One-byte codes and names of the ACL enums; the names are the CLI's.
macro_rules! coded_enum {
    ($ty:ident, $what:literal, { $( $variant:ident = $code:literal, $name:literal; )* }) => {
        impl $ty {
            /// Every value, in code order.
            pub const ALL: &'static [$ty] = &[ $( $ty::$variant, )* ];

            pub const fn code(self) -> u8 {
                match self { $( $ty::$variant => $code, )* }
            }

            pub fn from_code(code: u8) -> Result<Self, DecodeError> {
                match code {
                    $( $code => Ok($ty::$variant), )*
                    other => Err(DecodeError::InvalidValue { what: $what, value: i64::from(other) }),
                }
            }

            pub const fn name(self) -> &'static str {
                match self { $( $ty::$variant => $name, )* }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $( $name => Ok($ty::$variant), )*
                    other => Err(format!(
                        "unknown {} `{other}`: one of {}",
                        $what,
                        [$( $name ),*].join(", ")
                    )),
                }
            }
        }
    };
}

coded_enum!(ResourceType, "resource_type", {
    Topic = 0, "topic";
    Group = 1, "group";
    Cluster = 2, "cluster";
    Plugin = 3, "plugin";
});

coded_enum!(PatternType, "pattern", {
    Literal = 0, "literal";
    Prefixed = 1, "prefixed";
});

coded_enum!(Operation, "operation", {
    Read = 0, "read";
    Write = 1, "write";
    Create = 2, "create";
    Delete = 3, "delete";
    Alter = 4, "alter";
    Describe = 5, "describe";
    IdempotentWrite = 6, "idempotent-write";
    All = 7, "all";
});

coded_enum!(Permission, "permission", {
    Allow = 0, "allow";
    Deny = 1, "deny";
});

impl Operation {
    /// Whether a rule with this operation can speak of a `resource`: Kafka's table
    /// (idempotent writes are a cluster operation; plugins are read or administered).
    pub fn applies_to(self, resource: ResourceType) -> bool {
        use Operation::*;
        match resource {
            ResourceType::Topic => matches!(
                self,
                Read | Write | Create | Delete | Alter | Describe | All
            ),
            ResourceType::Group => matches!(self, Read | Delete | Describe | All),
            ResourceType::Cluster => {
                matches!(self, Create | Alter | Describe | IdempotentWrite | All)
            }
            ResourceType::Plugin => matches!(self, Read | Describe | All),
        }
    }

    /// Whether an allow rule for this operation grants `wanted`: `all` grants every
    /// operation, and (as in Kafka) read, write, delete or alter imply describe.
    pub fn grants(self, wanted: Operation) -> bool {
        self == wanted
            || self == Operation::All
            || (wanted == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
    }

    /// Whether a deny rule for this operation refuses `wanted`.
    pub fn refuses(self, wanted: Operation) -> bool {
        self == wanted || self == Operation::All
    }
}

/// Reads a body that is `[bindings:array<binding>]` and nothing else.
fn decode_bindings(body: &[u8]) -> Result<Vec<AclBinding>, DecodeError> {
    let mut r = Reader::new(body);
    let n = r.array_len("bindings", ACLS_MAX, 10)?;
    let bindings = (0..n)
        .map(|_| AclBinding::read(&mut r))
        .collect::<Result<_, _>>()?;
    r.finish()?;
    Ok(bindings)
}

fn put_bindings(buf: &mut BytesMut, bindings: &[AclBinding]) {
    buf.put_array_len(bindings.len());
    for b in bindings {
        b.put(buf);
    }
}

/// Adds rules: `[bindings:array<binding>]` where a binding is
/// `[principal:string][resource_type:1][pattern:1][resource_name:string][operation:1][permission:1]`.
/// Adding a rule that exists already changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclCreateRequest {
    pub bindings: Vec<AclBinding>,
}

impl Rpc for AclCreateRequest {
    const API: ApiKey = ApiKey::AclCreate;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        put_bindings(buf, &self.bindings);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Ok(Self {
            bindings: decode_bindings(&body)?,
        })
    }
}

/// Removes rules, each matched exactly (same layout as [`AclCreateRequest`]); answers
/// how many existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclDeleteRequest {
    pub bindings: Vec<AclBinding>,
}

/// `[removed:4]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclDeleteResponse {
    pub removed: u32,
}

impl ResponseBody for AclDeleteResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(self.removed);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let removed = r.u32("removed")?;
        r.finish()?;
        Ok(Self { removed })
    }
}

impl Rpc for AclDeleteRequest {
    const API: ApiKey = ApiKey::AclDelete;
    type Response = AclDeleteResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        put_bindings(buf, &self.bindings);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Ok(Self {
            bindings: decode_bindings(&body)?,
        })
    }
}

/// Lists rules, optionally only one principal's and only those about one resource
/// type (and name, matched exactly):
/// `[principal:string, empty for any][resource_type:1, 255 for any][resource_name:string, empty for any]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclDescribeRequest {
    pub principal: Option<String>,
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
}

const ANY_RESOURCE_TYPE: u8 = 255;

impl Rpc for AclDescribeRequest {
    const API: ApiKey = ApiKey::AclDescribe;
    type Response = AclDescribeResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(self.principal.as_deref().unwrap_or(""));
        buf.put_u8(
            self.resource_type
                .map_or(ANY_RESOURCE_TYPE, ResourceType::code),
        );
        buf.put_string(self.resource_name.as_deref().unwrap_or(""));
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let principal = r.string("principal")?;
        let resource_type = match r.u8("resource_type")? {
            ANY_RESOURCE_TYPE => None,
            code => Some(ResourceType::from_code(code)?),
        };
        let resource_name = r.string("resource_name")?;
        r.finish()?;
        Ok(Self {
            principal: (!principal.is_empty()).then_some(principal),
            resource_type,
            resource_name: (!resource_name.is_empty()).then_some(resource_name),
        })
    }
}

impl AclDescribeRequest {
    /// Whether `binding` is among the rules this request asks for.
    pub fn selects(&self, binding: &AclBinding) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|p| *p == binding.principal)
            && self
                .resource_type
                .is_none_or(|t| t == binding.resource_type)
            && self
                .resource_name
                .as_ref()
                .is_none_or(|n| *n == binding.resource_name)
    }
}

/// `[bindings:array<binding>]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclDescribeResponse {
    pub bindings: Vec<AclBinding>,
}

impl ResponseBody for AclDescribeResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        put_bindings(buf, &self.bindings);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        Ok(Self {
            bindings: decode_bindings(&body)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> AclBinding {
        AclBinding {
            principal: "User:alice".into(),
            resource_type: ResourceType::Topic,
            pattern: PatternType::Prefixed,
            resource_name: "orders-".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let create = AclCreateRequest {
            bindings: vec![binding()],
        };
        let mut buf = BytesMut::new();
        create.encode_body(&mut buf);
        assert_eq!(AclCreateRequest::decode_body(buf).expect("decodes"), create);

        let describe = AclDescribeRequest {
            principal: Some("User:bob".into()),
            resource_type: Some(ResourceType::Group),
            resource_name: None,
        };
        let mut buf = BytesMut::new();
        describe.encode_body(&mut buf);
        assert_eq!(
            AclDescribeRequest::decode_body(buf).expect("decodes"),
            describe
        );

        let answer = AclDescribeResponse {
            bindings: vec![binding(), binding()],
        };
        let mut buf = BytesMut::new();
        answer.encode_body(&mut buf);
        assert_eq!(
            AclDescribeResponse::decode_body(buf.freeze()).expect("decodes"),
            answer
        );
    }

    #[test]
    fn an_unknown_enum_code_is_refused_by_name() {
        let mut buf = BytesMut::new();
        AclCreateRequest {
            bindings: vec![binding()],
        }
        .encode_body(&mut buf);
        let last = buf.len() - 1;
        buf[last] = 9;
        assert_eq!(
            AclCreateRequest::decode_body(buf),
            Err(DecodeError::InvalidValue {
                what: "permission",
                value: 9
            })
        );
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert!(binding().validate().is_ok());
        let mut b = binding();
        b.principal = "alice".into();
        assert_eq!(b.validate(), Err(AclError::Principal("alice".into())));
        let mut b = binding();
        b.resource_type = ResourceType::Cluster;
        assert!(matches!(b.validate(), Err(AclError::ClusterName(_))));
        let mut b = binding();
        b.operation = Operation::IdempotentWrite;
        assert!(matches!(b.validate(), Err(AclError::Operation { .. })));
        let mut b = binding();
        b.resource_name.clear();
        assert_eq!(b.validate(), Err(AclError::EmptyName));
    }

    #[test]
    fn patterns_match_as_kafka_does() {
        let prefixed = binding();
        assert!(prefixed.matches_resource(ResourceType::Topic, "orders-eu"));
        assert!(!prefixed.matches_resource(ResourceType::Topic, "order"));
        assert!(!prefixed.matches_resource(ResourceType::Group, "orders-eu"));
        let mut literal = binding();
        literal.pattern = PatternType::Literal;
        assert!(!literal.matches_resource(ResourceType::Topic, "orders-eu"));
        assert!(literal.matches_resource(ResourceType::Topic, "orders-"));
        literal.resource_name = "*".into();
        assert!(literal.matches_resource(ResourceType::Topic, "anything"));
    }

    #[test]
    fn names_parse_back() {
        for op in Operation::ALL {
            assert_eq!(op.name().parse::<Operation>(), Ok(*op));
        }
        assert!("everything".parse::<Operation>().is_err());
        assert!(Operation::Write.grants(Operation::Describe));
        assert!(!Operation::Describe.grants(Operation::Write));
        assert!(Operation::All.refuses(Operation::Read));
        assert!(!Operation::Write.refuses(Operation::Describe));
    }
}
