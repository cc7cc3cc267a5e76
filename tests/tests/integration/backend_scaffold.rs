//! docs/backend-authors.md, followed from an empty directory outside the repository:
//! `modcsi backend new` → `cargo build --release` → `modcsi backend check` → `modcsi serve
//! --backend` with the unmodified binary → a volume created, published, written, unpublished
//! and deleted. The new crate takes the SDK by git from this repository's committed HEAD
//! (`--sdk-git file://…`), as an author takes it from the project's repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use modcsi_tests::process::{ServeProcess, modcsi_binary};
use modcsi_tests::requests;

fn run(dir: &Path, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let out = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", program.as_ref()));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{:?} {args:?} failed:\n{stdout}\n{stderr}",
        program.as_ref()
    );
    stdout
}

#[tokio::test]
async fn a_new_backend_builds_passes_the_checker_and_serves_volumes() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path();
    let modcsi = modcsi_binary();
    let sdk = format!("file://{}", repo.display());
    run(
        dir,
        &modcsi,
        &["backend", "new", "tiny-store", "--sdk-git", &sdk],
    );
    let krate = dir.join("tiny-store");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("path ="),
        "no path into the repository:\n{manifest}"
    );

    // Compiled dependencies are kept between runs; the crate itself is built afresh.
    let target = repo.join("target/scaffold");
    let out = Command::new("cargo")
        .args(["build", "--release"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&krate)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the new crate builds:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/tiny_store.wasm");
    let lines = std::fs::read_to_string(krate.join("src/lib.rs"))
        .unwrap()
        .lines()
        .count();
    println!("the backend is {lines} lines");

    let report = run(dir, &modcsi, &["backend", "check", wasm.to_str().unwrap()]);
    assert!(report.contains(", 0 failed,"), "{report}");

    let mut host = ServeProcess::serve(
        &modcsi,
        &wasm,
        dir,
        &[
            "--driver-name",
            "tiny-store.csi.example.com",
            "--node-id",
            "n1",
        ],
    )
    .await;
    let endpoint = format!("unix://{}/csi.sock", dir.canonicalize().unwrap().display());
    let info = run(dir, &modcsi, &["csi", "--endpoint", &endpoint, "info"]);
    assert!(info.contains("manifest.backend=tiny-store"), "{info}");
    let created = run(
        dir,
        &modcsi,
        &[
            "csi",
            "--endpoint",
            &endpoint,
            "create",
            "pvc-1",
            "--size",
            "1Mi",
        ],
    );
    let id = created
        .lines()
        .find_map(|l| l.strip_prefix("volume_id="))
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    assert!(id.starts_with("tiny-store-"), "{id}");

    // The same request again (1 MiB, single-node writer) answers the volume, its context too.
    let volume = host
        .client
        .controller
        .create_volume(requests::create("pvc-1"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(volume.volume_id, id);
    let target = host.targets().join("pod-1");
    let target = target.to_str().unwrap();
    (host.client.node)
        .node_publish_volume(requests::publish(&volume, target, false))
        .await
        .unwrap();
    std::fs::write(Path::new(target).join("hello"), "from tiny-store").unwrap();
    (host.client.node)
        .node_unpublish_volume(requests::unpublish(&id, target))
        .await
        .unwrap();
    run(
        dir,
        &modcsi,
        &["csi", "--endpoint", &endpoint, "delete", &id],
    );
    host.kill();
}
