//! API keys and the versions this build speaks. A key is never reused once retired:
//! `api_keys_are_stable` pins them.

/// Which request a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiKey {
    Produce,
    Fetch,
    ListOffsets,
    Metadata,
    CreateTopic,
    DeleteTopic,
    ApiVersions,
    InitProducerId,
    OffsetCommit,
    OffsetFetch,
    GroupHeartbeat,
    ListGroups,
    DescribeGroup,
    PluginUpload,
    PluginList,
    PluginAttach,
    PluginDetach,
    ControllerRpc,
    ClusterStatus,
    ReplicaFetch,
    PluginModule,
    PluginDelete,
    AclCreate,
    AclDelete,
    AclDescribe,
    SaslAuthenticate,
    UserUpsert,
    UserDelete,
    UserList,
    QuotaSet,
    QuotaList,
    AlterTopicConfigs,
    CreatePartitions,
    DeleteGroup,
    JoinCa,
    JoinCluster,
}

impl ApiKey {
    pub const ALL: [ApiKey; 36] = [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::CreateTopic,
        ApiKey::DeleteTopic,
        ApiKey::ApiVersions,
        ApiKey::InitProducerId,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::GroupHeartbeat,
        ApiKey::ListGroups,
        ApiKey::DescribeGroup,
        ApiKey::PluginUpload,
        ApiKey::PluginList,
        ApiKey::PluginAttach,
        ApiKey::PluginDetach,
        ApiKey::ControllerRpc,
        ApiKey::ClusterStatus,
        ApiKey::ReplicaFetch,
        ApiKey::PluginModule,
        ApiKey::PluginDelete,
        ApiKey::AclCreate,
        ApiKey::AclDelete,
        ApiKey::AclDescribe,
        ApiKey::SaslAuthenticate,
        ApiKey::UserUpsert,
        ApiKey::UserDelete,
        ApiKey::UserList,
        ApiKey::QuotaSet,
        ApiKey::QuotaList,
        ApiKey::AlterTopicConfigs,
        ApiKey::CreatePartitions,
        ApiKey::DeleteGroup,
        ApiKey::JoinCa,
        ApiKey::JoinCluster,
    ];

    pub const fn code(self) -> u16 {
        match self {
            ApiKey::Produce => 1,
            ApiKey::Fetch => 2,
            ApiKey::ListOffsets => 3,
            ApiKey::Metadata => 4,
            ApiKey::CreateTopic => 5,
            ApiKey::DeleteTopic => 6,
            ApiKey::ApiVersions => 7,
            ApiKey::InitProducerId => 8,
            ApiKey::OffsetCommit => 9,
            ApiKey::OffsetFetch => 10,
            ApiKey::GroupHeartbeat => 11,
            ApiKey::ListGroups => 12,
            ApiKey::DescribeGroup => 13,
            ApiKey::PluginUpload => 14,
            ApiKey::PluginList => 15,
            ApiKey::PluginAttach => 16,
            ApiKey::PluginDetach => 17,
            ApiKey::ControllerRpc => 18,
            ApiKey::ClusterStatus => 19,
            ApiKey::ReplicaFetch => 20,
            ApiKey::PluginModule => 21,
            ApiKey::PluginDelete => 22,
            ApiKey::AclCreate => 23,
            ApiKey::AclDelete => 24,
            ApiKey::AclDescribe => 25,
            ApiKey::SaslAuthenticate => 26,
            ApiKey::UserUpsert => 27,
            ApiKey::UserDelete => 28,
            ApiKey::UserList => 29,
            ApiKey::QuotaSet => 30,
            ApiKey::QuotaList => 31,
            ApiKey::AlterTopicConfigs => 32,
            ApiKey::CreatePartitions => 33,
            ApiKey::DeleteGroup => 34,
            ApiKey::JoinCa => 35,
            ApiKey::JoinCluster => 36,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.code() == code)
    }

    /// Lowercase name for logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            ApiKey::Produce => "produce",
            ApiKey::Fetch => "fetch",
            ApiKey::ListOffsets => "list_offsets",
            ApiKey::Metadata => "metadata",
            ApiKey::CreateTopic => "create_topic",
            ApiKey::DeleteTopic => "delete_topic",
            ApiKey::ApiVersions => "api_versions",
            ApiKey::InitProducerId => "init_producer_id",
            ApiKey::OffsetCommit => "offset_commit",
            ApiKey::OffsetFetch => "offset_fetch",
            ApiKey::GroupHeartbeat => "group_heartbeat",
            ApiKey::ListGroups => "list_groups",
            ApiKey::DescribeGroup => "describe_group",
            ApiKey::PluginUpload => "plugin_upload",
            ApiKey::PluginList => "plugin_list",
            ApiKey::PluginAttach => "plugin_attach",
            ApiKey::PluginDetach => "plugin_detach",
            ApiKey::ControllerRpc => "controller_rpc",
            ApiKey::ClusterStatus => "cluster_status",
            ApiKey::ReplicaFetch => "replica_fetch",
            ApiKey::PluginModule => "plugin_module",
            ApiKey::PluginDelete => "plugin_delete",
            ApiKey::AclCreate => "acl_create",
            ApiKey::AclDelete => "acl_delete",
            ApiKey::AclDescribe => "acl_describe",
            ApiKey::SaslAuthenticate => "sasl_authenticate",
            ApiKey::UserUpsert => "user_upsert",
            ApiKey::UserDelete => "user_delete",
            ApiKey::UserList => "user_list",
            ApiKey::QuotaSet => "quota_set",
            ApiKey::QuotaList => "quota_list",
            ApiKey::AlterTopicConfigs => "alter_topic_configs",
            ApiKey::CreatePartitions => "create_partitions",
            ApiKey::DeleteGroup => "delete_group",
            ApiKey::JoinCa => "join_ca",
            ApiKey::JoinCluster => "join_cluster",
        }
    }

    /// The oldest and newest version of this API this build speaks.
    pub const fn versions(self) -> (u16, u16) {
        match self {
            // v1 adds the plugin a consumer asks for to the request; v2 answers carry
            // the time the client is throttled for (client quotas).
            ApiKey::Fetch => (0, 2),
            // v1 answers carry the time the client is throttled for.
            ApiKey::Produce => (0, 1),
            // v1 answers list the peers this broker cannot reach, and why.
            ApiKey::ClusterStatus => (0, 1),
            _ => (0, 0),
        }
    }

    pub const fn supports(self, version: u16) -> bool {
        let (min, max) = self.versions();
        version >= min && version <= max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_stable() {
        let pinned = [
            (1, "produce"),
            (2, "fetch"),
            (3, "list_offsets"),
            (4, "metadata"),
            (5, "create_topic"),
            (6, "delete_topic"),
            (7, "api_versions"),
            (8, "init_producer_id"),
            (9, "offset_commit"),
            (10, "offset_fetch"),
            (11, "group_heartbeat"),
            (12, "list_groups"),
            (13, "describe_group"),
            (14, "plugin_upload"),
            (15, "plugin_list"),
            (16, "plugin_attach"),
            (17, "plugin_detach"),
            (18, "controller_rpc"),
            (19, "cluster_status"),
            (20, "replica_fetch"),
            (21, "plugin_module"),
            (22, "plugin_delete"),
            (23, "acl_create"),
            (24, "acl_delete"),
            (25, "acl_describe"),
            (26, "sasl_authenticate"),
            (27, "user_upsert"),
            (28, "user_delete"),
            (29, "user_list"),
            (30, "quota_set"),
            (31, "quota_list"),
            (32, "alter_topic_configs"),
            (33, "create_partitions"),
            (34, "delete_group"),
            (35, "join_ca"),
            (36, "join_cluster"),
        ];
        assert_eq!(pinned.len(), ApiKey::ALL.len());
        for (key, (code, name)) in ApiKey::ALL.iter().zip(pinned) {
            assert_eq!((key.code(), key.name()), (code, name));
            assert_eq!(ApiKey::from_code(code), Some(*key));
        }
        assert_eq!(ApiKey::from_code(0), None);
    }
}
