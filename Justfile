# modcsi: `just demo` shows a whole volume lifecycle; `just test` is what CI runs.

set shell := ["bash", "-euo", "pipefail", "-c"]

backends_out := "backends/target/wasm32-wasip2/release"

# List the recipes
default:
    @just --list

# Build the backend components (node-local-cache and the hostile test backends) for wasm32-wasip2
build-backends:
    cargo build --release --target wasm32-wasip2 --manifest-path backends/Cargo.toml

# Build the host and the backends
build: build-backends
    cargo build -p modcsi

# Run the host with node-local-cache and drive create → publish → write → read-only read → unpublish → delete
demo: build
    scripts/demo.sh target/debug/modcsi {{backends_out}}/node_local_cache.wasm

# Formatting and lints, host and backends
check:
    cargo fmt --all -- --check
    cargo fmt --all --manifest-path backends/Cargo.toml -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --manifest-path backends/Cargo.toml --target wasm32-wasip2 --all-targets -- -D warnings

# Everything: lints, unit tests, backend conformance, CSI integration and runtime containment (needs root)
test: build-backends check unit-backends
    cargo nextest run --workspace --no-fail-fast

# The SDK's and the backends' own unit tests, natively (their logic, not their imports)
unit-backends:
    cargo test --manifest-path backends/Cargo.toml --lib -p modcsi-backend-sdk -p node-local-cache -p rds -p emma

# End to end on a single-node Kubernetes (kubelet, containerd, the CSI sidecars as pods), installed
# from deploy/ with the chart; starts and stops the cluster (scripts/e2e.sh; needs root)
e2e: build-backends
    cargo build --release -p modcsi --bin modcsi
    cargo build -p modcsi-tests --bin fake-routeros
    scripts/e2e.sh

# The node-local quota tests, on a kernel with ext4 and xfs project quotas (they are skipped, and
# say why, in `just test`)
test-quotas: build-backends
    cargo nextest run -p modcsi-tests --test integration --run-ignored only -E 'test(/project_quota/)'

# `modcsi backend check` over every backend in the repository (node-local-cache and the older
# contracts' components as they are, RDS against the fake RouterOS over real SSH, Emma against the
# fake Emma API over real HTTPS), each rule broken by a test component, the backends' own end-to-end
# suites, delivery through a real OCI registry, and the tutorial's new → build → check → serve from
# an empty directory
test-backends: build-backends unit-backends
    cargo build -p modcsi
    cargo nextest run -p modcsi-tests --test integration -E 'test(/^backend_check::/) | test(/^backend_scaffold::/) | test(/^backend_registry::/) | test(/^backend_conformance::/) | test(/^rds_backend::/) | test(/^emma_backend::/) | test(/^fake_emma::/)'

# A new backend crate in DIR (default: the current directory), taking the SDK from this checkout
new-backend NAME DIR=invocation_directory():
    cargo build -p modcsi
    target/debug/modcsi backend new {{NAME}} --dir {{DIR}} --sdk-git file://{{justfile_directory()}}

# The fake RouterOS behind a real sshd on 127.0.0.1:2222, for trying the RDS backend by hand
fake-rds:
    cargo build -p modcsi-tests --bin fake-routeros
    scripts/fake-rds.sh target/debug/fake-routeros

# The fake Emma cloud API over HTTPS on 127.0.0.1:8443 (root: disks are loop devices), for trying the Emma backend by hand
fake-emma:
    cargo build -p modcsi-tests --bin fake-emma
    mkdir -p /tmp/fake-emma
    target/debug/fake-emma --listen 127.0.0.1:8443 --state /tmp/fake-emma --by-id /tmp/fake-emma/by-id

# Lifecycle throughput, per-call latency and driver CPU per lifecycle (a `modcsi serve` process), block-volume lifecycles on a loop device, RDS and Emma through their fakes, HTTPS from a component vs a native client, backend-call overhead, node-local cleanup at scale (API requests per volume), `modcsi audit` of 1,000 PVs against 1,000 backend volumes (wall time, API requests, peak RSS; `lifecycle-bench audit` alone)
bench: build-backends
    cargo build --release -p modcsi --bin modcsi
    cargo build --release -p modcsi-tests --bin fake-routeros
    cargo run --release -p modcsi-tests --bin lifecycle-bench
