#!/usr/bin/env bash
# Everything a single-node Kubernetes v1.20.2 needs, built once from Debian's `kubernetes` source
# package with kube-apiserver's recipe (scripts/lib/kube-source.sh) and cached in
# $MODCSI_KUBE_CACHE (by default /var/cache/modcsi). Prints the directory holding:
#
#   kube-apiserver           a link to ../kube-apiserver-v1.20.2 (the tests' one, which
#                            scripts/kube-apiserver.sh builds alone)
#   kubelet, kube-controller-manager, kube-scheduler
#   kubectl                  Debian's kubernetes-client, unpacked, never installed (an image may
#                            ship its own /usr/bin/kubectl)
#   pause                    static, from the source's build/pause/linux/pause.c
#
# From nothing all of it comes out of one extracted source and one Go cache (~10 minutes on 2
# busy cores); afterwards it prints the directory at once.
set -euo pipefail
# shellcheck source=lib/kube-source.sh
. "$(dirname "$0")/lib/kube-source.sh"

DIR="$KUBE_CACHE/kube-$KUBE_VERSION"
APISERVER="$KUBE_CACHE/kube-apiserver-$KUBE_VERSION"

kube_build \
    "kube-apiserver=$APISERVER" \
    "kubelet=$DIR/kubelet" \
    "kube-controller-manager=$DIR/kube-controller-manager" \
    "kube-scheduler=$DIR/kube-scheduler" \
    "pause=$DIR/pause"
ln -sfn "../kube-apiserver-$KUBE_VERSION" "$DIR/kube-apiserver"

if [ ! -x "$DIR/kubectl" ]; then
    kube_log "unpacking kubectl from Debian's kubernetes-client"
    command -v dpkg-deb >/dev/null || kube_apt_install dpkg
    apt-cache show kubernetes-client >/dev/null 2>&1 || kube_apt_update
    tmp=$(mktemp -d "$KUBE_CACHE/kubectl.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -q kubernetes-client >&2)
    dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/x"
    "$tmp/x/usr/bin/kubectl" version --client --short 2>/dev/null | grep -q "$KUBE_VERSION" \
        || { kube_log "kubernetes-client is not kubectl $KUBE_VERSION"; exit 1; }
    mv "$tmp/x/usr/bin/kubectl" "$DIR/kubectl"
fi
echo "$DIR"
