//! Generates the gRPC code for quorate's peer and admin services from `proto/quorate.proto`.
//! `protoc` comes from the `protoc-bin-vendored` crate, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/quorate.proto");
    tonic_prost_build::configure().compile_protos(&["proto/quorate.proto"], &["proto"])?;
    Ok(())
}
