//! Compiles proto/csi.proto with protox (a pure-Rust protobuf compiler), so building needs no
//! `protoc` and no network; and records the locked wasmtime version, which keys the cache of
//! precompiled components; and packs the binary's relocations and orders its code.
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

    // The binary's ~80,000 relative relocations packed (DT_RELR, glibc 2.36 and later, as the
    // image's Debian 12 has) instead of 24-byte RELA entries the loader reads at every start:
    // 1.8 MB less to map, and 4 MiB less resident in a serving process (measured standalone).
    let target = |key| std::env::var(key).unwrap_or_default();
    let linux_gnu =
        target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ENV") == "gnu";
    if linux_gnu {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }

    // A release binary starts .text with the functions a serving process runs once it serves,
    // in the order code-order.txt lists them (scripts/code-order.sh writes it). They are 3 MiB
    // of the 33: together, the code the calls map back after start-up's is released
    // (node::code_pages) was 6.4 MiB, where scattered it filled 16 MiB in 64 KiB neighbourhoods.
    // rust-lld, x86_64-unknown-linux-gnu's default linker, reads the list and skips the names
    // it does not find (a dependency updated since the list was written).
    let order = format!("{}/code-order.txt", env!("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed={order}");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if linux_gnu && target("CARGO_CFG_TARGET_ARCH") == "x86_64" && release {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    Ok(())
}
