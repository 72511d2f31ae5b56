//! Generates the wire types from `proto/ringchat/v1/*.proto` with protox, so no system `protoc` is
//! needed, and their canonical protobuf JSON mapping (serde) with pbjson-build from the same
//! descriptors.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/ringchat/v1/ringchat.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let encoded = descriptors.encode_to_vec();
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .build(&[".ringchat"])?;
    Ok(())
}
