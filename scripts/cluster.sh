#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 on this machine, for end-to-end tests.
#
#   scripts/cluster.sh up [DIR]          start it under DIR; prints the env file's lines
#   scripts/cluster.sh down [DIR]        stop it and undo everything it did (safe twice, and after
#                                        a failed up)
#   scripts/cluster.sh env [DIR]         print DIR/env
#   scripts/cluster.sh load-image ARCHIVE NAME:TAG [DIR]
#                                        import a docker-archive or OCI archive (a file, an OCI
#                                        layout directory, or any skopeo source such as
#                                        oci-archive:/x.tar:ref) as NAME:TAG, for pods to use
#                                        with imagePullPolicy Never or IfNotPresent
#
# DIR defaults to $MODCSI_CLUSTER_DIR, else /var/tmp/modcsi-cluster. `up` writes DIR/kubeconfig
# (cluster admin) and DIR/env (`. DIR/env`, or parse its `export KEY=VALUE` lines):
#   KUBECONFIG, KUBELET_ROOT (kubelet's --root-dir: what a CSI node plugin's hostPaths for
#   /var/lib/kubelet must name), CONTAINERD_ADDRESS and CONTAINERD_NAMESPACE (for ctr),
#   MODCSI_CLUSTER_NODE (the node's name) and PATH with kubectl v1.20.2 first.
#
# What runs, all as root processes of this machine, logs in DIR/log:
#   containerd (Debian's, with runc and the CNI plugins; its own config, root, state and socket;
#     restrict_oom_score_adj, because root here lacks CAP_SYS_RESOURCE), a bridge network
#     (modcsi0, pods in 10.244.0.0/24, no masquerade),
#   etcd on 127.0.0.1:12379 (peer 12380), data in DIR/etcd,
#   kube-apiserver on 10.96.0.1:443: the `kubernetes` Service's own address, put on lo, so pods
#     reach the API server with in-cluster configuration although no kube-proxy runs (no other
#     ClusterIP Service works and there is no cluster DNS),
#   kube-controller-manager and kube-scheduler (health on 127.0.0.1:10257 and :10259),
#   kubelet (its root dir DIR/kubelet, ports 10250 on the node's address and 10248 on loopback;
#     its pods' cgroups below /modcsi-cluster in each cgroup hierarchy).
# Images without a registry: modcsi.local/pause:3.2 (a static pause from the Kubernetes source)
# and modcsi.local/busybox:1 (Debian's busybox-static), both built once into the cache.
#
# Binaries come from scripts/kube-binaries.sh (built once into $MODCSI_KUBE_CACHE, by default
# /var/cache/modcsi); Debian packages the machine lacks are installed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/kube-source.sh
. "$HERE/lib/kube-source.sh"

ETCD_PORT=12379
ETCD_PEER_PORT=12380
SERVICE_CIDR=10.96.0.0/24
API_IP=10.96.0.1
API_PORT=443
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
BRIDGE=modcsi0
KCM_PORT=10257
SCHEDULER_PORT=10259
PAUSE_IMAGE=modcsi.local/pause:3.2
BUSYBOX_IMAGE=modcsi.local/busybox:1
# kubelet's --cgroup-root: its kubepods hierarchy lives below this, in every cgroup v1 hierarchy,
# so `down` removes (and kills the processes of) this cluster's pods only.
CGROUP_ROOT=modcsi-cluster
SYSCTLS="kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward"
# What kubelet, CNI and containerd write outside DIR whatever they are told: what is new there
# after `up` goes at `down`.
OUTSIDE="/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns
/opt/containerd /var/lib/containerd /etc/cni /usr/libexec/kubernetes"
# Stopped in this order.
DAEMONS="kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd"

log() { kube_log "[$SECONDS s] $*"; }
die() { log "$*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

cluster_dir() {
    local dir=${1:-${MODCSI_CLUSTER_DIR:-/var/tmp/modcsi-cluster}}
    case $dir in /*) ;; *) dir="$PWD/$dir" ;; esac
    dir=$(realpath -m "$dir")
    if [ "$dir" = / ] || [ "$(dirname "$dir")" = / ]; then die "refusing cluster dir $dir: too close to /"; fi
    echo "$dir"
}

set_paths() {
    DIR=$1
    MARK="$DIR/.modcsi-cluster"
    PKI="$DIR/pki" ETC="$DIR/etc" RUN="$DIR/run" LOGS="$DIR/log" SAVED="$DIR/saved"
    SOCK="$RUN/containerd.sock"
    KUBELET_ROOT="$DIR/kubelet"
    KUBECONFIG_FILE="$DIR/kubeconfig"
    NODE=$(hostname | tr '[:upper:]' '[:lower:]')
}

# --- processes ---------------------------------------------------------------------------------

# The pid of a daemon of this cluster that is running (not a zombie, and its command line names
# DIR, so a reused pid is never taken for it), or nothing.
daemon_pid() {
    local file="$RUN/$1.pid" pid
    [ -f "$file" ] || return 1
    pid=$(cat "$file")
    pid_is_ours "$pid" && echo "$pid"
}

pid_is_ours() {
    local pid=$1 state
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ "$state" != Z ] && [ "$state" != X ] || return 1
    { tr '\0' '\n' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$DIR/"
}

pid_alive() {
    local state
    [ -r "/proc/$1/stat" ] || return 1
    state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ "$state" != Z ] && [ "$state" != X ]
}

# Starts NAME detached (its own session), logging to DIR/log/NAME.log; the pid file is written by
# the process itself before it becomes the daemon.
start_daemon() {
    local name=$1
    shift
    log "starting $name"
    rm -f "$RUN/$name.pid"
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$RUN/$name.pid" "$@" \
        </dev/null >>"$LOGS/$name.log" 2>&1 &
    local i
    for i in $(seq 50); do [ -s "$RUN/$name.pid" ] && return 0; sleep 0.1; done
    die "$name did not start"
}

# Stops a daemon: TERM, then KILL after TIMEOUT seconds.
stop_pid() {
    local pid=$1 timeout=${2:-20} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq $((timeout * 10))); do pid_alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 50); do pid_alive "$pid" || return 0; sleep 0.1; done
    log "pid $pid did not exit"
}

stop_daemon() {
    local pid
    if pid=$(daemon_pid "$1"); then
        log "stopping $1 (pid $pid)"
        stop_pid "$pid" "${2:-20}"
    fi
    rm -f "$RUN/$1.pid"
}

# Waits until "$@" succeeds; after TIMEOUT seconds fails, showing the tail of LOG.
wait_for() {
    local what=$1 timeout=$2 logname=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ -n "$logname" ] && ! daemon_pid "$logname" >/dev/null; then
            fail "$logname exited while waiting for $what" "$logname"
        fi
        [ $SECONDS -lt $deadline ] || fail "no $what after $timeout s" "$logname"
        sleep 0.2
    done
}

# Fails `up`, showing the end of a daemon's log; the EXIT trap undoes the partial cluster.
fail() {
    log "$1"
    if [ -n "${2:-}" ] && [ -f "$LOGS/$2.log" ]; then
        log "the end of $LOGS/$2.log:"
        tail -n 30 "$LOGS/$2.log" >&2
    fi
    exit 1
}

# `up`'s EXIT trap: whatever made it stop early (a wait that timed out, a command that failed),
# what it started is undone unless MODCSI_CLUSTER_KEEP_ON_FAILURE=1.
up_exit() {
    local rc=$1
    [ -z "$UP_DONE" ] && [ "$rc" != 0 ] || return 0
    if [ "${MODCSI_CLUSTER_KEEP_ON_FAILURE:-}" = 1 ]; then
        log "up failed; left as it is (MODCSI_CLUSTER_KEEP_ON_FAILURE=1): scripts/cluster.sh down $DIR"
    else
        log "up failed; undoing the partial cluster (MODCSI_CLUSTER_KEEP_ON_FAILURE=1 keeps it)"
        do_down || true
    fi
}

# --- prerequisites -----------------------------------------------------------------------------

binaries() {
    KBIN=$("$HERE/kube-binaries.sh")
    IMAGES="$KBIN/images"
    kube_apt_install containerd runc containernetworking-plugins etcd-server umoci skopeo \
        openssl curl iproute2 util-linux
}

# A busybox that needs nothing: Debian's busybox-static, unpacked into the cache (never installed:
# it would replace a busybox package).
busybox_static() {
    local out="$IMAGES/busybox" tmp
    [ -x "$out" ] && return 0
    tmp=$(mktemp -d "$IMAGES/busybox.XXXXXX")
    (cd "$tmp" && apt-get download -q busybox-static >&2) \
        || { kube_apt_update; (cd "$tmp" && apt-get download -q busybox-static >&2); }
    dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/x"
    mv "$tmp/x/bin/busybox" "$out"
    rm -rf "$tmp"
}

# build_image REF OUT FILL [umoci config options]: a one-layer image whose root FILL populates
# (it gets the rootfs path), as a docker-archive named REF.
build_image() {
    local ref=$1 out=$2 fill=$3 tmp
    shift 3
    [ -s "$out" ] && return 0
    log "building the image $ref"
    tmp=$(mktemp -d "$IMAGES/build.XXXXXX")
    umoci init --layout "$tmp/oci"
    umoci new --image "$tmp/oci:img"
    umoci config --image "$tmp/oci:img" "$@"
    umoci unpack --image "$tmp/oci:img" "$tmp/bundle" >/dev/null
    "$fill" "$tmp/bundle/rootfs"
    umoci repack --image "$tmp/oci:img" "$tmp/bundle"
    umoci gc --layout "$tmp/oci"
    skopeo --insecure-policy copy -q "oci:$tmp/oci:img" "docker-archive:$tmp/image.tar:$ref" >&2
    mv "$tmp/image.tar" "$out"
    rm -rf "$tmp"
}

fill_pause() {
    install -m 0755 "$KBIN/pause" "$1/pause"
}

fill_busybox() {
    local root=$1 applet
    mkdir -p "$root"/{bin,etc,root,tmp,proc,sys,dev,var}
    chmod 1777 "$root/tmp"
    install -m 0755 "$IMAGES/busybox" "$root/bin/busybox"
    for applet in $("$IMAGES/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
    echo 'root:x:0:' > "$root/etc/group"
}

images() {
    mkdir -p "$IMAGES"
    local lock
    exec {lock}>"$IMAGES/.lock"
    flock "$lock"
    busybox_static
    build_image "$PAUSE_IMAGE" "$IMAGES/pause.tar" fill_pause --config.entrypoint=/pause
    build_image "$BUSYBOX_IMAGE" "$IMAGES/busybox.tar" fill_busybox \
        --config.cmd=/bin/sh --config.env=PATH=/bin --config.workingdir=/
    flock -u "$lock"
    exec {lock}>&-
}

ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

import_image() {
    ctr_ images import "$1" >&2
}

# --- configuration -----------------------------------------------------------------------------

node_ip() {
    local dev ip
    dev=$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
    [ -n "$dev" ] && ip=$(ip -4 -o addr show dev "$dev" scope global | awk '{sub(/\/.*/, "", $4); print $4; exit}')
    echo "${ip:-127.0.0.1}"
}

certificates() {
    local o="openssl"
    (
        cd "$PKI"
        $o req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 \
            -subj /CN=modcsi-cluster-ca 2>/dev/null
        cat > apiserver.ext <<EOF
subjectAltName=IP:$API_IP,IP:127.0.0.1,IP:$NODE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
EOF
        $o req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
        $o x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt \
            -days 365 -extfile apiserver.ext 2>/dev/null
        # The API server's client certificate towards kubelet (exec, logs, port-forward).
        cat > client.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
        $o req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
            -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
        $o x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -out kubelet-client.crt -days 365 -extfile client.ext 2>/dev/null
        $o genrsa -out sa.key 2048 2>/dev/null
        $o rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        rm -f ./*.csr ./*.ext ca.srl
        chmod 0600 ./*.key
    )
}

# Static tokens: one per identity (users as kubeadm names them, so the bootstrap RBAC rules and
# the Node authorizer apply).
tokens() {
    TOKEN_admin=$(openssl rand -hex 16)
    TOKEN_kubelet=$(openssl rand -hex 16)
    TOKEN_kcm=$(openssl rand -hex 16)
    TOKEN_scheduler=$(openssl rand -hex 16)
    : > "$PKI/tokens.csv"
    chmod 0600 "$PKI/tokens.csv"
    {
        echo "$TOKEN_admin,admin,admin,\"system:masters\""
        echo "$TOKEN_kubelet,system:node:$NODE,kubelet-$NODE,\"system:nodes\""
        echo "$TOKEN_kcm,system:kube-controller-manager,kube-controller-manager"
        echo "$TOKEN_scheduler,system:kube-scheduler,kube-scheduler"
    } > "$PKI/tokens.csv"
}

kubeconfig() {
    local file=$1 user=$2 token=$3
    cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: modcsi
  cluster:
    server: https://$API_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: modcsi
  context:
    cluster: modcsi
    user: $user
current-context: modcsi
EOF
    chmod 0600 "$file"
}

containerd_config() {
    cat > "$ETC/containerd.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$DIR/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
    mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
    cat > "$DIR/cni/net.d/10-modcsi.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "modcsi",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

kubelet_config() {
    cat > "$ETC/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
makeIPTablesUtilChains: false
# Images here cannot be pulled again: never collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
volumePluginDir: $DIR/volume-plugins
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Ready 2 s rather than 10 s after the runtime is: the status is computed this often (and posted
# only when it changes).
nodeStatusUpdateFrequency: 2s
EOF
}

# --- what up changes outside DIR, and its undoing ----------------------------------------------

record_outside() {
    [ -f "$SAVED/done" ] && return 0 # a cluster that was never taken down: keep what it found
    rm -rf "$SAVED"
    mkdir -p "$SAVED"
    local s p i=0
    for s in $SYSCTLS; do echo "$s $(cat "/proc/sys/${s//.//}")"; done > "$SAVED/sysctl"
    for p in $OUTSIDE; do
        i=$((i + 1))
        if [ -e "$p" ]; then
            echo "present $p $i"
            ls -A "$p" > "$SAVED/list.$i"
        else
            echo "absent $p $i"
        fi
    done > "$SAVED/outside"
    if ip -4 -o addr show dev lo | grep -qw "$API_IP/32"; then echo yes; else echo no; fi > "$SAVED/lo-address"
    touch "$SAVED/done"
}

restore_outside() {
    local problems=0
    [ -f "$SAVED/done" ] || return 0
    if [ "$(cat "$SAVED/lo-address" 2>/dev/null)" = no ] && ip -4 -o addr show dev lo | grep -qw "$API_IP/32"; then
        ip addr del "$API_IP/32" dev lo || problems=1
    fi
    local s v
    while read -r s v; do
        [ "$(cat "/proc/sys/${s//.//}")" = "$v" ] || echo "$v" > "/proc/sys/${s//.//}" || problems=1
    done < "$SAVED/sysctl"
    local state p i e
    while read -r state p i; do
        [ -e "$p" ] || continue
        if [ "$state" = absent ]; then
            remove_tree "$p" || problems=1
        else
            while IFS= read -r e; do
                grep -qxF -- "$e" "$SAVED/list.$i" || remove_tree "$p/$e" || problems=1
            done < <(ls -A "$p")
        fi
    done < "$SAVED/outside"
    [ $problems = 0 ] && rm -rf "$SAVED"
    return $problems
}

# Mount points at or below $1 (decoded), deepest first.
mounts_under() {
    awk -v top="$1" '{
        p = $5
        while (match(p, /\\[0-7][0-7][0-7]/)) {
            c = substr(p, RSTART + 1, 3)
            p = substr(p, 1, RSTART - 1) sprintf("%c", (substr(c,1,1) * 64) + (substr(c,2,1) * 8) + substr(c,3,1)) substr(p, RSTART + 4)
        }
        if (p == top || index(p, top "/") == 1) print gsub(/\//, "/", p) "\t" p
    }' /proc/self/mountinfo | sort -rn -k1,1 | cut -f2-
}

unmount_under() {
    local top=$1 round m
    for round in 1 2 3 4 5; do
        [ -n "$(mounts_under "$top")" ] || return 0
        while IFS= read -r m; do
            umount "$m" 2>/dev/null || { [ $round -ge 3 ] && umount -l "$m" 2>/dev/null; } || true
        done < <(mounts_under "$top")
    done
    [ -z "$(mounts_under "$top")" ] || { log "still mounted under $top: $(mounts_under "$top" | paste -sd' ')"; return 1; }
}

# Removes a tree that has nothing mounted in it (never crossing into another filesystem).
remove_tree() {
    unmount_under "$1" || return 1
    rm -rf --one-file-system -- "$1"
}

# The cgroup hierarchies (v1: cpu, memory, pids, name=systemd, ...; and a v2 one, which runc
# also writes on a hybrid host), by mount point.
cgroup_hierarchies() {
    awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}

# kubelet refuses a --cgroup-root that does not exist: make it in every hierarchy (a new cpuset
# cgroup has no cpus or mems until given its parent's).
make_cgroup_root() {
    local h
    for h in $(cgroup_hierarchies); do
        mkdir -p "$h/$CGROUP_ROOT"
        if [ -f "$h/cpuset.cpus" ]; then
            [ -n "$(cat "$h/$CGROUP_ROOT/cpuset.cpus")" ] || cat "$h/cpuset.cpus" > "$h/$CGROUP_ROOT/cpuset.cpus"
            [ -n "$(cat "$h/$CGROUP_ROOT/cpuset.mems")" ] || cat "$h/cpuset.mems" > "$h/$CGROUP_ROOT/cpuset.mems"
        fi
    done
}

# Kills every process in this cluster's cgroups (the pods' containers).
kill_pods() {
    local round f pid left h
    for round in $(seq 20); do
        left=0
        for h in $(cgroup_hierarchies); do
            [ -d "$h/$CGROUP_ROOT" ] || continue
            while IFS= read -r f; do
                while read -r pid; do
                    kill -KILL "$pid" 2>/dev/null && left=1
                done < "$f"
            done < <(find "$h/$CGROUP_ROOT" -name cgroup.procs 2>/dev/null)
        done
        [ $left = 0 ] && break
        sleep 0.2
    done
}

# Removes this cluster's cgroups (kubepods and below), deepest first.
remove_cgroups() {
    local h problems=0
    for h in $(cgroup_hierarchies); do
        [ -d "$h/$CGROUP_ROOT" ] || continue
        find "$h/$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ -d "$h/$CGROUP_ROOT" ] && { log "cgroup $h/$CGROUP_ROOT remains"; problems=1; }
    done
    return $problems
}

# containerd's shims outlive it: those serving this containerd (by its socket in their arguments).
kill_shims() {
    local p pid
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        { tr '\0' '\n' < "$p/cmdline"; } 2>/dev/null | grep -qxF "$SOCK" || continue
        [ "$(basename "$(readlink "$p/exe" 2>/dev/null)")" = containerd-shim-runc-v2 ] || continue
        log "stopping containerd shim $pid"
        stop_pid "$pid" 5
    done
}

# --- up ----------------------------------------------------------------------------------------

running() {
    local d
    for d in $DAEMONS; do daemon_pid "$d" >/dev/null || return 1; done
}

kubectl_() { "$KBIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

api_ready() {
    [ "$(curl -sf --max-time 2 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN_admin" \
        "https://$API_IP:$API_PORT/readyz")" = ok ]
}

healthz() { [ "$(curl -skf --max-time 2 "https://127.0.0.1:$1/healthz")" = ok ]; }

node_ready() {
    [ "$(kubectl_ get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

default_sa() {
    [ -n "$(kubectl_ -n default get serviceaccount default -o 'jsonpath={.secrets[0].name}')" ]
}

cri_ready() {
    ctr_ version && ctr_ plugins ls | grep -E '^io\.containerd\.grpc\.v1[[:space:]]+cri[[:space:]].*ok'
}

write_env() {
    mkdir -p "$DIR/bin"
    ln -sfn "$KBIN/kubectl" "$DIR/bin/kubectl"
    cat > "$DIR/env" <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export KUBELET_ROOT=$KUBELET_ROOT
export CONTAINERD_ADDRESS=$SOCK
export CONTAINERD_NAMESPACE=k8s.io
export MODCSI_CLUSTER_DIR=$DIR
export MODCSI_CLUSTER_NODE=$NODE
export PATH=$DIR/bin:\$PATH
EOF
}

do_up() {
    local t0=$SECONDS
    if [ -f "$MARK" ] && running; then
        log "already up: $DIR"
        cat "$DIR/env"
        return 0
    fi
    # What a failed or unfinished run left (a clean `down` leaves only the logs).
    if [ -f "$MARK" ] && { [ -d "$SAVED" ] || [ -d "$RUN" ] || [ -n "$(mounts_under "$DIR")" ]; }; then
        do_down
    fi
    if [ -e "$DIR" ] && [ ! -f "$MARK" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "$DIR exists and is not a cluster dir of this script: choose another"
    fi
    mkdir -p "$DIR"
    touch "$MARK"
    UP_DONE=
    trap 'up_exit $?' EXIT
    binaries
    images
    mkdir -p "$PKI" "$ETC" "$RUN" "$LOGS" "$KUBELET_ROOT" "$DIR/etcd" "$DIR/containerd"
    chmod 0700 "$PKI" "$DIR/etcd"
    for f in "$LOGS"/*.log; do [ -f "$f" ] && : > "$f"; done
    record_outside
    NODE_IP=$(node_ip)
    log "node $NODE at $NODE_IP; API server at https://$API_IP:$API_PORT"

    certificates
    tokens
    kubeconfig "$KUBECONFIG_FILE" admin "$TOKEN_admin"
    kubeconfig "$ETC/kubelet.kubeconfig" "system:node:$NODE" "$TOKEN_kubelet"
    kubeconfig "$ETC/kube-controller-manager.kubeconfig" system:kube-controller-manager "$TOKEN_kcm"
    kubeconfig "$ETC/kube-scheduler.kubeconfig" system:kube-scheduler "$TOKEN_scheduler"
    containerd_config
    kubelet_config

    start_daemon containerd containerd --config "$ETC/containerd.toml"
    wait_for "containerd CRI" 30 containerd cri_ready
    import_image "$IMAGES/pause.tar"
    import_image "$IMAGES/busybox.tar"

    start_daemon etcd etcd --name modcsi --data-dir "$DIR/etcd" --logger=zap --log-outputs=stderr \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "modcsi=http://127.0.0.1:$ETCD_PEER_PORT"
    wait_for "etcd health" 30 etcd curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

    ip -4 -o addr show dev lo | grep -qw "$API_IP/32" || ip addr add "$API_IP/32" dev lo
    start_daemon kube-apiserver "$KBIN/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address="$API_IP" --advertise-address="$API_IP" --secure-port="$API_PORT" \
        --insecure-port=0 \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
        --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --allow-privileged=true \
        --kubelet-client-certificate="$PKI/kubelet-client.crt" \
        --kubelet-client-key="$PKI/kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP,Hostname \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI/sa.pub" \
        --service-account-signing-key-file="$PKI/sa.key" \
        --profiling=false
    wait_for "API server /readyz" 90 kube-apiserver api_ready

    local kc="$ETC/kube-controller-manager.kubeconfig" sc="$ETC/kube-scheduler.kubeconfig"
    start_daemon kube-controller-manager "$KBIN/kube-controller-manager" \
        --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
        --authentication-skip-lookup=true --leader-elect=false \
        --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --use-service-account-credentials=true \
        --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
        --profiling=false
    start_daemon kube-scheduler "$KBIN/kube-scheduler" \
        --kubeconfig="$sc" --authentication-kubeconfig="$sc" --authorization-kubeconfig="$sc" \
        --authentication-skip-lookup=true --leader-elect=false \
        --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --port=0 \
        --profiling=false
    wait_for "kube-controller-manager /healthz" 60 kube-controller-manager healthz "$KCM_PORT"
    wait_for "kube-scheduler /healthz" 60 kube-scheduler healthz "$SCHEDULER_PORT"

    make_cgroup_root
    start_daemon kubelet "$KBIN/kubelet" \
        --config="$ETC/kubelet.yaml" --kubeconfig="$ETC/kubelet.kubeconfig" \
        --root-dir="$KUBELET_ROOT" --cert-dir="$KUBELET_ROOT/pki" --hostname-override="$NODE" --node-ip="$NODE_IP" \
        --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" \
        --pod-infra-container-image="$PAUSE_IMAGE" --v=2
    wait_for "Ready node $NODE" 120 kubelet node_ready
    wait_for "default ServiceAccount with its token" 60 kube-controller-manager default_sa

    write_env
    UP_DONE=1
    log "up in $((SECONDS - t0)) s; kubelet root dir (a CSI node plugin's hostPath for /var/lib/kubelet): $KUBELET_ROOT"
    log "use it: . $DIR/env"
    cat "$DIR/env"
}

# --- down --------------------------------------------------------------------------------------

do_down() {
    local problems=0 d
    if [ ! -e "$DIR" ]; then
        log "nothing at $DIR"
        return 0
    fi
    [ -f "$MARK" ] || die "$DIR is not a cluster dir of this script (no $MARK)"
    for d in $DAEMONS; do
        [ "$d" = containerd ] && break
        stop_daemon "$d"
    done
    # The pods: their containers through containerd while it answers, then whatever is left in
    # kubelet's cgroups, then the shims.
    if daemon_pid containerd >/dev/null && [ -S "$SOCK" ]; then
        local id
        for id in $(timeout 10 ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
            timeout 10 ctr --address "$SOCK" -n k8s.io tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
        done
        for id in $(timeout 10 ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
            timeout 10 ctr --address "$SOCK" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true
        done
    fi
    kill_pods
    stop_daemon containerd
    kill_shims
    kill_pods
    # Network namespaces the runtime left in /run/netns are unmounted with the rest below.
    unmount_under "$DIR" || problems=1
    remove_cgroups || problems=1
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" || problems=1; fi
    restore_outside || problems=1
    if [ -n "$(mounts_under "$DIR")" ]; then
        problems=1
    else
        local e
        for e in "$DIR"/* "$DIR"/.[!.]*; do
            case $e in "$LOGS" | "$MARK" | "$SAVED" | */\*) continue ;; esac
            [ -e "$e" ] || [ -L "$e" ] || continue
            rm -rf --one-file-system -- "$e" || problems=1
        done
    fi
    if [ $problems = 0 ]; then
        log "down: nothing left of the cluster at $DIR (logs kept in $LOGS)"
    else
        log "down: some of the cluster at $DIR could not be undone (see above); run down again"
    fi
    return $problems
}

# --- load-image --------------------------------------------------------------------------------

do_load_image() {
    local archive=$1 name=$2 source tmp
    daemon_pid containerd >/dev/null || die "the cluster at $DIR is not up"
    command -v skopeo >/dev/null || kube_apt_install skopeo
    case $archive in
        docker-archive:* | oci-archive:* | oci:* | dir:* | docker://*) source=$archive ;;
        *)
            [ -e "$archive" ] || die "no such archive: $archive"
            archive=$(realpath "$archive")
            if [ -d "$archive" ] && [ -f "$archive/oci-layout" ]; then
                source="oci:$archive"
            elif tar -tf "$archive" 2>/dev/null | sed 's#^\./##' | grep -qx oci-layout; then
                source="oci-archive:$archive"
            elif tar -tf "$archive" 2>/dev/null | sed 's#^\./##' | grep -qx manifest.json; then
                source="docker-archive:$archive"
            else
                die "$archive is neither a docker-archive nor an OCI archive or layout"
            fi
            ;;
    esac
    tmp=$(mktemp -d "$DIR/load.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    log "importing $source as $name"
    skopeo --insecure-policy copy -q "$source" "docker-archive:$tmp/image.tar:$name" >&2
    import_image "$tmp/image.tar"
}

# --- main --------------------------------------------------------------------------------------

[ $# -ge 1 ] || usage
[ "$(id -u)" = 0 ] || die "must run as root"
case $1 in
    up | down | env)
        [ $# -le 2 ] || usage
        set_paths "$(cluster_dir "${2:-}")"
        case $1 in
            up) do_up ;;
            down) do_down ;;
            env) [ -f "$DIR/env" ] || die "no cluster up at $DIR"; cat "$DIR/env" ;;
        esac
        ;;
    load-image)
        if [ $# -lt 3 ] || [ $# -gt 4 ]; then usage; fi
        set_paths "$(cluster_dir "${4:-}")"
        do_load_image "$2" "$3"
        ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
