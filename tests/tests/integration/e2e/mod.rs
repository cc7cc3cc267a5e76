//! End to end on a real single-node Kubernetes (`just e2e`: kubelet, containerd, the real
//! provisioner and attacher as pods), installed from deploy/ as an operator would. Ignored in
//! `just test`, which has no cluster.

mod cost;
mod emma;
mod node_local_cache;
mod rds;
