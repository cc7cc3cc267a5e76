#!/usr/bin/env bash
# `just e2e`: the end-to-end suites on a real single-node Kubernetes. Builds (or takes from the
# cache) the Go tools (sidecars, helm) and the images, checks the rendered manifests against the
# chart, starts the cluster (scripts/cluster.sh), imports the images, runs the `e2e::` tests one
# at a time (they install the chart as an operator would) and stops the cluster, whatever
# happened. The driver image holds target/release/modcsi and the backends: `just e2e` builds them.
#
#   scripts/e2e.sh [nextest args…]    e.g. scripts/e2e.sh -E 'test(/node_local_cache/)'
#
# MODCSI_E2E_DIR: the cluster's directory (default /var/tmp/modcsi-e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
DIR="${MODCSI_E2E_DIR:-/var/tmp/modcsi-e2e}"
log() { echo "e2e.sh: [$SECONDS s] $*" >&2; }

tools=$(scripts/go-tools.sh)
log "Go tools in $tools"
export HELM="$tools/helm"
# The manifests are what the chart renders, lint clean, with arguments the binaries take, and every
# object is accepted by a real API server (dry run).
scripts/render-manifests.sh --server-dry-run
images=$(scripts/image.sh)
log "images in $images"
scripts/cluster.sh up "$DIR" >/dev/null
trap 'scripts/cluster.sh down "$DIR" >/dev/null' EXIT
for archive in "$images"/*.tar; do
    scripts/cluster.sh load-image "$archive" "$(cat "${archive%.tar}.ref")" "$DIR" >/dev/null
done
log "cluster up, images imported"
export MODCSI_E2E_ENV="$DIR/env"
# One at a time (they share the cluster); what they print (the cost table) is shown at the end.
run=(cargo nextest run -p modcsi-tests --test integration --run-ignored only --test-threads 1
    --success-output final)
if [ $# -gt 0 ]; then "${run[@]}" "$@"; else "${run[@]}" -E 'test(/^e2e::/)'; fi
log "done"
