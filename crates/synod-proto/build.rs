//! Compiles the etcd API's protobuf files. protoc comes from the protoc-bin-vendored crate, so
//! building needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // Nothing else runs in this build script, so setting the variable races with nothing.
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-changed=proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out_dir.join("descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .build_server(true)
        .build_client(true)
        // Keys and values as `bytes::Bytes`: the server hands them to the store and back
        // without copying.
        .bytes(".")
        .compile_protos(
            &[
                "proto/rpc.proto",
                "proto/kv.proto",
                "proto/auth.proto",
                "proto/v3lock.proto",
                "proto/v3election.proto",
            ],
            &["proto"],
        )?;
    // Serde for every message, in protobuf's JSON mapping with the proto field names, as
    // etcd's gRPC gateway speaks it (bytes as base64, 64-bit integers as strings).
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".etcdserverpb",
            ".mvccpb",
            ".authpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
