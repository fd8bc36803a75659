//! Round trips for every request and response, and decoding of arbitrary bytes.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use quiver_wire::frame::{FRAME_LENGTH_BYTES, RequestFrame, parse_response};
use quiver_wire::message::*;

fn request_round_trip<R: Rpc + std::fmt::Debug + PartialEq>(req: &R) -> R {
    let frame = req.encode_frame();
    let declared = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    assert_eq!(declared, frame.len() - FRAME_LENGTH_BYTES);
    let parsed = RequestFrame::parse(BytesMut::from(&frame[FRAME_LENGTH_BYTES..])).expect("head");
    assert_eq!(parsed.api_key, R::API.code());
    R::decode_body(parsed.body).expect("decodes")
}

fn response_round_trip<R: ResponseBody>(resp: &R) -> R {
    let frame = resp.encode_frame();
    let body = parse_response(frame.slice(FRAME_LENGTH_BYTES..))
        .expect("frame")
        .expect("ok status");
    R::decode_body(body).expect("decodes")
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,30}"
}

proptest! {
    #[test]
    fn produce(topic in name(), partition: u32, acks in 0u8..3, timeout_ms: u32,
               batch in proptest::collection::vec(any::<u8>(), 0..200)) {
        let req = ProduceRequest { topic, partition, acks: Acks::from_code(acks).expect("0..3"),
                                   timeout_ms, batch: BytesMut::from(&batch[..]) };
        prop_assert_eq!(request_round_trip(&req), req.clone());
        // The zero-copy head plus the batch is the same frame as the copying encoder's.
        let mut joined = BytesMut::from(&ProduceRequest::encode_head(&req.topic, req.partition, req.acks, req.timeout_ms, req.batch.len())[..]);
        joined.extend_from_slice(&req.batch);
        prop_assert_eq!(joined.freeze(), req.encode_frame());
    }

    #[test]
    fn fetch(topic in name(), partition: u32, offset: u64, w: u32, min: u32, max: u32) {
        let req = FetchRequest { topic, partition, offset, max_wait_ms: w, min_bytes: min, max_bytes: max, plugin: None };
        prop_assert_eq!(request_round_trip(&req), req.clone());
        let with_plugin = FetchRequest {
            plugin: Some(quiver_wire::plugin::PluginCall {
                name: "only-eu".into(),
                params: vec![("field".into(), "region".into())],
            }),
            ..req
        };
        prop_assert_eq!(request_round_trip(&with_plugin), with_plugin);
    }

    #[test]
    fn fetch_response(hw: u64, ls: u64, le: u64, throttle: u32, batches in proptest::collection::vec(any::<u8>(), 0..300)) {
        let resp = FetchResponse { high_watermark: hw, log_start_offset: ls, log_end_offset: le, throttle_time_ms: throttle, batches: Bytes::from(batches) };
        prop_assert_eq!(response_round_trip(&resp), resp.clone());
        let head = FetchResponse::encode_head(quiver_wire::message::FETCH_THROTTLE_VERSION, hw, ls, le, throttle, resp.batches.len());
        let mut joined = BytesMut::from(&head[..]);
        joined.extend_from_slice(&resp.batches);
        prop_assert_eq!(joined.freeze(), resp.encode_frame());
        // Before version 2 the head has no throttle time: 4 bytes shorter.
        let old = FetchResponse::encode_head(1, hw, ls, le, throttle, resp.batches.len());
        prop_assert_eq!(old.len() + 4, head.len());
    }

    #[test]
    fn produce_response(base: u64, at: i64, ls: u64, throttle: u32) {
        let resp = ProduceResponse { base_offset: base, log_append_time: at, log_start_offset: ls, throttle_time_ms: throttle };
        prop_assert_eq!(response_round_trip(&resp), resp);
        prop_assert_eq!(resp.encode_frame_for(quiver_wire::message::PRODUCE_THROTTLE_VERSION), resp.encode_frame());
        prop_assert_eq!(resp.encode_frame_for(0).len() + 4, resp.encode_frame().len());
    }

    #[test]
    fn list_offsets(topic in name(), partition: u32, kind in 0u8..3, ts: i64, off: Option<u64>, ls: u64, le: u64) {
        let spec = match kind { 0 => OffsetSpec::Earliest, 1 => OffsetSpec::Latest, _ => OffsetSpec::Timestamp(ts) };
        let req = ListOffsetsRequest { topic, partition, spec };
        prop_assert_eq!(request_round_trip(&req), req);
        let resp = ListOffsetsResponse { offset: off, log_start_offset: ls, log_end_offset: le };
        prop_assert_eq!(response_round_trip(&resp), resp);
    }

    #[test]
    fn topics(name in name(), partitions: u32, rf: u16,
              configs in proptest::collection::vec((name(), name()), 0..5),
              wanted in proptest::option::of(proptest::collection::vec(name(), 0..4))) {
        let req = CreateTopicRequest { name: name.clone(), partitions, replication_factor: rf, configs: configs.clone() };
        prop_assert_eq!(request_round_trip(&req), req);
        let req = DeleteTopicRequest { name: name.clone() };
        prop_assert_eq!(request_round_trip(&req), req);
        let req = AlterTopicConfigsRequest { name: name.clone(), set: configs.clone(),
                                             delete: configs.iter().map(|(k, _)| k.clone()).collect() };
        prop_assert_eq!(request_round_trip(&req), req);
        let req = CreatePartitionsRequest { name: name.clone(), partitions };
        prop_assert_eq!(request_round_trip(&req), req);
        let req = quiver_wire::group::DeleteGroupRequest { group: name.clone() };
        prop_assert_eq!(request_round_trip(&req), req);
        let req = MetadataRequest { topics: wanted };
        prop_assert_eq!(request_round_trip(&req), req);
        let resp = MetadataResponse {
            controller: 1,
            brokers: vec![BrokerInfo { node_id: 1, host: "127.0.0.1".into(), port: 7420 }],
            topics: vec![TopicInfo { name, configs, partitions: vec![PartitionInfo {
                partition: 0, leader: 1, leader_epoch: 3, replicas: vec![1, 2], isr: vec![1],
                log_start_offset: 5, high_watermark: 9, log_end_offset: 10 }] }],
        };
        prop_assert_eq!(response_round_trip(&resp), resp);
    }

    /// Whatever a peer sends, decoding answers with an error rather than a panic or an
    /// allocation sized by the peer.
    #[test]
    fn arbitrary_bodies_never_panic(api: u16, version in 0u16..2, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&api.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&body);
        if let Ok(parsed) = RequestFrame::parse(frame) {
            let _ = Request::decode(parsed);
        }
        let body = Bytes::from(body);
        let _ = parse_response(body.clone());
        let _ = MetadataResponse::decode_body(body.clone());
        let _ = FetchResponse::decode_body(body.clone());
        let _ = ListOffsetsResponse::decode_body(body.clone());
        let _ = ProduceResponse::decode_body(body.clone());
        let _ = ApiVersionsResponse::decode_body(body);
    }
}

#[test]
fn hostile_array_count_is_refused_without_allocating() {
    // A metadata response claiming 4 billion brokers in a 10-byte body.
    let body = Bytes::from_static(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    assert!(MetadataResponse::decode_body(body).is_err());
}

#[test]
fn unknown_api_and_version_are_distinct_errors() {
    use quiver_wire::codec::DecodeError;
    let frame = |api: u16, v: u16| {
        let mut b = BytesMut::new();
        b.extend_from_slice(&api.to_be_bytes());
        b.extend_from_slice(&v.to_be_bytes());
        RequestFrame::parse(b).expect("head")
    };
    assert_eq!(
        Request::decode(frame(999, 0)).err(),
        Some(DecodeError::UnknownApi(999))
    );
    assert_eq!(
        Request::decode(frame(2, 7)).err(),
        Some(DecodeError::UnsupportedVersion { api: 2, version: 7 })
    );
}

#[test]
fn fetch_v0_bodies_still_decode() {
    use bytes::BufMut;
    use quiver_wire::codec::WriteExt;
    let mut body = BytesMut::new();
    body.put_string("orders");
    body.put_u32(2);
    body.put_u64(40);
    body.put_u32(100);
    body.put_u32(1);
    body.put_u32(1 << 20);
    let req = FetchRequest::decode_versioned(body.clone(), 0).expect("v0 decodes");
    assert_eq!((req.partition, req.offset, req.plugin), (2, 40, None));
    // The same body is a truncated v1 request.
    assert!(FetchRequest::decode_versioned(body, 1).is_err());
}
