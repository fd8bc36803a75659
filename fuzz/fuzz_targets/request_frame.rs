//! A request as a hostile client sends it: whatever follows the length prefix. The
//! frame head and every request decoder must answer with an error, never panic or
//! allocate without bound.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use quiver_wire::frame::RequestFrame;
use quiver_wire::message::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = RequestFrame::parse(BytesMut::from(data)) {
        let _ = Request::decode(frame);
    }
});
