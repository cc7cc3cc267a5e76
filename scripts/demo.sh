#!/usr/bin/env bash
# The modcsi demo: a real host with the node-local-cache backend on a temporary socket, driven
# through a whole volume lifecycle with real bind mounts. Cleans up (server, mounts, socket,
# directories) however it ends.
#   usage: scripts/demo.sh path/to/modcsi path/to/node_local_cache.wasm
set -euo pipefail

modcsi=$(realpath "$1")
backend=$(realpath "$2")
work=$(mktemp -d /tmp/modcsi-demo.XXXXXX)
sock="$work/csi.sock"
rw="$work/pods/writer/volume"
ro="$work/pods/reader/volume"
server=""

cleanup() {
    local status=$?
    for target in "$ro" "$rw"; do
        if mountpoint -q "$target" 2>/dev/null; then umount -l "$target" || true; fi
    done
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    if [ $status -ne 0 ] && [ -f "$work/server.log" ]; then
        echo "--- server log ---"; tail -n 20 "$work/server.log"
    fi
    rm -rf "$work"
    if [ $status -eq 0 ]; then echo; echo "demo finished: cleaned up $work"; else echo "demo FAILED (exit $status); cleaned up $work"; fi
    exit $status
}
trap cleanup EXIT

ms_since() { echo "$(( ($(date +%s%N) - $1) / 1000 ))" | awk '{ printf "%.2f ms", $1 / 1000 }'; }
step() { echo; echo "==> $*"; }
csi() { "$modcsi" csi --endpoint "unix://$sock" "$@"; }

# Like kubelet, the pod directories exist before a volume is published in them.
mkdir -p "$(dirname "$rw")" "$(dirname "$ro")"

step "start: modcsi serve --backend $(basename "$backend") --mode all (socket $sock)"
t=$(date +%s%N)
RUST_LOG=${RUST_LOG:-info} "$modcsi" serve --backend "$backend" --driver-name node-local-cache.csi.io \
    --node-id demo-node --endpoint "unix://$sock" --mode all --state-dir "$work/state" \
    --kubelet-root "$work/pods" \
    2> "$work/server.log" &
server=$!
for _ in $(seq 1 600); do
    [ -S "$sock" ] && break
    kill -0 "$server" 2>/dev/null || { echo "the server exited"; exit 1; }
    sleep 0.05
done
[ -S "$sock" ] || { echo "no socket after 30 s"; exit 1; }
echo "ready in $(ms_since "$t")"

step "identity"
csi info

step "create volume demo-cache (1Gi)"
created=$(csi create demo-cache --size 1Gi)
echo "$created"
volume=$(sed -n 's/^volume_id=//p' <<<"$created")
context=()
while read -r kv; do context+=(--context "$kv"); done < <(sed -n 's/^context=//p' <<<"$created")

step "publish read-write at $rw"
csi publish "$volume" "$rw" "${context[@]}"

step "write a file through the read-write publish"
t=$(date +%s%N)
echo "hello from modcsi at $(date -u +%FT%TZ)" > "$rw/hello.txt"
echo "wrote $rw/hello.txt in $(ms_since "$t")"

step "publish the same volume read-only at $ro"
csi publish "$volume" "$ro" --readonly "${context[@]}"

step "read it back through the read-only publish"
t=$(date +%s%N)
cmp "$rw/hello.txt" "$ro/hello.txt"
echo "read: $(cat "$ro/hello.txt") ($(ms_since "$t"))"

step "a write through the read-only publish must fail"
if echo nope 2> "$work/err" > "$ro/nope.txt"; then
    echo "the read-only publish accepted a write"; exit 1
fi
echo "refused as expected: $(sed 's/.*: //' "$work/err")"

step "volume stats"
csi stats "$volume" "$rw"

step "unpublish both"
csi unpublish "$volume" "$ro"
csi unpublish "$volume" "$rw"
if mountpoint -q "$rw" 2>/dev/null || mountpoint -q "$ro" 2>/dev/null; then echo "still mounted"; exit 1; fi

step "delete the volume"
csi delete "$volume"
[ ! -e "$work/state/local/$volume" ] || { echo "the node directory survived DeleteVolume"; exit 1; }
echo "node directory $work/state/local/$volume removed"
