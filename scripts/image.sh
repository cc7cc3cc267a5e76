#!/usr/bin/env bash
# Builds the cluster's OCI images without a Docker engine (Debian's umoci and skopeo) and prints
# the directory that holds them: one OCI archive per image (<name>.tar, gzip layers, the image's
# name in org.opencontainers.image.ref.name), which `ctr -n k8s.io images import` (containerd 1.6
# names the image from it), `podman load` and `docker load` (Docker 25 on) take.
#
#   scripts/image.sh [IMAGE...]   build IMAGEs (default: modcsi and every pod tool below)
#   scripts/image.sh check [DIR]  import every archive in DIR (default: the output directory) into a
#                                 scratch containerd (Debian's, started with its own root and state
#                                 directories and stopped again) and list what it holds
#
# Images:
#  - modcsi.local/modcsi:<crate version>: target/release/modcsi (built under nice only when missing;
#    debug info stripped, symbols kept), the shared libraries it links (glibc), the tools the node
#    path runs (host/src/node: blkid, mkfs.ext4, mkfs.xfs, xfs_growfs; mounts, NVMe/TCP and quotas
#    are syscalls) with their libraries, taken from Debian's .debs (apt-get download +
#    dpkg-deb -x, then only the files named and the libraries they need), and the in-repo backends
#    (backends/target/wasm32-wasip2/release/{node_local_cache,rds,emma}.wasm, whichever exist; built
#    with `just build-backends` when none does) under /opt/modcsi/backends/. Entrypoint
#    /usr/local/bin/modcsi. The built rootfs is checked with chroot before it is packed.
#  - modcsi.local/<tool>:<version>, one per Go tool the cluster runs as a pod, as
#    scripts/go-tools.sh builds them (the sidecars, snapshot-controller, and the stand-ins
#    modcsi-registrar and modcsi-livenessprobe, the chart's registrar and liveness probe): the
#    static binary as /<tool> (its entrypoint), /etc/passwd, /etc/group and /tmp.
#
# Another backend needs no new image: the chart can mount a directory of .wasm files over
# /opt/modcsi/backends (a volume, or an init container that copies the component into an emptyDir)
# and point --backend at it.
#
# Everything is cached under $MODCSI_KUBE_CACHE (default /var/cache/modcsi): Debian packages in
# debs/, archives in images/ with a key of their inputs beside each (<name>.key), so a second run
# with the same inputs packs nothing. MODCSI_IMAGE_TAG overrides the driver image's tag.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=SCRIPTDIR/../tools/versions.env
source "$ROOT/tools/versions.env"
CACHE="${MODCSI_KUBE_CACHE:-/var/cache/modcsi}"
OUT="$CACHE/images"
DEBS="$CACHE/debs"
ARCH="$(dpkg --print-architecture)"          # amd64
MULTIARCH="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
SELF_KEY="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
log() { echo "image.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (chroot, file ownership in the layers)"

apt_updated=
apt_install() {
    local missing=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    [ -n "$apt_updated" ] || { apt-get update -q >&2; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# ---------------------------------------------------------------------------------------------
# Debian packages: a package list's library closure, downloaded once into $DEBS and extracted.

# deb_closure PKG...: the packages plus every library package (lib*) they depend on, recursively.
# (Only libraries: the tools' own scripts and maintainer dependencies, debconf, perl, never enter
# the image; the files copied out are chosen by name and by their ELF NEEDED entries.)
deb_closure() {
    local seen=" " level=("$@") next p
    while [ ${#level[@]} -gt 0 ]; do
        next=()
        for p in "${level[@]}"; do
            case "$seen" in *" $p "*) continue ;; esac
            seen+="$p "
        done
        mapfile -t next < <(apt-cache depends --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances "${level[@]}" |
            awk '/^  (Pre)?Depends: [^<]/{print $2}' | grep '^lib' | sort -u)
        level=()
        for p in "${next[@]}"; do case "$seen" in *" $p "*) ;; *) level+=("$p") ;; esac; done
    done
    echo "$seen" # read -r -a splits it
}

# stage_debs DIR PKG...: extracts the closure of PKGs into DIR.
stage_debs() {
    local dir="$1" pkgs name files=()
    shift
    if ! apt-cache show --no-all-versions "$1" >/dev/null 2>&1; then
        apt-get update -q >&2
        apt_updated=1
    fi
    read -r -a pkgs <<<"$(deb_closure "$@")"
    mkdir -p "$DEBS" "$dir"
    local versions
    versions="$(apt-cache show --no-all-versions "${pkgs[@]}" | awk '/^Package:/{p=$2} /^Version:/{print p, $2}')"
    while read -r name ver; do
        local f
        f="$(compgen -G "$DEBS/${name}_${ver//:/%3a}_*.deb" | head -1 || true)"
        if [ -z "$f" ]; then
            log "downloading $name $ver"
            (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$name=$ver" >&2)
            f="$(compgen -G "$DEBS/${name}_${ver//:/%3a}_*.deb" | head -1)"
        fi
        files+=("$f")
    done <<<"$versions"
    for f in "${files[@]}"; do dpkg-deb -x "$f" "$dir"; done
}

# A usr-merged skeleton: /bin, /sbin, /lib, /lib64 are links into /usr.
skeleton() {
    local r="$1"
    mkdir -p "$r"/usr/{bin,sbin,lib/"$MULTIARCH",lib64} "$r"/etc "$r"/tmp "$r"/dev "$r"/proc "$r"/sys "$r"/run
    chmod 1777 "$r/tmp"
    ln -sfn usr/bin "$r/bin"
    ln -sfn usr/sbin "$r/sbin"
    ln -sfn usr/lib "$r/lib"
    ln -sfn usr/lib64 "$r/lib64"
    ln -sfn ../proc/self/mounts "$r/etc/mtab" # mkfs.ext4 asks it whether the device is mounted
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$r/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
}

# copy_elf_deps ROOTFS STAGE FILE...: copies the shared libraries FILEs need (their ELF NEEDED
# entries, recursively) from STAGE into ROOTFS/usr/lib/<multiarch>, and the dynamic loader.
copy_elf_deps() {
    local r="$1" stage="$2" f lib found dir
    shift 2
    local todo=("$@") seen=" "
    while [ ${#todo[@]} -gt 0 ]; do
        f="${todo[0]}"
        todo=("${todo[@]:1}")
        while read -r lib; do
            case "$seen" in *" $lib "*) continue ;; esac
            seen+="$lib "
            found=
            for dir in "$stage/lib/$MULTIARCH" "$stage/usr/lib/$MULTIARCH" "$stage/lib" "$stage/usr/lib"; do
                if [ -e "$dir/$lib" ]; then found="$dir/$lib"; break; fi
            done
            [ -n "$found" ] || die "no $lib (needed by ${f#"$r"}) in the Debian packages staged"
            cp -L "$found" "$r/usr/lib/$MULTIARCH/$lib"
            todo+=("$r/usr/lib/$MULTIARCH/$lib")
        done < <(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    done
    # The loader, where the binaries' PT_INTERP names it (/lib64/ld-linux-x86-64.so.2).
    local interp
    interp="$(readelf -l "$1" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
    if [ -n "$interp" ]; then
        for dir in "$stage/lib/$MULTIARCH" "$stage/usr/lib/$MULTIARCH"; do
            [ -e "$dir/$(basename "$interp")" ] && found="$dir/$(basename "$interp")" && break
        done
        cp -L "$found" "$r/usr/lib/$MULTIARCH/$(basename "$interp")"
        mkdir -p "$r/usr/$(dirname "${interp#/}")"
        ln -sfn "/usr/lib/$MULTIARCH/$(basename "$interp")" "$r/usr/${interp#/}"
    fi
}

# add_tools ROOTFS STAGE NAME...: copies the named programs out of STAGE (wherever the packages
# put them: bin, sbin, usr/bin, usr/sbin) into ROOTFS/usr/{bin,sbin}, with their libraries.
add_tools() {
    local r="$1" stage="$2" name d src copied=()
    shift 2
    for name in "$@"; do
        src=
        for d in sbin usr/sbin bin usr/bin; do
            if [ -e "$stage/$d/$name" ]; then src="$stage/$d/$name" && break; fi
        done
        [ -n "$src" ] || die "no $name in the Debian packages staged"
        case "$d" in *sbin) d=usr/sbin ;; *) d=usr/bin ;; esac
        cp -L "$src" "$r/$d/$name"
        copied+=("$r/$d/$name")
    done
    copy_elf_deps "$r" "$stage" "${copied[@]}"
}

# ---------------------------------------------------------------------------------------------
# Packing: ROOTFS → OCI layout (umoci) → OCI archive (skopeo).

# pack NAME REF ROOTFS ENTRYPOINT [ENV...]
pack() {
    local name="$1" ref="$2" rootfs="$3" entry="$4" work layout
    shift 4
    work="$(mktemp -d "$CACHE/image-pack.XXXXXX")"
    layout="$work/oci"
    umoci init --layout "$layout"
    umoci new --image "$layout:img"
    umoci insert --image "$layout:img" --history.comment "scripts/image.sh: $name" "$rootfs" /
    local env=(--config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    local e
    for e in "$@"; do env+=(--config.env "$e"); done
    umoci config --image "$layout:img" --no-history --os linux --architecture "$ARCH" \
        --config.entrypoint "$entry" --config.workingdir / "${env[@]}" \
        --author "modcsi scripts/image.sh" \
        --config.label "org.opencontainers.image.title=$name" \
        --config.label "org.opencontainers.image.version=${ref##*:}"
    umoci gc --layout "$layout"
    rm -f "$OUT/$name.tar.tmp"
    skopeo copy -q "oci:$layout:img" "oci-archive:$OUT/$name.tar.tmp:$ref" >&2
    mv "$OUT/$name.tar.tmp" "$OUT/$name.tar"
    rm -rf "$work"
}

# fresh NAME KEY: whether $OUT/NAME.tar was made from inputs with this KEY.
fresh() { [ -f "$OUT/$1.tar" ] && [ "$(cat "$OUT/$1.key" 2>/dev/null)" = "$2" ]; }
done_image() { echo "$2" > "$OUT/$1.key"; echo "$3" > "$OUT/$1.ref"; log "$3: $(du -h "$OUT/$1.tar" | cut -f1) ($OUT/$1.tar)"; }

# ---------------------------------------------------------------------------------------------
# The driver image.

DRIVER_PKGS=(libc6 libgcc-s1 e2fsprogs xfsprogs util-linux)
DRIVER_TOOLS=(blkid mkfs.ext4 mkfs.xfs xfs_growfs)
BACKENDS=(node_local_cache rds emma)

driver_image() {
    local bin="$ROOT/target/release/modcsi" wasm_dir="$ROOT/backends/target/wasm32-wasip2/release"
    if [ ! -x "$bin" ]; then
        log "building target/release/modcsi (nice -n 10; a heavy build)"
        (cd "$ROOT" && nice -n 10 cargo build --release -p modcsi --bin modcsi >&2)
    fi
    local wasm=() b
    for b in "${BACKENDS[@]}"; do [ -f "$wasm_dir/$b.wasm" ] && wasm+=("$wasm_dir/$b.wasm"); done
    if [ ${#wasm[@]} -eq 0 ]; then
        log "building the backends (just build-backends, nice -n 10)"
        (cd "$ROOT" && nice -n 10 just build-backends >&2)
        for b in "${BACKENDS[@]}"; do [ -f "$wasm_dir/$b.wasm" ] && wasm+=("$wasm_dir/$b.wasm"); done
    fi
    local version tag ref key
    version="$("$bin" --version | awk '{print $2}')"
    tag="${MODCSI_IMAGE_TAG:-$version}"
    ref="modcsi.local/modcsi:$tag"
    key="$( (echo "$ref $SELF_KEY ${DRIVER_PKGS[*]} ${DRIVER_TOOLS[*]}"; sha256sum "$bin" "${wasm[@]}" | cut -c1-64
        apt-cache show --no-all-versions "${DRIVER_PKGS[@]}" 2>/dev/null | grep '^Version:') | sha256sum | cut -c1-16)"
    if fresh modcsi "$key"; then
        log "$ref: up to date ($OUT/modcsi.tar)"
        return
    fi
    log "assembling $ref"
    local work rootfs stage
    work="$(mktemp -d "$CACHE/image-modcsi.XXXXXX")"
    rootfs="$work/rootfs" stage="$work/stage"
    skeleton "$rootfs"
    stage_debs "$stage" "${DRIVER_PKGS[@]}"
    add_tools "$rootfs" "$stage" "${DRIVER_TOOLS[@]}"
    cp "$stage/etc/mke2fs.conf" "$rootfs/etc/mke2fs.conf" # mkfs.ext4's defaults per fs type
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/opt/modcsi/backends"
    strip --strip-debug -o "$rootfs/usr/local/bin/modcsi" "$bin"
    copy_elf_deps "$rootfs" "$stage" "$rootfs/usr/local/bin/modcsi"
    cp "${wasm[@]}" "$rootfs/opt/modcsi/backends/"
    # The rootfs runs on its own: the host, the tools, each with only what is in it.
    chroot "$rootfs" /usr/local/bin/modcsi --help >/dev/null || die "modcsi --help fails in the rootfs"
    chroot "$rootfs" /usr/sbin/blkid -V >/dev/null
    chroot "$rootfs" /usr/sbin/mkfs.ext4 -V >/dev/null 2>&1 || die "mkfs.ext4 -V fails in the rootfs"
    chroot "$rootfs" /usr/sbin/mkfs.xfs -V >/dev/null
    chroot "$rootfs" /usr/sbin/xfs_growfs -V >/dev/null
    log "rootfs $(du -sh "$rootfs" | cut -f1): modcsi $(du -h "$rootfs/usr/local/bin/modcsi" | cut -f1), backends: $(cd "$rootfs/opt/modcsi/backends" && echo *)"
    pack modcsi "$ref" "$rootfs" /usr/local/bin/modcsi
    rm -rf "$work"
    done_image modcsi "$key" "$ref"
}

# ---------------------------------------------------------------------------------------------
# The Go tools' images.

POD_TOOLS=(csi-provisioner csi-attacher csi-resizer csi-snapshotter snapshot-controller
    modcsi-registrar modcsi-livenessprobe)

tool_image() {
    local name="$1" bin="$2" version="$3" ref key work rootfs
    ref="modcsi.local/$name:$version"
    key="$( (echo "$ref $SELF_KEY"; sha256sum "$bin" | cut -c1-64) | sha256sum | cut -c1-16)"
    if fresh "$name" "$key"; then
        log "$ref: up to date ($OUT/$name.tar)"
        return
    fi
    work="$(mktemp -d "$CACHE/image-$name.XXXXXX")"
    rootfs="$work/rootfs"
    mkdir -p "$rootfs/etc" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
    cp "$bin" "$rootfs/$name"
    pack "$name" "$ref" "$rootfs" "/$name"
    rm -rf "$work"
    done_image "$name" "$key" "$ref"
}

# ---------------------------------------------------------------------------------------------
# check: import every archive into a scratch containerd.

check() {
    local dir="${1:-$OUT}" work pid sock f n=0
    apt_install containerd runc
    work="$(mktemp -d /tmp/modcsi-containerd.XXXXXX)"
    sock="$work/containerd.sock"
    cat > "$work/config.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
EOF
    containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
    pid=$!
    # shellcheck disable=SC2064
    trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$work'" EXIT
    for _ in $(seq 100); do ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
    ctr -a "$sock" version >/dev/null || { cat "$work/containerd.log" >&2; die "the scratch containerd did not start"; }
    for f in "$dir"/*.tar; do
        ctr -a "$sock" -n k8s.io images import "$f" >&2 || die "ctr images import $f failed"
        n=$((n + 1))
    done
    ctr -a "$sock" -n k8s.io images ls
    log "imported $n archives from $dir into a scratch containerd $(containerd --version | awk '{print $3}')"
}

# ---------------------------------------------------------------------------------------------

# The whole run is one function, read before it starts: editing this file meanwhile is safe.
main() {
    if [ "${1:-}" = check ]; then
        shift
        check "$@"
        exit 0
    fi

    apt_install umoci skopeo binutils
    mkdir -p "$OUT"
    exec 9>"$OUT/.lock"
    flock 9

    wanted=("$@")
    [ ${#wanted[@]} -gt 0 ] || wanted=(modcsi "${POD_TOOLS[@]}")
    tools_dir=""
    for w in "${wanted[@]}"; do
        if [ "$w" = modcsi ]; then
            driver_image
            continue
        fi
        case " ${POD_TOOLS[*]} " in *" $w "*) ;; *) die "unknown image $w (modcsi ${POD_TOOLS[*]})" ;; esac
        if [ -z "$tools_dir" ]; then
            if [ $# -gt 0 ]; then
                names=()
                for n in "${wanted[@]}"; do [ "$n" = modcsi ] || names+=("$n"); done
                tools_dir="$("$ROOT/scripts/go-tools.sh" "${names[@]}")"
            else
                tools_dir="$("$ROOT/scripts/go-tools.sh")"
            fi
        fi
        [ -x "$tools_dir/$w" ] || die "go-tools.sh did not build $w"
        version="$(awk -v n="$w" '$1 == n {print $2}' "$tools_dir/VERSIONS")"
        tool_image "$w" "$tools_dir/$w" "$version"
    done
    echo "$OUT"
}

main "$@"
exit
