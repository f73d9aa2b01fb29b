//! Compiles `proto/godel/**.proto` with protox (no `protoc`), generates prost messages,
//! tonic clients and servers (behind the `client` / `server` features), proto3 JSON
//! serde impls with pbjson, and writes the encoded descriptor set for reflection.

use std::path::PathBuf;

use prost::Message;

const PROTO_DIR: &str = "../../proto";

const FILES: [&str; 6] = [
    "godel/common/v1/common.proto",
    "godel/scheduler/v1/scheduler.proto",
    "godel/orchestrator/v1/orchestrator.proto",
    "godel/auth/v1/auth.proto",
    "godel/audit/v1/audit.proto",
    "godel/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(FILES, [PROTO_DIR])?;
    let encoded = fds.encode_to_vec();
    std::fs::write(out_dir.join("godel_descriptor.bin"), &encoded)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .client_mod_attribute(".", r#"#[cfg(feature = "client")]"#)
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        // Well-known types come from pbjson-types, which also gives them the proto3
        // JSON forms (RFC 3339 timestamps, "1.5s" durations).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .extern_path(".google.protobuf", "::pbjson_types")
        // Readers skip fields added by newer writers, so adding a field is compatible.
        .ignore_unknown_fields()
        .build(&[".godel"])?;

    Ok(())
}
