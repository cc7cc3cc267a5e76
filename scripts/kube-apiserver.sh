#!/usr/bin/env bash
# Builds kube-apiserver v1.20.2 from Debian bookworm's `kubernetes` source package (offline: only
# the machine's Debian archive and PyPI are needed) and caches the binary outside the checkout
# ($MODCSI_KUBE_CACHE, by default /var/cache/modcsi). Prints the binary's path. Installs
# etcd-server, which the tests start beside it. The recipe is scripts/lib/kube-source.sh, shared
# with scripts/kube-binaries.sh (the rest of a cluster).
#
# Why this version: it is the newest Kubernetes whose full source a Debian archive carries, and the
# objects the tests use (Nodes, PVs, PVCs, ConfigMaps, Events, storage.k8s.io/v1 VolumeAttachments
# and CSINodes) have not changed since.
set -euo pipefail
# shellcheck source=lib/kube-source.sh
. "$(dirname "$0")/lib/kube-source.sh"

BIN="$KUBE_CACHE/kube-apiserver-$KUBE_VERSION"

command -v etcd >/dev/null || kube_apt_install etcd-server
# Built once (about 5 minutes on 2 cores), and again when the recipe changed.
kube_build "kube-apiserver=$BIN"
echo "$BIN"
