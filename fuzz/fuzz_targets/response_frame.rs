//! A response as a hostile or broken broker sends it, read by the SDK: the status head
//! and then every response body decoder (the first byte picks which), as the SDK
//! decodes them after a request of that API.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quiver_wire::frame::parse_response;
use quiver_wire::message::ResponseBody;
use quiver_wire::{acl, cluster, group, message, plugin, quota, sasl};

fn decode_as<T: ResponseBody>(body: Bytes) {
    let _ = T::decode_body(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let body = match parse_response(Bytes::copy_from_slice(rest)) {
        Ok(Ok(body)) => body,
        _ => return,
    };
    match which % 21 {
        0 => decode_as::<message::ProduceResponse>(body),
        1 => decode_as::<message::FetchResponse>(body),
        2 => decode_as::<message::ListOffsetsResponse>(body),
        3 => decode_as::<message::MetadataResponse>(body),
        4 => decode_as::<message::ApiVersionsResponse>(body),
        5 => decode_as::<message::InitProducerIdResponse>(body),
        6 => decode_as::<group::OffsetFetchResponse>(body),
        7 => decode_as::<group::GroupHeartbeatResponse>(body),
        8 => decode_as::<group::ListGroupsResponse>(body),
        9 => decode_as::<group::DescribeGroupResponse>(body),
        10 => decode_as::<plugin::PluginInfo>(body),
        11 => decode_as::<plugin::PluginListResponse>(body),
        12 => decode_as::<plugin::PluginModuleResponse>(body),
        13 => decode_as::<cluster::ClusterStatusResponse>(body),
        14 => decode_as::<cluster::ControllerRpcResponse>(body),
        15 => decode_as::<cluster::ReplicaFetchResponse>(body),
        16 => decode_as::<acl::AclDeleteResponse>(body),
        17 => decode_as::<acl::AclDescribeResponse>(body),
        18 => decode_as::<sasl::SaslAuthenticateResponse>(body),
        19 => decode_as::<sasl::UserListResponse>(body),
        _ => decode_as::<quota::QuotaListResponse>(body),
    }
});
