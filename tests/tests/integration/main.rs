//! modcsi's integration tests, one binary: each module is a suite (`cargo nextest run -E
//! 'test(/^csi_rules::/)'` runs one). One binary links wasmtime, tonic and the host once instead
//! of once per suite, which keeps a clean build's time and disk in bounds.

mod any_grpc_client;
mod audit;
mod backend_check;
mod backend_conformance;
mod backend_registry;
mod backend_scaffold;
mod controller_forwarding;
mod csi_cli;
mod csi_lifecycle;
mod csi_rules;
mod e2e;
mod emma_backend;
mod fake_emma;
mod fencing;
mod kube_fencing;
mod kube_store;
mod lifecycle;
mod metrics;
mod node_block;
mod node_hung_mount;
mod node_local_cleanup;
mod node_local_size;
mod node_paths;
mod rds_backend;
mod runtime_containment;
mod serve_socket;
mod ssh_capability;
mod state_store;
