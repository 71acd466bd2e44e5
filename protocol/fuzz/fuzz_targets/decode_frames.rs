//! Every decoder in the protocol crate, fed arbitrary bytes: none may panic,
//! and none may return a frame above its limit.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rallypoint_protocol::media_streams::StreamFrames;
use rallypoint_protocol::{
    decode_client_frame, decode_server_frame, length_prefixed, limits, telemetry, v1,
};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(frame) = decode_client_frame(bytes.clone()) {
        if let Some(v1::client_frame::Kind::Telemetry(report)) = frame.kind {
            if let Some(v1::telemetry_report::Kind::Election(election)) = report.kind {
                let _ = telemetry::validate(&election);
            }
        }
    }
    let _ = decode_server_frame(bytes);

    let mut decoder = length_prefixed::Decoder::new(limits::MAX_CONTROL_FRAME);
    for chunk in data.chunks(7) {
        decoder.push(chunk);
        while let Ok(Some(frame)) = decoder.next_frame() {
            assert!(frame.len() <= limits::MAX_CONTROL_FRAME);
        }
    }

    let mut stream = StreamFrames::new();
    let mut broken = false;
    for chunk in data.chunks(5) {
        if stream.push(chunk).is_err() {
            broken = true;
            break;
        }
        while let Ok(Some(frame)) = stream.next_frame() {
            assert!(frame.len() <= limits::MAX_FRAME);
        }
    }
    if !broken && let Ok(Some(frame)) = stream.finish() {
        assert!(frame.len() <= limits::MAX_FRAME);
    }
});
