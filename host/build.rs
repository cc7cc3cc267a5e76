//! Compiles proto/csi.proto with protox (a pure-Rust protobuf compiler), so building needs no
//! `protoc` and no network; and records the locked wasmtime version, which keys the cache of
//! precompiled components.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let proto_dir = format!("{root}/proto");
    println!("cargo:rerun-if-changed={proto_dir}/csi.proto");
    let descriptors = protox::compile([format!("{proto_dir}/csi.proto")], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed={root}/Cargo.lock");
    let lock = std::fs::read_to_string(format!("{root}/Cargo.lock"))?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .ok_or("Cargo.lock has no wasmtime package")?;
    println!("cargo:rustc-env=MODCSI_WASMTIME_VERSION={version}");
    Ok(())
}
