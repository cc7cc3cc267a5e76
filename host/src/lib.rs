//! modcsi: a CSI driver host that runs storage backends as WebAssembly components.
//! See ARCHITECTURE.md for the map of the layers.

pub mod audit;
pub mod author;
pub mod authority;
pub mod cleanup;
pub mod client;
pub mod csi;
pub mod fencing;
pub mod kube;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod scrape;
pub mod serve;
pub mod state;
pub mod volume;

/// The CSI v1.12 messages and services, generated from proto/csi.proto.
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}
