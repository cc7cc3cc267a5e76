//! Backends delivered by OCI reference, against a real registry on loopback: `modcsi backend
//! push` writes the Wasm artifact layout and answers a reference pinned by digest; `serve`,
//! `check` and `inspect` take the tag or the pinned reference; a component tampered with in
//! the registry is refused and nothing of it is cached; a pinned reference pulled once starts
//! with the registry gone.

use std::path::Path;

use modcsi_tests::process::{ServeProcess, modcsi_binary, run_modcsi};
use modcsi_tests::registry::TestRegistry;
use modcsi_tests::{NODE_LOCAL_CACHE, component, requests};
use sha2::{Digest, Sha256};

fn modcsi(args: &[&str]) -> (bool, String, String) {
    run_modcsi(args, None)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[tokio::test]
async fn a_pushed_backend_is_served_by_reference_verified_and_cached_by_digest() {
    let mut registry = TestRegistry::start();
    let wasm = component(NODE_LOCAL_CACHE);
    let tag = format!("oci://{}/backends/nlc:0.1", registry.address);
    let (ok, pinned, stderr) = modcsi(&[
        "backend",
        "push",
        wasm.to_str().unwrap(),
        &tag,
        "--insecure-registry",
        &registry.address,
    ]);
    assert!(ok, "{stderr}");
    let pinned = pinned.trim().to_owned();
    assert!(
        pinned.starts_with(&format!("oci://{}/backends/nlc@sha256:", registry.address)),
        "{pinned}"
    );

    // By tag, into a cache of its own: the same component, by its digest.
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let (ok, report, stderr) = modcsi(&[
        "backend",
        "check",
        &tag,
        "--insecure-registry",
        &registry.address,
        "--cache-dir",
        cache_dir,
    ]);
    assert!(ok, "{report}\n{stderr}");
    let digest = sha256(&std::fs::read(&wasm).unwrap());
    let cached = cache
        .path()
        .join("oci")
        .join(format!("{}.wasm", digest.replace(':', "-")));
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(&wasm).unwrap()
    );

    // Served by the pinned reference: a volume is made.
    let root = tempfile::tempdir().unwrap();
    let host = ServeProcess::serve(
        &modcsi_binary(),
        Path::new(&pinned),
        root.path(),
        &["--node-id", "n1", "--insecure-registry", &registry.address],
    )
    .await;
    let created = (host.client.controller.clone())
        .create_volume(requests::create("pvc-oci"))
        .await
        .unwrap();
    assert!(
        created
            .into_inner()
            .volume
            .unwrap()
            .volume_id
            .starts_with("nlc-")
    );
    drop(host);

    // Tampered with in the registry: refused, and nothing of it is kept.
    let blob = registry.blob(&digest);
    let original = std::fs::read(&blob).unwrap();
    let mut tampered = original.clone();
    tampered[100] ^= 0xff;
    std::fs::write(&blob, &tampered).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run_modcsi(
        &[
            "backend",
            "inspect",
            &tag,
            "--insecure-registry",
            &registry.address,
        ],
        Some(fresh.path()),
    );
    assert!(!ok, "a tampered component is refused");
    assert!(
        stderr.contains(&digest),
        "the refusal names the digest: {stderr}"
    );
    let kept =
        std::fs::read_dir(fresh.path().join("modcsi/oci")).map_or(0, |entries| entries.count());
    assert_eq!(kept, 0, "nothing of it is cached");
    std::fs::write(&blob, &original).unwrap();

    // Pinned and pulled once: it starts with the registry gone.
    registry.stop();
    let (ok, report, stderr) = modcsi(&["backend", "check", &pinned, "--cache-dir", cache_dir]);
    assert!(ok, "{report}\n{stderr}");
    let (ok, _, stderr) = modcsi(&["backend", "check", &tag, "--cache-dir", cache_dir]);
    assert!(!ok, "a tag needs the registry: {stderr}");
}
