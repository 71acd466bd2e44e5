//! Compiles the checked-in `.proto` files with protox (a pure-Rust protobuf
//! compiler), so building rallypoint never needs `protoc` on the machine.

use std::path::Path;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "rallypoint/v1/wire.proto",
    "rallypoint/v1/room.proto",
    "rallypoint/v1/telemetry.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(PROTO_ROOT).join(proto).display()
        );
    }
    let descriptors = protox::compile(PROTOS, [PROTO_ROOT])?;
    prost_build::Config::new()
        // Media payloads are shared between many receivers: `Bytes` makes decoding
        // zero-copy and fan-out a reference-count bump.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
