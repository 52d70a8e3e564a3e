//! Compiles the protobuf definitions with a vendored `protoc`, so a build
//! needs nothing installed on the machine.

fn main() -> std::io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(std::io::Error::other)?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Batches stay `Bytes` end to end: decoding a message slices its buffer
    // instead of copying each entry.
    config.bytes(["."]);
    // Every service encodes through Strata's codec (src/codec.rs), which
    // reserves a message's whole length before writing it.
    tonic_prost_build::configure().codec_path("crate::codec::StrataCodec").compile_with_config(
        config,
        &["raft.proto", "api.proto"],
        &["."],
    )
}
