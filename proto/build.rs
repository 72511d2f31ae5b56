//! Generates the wire types from `proto/ringchat/v1/*.proto` with protox, so no system `protoc` is
//! needed, and their canonical protobuf JSON mapping (serde) with pbjson-build from the same
//! descriptors.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ringchat/v1/ringchat.proto",
        "proto/ringchat/v1/status.proto",
        "proto/ringchat/v1/node.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let encoded = descriptors.encode_to_vec();
    // The messages as before, plus the gRPC service stubs (tonic) of `status.proto`.
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    tonic_prost_build::configure().compile_fds_with_config(descriptors, config)?;
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .build(&[".ringchat"])?;
    Ok(())
}
