#!/usr/bin/env bash
# Writes host/code-order.txt: the functions `modcsi serve` runs once it serves, which the release
# build places first in .text (host/build.rs). Run it again when a dependency update or a
# refactor has renamed much of the volume path (`just bench` prints how much of the list the
# binary still has); it needs root, the single-node cluster's cache and about five minutes.
#
#   scripts/code-order.sh [ROUNDS]      (default 3 claim + pod lifecycles)
#
# How, on the single-node cluster (scripts/cluster.sh, its own directory) with the sidecars the
# cost bench uses:
#   1. the release binary is linked again with every function on a page of its own (a linker
#      script with SUBALIGN(4096); the link line is the one cargo uses, printed by rustc);
#   2. the disk's readahead is off while it runs (put back on exit), and once it serves the
#      binary's pages leave the process and the page cache: every page it maps after that is
#      one it ran, as fault-around maps only pages already cached;
#   3. node-local-cache claims with a pod run to the end, through the provisioner and kubelet;
#   4. the functions on the pages the process then has mapped (/proc/PID/pagemap) are listed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
ROUNDS="${1:-3}"
DIR=/var/tmp/modcsi-code-order
WORK=$(mktemp -d)
DRIVER=order.modcsi.io
log() { echo "code-order.sh: [$SECONDS s] $*" >&2; }

# 1. Every function on a page of its own.
just build-backends >/dev/null
cargo build --release -p modcsi --bin modcsi
source=$(findmnt -no SOURCE --target target/release)
disk=$(lsblk -no PKNAME "$source" 2>/dev/null | head -1)
readahead=/sys/block/${disk:-$(basename "$source")}/queue/read_ahead_kb
[ -w "$readahead" ] || { echo "code-order.sh: no readahead setting for $source ($readahead)" >&2; exit 1; }
saved=$(cat "$readahead")
pids=()
cleanup() {
    echo "$saved" >"$readahead"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/cluster.sh down "$DIR" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

link=$(cargo rustc --release -p modcsi --bin modcsi -- --print link-args -C save-temps 2>/dev/null |
    grep '"-fuse-ld=lld"')
cat >"$WORK/pages.ld" <<'EOF'
SECTIONS
{
  .text : SUBALIGN(4096) { *(.text.unlikely .text.unlikely.*) *(.text.startup .text.startup.*) *(.text.hot .text.hot.*) *(.text .stub .text.*) }
}
INSERT AFTER .init;
EOF
binary="$WORK/modcsi"
link=$(sed -E "s|\"-o\" \"[^\"]*\"|\"-o\" \"$binary\" \"-Wl,-T,$WORK/pages.ld\"|" <<<"$link")
bash -c "$link"
log "linked with a page per function: $(du -h "$binary" | cut -f1)"

# 2. The cluster and the driver with its sidecars.
tools=$(scripts/go-tools.sh)
scripts/cluster.sh up "$DIR" >/dev/null
# shellcheck disable=SC1091
. "$DIR/env"
echo 0 >"$readahead"
plugin="$KUBELET_ROOT/plugins/$DRIVER"
mkdir -p "$plugin"
socket="$plugin/csi.sock"
"$binary" serve --driver-name "$DRIVER" --mode all --node-id "$MODCSI_CLUSTER_NODE" \
    --endpoint "unix://$socket" --kubeconfig "$KUBECONFIG" --namespace default \
    --kubelet-root "$KUBELET_ROOT" --state-dir "$WORK/state" \
    --backend backends/target/wasm32-wasip2/release/node_local_cache.wasm 2>"$WORK/driver.log" &
driver=$!
pids+=("$driver")
for _ in $(seq 600); do [ -S "$socket" ] && break; sleep 0.1; done
sleep 1
# Once it serves, its code out of its memory and of the page cache (it has released its own
# mappings; this drops what it mapped again since): process_madvise(2) MADV_PAGEOUT, then fadvise.
python3 - "$driver" "$binary" <<'EOF'
import ctypes, os, sys
pid, binary = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
class Iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
pidfd = libc.syscall(434, pid, 0)  # pidfd_open
for line in open(f'/proc/{pid}/maps'):
    f = line.split()
    if len(f) > 5 and f[1] == 'r-xp' and f[5] == binary:
        start, end = (int(x, 16) for x in f[0].split('-'))
        iov = Iovec(start, end - start)
        if libc.syscall(440, pidfd, ctypes.byref(iov), 1, 21, 0) < 0:  # process_madvise PAGEOUT
            sys.exit(f'process_madvise: errno {ctypes.get_errno()}')
os.posix_fadvise(os.open(binary, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
EOF
"$tools/modcsi-registrar" --csi-address "$socket" --kubelet-registration-path "$socket" \
    --plugin-registration-path "$KUBELET_ROOT/plugins_registry" 2>"$WORK/registrar.log" &
pids+=($!)
"$tools/csi-provisioner" --csi-address "$socket" --kubeconfig "$KUBECONFIG" \
    --leader-election=false --timeout=30s 2>"$WORK/provisioner.log" &
pids+=($!)
kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: $DRIVER}
spec: {attachRequired: false, podInfoOnMount: false, volumeLifecycleModes: [Persistent]}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: code-order}
provisioner: $DRIVER
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
for _ in $(seq 600); do
    kubectl get csinode "$MODCSI_CLUSTER_NODE" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null |
        grep -qw "$DRIVER" && break
    sleep 0.2
done

# 3. Lifecycles: a claim, a pod writing to it, both deleted, the PV gone.
round() {
    kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: order-$1, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: code-order
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: order-$1, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: writer
      image: modcsi.local/busybox:1
      imagePullPolicy: Never
      command: [sh, -c, "echo x > /data/x && sleep 3600"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: order-$1}
EOF
    kubectl -n default wait --for=condition=Ready "pod/order-$1" --timeout=120s >/dev/null
    local pv
    pv=$(kubectl -n default get pvc "order-$1" -o jsonpath='{.spec.volumeName}')
    kubectl -n default delete "pod/order-$1" "pvc/order-$1" --wait=true >/dev/null
    for _ in $(seq 600); do kubectl get pv "$pv" >/dev/null 2>&1 || return 0; sleep 0.1; done
    return 1
}
for i in $(seq "$ROUNDS"); do round "$i"; done
# Background work too: the cleanup loop and the watches, until tokio's idle threads exit.
sleep 12
log "$ROUNDS lifecycles run"

# 4. The functions on the pages mapped now, in address order.
python3 - "$driver" "$binary" host/code-order.txt <<'EOF'
import bisect, os, struct, subprocess, sys
pid, binary, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
loads = [(int(f[1], 16), int(f[2], 16), int(f[4], 16))
         for f in (l.split() for l in subprocess.run(['readelf', '-lW', binary], capture_output=True,
                                                     text=True, check=True).stdout.splitlines())
         if f and f[0] == 'LOAD']
pagemap = open(f'/proc/{pid}/pagemap', 'rb')
pages = []
for line in open(f'/proc/{pid}/maps'):
    f = line.split()
    if len(f) < 6 or f[1] != 'r-xp' or f[5] != binary:
        continue
    start, end = (int(x, 16) for x in f[0].split('-'))
    pagemap.seek(start // 4096 * 8)
    entries = pagemap.read((end - start) // 4096 * 8)
    for i in range(len(entries) // 8):
        if struct.unpack_from('<Q', entries, i * 8)[0] >> 63:
            offset = int(f[2], 16) + i * 4096
            pages += [va + offset - lo for lo, va, size in loads if lo <= offset < lo + size]
pages.sort()
names, seen, size = [], set(), 0
nm = subprocess.run(['nm', '-S', '--defined-only', binary], capture_output=True, text=True, check=True)
for address, length, kind, name in sorted(
        (int(f[0], 16), int(f[1], 16), f[2], f[3])
        for f in (l.split() for l in nm.stdout.splitlines()) if len(f) == 4):
    if kind not in 'tTWw' or name in seen:
        continue
    first, last = address & ~4095, (address + max(length, 1) - 1) & ~4095
    i = bisect.bisect_left(pages, first)
    if i < len(pages) and pages[i] <= last:
        seen.add(name)
        names.append(name)
        size += length
open(out, 'w').write(''.join(n + '\n' for n in names))
print(f'code-order.sh: {len(names)} functions, {size / 2**20:.2f} MiB, on {len(pages)} pages -> {out}',
      file=sys.stderr)
EOF
