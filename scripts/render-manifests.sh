#!/usr/bin/env bash
# Renders the plain manifests in deploy/kubernetes/ from the Helm chart deploy/helm/modcsi, one
# install per backend values file, and checks them.
#
#   scripts/render-manifests.sh                  write deploy/kubernetes/<backend>.yaml and rbac.yaml,
#                                                and deploy/observability/prometheus-rules.yaml (a
#                                                copy of the chart's files/prometheus-rules.yaml)
#   scripts/render-manifests.sh --check          fail if a committed file differs from a fresh
#                                                render; helm lint both values files (also with the
#                                                ServiceMonitor, PodMonitor and PrometheusRule on); every
#                                                modcsi container's arguments parsed by the real
#                                                binary; the sidecar images against tools/versions.env
#   scripts/render-manifests.sh --server-dry-run also create every rendered object with
#                                                `kubectl apply --dry-run=server` on a throwaway
#                                                kube-apiserver v1.20.2 over etcd (as the tests start
#                                                it), and each workload's pod, after the --check
#                                                steps
#
# deploy/kubernetes/rbac.yaml is the modcsi host's own rights from the node-local-cache render
# (namespace, service accounts, rbac-host.yaml): the integration tests apply it to a real API
# server and run the controller and node processes as those service accounts.
#
# Environment: HELM (a helm binary; default `helm` on PATH, else scripts/go-tools.sh helm),
# MODCSI_BIN (default target/debug/modcsi), KUBECTL (default kubectl on PATH),
# MODCSI_KUBE_APISERVER (default /var/cache/modcsi/kube-apiserver-v1.20.2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/deploy/helm/modcsi"
VALUES="$ROOT/deploy/helm/values"
OUT="$ROOT/deploy/kubernetes"
# The alert rules: the chart's file is the source, deploy/observability/ holds a copy.
RULES="$CHART/files/prometheus-rules.yaml"
RULES_COPY="$ROOT/deploy/observability/prometheus-rules.yaml"
# The Prometheus Operator objects, off by default (the cluster needs their CRDs), checked too.
MONITORING=(--set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true)
NAMESPACE=modcsi
# backend values file → release name (object names are <release>-controller, <release>-node, ...)
BACKENDS=(node-local-cache rds emma)
# The committed per-backend manifests.
mapfile -t RENDERED < <(printf "$OUT/%s.yaml\n" "${BACKENDS[@]}")

# Settings the committed manifests do not exercise, checked too (lint, arguments, server dry run):
# BACKEND, then helm --set arguments, one variant a line.
VARIANTS=(
    "rds --set backend.source=initContainer --set backend.initContainer.image.repository=modcsi.local/rds-backend --set backend.initContainer.image.tag=v0.1.0 --set backend.initContainer.path=/rds.wasm --set backend.secret.create=true --set-string backend.secret.files.ssh-key=k --set-string backend.secret.files.known_hosts=h --set csiDriver.storageCapacity=true --set metrics.enabled=false --set node.livenessprobe=true --set audit.enabled=true"
    "emma --set backend.source=oci --set backend.oci.reference=oci://registry.example.com:5000/modcsi/emma@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef --set backend.oci.insecureRegistries={registry.example.com:5000} --set audit.enabled=true --set audit.access=open"
    "node-local-cache --set backend.source=hostPath --set backend.hostPath.dir=/opt/modcsi/backends --set controller.livenessprobe=false --set leaderElection.enabled=false --set metrics.address=:: --set node.allowDiskById={virtio-pvc-} --set node.allowDiskSerial={pvc-*} --set node.projectIds=3000000000-3000999999 --set node.stateDir=/var/lib/modcsi-nlc --set node.kubeletDir=/var/lib/k0s/kubelet"
)

log() { echo "render-manifests.sh: $*" >&2; }
die() { log "$*"; exit 1; }

mode="write"
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    --server-dry-run) mode=server ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (use --check or --server-dry-run)" ;;
esac

find_helm() {
    if [ -n "${HELM:-}" ]; then
        echo "$HELM"
    elif command -v helm >/dev/null; then
        command -v helm
    elif [ -x "$ROOT/scripts/go-tools.sh" ]; then
        echo "$("$ROOT/scripts/go-tools.sh" helm)/helm"
    else
        die "no helm: set HELM or put helm on PATH"
    fi
}
HELM="$(find_helm)"
[ -x "$HELM" ] || die "$HELM is not an executable helm"

TMP="$(mktemp -d)"
cleanup() {
    if [ -n "${APISERVER_PID:-}" ]; then kill "$APISERVER_PID" 2>/dev/null || true; wait "$APISERVER_PID" 2>/dev/null || true; fi
    if [ -n "${ETCD_PID:-}" ]; then kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; fi
    [ -n "${ETCD_DIR:-}" ] && rm -rf "$ETCD_DIR"
    rm -rf "$TMP"
}
trap cleanup EXIT

# helm template's output without its `# Source:` lines and its leading `---` (the header comment
# opens the first document, so no reader sees an empty one), under a header naming its origin.
render() { # FILE BACKEND NOTE [helm template args...]
    local file=$1 backend=$2 note=$3
    shift 3
    {
        echo "# Rendered by scripts/render-manifests.sh from deploy/helm/modcsi with"
        echo "# deploy/helm/values/$backend.yaml (release modcsi-$backend, namespace $NAMESPACE): do not"
        echo "# edit; change the chart or the values and render again.$note"
        "$HELM" template "modcsi-$backend" "$CHART" --namespace "$NAMESPACE" \
            -f "$VALUES/$backend.yaml" --set namespace.create=true "$@" |
            grep -v '^# Source: ' | sed '1{/^---$/d}'
    } >"$file"
}

render_all() { # DIR
    local dir=$1 backend
    for backend in "${BACKENDS[@]}"; do
        render "$dir/$backend.yaml" "$backend" ""
    done
    render "$dir/rbac.yaml" node-local-cache "
#
# The modcsi host's own rights only: its namespace, service accounts and rbac-host.yaml (the
# sidecars' rights are in node-local-cache.yaml, which holds all of this too). The integration
# tests apply this file to a real API server (the namespace moved) and run the controller and
# node processes as these service accounts." \
        --show-only templates/namespace.yaml \
        --show-only templates/serviceaccounts.yaml \
        --show-only templates/rbac-host.yaml
}

if [ "$mode" = write ]; then
    render_all "$OUT"
    log "wrote deploy/kubernetes/{$(IFS=,; echo "${BACKENDS[*]}"),rbac}.yaml"
    cp "$RULES" "$RULES_COPY"
    log "wrote deploy/observability/prometheus-rules.yaml"
    exit 0
fi

failed=0
fail() { log "FAIL: $*"; failed=1; }

# 1. The committed files are what the chart renders.
mkdir -p "$TMP/render"
render_all "$TMP/render"
for file in "${BACKENDS[@]/%/.yaml}" rbac.yaml; do
    if ! diff -u "$OUT/$file" "$TMP/render/$file" >"$TMP/diff" 2>&1; then
        cat "$TMP/diff" >&2
        fail "deploy/kubernetes/$file differs from a fresh render: run scripts/render-manifests.sh"
    fi
done

if ! cmp -s "$RULES" "$RULES_COPY"; then
    diff -u "$RULES_COPY" "$RULES" >&2 || true
    fail "deploy/observability/prometheus-rules.yaml differs from deploy/helm/modcsi/files/prometheus-rules.yaml: run scripts/render-manifests.sh"
fi

# 2. helm lint, each backend's values and each variant.
for backend in "${BACKENDS[@]}"; do
    if ! "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" -f "$VALUES/$backend.yaml" >"$TMP/lint" 2>&1; then
        cat "$TMP/lint" >&2
        fail "helm lint with deploy/helm/values/$backend.yaml"
    fi
done
mkdir -p "$TMP/variants"
for i in "${!VARIANTS[@]}"; do
    read -r -a variant <<<"${VARIANTS[$i]}"
    if ! "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" -f "$VALUES/${variant[0]}.yaml" "${variant[@]:1}" >"$TMP/lint" 2>&1; then
        cat "$TMP/lint" >&2
        fail "helm lint of variant $i: ${VARIANTS[$i]}"
    fi
    render "$TMP/variants/variant-$i.yaml" "${variant[0]}" "" "${variant[@]:1}"
done
# 2b. The monitoring objects (not in the variants: the API server of --server-dry-run has no
#     Prometheus Operator CRDs): lint, and check that the monitors select the metrics Service and
#     the node pods by a port named metrics, and that the PrometheusRule is the rules file's.
mkdir -p "$TMP/monitoring"
for backend in "${BACKENDS[@]}"; do
    if ! "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" -f "$VALUES/$backend.yaml" "${MONITORING[@]}" >"$TMP/lint" 2>&1; then
        cat "$TMP/lint" >&2
        fail "helm lint with deploy/helm/values/$backend.yaml and ${MONITORING[*]}"
    fi
    render "$TMP/monitoring/$backend.yaml" "$backend" "" "${MONITORING[@]}"
    if python3 - "$TMP/monitoring/$backend.yaml" "$RULES" >"$TMP/monitors" 2>&1 <<'EOF'; then
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
def has(labels, selector):
    return all(labels.get(k) == v for k, v in selector.items())
def metrics_port(pod_spec):
    return any(p.get("name") == "metrics" for c in pod_spec["containers"] for p in c.get("ports", []))
selector = kinds["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
services = [d for d in docs if d["kind"] == "Service" and has(d["metadata"]["labels"], selector)]
assert len(services) == 1, "the ServiceMonitor selects %d Services" % len(services)
assert any(p["name"] == "metrics" for p in services[0]["spec"]["ports"]), "the Service has no port metrics"
controller = kinds["Deployment"]["spec"]["template"]
assert has(controller["metadata"]["labels"], services[0]["spec"]["selector"]), "the Service selects no controller pod"
assert metrics_port(controller["spec"]), "the controller has no port metrics"
node = kinds["DaemonSet"]["spec"]["template"]
selector = kinds["PodMonitor"]["spec"]["selector"]["matchLabels"]
assert has(node["metadata"]["labels"], selector), "the PodMonitor selects no node pod"
assert not has(controller["metadata"]["labels"], selector), "the PodMonitor selects the controller"
assert metrics_port(node["spec"]), "the node plugin has no port metrics"
rules = yaml.safe_load(open(sys.argv[2]))
assert kinds["PrometheusRule"]["spec"] == rules["spec"], "the PrometheusRule is not the rules file's"
print("the ServiceMonitor, PodMonitor and PrometheusRule agree with the workloads and the rules file")
EOF
        log "ok: $backend: $(cat "$TMP/monitors")"
    else
        cat "$TMP/monitors" >&2
        fail "$backend: the monitoring objects"
    fi
done
if command -v promtool >/dev/null; then
    python3 -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"], open(sys.argv[2], "w"))' "$RULES" "$TMP/rules.yaml"
    if promtool check rules "$TMP/rules.yaml" >"$TMP/promtool" 2>&1; then
        log "ok: promtool check rules: $(grep -o '[0-9]* rules found' "$TMP/promtool")"
    else
        cat "$TMP/promtool" >&2
        fail "promtool check rules of deploy/helm/modcsi/files/prometheus-rules.yaml"
    fi
else
    log "promtool not on PATH: the rules' PromQL not parsed here (the integration tests check their series names)"
fi

# 3. Every argument of every modcsi container is one the binary accepts: clap parses (and checks
#    the values of) every argument before a trailing --help, and exits 0 only when all parsed.
#    The sidecars' arguments likewise (Go's flag package: every flag before -help parsed, exit 0),
#    with the binaries scripts/go-tools.sh built, where its cache has them (skipped otherwise).
MODCSI_BIN="${MODCSI_BIN:-$ROOT/target/debug/modcsi}"
GO_TOOLS="${MODCSI_KUBE_CACHE:-/var/cache/modcsi}/go-tools"
python3 -c 'import yaml' 2>/dev/null || die "python3 with PyYAML (python3-yaml) is needed to read the manifests"
[ -x "$MODCSI_BIN" ] || fail "$MODCSI_BIN is missing: build it (cargo build -p modcsi) or set MODCSI_BIN"
# The binary of a container: modcsi, or a sidecar's from the go-tools cache (<tool>-<version>-<key>/<tool>).
container_binary() { # NAME IMAGE
    local tool=$1 version=${2##*:} candidates
    # The driver's containers and the audit service's run the modcsi binary.
    if [ "$tool" = modcsi ] || [ "$tool" = audit ]; then
        [ -x "$MODCSI_BIN" ] && echo "$MODCSI_BIN"
        return 0
    fi
    case "${2%:*}" in
        */modcsi-registrar) tool=modcsi-registrar ;;
        */modcsi-livenessprobe) tool=modcsi-livenessprobe ;;
    esac
    candidates=("$GO_TOOLS/$tool-$version-"*/"$tool")
    for bin in "${candidates[@]}"; do
        if [ -x "$bin" ]; then echo "$bin"; return 0; fi
    done
}
declare -A skipped=()
for manifest in $(printf "$TMP/render/%s.yaml " "${BACKENDS[@]}") "$TMP"/variants/*.yaml; do
    file=$(basename "$manifest")
    python3 - "$manifest" >"$TMP/args" <<'EOF'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc or doc.get("kind") not in ("Deployment", "DaemonSet", "StatefulSet"):
        continue
    for c in doc["spec"]["template"]["spec"]["containers"]:
        # one line per container: kind/name, container, image, then its arguments, tab-separated
        print("\t".join([doc["kind"] + "/" + doc["metadata"]["name"], c["name"], c["image"]] + c.get("args", [])))
EOF
    grep -q $'\tmodcsi\t' "$TMP/args" || fail "$file: no modcsi container found"
    while IFS=$'\t' read -r -a words; do
        what="${words[0]} ${words[1]}"
        args=("${words[@]:3}")
        if [ "${words[1]}" = modcsi ]; then
            for required in --backend= --driver-name= --mode=; do
                found=
                for arg in "${args[@]}"; do [[ $arg == "$required"* ]] && found=1; done
                [ -n "$found" ] || fail "$file $what: no $required"
            done
        fi
        bin=$(container_binary "${words[1]}" "${words[2]}")
        if [ -z "$bin" ]; then
            [ "${words[1]}" = modcsi ] || skipped["${words[2]##*/}"]=1
            continue
        fi
        if ! "$bin" "${args[@]}" --help >/dev/null 2>"$TMP/err"; then
            tail -5 "$TMP/err" >&2
            fail "$file $what: $bin refuses its arguments: ${args[*]}"
        else
            log "ok: $file $what: $(basename "$bin") accepts its ${#args[@]} arguments"
        fi
    done <"$TMP/args"
done
[ ${#skipped[@]} -eq 0 ] || log "sidecar arguments not checked (no binary in $GO_TOOLS; scripts/go-tools.sh builds them): ${!skipped[*]}"

# 4. The sidecar images carry the versions tools/versions.env pins.
if [ -f "$ROOT/tools/versions.env" ]; then
    # shellcheck source=SCRIPTDIR/../tools/versions.env
    . "$ROOT/tools/versions.env"
    check_tag() { # VALUES-KEY IMAGE VERSION
        local image
        image=$(python3 -c 'import sys, yaml; i = yaml.safe_load(open(sys.argv[1]))["sidecars"][sys.argv[2]]["image"]; print(i["repository"] + ":" + i["tag"])' "$CHART/values.yaml" "$1")
        [ "$image" = "modcsi.local/$2:$3" ] || fail "values.yaml sidecars.$1 is $image, tools/versions.env says modcsi.local/$2:$3"
    }
    check_tag provisioner csi-provisioner "$CSI_PROVISIONER_VERSION"
    check_tag attacher csi-attacher "$CSI_ATTACHER_VERSION"
    check_tag resizer csi-resizer "$CSI_RESIZER_VERSION"
    check_tag snapshotter csi-snapshotter "$CSI_SNAPSHOTTER_VERSION"
    # The registrar and the liveness probe are our stand-ins; values.yaml names the upstream
    # releases whose flags they take (and whose images may replace them).
    check_tag nodeDriverRegistrar modcsi-registrar "$STANDINS_VERSION"
    check_tag livenessprobe modcsi-livenessprobe "$STANDINS_VERSION"
    for upstream in "node-driver-registrar $NODE_DRIVER_REGISTRAR_VERSION" "livenessprobe $LIVENESSPROBE_VERSION"; do
        grep -qF "$upstream" "$CHART/values.yaml" ||
            fail "values.yaml does not name the upstream $upstream (tools/versions.env) the stand-ins mirror"
    done
fi

# 5. Every image of the rendered files is a local one (modcsi.local/...): a user points the
#    repositories elsewhere, the committed files name no registry.
for file in "${BACKENDS[@]/%/.yaml}"; do
    python3 - "$TMP/render/$file" >"$TMP/images" <<'EOF'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") in ("Deployment", "DaemonSet", "StatefulSet"):
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            print(c["image"])
EOF
    while read -r image; do
        [[ $image == modcsi.local/* ]] || fail "$file: image $image is not modcsi.local/..."
    done <"$TMP/images"
done

[ "$failed" = 0 ] || die "check failed"
log "check passed"
[ "$mode" = server ] || exit 0

# 6. Every rendered object, created with --dry-run=server on a v1.20.2 API server (admission and
#    validation run; nothing is stored).
APISERVER="${MODCSI_KUBE_APISERVER:-/var/cache/modcsi/kube-apiserver-v1.20.2}"
[ -x "$APISERVER" ] || die "$APISERVER is missing: scripts/kube-apiserver.sh builds it"
command -v etcd >/dev/null || die "no etcd (Debian's etcd-server)"
KUBECTL="${KUBECTL:-$(command -v kubectl || true)}"
[ -n "$KUBECTL" ] || die "no kubectl: set KUBECTL (scripts/kube-binaries.sh unpacks one)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
(
    cd "$TMP"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=render-ca
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile server.ext
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
) >/dev/null 2>&1 || die "openssl failed"
echo 'render-admin-token,admin,admin,"system:masters"' >"$TMP/tokens.csv"
ETCD_DIR="$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)"
etcd_port=$(free_port) peer_port=$(free_port) api_port=$(free_port)
etcd --name render --data-dir "$ETCD_DIR" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "render=http://127.0.0.1:$peer_port" >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
"$APISERVER" --etcd-servers="http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 --secure-port="$api_port" --insecure-port=0 \
    --tls-cert-file="$TMP/server.crt" --tls-private-key-file="$TMP/server.key" \
    --token-auth-file="$TMP/tokens.csv" --authorization-mode=RBAC --allow-privileged=true \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$TMP/sa.pub" \
    --service-account-signing-key-file="$TMP/sa.key" --service-cluster-ip-range=10.0.0.0/24 \
    >"$TMP/apiserver.log" 2>&1 &
APISERVER_PID=$!
cat >"$TMP/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: render
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$TMP/ca.crt"}
users:
- name: admin
  user: {token: render-admin-token}
contexts:
- name: render
  context: {cluster: render, user: admin}
current-context: render
EOF
k() { "$KUBECTL" --kubeconfig "$TMP/kubeconfig" "$@"; }
for _ in $(seq 300); do
    [ "$(k get --raw /readyz 2>/dev/null)" = ok ] && break
    kill -0 "$APISERVER_PID" 2>/dev/null || { cat "$TMP/apiserver.log" >&2; die "kube-apiserver exited"; }
    sleep 0.2
done
[ "$(k get --raw /readyz 2>/dev/null)" = ok ] || { tail -20 "$TMP/apiserver.log" >&2; die "kube-apiserver not ready"; }
log "kube-apiserver $(k version -o json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') on 127.0.0.1:$api_port"
# Namespaced objects need their namespace to exist: create it for real, then dry-run the rest.
k create namespace "$NAMESPACE" --save-config >/dev/null
# Pods in a new namespace wait for its default ServiceAccount (no controller-manager here).
k -n "$NAMESPACE" create serviceaccount default >/dev/null 2>&1 || true
for file in "${RENDERED[@]}" "$OUT/rbac.yaml" "$TMP"/variants/*.yaml; do
    name=$(basename "$file")
    if k apply --dry-run=server -f "$file" >"$TMP/apply" 2>&1; then
        log "ok: $name: $(grep -c '(server dry run)' "$TMP/apply") objects accepted by the API server (dry run)"
        sed 's/^/    /' "$TMP/apply" >&2
    else
        cat "$TMP/apply" >&2
        fail "$name: the API server refused an object"
    fi
done
# 7. The workloads' pods, through the admission a Pod meets (service account, priority class,
#    validation of a pod): the service accounts are created for real, each pod template is sent
#    as a Pod, dry run.
for file in "${RENDERED[@]}"; do
    name=$(basename "$file")
    python3 - "$file" "$TMP/accounts.yaml" "$TMP/pods.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
yaml.safe_dump_all([d for d in docs if d["kind"] == "ServiceAccount"], open(sys.argv[2], "w"))
pods = []
for d in docs:
    if d["kind"] in ("Deployment", "DaemonSet"):
        t = d["spec"]["template"]
        meta = dict(t["metadata"], name=d["metadata"]["name"] + "-dry-run", namespace=d["metadata"]["namespace"])
        # No controller-manager mints the accounts' token Secrets here, which admission would
        # mount: the dry-run pods go without (the service account must exist all the same).
        spec = dict(t["spec"], automountServiceAccountToken=False)
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
yaml.safe_dump_all(pods, open(sys.argv[3], "w"))
EOF
    k apply -f "$TMP/accounts.yaml" >/dev/null
    if k apply --dry-run=server -f "$TMP/pods.yaml" >"$TMP/apply" 2>&1; then
        log "ok: $name: $(grep -c '(server dry run)' "$TMP/apply") pods admitted (dry run)"
        sed 's/^/    /' "$TMP/apply" >&2
    else
        cat "$TMP/apply" >&2
        fail "$name: the API server refused a pod"
    fi
done
[ "$failed" = 0 ] || die "server dry run failed"
log "server dry run passed"
